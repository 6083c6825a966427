"""A tiny LTX-2 audio VAE and vocoder from PyPI diffusers (AutoencoderKLLTX2Audio, LTX2Vocoder),
every parameter randomized, saved as an LTX-2 checkpoint holds them (`audio_vae.` with ComfyUI's
`per_channel_statistics`, `vocoder.` under ComfyUI's names: conv_pre, ups, resblocks, conv_post)
with the `config` metadata's `audio_vae` and `vocoder` sections, plus a normalized latent and its
waveform: diffusers' pipeline de-normalization (`_pack_audio_latents`,
`_denormalize_audio_latents`), the decoder and the vocoder, float32.

The other way, a mono 24 kHz waveform (batch 2) and its normalized latent: ComfyUI's path to the
encoder (LTXVAudioVAEEncode resamples to 44.1 kHz, `VAE.encode` centre-crops to whole 4096-sample
blocks and repeats the channel, `AudioVAE.encode` resamples to 16 kHz), with torchaudio's
`resample` and `MelSpectrogram` (1024-point STFT every 160 samples, 64 Slaney mels, magnitudes,
log clamped at 1e-5), diffusers' encoder and its posterior's mode, and diffusers' pipeline
normalization (`_normalize_audio_latents`).

A second checkpoint, `ltx_audio_bwe`, has LTX-2.3's vocoder (LTX2VocoderWithBWE): a BigVGAN v2
generator (anti-aliased SnakeBeta AMP blocks, no final activation) to 16 kHz, then bandwidth
extension to 48 kHz, under ComfyUI's `VocoderWithBWE` names (`vocoder.vocoder.`,
`vocoder.bwe_generator.`, `vocoder.mel_stft.`; `act_out` → `act_post`, `downsample.filter` →
`downsample.lowpass.filter`). Its STFT basis is a causal Hann-windowed DFT and its mel
filterbank random non-negative weights (diffusers leaves both zero until a checkpoint fills them).

Usage: DIR -> DIR/ltx_audio{,_bwe}.safetensors, DIR/ltx_audio{,_bwe}_io.safetensors."""
import json
import sys
from pathlib import Path

import torch
import torchaudio
from diffusers import AutoencoderKLLTX2Audio
from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE
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
                 ("conv_out.", "conv_post."), ("act_out.", "act_post.")]
# LTX-2.3's generators, at tiny widths: 16 kHz from 100 mel frames a second (×160), then 48 kHz
# from the 200 frames a second of the BWE's own mel spectrogram (×240).
AMP = {"resblock": "AMP1", "activation": "snakebeta", "resblock_kernel_sizes": [3, 5],
       "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]], "stereo": True,
       "use_bias_at_final": False}
BWE_VOCODER = {**AMP, "upsample_rates": [5, 2, 2, 2, 2, 2],
               "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4], "upsample_initial_channel": 128,
               "apply_final_activation": False}
BWE = {**AMP, "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
       "upsample_initial_channel": 64, "input_sampling_rate": 16000,
       "output_sampling_rate": 48000, "hop_length": 80, "n_fft": 512, "num_mels": 64}


def randomize(module, g):
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(0.1 * noise if name.endswith("bias") or p.dim() == 1
                    else noise / p[0].numel() ** 0.5)


def comfy_vocoder_key(k):
    for old, new in VOCODER_NAMES:
        if k.startswith(old):
            k = new + k[len(old):]
    return k.replace(".downsample.filter", ".downsample.lowpass.filter")


