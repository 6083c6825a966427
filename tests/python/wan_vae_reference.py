"""Tiny Wan 2.1 and 2.2 VAEs from PyPI diffusers (AutoencoderKLWan; 2.2 = is_residual with 2x2
patches), every parameter randomized, saved under ComfyUI's key names (comfy/ldm/wan/vae.py,
vae2_2.py), plus a video, diffusers' encoder means for it, a latent and diffusers' decoding of
it, all float32.

diffusers clamps decoded video to -1..1 inside the model; ComfyUI clamps only after mapping to
0..1 (VAE.process_output), so the reference here is taken with that clamp disabled.

Usage: DIR -> writes DIR/wan2{1,2}_vae.safetensors and DIR/wan2{1,2}_vae_io.safetensors."""
import re
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import save_file

RESNET = [(r"\.norm1\.", ".residual.0."), (r"\.conv1\.", ".residual.2."),
          (r"\.norm2\.", ".residual.3."), (r"\.conv2\.", ".residual.6."),
          (r"\.conv_shortcut\.", ".shortcut.")]


def to_comfy(key, up_index, residual):
    """diffusers name -> ComfyUI name (inverse of diffusers' convert_wan_to_diffusers.py)."""
    if residual:
        # 2.2: each level is a group of resnets then its resampler, in ComfyUI's nested lists.
        key = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.downsamples.\1.downsamples.\2.", key)
        key = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsampler\.", r"encoder.downsamples.\1.downsamples.2.", key)
        key = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", r"decoder.upsamples.\1.upsamples.\2.", key)
        key = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsampler\.", r"decoder.upsamples.\1.upsamples.3.", key)
    m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets\.\d+|upsamplers\.0)\.(.*)", key)
    if m:
        key = f"decoder.upsamples.{up_index[(int(m[1]), m[2])]}.{m[3]}"
    key = re.sub(r"^encoder\.down_blocks\.", "encoder.downsamples.", key)
    key = re.sub(r"\.mid_block\.resnets\.0\.", ".middle.0.", key)
    key = re.sub(r"\.mid_block\.attentions\.0\.", ".middle.1.", key)
    key = re.sub(r"\.mid_block\.resnets\.1\.", ".middle.2.", key)
    key = re.sub(r"^(encoder|decoder)\.conv_in\.", r"\1.conv1.", key)
    key = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.head.0.", key)
    key = re.sub(r"^(encoder|decoder)\.conv_out\.", r"\1.head.2.", key)
    key = re.sub(r"^quant_conv\.", "conv1.", key)
    key = re.sub(r"^post_quant_conv\.", "conv2.", key)
    if re.match(r"^(encoder\.downsamples|encoder\.middle|decoder\.middle|decoder\.upsamples)\.", key) \
            and ".resample." not in key and ".time_conv." not in key:
        for pattern, repl in RESNET:
            key = re.sub(pattern, repl, key)
    return key


def flat_up_index(state):
    """ComfyUI keeps the decoder's blocks in one list: each block's resnets, then its upsampler."""
    parts = sorted({(int(m[1]), m[2]) for k in state
                    for m in [re.match(r"decoder\.up_blocks\.(\d+)\.(resnets\.\d+|upsamplers\.0)\.", k)] if m},
                   key=lambda p: (p[0], p[1].startswith("upsamplers"), p[1]))
    return {p: i for i, p in enumerate(parts)}


def randomize(vae, g):
    with torch.no_grad():
        for name, p in vae.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.05 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)


def write(name, vae, residual, video, latent, out):
    state = vae.state_dict()
    up_index = flat_up_index(state)
    comfy = {to_comfy(k, up_index, residual): v.contiguous() for k, v in state.items()}
    save_file(comfy, str(out / f"{name}.safetensors"))
    clamp = torch.clamp
    with torch.no_grad():
        mean = vae.encode(video).latent_dist.mean
        torch.clamp = lambda x, min=None, max=None: x
        try:
            decoded = vae.decode(latent).sample
        finally:
            torch.clamp = clamp
    save_file({"video": video, "mean": mean.contiguous(), "latent": latent, "decoded": decoded.contiguous()},
              str(out / f"{name}_io.safetensors"))


def main():
    out = Path(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    v21 = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                           attn_scales=[], temperal_downsample=[False, True, True]).eval()
    randomize(v21, g)
    write("wan21_vae", v21, False, torch.rand(1, 3, 9, 16, 24, generator=g) * 2 - 1,
          torch.randn(1, 4, 3, 2, 3, generator=g), out)
    v22 = AutoencoderKLWan(base_dim=8, decoder_base_dim=12, z_dim=6, dim_mult=[1, 2, 4, 4],
                           num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True],
                           is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                           scale_factor_spatial=16).eval()
    randomize(v22, g)
    write("wan22_vae", v22, True, torch.rand(1, 3, 9, 32, 48, generator=g) * 2 - 1,
          torch.randn(1, 6, 3, 2, 3, generator=g), out)


if __name__ == "__main__":
    main()
