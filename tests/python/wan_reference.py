"""Tiny Wan DiTs from PyPI diffusers (WanTransformer3DModel), with every parameter randomized,
saved under ComfyUI's key names, plus inputs and diffusers' outputs in float32.

Usage: DIR -> writes DIR/{variant}.safetensors (weights) and DIR/{variant}_io.safetensors for
variants t2v, i2v, ti2v (Wan 2.2 TI2V 5B layout: 48 channels, per-frame timesteps), and
DIR/t2v_cfg_io.safetensors: a batch of cond and uncond on one latent with padded prompts."""
import re
import sys
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

# diffusers name -> ComfyUI name (inverse of diffusers' convert_wan_to_diffusers.py).
RENAMES = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^condition_embedder\.image_embedder\.norm1\.", "img_emb.proj.0."),
    (r"^condition_embedder\.image_embedder\.ff\.net\.0\.proj\.", "img_emb.proj.1."),
    (r"^condition_embedder\.image_embedder\.ff\.net\.2\.", "img_emb.proj.3."),
    (r"^condition_embedder\.image_embedder\.norm2\.", "img_emb.proj.4."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"\.scale_shift_table$", ".modulation"),
    (r"\.attn1\.", ".self_attn."),
    (r"\.attn2\.", ".cross_attn."),
    (r"\.to_q\.", ".q."), (r"\.to_k\.", ".k."), (r"\.to_v\.", ".v."), (r"\.to_out\.0\.", ".o."),
    (r"\.add_k_proj\.", ".k_img."), (r"\.add_v_proj\.", ".v_img."), (r"\.norm_added_k\.", ".norm_k_img."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."), (r"\.ffn\.net\.2\.", ".ffn.2."),
    # diffusers' norm2 is the affine cross-attention norm ComfyUI calls norm3.
    (r"^(blocks\.\d+)\.norm2\.", r"\1.norm3."),
]


def to_comfy(key):
    for pattern, repl in RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def build(variant, g):
    in_ch, out_ch = {"t2v": (16, 16), "i2v": (36, 16), "ti2v": (48, 48)}[variant]
    i2v = variant == "i2v"
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=in_ch,
        out_channels=out_ch, text_dim=32, freq_dim=16, ffn_dim=96, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280 if i2v else None,
        added_kv_proj_dim=256 if i2v else None,
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            is_norm_gain = "norm" in name and name.endswith(".weight")
            p.copy_(1.0 + noise if is_norm_gain else noise)
    return model, in_ch


def main(out):
    g = torch.Generator().manual_seed(42)
    for variant in ("t2v", "i2v", "ti2v"):
        model, in_ch = build(variant, g)
        sd = {to_comfy(k): v.contiguous() for k, v in model.state_dict().items() if "norm_added_q" not in k}
        save_file(sd, out / f"{variant}.safetensors")
        t, h, w = 3, 6, 8
        x = torch.randn(1, in_ch, t, h, w, generator=g)
        # diffusers splits I2V context as "the last 512 tokens are text" (UMT5's padded length);
        # ComfyUI splits after the 257 CLIP tokens. They agree when the text has 512 tokens.
        context = torch.randn(1, 512 if variant == "i2v" else 7, 32, generator=g)
        if variant == "i2v":
            context[:, 200:] = 0  # a 200-token prompt padded with zeros, as ComfyUI's UMT5 gives
        io = {"x": x, "context": context}
        kwargs = {}
        if variant == "ti2v":
            # ComfyUI gives Wan 2.2 one timestep per latent frame; diffusers one per token.
            per_frame = torch.tensor([[0.0, 640.5, 999.0]])
            io["timestep"] = per_frame
            timestep = per_frame.repeat_interleave((h // 2) * (w // 2), dim=1)
        else:
            timestep = torch.tensor([712.25])
            io["timestep"] = timestep
        if variant == "i2v":
            clip = torch.randn(1, 257, 1280, generator=g)
            io["clip"] = clip
            kwargs["encoder_hidden_states_image"] = clip
        with torch.no_grad():
            io["output"] = model(x, timestep, context, return_dict=False, **kwargs)[0]
        save_file(io, out / f"{variant}_io.safetensors")
        if variant == "t2v":
            save_file(cfg_batch(model, x, g), out / "t2v_cfg_io.safetensors")


def cfg_batch(model, x, g):
    """A CFG call as ComfyUI makes it: cond and uncond on one latent and timestep, each prompt
    padded with zero rows (5 and 9 tokens of 24)."""
    context = torch.randn(2, 24, 32, generator=g)
    context[0, 5:] = 0
    context[1, 9:] = 0
    io = {"x": x.repeat(2, 1, 1, 1, 1), "context": context, "timestep": torch.tensor([712.25, 712.25])}
    with torch.no_grad():
        io["output"] = model(io["x"], io["timestep"], context, return_dict=False)[0]
    return io


if __name__ == "__main__":
    main(Path(sys.argv[1]))