def causal_stft_basis(n_fft):
    """The DFT rows (real, then imaginary) times a Hann window, `[2·freqs, 1, n_fft]`."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    angle = 2 * torch.pi * k * n / n_fft
    return torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window]).float()[:, None]


def write_bwe(out, vae, sd_vae, latent, g):
    vocoder = LTX2VocoderWithBWE(
        hidden_channels=128, upsample_kernel_sizes=[11, 4, 4, 4, 4, 4],
        upsample_factors=[5, 2, 2, 2, 2, 2], resnet_kernel_sizes=[3, 5],
        resnet_dilations=[[1, 3, 5], [1, 3, 5]], bwe_hidden_channels=64,
        bwe_upsample_kernel_sizes=[12, 11, 4, 4, 4], bwe_upsample_factors=[6, 5, 2, 2, 2],
        bwe_resnet_kernel_sizes=[3, 5], bwe_resnet_dilations=[[1, 3, 5], [1, 3, 5]]).eval()
    randomize(vocoder, g)
    with torch.no_grad():
        # Quiet enough that the final ±1 clamp leaves most samples alone.
        vocoder.vocoder.conv_out.weight.mul_(0.01)
        vocoder.bwe_generator.conv_out.weight.mul_(0.005)
        vocoder.mel_stft.stft_fn.forward_basis.copy_(causal_stft_basis(512))
        vocoder.mel_stft.mel_basis.copy_(torch.rand(64, 257, generator=g) / 16)
    sd = dict(sd_vae)
    for k, v in vocoder.state_dict().items():
        part, rest = k.split(".", 1)
        if part in ("vocoder", "bwe_generator"):
            rest = comfy_vocoder_key(rest)
        sd[f"vocoder.{part}.{rest}"] = v
    config = {"audio_vae": AUDIO_VAE, "vocoder": {"vocoder": BWE_VOCODER, "bwe": BWE}}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "ltx_audio_bwe.safetensors"),
              metadata={"config": json.dumps(config)})
    with torch.no_grad():
        mel = decoded_mel(vae, latent)
        waveform = vocoder(mel)
    save_file({"latent": latent, "waveform": waveform.contiguous()},
              str(out / "ltx_audio_bwe_io.safetensors"))


def decoded_mel(vae, latent):
    """diffusers' pipeline de-normalization and the decoder."""
    packed = LTX2Pipeline._pack_audio_latents(latent)
    raw = LTX2Pipeline._denormalize_audio_latents(packed, vae.latents_mean, vae.latents_std)
    raw = LTX2Pipeline._unpack_audio_latents(raw, latent.shape[2], latent.shape[3])
    return vae.decode(raw).sample


def reference_encode(vae, waveform, rate):
    """ComfyUI's steps to the encoder (see the module text), diffusers' encoder and normalization."""
    wave = torchaudio.functional.resample(waveform, rate, 44100)
    samples = wave.shape[-1]
    kept = samples // 4096 * 4096
    start = (samples % 4096) // 2
    wave = wave[..., start:start + kept].repeat(1, 2, 1)
    wave = torchaudio.functional.resample(wave, 44100, 16000)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=1024, win_length=1024, hop_length=160, f_min=0.0, f_max=8000.0,
        n_mels=64, window_fn=torch.hann_window, center=True, pad_mode="reflect", power=1.0,
        mel_scale="slaney", norm="slaney")(wave)
    mel = torch.log(torch.clamp(mel, min=1e-5)).permute(0, 1, 3, 2)
    latent = vae.encode(mel).latent_dist.mode()
    packed = LTX2Pipeline._pack_audio_latents(latent)
    normalized = LTX2Pipeline._normalize_audio_latents(packed, vae.latents_mean, vae.latents_std)
    return LTX2Pipeline._unpack_audio_latents(normalized, latent.shape[2], latent.shape[3])


AUDIO_VAE = {"model": {"params": {"ddconfig": DECODER, "sampling_rate": 16000}},
             "preprocessing": {"stft": {"hop_length": 160, "filter_length": 1024}}}


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
        if k.startswith(("encoder.", "decoder.")):
            sd[f"audio_vae.{k}"] = v
    sd["audio_vae.per_channel_statistics.mean-of-means"] = vae.latents_mean
    sd["audio_vae.per_channel_statistics.std-of-means"] = vae.latents_std
    sd_vae = dict(sd)
    for k, v in vocoder.state_dict().items():
        sd[f"vocoder.{comfy_vocoder_key(k)}"] = v
    config = {"audio_vae": AUDIO_VAE, "vocoder": VOCODER}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "ltx_audio.safetensors"),
              metadata={"config": json.dumps(config)})

    latent = torch.randn(1, 8, 5, 16, generator=g)
    with torch.no_grad():
        mel = decoded_mel(vae, latent)
        waveform = vocoder(mel)
        # 0.4 s: 17640 samples at 44.1 kHz, cropped to 16384.
        sound = 0.3 * torch.randn(2, 1, 9600, generator=g)
        encoded = reference_encode(vae, sound, 24000)
    save_file({"latent": latent, "mel": mel.contiguous(), "waveform": waveform.contiguous(),
               "sound": sound, "encoded": encoded.contiguous()},
              str(out / "ltx_audio_io.safetensors"))
    write_bwe(out, vae, sd_vae, latent, g)


if __name__ == "__main__":
    main()
