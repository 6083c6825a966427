"""Tiny files with the real key layouts of every model family VideosDGX detects, written with
PyPI torch + safetensors (zeros: detection reads only names and shapes). Usage: DIR."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file


def z(*shape, dtype=torch.float16):
    return torch.zeros(*shape, dtype=dtype)


def linear(sd, name, out, inp, bias=True):
    sd[f"{name}.weight"] = z(out, inp)
    if bias:
        sd[f"{name}.bias"] = z(out)


def wan_dit(dim=256, layers=2, ffn=512, in_dim=16, out_dim=16, text_dim=32, i2v=False, prefix=""):
    sd = {"patch_embedding.weight": z(dim, in_dim, 1, 2, 2), "patch_embedding.bias": z(dim),
          "head.modulation": z(1, 2, dim)}
    linear(sd, "text_embedding.0", dim, text_dim)
    linear(sd, "text_embedding.2", dim, dim)
    linear(sd, "time_embedding.0", dim, 16)
    linear(sd, "time_embedding.2", dim, dim)
    linear(sd, "time_projection.1", dim * 6, dim)
    linear(sd, "head.head", out_dim * 4, dim)
    for n in range(layers):
        b = f"blocks.{n}."
        for attn in ("self_attn", "cross_attn"):
            for p in "qkvo":
                linear(sd, f"{b}{attn}.{p}", dim, dim)
            sd[f"{b}{attn}.norm_q.weight"] = z(dim)
            sd[f"{b}{attn}.norm_k.weight"] = z(dim)
        if i2v:
            linear(sd, f"{b}cross_attn.k_img", dim, dim)
            linear(sd, f"{b}cross_attn.v_img", dim, dim)
            sd[f"{b}cross_attn.norm_k_img.weight"] = z(dim)
        sd[f"{b}norm3.weight"], sd[f"{b}norm3.bias"] = z(dim), z(dim)
        linear(sd, f"{b}ffn.0", ffn, dim)
        linear(sd, f"{b}ffn.2", dim, ffn)
        sd[f"{b}modulation"] = z(1, 6, dim)
    if i2v:
        sd["img_emb.proj.0.weight"], sd["img_emb.proj.0.bias"] = z(20), z(20)
        linear(sd, "img_emb.proj.1", dim, 20)
        linear(sd, "img_emb.proj.3", dim, dim)
        sd["img_emb.proj.4.weight"], sd["img_emb.proj.4.bias"] = z(dim), z(dim)
    return {prefix + k: v for k, v in sd.items()}


def ltx2_checkpoint():
    dit = {"adaln_single.emb.timestep_embedder.linear_1.bias": z(64),
           "audio_adaln_single.linear.weight": z(96, 16)}
    for n in range(3):
        b = f"transformer_blocks.{n}."
        for attn in ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"):
            for p in ("to_q", "to_k", "to_v", "to_out.0"):
                linear(dit, f"{b}{attn}.{p}", 64, 48 if (attn == "attn2" and p in ("to_k", "to_v")) else 64)
            dit[f"{b}{attn}.q_norm.weight"] = z(64)
            dit[f"{b}{attn}.k_norm.weight"] = z(64)
        linear(dit, f"{b}ff.net.0.proj", 128, 64)
        linear(dit, f"{b}ff.net.2", 64, 128)
        dit[f"{b}scale_shift_table"] = z(6, 64)
        dit[f"{b}audio_scale_shift_table"] = z(6, 64)
    vae = {"decoder.up_blocks.0.res_blocks.0.conv1.conv.weight": z(8, 8, 3, 3, 3),
           "decoder.conv_in.conv.weight": z(8, 128, 3, 3, 3),
           "per_channel_statistics.mean-of-means": z(128), "per_channel_statistics.std-of-means": z(128),
           "encoder.conv_in.conv.weight": z(8, 48, 3, 3, 3)}
    audio = {"encoder.conv_in.conv.weight": z(8, 2, 3, 3), "decoder.conv_out.conv.weight": z(2, 8, 3, 3)}
    vocoder = {"conv_pre.weight": z(16, 128, 7), "conv_post.weight": z(2, 16, 7)}
    proj = {"aggregate_embed.weight": z(64, 32)}
    sd = {}
    for prefix, part in (("model.diffusion_model.", dit), ("vae.", vae), ("audio_vae.", audio),
                         ("vocoder.", vocoder), ("text_embedding_projection.", proj)):
        sd.update({prefix + k: v for k, v in part.items()})
    config = {"transformer": {"num_attention_heads": 2, "audio_num_attention_heads": 2},
              "vae": {"latent_channels": 128}, "audio_vae": {"latent_channels": 8},
              "vocoder": {"upsample_rates": [6, 5, 2, 2, 2]}}
    return sd, {"config": json.dumps(config)}


def flux_dit(hidden=256, double=2, single=3):
    sd = {}
    linear(sd, "img_in", hidden, 64)
    linear(sd, "txt_in", hidden, 48)
    for emb, inp in (("time_in", 256), ("vector_in", 40), ("guidance_in", 256)):
        linear(sd, f"{emb}.in_layer", hidden, inp)
        linear(sd, f"{emb}.out_layer", hidden, hidden)
    for n in range(double):
        b = f"double_blocks.{n}."
        for s in ("img", "txt"):
            linear(sd, f"{b}{s}_attn.qkv", hidden * 3, hidden)
            sd[f"{b}{s}_attn.norm.query_norm.scale"] = z(128)
            sd[f"{b}{s}_attn.norm.key_norm.scale"] = z(128)
            linear(sd, f"{b}{s}_attn.proj", hidden, hidden)
            linear(sd, f"{b}{s}_mlp.0", hidden * 4, hidden)
            linear(sd, f"{b}{s}_mlp.2", hidden, hidden * 4)
            linear(sd, f"{b}{s}_mod.lin", hidden * 6, hidden)
    for n in range(single):
        b = f"single_blocks.{n}."
        linear(sd, f"{b}linear1", hidden * 7, hidden)
        linear(sd, f"{b}linear2", hidden, hidden * 5)
        sd[f"{b}norm.query_norm.scale"], sd[f"{b}norm.key_norm.scale"] = z(128), z(128)
        linear(sd, f"{b}modulation.lin", hidden * 3, hidden)
    linear(sd, "final_layer.adaLN_modulation.1", hidden * 2, hidden)
    linear(sd, "final_layer.linear", 64, hidden)
    return sd


def kl_vae(z_channels, ch=8, levels=3, quant=True):
    sd = {"encoder.conv_in.weight": z(ch, 3, 3, 3), "decoder.conv_in.weight": z(ch, z_channels, 3, 3),
          "encoder.conv_out.weight": z(2 * z_channels, ch, 3, 3), "decoder.conv_out.weight": z(3, ch, 3, 3)}
    for i in range(levels):
        sd[f"encoder.down.{i}.block.0.conv1.weight"] = z(ch, ch, 3, 3)
        sd[f"decoder.up.{i}.block.0.conv1.weight"] = z(ch, ch, 3, 3)
    if quant:
        sd["quant_conv.weight"] = z(2 * z_channels, 2 * z_channels, 1, 1)
        sd["post_quant_conv.weight"] = z(z_channels, z_channels, 1, 1)
    return sd


def sdxl_checkpoint(mc=32):
    unet = {"input_blocks.0.0.weight": z(mc, 4, 3, 3), "out.2.weight": z(4, mc, 3, 3),
            "label_emb.0.0.weight": z(64, 16 + 1536)}
    # Three levels of two res blocks with downsamplers between: 9 input blocks.
    mult, depth = [1, 2, 4], [0, 2, 3]
    block = 1
    for level in range(3):
        for _ in range(2):
            unet[f"input_blocks.{block}.0.in_layers.0.weight"] = z(mc)
            unet[f"input_blocks.{block}.0.out_layers.3.weight"] = z(mc * mult[level], mc, 3, 3)
            for t in range(depth[level]):
                unet[f"input_blocks.{block}.1.transformer_blocks.{t}.attn2.to_k.weight"] = z(mc * mult[level], 48)
            block += 1
        if level < 2:
            unet[f"input_blocks.{block}.0.op.weight"] = z(mc * mult[level], mc * mult[level], 3, 3)
            block += 1
    clip_l = {"text_model.embeddings.token_embedding.weight": z(100, 16)}
    for n in range(12):
        linear(clip_l, f"text_model.encoder.layers.{n}.mlp.fc1", 64, 16)
    clip_g = {"token_embedding.weight": z(100, 32), "text_projection": z(32, 32)}
    for n in range(32):
        clip_g[f"transformer.resblocks.{n}.attn.in_proj_weight"] = z(96, 32)
    sd = {}
    for prefix, part in (("model.diffusion_model.", unet), ("first_stage_model.", kl_vae(4)),
                         ("conditioner.embedders.0.transformer.", clip_l),
                         ("conditioner.embedders.1.model.", clip_g)):
        sd.update({prefix + k: v for k, v in part.items()})
    return sd


def magi_dit(hidden=256, layers=2, in_ch=16):
    sd = {"x_embedder.weight": z(hidden, in_ch, 1, 2, 2), "rope.bands": z(16),
          "y_embedder.null_caption_embedding": z(8, 64)}
    linear(sd, "t_embedder.mlp.0", hidden // 4, 64)
    linear(sd, "t_embedder.mlp.2", hidden // 4, hidden // 4)
    linear(sd, "y_embedder.y_proj_xattn.0", hidden, 64)
    linear(sd, "y_embedder.y_proj_adaln.0", hidden // 4, 64)
    for n in range(layers):
        b = f"videodit_blocks.layers.{n}."
        linear(sd, f"{b}ada_modulate_layer.proj.0", hidden * 2, hidden // 4)
        sd[f"{b}self_attention.linear_qkv.layer_norm.weight"] = z(hidden)
        for p, rows in (("q", hidden), ("qx", hidden), ("k", 128), ("v", 128)):
            linear(sd, f"{b}self_attention.linear_qkv.{p}", rows, hidden, bias=False)
        linear(sd, f"{b}self_attention.linear_kv_xattn", 256, hidden, bias=False)
        linear(sd, f"{b}self_attention.linear_proj", hidden, hidden * 2, bias=False)
        for norm in ("q_layernorm", "k_layernorm", "q_layernorm_xattn", "k_layernorm_xattn"):
            sd[f"{b}self_attention.{norm}.weight"] = z(128)
        sd[f"{b}self_attn_post_norm.weight"] = z(hidden)
        sd[f"{b}mlp.layer_norm.weight"] = z(hidden)
        linear(sd, f"{b}mlp.linear_fc1", hidden * 4, hidden, bias=False)
        linear(sd, f"{b}mlp.linear_fc2", hidden, hidden * 4, bias=False)
        sd[f"{b}mlp_post_norm.weight"] = z(hidden)
    sd["videodit_blocks.final_layernorm.weight"] = z(hidden)
    sd["final_linear.linear.weight"] = z(in_ch * 4, hidden)
    return sd


def wan_vae(v22=False, dim=8):
    zdim, cin = (48, 12) if v22 else (16, 3)
    sd = {"encoder.conv1.weight": z(dim, cin, 3, 3, 3), "conv1.weight": z(2 * zdim, 2 * zdim, 1, 1, 1),
          "conv2.weight": z(zdim, zdim, 1, 1, 1), "decoder.conv1.weight": z(dim, zdim, 3, 3, 3),
          "decoder.middle.0.residual.0.gamma": z(dim, 1, 1, 1),
          "encoder.middle.1.to_qkv.weight": z(dim * 3, dim, 1, 1)}
    if v22:
        sd["decoder.upsamples.0.upsamples.0.residual.2.weight"] = z(dim, dim, 3, 3, 3)
    else:
        sd["decoder.upsamples.0.residual.2.weight"] = z(dim, dim, 3, 3, 3)
    return sd


def magi_vae(hidden=32):
    sd = {"encoder.patch_embed.proj.weight": z(hidden, 3, 4, 8, 8), "encoder.pos_embed": z(1, 5, hidden),
          "decoder.proj_in.weight": z(hidden, 16), "decoder.last_layer.weight": z(3 * 4 * 8 * 8, hidden)}
    for part in ("encoder", "decoder"):
        for n in range(3):
            linear(sd, f"{part}.blocks.{n}.attn.qkv", hidden * 3, hidden)
    return sd


def umt5(layers=24, d=8, ff=16, heads=2):
    sd = {"shared.weight": z(50, d), "encoder.final_layer_norm.weight": z(d),
          "spiece_model": torch.tensor(list(b"not a real sentencepiece model"), dtype=torch.uint8)}
    for n in range(layers):
        b = f"encoder.block.{n}.layer."
        for p in "qkvo":
            sd[f"{b}0.SelfAttention.{p}.weight"] = z(d, d)
        sd[f"{b}0.SelfAttention.relative_attention_bias.weight"] = z(32, heads)
        sd[f"{b}0.layer_norm.weight"] = z(d)
        sd[f"{b}1.DenseReluDense.wi_0.weight"] = z(ff, d)
        sd[f"{b}1.DenseReluDense.wi_1.weight"] = z(ff, d)
        sd[f"{b}1.DenseReluDense.wo.weight"] = z(d, ff)
        sd[f"{b}1.layer_norm.weight"] = z(d)
    return sd


def gemma3(layers=4, hidden=16):
    sd = {"model.embed_tokens.weight": z(64, hidden), "model.norm.weight": z(hidden)}
    for n in range(layers):
        b = f"model.layers.{n}."
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[f"{b}self_attn.{p}.weight"] = z(hidden, hidden)
        sd[f"{b}self_attn.q_norm.weight"] = z(8)
        sd[f"{b}self_attn.k_norm.weight"] = z(8)
        sd[f"{b}post_feedforward_layernorm.weight"] = z(hidden)
    return sd


def clip_vision_h(layers=32, width=16):
    sd = {"vision_model.embeddings.patch_embedding.weight": z(width, 3, 14, 14),
          "vision_model.embeddings.position_embedding.weight": z(257, width),
          "vision_model.embeddings.class_embedding": z(width)}
    for n in range(layers):
        sd[f"vision_model.encoder.layers.{n}.layer_norm1.weight"] = z(width)
        linear(sd, f"vision_model.encoder.layers.{n}.mlp.fc1", width * 4, width)
    return sd


def main(out):
    files = {
        "wan21_t2v": wan_dit(),
        "wan21_t2v_prefixed": wan_dit(prefix="model.diffusion_model."),
        "wan21_i2v": wan_dit(in_dim=36, i2v=True),
        "wan22_ti2v_5b": wan_dit(in_dim=48, out_dim=48),
        "flux_dev": flux_dit(),
        "sdxl": sdxl_checkpoint(),
        "magi1": magi_dit(),
        "wan21_vae": wan_vae(),
        "wan22_vae": wan_vae(v22=True),
        "flux_ae": kl_vae(16, quant=False),
        "magi1_vae": magi_vae(),
        "umt5_xxl": umt5(),
        "gemma3": gemma3(),
        "clip_vision_h": clip_vision_h(),
        "unknown": {"foo.bar.weight": z(3, 3), "baz": z(2)},
    }
    for name, sd in files.items():
        save_file(sd, out / f"{name}.safetensors")
    ltx, meta = ltx2_checkpoint()
    save_file(ltx, out / "ltx2.safetensors", metadata=meta)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
