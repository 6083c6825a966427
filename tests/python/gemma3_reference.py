"""A tiny Gemma 3 text decoder from PyPI transformers (Gemma3ForCausalLM) with ComfyUI's Gemma 3
settings (RoPE θ 1e6 with linear scaling 8 on every sixth layer, θ 1e4 on the others, a
1024-token sliding window, queries scaled by 1/√head_dim), every parameter randomized and saved
under its own key names (which ComfyUI's Gemma 3 files keep, without `lm_head`). Seven layers,
so the sixth attends globally and the seventh slides again; 1030 tokens, so the window cuts.

Also LTX-2's text features of those hidden states: diffusers' `per_layer_masked_mean_norm`
(every token valid, which is ComfyUI's plain per-layer statistics) and a random
`text_embedding_projection.aggregate_embed`, saved as an LTX checkpoint would hold it. The file
carries a tiny SentencePiece BPE model with Gemma's settings as `spiece_model`, and the features
of PROMPT tokenized as ComfyUI does (the start token 2, the pieces, no end token).

Also TextGenerate's text (DIR/generation.json): ComfyUI's Gemma tokenization (its chat template,
`<end_of_turn>` split out, the first token of such a text dropped as SDTokenizer does, the
tokens left-padded to 1024 and all attended), then
tokens chosen greedily or by ComfyUI's `sample_token` from a seeded CPU generator over this
model's logits, until `<end_of_turn>` (106) or the length limit, decoded without 106; and for
the prompt past the sliding window, the logits of its last token and of each generated one
(DIR/window_logits.safetensors).

Usage: DIR -> DIR/gemma3.safetensors, DIR/ltx_projection.safetensors, DIR/gemma3_io.safetensors,
DIR/generation.json."""
import io
import json
import math
import re
import random
import sys
from pathlib import Path

import sentencepiece as spm
import torch
from diffusers.pipelines.ltx2.connectors import per_layer_masked_mean_norm
from safetensors.torch import save_file
from transformers import (Gemma3Config, Gemma3ForCausalLM, Gemma3TextConfig, SiglipVisionConfig,
                          SiglipVisionModel)
from transformers.models.gemma3.modeling_gemma3 import Gemma3MultiModalProjector

HIDDEN, LAYERS, TOKENS, CAPTION = 32, 7, 1030, 24
PROMPT = "a cat walks in the snow, camera pans over the river"
WORDS = "a cat the dog walks in snow slowly under blue sky river camera pans over city rain".split()


def tokenizer():
    """A BPE SentencePiece model with Gemma's settings (bos 2), as bytes."""
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(300)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=320, model_type="bpe",
        normalization_rule_name="identity", add_dummy_prefix=False,
        remove_extra_whitespaces=False, byte_fallback=True, pad_id=0, eos_id=1, bos_id=2,
        unk_id=3, hard_vocab_limit=False, minloglevel=2)
    return model.getvalue()


END_OF_TURN, IMAGE_TOKEN = 106, 262144
TEMPLATE = ("<start_of_turn>system\nYou are a helpful assistant.<end_of_turn>\n"
            "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n")
IMAGE_TEMPLATE = ("<start_of_turn>system\nYou are a helpful assistant.<end_of_turn>\n"
                  "<start_of_turn>user\n\n<image_soft_token>{}<end_of_turn>\n\n<start_of_turn>model\n")
SPECIAL = {"<image_soft_token>": IMAGE_TOKEN, "<end_of_turn>": END_OF_TURN}


def comfy_ids(sp, text):
    """Gemma3_12BTokenizer as TextGenerate calls it: the start token, then the text's pieces, the
    whole padded on the left with 0 to 1024 tokens (the tokenizer does not pass TextGenerate's
    `min_length=1` on). A text holding `<end_of_turn>` is encoded around it without a start
    token, and the slice meant to drop that start token drops its first token."""
    parts = [p for p in re.split("(<image_soft_token>|<end_of_turn>)", text) if p]
    if len(parts) == 1 and parts[0] not in SPECIAL:
        ids = [2] + sp.encode(text)
    else:
        pieces = []
        for part in parts:
            pieces += [SPECIAL[part]] if part in SPECIAL else sp.encode(part)
        ids = [2] + pieces[1:]
    return [0] * max(0, 1024 - len(ids)) + ids


