"""SAM 3 / SAM 3.1 image segmentation as ComfyUI runs it (`comfy/ldm/sam3/{sam,detector,tracker}.py`,
`comfy_extras/nodes_sam3.py` SAM3_Detect), written out in plain torch over a state dict in
ComfyUI's module names, and tiny random checkpoints in the original release's key layout (what
ComfyUI's `process_unet_state_dict` converts: fused `in_proj` attention, SAM 3.1's
`tracker.model.*`, the SAM decoders' `mlp.lin1/lin2` and `norm_final_attn`, per-block
`freqs_cis` buffers, the text tower in OpenCLIP's names under
`detector.backbone.language_backbone.encoder.`).

The text tower is transformers' CLIPTextModel (the names converted back), run with the padding
mask as ComfyUI's SAM3 CLIP does (`enable_attention_masks`, final-normed last layer).

ComfyUI feeds the detector pixels in 0..1 (no mean/std normalization) and reruns the backbone
on the crop at every refinement pass; both are followed here. What ComfyUI hard-codes (1008 px
input, 16 ViT heads, 8 detector and decoder heads, windows of 24 patches, global attention in
blocks 7, 15, 23, 31) is kept; the widths and depths are tiny.

Usage: DIR MULTIPLEX(0|1) -> DIR/sam3.safetensors (the checkpoint) and DIR/sam3_io.safetensors."""
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.ops import roi_align
from transformers import CLIPTextConfig, CLIPTextModel

IMAGE = 1008
PATCH = 14
WINDOW = 24
GLOBAL_BLOCKS = (7, 15, 23, 31)
VIT_HEADS = 16
HEADS = 8
NO_OBJ_SCORE = -1024.0

# Tiny sizes (the release: 1024, 32 blocks, 256, 2048, 200 queries; text 1024 wide, 24 layers).
VIT_DIM, VIT_DEPTH, PRETRAIN = 128, 8, 336
D, FF, QUERIES = 32, 64, 8
TEXT_WIDTH, TEXT_LAYERS, TEXT_TOKENS = 64, 2, 32


# ----------------------------------------------------------------------------------------------
# The checkpoint: ComfyUI's module names with shapes, then the original release's names.

