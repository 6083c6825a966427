"""The Wan 2.2 Animate checkpoint workflows/wan2_2_animate_api.json loads, for the tiny text
encoder, CLIP vision and VAE of wan_workflow_fixtures.py: a five-block, one-head DiT with the
real motion and face encoders, in ComfyUI's layout (DiT weights bf16, encoders fp16).

Usage: BASE -> writes BASE/models/diffusion_models/wan2.2_animate_14B_bf16.safetensors."""
import sys
from pathlib import Path

import torch
from diffusers import WanAnimateTransformer3DModel
from safetensors.torch import save_file

from wan_animate_reference import comfy_state, randomize_encoders
from wan_workflow_fixtures import CLIP_WIDTH, TEXT_DIM, randomize


def main(base):
    g = torch.Generator().manual_seed(11)
    model = WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=128, in_channels=36,
        latent_channels=16, out_channels=16, text_dim=TEXT_DIM, freq_dim=16, ffn_dim=64, num_layers=5,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=CLIP_WIDTH,
        added_kv_proj_dim=128).eval()
    randomize(model, g)
    randomize_encoders(model, g)
    encoders = ("motion_encoder.", "face_encoder.")
    sd = {k: v.half() if k.startswith(encoders) else v.bfloat16()
          for k, v in comfy_state(model).items()}
    path = base / "models" / "diffusion_models" / "wan2.2_animate_14B_bf16.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
