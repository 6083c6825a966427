"""SAM 3.1's video tracker as SAM3_VideoTrack runs it (`SAM31Tracker.track_video_with_detection`
in `comfy/ldm/sam3/tracker.py`, driven by `SAM3Model.forward_video`), written out in plain torch
over ComfyUI's module names, on the tiny SAM 3.1 checkpoint of sam3_reference.py.

Covered: the interactive heads conditioning on masks (`_use_mask_as_output`), the memory
encoder on multiplexed masks, the decoupled memory attention over past memories and object
pointers, the multiplex mask decoder, hole filling and speck removal (scipy's 4-connected
labels, ComfyUI's path without cv2), suppression of recently occluded objects, per-frame text
detection with mask NMS, matching, keep-alive counts, refreshing tracks from confident
detections and new objects joining.

Usage: DIR -> DIR/sam3.safetensors (the checkpoint) and DIR/track_io.safetensors: per case and
frame the tracker's state after the frame (`{case}_{frame}_low`, `_high`, `_memory`,
`_pointers`) and per case the packed masks and scores."""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy import ndimage

from sam3_reference import D, HEADS, IMAGE, NO_OBJ_SCORE, SLOTS, TEXT_TOKENS, Sam3, checkpoint

MEMORY_FRAMES, MAX_POINTERS, MASK_SIZE, GRID = 7, 16, 1152, 72
MAX_OBJECTS = 64


def padded(x, rows):
    if x.shape[0] >= rows:
        return x
    return torch.cat([x, x.new_zeros(rows - x.shape[0], *x.shape[1:])])


def buckets(n):
    return (n + SLOTS - 1) // SLOTS


def mux(x):
    b = buckets(x.shape[0])
    return padded(x, b * SLOTS).view(b, SLOTS, *x.shape[1:])


def demux(x, n):
    return x.flatten(0, 1)[:n]


def overlap(a, b):
    """`_compute_mask_overlap`: the max of IoU and intersection over the smaller area."""
    a, b = (a > 0).float().flatten(1), (b > 0).float().flatten(1)
    inter = a @ b.T
    area_a, area_b = a.sum(1, keepdim=True), b.sum(1, keepdim=True).T
    iou = inter / (area_a + area_b - inter).clamp(min=1)
    iom = inter / torch.min(area_a.expand_as(iou), area_b.expand_as(iou)).clamp(min=1)
    return torch.max(iou, iom)


def nms(masks, scores, thresh=0.5):
    order = scores.argsort(descending=True)
    masks, scores = masks[order], scores[order]
    keep = []
    for i in range(masks.shape[0]):
        if keep and overlap(masks[i:i + 1], masks[torch.tensor(keep)]).max() >= thresh:
            continue
        keep.append(i)
    return masks[keep], scores[keep]


def component_areas(binary):
    out = []
    for m in binary[:, 0].numpy():
        labeled, count = ndimage.label(m)
        areas = np.zeros_like(m, dtype=np.int32)
        for c in range(1, count + 1):
            areas[labeled == c] = (labeled == c).sum()
        out.append(torch.from_numpy(areas))
    return torch.stack(out).unsqueeze(1)


def fill_holes(mask, max_area=16):
    bg = (mask <= 0).to(torch.uint8)
    mask = torch.where(bg.bool() & (component_areas(bg) <= max_area), 0.1, mask)
    fg = (mask > 0).to(torch.uint8)
    limit = fg.sum(dim=(2, 3), keepdim=True, dtype=torch.int32).floor_divide(2).clamp(max=max_area)
    return torch.where(fg.bool() & (component_areas(fg) <= limit), -0.1, mask)


def suppress_recently_occluded(low, last_occluded, frame_idx, threshold=0.3):
    iou = overlap(low[:, 0], low[:, 0])
    pairs = torch.triu(iou >= threshold, diagonal=1)
    li, lj = last_occluded.unsqueeze(1), last_occluded.unsqueeze(0)
    suppress = (pairs & (li > lj) & (lj > -1)).any(1) | (pairs & (lj > li) & (li > -1)).any(0)
    last_occluded[~(low[:, 0] > 0).any(dim=(-1, -2)) | suppress] = frame_idx
    low[suppress] = -10.0
    return low


