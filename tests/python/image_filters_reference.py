"""ComfyUI's ImageBlend, ImageBlur and ImageSharpen (comfy_extras/nodes_post_processing.py)
written out in torch, on seeded random images. Writes image_filters.safetensors into DIR: the
inputs and one output per case.

Usage: image_filters_reference.py DIR
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from comfy_upscale_reference import common_upscale

out = sys.argv[1]
g = torch.Generator().manual_seed(7)
a = torch.rand(2, 12, 10, 3, generator=g)
b = torch.rand(2, 12, 10, 3, generator=g)
small_rgba = torch.rand(1, 9, 7, 4, generator=g)
tensors = {"a": a, "b": b, "small_rgba": small_rgba}


def blend(img1, img2, factor, mode):
    # The second image takes the first's channel count (alpha 1 when added).
    if img1.shape[-1] < img2.shape[-1]:
        img2 = img2[..., :img1.shape[-1]]
    elif img1.shape[-1] > img2.shape[-1]:
        img2 = F.pad(img2, (0, 1))
        img2[..., -1] = 1.0
    if img1.shape != img2.shape:
        resized = common_upscale(img2.permute(0, 3, 1, 2), img1.shape[2], img1.shape[1], "bicubic", "center")
        img2 = resized.permute(0, 2, 3, 1)
    if mode == "normal":
        top = img2
    elif mode == "multiply":
        top = img1 * img2
    elif mode == "screen":
        top = 1 - (1 - img1) * (1 - img2)
    elif mode == "overlay":
        top = torch.where(img1 <= 0.5, 2 * img1 * img2, 1 - 2 * (1 - img1) * (1 - img2))
    elif mode == "soft_light":
        d = torch.where(img1 <= 0.25, ((16 * img1 - 12) * img1 + 4) * img1, torch.sqrt(img1))
        top = torch.where(img2 <= 0.5, img1 - (1 - 2 * img2) * img1 * (1 - img1), img1 + (2 * img2 - 1) * (d - img1))
    else:
        top = img1 - img2
    return torch.clamp(img1 * (1 - factor) + top * factor, 0, 1)


def kernel(size, sigma):
    x, y = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    d = torch.sqrt(x * x + y * y)
    k = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    return k / k.sum()


def convolve(image, k, radius):
    channels = image.shape[-1]
    weight = k.repeat(channels, 1, 1).unsqueeze(1)
    padded = F.pad(image.permute(0, 3, 1, 2), (radius,) * 4, "reflect")
    result = F.conv2d(padded, weight, padding=k.shape[0] // 2, groups=channels)
    return result[:, :, radius:-radius, radius:-radius].permute(0, 2, 3, 1)


def sharpen(image, radius, sigma, alpha):
    size = radius * 2 + 1
    k = kernel(size, sigma) * -(alpha * 10)
    c = size // 2
    k[c, c] = k[c, c] - k.sum() + 1.0
    return torch.clamp(convolve(image, k, radius), 0, 1)


for mode in ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]:
    tensors[f"blend_{mode}"] = blend(a, b, 0.7, mode)
tensors["blend_resized"] = blend(a, small_rgba, 0.4, "overlay")
tensors["blur_1"] = convolve(a, kernel(3, 1.0), 1)
tensors["blur_3"] = convolve(a, kernel(7, 2.5), 3)
tensors["sharpen_1"] = sharpen(a, 1, 1.0, 1.0)
tensors["sharpen_2"] = sharpen(a, 2, 0.6, 0.3)
save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/image_filters.safetensors")
