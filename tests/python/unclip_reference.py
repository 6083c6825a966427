"""ComfyUI's unCLIP conditioning for SDXL, restated (`model_base.unclip_adm`, `sdxl_pooled`,
`CLIPEmbeddingNoiseAugmentation` with the squared-cosine schedule of 1000 steps), on the CPU:
each image embedding noised to round(999 · augmentation) with `torch.manual_seed(seed − 10)`'s
draw and weighted; several summed and noised at level 0 with the default generator's next draw.
SDXL keeps the first D values (D = the embedding width; SDXL's noise augmentor's is 1280).

Usage: DIR -> writes DIR/unclip_io.safetensors: for each case, the embeddings, their
(strength, augmentation) rows, the seed and the pooled vector."""
import math
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def schedule():
    alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = np.array([min(1 - alpha_bar((i + 1) / 1000) / alpha_bar(i / 1000), 0.999)
                      for i in range(1000)])
    alphas_cumprod = np.cumprod(1.0 - betas, axis=0)
    return (torch.tensor(np.sqrt(alphas_cumprod), dtype=torch.float32),
            torch.tensor(np.sqrt(1.0 - alphas_cumprod), dtype=torch.float32))


def noise_augment(x, level, seed=None):
    signal, sigma = schedule()
    if seed is None:
        noise = torch.randn_like(x)
    else:
        noise = torch.randn(x.size(), dtype=x.dtype, generator=torch.manual_seed(seed))
    return signal[level] * x + sigma[level] * noise


def unclip_pooled(images, seed):
    """`images`: (embeddings [n, D], strength, augmentation) per unCLIPConditioning node."""
    outs = []
    for embeds, strength, augmentation in images:
        for row in embeds:
            level = round(999 * augmentation)
            outs.append(noise_augment(row[None], level, seed - 10) * strength)
    if len(outs) == 1:
        return outs[0]
    return noise_augment(torch.stack(outs).sum(0), 0)


def main(out):
    g = torch.Generator().manual_seed(11)
    io = {}
    cases = {
        "one": ([(torch.randn(1, 24, generator=g), 0.75, 0.0)], 900749379955168),
        "two": ([(torch.randn(1, 24, generator=g), 0.75, 0.0),
                 (torch.randn(2, 24, generator=g), -1.5, 0.3)], 12),
    }
    for name, (images, seed) in cases.items():
        io[f"{name}_embeds"] = torch.cat([e for e, _, _ in images])
        io[f"{name}_params"] = torch.tensor([[s, a] for e, s, a in images for _ in range(len(e))])
        io[f"{name}_seed"] = torch.tensor([seed])
        io[f"{name}_pooled"] = unclip_pooled(images, seed)
    save_file({k: v.contiguous() for k, v in io.items()}, str(Path(out) / "unclip_io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
