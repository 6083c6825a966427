"""SDXL's two text towers (tiny, random, full CLIP vocabulary) with a kohya-style LoRA on both
and textual-inversion embeddings, computed with PyPI transformers:

* the LoRA merged into transformers' CLIP-L and CLIP-G as kohya's sd-scripts defines its names
  (`lora_te1_`/`lora_te2_` + the module path with `_` for `.`): W + s·(alpha/rank)·up·down;
* an embedding's vectors as extra vocabulary rows, placed where the prompt names it.

The checkpoint keeps CLIP-L in transformers' layout and CLIP-G in OpenCLIP's (as SDXL files do),
float16 like real checkpoints (the reference uses the same rounded values).

Reads {"before": ids, "after": ids} on stdin: CLIP ids of the words around the embedding.
Usage: DIR -> DIR/sdxl_text.safetensors, DIR/te_lora.safetensors,
DIR/embeddings/{tiny_ti,sd15}.safetensors, DIR/expected.safetensors."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

import clip_text_reference

START, END, VOCAB = 49406, 49407, 49408
STRENGTH = 0.7


def tower(g, width, act):
    model = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=3,
        num_attention_heads=width // 64, max_position_embeddings=77, hidden_act=act,
        projection_dim=width, eos_token_id=END)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.randn(p.shape, generator=g) * 0.2).half().float())
    return model


def lora(g, towers):
    """kohya LoRA keys for some modules of each tower (one without alpha), and the unet key a
    LoraLoader file also carries."""
    out, merges = {}, []
    picks = {"lora_te1_": [(0, "self_attn.q_proj"), (1, "self_attn.v_proj"), (1, "mlp.fc1"),
                           (2, "self_attn.out_proj")],
             "lora_te2_": [(0, "self_attn.k_proj"), (0, "mlp.fc2"), (2, "self_attn.q_proj")]}
    for (prefix, modules), model in zip(picks.items(), towers):
        for n, (layer, module) in enumerate(modules):
            linear = model.text_model.encoder.layers[layer].get_submodule(module)
            name = prefix + f"text_model.encoder.layers.{layer}.{module}".replace(".", "_")
            rank = 4
            down = torch.randn(rank, linear.in_features, generator=g) * 0.3
            up = torch.randn(linear.out_features, rank, generator=g) * 0.3
            out[name + ".lora_down.weight"], out[name + ".lora_up.weight"] = down, up
            scale = 1.0
            if n != 1:
                alpha = 2.0
                out[name + ".alpha"] = torch.tensor(alpha)
                scale = alpha / rank
            merges.append((linear, up @ down * (scale * STRENGTH)))
    out["lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight"] = torch.randn(4, 8, generator=g)
    out["lora_unet_input_blocks_1_0_in_layers_2.lora_up.weight"] = torch.randn(8, 4, generator=g)
    return out, merges


def with_rows(model, rows):
    """The tower with `rows` appended to its token table (ids VOCAB, VOCAB + 1, …)."""
    table = model.text_model.embeddings.token_embedding.weight.data
    model.text_model.embeddings.token_embedding = torch.nn.Embedding.from_pretrained(
        torch.cat([table, rows]))
    return model


def encode(l_model, g_model, l_ids, g_ids):
    """SDXL's conditioning: CLIP-L ⊕ CLIP-G penultimate states, CLIP-G's projected pooled."""
    with torch.no_grad():
        lo = l_model(input_ids=torch.tensor([l_ids]), output_hidden_states=True)
        go = g_model(input_ids=torch.tensor([g_ids]), output_hidden_states=True)
    return torch.cat([lo.hidden_states[-2], go.hidden_states[-2]], -1), go.text_embeds


def row(ids, pad):
    ids = [START] + ids + [END]
    return ids + [pad] * (77 - len(ids))


def main(out_dir):
    out_dir = Path(out_dir)
    words = json.load(sys.stdin)
    before, after = words["before"], words["after"]
    g = torch.Generator().manual_seed(11)
    l_model, g_model = tower(g, 64, "quick_gelu"), tower(g, 128, "gelu")
    l_sd = {k: v for k, v in l_model.state_dict().items() if k != "text_projection.weight"}
    g_sd = clip_text_reference.open_clip_layout(g_model.state_dict())
    save_file({**{"conditioner.embedders.0.transformer." + k: v.half().contiguous()
                  for k, v in l_sd.items()},
               **{"conditioner.embedders.1.model." + k: v.half().contiguous()
                  for k, v in g_sd.items()}}, str(out_dir / "sdxl_text.safetensors"))

    ti = {"clip_l": torch.randn(2, 64, generator=g), "clip_g": torch.randn(2, 128, generator=g)}
    sd15 = torch.randn(1, 64, generator=g)
    (out_dir / "embeddings").mkdir()
    save_file(ti, str(out_dir / "embeddings/tiny_ti.safetensors"))
    save_file({"emb_params": sd15}, str(out_dir / "embeddings/sd15.safetensors"))
    l_model = with_rows(l_model, torch.cat([ti["clip_l"], sd15]))
    g_model = with_rows(g_model, ti["clip_g"])
    expected = {}
    # "… embedding:tiny_ti …": two vectors in each tower.
    ti_ids = before + [VOCAB, VOCAB + 1] + after
    expected["ti_context"], expected["ti_pooled"] = encode(
        l_model, g_model, row(ti_ids, END), row(ti_ids, 0))
    # "… embedding:sd15 …": CLIP-L takes its one 768-style vector; CLIP-G (width 128) leaves
    # it out and pads the end, which here is the prompt without it.
    expected["sd15_context"], expected["sd15_pooled"] = encode(
        l_model, g_model, row(before + [VOCAB + 2] + after, END), row(before + after, 0))

    lora_sd, merges = lora(g, [l_model, g_model])
    save_file(lora_sd, str(out_dir / "te_lora.safetensors"))
    with torch.no_grad():
        for linear, delta in merges:
            linear.weight += delta
    expected["ti_lora_context"], expected["ti_lora_pooled"] = encode(
        l_model, g_model, row(ti_ids, END), row(ti_ids, 0))
    save_file({k: v.contiguous() for k, v in expected.items()},
              str(out_dir / "expected.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