def pack_masks(masks):
    shifts = torch.arange(8)
    return ((masks > 0).view(*masks.shape[:-1], -1, 8) * (1 << shifts)).sum(-1).byte()


def sine_1d(positions, dim):
    half = dim // 2
    freqs = 10000 ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)
    x = positions.unsqueeze(-1) / freqs
    return torch.cat([x.sin(), x.cos()], -1)


class Tracker(Sam3):
    def __init__(self, sd):
        super().__init__(sd, True)
        self.rope = self.rope_2d(GRID, GRID, D // HEADS)

    # -- one frame's features ----------------------------------------------------------------

    def frame(self, video, i):
        """`_prep_frame` (bicubic to 1008, no crop) and the trunk."""
        x = F.interpolate(video[i:i + 1].movedim(-1, 1), size=(IMAGE, IMAGE), mode="bicubic")
        return self.vit(x)

    def propagation_features(self, trunk):
        feats, poss = self.neck(trunk, "propagation_convs")
        flat = lambda x: x.flatten(2).permute(0, 2, 1)
        return {"coarse": flat(feats[-1]), "coarse_pos": flat(poss[-1]), "fine": feats[:-1]}

    # -- memory -----------------------------------------------------------------------------

    def encode_memory(self, pix, masks, scores, clean):
        """`_encode_new_memory` of mask logits [N, 1, S, S] (`clean` [N] flags the masks given
        or detected)."""
        n = masks.shape[0]
        m = masks.sigmoid() * 2 - 1
        cond = clean.float().view(-1, 1, 1).expand(n, *m.shape[-2:])
        x = torch.cat([mux(m[:, 0]), mux(cond)], 1)
        mb = "tracker.maskmem_backbone"
        if list(x.shape[-2:]) != [MASK_SIZE, MASK_SIZE]:
            x = F.interpolate(x, size=(MASK_SIZE, MASK_SIZE), mode="bilinear", align_corners=False, antialias=True)
        i = 0
        while f"{mb}.mask_downsampler.encoder.{i + 1}.weight" in self.w:
            x = self.conv(f"{mb}.mask_downsampler.encoder.{i}", x, stride=2, padding=1)
            x = F.gelu(self.ln2d(f"{mb}.mask_downsampler.encoder.{i + 1}", x))
            i += 3
        x = self.conv(f"{mb}.mask_downsampler.encoder.{i}", x)
        if x.shape[-2:] != pix.shape[-2:]:
            x = F.interpolate(x, size=pix.shape[-2:], mode="bilinear", align_corners=False)
        x = self.conv(f"{mb}.pix_feat_proj", pix) + x
        for j in range(2):
            p = f"{mb}.fuser.layers.{j}"
            y = F.conv2d(x, self.w[f"{p}.dwconv.weight"], self.w[f"{p}.dwconv.bias"], padding=3, groups=D)
            y = self.lin(f"{p}.pwconv2", F.gelu(self.lin(f"{p}.pwconv1", self.ln(f"{p}.norm", y.permute(0, 2, 3, 1)))))
            x = x + (y * self.w[f"{p}.gamma"]).permute(0, 3, 1, 2)
        present = mux((scores > 0).float())[..., None, None]
        no_obj = self.w["tracker.no_obj_embed_spatial"][None, :, :, None, None]
        return x + ((1 - present) * no_obj).sum(1)

    def rotated(self, q, k, exclude):
        """`apply_rope_memory`: the frame's rotations on the queries and, repeated per stored
        frame, on all keys but the trailing `exclude` pointers."""
        b, _, c = q.shape
        split = lambda t: t.reshape(b, -1, HEADS, c // HEADS).transpose(1, 2)
        merge = lambda t: t.transpose(1, 2).reshape(b, -1, c)
        q = merge(self.apply_rope(split(q), self.rope))
        n = k.shape[1] - exclude
        if n > 0:
            reps = -(-n // self.rope.shape[0])
            k = torch.cat([merge(self.apply_rope(split(k[:, :n]), self.rope.repeat(reps, 1, 1, 1)[:n])), k[:, n:]], 1)
        return q, k

    def memory_attention(self, x, x_pos, memory, image, image_pos, pointers):
        """`DecoupledMemoryEncoder`: the frame's features read the memories."""
        p = "tracker.transformer.encoder"
        out = x + 0.1 * x_pos
        for i in range(4):
            l = f"{p}.layers.{i}"
            normed = self.ln(f"{l}.norm1", out)
            q, k = self.rotated(self.lin(f"{l}.self_attn_q_proj", normed), self.lin(f"{l}.self_attn_k_proj", normed), 0)
            out = out + self.lin(f"{l}.self_attn_out_proj", self.attention(q, k, self.lin(f"{l}.self_attn_v_proj", normed), HEADS))
            normed = self.ln(f"{l}.norm2", out)
            q = self.lin(f"{l}.image_cross_attn_q_proj", x) + self.lin(f"{l}.cross_attn_q_proj", normed)
            k = self.lin(f"{l}.image_cross_attn_k_proj", image) + self.lin(f"{l}.cross_attn_k_proj", memory) + image_pos
            q, k = self.rotated(q, k, pointers)
            out = out + self.lin(f"{l}.cross_attn_out_proj", self.attention(q, k, self.lin(f"{l}.cross_attn_v_proj", memory), HEADS))
            out = out + self.lin(f"{l}.linear2", F.gelu(self.lin(f"{l}.linear1", self.ln(f"{l}.norm3", out))))
        return self.ln(f"{p}.norm", out)

    def with_memory(self, frame_idx, feats, cond, noncond, frames, n):
        """`_prepare_memory_conditioned_features` for a frame that is not conditioned."""
        b = buckets(n)
        memories, images, image_pos = [], [], []

        def add(out, slot):
            time = self.w["tracker.maskmem_tpos_enc"][slot]
            memories.append(padded(out["memory"], b).flatten(2).permute(0, 2, 1))
            images.append(out["image"])
            image_pos.append(out["image_pos"] + time)

        for t, out in cond.items():
            d = frame_idx - t
            add(out, MEMORY_FRAMES - d - 1 if 0 < d < MEMORY_FRAMES else MEMORY_FRAMES - 1)
        for t_pos in range(1, MEMORY_FRAMES):
            out = noncond.get(frame_idx - (MEMORY_FRAMES - t_pos))
            if out is not None:
                add(out, MEMORY_FRAMES - t_pos - 1)
        max_ptrs = min(frames, MAX_POINTERS)
        ptrs = [(frame_idx - t, padded(out["pointers"], b)) for t, out in cond.items() if t <= frame_idx]
        for t_diff in range(1, max_ptrs):
            t = frame_idx - t_diff
            if t < 0:
                break
            if t in noncond:
                ptrs.append((t_diff, padded(noncond[t]["pointers"], b)))
        distances, stacked = zip(*ptrs)
        obj = torch.stack(stacked, 1)
        _, count, m, c = obj.shape
        obj = obj.reshape(b, count * m, c)
        times = torch.tensor(distances, dtype=torch.float32) / max(max_ptrs - 1, 1)
        pos = self.lin("tracker.obj_ptr_tpos_proj", sine_1d(times, D))
        pos = pos[None, :, None].expand(b, -1, m, -1).reshape(b, count * m, c)
        memory = torch.cat(memories + [obj], 1)
        image = torch.cat(images + [torch.zeros(1, count * m, c)], 1).expand(b, -1, -1)
        image_pos = torch.cat(image_pos, 1).expand(b, -1, -1)
        image_pos = torch.cat([image_pos, pos], 1)
        x = feats["coarse"].expand(b, -1, -1)
        x_pos = feats["coarse_pos"].expand(b, -1, -1)
        out = self.memory_attention(x, x_pos, memory, image, image_pos, count * m)
        return out.view(b, GRID, GRID, c).permute(0, 3, 1, 2)

    # -- decoders ---------------------------------------------------------------------------

    def propagate(self, feat, fine, n):
        """`_forward_propagation`: every slot's masks from the multiplex decoder."""
        md = "tracker.sam_mask_decoder"
        b, c, h, w = feat.shape
        valid = (torch.arange(b * SLOTS) < n).float().view(b, SLOTS, 1)
        extra = valid * self.w["tracker.output_valid_embed"][None] + (1 - valid) * self.w["tracker.output_invalid_embed"][None]
        mask_tokens = self.w[f"{md}.mask_tokens.weight"].view(1, SLOTS, 3, c) + extra.unsqueeze(2)
        other = torch.cat([self.w[f"{md}.obj_score_token.weight"], self.w[f"{md}.iou_token.weight"]])
        tokens = torch.cat([other[None].expand(b, -1, -1), mask_tokens.flatten(1, 2)], 1)
        pe = self.dense_pe("tracker.image_pe_layer.positional_encoding_gaussian_matrix", h, w)
        queries, keys = self.two_way(md, tokens, feat.flatten(2).permute(0, 2, 1), pe.flatten(2).permute(0, 2, 1).expand(b, -1, -1))
        up = self.upscale(md, keys.permute(0, 2, 1).reshape(b, c, h, w), fine)
        per_slot = queries[:, 2 * SLOTS:5 * SLOTS].reshape(b, SLOTS, 3, c)
        hyper = torch.stack([self.mlp(f"{md}.output_hypernetworks_mlps.{i}", per_slot[:, :, i]) for i in range(3)], 2)
        masks = torch.bmm(hyper.flatten(1, 2), up.flatten(2)).view(b, SLOTS, 3, *up.shape[-2:])
        iou = self.mlp(f"{md}.iou_prediction_head", queries[:, SLOTS:2 * SLOTS]).view(b, SLOTS, 3)
        scores = demux(self.mlp(f"{md}.pred_obj_score_head", queries[:, :SLOTS]), n)
        masks, iou, token = demux(masks, n), demux(iou, n), demux(per_slot[:, :, 0], n)
        low = masks[torch.arange(n), iou.argmax(-1)].unsqueeze(1)
        low = torch.where((scores > 0)[:, :, None, None], low, torch.tensor(NO_OBJ_SCORE))
        high = F.interpolate(low, size=(IMAGE, IMAGE), mode="bilinear", align_corners=False)
        ptr = self.mlp("tracker.obj_ptr_proj", token)
        present = (scores > 0).float()
        ptr = present * ptr + (1 - present) * self.lin("tracker.no_obj_ptr_linear", ptr)
        return low, high, mux(ptr)

    def condition(self, masks, trunk, feats, threshold):
        """`_condition_with_masks` through `_use_mask_as_output` on the interactive heads."""
        mask_input = (F.interpolate(masks, size=(IMAGE, IMAGE), mode="bilinear", align_corners=False) > threshold).float()
        levels, _ = self.neck(trunk, "interactive_convs")
        fine, coarse = levels[:-1], levels[-1]
        _, c, h, w = coarse.shape
        coarse = (coarse.flatten(2).permute(0, 2, 1) + self.w["tracker.interactivity_no_mem_embed"]).view(1, h, w, c).permute(0, 3, 1, 2)
        high = mask_input * 20.0 - 10.0
        low = F.interpolate(high, size=(4 * h, 4 * w), mode="bilinear", align_corners=False, antialias=True)
        down = self.conv("tracker.interactive_mask_downsample", mask_input, stride=4)
        _, _, tokens, obj = self.sam_heads(coarse, fine, mask_input=down)
        ptr = self.mlp("tracker.interactive_obj_ptr_proj", tokens[:, 0])
        ptr = torch.lerp(self.lin("tracker.no_obj_ptr_linear", ptr), ptr, (obj > 0).float())
        present = (mask_input.flatten(1) > 0).any(1, keepdim=True).float()
        n = masks.shape[0]
        pix = feats["coarse"].view(1, GRID, GRID, c).permute(0, 3, 1, 2)
        memory = self.encode_memory(pix, high, present * 20 - 10, torch.ones(n, dtype=torch.bool))
        return {"memory": memory, "image": feats["coarse"], "image_pos": feats["coarse_pos"],
                "pointers": mux(ptr), "low": low, "high": high}

    def memory_of(self, out, feats, n, clean):
        """`_deferred_memory_encode` from the frame's low-resolution masks."""
        low = out["low"]
        if n > 1:
            lr = low[:, 0]
            strongest = lr.argmax(0, keepdim=True)
            exclusive = torch.where(strongest == torch.arange(n)[:, None, None], lr, lr.clamp(max=-10.0))
            before = (lr > 0).sum(dim=(-1, -2)).float().clamp(min=1)
            after = (exclusive > 0).sum(dim=(-1, -2)).float()
            low = torch.where(((after / before) >= 0.3)[:, None, None, None], low, low.clamp(max=-10.0))
        masks = F.interpolate(low, size=(MASK_SIZE, MASK_SIZE), mode="bilinear", align_corners=False)
        scores = torch.where((masks > 0).any(dim=(-1, -2)), 10.0, -10.0)
        pix = feats["coarse"].view(1, GRID, GRID, D).permute(0, 3, 1, 2)
        out["memory"] = self.encode_memory(pix, masks, scores, clean)

    # -- the loop ---------------------------------------------------------------------------

    def detections(self, trunk, text, text_mask, threshold):
        _, scores, masks = self.detect_from_trunk(trunk, text, text_mask)
        scores = scores[0].sigmoid()
        keep = scores > threshold
        masks, scores = masks[0][keep], scores[keep]
        if masks.shape[0] > 1:
            masks, scores = nms(masks, scores)
        return masks, scores

    def matched(self, det_masks, det_scores, out, feats, n, max_objects, keep_alive):
        """`_match_and_add_detections`: (the number of objects after, the new objects' scores)."""
        if det_masks.shape[0] == 0:
            if keep_alive is not None:
                for i in range(n):
                    keep_alive[i] = max(-4, keep_alive.get(i, 0) - 1)
            return n, []
        tracked = out["low"][:, 0]
        resized = F.interpolate(det_masks.unsqueeze(1), size=tracked.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        ov = overlap(resized, tracked)
        matched = set((ov >= 0.5).any(dim=0).nonzero(as_tuple=True)[0].tolist())
        if keep_alive is not None:
            for i in range(n):
                keep_alive[i] = min(8, keep_alive.get(i, 0) + 1) if i in matched else max(-4, keep_alive.get(i, 0) - 1)
        refreshed = False
        for d in range(ov.shape[0]):
            if det_scores[d] < 0.8:
                continue
            best = ov[d].argmax().item()
            if ov[d, best] >= 0.5:
                out["low"][best] = resized[d].unsqueeze(0)
                out["high"][best] = F.interpolate(det_masks[d:d + 1].unsqueeze(1), size=(IMAGE, IMAGE), mode="bilinear", align_corners=False)[0]
                refreshed = True
        if refreshed:
            self.memory_of(out, feats, n, torch.zeros(n, dtype=torch.bool))
        if n >= max_objects:
            return n, []
        new = ov.max(dim=1)[0] < 0.5
        if not new.any():
            return n, []
        new = new & (torch.cumsum(new.int(), 0) <= max_objects - n)
        added = det_masks[new]
        for k in ("low", "high"):
            det = F.interpolate(added.unsqueeze(1), size=out[k].shape[-2:], mode="bilinear", align_corners=False)
            out[k] = torch.cat([out[k], det])
        total = n + added.shape[0]
        self.memory_of(out, feats, total, torch.arange(total) >= n)
        if keep_alive is not None:
            for i in range(n, total):
                keep_alive[i] = 1
        return total, det_scores[new].tolist()

    def track(self, video, initial, text, text_mask, threshold, max_objects, detect_interval, record):
        """`track_video_with_detection`; `record(frame, out)` sees each tracked frame's state."""
        frames = video.shape[0]
        if max_objects <= 0 or max_objects > MAX_OBJECTS:
            max_objects = MAX_OBJECTS
        cond, noncond, packed = {}, {}, []
        n = 0 if initial is None else initial.shape[0]
        scores, keep_alive, last_occluded = [], {}, torch.empty(0, dtype=torch.long)
        for i in range(frames):
            trunk = self.frame(video, i)
            feats = self.propagation_features(trunk)
            run_det = i % max(detect_interval, 1) == 0 and not n >= max_objects
            det_masks, det_scores = torch.empty(0), None
            if run_det:
                det_masks, det_scores = self.detections(trunk, text, text_mask, threshold)
            if i == 0 and initial is not None:
                out = cond[i] = self.condition(initial.unsqueeze(1), trunk, feats, 0.5)
                last_occluded = torch.full((n,), -1, dtype=torch.long)
                scores = [1.0] * n
                keep_alive = {j: 8 for j in range(n)}
            elif n == 0:
                if det_masks.shape[0] == 0:
                    packed.append(None)
                    continue
                det_masks, det_scores = det_masks[:max_objects], det_scores[:max_objects]
                n = det_masks.shape[0]
                out = cond[i] = self.condition(det_masks.unsqueeze(1), trunk, feats, 0.0)
                last_occluded = torch.full((n,), -1, dtype=torch.long)
                scores = det_scores.tolist()
                keep_alive = {j: 1 for j in range(n)}
            else:
                image = self.with_memory(i, feats, cond, noncond, frames, n)
                low, high, ptr = self.propagate(image, feats["fine"], n)
                out = {"image": feats["coarse"], "image_pos": feats["coarse_pos"], "pointers": ptr,
                       "low": fill_holes(low), "high": high}
                if last_occluded.shape[0] == n and n > 1:
                    suppress_recently_occluded(out["low"], last_occluded, i)
                self.memory_of(out, feats, n, torch.zeros(n, dtype=torch.bool))
                noncond[i] = out
                for old in list(noncond):
                    if old < i - max(MEMORY_FRAMES, MAX_POINTERS):
                        del noncond[old]
                before = n
                n, new_scores = self.matched(det_masks, det_scores, out, feats, n, max_objects, keep_alive if run_det else None)
                if n > before:
                    last_occluded = torch.cat([last_occluded, torch.full((n - before,), -1, dtype=torch.long)])
                    scores.extend(new_scores)
            record(i, out)
            masks = out["high"][:, 0].clone()
            for j in range(n):
                if keep_alive.get(j, 0) <= 0:
                    masks[j] = NO_OBJ_SCORE
            packed.append(pack_masks(masks))
        objects = max(m.shape[0] for m in packed if m is not None)
        frames_out = []
        for m in packed:
            full = torch.zeros(objects, IMAGE, IMAGE // 8, dtype=torch.uint8)
            if m is not None:
                full[:m.shape[0]] = m
            frames_out.append(full)
        return torch.stack(frames_out), torch.tensor(scores, dtype=torch.float64)


def lively(ckpt, comfy):
    """Weights that make the loop decide things: the multiplex decoder's object scores near 0
    (slot 0 starts out absent, so the first track is empty on frame 1 and the detection there
    joins as a new object) and detection scores just above 0.8 (so detections that match a
    track refresh it)."""
    ds = "detector.dot_prod_scoring"
    name = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"
    comfy[f"tracker.{name}"] = torch.tensor([-0.45])
    ckpt[f"tracker.model.{name}"] = comfy[f"tracker.{name}"].clone()
    for name in (f"{ds}.hs_proj.bias", f"{ds}.prompt_proj.bias"):
        comfy[name] = torch.full((D,), 0.35)
        ckpt[name] = comfy[name].clone()


def main(out_dir):
    out_dir = Path(out_dir)
    g = torch.Generator().manual_seed(3)
    ckpt, comfy, clip = checkpoint(True, g)
    lively(ckpt, comfy)
    save_file(ckpt, str(out_dir / "sam3.safetensors"))
    model = Tracker(comfy)
    ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.long)
    ids[0, :3] = torch.tensor([49406, 2368, 49407])
    text_mask = (torch.arange(TEXT_TOKENS) < 3).long()[None]
    io = {}
    with torch.no_grad():
        text = clip(input_ids=ids, attention_mask=text_mask).last_hidden_state
        # A bright block moving right over a dark, noisy ground.
        video = 0.2 * torch.rand(3, 40, 56, 3, generator=g)
        for i in range(3):
            video[i, 8:30, 10 + 4 * i:34 + 4 * i] += 0.8
        initial = torch.zeros(2, 40, 56)
        initial[0, 4:20, 6:30] = 1
        initial[1, 18:36, 28:50] = 1
        cases = {"detected": (None, 0.0, 4, 1), "given": (initial, 0.0, 3, 2)}
        for case, (masks, threshold, max_objects, interval) in cases.items():
            def record(i, out):
                for k in ("low", "high", "memory", "pointers"):
                    io[f"{case}_{i}_{k}"] = out[k].clone()
            packed, scores = model.track(video, masks, text, text_mask, threshold, max_objects, interval, record)
            io[f"{case}_packed"], io[f"{case}_scores"] = packed, scores
    io.update({"text": text, "text_mask": text_mask, "video": video, "initial": initial})
    save_file({k: v.contiguous() for k, v in io.items()}, str(out_dir / "track_io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