def comfy_shapes(multiplex):
    s = {}

    def lin(name, i, o, bias=True):
        s[f"{name}.weight"] = (o, i)
        if bias:
            s[f"{name}.bias"] = (o,)

    def norm(name, c):
        s[f"{name}.weight"] = (c,)
        s[f"{name}.bias"] = (c,)

    def conv(name, i, o, k, bias=True):
        s[f"{name}.weight"] = (o, i, k, k)
        if bias:
            s[f"{name}.bias"] = (o,)

    def convt(name, i, o):
        s[f"{name}.weight"] = (i, o, 2, 2)
        s[f"{name}.bias"] = (o,)

    def mlp(name, i, h, o, n):
        dims = [i] + [h] * (n - 1) + [o]
        for j in range(n):
            lin(f"{name}.layers.{j}", dims[j], dims[j + 1])

    def mha(name, d=D):
        for p in "qkv":
            lin(f"{name}.{p}_proj", d, d)
        lin(f"{name}.out_proj", d, d)

    def enc_layer(name):
        mha(f"{name}.self_attn")
        mha(f"{name}.cross_attn_image")
        lin(f"{name}.linear1", D, FF)
        lin(f"{name}.linear2", FF, D)
        for n in ("norm1", "norm2", "norm3"):
            norm(f"{name}.{n}", D)

    vb = "detector.backbone.vision_backbone"
    s[f"{vb}.trunk.patch_embed.proj.weight"] = (VIT_DIM, 3, PATCH, PATCH)
    s[f"{vb}.trunk.pos_embed"] = (1, (PRETRAIN // PATCH) ** 2 + 1, VIT_DIM)
    norm(f"{vb}.trunk.ln_pre", VIT_DIM)
    hidden = int(VIT_DIM * 4.625)
    for b in range(VIT_DEPTH):
        p = f"{vb}.trunk.blocks.{b}"
        norm(f"{p}.norm1", VIT_DIM)
        norm(f"{p}.norm2", VIT_DIM)
        lin(f"{p}.attn.qkv", VIT_DIM, 3 * VIT_DIM)
        lin(f"{p}.attn.proj", VIT_DIM, VIT_DIM)
        lin(f"{p}.mlp.fc1", VIT_DIM, hidden)
        lin(f"{p}.mlp.fc2", hidden, VIT_DIM)

    def fpn(name, scale):
        if scale == 4.0:
            convt(f"{name}.dconv_2x2_0", VIT_DIM, VIT_DIM // 2)
            convt(f"{name}.dconv_2x2_1", VIT_DIM // 2, VIT_DIM // 4)
            proj_in = VIT_DIM // 4
        elif scale == 2.0:
            convt(f"{name}.dconv_2x2", VIT_DIM, VIT_DIM // 2)
            proj_in = VIT_DIM // 2
        else:
            proj_in = VIT_DIM
        conv(f"{name}.conv_1x1", proj_in, D, 1)
        conv(f"{name}.conv_3x3", D, D, 3)

    scales = [4.0, 2.0, 1.0] if multiplex else [4.0, 2.0, 1.0, 0.5]
    necks = ["convs", "propagation_convs", "interactive_convs"] if multiplex else ["convs", "sam2_convs"]
    for neck in necks:
        for i, sc in enumerate(scales):
            fpn(f"{vb}.{neck}.{i}", sc)
    lin("detector.backbone.language_backbone.resizer", TEXT_WIDTH, D)

    for i in range(6):
        enc_layer(f"detector.transformer.encoder.layers.{i}")
    dec = "detector.transformer.decoder"
    for i in range(6):
        p = f"{dec}.layers.{i}"
        for a in ("self_attn", "cross_attn", "ca_text"):
            mha(f"{p}.{a}")
        for n in ("norm1", "norm2", "norm3", "catext_norm"):
            norm(f"{p}.{n}", D)
        lin(f"{p}.linear1", D, FF)
        lin(f"{p}.linear2", FF, D)
    norm(f"{dec}.norm", D)
    s[f"{dec}.query_embed.weight"] = (QUERIES, D)
    s[f"{dec}.reference_points.weight"] = (QUERIES, 4)
    mlp(f"{dec}.ref_point_head", 2 * D, D, D, 2)
    mlp(f"{dec}.bbox_embed", D, D, 4, 3)
    mlp(f"{dec}.boxRPB_embed_x", 2, D, HEADS, 2)
    mlp(f"{dec}.boxRPB_embed_y", 2, D, HEADS, 2)
    s[f"{dec}.presence_token.weight"] = (1, D)
    mlp(f"{dec}.presence_token_head", D, D, 1, 3)
    norm(f"{dec}.presence_token_out_norm", D)

    sh = "detector.segmentation_head"
    for i in range(3):
        conv(f"{sh}.pixel_decoder.conv_layers.{i}", D, D, 3)
        norm(f"{sh}.pixel_decoder.norms.{i}", D)
    mlp(f"{sh}.mask_predictor.mask_embed", D, D, D, 3)
    mha(f"{sh}.cross_attend_prompt")
    norm(f"{sh}.cross_attn_norm", D)
    conv(f"{sh}.instance_seg_head", D, D, 1)
    conv(f"{sh}.semantic_seg_head", D, 1, 1)

    ge = "detector.geometry_encoder"
    lin(f"{ge}.points_direct_project", 2, D)
    lin(f"{ge}.points_pool_project", D, D)
    lin(f"{ge}.points_pos_enc_project", D, D)
    lin(f"{ge}.boxes_direct_project", 4, D)
    conv(f"{ge}.boxes_pool_project", D, D, 7)
    lin(f"{ge}.boxes_pos_enc_project", D + 2, D)
    s[f"{ge}.label_embed.weight"] = (2, D)
    s[f"{ge}.cls_embed.weight"] = (1, D)
    for n in ("norm", "img_pre_norm", "encode_norm"):
        norm(f"{ge}.{n}", D)
    for i in range(3):
        enc_layer(f"{ge}.encode.{i}")
    lin(f"{ge}.final_proj", D, D)

    ds = "detector.dot_prod_scoring"
    lin(f"{ds}.hs_proj", D, D)
    lin(f"{ds}.prompt_proj", D, D)
    lin(f"{ds}.prompt_mlp.layers.0", D, FF)
    lin(f"{ds}.prompt_mlp.layers.1", FF, D)
    norm(f"{ds}.prompt_mlp.out_norm", D)

    # The interactive SAM heads (the tracker's memory parts are not used by SAM3_Detect).
    tr = "tracker"
    pe, md = (f"{tr}.interactive_sam_prompt_encoder", f"{tr}.interactive_sam_mask_decoder") if multiplex \
        else (f"{tr}.sam_prompt_encoder", f"{tr}.sam_mask_decoder")
    s[f"{pe}.pe_layer.positional_encoding_gaussian_matrix"] = (2, D // 2)
    for i in range(4):
        s[f"{pe}.point_embeddings.{i}.weight"] = (1, D)
    s[f"{pe}.not_a_point_embed.weight"] = (1, D)
    s[f"{pe}.no_mask_embed.weight"] = (1, D)
    conv(f"{pe}.mask_downscaling.0", 1, 4, 2)
    norm(f"{pe}.mask_downscaling.1", 4)
    conv(f"{pe}.mask_downscaling.3", 4, 16, 2)
    norm(f"{pe}.mask_downscaling.4", 16)
    conv(f"{pe}.mask_downscaling.6", 16, D, 1)

    def sam_attn(name, down):
        inner = D // down
        lin(f"{name}.q_proj", D, inner)
        lin(f"{name}.k_proj", D, inner)
        lin(f"{name}.v_proj", D, inner)
        lin(f"{name}.out_proj", inner, D)

    def mask_decoder(md, slots, masks_per_slot):
        """A SAM mask decoder: the two-way transformer, `slots` object-score and IoU tokens,
        `masks_per_slot` mask tokens per slot with their hypernetworks, the upscaling."""
        for i in range(2):
            p = f"{md}.transformer.layers.{i}"
            sam_attn(f"{p}.self_attn", 1)
            sam_attn(f"{p}.cross_attn_token_to_image", 2)
            sam_attn(f"{p}.cross_attn_image_to_token", 2)
            lin(f"{p}.mlp.0", D, FF)
            lin(f"{p}.mlp.2", FF, D)
            for n in range(1, 5):
                norm(f"{p}.norm{n}", D)
        sam_attn(f"{md}.transformer.final_attn_token_to_image", 2)
        norm(f"{md}.transformer.norm_final", D)
        s[f"{md}.obj_score_token.weight"] = (slots, D)
        s[f"{md}.iou_token.weight"] = (slots, D)
        s[f"{md}.mask_tokens.weight"] = (slots * masks_per_slot, D)
        convt(f"{md}.output_upscaling.0", D, D // 4)
        norm(f"{md}.output_upscaling.1", D // 4)
        convt(f"{md}.output_upscaling.3", D // 4, D // 8)
        conv(f"{md}.conv_s0", D, D // 8, 1)
        conv(f"{md}.conv_s1", D, D // 4, 1)
        for i in range(masks_per_slot):
            mlp(f"{md}.output_hypernetworks_mlps.{i}", D, D, D // 8, 3)
        mlp(f"{md}.iou_prediction_head", D, D, masks_per_slot, 3)
        mlp(f"{md}.pred_obj_score_head", D, D, 1, 3)

    mask_decoder(md, 1, 4)
    if multiplex:
        s[f"{tr}.interactivity_no_mem_embed"] = (1, 1, D)
        mlp(f"{tr}.interactive_obj_ptr_proj", D, D, D, 3)
        tracker_shapes(s, lin, norm, conv, mlp, mask_decoder)
    else:
        s[f"{tr}.no_mem_embed"] = (1, 1, D)
        s[f"{tr}.no_mem_pos_enc"] = (1, 1, D)
    return s


SLOTS, MASK_CHANNELS = 16, (8, 16, 32, 64)


def tracker_shapes(s, lin, norm, conv, mlp, mask_decoder):
    """SAM 3.1's video tracker in ComfyUI's names (`SAM31Tracker`): the decoupled memory
    attention, the multiplex mask decoder, the memory encoder (its mask downsampler narrower
    than the release's 16-64-256-1024) and the pointer and slot parameters."""
    tr = "tracker"
    for i in range(4):
        p = f"{tr}.transformer.encoder.layers.{i}"
        for a in ("self_attn", "cross_attn"):
            for part in ("q", "k", "v", "out"):
                lin(f"{p}.{a}_{part}_proj", D, D)
        lin(f"{p}.image_cross_attn_q_proj", D, D)
        lin(f"{p}.image_cross_attn_k_proj", D, D)
        lin(f"{p}.linear1", D, FF)
        lin(f"{p}.linear2", FF, D)
        for n in ("norm1", "norm2", "norm3"):
            norm(f"{p}.{n}", D)
    norm(f"{tr}.transformer.encoder.norm", D)
    mask_decoder(f"{tr}.sam_mask_decoder", SLOTS, 3)
    mb = f"{tr}.maskmem_backbone"
    channels = (2 * SLOTS,) + MASK_CHANNELS
    for i in range(len(MASK_CHANNELS)):
        conv(f"{mb}.mask_downsampler.encoder.{3 * i}", channels[i], channels[i + 1], 3)
        norm(f"{mb}.mask_downsampler.encoder.{3 * i + 1}", channels[i + 1])
    conv(f"{mb}.mask_downsampler.encoder.{3 * len(MASK_CHANNELS)}", MASK_CHANNELS[-1], D, 1)
    conv(f"{mb}.pix_feat_proj", D, D, 1)
    for i in range(2):
        p = f"{mb}.fuser.layers.{i}"
        s[f"{p}.dwconv.weight"] = (D, 1, 7, 7)
        s[f"{p}.dwconv.bias"] = (D,)
        norm(f"{p}.norm", D)
        lin(f"{p}.pwconv1", D, 4 * D)
        lin(f"{p}.pwconv2", 4 * D, D)
        s[f"{p}.gamma"] = (D,)
    s[f"{tr}.maskmem_tpos_enc"] = (7, 1, 1, D)
    s[f"{tr}.no_obj_embed_spatial"] = (SLOTS, D)
    mlp(f"{tr}.obj_ptr_proj", D, D, D, 3)
    lin(f"{tr}.obj_ptr_tpos_proj", D, D)
    lin(f"{tr}.no_obj_ptr_linear", D, D)
    conv(f"{tr}.interactive_mask_downsample", 1, 1, 4)
    s[f"{tr}.output_valid_embed"] = (SLOTS, D)
    s[f"{tr}.output_invalid_embed"] = (SLOTS, D)
    s[f"{tr}.image_pe_layer.positional_encoding_gaussian_matrix"] = (2, D // 2)


TABLES = ("query_embed", "reference_points", "presence_token.weight", "label_embed", "cls_embed",
          "point_embeddings", "not_a_point_embed", "no_mask_embed", "iou_token", "mask_tokens",
          "obj_score_token", "pos_embed", "no_mem_embed", "no_mem_pos_enc", "gaussian_matrix")


def random_state(shapes, generator):
    """Biases small, norms near 1, tables of unit scale, other weights scaled by their fan-in."""
    sd = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=generator)
        if name.endswith(".bias"):
            t = t * 0.05
        elif any(n in name for n in TABLES):
            t = t * 0.5
        elif len(shape) == 1:
            t = 1 + 0.1 * t
        else:
            transposed = "dconv" in name or "output_upscaling" in name
            t = t / math.sqrt(shape[0] if transposed else math.prod(shape[1:]))
        sd[name] = t
    return sd


def original_layout(sd, multiplex):
    """ComfyUI's names → the release's: fused in_proj for the detector's attention, SAM 3.1's
    tracker under `tracker.model.`, the SAM decoders' original MLP and final-norm names, and the
    per-block RoPE buffers SAM 3.1 files carry."""
    out = {}
    fused = {}
    for k, v in sd.items():
        if k.startswith("detector.") and any(f".{p}_proj." in k for p in "qkv"):
            base, rest = k.rsplit(".", 2)[0], k.rsplit(".", 2)[1:]
            fused.setdefault((base, rest[1]), {})[rest[0][0]] = v
            continue
        name = k
        if "sam_mask_decoder.transformer." in name:
            name = name.replace(".mlp.0.", ".mlp.lin1.").replace(".mlp.2.", ".mlp.lin2.")
            name = name.replace(".norm_final.", ".norm_final_attn.")
        if multiplex and name.startswith("tracker."):
            name = "tracker.model." + name[len("tracker."):]
        out[name] = v
    for (base, part), qkv in fused.items():
        out[f"{base}.in_proj_{part}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
    if multiplex:
        for b in range(VIT_DEPTH):
            out[f"detector.backbone.vision_backbone.trunk.blocks.{b}.attn.freqs_cis"] = torch.zeros(4, 2)
    return out


def text_model(generator):
    config = CLIPTextConfig(vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH,
                            num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_WIDTH // 64,
                            max_position_embeddings=TEXT_TOKENS, hidden_act="quick_gelu",
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    return model


def open_clip_layout(sd, prefix):
    out = {
        f"{prefix}token_embedding.weight": sd["embeddings.token_embedding.weight"],
        f"{prefix}positional_embedding": sd["embeddings.position_embedding.weight"],
        f"{prefix}ln_final.weight": sd["final_layer_norm.weight"],
        f"{prefix}ln_final.bias": sd["final_layer_norm.bias"],
    }
    for i in range(TEXT_LAYERS):
        p, q = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[q + f"attn.in_proj_{part}"] = torch.cat([sd[p + f"self_attn.{n}_proj.{part}"] for n in "qkv"])
            for ours, theirs in [("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                                 ("attn.out_proj", "self_attn.out_proj"),
                                 ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]:
                out[q + f"{ours}.{part}"] = sd[p + f"{theirs}.{part}"]
    return out


# ----------------------------------------------------------------------------------------------
# The forward, over ComfyUI's names.

class Sam3:
    def __init__(self, sd, multiplex):
        self.w = sd
        self.multiplex = multiplex

    def lin(self, name, x):
        return F.linear(x, self.w[f"{name}.weight"], self.w.get(f"{name}.bias"))

    def ln(self, name, x, eps=1e-5):
        return F.layer_norm(x, (x.shape[-1],), self.w[f"{name}.weight"], self.w[f"{name}.bias"], eps)

    def ln2d(self, name, x):
        return self.ln(name, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def conv(self, name, x, stride=1, padding=0):
        return F.conv2d(x, self.w[f"{name}.weight"], self.w.get(f"{name}.bias"), stride, padding)

    def convt(self, name, x):
        return F.conv_transpose2d(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], stride=2)

    def mlp(self, name, x, sigmoid=False):
        n = 0
        while f"{name}.layers.{n}.weight" in self.w:
            n += 1
        for i in range(n):
            x = self.lin(f"{name}.layers.{i}", x)
            if i < n - 1:
                x = F.relu(x)
        return x.sigmoid() if sigmoid else x

    @staticmethod
    def attention(q, k, v, heads, mask=None):
        b, nq, c = q.shape
        split = lambda t: t.view(b, -1, heads, c // heads).transpose(1, 2)
        if mask is not None and mask.ndim == 2:
            mask = mask[:, None, None, :]
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        return out.transpose(1, 2).reshape(b, nq, c)

    def mha(self, name, q_in, k_in=None, v_in=None, mask=None, heads=HEADS):
        q = self.lin(f"{name}.q_proj", q_in)
        k_in = q_in if k_in is None else k_in
        v_in = k_in if v_in is None else v_in
        k = self.lin(f"{name}.k_proj", k_in)
        v = self.lin(f"{name}.v_proj", v_in)
        return self.lin(f"{name}.out_proj", self.attention(q, k, v, heads, mask))

    # -- backbone --------------------------------------------------------------------------

    @staticmethod
    def rope_2d(end_x, end_y, dim, scale=1.0, theta=10000.0):
        """flux's EmbedND over (x, y) positions: [HW, dim/2, 2, 2] rotation matrices."""
        t = torch.arange(end_x * end_y, dtype=torch.float32)
        pos = [(t % end_x) * scale, torch.div(t, end_x, rounding_mode="floor") * scale]
        parts = []
        for p in pos:
            half = dim // 2
            omega = 1.0 / theta ** (torch.arange(0, half, 2, dtype=torch.float64) / half)
            out = p.double()[:, None] * omega[None]
            m = torch.stack([out.cos(), -out.sin(), out.sin(), out.cos()], -1).view(-1, half // 2, 2, 2)
            parts.append(m.float())
        return torch.cat(parts, dim=1)

    @staticmethod
    def apply_rope(x, freqs):
        x_ = x.float().reshape(*x.shape[:-1], -1, 1, 2)
        out = freqs[..., 0] * x_[..., 0] + freqs[..., 1] * x_[..., 1]
        return out.reshape(*x.shape).type_as(x)

    def vit(self, x):
        p = "detector.backbone.vision_backbone.trunk"
        x = F.conv2d(x, self.w[f"{p}.patch_embed.proj.weight"], None, PATCH)
        b, c, hp, wp = x.shape
        x = x.permute(0, 2, 3, 1).reshape(b, hp * wp, c)
        pos = self.w[f"{p}.pos_embed"]
        spatial = pos[:, 1:]
        old = int(math.sqrt(spatial.shape[1]))
        grid = spatial.reshape(1, old, old, -1).permute(0, 3, 1, 2)
        tiles = hp // old + 1
        tiled = grid.tile([1, 1, tiles, tiles])[:, :, :hp, :hp].permute(0, 2, 3, 1).reshape(1, hp * hp, -1)
        x = x + tiled
        x = self.ln(f"{p}.ln_pre", x.view(b, hp, wp, c))
        head_dim = c // VIT_HEADS
        pretrain_grid = int(math.sqrt(pos.shape[1] - 1))
        rope_global = self.rope_2d(hp, hp, head_dim, scale=pretrain_grid / hp)
        rope_window = self.rope_2d(WINDOW, WINDOW, head_dim)
        depth = 0
        while f"{p}.blocks.{depth}.norm1.weight" in self.w:
            depth += 1
        for i in range(depth):
            bp = f"{p}.blocks.{i}"
            shortcut = x
            y = self.ln(f"{bp}.norm1", x)
            windowed = i not in GLOBAL_BLOCKS
            if windowed:
                hh, ww = y.shape[1], y.shape[2]
                ph, pw = (WINDOW - hh % WINDOW) % WINDOW, (WINDOW - ww % WINDOW) % WINDOW
                y = F.pad(y, (0, 0, 0, pw, 0, ph))
                H2, W2 = hh + ph, ww + pw
                y = y.view(b, H2 // WINDOW, WINDOW, W2 // WINDOW, WINDOW, c).permute(0, 1, 3, 2, 4, 5)
                y = y.reshape(-1, WINDOW * WINDOW, c)
                y = self.vit_attention(bp, y, rope_window)
                y = y.view(b, H2 // WINDOW, W2 // WINDOW, WINDOW, WINDOW, c).permute(0, 1, 3, 2, 4, 5)
                y = y.reshape(b, H2, W2, c)[:, :hh, :ww]
            else:
                y = self.vit_attention(bp, y.reshape(b, hp * wp, c), rope_global).view(b, hp, wp, c)
            x = shortcut + y
            h = self.lin(f"{bp}.mlp.fc1", self.ln(f"{bp}.norm2", x))
            x = x + self.lin(f"{bp}.mlp.fc2", F.gelu(h))
        return x.permute(0, 3, 1, 2)

    def vit_attention(self, bp, x, rope):
        b, n, c = x.shape
        qkv = self.lin(f"{bp}.attn.qkv", x).reshape(b, n, 3, VIT_HEADS, c // VIT_HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.apply_rope(q, rope), self.apply_rope(k, rope)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.lin(f"{bp}.attn.proj", out)

    def fpn(self, name, x, scale):
        if scale == 4.0:
            x = self.convt(f"{name}.dconv_2x2_1", F.gelu(self.convt(f"{name}.dconv_2x2_0", x)))
        elif scale == 2.0:
            x = self.convt(f"{name}.dconv_2x2", x)
        elif scale == 0.5:
            x = F.max_pool2d(x, 2, 2)
        return self.conv(f"{name}.conv_3x3", self.conv(f"{name}.conv_1x1", x), padding=1)

    @staticmethod
    def sine_position(x):
        b, c, h, w = x.shape
        half = c // 2

        def sincos(vals):
            freqs = 10000.0 ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)
            raw = vals[..., None] * (2 * math.pi) / freqs
            return torch.stack((raw[..., 0::2].sin(), raw[..., 1::2].cos()), dim=-1).flatten(-2)

        gy = torch.arange(h, dtype=torch.float32) / (h - 1 + 1e-6)
        gx = torch.arange(w, dtype=torch.float32) / (w - 1 + 1e-6)
        yy, xx = torch.meshgrid(gy, gx, indexing="ij")
        return torch.cat((sincos(yy), sincos(xx)), dim=-1).permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1)

    def neck(self, trunk, name):
        scales = [4.0, 2.0, 1.0] if self.multiplex else [4.0, 2.0, 1.0, 0.5]
        feats = [self.fpn(f"detector.backbone.vision_backbone.{name}.{i}", trunk, s) for i, s in enumerate(scales)]
        return feats, [self.sine_position(f) for f in feats]

    # -- detector --------------------------------------------------------------------------

    def encoder_layer(self, p, x, pos, text=None, text_mask=None):
        normed = self.ln(f"{p}.norm1", x)
        qk = normed + pos
        x = x + self.mha(f"{p}.self_attn", qk, qk, normed)
        if text is not None:
            x = x + self.mha(f"{p}.cross_attn_image", self.ln(f"{p}.norm2", x), text, text, text_mask)
        return x + self.lin(f"{p}.linear2", F.relu(self.lin(f"{p}.linear1", self.ln(f"{p}.norm3", x))))

    @staticmethod
    def cxcywh_to_xyxy(b):
        cx, cy, w, h = b.unbind(-1)
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)

    @staticmethod
    def sine_embed(pos, num_feats):
        half = num_feats // 2
        freqs = 10000.0 ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)
        out = []
        for c in range(pos.shape[-1]):
            raw = (pos[..., c] * 2 * math.pi).unsqueeze(-1) / freqs
            out.append(torch.stack([raw[..., 0::2].sin(), raw[..., 1::2].cos()], -1).flatten(-2))
        return torch.cat(out, -1)

    def box_rpb(self, ref, h, w):
        boxes = self.cxcywh_to_xyxy(ref)
        b, q, _ = boxes.shape
        ch = torch.arange(h, dtype=torch.float32) / h
        cw = torch.arange(w, dtype=torch.float32) / w
        dx = cw.view(1, 1, -1, 1) - boxes[:, :, None, 0:3:2]
        dy = ch.view(1, 1, -1, 1) - boxes[:, :, None, 1:4:2]
        scale = lambda d: torch.sign(d * 8) * torch.log2(torch.abs(d * 8) + 1.0) / math.log2(8)
        dec = "detector.transformer.decoder"
        rx = self.mlp(f"{dec}.boxRPB_embed_x", scale(dx))
        ry = self.mlp(f"{dec}.boxRPB_embed_y", scale(dy))
        bias = (ry.unsqueeze(3) + rx.unsqueeze(2)).flatten(2, 3).permute(0, 3, 1, 2)
        return torch.cat([torch.zeros(b, bias.shape[1], 1, bias.shape[3]), bias], 2)

    def decoder(self, memory, memory_pos, text, text_mask, h, w):
        dec = "detector.transformer.decoder"
        b = memory.shape[0]
        tgt = self.w[f"{dec}.query_embed.weight"].unsqueeze(0).expand(b, -1, -1)
        presence = self.w[f"{dec}.presence_token.weight"][None].expand(b, -1, -1)
        ref = self.w[f"{dec}.reference_points.weight"].unsqueeze(0).expand(b, -1, -1).sigmoid()
        inv = lambda x: torch.log(x / (1 - x + 1e-6) + 1e-6)
        for i in range(6):
            p = f"{dec}.layers.{i}"
            query_pos = self.mlp(f"{dec}.ref_point_head", self.sine_embed(ref, D))
            x = torch.cat([presence, tgt], 1)
            x_pos = torch.cat([torch.zeros_like(presence), query_pos], 1)
            bias = self.box_rpb(ref, h, w)
            qk = x + x_pos
            x = self.ln(f"{p}.norm2", x + self.mha(f"{p}.self_attn", qk, qk, x))
            x = self.ln(f"{p}.catext_norm", x + self.mha(f"{p}.ca_text", x + x_pos, text, text, text_mask))
            x = self.ln(f"{p}.norm1", x + self.mha(f"{p}.cross_attn", x + x_pos, memory + memory_pos, memory, bias))
            x = self.ln(f"{p}.norm3", x + self.lin(f"{p}.linear2", F.relu(self.lin(f"{p}.linear1", x))))
            presence, tgt = x[:, :1], x[:, 1:]
            if i < 5:
                ref = (inv(ref) + self.mlp(f"{dec}.bbox_embed", self.ln(f"{dec}.norm", tgt))).sigmoid()
        out = self.ln(f"{dec}.norm", tgt)
        boxes = (inv(ref) + self.mlp(f"{dec}.bbox_embed", out)).sigmoid()
        return out, boxes

    def detect(self, image, text, text_mask, exemplars=None):
        """`SAM3Detector.forward` with a text prompt and optional box exemplars `[1, N, 4]`
        (cxcywh in 0..1): xyxy boxes in 0..1, score logits, mask logits at 288×288."""
        return self.detect_from_trunk(self.vit(image), text, text_mask, exemplars)

    def box_exemplars(self, img, exemplars):
        """`GeometryEncoder` on boxes: coordinates, torchvision's roi_align of the pre-normed
        image inside each box through the 7×7 convolution, sine position and size, the positive
        label; then the geometry layers (no positions anywhere), encode_norm and final_proj."""
        ge = "detector.geometry_encoder"
        b, hw, c = img.shape
        side = int(math.sqrt(hw))
        n = exemplars.shape[1]
        embed = self.lin(f"{ge}.boxes_direct_project", exemplars)
        fmap = self.ln(f"{ge}.img_pre_norm", img).permute(0, 2, 1).view(b, c, side, side)
        scaled = self.cxcywh_to_xyxy(exemplars) * torch.tensor([side, side, side, side], dtype=exemplars.dtype)
        pooled = roi_align(fmap, scaled.view(-1, 4).split(n), 7)
        embed = embed + self.conv(f"{ge}.boxes_pool_project", pooled).view(b, n, -1)
        cx, cy, w, h = (v.flatten() for v in exemplars.unbind(-1))
        sines = self.sine_embed(torch.stack((cy, cx), -1), c)
        enc = torch.cat((sines, h[:, None], w[:, None]), dim=1).view(b, n, -1)
        embed = embed + self.lin(f"{ge}.boxes_pos_enc_project", enc)
        geo = self.ln(f"{ge}.norm", embed + self.w[f"{ge}.label_embed.weight"][1])
        for i in range(3):
            geo = self.encoder_layer(f"{ge}.encode.{i}", geo, torch.zeros_like(geo), img)
        return self.lin(f"{ge}.final_proj", self.ln(f"{ge}.encode_norm", geo))

    def detect_from_trunk(self, trunk, text, text_mask, exemplars=None):
        feats, poss = self.neck(trunk, "convs")
        seg_feats = feats
        if not self.multiplex:
            feats, poss = feats[:-1], poss[:-1]
        enc, enc_pos = feats[-1], poss[-1]
        b, _, h, w = enc.shape
        img = enc.flatten(2).permute(0, 2, 1)
        pos = enc_pos.flatten(2).permute(0, 2, 1)
        text = self.lin("detector.backbone.language_backbone.resizer", text)
        ge = "detector.geometry_encoder"
        cls = self.ln(f"{ge}.norm", self.lin(f"{ge}.final_proj", self.w[f"{ge}.cls_embed.weight"].view(1, 1, -1).expand(b, -1, -1)))
        for i in range(3):
            p = f"{ge}.encode.{i}"
            cls = cls + self.mha(f"{p}.self_attn", self.ln(f"{p}.norm1", cls))
            cls = cls + self.mha(f"{p}.cross_attn_image", self.ln(f"{p}.norm2", cls), img + pos, img)
            cls = cls + self.lin(f"{p}.linear2", F.relu(self.lin(f"{p}.linear1", self.ln(f"{p}.norm3", cls))))
        cls = self.ln(f"{ge}.encode_norm", cls)
        geo = [] if exemplars is None else [self.box_exemplars(img, exemplars)]
        prompt = torch.cat([text, *geo, cls], 1)
        mask = torch.cat([text_mask.bool(), torch.ones(b, prompt.shape[1] - text_mask.shape[1], dtype=torch.bool)], 1)
        memory = img
        for i in range(6):
            memory = self.encoder_layer(f"detector.transformer.encoder.layers.{i}", memory, pos, prompt, mask)
        queries, boxes = self.decoder(memory, pos, prompt, mask, h, w)
        ds = "detector.dot_prod_scoring"
        pm = self.lin(f"{ds}.prompt_mlp.layers.1", F.relu(self.lin(f"{ds}.prompt_mlp.layers.0", prompt))) + prompt
        pm = self.ln(f"{ds}.prompt_mlp.out_norm", pm)
        weight = mask.unsqueeze(-1).to(pm.dtype)
        pooled = (pm * weight).sum(1) / weight.sum(1).clamp(min=1)
        scores = torch.matmul(self.lin(f"{ds}.hs_proj", queries), self.lin(f"{ds}.prompt_proj", pooled).unsqueeze(-1))
        scores = (scores / math.sqrt(D)).clamp(-12.0, 12.0).squeeze(-1)
        sh = "detector.segmentation_head"
        memory = memory + self.mha(f"{sh}.cross_attend_prompt", self.ln(f"{sh}.cross_attn_norm", memory), prompt, prompt, mask)
        lh, lw = seg_feats[-1].shape[-2:]
        seg_feats = list(seg_feats)
        seg_feats[-1] = memory[:, :lh * lw].permute(0, 2, 1).reshape(b, D, lh, lw)
        prev = seg_feats[-1]
        for i, feat in enumerate(seg_feats[:-1][::-1]):
            y = self.conv(f"{sh}.pixel_decoder.conv_layers.{i}", feat + F.interpolate(prev, size=feat.shape[-2:], mode="nearest"), padding=1)
            n = f"{sh}.pixel_decoder.norms.{i}"
            prev = F.relu(F.group_norm(y, 8, self.w[f"{n}.weight"], self.w[f"{n}.bias"]))
        inst = self.conv(f"{sh}.instance_seg_head", prev)
        masks = torch.einsum("bqc,bchw->bqhw", self.mlp(f"{sh}.mask_predictor.mask_embed", queries), inst)
        return self.cxcywh_to_xyxy(boxes), scores, masks

    # -- the interactive SAM heads -----------------------------------------------------------

    def heads_names(self):
        if self.multiplex:
            return "tracker.interactive_sam_prompt_encoder", "tracker.interactive_sam_mask_decoder", "tracker.interactivity_no_mem_embed", "interactive_convs"
        return "tracker.sam_prompt_encoder", "tracker.sam_mask_decoder", "tracker.no_mem_embed", "sam2_convs"

    def random_pe(self, matrix, coords):
        proj = 2 * math.pi * (2 * coords.float() - 1) @ self.w[matrix].float()
        return torch.cat([proj.sin(), proj.cos()], -1)

    def dense_pe(self, matrix, h, w):
        ones = torch.ones(h, w)
        grid = torch.stack([(ones.cumsum(1) - 0.5) / w, (ones.cumsum(0) - 0.5) / h], -1)
        return self.random_pe(matrix, grid).permute(2, 0, 1).unsqueeze(0)

    def sam_attention(self, name, q, k, v):
        q, k, v = self.lin(f"{name}.q_proj", q), self.lin(f"{name}.k_proj", k), self.lin(f"{name}.v_proj", v)
        return self.lin(f"{name}.out_proj", self.attention(q, k, v, HEADS))

    def two_way(self, md, tokens, src, pos):
        """The SAM decoders' two-way transformer: (the tokens, the image tokens) after it."""
        queries, keys = tokens, src
        t = f"{md}.transformer"
        for i in range(2):
            p = f"{t}.layers.{i}"
            if i == 0:
                queries = self.ln(f"{p}.norm1", self.sam_attention(f"{p}.self_attn", queries, queries, queries))
            else:
                q = queries + tokens
                queries = self.ln(f"{p}.norm1", queries + self.sam_attention(f"{p}.self_attn", q, q, queries))
            q, k = queries + tokens, keys + pos
            queries = self.ln(f"{p}.norm2", queries + self.sam_attention(f"{p}.cross_attn_token_to_image", q, k, keys))
            queries = self.ln(f"{p}.norm3", queries + self.lin(f"{p}.mlp.2", F.relu(self.lin(f"{p}.mlp.0", queries))))
            q, k = queries + tokens, keys + pos
            keys = self.ln(f"{p}.norm4", keys + self.sam_attention(f"{p}.cross_attn_image_to_token", k, q, queries))
        q, k = queries + tokens, keys + pos
        queries = self.ln(f"{t}.norm_final", queries + self.sam_attention(f"{t}.final_attn_token_to_image", q, k, keys))
        return queries, keys

    def upscale(self, md, src_out, high_res):
        up = self.convt(f"{md}.output_upscaling.0", src_out) + self.conv(f"{md}.conv_s1", high_res[1])
        up = F.gelu(self.ln2d(f"{md}.output_upscaling.1", up))
        return F.gelu(self.convt(f"{md}.output_upscaling.3", up) + self.conv(f"{md}.conv_s0", high_res[0]))

    def sam_heads(self, feat, high_res, points=None, labels=None, box=None, mask_input=None, multimask=False):
        """`forward_sam_heads` before the pointer: the interactive heads on `feat` [1, C, h, w]
        (the no-memory vector added) for B prompts; (low-resolution masks, IoU, mask tokens,
        object scores), multimask picking the three multimask outputs."""
        pe, md, _, _ = self.heads_names()
        matrix = f"{pe}.pe_layer.positional_encoding_gaussian_matrix"
        b = mask_input.shape[0] if mask_input is not None else 1
        _, c, h, w = feat.shape
        if points is None:
            points = torch.zeros(b, 1, 2)
            labels = -torch.ones(b, 1, dtype=torch.int32)
        if box is None:
            points = torch.cat([points, torch.zeros(b, 1, 2)], 1)
            labels = torch.cat([labels, -torch.ones(b, 1, dtype=labels.dtype)], 1)
        sparse = self.random_pe(matrix, (points + 0.5) / IMAGE)
        for i in range(4):
            sparse[labels == i] += self.w[f"{pe}.point_embeddings.{i}.weight"][0]
        invalid = labels == -1
        sparse[invalid] = 0.0
        sparse[invalid] += self.w[f"{pe}.not_a_point_embed.weight"][0]
        if box is not None:
            corners = self.random_pe(matrix, (box.reshape(-1, 2, 2) + 0.5) / IMAGE)
            corners[:, 0] += self.w[f"{pe}.point_embeddings.2.weight"][0]
            corners[:, 1] += self.w[f"{pe}.point_embeddings.3.weight"][0]
            sparse = torch.cat([sparse, corners], 1)
        if mask_input is not None:
            m = mask_input
            if m.shape[-2:] != (4 * h, 4 * w):
                m = F.interpolate(m, size=(4 * h, 4 * w), mode="bilinear", align_corners=False, antialias=True)
            m = F.gelu(self.ln2d(f"{pe}.mask_downscaling.1", self.conv(f"{pe}.mask_downscaling.0", m, stride=2)))
            m = F.gelu(self.ln2d(f"{pe}.mask_downscaling.4", self.conv(f"{pe}.mask_downscaling.3", m, stride=2)))
            dense = self.conv(f"{pe}.mask_downscaling.6", m)
        else:
            dense = self.w[f"{pe}.no_mask_embed.weight"].reshape(1, -1, 1, 1).expand(1, -1, h, w)
        tokens = torch.cat([self.w[f"{md}.obj_score_token.weight"], self.w[f"{md}.iou_token.weight"], self.w[f"{md}.mask_tokens.weight"]], 0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(b, -1, -1), sparse], 1)
        src = (feat + dense).flatten(2).permute(0, 2, 1)
        pos = self.dense_pe(matrix, h, w).flatten(2).permute(0, 2, 1).expand(b, -1, -1)
        queries, keys = self.two_way(md, tokens, src, pos)
        up = self.upscale(md, keys.permute(0, 2, 1).reshape(b, c, h, w), high_res)
        hyper = torch.stack([self.mlp(f"{md}.output_hypernetworks_mlps.{i}", queries[:, 2 + i]) for i in range(4)], 1)
        masks = (hyper @ up.flatten(2)).view(b, 4, up.shape[2], up.shape[3])
        iou = self.mlp(f"{md}.iou_prediction_head", queries[:, 1])
        obj = self.mlp(f"{md}.pred_obj_score_head", queries[:, 0])
        picked = slice(1, None) if multimask else slice(0, 1)
        return masks[:, picked], iou[:, picked], queries[:, 2:6][:, picked], obj

    def segment_features(self, image):
        """The interactive neck's levels of an image: (the finer levels, the coarse level with
        the no-memory vector added)."""
        _, _, no_mem, neck = self.heads_names()
        feats, _ = self.neck(self.vit(image), neck)
        if not self.multiplex:
            feats = feats[:-1]
        high_res, feat = feats[:-1], feats[-1]
        b, c, h, w = feat.shape
        feat = (feat.flatten(2).permute(0, 2, 1) + self.w[no_mem]).view(b, h, w, c).permute(0, 3, 1, 2)
        return high_res, feat

    def segment(self, image, points=None, labels=None, box=None, mask_input=None):
        """`SAM3Model.forward_segment`: high-resolution mask logits [B, 1, 1008, 1008]."""
        high_res, feat = self.segment_features(image)
        num_points = 0 if points is None else points.shape[1]
        multimask = 0 < num_points <= 1
        masks, iou, _, obj = self.sam_heads(feat, high_res, points, labels, box, mask_input, multimask)
        b = masks.shape[0]
        masks = torch.where((obj > 0)[:, None, None], masks, torch.tensor(NO_OBJ_SCORE))
        high = F.interpolate(masks, size=(IMAGE, IMAGE), mode="bilinear", align_corners=False)
        if multimask:
            best = torch.argmax(iou, -1)
            high = high[torch.arange(b), best].unsqueeze(1)
        return high


# ----------------------------------------------------------------------------------------------
# SAM3_Detect with a text prompt.

def resize(image_bhwc, size):
    return F.interpolate(image_bhwc[..., :3].movedim(-1, 1), size=(size, size), mode="bilinear")


def refine(model, image_hwc, coarse, box, H, W, iterations):
    def fallback():
        return (F.interpolate(coarse[None, None], size=(H, W), mode="bilinear", align_corners=False)[0] > 0).float()

    if iterations <= 0:
        return fallback(), None, None
    x1, y1, x2, y2 = box.tolist()
    bw, bh = x2 - x1, y2 - y1
    cx1, cy1 = max(0, int(x1 - bw * 0.1)), max(0, int(y1 - bh * 0.1))
    cx2, cy2 = min(W, int(x2 + bw * 0.1)), min(H, int(y2 + bh * 0.1))
    if cx2 <= cx1 or cy2 <= cy1:
        return fallback(), None, None
    crop = resize(image_hwc[cy1:cy2, cx1:cx2].unsqueeze(0), IMAGE)
    mh, mw = coarse.shape[-2:]
    mx1, my1 = int(cx1 / W * mw), int(cy1 / H * mh)
    mx2, my2 = int(cx2 / W * mw), int(cy2 / H * mh)
    if mx2 <= mx1 or my2 <= my1:
        return fallback(), None, None
    logit = coarse[..., my1:my2, mx1:mx2][None, None]
    for _ in range(iterations):
        logit = model.segment(crop, mask_input=F.interpolate(logit, size=(IMAGE, IMAGE), mode="bilinear", align_corners=False))
    refined = F.interpolate(logit, size=(cy2 - cy1, cx2 - cx1), mode="bilinear", align_corners=False)
    full = torch.zeros(1, 1, H, W)
    full[:, :, cy1:cy2, cx1:cx2] = refined
    coarse_full = F.interpolate(coarse[None, None], size=(H, W), mode="bilinear", align_corners=False)
    return ((full[0] > 0) | (coarse_full[0] > 0)).float(), full[0], coarse_full[0]


def detect_node(model, image, text, text_mask, threshold, iterations):
    """One frame of SAM3_Detect (union of the masks): the mask, the boxes with scores, and the
    logits behind each kept mask (refined crop and coarse) for tolerance-aware comparison."""
    _, H, W, _ = image.shape
    boxes, scores, masks = model.detect(resize(image, IMAGE), text, text_mask)
    boxes = boxes[0] * torch.tensor([W, H, W, H])
    masks = F.interpolate(masks, size=(H, W), mode="bilinear", align_corners=False)[0]
    probs = scores[0].sigmoid()
    keep = probs > threshold
    kept_boxes, kept_scores, kept_masks = boxes[keep], probs[keep], masks[keep]
    order = kept_scores.argsort(descending=True)[:1]
    out = {"boxes": kept_boxes[order], "scores": kept_scores[order]}
    union = torch.zeros(H, W)
    for i, (m, box) in enumerate(zip(kept_masks[order], kept_boxes[order])):
        mask, refined, coarse = refine(model, image[0], m, box, H, W, iterations)
        if refined is not None:
            out[f"refined_{i}"], out[f"coarse_{i}"] = refined, coarse
        union = torch.maximum(union, mask[0])
    out["mask"] = union
    return out


def checkpoint(multiplex, g):
    """(the file's tensors in the release's layout, the weights in ComfyUI's names, the text
    tower)."""
    comfy = random_state(comfy_shapes(multiplex), g)
    # An object score above 0, so the SAM heads' masks are not all NO_OBJ_SCORE.
    decoder = "interactive_sam_mask_decoder" if multiplex else "sam_mask_decoder"
    comfy[f"tracker.{decoder}.pred_obj_score_head.layers.2.bias"] = torch.tensor([3.0])
    if multiplex:  # and the video tracker's tracks live on
        comfy["tracker.sam_mask_decoder.pred_obj_score_head.layers.2.bias"] = torch.tensor([3.0])
    clip = text_model(g)
    ckpt = original_layout(comfy, multiplex)
    ckpt.update(open_clip_layout(clip.state_dict(), "detector.backbone.language_backbone.encoder."))
    return {k: v.contiguous() for k, v in ckpt.items()}, comfy, clip


def main(out_dir, multiplex):
    out_dir = Path(out_dir)
    g = torch.Generator().manual_seed(3)
    ckpt, comfy, clip = checkpoint(multiplex, g)
    save_file(ckpt, str(out_dir / "sam3.safetensors"))
    model = Sam3(comfy, multiplex)

    # "cat" as ComfyUI's SAM3 tokenizer gives it: start, the word, end, padding with 0 to 32.
    ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.long)
    ids[0, :3] = torch.tensor([49406, 2368, 49407])
    text_mask = (torch.arange(TEXT_TOKENS) < 3).long()[None]
    with torch.no_grad():
        text = clip(input_ids=ids, attention_mask=text_mask).last_hidden_state
        image = torch.rand(1, 1008, 1008, 3, generator=g)
        boxes, scores, masks = model.detect(image.movedim(-1, 1), text, text_mask)
        low = torch.randn(1, 1, 288, 288, generator=g)
        seg_mask = model.segment(image.movedim(-1, 1), mask_input=F.interpolate(low, size=(IMAGE, IMAGE), mode="bilinear"))
        point = torch.tensor([[[300.0, 500.0]]])
        seg_point = model.segment(image.movedim(-1, 1), points=point, labels=torch.ones(1, 1, dtype=torch.int32))
        box = torch.tensor([[[100.0, 200.0], [700.0, 900.0]]])
        seg_box = model.segment(image.movedim(-1, 1), box=box)
        # The node on a smaller, non-square frame with a threshold that keeps detections.
        frame = torch.rand(1, 120, 200, 3, generator=g)
        threshold = float(model.detect(resize(frame, IMAGE), text, text_mask)[1].sigmoid().median())
        node = detect_node(model, frame, text, text_mask, threshold, 2)
        # The text with two box exemplars, the second reaching past the image's corner.
        exemplars = torch.tensor([[[0.3, 0.4, 0.2, 0.3], [0.9, 0.85, 0.4, 0.5]]])
        ex_boxes, ex_scores, ex_masks = model.detect(image.movedim(-1, 1), text, text_mask, exemplars)
    io = {"ids": ids, "text_mask": text_mask, "text": text, "image": image, "boxes": boxes, "scores": scores,
          "masks": masks, "low_mask": low, "seg_mask": seg_mask, "point": point, "seg_point": seg_point,
          "box": box, "seg_box": seg_box, "frame": frame, "threshold": torch.tensor([threshold])}
    io.update({"exemplars": exemplars, "exemplar_boxes": ex_boxes, "exemplar_scores": ex_scores,
               "exemplar_masks": ex_masks})
    io.update({f"node_{k}": v for k, v in node.items()})
    save_file({k: v.contiguous() for k, v in io.items()}, str(out_dir / "sam3_io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "1")
