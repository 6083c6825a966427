"""Tiny KL autoencoders from PyPI diffusers (AutoencoderKL: 2 levels of 32/64 channels, two
ResNet blocks per encoder level and three per decoder level, mid attention), every parameter
randomized, saved under the LDM key names ComfyUI reads (`ae.safetensors`, SDXL's
`first_stage_model.*`): one like FLUX's (16 latent channels, no quant convs), one like SDXL's
(4 channels with quant convs). Outputs: the latent mean for an image and the decoding of a latent.

Usage: DIR -> writes DIR/{flux,sdxl}_vae.safetensors and DIR/kl_vae_io.safetensors."""
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file


def to_ldm(sd, levels):
    out = {}
    resnet = [("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"),
              ("nin_shortcut", "conv_shortcut")]

    def copy(ours, theirs, conv=False):
        for part in ("weight", "bias"):
            if f"{theirs}.{part}" in sd:
                t = sd[f"{theirs}.{part}"]
                out[f"{ours}.{part}"] = t.reshape(*t.shape, 1, 1) if conv and part == "weight" else t

    for coder in ("encoder", "decoder"):
        copy(f"{coder}.conv_in", f"{coder}.conv_in")
        copy(f"{coder}.norm_out", f"{coder}.conv_norm_out")
        copy(f"{coder}.conv_out", f"{coder}.conv_out")
        for j in range(2):
            for ours, theirs in resnet:
                copy(f"{coder}.mid.block_{j + 1}.{ours}", f"{coder}.mid_block.resnets.{j}.{theirs}")
        a = f"{coder}.mid_block.attentions.0"
        copy(f"{coder}.mid.attn_1.norm", f"{a}.group_norm")
        for ours, theirs in [("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")]:
            copy(f"{coder}.mid.attn_1.{ours}", f"{a}.{theirs}", conv=True)
        for i in range(levels):
            if coder == "encoder":
                ldm, dif, sample = f"encoder.down.{i}", f"encoder.down_blocks.{i}", "downsample"
                copy(f"{ldm}.downsample.conv", f"{dif}.downsamplers.0.conv")
            else:
                ldm, dif = f"decoder.up.{levels - 1 - i}", f"decoder.up_blocks.{i}"
                copy(f"{ldm}.upsample.conv", f"{dif}.upsamplers.0.conv")
            j = 0
            while f"{dif}.resnets.{j}.conv1.weight" in sd:
                for ours, theirs in resnet:
                    copy(f"{ldm}.block.{j}.{ours}", f"{dif}.resnets.{j}.{theirs}")
                j += 1
    copy("quant_conv", "quant_conv")
    copy("post_quant_conv", "post_quant_conv")
    return {k: v.contiguous() for k, v in out.items()}


def main(out_dir):
    torch.manual_seed(0)
    io = {"image": torch.rand(1, 3, 32, 48) * 2 - 1}
    for tag, z, quant in [("flux", 16, False), ("sdxl", 4, True)]:
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=z,
                            down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2,
                            block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=32,
                            use_quant_conv=quant, use_post_quant_conv=quant).eval()
        with torch.no_grad():
            for p in vae.parameters():
                p.copy_(torch.randn_like(p) * 0.1)
            io[f"mean_{tag}"] = vae.encode(io["image"]).latent_dist.mean
            io[f"latent_{tag}"] = torch.randn(1, z, 5, 7)
            io[f"decoded_{tag}"] = vae.decode(io[f"latent_{tag}"]).sample
        save_file(to_ldm(vae.state_dict(), 2), str(Path(out_dir) / f"{tag}_vae.safetensors"))
    save_file({k: v.contiguous() for k, v in io.items()}, str(Path(out_dir) / "kl_vae_io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
