"""A tiny LTX-2 audio VAE and vocoder from PyPI diffusers (AutoencoderKLLTX2Audio, LTX2Vocoder),
every parameter randomized, saved as an LTX-2 checkpoint holds them (`audio_vae.` with ComfyUI's
`per_channel_statistics`, `vocoder.` under ComfyUI's names: conv_pre, ups, resblocks, conv_post)
with the `config` metadata's `audio_vae` and `vocoder` sections, plus a normalized latent and its
waveform: diffusers' pipeline de-normalization (`_pack_audio_latents`,
`_denormalize_audio_latents`), the decoder and the vocoder, float32.

Usage: DIR -> DIR/ltx_audio.safetensors, DIR/ltx_audio_io.safetensors."""
import json
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKLLTX2Audio
from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
from safetensors.torch import save_file

DECODER = {"ch": 128, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "z_channels": 8, "out_ch": 2,
           "mel_bins": 64, "norm_type": "pixel", "causality_axis": "height",
           "attn_resolutions": [], "mid_block_add_attention": False, "resolution": 256,
           "in_channels": 2, "double_z": True, "dropout": 0.0}
# LTX-2's upsampling (×240: 24 kHz from 100 mel frames a second) at a tiny width.
VOCODER = {"resblock": "1", "upsample_rates": [6, 5, 2, 2, 2],
           "upsample_kernel_sizes": [16, 15, 8, 4, 4], "resblock_kernel_sizes": [3, 5],
           "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]], "upsample_initial_channel": 64,
           "stereo": True}
VOCODER_NAMES = [("conv_in.", "conv_pre."), ("upsamplers.", "ups."), ("resnets.", "resblocks."),
                 ("conv_out.", "conv_post.")]


def randomize(module, g):
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(0.1 * noise if name.endswith("bias") or p.dim() == 1
                    else noise / p[0].numel() ** 0.5)


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    # diffusers sizes the statistics by the base width, which LTX-2 sets to 128 = 8 channels × 16 bins.
    vae = AutoencoderKLLTX2Audio(base_channels=128, ch_mult=(1, 2, 4), num_res_blocks=1).eval()
    vocoder = LTX2Vocoder(in_channels=128, hidden_channels=64,
                          upsample_kernel_sizes=[16, 15, 8, 4, 4], upsample_factors=[6, 5, 2, 2, 2],
                          resnet_kernel_sizes=[3, 5], resnet_dilations=[[1, 3, 5], [1, 3, 5]]).eval()
    randomize(vae, g)
    randomize(vocoder, g)
    with torch.no_grad():
        vae.latents_mean.copy_(0.1 * torch.randn(128, generator=g))
        vae.latents_std.copy_(0.5 + torch.rand(128, generator=g))

    sd = {}
    for k, v in vae.state_dict().items():
        if k.startswith("decoder."):
            sd[f"audio_vae.{k}"] = v
    sd["audio_vae.per_channel_statistics.mean-of-means"] = vae.latents_mean
    sd["audio_vae.per_channel_statistics.std-of-means"] = vae.latents_std
    for k, v in vocoder.state_dict().items():
        for old, new in VOCODER_NAMES:
            if k.startswith(old):
                k = new + k[len(old):]
        sd[f"vocoder.{k}"] = v
    config = {"audio_vae": {"model": {"params": {"ddconfig": DECODER, "sampling_rate": 16000}},
                            "preprocessing": {"stft": {"hop_length": 160, "filter_length": 1024}}},
              "vocoder": VOCODER}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "ltx_audio.safetensors"),
              metadata={"config": json.dumps(config)})

    latent = torch.randn(1, 8, 5, 16, generator=g)
    with torch.no_grad():
        packed = LTX2Pipeline._pack_audio_latents(latent)
        raw = LTX2Pipeline._denormalize_audio_latents(packed, vae.latents_mean, vae.latents_std)
        raw = LTX2Pipeline._unpack_audio_latents(raw, 5, 16)
        mel = vae.decode(raw).sample
        waveform = vocoder(mel)
    save_file({"latent": latent, "mel": mel.contiguous(), "waveform": waveform.contiguous()},
              str(out / "ltx_audio_io.safetensors"))


if __name__ == "__main__":
    main()
