"""The tiny LTX-2 files the video_ltx2_t2v templates load, under their file names in DIR/models:
one checkpoint holding the transformer (ltx_av_reference), the video VAE (ltx_vae_reference,
under `vae.`), the audio VAE and vocoder (ltx_audio_reference) and the text projection
(gemma3_reference), with their `config` metadata sections merged as an LTX-2 checkpoint carries
them; Gemma 3 with its tokenizer; the ×2 latent upsampler (ltx_upsampler_reference); and a rank-2
LoRA on one of the transformer's layers as the distilled LoRA. The other names the LTX-2
templates use (the distilled and bf16 checkpoints, the bf16 Gemma, the style and IC-LoRAs of the
i2v_lora, canny and depth templates) link to these files. The depth template's Lotus-D files
are lotus_reference's.

The LTX-2.3 templates' checkpoint holds ltx_av_reference's LTX-2.3 transformer (`ltxav23`), the
same video VAE, the audio VAE with the bandwidth-extension vocoder (`ltx_audio_bwe`) and a
per-stream text projection sized for this Gemma; their style and distilled LoRAs link to the
distilled LoRA (so does the ID-LoRA; the IC-LoRAs copy it with their downscale factor in
the metadata), their upsampler to the LTX-2 one; the prompt enhancer's Gemma LoRA is a rank-2
LoRA on Gemma's first query projection.

Usage: ltx2_template_fixtures.py DIR"""
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import gemma3_reference
import ltx_audio_reference
import ltx_av_reference
import ltx_upsampler_reference
import ltx_vae_reference
import lotus_reference

CHECKPOINT = "ltx-2-19b-dev-fp8.safetensors"
ALSO_CHECKPOINT = ("ltx-2-19b-distilled.safetensors", "ltx-2-19b-dev.safetensors")
GEMMA = "gemma_3_12B_it_fp4_mixed.safetensors"
GEMMA_BF16 = "gemma_3_12B_it.safetensors"
UPSCALER = "ltx-2-spatial-upscaler-x2-1.0.safetensors"
ALSO_UPSCALER = ("ltx-2.3-spatial-upscaler-x2-1.1.safetensors",)
LORA = "ltx-2-19b-distilled-lora-384.safetensors"
ALSO_LORA = ("ltx2-squish.safetensors", "ltx-2-19b-ic-lora-canny-control.safetensors",
             "ltx-2-19b-ic-lora-depth-control.safetensors", "ltx2.3-transition.safetensors",
             "ltx_2.3_22b_distilled_1.1_lora_dynamic_fro09_avg_rank_111_bf16.safetensors",
             "ltx-2.3-id-lora-talkvid-3k.safetensors")
GEMMA_LORA = "gemma-3-12b-it-abliterated_lora_rank64_bf16.safetensors"
# IC-LoRAs whose metadata gives their guides' downscale factor: the ingredients template's (1),
# and a small-grid one (2) that LTXVAddGuide refuses.
IC_LORAS = {"ltx-2.3-22b-ic-lora-ingredients-0.9.safetensors": "1.0",
            "ltx-2.3-small-grid-ic-lora.safetensors": "2"}
CHECKPOINT_23 = "ltx-2.3-22b-distilled-fp8.safetensors"
ALSO_CHECKPOINT_23 = ("ltx-2.3-22b-dev-fp8.safetensors",)


def written(module, work):
    """Runs a reference script's `main` into its own folder of `work`."""
    out = work / module.__name__
    out.mkdir()
    sys.argv = [module.__name__, str(out)]
    module.main()
    return out


def config(path):
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["config"])


def checkpoint(dit, vae, audio, projection, path):
    """One LTX checkpoint: transformer, `vae.`-prefixed video VAE, audio VAE and vocoder, text
    projection, and their config sections merged."""
    tensors = load_file(str(dit))
    tensors.update({f"vae.{k}": v for k, v in load_file(str(vae)).items()})
    tensors.update(load_file(str(audio)))
    tensors.update(projection)
    merged = {**config(dit), **config(vae), **config(audio)}
    save_file(tensors, str(path), metadata={"config": json.dumps(merged)})


