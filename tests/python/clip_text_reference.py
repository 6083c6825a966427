"""Tiny CLIP text towers from PyPI transformers (CLIPTextModelWithProjection), every parameter
randomized: one with quick-GELU saved in ComfyUI's `clip_l.safetensors` layout (transformers'
names), one with GELU saved in OpenCLIP's layout (how SDXL checkpoints keep CLIP-G: fused
in_proj, `ln_final`, `text_projection` as x @ P). Token rows end with the end token and pad with
it (CLIP-L) or with 0 (CLIP-G); the outputs are transformers' last hidden state, the penultimate
layer's state (not normed), the pooled state at the first end token and its projection.

Usage: DIR -> writes DIR/{clip_hf,clip_open}.safetensors and DIR/clip_text_io.safetensors."""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

VOCAB, END = 1000, 999


def tiny(act):
    config = CLIPTextConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=256,
                            num_hidden_layers=3, num_attention_heads=2, max_position_embeddings=77,
                            hidden_act=act, projection_dim=96, bos_token_id=998,
                            eos_token_id=END, pad_token_id=END)
    model = CLIPTextModelWithProjection(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def open_clip_layout(sd):
    out = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].t().contiguous(),
    }
    i = 0
    while f"text_model.encoder.layers.{i}.layer_norm1.weight" in sd:
        p, q = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[q + f"attn.in_proj_{part}"] = torch.cat(
                [sd[p + f"self_attn.{n}_proj.{part}"] for n in "qkv"])
            for ours, theirs in [("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                                 ("attn.out_proj", "self_attn.out_proj"),
                                 ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]:
                out[q + f"{ours}.{part}"] = sd[p + f"{theirs}.{part}"]
        i += 1
    return out


def main(out_dir):
    torch.manual_seed(0)
    ids = torch.randint(0, 990, (2, 20))
    ids[:, 0] = 998
    ids[0, 12:] = END
    ids[1, 17] = END
    io = {}
    for tag, act, pad in [("hf", "quick_gelu", END), ("open", "gelu", 0)]:
        model = tiny(act)
        rows = ids.clone()
        rows[1, 18:] = pad
        with torch.no_grad():
            out = model(input_ids=rows, output_hidden_states=True)
            pooled = out.last_hidden_state[torch.arange(2), (rows == END).int().argmax(-1)]
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(sd if tag == "hf" else open_clip_layout(sd),
                  str(Path(out_dir) / f"clip_{tag}.safetensors"))
        io.update({f"ids_{tag}": rows, f"last_{tag}": out.last_hidden_state,
                   f"penultimate_{tag}": out.hidden_states[-2], f"pooled_{tag}": pooled,
                   f"projected_{tag}": out.text_embeds})
    save_file({k: v.contiguous() for k, v in io.items()}, str(Path(out_dir) / "clip_text_io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
