"""ComfyUI's latent arithmetic and video-latent upscaling restated over torch, for
tests/latent_transform_nodes.rs: reads the input latents from the directory in argv[1] and
writes the expected outputs there as expected.safetensors.

reshape_latent_to and common_upscale (comfy_upscale_reference.py) follow comfy/utils.py; LatentInterpolate follows comfy_extras/nodes_latent.py.
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from comfy_upscale_reference import common_upscale


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
