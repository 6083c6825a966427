"""Resizes random 8-bit images with Pillow's LANCZOS, as ComfyUI's lanczos scaling does, and
writes each case's input and output bytes: grey, RGB and RGBA (which Pillow resizes
premultiplied), shrinking, enlarging, one axis only, and a strong shrink whose filter widens.

Usage: pil_resample_reference.py OUT_DIR
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CASES = [  # (width, height, channels, new width, new height)
    (37, 23, 3, 16, 11),
    (16, 11, 3, 41, 29),
    (30, 20, 3, 30, 47),
    (30, 20, 3, 13, 20),
    (64, 48, 1, 7, 5),
    (25, 31, 4, 18, 40),
    (9, 9, 3, 9, 9),
]


def main(out):
    rng = np.random.default_rng(7)
    cases = []
    for i, (w, h, c, nw, nh) in enumerate(CASES):
        # Smooth gradients plus noise, so both ringing and clipping show.
        base = np.linspace(0, 255, w * h * c).reshape(h, w, c)
        pixels = np.clip(base + rng.normal(0, 60, (h, w, c)), 0, 255).astype(np.uint8)
        if c == 4:
            pixels[..., 3] = rng.choice([0, 40, 128, 255], (h, w))
        image = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
        resized = np.asarray(image.resize((nw, nh), resample=Image.Resampling.LANCZOS))
        (out / f"in{i}.raw").write_bytes(pixels.tobytes())
        (out / f"out{i}.raw").write_bytes(resized.tobytes())
        cases.append({"size": [w, h, c], "new": [nw, nh]})
    (out / "cases.json").write_text(json.dumps(cases))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
