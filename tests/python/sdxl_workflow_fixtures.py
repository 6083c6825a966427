"""Tiny random-weight SDXL base and refiner checkpoints in the single-file layout ComfyUI's
CheckpointLoaderSimple reads, under the names the official sdxl_simple_example template loads:

  models/checkpoints/sd_xl_base_1.0.safetensors     UNet (3 levels here, ADM 64 + 6·256),
      CLIP-L (transformers layout) + OpenCLIP-G (OpenCLIP layout), KL VAE (4 channels, /8)
  models/checkpoints/sd_xl_refiner_1.0.safetensors  UNet (4 levels: the refiner's 12 input
      blocks, ADM 64 + 5·256), OpenCLIP-G, the same VAE
  models/loras/sdxl_te_lora.safetensors              kohya LoRA on both base text towers
  models/embeddings/tiny_ti.safetensors              a textual inversion for both towers
  models/clip_vision/clip_vision_g.safetensors       a CLIP vision tower for sdxl_revision

Usage: BASE_DIR (the server's base directory)."""
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                          CLIPVisionModelWithProjection)

import clip_text_reference
import kl_vae_reference
import sdxl_reference

WIDTH = 64


def randomize(model, g, scale):
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            p.copy_(1.0 + noise if "norm" in name and name.endswith("weight") else noise)


def clip(g, act):
    model = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=WIDTH, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=1, max_position_embeddings=77, hidden_act=act,
        projection_dim=WIDTH, eos_token_id=49407)).eval()
    randomize(model, g, 0.2)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def unet(g, levels, context, adm):
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    up = ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",)
    model = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(64,) * levels, down_block_types=down, up_block_types=up,
        transformer_layers_per_block=1, attention_head_dim=1, cross_attention_dim=context,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=adm, norm_num_groups=32).eval()
    randomize(model, g, 0.05)
    return sdxl_reference.to_ldm(model.state_dict(), levels)


def vae(g):
    model = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                          down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32,) * 4,
                          layers_per_block=1, norm_num_groups=32).eval()
    randomize(model, g, 0.1)
    return kl_vae_reference.to_ldm(model.state_dict(), 4)


def prefixed(prefix, sd):
    return {prefix + k: v.to(torch.float16).contiguous() for k, v in sd.items()}


def main(base):
    g = torch.Generator().manual_seed(5)
    out = Path(base) / "models/checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    first_stage = prefixed("first_stage_model.", vae(g))
    open_clip_g = clip_text_reference.open_clip_layout(clip(g, "gelu"))
    save_file({**prefixed("model.diffusion_model.", unet(g, 3, 2 * WIDTH, WIDTH + 6 * 256)),
               **prefixed("conditioner.embedders.0.transformer.", clip(g, "quick_gelu")),
               **prefixed("conditioner.embedders.1.model.", open_clip_g), **first_stage},
              str(out / "sd_xl_base_1.0.safetensors"))
    save_file({**prefixed("model.diffusion_model.", unet(g, 4, WIDTH, WIDTH + 5 * 256)),
               **prefixed("conditioner.embedders.0.model.", open_clip_g), **first_stage},
              str(out / "sd_xl_refiner_1.0.safetensors"))
    lora = {}
    for tower in ("lora_te1_", "lora_te2_"):
        for layer in range(3):
            name = f"{tower}text_model_encoder_layers_{layer}_mlp_fc1"
            lora[name + ".lora_down.weight"] = torch.randn(4, WIDTH, generator=g)
            lora[name + ".lora_up.weight"] = torch.randn(128, 4, generator=g)
    # The revision template's CLIP vision tower (ViT-G's layout, but two layers, so ViT-L's
    # quick-GELU as detection reads it): its projection is as wide as CLIP-G's pooled output,
    # which unCLIPConditioning's image embeddings replace.
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=16,
        image_size=28, patch_size=14, projection_dim=WIDTH, hidden_act="quick_gelu")).eval()
    randomize(vision, g, 0.1)
    for folder, name, tensors in [
            ("clip_vision", "clip_vision_g",
             {k: v.to(torch.float16).contiguous() for k, v in vision.state_dict().items()
              if "position_ids" not in k}),
            ("loras", "sdxl_te_lora", lora),
            ("embeddings", "tiny_ti", {"clip_l": torch.randn(2, WIDTH, generator=g),
                                       "clip_g": torch.randn(2, WIDTH, generator=g)})]:
        (Path(base) / "models" / folder).mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(Path(base) / "models" / folder / f"{name}.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
