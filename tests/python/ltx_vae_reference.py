"""Tiny LTX-2 video VAEs from PyPI diffusers (AutoencoderKLLTX2Video), every parameter
randomized, saved under ComfyUI's key names (comfy/ldm/lightricks/vae/causal_video_autoencoder.py;
the inverse of diffusers' scripts/convert_ltx2_to_diffusers.py) with the `config.vae` header
metadata an LTX-2 checkpoint carries, plus a video, its normalized latent means, a latent and
its decoding, all float32.

Two VAEs: `ltx2_vae`, the LTX-2 layout (zeros-padded causal encoder, reflect-padded
non-causal decoder, no timestep) with LTX's 128 latent channels and an encoder that keeps its
width, and `ltx2_vae_timestep`, 8 latent channels, an encoder that doubles its width at each
downsampling, and a timestep-conditioned decoder whose decode mixes in the seed-0 CPU noise
ComfyUI's decode adds (0.025) and runs at timestep 0.05 x the file's multiplier.

Usage: DIR -> writes DIR/NAME.safetensors and DIR/NAME_io.safetensors for both names."""
import json
import re
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKLLTX2Video
from safetensors.torch import save_file

NOISE_SCALE, DECODE_TIMESTEP = 0.025, 0.05

# ComfyUI's block lists for the tiny widths below: diffusers' down block i is ComfyUI's
# res_x at 2i and its downsampler at 2i+1; the mid block comes last. The decoder starts with
# the mid block, then each up block's upsampler and its resnets.
def encoder_blocks(m):
    return [["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": m}],
            ["res_x", {"num_layers": 1}], ["compress_time_res", {"multiplier": m}],
            ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": m}],
            ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": m}],
            ["res_x", {"num_layers": 1}]]

DECODER_BLOCKS = [["res_x", {"num_layers": 2, "inject_noise": False}],
                  ["compress_all", {"residual": True, "multiplier": 2}],
                  ["res_x", {"num_layers": 1, "inject_noise": False}],
                  ["compress_all", {"residual": True, "multiplier": 2}],
                  ["res_x", {"num_layers": 2, "inject_noise": False}],
                  ["compress_all", {"residual": True, "multiplier": 2}],
                  ["res_x", {"num_layers": 1, "inject_noise": False}]]

ENCODER_INDEX = {"down_blocks.0.downsamplers.0": 1, "down_blocks.1.downsamplers.0": 3,
                 "down_blocks.2.downsamplers.0": 5, "down_blocks.3.downsamplers.0": 7,
                 "down_blocks.0": 0, "down_blocks.1": 2, "down_blocks.2": 4, "down_blocks.3": 6,
                 "mid_block": 8}
DECODER_INDEX = {"up_blocks.0.upsamplers.0": 1, "up_blocks.1.upsamplers.0": 3,
                 "up_blocks.2.upsamplers.0": 5, "mid_block": 0, "up_blocks.0": 2,
                 "up_blocks.1": 4, "up_blocks.2": 6}


def to_comfy(key):
    if key == "latents_mean":
        return "per_channel_statistics.mean-of-means"
    if key == "latents_std":
        return "per_channel_statistics.std-of-means"
    side, rest = key.split(".", 1)
    index = ENCODER_INDEX if side == "encoder" else DECODER_INDEX
    for prefix, i in index.items():  # longest prefixes first, as listed
        if rest.startswith(prefix + "."):
            rest = f"{'down' if side == 'encoder' else 'up'}_blocks.{i}." + rest[len(prefix) + 1:]
            break
    rest = rest.replace(".resnets.", ".res_blocks.")
    # Upsampler/downsampler `conv` is a causal conv whose own tensor is `conv.conv`.
    if side == "decoder":
        rest = re.sub(r"^time_embedder\.", "last_time_embedder.", rest)
        rest = re.sub(r"^scale_shift_table$", "last_scale_shift_table", rest)
    return f"{side}.{rest}"


def randomize(vae, g, latent):
    with torch.no_grad():
        for name, p in vae.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("bias") or "scale_shift_table" in name:
                p.copy_(0.05 * noise)
            elif name.endswith("timestep_scale_multiplier"):
                p.fill_(1000.0)
            elif p.dim() == 1:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
        vae.latents_mean.copy_(0.1 * torch.randn(latent, generator=g))
        vae.latents_std.copy_(0.5 + torch.rand(latent, generator=g))


def write(name, timestep, latent_channels, multiplier, out, g):
    widths = tuple(latent_channels * multiplier ** (i + 1) for i in range(4))
    vae = AutoencoderKLLTX2Video(
        latent_channels=latent_channels, block_out_channels=widths,
        decoder_block_out_channels=(16, 32, 64), layers_per_block=(1, 1, 2, 1, 1),
        decoder_layers_per_block=(2, 1, 2, 1), timestep_conditioning=timestep,
        decoder_causal=False).eval()
    randomize(vae, g, latent_channels)
    comfy = {to_comfy(k): v.contiguous() for k, v in vae.state_dict().items()}
    config = {"dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": latent_channels,
              "encoder_blocks": encoder_blocks(multiplier), "decoder_blocks": DECODER_BLOCKS,
              "patch_size": 4, "norm_layer": "pixel_norm", "latent_log_var": "uniform",
              "causal_decoder": False, "timestep_conditioning": timestep,
              "encoder_base_channels": latent_channels, "decoder_base_channels": 8}
    save_file(comfy, str(out / f"{name}.safetensors"),
              metadata={"config": json.dumps({"vae": config})})

    video = torch.rand(1, 3, 11, 64, 96, generator=g) * 2 - 1  # 11 frames: 9 are kept
    latent = torch.randn(1, latent_channels, 3, 2, 3, generator=g)
    mean_, std_ = (t.view(1, -1, 1, 1, 1) for t in (vae.latents_mean, vae.latents_std))
    with torch.no_grad():
        means = vae.encode(video[:, :, :9]).latent_dist.mean
        z = latent
        temb = None
        if timestep:
            noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
            z = noise * NOISE_SCALE + latent * (1 - NOISE_SCALE)
            temb = torch.tensor([DECODE_TIMESTEP])
        decoded = vae.decode(z * std_ + mean_, temb=temb).sample
    save_file({"video": video, "mean": ((means - mean_) / std_).contiguous(), "latent": latent,
               "decoded": decoded.contiguous()}, str(out / f"{name}_io.safetensors"))


def main():
    out = Path(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    write("ltx2_vae", False, 128, 1, out, g)
    write("ltx2_vae_timestep", True, 8, 2, out, g)


if __name__ == "__main__":
    main()
