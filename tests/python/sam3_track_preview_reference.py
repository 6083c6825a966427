"""SAM3_TrackPreview's frames: ComfyUI's node (`comfy_extras/nodes_sam3.py`) written out in plain
torch up to the frame it hands to the encoder (float, before `mul(255).byte()`): each object's
palette colour blended over the video at `opacity` (the first object covering a pixel wins),
its index drawn at the mask's centroid in the 5x3 bitmap font with a max-pooled black outline,
the score in percent below it when under 1.

The tracks: four objects over three frames at the tracker's 24x32, upsampled (nearest) to a
48x64 video of which only two frames are given (the third is black). Object 1 overlaps object
0 and runs off the right edge, object 2 is sparse noise, object 3 one tracker pixel by the
top-right corner (its label clipped by the frame) that is gone in the last frame (no label).

Usage: DIR -> writes DIR/track_preview.safetensors: `masks` [3, 4, 24, 32] (0/1), `images`
[2, 48, 64, 3], `scores` [4], `opacity`, and `frames` [3, 48, 64, 3]."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

COLORS = [
    (0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16),
    (0.58, 0.4, 0.74), (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5),
    (0.74, 0.74, 0.13), (0.09, 0.75, 0.81), (0.94, 0.76, 0.06), (0.42, 0.68, 0.84),
]
ATLAS = torch.tensor([
    [[1, 1, 1], [1, 0, 1], [1, 0, 1], [1, 0, 1], [1, 1, 1]],
    [[0, 1, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 1, 1]],
    [[1, 1, 1], [0, 0, 1], [1, 1, 1], [1, 0, 0], [1, 1, 1]],
    [[1, 1, 1], [0, 0, 1], [1, 1, 1], [0, 0, 1], [1, 1, 1]],
    [[1, 0, 1], [1, 0, 1], [1, 1, 1], [0, 0, 1], [0, 0, 1]],
    [[1, 1, 1], [1, 0, 0], [1, 1, 1], [0, 0, 1], [1, 1, 1]],
    [[1, 1, 1], [1, 0, 0], [1, 1, 1], [1, 0, 1], [1, 1, 1]],
    [[1, 1, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1]],
    [[1, 1, 1], [1, 0, 1], [1, 1, 1], [1, 0, 1], [1, 1, 1]],
    [[1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 1, 1]],
], dtype=torch.bool)


def glyphs(scale):
    out = []
    for d in range(10):
        g = ATLAS[d].repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        outline = F.max_pool2d(F.pad(g.float()[None, None], (1, 1, 1, 1)), 3, stride=1, padding=1)[0, 0] > 0
        out.append((g, outline))
    return out


def draw_number(frame, number, cx, cy, color, scale):
    """`_draw_number_gpu`: clipped outline, then clipped fill, digit by digit."""
    H, W = frame.shape[:2]
    shapes = glyphs(scale)
    gh, gw = shapes[0][0].shape
    oh, ow = shapes[0][1].shape
    digits = [int(d) for d in str(number)]
    total_w = len(digits) * (gw + scale) - scale
    x0, y0 = cx - total_w // 2, cy - gh // 2
    for i, d in enumerate(digits):
        glyph, outline = shapes[d]
        dx = x0 + i * (gw + scale)
        oy0, ox0 = y0 - 1, dx - 1
        sy1, sx1, sy2, sx2 = max(0, -oy0), max(0, -ox0), min(oh, H - oy0), min(ow, W - ox0)
        if sy2 > sy1 and sx2 > sx1:
            fy, fx = oy0 + sy1, ox0 + sx1
            frame[fy:fy + sy2 - sy1, fx:fx + sx2 - sx1][outline[sy1:sy2, sx1:sx2]] = 0
        sy1, sx1, sy2, sx2 = max(0, -y0), max(0, -dx), min(gh, H - y0), min(gw, W - dx)
        if sy2 > sy1 and sx2 > sx1:
            fy, fx = y0 + sy1, dx + sx1
            frame[fy:fy + sy2 - sy1, fx:fx + sx2 - sx1][glyph[sy1:sy2, sx1:sx2]] = torch.tensor(color)


def render(masks, images, scores, opacity):
    N, K = masks.shape[:2]
    H, W = images.shape[1:3]
    colors = torch.tensor([COLORS[i % len(COLORS)] for i in range(K)])
    grid_y, grid_x = torch.arange(H).view(1, H, 1), torch.arange(W).view(1, 1, W)
    out = []
    for t in range(N):
        frame = images[t].clone() if t < images.shape[0] else torch.zeros(H, W, 3)
        bool_masks = F.interpolate(masks[t:t + 1].float(), size=(H, W), mode="nearest")[0] > 0.5
        any_mask = bool_masks.any(dim=0)
        if any_mask.any():
            overlay = colors[bool_masks.to(torch.uint8).argmax(dim=0)]
            frame = torch.where(any_mask.unsqueeze(-1), frame * (1 - opacity) + overlay * opacity, frame)
        area = bool_masks.sum(dim=(-1, -2)).clamp_(min=1)
        cy = (bool_masks * grid_y).sum(dim=(-1, -2)) // area
        cx = (bool_masks * grid_x).sum(dim=(-1, -2)) // area
        label_scale = max(3, H // 240)
        caps = (area.float().sqrt() / 15).clamp_(min=1).long().tolist()
        for k in range(K):
            if area[k] > 1:
                scale = min(label_scale, caps[k])
                draw_number(frame, k, int(cx[k]), int(cy[k]), COLORS[k % len(COLORS)], scale)
                if k < len(scores) and scores[k] < 1.0:
                    draw_number(frame, int(scores[k] * 100), int(cx[k]), int(cy[k]) + 5 * scale + 3,
                                COLORS[k % len(COLORS)], max(1, scale * 2 // 3))
        out.append(frame.clamp(0, 1))
    return torch.stack(out)


def main(out_dir):
    g = torch.Generator().manual_seed(5)
    masks = torch.zeros(3, 4, 24, 32, dtype=torch.bool)
    for t in range(3):
        masks[t, 0, 2 + t:15 + t, 3:21] = True
        masks[t, 1, 8:23, 15 + t:32] = True
        masks[t, 2, 12:24, 0:12] = torch.rand(12, 12, generator=g) < 0.3
        masks[t, 3, 1, 30] = t < 2
    images = torch.rand(2, 48, 64, 3, generator=g)
    scores = [0.873, 1.0, 0.4219, 0.5]
    opacity = 0.6
    frames = render(masks, images, scores, opacity)
    save_file({"masks": masks.float(), "images": images, "scores": torch.tensor(scores, dtype=torch.float64),
               "opacity": torch.tensor([opacity], dtype=torch.float64), "frames": frames.contiguous()},
              str(Path(out_dir) / "track_preview.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
