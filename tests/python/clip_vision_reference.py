"""A tiny CLIP vision tower from PyPI transformers (CLIPVisionModelWithProjection, GELU like
ViT-H, 16 heads), every parameter randomized, saved in ComfyUI's layout (the same key names),
plus images, the pixels ComfyUI's clip_preprocess makes of them (bicubic with antialias, 8-bit
rounding, CLIP mean/std; center crop or squash), and transformers' outputs for those pixels.
Also a tiny SigLIP tower (SiglipVisionModel: patch bias, no class token, GELU(tanh), 16 heads;
LayerNorm ε 1e-5 as ComfyUI's `CLIPVision` builds it, where transformers defaults to 1e-6)
with its pooling head, as sigclip_vision_patch14_384 holds one, and a FLUX Redux projector for
it (ComfyUI's ReduxImageEncoder: redux_down(silu(redux_up(x)))), with SigLIP's preprocessing
(mean and std 0.5, center crop) and both outputs.

Usage: DIR -> writes DIR/clip_vision.safetensors, DIR/clip_vision_io.safetensors,
DIR/siglip_vision.safetensors, DIR/redux.safetensors and DIR/siglip_io.safetensors."""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (CLIPVisionConfig, CLIPVisionModelWithProjection, SiglipVisionConfig,
                          SiglipVisionModel)

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def comfy_preprocess(images, size, crop, mean=MEAN, std=STD):
    """ComfyUI's clip_preprocess, restated."""
    x = images[..., :3].movedim(-1, 1)
    h, w = x.shape[2], x.shape[3]
    if (h, w) != (size, size):
        if crop:
            scale = size / min(h, w)
            target = (round(scale * h), round(scale * w))
        else:
            target = (size, size)
        x = torch.nn.functional.interpolate(x, size=target, mode="bicubic", antialias=True)
        top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    return (x - mean) / std


def randomize(model, g):
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            p.copy_(1.0 + noise if "norm" in name and name.endswith("weight") else noise)


def main():
    out = Path(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    config = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=16, image_size=28, patch_size=14,
                              projection_dim=24, hidden_act="gelu")
    model = CLIPVisionModelWithProjection(config).eval()
    randomize(model, g)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    save_file(state, str(out / "clip_vision.safetensors"))

    images = torch.rand(2, 40, 50, 4, generator=g)
    io = {"images": images}
    for crop in (True, False):
        pixels = comfy_preprocess(images, 28, crop)
        with torch.no_grad():
            o = model(pixel_values=pixels, output_hidden_states=True)
        tag = "crop" if crop else "squash"
        io[f"pixels_{tag}"] = pixels.contiguous()
        io[f"last_{tag}"] = o.last_hidden_state.contiguous()
        io[f"penultimate_{tag}"] = o.hidden_states[-2].contiguous()
        io[f"embeds_{tag}"] = o.image_embeds.contiguous()
    save_file(io, str(out / "clip_vision_io.safetensors"))

    config = SiglipVisionConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                num_attention_heads=16, image_size=56, patch_size=14,
                                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-5)
    siglip = SiglipVisionModel(config).eval()
    randomize(siglip, g)
    # Under `vision_model.`, as the released file (and ComfyUI's detection) names them.
    state = siglip.state_dict()
    save_file({("" if k.startswith("vision_model.") else "vision_model.") + k: v.contiguous()
               for k, v in state.items() if "position_ids" not in k},
              str(out / "siglip_vision.safetensors"))
    text_width = 32
    redux = {"redux_up.weight": torch.randn(3 * text_width, 64, generator=g) * 0.1,
             "redux_up.bias": torch.randn(3 * text_width, generator=g) * 0.1,
             "redux_down.weight": torch.randn(text_width, 3 * text_width, generator=g) * 0.1,
             "redux_down.bias": torch.randn(text_width, generator=g) * 0.1}
    save_file(redux, str(out / "redux.safetensors"))
    half = torch.full((3, 1, 1), 0.5)
    pixels = comfy_preprocess(images, 56, True, half, half)
    with torch.no_grad():
        o = siglip(pixel_values=pixels, output_hidden_states=True)
        last = o.last_hidden_state
        up = torch.nn.functional.linear(last, redux["redux_up.weight"], redux["redux_up.bias"])
        tokens = torch.nn.functional.linear(torch.nn.functional.silu(up),
                                            redux["redux_down.weight"], redux["redux_down.bias"])
    save_file({"images": images, "pixels": pixels.contiguous(), "last": last.contiguous(),
               "penultimate": o.hidden_states[-2].contiguous(), "redux": tokens.contiguous()},
              str(out / "siglip_io.safetensors"))


main()