def sample_token(logits, s, history, generator):
    """ComfyUI's BaseGenerate.sample_token for logits [1, vocab]."""
    if s is None or s["temperature"] == 0.0:
        return int(torch.argmax(logits, dim=-1))
    logits = logits.clone()
    if history and (s["repetition_penalty"] != 1.0 or s["presence_penalty"] != 0.0):
        ids = torch.tensor(sorted(set(history)))
        picked = logits[:, ids]
        if s["repetition_penalty"] != 1.0:
            picked = torch.where(picked < 0, picked * s["repetition_penalty"],
                                 picked / s["repetition_penalty"])
        if s["presence_penalty"] != 0.0:
            picked = picked - s["presence_penalty"]
        logits[:, ids] = picked
    if s["temperature"] != 1.0:
        logits = logits / s["temperature"]
    lowest = torch.finfo(logits.dtype).min
    indices = None
    if s["top_k"] > 0:
        logits, indices = torch.topk(logits, min(s["top_k"], logits.shape[-1]))
    if s["min_p"] > 0.0:
        probs = torch.softmax(logits, dim=-1)
        logits[probs < s["min_p"] * probs.max(dim=-1, keepdim=True).values] = lowest
    if s["top_p"] < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        drop = torch.cumsum(torch.softmax(ordered, dim=-1), dim=-1) > s["top_p"]
        drop[..., 0] = False
        logits[torch.zeros_like(logits, dtype=torch.bool).scatter_(1, order, drop)] = lowest
    draw = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
    return int(draw if indices is None else indices.gather(1, draw))


def vision(g):
    """A tiny SigLIP tower and Gemma 3 projector with ComfyUI's settings: LayerNorm ε 1e-5 (its
    CLIPVision; transformers' Gemma 3 uses 1e-6) and the projector's RMSNorm ε 1e-6 (the text
    config's; transformers takes the vision one), 16 heads, 32² patches pooled to 16²."""
    config = SiglipVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                num_attention_heads=16, image_size=64, patch_size=2,
                                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-5,
                                vision_use_head=False)
    tower = SiglipVisionModel(config).eval()
    projector = Gemma3MultiModalProjector(Gemma3Config(
        text_config=Gemma3TextConfig(hidden_size=HIDDEN), vision_config=config,
        mm_tokens_per_image=256)).eval()
    projector.mm_soft_emb_norm.eps = 1e-6
    with torch.no_grad():
        for p in list(tower.parameters()) + list(projector.parameters()):
            noise = torch.randn(p.shape, generator=g)
            p.copy_(0.1 * noise if p.dim() == 1 else noise / p.shape[-1] ** 0.5)
    # ComfyUI's key names (transformers 5 drops the `vision_model.` level).
    weights = {"vision_model." + k.removeprefix("vision_model."): v.contiguous()
               for k, v in tower.state_dict().items()}
    weights.update({f"multi_modal_projector.{k}": v.contiguous()
                    for k, v in projector.state_dict().items()})
    return tower, projector, weights


def comfy_pixels(image, size):
    """Gemma3_Tokenizer's area scaling to about 896² pixels, then clip_preprocess(size, mean and
    std 0.5, crop)."""
    x = image.movedim(-1, 1)
    scale = math.sqrt(896 * 896 / (x.shape[3] * x.shape[2]))
    x = torch.nn.functional.interpolate(x, size=(round(x.shape[2] * scale), round(x.shape[3] * scale)),
                                        mode="area")
    s = size / min(x.shape[2], x.shape[3])
    x = torch.nn.functional.interpolate(x, size=(round(s * x.shape[2]), round(s * x.shape[3])),
                                        mode="bicubic", antialias=True)
    h, w = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
    x = torch.clip(255.0 * x[:, :, h:h + size, w:w + size], 0, 255).round() / 255.0
    return (x - 0.5) / 0.5


