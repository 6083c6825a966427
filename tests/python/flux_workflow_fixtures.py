"""Tiny random-weight models in ComfyUI's layouts under the file names the official FLUX.1-dev
template loads, for running it end to end on the CPU:

  models/diffusion_models/flux1-dev.safetensors   FLUX.1 transformer (guidance embedding)
  models/text_encoders/clip_l.safetensors         CLIP-L text tower (CLIP's full 49408 vocab)
  models/text_encoders/t5xxl_fp16.safetensors     T5 v1.1 encoder, no tokenizer inside
  models/text_encoders/t5_tokenizer/spiece.model  a tiny T5-style SentencePiece model
  models/vae/ae.safetensors                       KL autoencoder, 16 channels, /8
  models/checkpoints/flux1-schnell-fp8.safetensors
      FLUX.1 schnell (no guidance embedding) with CLIP-L, T5-XXL and the autoencoder in one file,
      as Comfy-Org's all-in-one checkpoints hold them: the transformer's and T5's matrices in
      float8_e4m3fn, under model.diffusion_model., text_encoders.clip_l.transformer.,
      text_encoders.t5xxl.transformer. and vae.
  models/diffusion_models/flux1-dev-fp8.safetensors
      the dev transformer's all-in-one FP8 checkpoint (flux_depth_lora_example loads it with
      UNETLoader)
  models/loras/flux1-depth-dev-lora.safetensors
      a control LoRA in BFL's layout for it (see control_lora)
  models/diffusion_models/flux1-dev-depth-merged.safetensors
      that LoRA merged into the FP8 transformer at strength 1, as ComfyUI merges it (float32)
  models/clip_vision/sigclip_vision_patch14_384.safetensors
      a SigLIP vision tower (clip_vision_reference's layout, 56-pixel input)
  models/style_models/flux1-redux-dev.safetensors
      FLUX.1 Redux's projector from that tower's width into T5's
  models/diffusion_models/flux1-schnell-fp8-split.safetensors
  models/text_encoders/t5xxl_fp8_e4m3fn.safetensors
      the checkpoint's transformer and T5 as separate files, to load the same weights through
      UNETLoader and DualCLIPLoader

Usage: BASE_DIR (the server's base directory)."""
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from safetensors.torch import load_file, save_file
from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, SiglipVisionConfig,
                          SiglipVisionModel, T5Config, T5EncoderModel)

import flux_reference
import kl_vae_reference
import spiece_reference

T5_DIM, CLIP_DIM = 32, 64


def randomize(model, g, scale):
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            p.copy_(1.0 + noise if "norm" in name and name.endswith("weight") else noise)


def fp8_matrices(sd):
    """The matrices in float8_e4m3fn, the rest as they are."""
    return {k: (v.to(torch.float8_e4m3fn) if v.dim() == 2 else v).contiguous()
            for k, v in sd.items()}


def control_lora(sd, g, rank=4):
    """BFL's FLUX control LoRA layout (FLUX.1 Depth/Canny [dev] LoRA) for transformer `sd`:
    lora_A/lora_B for every matrix, lora_B.bias where the layer has a bias, img_in's lora_A
    reading twice the channels (the latent's and the control image's), and new RMSNorm gains
    under the norms' own names (`*_norm.scale`)."""
    lora = {}
    for key, value in sd.items():
        if key.endswith(".weight") and value.dim() == 2:
            module = key[:-len(".weight")]
            out, inp = value.shape
            if module == "img_in":
                inp *= 2
            lora[f"{module}.lora_A.weight"] = torch.randn(rank, inp, generator=g) * 0.1
            lora[f"{module}.lora_B.weight"] = torch.randn(out, rank, generator=g) * 0.1
            if f"{module}.bias" in sd:
                lora[f"{module}.lora_B.bias"] = torch.randn(out, generator=g) * 0.05
        elif key.endswith("_norm.scale"):
            lora[key] = 1.0 + torch.randn(value.shape, generator=g) * 0.1
    return lora