def per_stream_projection(g):
    """LTX-2.3's text projection from this Gemma's 8 hidden states of 32 to the tiny
    transformer's video (32) and audio (16) widths."""
    features = gemma3_reference.HIDDEN * (gemma3_reference.LAYERS + 1)
    return {f"text_embedding_projection.{stream}_aggregate_embed.{part}":
            torch.randn(*((width, features) if part == "weight" else (width,)), generator=g) / 16.0
            for stream, width in (("video", 32), ("audio", 16)) for part in ("weight", "bias")}


def main():
    base = sys.argv[1]  # `written` replaces sys.argv
    models = Path(base) / "models"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        av, vae, audio, gemma, upsampler = (written(m, work) for m in (
            ltx_av_reference, ltx_vae_reference, ltx_audio_reference, gemma3_reference,
            ltx_upsampler_reference))
        for folder in ("checkpoints", "text_encoders", "latent_upscale_models", "loras"):
            (models / folder).mkdir(parents=True, exist_ok=True)
        checkpoint(av / "ltxav_a2v.safetensors", vae / "ltx2_vae.safetensors",
                   audio / "ltx_audio.safetensors",
                   load_file(str(gemma / "ltx_projection.safetensors")),
                   models / "checkpoints" / CHECKPOINT)
        for name in ALSO_CHECKPOINT:
            (models / "checkpoints" / name).symlink_to(CHECKPOINT)
        dit_23 = {k: v for k, v in load_file(str(av / "ltxav23.safetensors")).items()
                  if not k.startswith("text_embedding_projection.")}
        save_file(dit_23, str(work / "ltxav23_dit.safetensors"),
                  metadata={"config": json.dumps(config(av / "ltxav23.safetensors"))})
        checkpoint(work / "ltxav23_dit.safetensors", vae / "ltx2_vae.safetensors",
                   audio / "ltx_audio_bwe.safetensors",
                   per_stream_projection(torch.Generator().manual_seed(2)),
                   models / "checkpoints" / CHECKPOINT_23)
        for name in ALSO_CHECKPOINT_23:
            (models / "checkpoints" / name).symlink_to(CHECKPOINT_23)
        save_file(load_file(str(gemma / "gemma3.safetensors")),
                  str(models / "text_encoders" / GEMMA))
        (models / "text_encoders" / GEMMA_BF16).symlink_to(GEMMA)
        save_file(load_file(str(upsampler / "ltx_upsampler_x2.safetensors")),
                  str(models / "latent_upscale_models" / UPSCALER),
                  metadata={"config": json.dumps(config(upsampler / "ltx_upsampler_x2.safetensors"))})
        for name in ALSO_UPSCALER:
            (models / "latent_upscale_models" / name).symlink_to(UPSCALER)

    g = torch.Generator().manual_seed(1)
    module = "diffusion_model.transformer_blocks.0.attn1.to_q"
    save_file({f"{module}.lora_A.weight": torch.randn(2, 32, generator=g) * 0.1,
               f"{module}.lora_B.weight": torch.randn(32, 2, generator=g) * 0.1},
              str(models / "loras" / LORA))
    for name in ALSO_LORA:
        (models / "loras" / name).symlink_to(LORA)
    for name, factor in IC_LORAS.items():
        save_file(load_file(str(models / "loras" / LORA)), str(models / "loras" / name),
                  metadata={"format": "pt", "reference_downscale_factor": factor})
    gemma_q = "text_encoders.gemma3_12b.transformer.model.layers.0.self_attn.q_proj"
    save_file({f"{gemma_q}.lora_A.weight": torch.randn(2, 32, generator=g) * 0.1,
               f"{gemma_q}.lora_B.weight": torch.randn(32, 2, generator=g) * 0.1},
              str(models / "loras" / GEMMA_LORA))
    lotus_reference.main(base)


if __name__ == "__main__":
    main()
