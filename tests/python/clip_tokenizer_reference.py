"""transformers' CLIPTokenizer (what ComfyUI's SDTokenizer calls) built from OpenAI's BPE file
in PyPI open-clip-torch: vocab.json and merges.txt as OpenAI's SimpleTokenizer derives them.
Reads a JSON list of prompts on stdin, prints their token ids without start/end tokens.

Usage: BPE_GZ < prompts.json"""
import gzip
import json
import sys
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def main(bpe_gz):
    merges = gzip.open(bpe_gz).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    chars = bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
        (Path(d) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tok = CLIPTokenizer(str(Path(d) / "vocab.json"), str(Path(d) / "merges.txt"))
        prompts = json.load(sys.stdin)
        print(json.dumps([tok(p)["input_ids"][1:-1] for p in prompts]))


if __name__ == "__main__":
    main(sys.argv[1])
