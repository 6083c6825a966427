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


def decode_probes(sp):
    """Id sequences to decode: each probe's ids behind a start token, the unknown piece, every
    byte piece in order (valid and invalid UTF-8 runs), pieces that start with a space."""
    size = sp.get_piece_size()
    bos = [sp.bos_id()] if sp.bos_id() >= 0 else []
    probes = [bos + sp.encode(t, add_eos=False) for t in PROBES]
    probes.append([sp.unk_id()] + sp.encode("a cat", add_eos=False) + [sp.unk_id()])
    byte_ids = [i for i in range(size) if sp.is_byte(i)]
    if byte_ids:
        snow = [sp.piece_to_id(f"<0x{b:02X}>") for b in "❄ é".encode()]
        probes.append(byte_ids[0xC3:0xC5] + snow + byte_ids[0x80:0x82] + sp.encode("dog", add_eos=False))
        probes.append(byte_ids[0xE2:0xE3] + byte_ids[0x41:0x42] + snow[:2])
    spaced = [i for i in range(size) if sp.id_to_piece(i).startswith("\u2581") and not sp.is_control(i)]
    probes.append(spaced[:3] + [sp.eos_id()] + spaced[3:5])
    probes.append([sp.eos_id()] + spaced[5:7])
    return probes


def main(out):
    cases = []
    for name, vocab, settings in (
            ("plain", 120, T5),
            ("byte_fallback", 380, {**T5, "byte_fallback": True, "user_defined_symbols": ["<x1>"]}),
            ("gemma_bpe", 400, GEMMA)):
        data = train(vocab, **settings)
        (out / f"{name}.model").write_bytes(data)
        sp = spm.SentencePieceProcessor(model_proto=data, add_bos=False, add_eos=True)
        decodes = [ids for ids in decode_probes(sp)]
        cases.append({"model": f"{name}.model",
                      "probes": [{"text": t, "ids": sp.encode(t)} for t in PROBES],
                      "decodes": [{"ids": ids, "text": sp.decode(ids)} for ids in decodes]})
    json.dump(cases, open(out / "cases.json", "w"), ensure_ascii=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