def merge_control_lora(sd, lora):
    """ComfyUI's merge of a BFL control LoRA at strength 1, in float32: img_in zero-padded to
    the LoRA's width, W + B·A (no alpha: scale 1), b + lora_B.bias, the norm gains replaced."""
    out = {k: v.float() for k, v in sd.items()}
    for key, value in lora.items():
        if key.endswith(".lora_A.weight"):
            module = key[:-len(".lora_A.weight")]
            weight = out[f"{module}.weight"]
            up = lora[f"{module}.lora_B.weight"].float()
            down = value.float()
            padded = torch.zeros(up.shape[0], down.shape[1])
            padded[:, :weight.shape[1]] = weight
            out[f"{module}.weight"] = padded + up @ down
        elif key.endswith(".lora_B.bias"):
            module = key[:-len(".lora_B.bias")]
            out[f"{module}.bias"] = out[f"{module}.bias"] + value.float()
        elif key.endswith("_norm.scale"):
            out[key] = value.float()
    return {k: v.contiguous() for k, v in out.items()}


def main(base):
    g = torch.Generator().manual_seed(3)
    models = Path(base) / "models"
    for folder in ("diffusion_models", "text_encoders/t5_tokenizer", "vae"):
        (models / folder).mkdir(parents=True, exist_ok=True)

    flux = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                  attention_head_dim=128, num_attention_heads=1,
                                  joint_attention_dim=T5_DIM, pooled_projection_dim=CLIP_DIM,
                                  guidance_embeds=True, axes_dims_rope=(16, 56, 56)).eval()
    randomize(flux, g, 0.05)
    save_file(flux_reference.to_comfy(flux.state_dict()),
              str(models / "diffusion_models/flux1-dev.safetensors"))

    # FLUX.1 Fill (the latent, its conditioning image's and the 8×8-packed mask: 96 channels)
    # and Canny (the latent and the edge image's: 32), predicting the latent's 16.
    for name, channels in (("flux1-fill-dev", 96), ("flux1-canny-dev", 32)):
        model = FluxTransformer2DModel(patch_size=1, in_channels=channels * 4, out_channels=64,
                                       num_layers=1, num_single_layers=1, attention_head_dim=128,
                                       num_attention_heads=1, joint_attention_dim=T5_DIM,
                                       pooled_projection_dim=CLIP_DIM, guidance_embeds=True,
                                       axes_dims_rope=(16, 56, 56)).eval()
        randomize(model, g, 0.05)
        sd = flux_reference.to_comfy(model.state_dict())
        save_file(sd, str(models / f"diffusion_models/{name}.safetensors"))
        if name == "flux1-fill-dev":
            # OneReward's fill transformer, and a kohya-named LoRA for it (its removal LoRA).
            save_file(sd, str(models / "diffusion_models/flux.1-fill-dev-OneReward-transformer_fp8.safetensors"))
            lora = {}
            for module in ("double_blocks.0.img_attn.qkv", "single_blocks.0.linear1"):
                out, inp = sd[f"{module}.weight"].shape
                key = "lora_unet_" + module.replace(".", "_")
                lora[f"{key}.lora_down.weight"] = torch.randn(4, inp, generator=g) * 0.1
                lora[f"{key}.lora_up.weight"] = torch.randn(out, 4, generator=g) * 0.1
                lora[f"{key}.alpha"] = torch.tensor(4.0)
            (models / "loras").mkdir(parents=True, exist_ok=True)
            save_file(lora, str(models / "loras/removal_timestep_alpha-2-1740.safetensors"))

    clip = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=CLIP_DIM, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
        projection_dim=CLIP_DIM, eos_token_id=49407)).eval()
    randomize(clip, g, 0.2)
    save_file({k: v.to(torch.float16).contiguous() for k, v in clip.state_dict().items()},
              str(models / "text_encoders/clip_l.safetensors"))

    (models / "text_encoders/t5_tokenizer/spiece.model").write_bytes(spiece_reference.train(120))
    t5 = T5EncoderModel(T5Config(vocab_size=128, d_model=T5_DIM, d_kv=8, d_ff=48, num_layers=2,
                                 num_heads=4, feed_forward_proj="gated-gelu",
                                 dropout_rate=0.0)).eval()
    randomize(t5, g, 0.3)
    save_file({k: v.to(torch.float16).contiguous() for k, v in t5.state_dict().items()
               if k != "encoder.embed_tokens.weight"},
              str(models / "text_encoders/t5xxl_fp16.safetensors"))

    schnell = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1,
                                     num_single_layers=1, attention_head_dim=128,
                                     num_attention_heads=1, joint_attention_dim=T5_DIM,
                                     pooled_projection_dim=CLIP_DIM, guidance_embeds=False,
                                     axes_dims_rope=(16, 56, 56)).eval()
    randomize(schnell, g, 0.05)
    schnell = fp8_matrices({k: v.to(torch.bfloat16)
                            for k, v in flux_reference.to_comfy(schnell.state_dict()).items()})
    t5_fp8 = fp8_matrices({k: v.to(torch.float16) for k, v in t5.state_dict().items()
                           if k != "encoder.embed_tokens.weight"})
    save_file(schnell, str(models / "diffusion_models/flux1-schnell-fp8-split.safetensors"))
    save_file(t5_fp8, str(models / "text_encoders/t5xxl_fp8_e4m3fn.safetensors"))
    clip_l = {k: v.to(torch.float16) for k, v in clip.state_dict().items()}

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(32,) * 4, layers_per_block=1, norm_num_groups=32,
                        use_quant_conv=False, use_post_quant_conv=False).eval()
    randomize(vae, g, 0.1)
    ae = kl_vae_reference.to_ldm(vae.state_dict(), 4)
    save_file(ae, str(models / "vae/ae.safetensors"))

    dev = {k: v.to(torch.bfloat16) for k, v in load_file(
        str(models / "diffusion_models/flux1-dev.safetensors")).items()}
    dev = fp8_matrices(dev)
    dev_checkpoint = {}
    for prefix, part in (("model.diffusion_model.", dev),
                         ("text_encoders.clip_l.transformer.", clip_l),
                         ("text_encoders.t5xxl.transformer.", t5_fp8), ("vae.", ae)):
        dev_checkpoint.update({prefix + k: v.contiguous() for k, v in part.items()})
    save_file(dev_checkpoint, str(models / "diffusion_models/flux1-dev-fp8.safetensors"))
    lora = control_lora(dev, g)
    (models / "loras").mkdir(parents=True, exist_ok=True)
    save_file(lora, str(models / "loras/flux1-depth-dev-lora.safetensors"))
    save_file(merge_control_lora(dev, lora),
              str(models / "diffusion_models/flux1-dev-depth-merged.safetensors"))

    siglip = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=16,
        image_size=56, patch_size=14, hidden_act="gelu_pytorch_tanh")).eval()
    randomize(siglip, g, 0.1)
    (models / "clip_vision").mkdir(parents=True, exist_ok=True)
    save_file({("" if k.startswith("vision_model.") else "vision_model.") + k: v.contiguous()
               for k, v in siglip.state_dict().items() if "position_ids" not in k},
              str(models / "clip_vision/sigclip_vision_patch14_384.safetensors"))
    (models / "style_models").mkdir(parents=True, exist_ok=True)
    save_file({"redux_up.weight": torch.randn(3 * T5_DIM, 64, generator=g) * 0.1,
               "redux_up.bias": torch.randn(3 * T5_DIM, generator=g) * 0.1,
               "redux_down.weight": torch.randn(T5_DIM, 3 * T5_DIM, generator=g) * 0.3,
               "redux_down.bias": torch.randn(T5_DIM, generator=g) * 0.1},
              str(models / "style_models/flux1-redux-dev.safetensors"))

    checkpoint = {}
    for prefix, part in (("model.diffusion_model.", schnell),
                         ("text_encoders.clip_l.transformer.", clip_l),
                         ("text_encoders.t5xxl.transformer.", t5_fp8), ("vae.", ae)):
        checkpoint.update({prefix + k: v.contiguous() for k, v in part.items()})
    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_file(checkpoint, str(models / "checkpoints/flux1-schnell-fp8.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
