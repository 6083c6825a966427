"""Two wav2vec2 encoders from PyPI transformers (Wav2Vec2Model) in the shapes ComfyUI's audio
encoder loader knows by their width: "large" (1024: layer-normed convolutions with biases,
pre-norm layers) saved with transformers' `wav2vec2.` prefix, and "base" (768: a group norm after
the first convolution, post-norm layers) saved without a prefix and with the old `weight_g` /
`weight_v` names of the position convolution. Two layers each, fp16 files (ComfyUI's are fp16),
every parameter randomized. With them: audio, torchaudio's resampling of it to 16 kHz, and each
model's outputs for the audio as ComfyUI feeds it (channels averaged; for "large" normalized
over the whole batch with the unbiased variance, ComfyUI's rule rather than transformers').

Usage: DIR -> writes DIR/wav2vec2_{large,base}.safetensors and DIR/wav2vec2_io.safetensors."""
import sys
from pathlib import Path

import torch
import torchaudio
from safetensors.torch import save_file
from transformers import Wav2Vec2Config, Wav2Vec2Model


def model(width, large, g):
    config = Wav2Vec2Config(hidden_size=width, num_hidden_layers=2, num_attention_heads=16 if large else 12,
                            intermediate_size=128, feat_extract_norm="layer" if large else "group",
                            conv_bias=large, do_stable_layer_norm=large, num_conv_pos_embeddings=128,
                            num_conv_pos_embedding_groups=16)
    m = Wav2Vec2Model(config).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.05
            p.copy_((1.0 + noise if "norm" in name and name.endswith("weight") else noise).half().float())
    return m


def main():
    out = Path(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    t = torch.arange(44100) / 44100
    stereo = torch.stack([torch.sin(2 * torch.pi * 220 * t), torch.sin(2 * torch.pi * 330 * t) * 0.5])
    audio_44k = (stereo + 0.1 * torch.randn(2, 44100, generator=g)).unsqueeze(0)
    audio_16k = torch.randn(1, 1, 16000, generator=g) * 0.3
    io = {"audio_44k": audio_44k, "audio_16k": audio_16k,
          "resampled_44k": torchaudio.functional.resample(audio_44k, 44100, 16000),
          "resampled_22k": torchaudio.functional.resample(audio_44k[..., :22050], 22050, 16000),
          "resampled_8k": torchaudio.functional.resample(audio_16k[..., :8000], 8000, 16000)}
    for tag, width, large, audio in (("large", 1024, True, io["resampled_44k"]), ("base", 768, False, audio_16k)):
        m = model(width, large, g)
        x = audio.mean(dim=1)
        if large:
            x = (x - x.mean()) / torch.sqrt(x.var() + 1e-7)
        with torch.no_grad():
            o = m(x, output_hidden_states=True)
        io[f"{tag}_last"] = o.last_hidden_state.contiguous()
        # ComfyUI's list: each layer's input, then the final state. transformers 5 records each
        # layer's input too but ends with the last layer's raw output, before "large"'s final
        # norm, so the final entry is taken from last_hidden_state.
        layers = len(o.hidden_states) - 1
        for i in range(layers):
            io[f"{tag}_layer_{i}"] = o.hidden_states[i].contiguous()
        io[f"{tag}_layer_{layers}"] = o.last_hidden_state.contiguous()
        state = {k: v.half().contiguous() for k, v in m.state_dict().items()}
        if large:
            state = {f"wav2vec2.{k}": v for k, v in state.items()}
        else:
            p = "encoder.pos_conv_embed.conv."
            state[p + "weight_g"] = state.pop(p + "parametrizations.weight.original0")
            state[p + "weight_v"] = state.pop(p + "parametrizations.weight.original1")
        save_file(state, str(out / f"wav2vec2_{tag}.safetensors"))
    save_file({k: v.clone().contiguous() for k, v in io.items()}, str(out / "wav2vec2_io.safetensors"))


if __name__ == "__main__":
    main()
