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

Usage: DIR -> DIR/gemma3.safetensors, DIR/ltx_projection.safetensors, DIR/gemma3_io.safetensors."""
import io
import random
import sys
from pathlib import Path

import sentencepiece as spm
import torch
from diffusers.pipelines.ltx2.connectors import per_layer_masked_mean_norm
from safetensors.torch import save_file
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

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


if __name__ == "__main__":
    main()
