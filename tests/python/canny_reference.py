"""Edges from kornia's `canny` (PyPI kornia 0.9.0), as ComfyUI's Canny node computes them:
`canny(image.movedim(-1, 1), low, high)[1]`. Images in ComfyUI's IMAGE layout [B, H, W, 3]:
smooth random colour fields, and shapes with exact ties (a step-edged square, a disc, stripes)
that exercise the suppression's tie rule and the hysteresis.

Usage: DIR -> writes DIR/canny.safetensors: `images`, and `edges_{i}` for each threshold pair i
of THRESHOLDS (as `thresholds`)."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from kornia.filters import canny
from safetensors.torch import save_file

THRESHOLDS = [(0.1, 0.6), (0.2, 0.5), (0.4, 0.8), (0.05, 0.05)]


def images(g):
    smooth = F.interpolate(torch.rand(2, 3, 6, 7, generator=g), size=(40, 48), mode="bilinear",
                           align_corners=False)
    y, x = torch.meshgrid(torch.arange(40.0), torch.arange(48.0), indexing="ij")
    square = ((x > 10) & (x < 30) & (y > 8) & (y < 25)).float()
    disc = (((x - 30) ** 2 + (y - 20) ** 2) < 120).float() * 0.7
    stripes = ((x + y).div(6).floor() % 2) * 0.5 + 0.2
    shapes = torch.stack([torch.stack([square, disc, stripes]),
                          torch.stack([stripes, square * 0.3 + disc, square])])
    return torch.cat([smooth, shapes]).movedim(1, -1).contiguous()


def main(out):
    g = torch.Generator().manual_seed(5)
    image = images(g)
    tensors = {"images": image, "thresholds": torch.tensor(THRESHOLDS, dtype=torch.float64)}
    for i, (low, high) in enumerate(THRESHOLDS):
        tensors[f"edges_{i}"] = canny(image.movedim(-1, 1), low, high)[1].contiguous()
    save_file(tensors, str(out / "canny.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
