"""A tiny FLUX.1 transformer from PyPI diffusers (FluxTransformer2DModel: 2 double and 2 single
blocks, width 256, 2 heads of 128 with RoPE axes 16/56/56, guidance embedding as in dev, none
with --schnell), every parameter
randomized, saved under ComfyUI's (BFL's) key names, plus inputs in ComfyUI's interface
(unpacked latents [B, 16, H, W], σ, T5 states, CLIP-L pooled, guidance) and diffusers' output
unpacked the same way. Positions are ComfyUI's: text at 0, image tokens at (0, row, col).

Usage: DIR [--bf16] [--schnell] -> writes DIR/flux.safetensors and DIR/flux_io.safetensors."""
import sys
from pathlib import Path

import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import save_file

CONFIG = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
              attention_head_dim=128, num_attention_heads=2, joint_attention_dim=64,
              pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def to_comfy(sd):
    """diffusers' names → BFL's (the inverse of diffusers' convert_flux_to_diffusers)."""
    out = {}
    cat = lambda *ks: torch.cat([sd[k] for k in ks])

    def linear(ours, theirs):
        for part in ("weight", "bias"):
            if f"{theirs}.{part}" in sd:
                out[f"{ours}.{part}"] = sd[f"{theirs}.{part}"]

    linear("img_in", "x_embedder")
    linear("txt_in", "context_embedder")
    for ours, theirs in [("time_in", "timestep_embedder"), ("guidance_in", "guidance_embedder"),
                         ("vector_in", "text_embedder")]:
        linear(f"{ours}.in_layer", f"time_text_embed.{theirs}.linear_1")
        linear(f"{ours}.out_layer", f"time_text_embed.{theirs}.linear_2")
    i = 0
    while f"transformer_blocks.{i}.norm1.linear.weight" in sd:
        p, q = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        linear(q + "img_mod.lin", p + "norm1.linear")
        linear(q + "txt_mod.lin", p + "norm1_context.linear")
        for part in ("weight", "bias"):
            out[q + f"img_attn.qkv.{part}"] = cat(*[p + f"attn.to_{n}.{part}" for n in "qkv"])
            out[q + f"txt_attn.qkv.{part}"] = cat(*[p + f"attn.add_{n}_proj.{part}" for n in "qkv"])
        out[q + "img_attn.norm.query_norm.scale"] = sd[p + "attn.norm_q.weight"]
        out[q + "img_attn.norm.key_norm.scale"] = sd[p + "attn.norm_k.weight"]
        out[q + "txt_attn.norm.query_norm.scale"] = sd[p + "attn.norm_added_q.weight"]
        out[q + "txt_attn.norm.key_norm.scale"] = sd[p + "attn.norm_added_k.weight"]
        linear(q + "img_attn.proj", p + "attn.to_out.0")
        linear(q + "txt_attn.proj", p + "attn.to_add_out")
        linear(q + "img_mlp.0", p + "ff.net.0.proj")
        linear(q + "img_mlp.2", p + "ff.net.2")
        linear(q + "txt_mlp.0", p + "ff_context.net.0.proj")
        linear(q + "txt_mlp.2", p + "ff_context.net.2")
        i += 1
    i = 0
    while f"single_transformer_blocks.{i}.norm.linear.weight" in sd:
        p, q = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        linear(q + "modulation.lin", p + "norm.linear")
        for part in ("weight", "bias"):
            out[q + f"linear1.{part}"] = cat(*[p + f"attn.to_{n}.{part}" for n in "qkv"],
                                             p + f"proj_mlp.{part}")
        linear(q + "linear2", p + "proj_out")
        out[q + "norm.query_norm.scale"] = sd[p + "attn.norm_q.weight"]
        out[q + "norm.key_norm.scale"] = sd[p + "attn.norm_k.weight"]
        i += 1
    # diffusers' AdaLayerNormContinuous chunks (scale, shift); BFL's final layer (shift, scale).
    for part in ("weight", "bias"):
        scale, shift = sd[f"norm_out.linear.{part}"].chunk(2)
        out[f"final_layer.adaLN_modulation.1.{part}"] = torch.cat([shift, scale])
    linear("final_layer.linear", "proj_out")
    return {k: v.contiguous() for k, v in out.items()}


