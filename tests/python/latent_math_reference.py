"""ComfyUI's latent arithmetic and video-latent upscaling restated over torch, for
tests/latent_transform_nodes.rs: reads the input latents from the directory in argv[1] and
writes the expected outputs there as expected.safetensors.

reshape_latent_to and common_upscale follow comfy/utils.py (frames of a 5-D latent folded into
the batch, centre crop, F.interpolate); LatentInterpolate follows comfy_extras/nodes_latent.py.
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def common_upscale(samples, width, height, method, crop):
    orig = tuple(samples.shape)
    if len(orig) > 4:
        samples = samples.reshape(orig[0], orig[1], -1, orig[-2], orig[-1]).movedim(2, 1)
        samples = samples.reshape(-1, orig[1], orig[-2], orig[-1])
    if crop == "center":
        ow, oh = samples.shape[-1], samples.shape[-2]
        oa, na = ow / oh, width / height
        x = y = 0
        if oa > na:
            x = round((ow - ow * (na / oa)) / 2)
        elif oa < na:
            y = round((oh - oh * (oa / na)) / 2)
        samples = samples.narrow(-2, y, oh - y * 2).narrow(-1, x, ow - x * 2)
    out = F.interpolate(samples, size=(height, width), mode=method)
    if len(orig) == 4:
        return out
    out = out.reshape((orig[0], -1, orig[1]) + (height, width))
    return out.movedim(2, 1).reshape(orig[:-2] + (height, width))


def reshape_latent_to(target_shape, latent):
    if latent.shape[1:] != target_shape[1:]:
        latent = common_upscale(latent, target_shape[-1], target_shape[-2], "bilinear", "center")
    reps = -(-target_shape[0] // latent.shape[0])
    return latent.repeat((reps,) + (1,) * (latent.ndim - 1))[:target_shape[0]]


def interpolate(s1, s2, ratio):
    s2 = reshape_latent_to(s1.shape, s2)
    m1, m2 = torch.linalg.vector_norm(s1, dim=1), torch.linalg.vector_norm(s2, dim=1)
    t = torch.nan_to_num(s1 / m1) * ratio + torch.nan_to_num(s2 / m2) * (1.0 - ratio)
    st = torch.nan_to_num(t / torch.linalg.vector_norm(t, dim=1))
    return st * (m1 * ratio + m2 * (1.0 - ratio))


def main():
    d = Path(sys.argv[1])
    x = {k: load_file(d / f"{k}.latent")["latent_tensor"] for k in ("image", "small", "video", "clip")}
    expected = {
        "add": x["image"] + reshape_latent_to(x["image"].shape, x["small"]),
        "subtract": x["video"] - reshape_latent_to(x["video"].shape, x["clip"]),
        "multiply": x["video"] * -1.5,
        "interpolate": interpolate(x["image"], x["small"], 0.3),
        "interpolate_video": interpolate(x["video"], x["clip"], 0.8),
        "upscale_video": common_upscale(x["video"], 20, 10, "bilinear", "disabled"),
        "upscale_video_crop": common_upscale(x["video"], 8, 8, "bicubic", "center"),
    }
    save_file({k: v.contiguous() for k, v in expected.items()}, d / "expected.safetensors")


if __name__ == "__main__":
    main()
