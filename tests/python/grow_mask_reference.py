"""GrowMask's reference: scipy.ndimage's grey dilation and erosion (what ComfyUI's node calls)
with the 3×3 cross or square footprint, repeated |expand| times, on a random 8-bit mask.

Usage: DIR -> writes DIR/input/grow.png (the mask in the red channel) and DIR/grow_expected.json
(each case's result as 8-bit values)."""
import json
import sys
from pathlib import Path

import numpy as np
import scipy.ndimage
from PIL import Image

CASES = [(2, True), (-2, True), (3, False), (-1, False)]


def main(out):
    rng = np.random.default_rng(5)
    levels = rng.integers(0, 256, size=(12, 17)).astype(np.uint8)
    levels[rng.random((12, 17)) < 0.6] = 0
    (out / "input").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([levels, levels // 2, levels // 3], axis=-1)).save(out / "input" / "grow.png")
    mask = levels.astype(np.float32) / 255.0
    expected = {}
    for expand, tapered in CASES:
        c = 0 if tapered else 1
        footprint = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
        result = mask
        for _ in range(abs(expand)):
            op = scipy.ndimage.grey_erosion if expand < 0 else scipy.ndimage.grey_dilation
            result = op(result, footprint=footprint)
        expected[f"{expand}_{tapered}"] = np.round(result * 255).astype(int).tolist()
    (out / "grow_expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
