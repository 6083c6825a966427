"""Trains tiny SentencePiece models with PyPI sentencepiece and writes each model's bytes plus the
ids the C++ library gives for a set of probes: two unigram models with T5's settings (nmt_nfkc
normalization, pad 0 / eos 1 / unk 2, no BOS; the second with byte fallback and a user-defined
symbol), and a BPE model with Gemma's (no normalization, no dummy prefix, whitespace kept,
digits split, byte fallback, its turn markers as user-defined symbols; pad 0 / eos 1 / bos 2 /
unk 3).

Usage: spiece_reference.py OUT_DIR
"""
import io
import json
import random
import sys
from pathlib import Path

import sentencepiece as spm

WORDS = ("a cat the dog walks in snow slowly under blue sky river light camera pans "
         "over mountains night city rain neon reflections cinematic close-up portrait "
         "woman man smiles wind hair golden hour forest fog").split()

PROBES = [
    "a cat walks in the snow",
    "  leading and   extra   spaces  ",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ and ① ﬁne",
    "unknown: 🎬🎥 ∑∫ 漢字かな",
    "naïve café – résumé, cinematic!",
    "",
    "   ",
    "tab\tand\nnewline",
    "<x1>cat<x1> dog",
    "camera pans over neon city at night, rain reflections, close-up",
    "<start_of_turn>user\nA cat  in 2024 snow<end_of_turn>\n",
]


def train(vocab_size, **settings):
    """A model trained on the word corpus with `settings`, as bytes."""
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(400)]
    corpus += ["Ｆｕｌｌｗｉｄｔｈ ＡＢＣ ① ﬁle", "naïve café – résumé", "数字 123 ４５６"]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=vocab_size,
        character_coverage=0.9995, hard_vocab_limit=False, minloglevel=2, **settings)
    return model.getvalue()


T5 = {"model_type": "unigram", "normalization_rule_name": "nmt_nfkc", "pad_id": 0, "eos_id": 1,
      "unk_id": 2, "bos_id": -1}
GEMMA = {"model_type": "bpe", "normalization_rule_name": "identity", "add_dummy_prefix": False,
         "remove_extra_whitespaces": False, "split_digits": True, "byte_fallback": True,
         "user_defined_symbols": ["<start_of_turn>", "<end_of_turn>"], "pad_id": 0, "eos_id": 1,
         "bos_id": 2, "unk_id": 3}


def main(out):
    cases = []
    for name, vocab, settings in (
            ("plain", 120, T5),
            ("byte_fallback", 380, {**T5, "byte_fallback": True, "user_defined_symbols": ["<x1>"]}),
            ("gemma_bpe", 400, GEMMA)):
        data = train(vocab, **settings)
        (out / f"{name}.model").write_bytes(data)
        sp = spm.SentencePieceProcessor(model_proto=data, add_bos=False, add_eos=True)
        cases.append({"model": f"{name}.model",
                      "probes": [{"text": t, "ids": sp.encode(t)} for t in PROBES]})
    json.dump(cases, open(out / "cases.json", "w"), ensure_ascii=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
