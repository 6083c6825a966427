"""Tiny LTX-2 latent upsamplers from PyPI diffusers (LTX2LatentUpsamplerModel: 3-D convolutions,
the rational spatial resampler), every parameter randomized, saved under their own key names
(which ComfyUI's LatentUpsampler shares) with the `config` metadata LTX upsampler files carry, and
an un-normalized latent with its upsampling, float32. Two scales: LTX-2's ×2 (no blur) and ×1.5
(a ×3 shuffle, then the binomial blur with stride 2).

Usage: DIR -> DIR/NAME.safetensors and DIR/NAME_io.safetensors for NAME in ltx_upsampler_x2,
ltx_upsampler_x1_5."""
import json
import sys
from pathlib import Path

import torch
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from safetensors.torch import save_file


def write(name, scale, out, g):
    model = LTX2LatentUpsamplerModel(in_channels=128, mid_channels=32, num_blocks_per_stage=1,
                                     dims=3, spatial_upsample=True, temporal_upsample=False,
                                     rational_spatial_scale=scale,
                                     use_rational_resampler=True).eval()
    with torch.no_grad():
        for p_name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p_name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.dim() == 1:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
    config = {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": 32,
              "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": True,
              "temporal_upsample": False, "spatial_scale": scale, "rational_resampler": True}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(out / f"{name}.safetensors"), metadata={"config": json.dumps(config)})
    latent = torch.randn(1, 128, 2, 4, 6, generator=g)
    with torch.no_grad():
        upsampled = model(latent)
    save_file({"latent": latent, "upsampled": upsampled.contiguous()},
              str(out / f"{name}_io.safetensors"))


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    write("ltx_upsampler_x2", 2.0, out, g)
    write("ltx_upsampler_x1_5", 1.5, out, g)


if __name__ == "__main__":
    main()
