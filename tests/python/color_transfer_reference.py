"""ColorTransfer's reference: ComfyUI's node (`comfy_extras/nodes_post_processing.py`) written out
over PyPI kornia 0.9's `rgb_to_lab` / `lab_to_rgb`, which the node calls, for every method and
source-statistics mode, on a three-frame target and a one- and a two-frame reference.

Usage: DIR -> writes DIR/color_transfer.safetensors: the inputs and `{method}_{mode}_{ref}`
outputs (ref: 1 or 2 frames; strength 1, and 0.6 for the `_blend` cases)."""
import sys
from pathlib import Path

import kornia
import torch
from safetensors.torch import save_file

EPS = 1e-6
METHODS = ("reinhard_lab", "mkl_lab", "histogram")
MODES = ("per_frame", "uniform", "target_frame")
TARGET_INDEX = 2


def to_lab(images, i):
    return kornia.color.rgb_to_lab(images[i:i + 1].permute(0, 3, 1, 2))


def pool_stats(images, reinhard):
    n, c = images.shape[0], images.shape[3]
    hw = images.shape[1] * images.shape[2]
    mean = torch.zeros(c, 1)
    for i in range(n):
        mean += to_lab(images, i).view(c, -1).mean(dim=-1, keepdim=True)
    mean /= n
    acc = torch.zeros(c, 1 if reinhard else c)
    for i in range(n):
        centered = to_lab(images, i).view(c, -1) - mean
        acc += (centered * centered).mean(dim=-1, keepdim=True) if reinhard else centered @ centered.T / hw
    return (mean, torch.sqrt(acc / n).clamp_min_(EPS)) if reinhard else (mean, acc / n)


def frame_stats(flat, hw, reinhard):
    mean = flat.mean(dim=-1, keepdim=True)
    if reinhard:
        return mean, flat.std(dim=-1, keepdim=True, unbiased=False).clamp_min_(EPS)
    centered = flat - mean
    return mean, centered @ centered.T / hw


def mkl_matrix(cov_s, cov_r):
    val_s, vec_s = torch.linalg.eigh(cov_s)
    sqrt_s = torch.sqrt(val_s.clamp_min(0)).clamp_min_(EPS)
    scaled = vec_s * sqrt_s.unsqueeze(0)
    val_m, vec_m = torch.linalg.eigh(scaled.T @ cov_r @ scaled)
    inv = vec_s * (1.0 / sqrt_s).unsqueeze(0)
    half = (vec_m * torch.sqrt(val_m.clamp_min(0)).unsqueeze(0)) @ vec_m.T
    return inv @ half @ inv.T


def lab_transform(target, ref, mode, reinhard):
    b, h, w, c = target.shape
    single = ref.shape[0] == 1
    if single or mode != "per_frame":
        ref_mean, ref_sc = pool_stats(ref, reinhard)
    if mode != "per_frame":
        if mode == "target_frame":
            s_mean, s_sc = frame_stats(to_lab(target, min(TARGET_INDEX, b - 1)).view(c, -1), h * w, reinhard)
        else:
            s_mean, s_sc = pool_stats(target, reinhard)
        if reinhard:
            scale = ref_sc / s_sc
            return lambda src, i: src * scale + (ref_mean - scale * s_mean)
        t = mkl_matrix(s_sc, ref_sc)
        return lambda src, i: t @ src + (ref_mean - t @ s_mean)

    def per_frame(src, i):
        s_mean, s_sc = frame_stats(src, h * w, reinhard)
        if single:
            r_mean, r_sc = ref_mean, ref_sc
        else:
            ri = min(i, ref.shape[0] - 1)
            r_mean, r_sc = frame_stats(to_lab(ref, ri).view(c, -1), ref.shape[1] * ref.shape[2], reinhard)
        centered = src - s_mean
        if reinhard:
            return centered * (r_sc / s_sc) + r_mean
        return mkl_matrix(centered @ centered.T / (h * w), r_sc) @ centered + r_mean

    return per_frame


def histogram_lut(src, ref, bins=256):
    def cdf(x):
        hist = torch.zeros(x.shape[0], bins).scatter_add_(1, (x * (bins - 1)).long().clamp(0, bins - 1), torch.ones_like(x))
        c = hist.cumsum(1)
        return c / c[:, -1:]
    return torch.searchsorted(cdf(ref), cdf(src)).clamp_max_(bins - 1).float() / (bins - 1)


def pooled_cdf(images, bins=256):
    c = images.shape[3]
    hist = torch.zeros(c, bins)
    for i in range(images.shape[0]):
        frame = images[i].permute(2, 0, 1).reshape(c, -1)
        hist.scatter_add_(1, (frame * (bins - 1)).long().clamp(0, bins - 1), torch.ones_like(frame))
    cdf = hist.cumsum(1)
    return cdf / cdf[:, -1:]


def color_transfer(target, ref, method, mode, strength):
    b, h, w, c = target.shape
    out = torch.empty(b, h, w, c)
    if method == "histogram":
        lut = None
        if mode != "per_frame":
            r_cdf = pooled_cdf(ref)
            ti = min(TARGET_INDEX, b - 1)
            s_cdf = pooled_cdf(target[ti:ti + 1] if mode == "target_frame" else target)
            lut = torch.searchsorted(r_cdf, s_cdf).clamp_max_(255).float() / 255.0
        for i in range(b):
            src = target[i].permute(2, 0, 1)
            flat = src.reshape(c, -1)
            table = lut if lut is not None else histogram_lut(flat, ref[min(i, ref.shape[0] - 1)].permute(2, 0, 1).reshape(c, -1))
            matched = table.gather(1, (flat * 255).long().clamp(0, 255)).view(c, h, w)
            result = matched if strength == 1.0 else torch.lerp(src, matched, strength)
            out[i] = result.permute(1, 2, 0).clamp_(0, 1)
        return out
    transform = lab_transform(target, ref, mode, method == "reinhard_lab")
    for i in range(b):
        src = to_lab(target, i)
        corrected = transform(src.view(c, -1), i).view(1, c, h, w)
        if strength != 1.0:
            corrected = torch.lerp(src, corrected, strength)
        out[i] = kornia.color.lab_to_rgb(corrected).squeeze(0).permute(1, 2, 0).clamp_(0, 1)
    return out


def main(out_dir):
    g = torch.Generator().manual_seed(11)
    # Colored gradients with noise: each frame's own cast, so the statistics differ by frame.
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 32), indexing="ij")
    base = torch.stack([xs, ys, 1 - xs * ys], -1)
    target = torch.stack([(base * torch.tensor(tint) + 0.15 * torch.rand(24, 32, 3, generator=g)).clamp(0, 1)
                          for tint in ([0.9, 0.6, 0.4], [0.7, 0.8, 0.5], [0.5, 0.5, 0.9])])
    ref = torch.stack([(base.flip(1) * torch.tensor(tint) + 0.2 * torch.rand(24, 32, 3, generator=g)).clamp(0, 1)
                       for tint in ([0.3, 0.9, 0.7], [0.95, 0.4, 0.2])])
    io = {"target": target, "ref": ref}
    with torch.no_grad():
        for method in METHODS:
            for mode in MODES:
                for frames in (1, 2):
                    io[f"{method}_{mode}_{frames}"] = color_transfer(target, ref[:frames], method, mode, 1.0)
            io[f"{method}_per_frame_2_blend"] = color_transfer(target, ref, method, "per_frame", 0.6)
    save_file({k: v.contiguous() for k, v in io.items()}, str(Path(out_dir) / "color_transfer.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