def main(out_dir, bf16, schnell):
    torch.manual_seed(0)
    model = FluxTransformer2DModel(**{**CONFIG, "guidance_embeds": not schnell}).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            # q/k norm gains near 1, as trained ones are: near 0 they would leave the attention
            # uniform, blind to the token positions.
            gain = "norm" in name and name.endswith("weight")
            p.copy_((1.0 if gain else 0.0) + torch.randn_like(p) * 0.05)
    b, h, w, t5 = 2, 6, 10, 7
    x = torch.randn(b, 16, h, w)
    sigma = torch.tensor([0.9, 0.35])
    context = torch.randn(b, t5, 64)
    pooled = torch.randn(b, 32)
    guidance = None if schnell else torch.tensor([3.5, 1.0])
    packed = x.view(b, 16, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, 64)
    io_extra = {}
    img_ids = torch.zeros(h // 2, w // 2, 3)
    img_ids[..., 1] = torch.arange(h // 2)[:, None]
    img_ids[..., 2] = torch.arange(w // 2)[None, :]
    with torch.no_grad():
        out = model(hidden_states=packed, encoder_hidden_states=context, pooled_projections=pooled,
                    timestep=sigma, img_ids=img_ids.reshape(-1, 3), txt_ids=torch.zeros(t5, 3),
                    guidance=guidance, return_dict=False)[0]
    # ScaleROPE: the image tokens' index shifted by 3, rows from 0.5 every 2, columns from -1
    # every 1.5 (`rope_options` scale_y/x, shift_t/y/x).
    scaled = torch.zeros(h // 2, w // 2, 3)
    scaled[..., 0] = 3.0
    scaled[..., 1] = torch.linspace(0.5, 0.5 + (h // 2 - 1) * 2.0, h // 2)[:, None]
    scaled[..., 2] = torch.linspace(-1.0, -1.0 + (w // 2 - 1) * 1.5, w // 2)[None, :]
    with torch.no_grad():
        out_rope = model(hidden_states=packed, encoder_hidden_states=context, pooled_projections=pooled,
                         timestep=sigma, img_ids=scaled.reshape(-1, 3), txt_ids=torch.zeros(t5, 3),
                         guidance=guidance, return_dict=False)[0]
    unpack = lambda o: o.view(b, h // 2, w // 2, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, 16, h, w)
    out, out_rope = unpack(out), unpack(out_rope)
    # Kontext: two reference latents' tokens after the image's, placed as ComfyUI's
    # `Flux._forward` places them ("offset": index 1, each beside or below the earlier ones;
    # "index": each at the next index from the origin).
    refs = [torch.randn(b, 16, 4, 6), torch.randn(b, 16, 6, 4)]
    pack = lambda r: r.view(b, 16, r.shape[2] // 2, 2, r.shape[3] // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, 64)
    def grid_ids(index, row, col, rh, rw):
        ids = torch.zeros(rh, rw, 3)
        ids[..., 0] = index
        ids[..., 1] = torch.arange(row, row + rh, dtype=torch.float32)[:, None]
        ids[..., 2] = torch.arange(col, col + rw, dtype=torch.float32)[None, :]
        return ids.reshape(-1, 3)
    def placed(method):
        hh = ww = index = 0
        out_ids = [img_ids.reshape(-1, 3)]
        for r in refs:
            rh, rw = r.shape[2], r.shape[3]
            if method == "index":
                index += 1
                ho = wo = 0
            else:
                index, ho, wo = 1, 0, 0
                if rh + hh > rw + ww:
                    wo = ww
                else:
                    ho = hh
                hh, ww = max(hh, rh + ho), max(ww, rw + wo)
            out_ids.append(grid_ids(index, (ho + 1) // 2, (wo + 1) // 2, rh // 2, rw // 2))
        return torch.cat(out_ids)
    tokens = torch.cat([packed] + [pack(r) for r in refs], 1)
    for method in ("offset", "index"):
        with torch.no_grad():
            o = model(hidden_states=tokens, encoder_hidden_states=context, pooled_projections=pooled,
                      timestep=sigma, img_ids=placed(method), txt_ids=torch.zeros(t5, 3),
                      guidance=guidance, return_dict=False)[0]
        io_extra[f"out_kontext_{method}"] = unpack(o[:, :packed.shape[1]]).contiguous()
    io_extra["ref_0"], io_extra["ref_1"] = refs
    sd = to_comfy(model.state_dict())
    if bf16:
        sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    save_file(sd, str(Path(out_dir) / "flux.safetensors"))
    io = {"x": x, "sigma": sigma, "context": context, "pooled": pooled, "out": out.contiguous(),
          "out_rope": out_rope.contiguous(), **io_extra}
    if guidance is not None:
        io["guidance"] = guidance
    save_file(io, str(Path(out_dir) / "flux_io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], "--bf16" in sys.argv[2:], "--schnell" in sys.argv[2:])