def generation_cases(model, sp, soft_tokens):
    """TextGenerate on the tiny model: greedy and sampled, with and without the template, and a
    prompt past the sliding window so generated tokens see only its last 1024 keys."""
    sampled = {"temperature": 0.9, "top_k": 20, "top_p": 0.9, "min_p": 0.05,
               "repetition_penalty": 1.3, "presence_penalty": 0.5, "seed": 7}
    whole_vocab = {"temperature": 1.2, "top_k": 0, "top_p": 0.8, "min_p": 0.02,
                   "repetition_penalty": 1.0, "presence_penalty": 0.0, "seed": 2**63 + 5}
    cases = [(PROMPT, True, None, 12, False), (PROMPT, False, sampled, 16, False),
             (PROMPT + "<end_of_turn>", False, whole_vocab, 16, False),
             (" ".join([PROMPT] * 60), False, None, 6, False), (PROMPT, True, sampled, 10, True)]
    out, window_logits = [], None
    embed = model.model.embed_tokens
    for prompt, template, sampling, max_length, with_image in cases:
        chat = IMAGE_TEMPLATE if with_image else TEMPLATE
        ids = comfy_ids(sp, chat.format(prompt) if template else prompt)
        generator = torch.Generator().manual_seed(sampling["seed"]) if sampling else None
        tokens = []
        with torch.no_grad():
            if with_image:
                at = ids.index(IMAGE_TOKEN)
                prefix = torch.cat([embed(torch.tensor([ids[:at]])), soft_tokens[None],
                                    embed(torch.tensor([ids[at + 1:]]))], dim=1)
            else:
                prefix = embed(torch.tensor([ids]))
            for _ in range(max_length):
                x = torch.cat([prefix, embed(torch.tensor([tokens], dtype=torch.long))], dim=1)
                logits = model(inputs_embeds=x).logits[:, -1]
                tokens.append(sample_token(logits, sampling, tokens, generator))
                if tokens[-1] == END_OF_TURN:
                    break
        text = sp.decode([t for t in tokens if t not in (END_OF_TURN, IMAGE_TOKEN)])
        if len(ids) > 1024:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids + tokens])).logits[0, len(ids) - 1:]
            window_logits = {"ids": torch.tensor([ids + tokens]), "logits": logits.contiguous()}
        out.append({"prompt": prompt, "template": template, "sampling": sampling,
                    "max_length": max_length, "prompt_tokens": len(ids), "tokens": tokens,
                    "text": text, "image": with_image})
    return out, window_logits


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    spiece = tokenizer()
    vocab = spm.SentencePieceProcessor(model_proto=spiece).get_piece_size()
    config = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8,
        sliding_window=1024, max_position_embeddings=4096, rms_norm_eps=1e-6,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
        attn_implementation="eager")
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(0.1 * noise if p.dim() == 1 else noise / p.shape[-1] ** 0.5)
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("lm_head")}
    tower, projector, vision_weights = vision(torch.Generator().manual_seed(5))
    weights.update(vision_weights)
    weights["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    save_file(weights, str(out / "gemma3.safetensors"))

    projection = torch.randn(CAPTION, HIDDEN * (LAYERS + 1), generator=g) / 16.0
    save_file({"text_embedding_projection.aggregate_embed.weight": projection},
              str(out / "ltx_projection.safetensors"))

    def features(ids):
        with torch.no_grad():
            states = model.model(input_ids=ids, output_hidden_states=True).hidden_states
        stacked = torch.stack(states, dim=-1)  # [1, tokens, hidden, layers + 1]
        normed = per_layer_masked_mean_norm(stacked, torch.tensor([ids.shape[1]]), "cpu")
        return stacked, normed @ projection.T

    ids = torch.randint(0, vocab, (1, TOKENS), generator=g)
    stacked, projected = features(ids)
    prompt_ids = [2] + spm.SentencePieceProcessor(model_proto=spiece).encode(PROMPT)
    _, prompt_features = features(torch.tensor([prompt_ids]))
    save_file({"ids": ids, "states": stacked.contiguous(), "features": projected,
               "prompt_features": prompt_features}, str(out / "gemma3_io.safetensors"))
    image = torch.rand(1, 24, 40, 3, generator=g)
    with torch.no_grad():
        soft_tokens = projector(tower(comfy_pixels(image, 64)).last_hidden_state)[0]
    save_file({"image": image, "soft_tokens": soft_tokens.contiguous()},
              str(out / "generation_image.safetensors"))
    cases, window_logits = generation_cases(model, spm.SentencePieceProcessor(model_proto=spiece),
                                            soft_tokens)
    json.dump(cases, open(out / "generation.json", "w"), indent=1)
    save_file(window_logits, str(out / "window_logits.safetensors"))


if __name__ == "__main__":
    main()
