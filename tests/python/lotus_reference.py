"""Tiny random-weight Lotus-D files under the names the official image_lotus_depth_v1_1
template loads, in BASE_DIR/models: a UNet2DConditionModel from PyPI diffusers with SD 2's
options (linear transformer projections, 64-channel heads, 1024-wide text) and Lotus's
4-wide class embedding ("projection", ComfyUI's `label_emb`), under the LDM key names, and a
tiny KL VAE (kl_vae_reference's layout). Plus BASE_DIR/lotus_io.safetensors: a latent, and the
UNet's output for it at timestep 999 with the template's task embedding (depth: sin and cos of
(1, 0)) and LotusConditioning's text states (its 2×1024 values, read from the Rust crate's copy).

Usage: lotus_reference.py BASE_DIR"""
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

import sdxl_reference
import sdxl_workflow_fixtures

NULL_PROMPT = Path(__file__).parents[2] / "src/models/sdxl/lotus_null_prompt.f16"


def unet(g):
    model = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), transformer_layers_per_block=1,
        attention_head_dim=(1, 2), cross_attention_dim=1024, use_linear_projection=True,
        class_embed_type="projection", projection_class_embeddings_input_dim=4,
        norm_num_groups=32).eval()
    sdxl_workflow_fixtures.randomize(model, g, 0.05)
    return model


def main(base):
    g = torch.Generator().manual_seed(3)
    model = unet(g)
    sd = model.state_dict()
    ldm = sdxl_reference.to_ldm(sd, 2)
    for ours, theirs in (("label_emb.0.0", "class_embedding.linear_1"),
                         ("label_emb.0.2", "class_embedding.linear_2")):
        for p in ("weight", "bias"):
            ldm[f"{ours}.{p}"] = sd[f"{theirs}.{p}"].contiguous()
    assert len(ldm) == len(sd), f"{len(sd) - len(ldm)} diffusers keys not mapped"
    models = Path(base) / "models"
    for folder in ("diffusion_models", "vae"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    save_file(ldm, str(models / "diffusion_models/lotus-depth-d-v1-1.safetensors"))
    save_file({k: v.contiguous() for k, v in sdxl_workflow_fixtures.vae(g).items()},
              str(models / "vae/vae-ft-mse-840000-ema-pruned.safetensors"))

    prompt = np.frombuffer(NULL_PROMPT.read_bytes(), dtype="<f2").astype(np.float32)
    context = torch.from_numpy(prompt.copy()).view(1, 2, 1024)
    task = torch.tensor([1.0, 0.0])
    task = torch.cat([task.sin(), task.cos()]).unsqueeze(0)
    # Odd sizes: the upsampling meets the skips at their size, not at twice its input.
    x = torch.randn(1, 4, 3, 5, generator=g)
    with torch.no_grad():
        out = model(x, torch.tensor([999.0]), encoder_hidden_states=context,
                    class_labels=task).sample
    save_file({"x": x, "out": out.contiguous()}, str(Path(base) / "lotus_io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
