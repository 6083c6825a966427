"""A two-layer Whisper encoder from PyPI transformers (WhisperEncoder, large-v3's layout: 128 mel
bins, pre-norm layers, k_proj without bias) at width 128, saved under transformers'
`model.encoder.` names as the Whisper large-v3 file ComfyUI loads, fp16 like it, every parameter
randomized. With it: audio, the log-mel features ComfyUI's WhisperFeatureExtractor makes with
torchaudio's MelSpectrogram (written out here as ComfyUI writes it), and the encoder's hidden
states (every layer's input) and last state for them.

Usage: DIR -> writes DIR/whisper.safetensors and DIR/whisper_io.safetensors."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from safetensors.torch import save_file
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

SAMPLES = 480000


def comfy_log_mel(audio):
    """ComfyUI's WhisperFeatureExtractor over [B, channels, samples] at 16 kHz."""
    mel_spectrogram = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, hop_length=160, n_mels=128, f_min=0, f_max=8000,
        norm="slaney", mel_scale="slaney")
    audio = audio.mean(dim=1)
    padded = []
    for aud in audio:
        aud = aud[:SAMPLES] if aud.shape[0] > SAMPLES else F.pad(aud, (0, SAMPLES - aud.shape[0]))
        padded.append(aud)
    mel = mel_spectrogram(torch.stack(padded))[:, :, :-1]
    log = torch.clamp(mel, min=1e-10).log10()
    log = torch.maximum(log, log.max() - 8.0)
    return (log + 4.0) / 4.0


def main():
    out = Path(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    config = WhisperConfig(num_mel_bins=128, d_model=128, encoder_layers=2, encoder_attention_heads=2,
                           encoder_ffn_dim=256, max_source_positions=1500)
    encoder = WhisperEncoder(config).eval()
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.05
            gain = "layer_norm" in name and name.endswith("weight")
            p.copy_((1.0 + noise if gain else noise).half().float())
    sd = {f"model.encoder.{k}": v.half().contiguous() for k, v in encoder.state_dict().items()}
    save_file(sd, out / "whisper.safetensors")
    t = torch.arange(24000) / 16000
    tone = torch.stack([torch.sin(2 * torch.pi * 440 * t), torch.sin(2 * torch.pi * 180 * t)])
    audio = (tone + 0.05 * torch.randn(2, 24000, generator=g)).unsqueeze(0)
    mel = comfy_log_mel(audio)
    with torch.no_grad():
        states = encoder(mel, output_hidden_states=True)
    io = {"audio": audio, "mel": mel, "last": states.last_hidden_state}
    # transformers' hidden_states: each layer's input, then the normed last state.
    for i, h in enumerate(states.hidden_states[:-1]):
        io[f"layer_{i}"] = h
    save_file({k: v.contiguous() for k, v in io.items()}, out / "whisper_io.safetensors")


if __name__ == "__main__":
    main()
