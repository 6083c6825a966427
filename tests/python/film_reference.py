"""FILM's reference (no FILM implementation is on PyPI): the network of Reda et al., "FILM: Frame
Interpolation for Large Motion" (ECCV 2022), written out here in plain PyTorch with the layout and
key names of ComfyUI's `film_net.py` and run as its FrameInterpolate runs FILM (no padding; the
flows of a pair computed once, then one fusion per timestep k/multiplier).

The network is narrower than the released one (`FILTERS` features at the first level instead of
64, smaller flow estimators) but has all of its levels: a 7-level image pyramid, a 4-layer shared
feature extractor, flow estimators shared by the 4 coarsest levels, fusion over the 5 finest.

Usage: DIR -> DIR/film_net.safetensors (random weights) and DIR/io.safetensors with `frames`
[3, 64, 96, 3] and `film_x3` (multiplier 3)."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

FILTERS = 8
FLOW_CONVS = (2, 2, 2, 2)
FLOW_FILTERS = (8, 8, 16, 16)
LEVELS, FUSION_LEVELS, SUB_LEVELS, SPECIALIZED = 7, 5, 4, 3


def feature_channels(level):
    """Channels of the feature pyramid at `level`: the extractor's layers that land there."""
    return sum(FILTERS << j for j in range(min(level + 1, SUB_LEVELS)))


def make_weights(seed):
    torch.manual_seed(seed)
    shapes = {}

    def conv(name, cin, cout, k):
        shapes[f"{name}.conv.weight"] = (cout, cin, k, k)
        shapes[f"{name}.conv.bias"] = (cout,)

    cin = 3
    for i in range(SUB_LEVELS):
        conv(f"extract.extract_sublevels.convs.{i}.0", cin, FILTERS << i, 3)
        conv(f"extract.extract_sublevels.convs.{i}.1", FILTERS << i, FILTERS << i, 3)
        cin = FILTERS << i

    def estimator(name, level, index):
        cin = 2 * feature_channels(level)
        for k in range(FLOW_CONVS[index]):
            conv(f"{name}._convs.{k}", cin, FLOW_FILTERS[index], 3)
            cin = FLOW_FILTERS[index]
        conv(f"{name}._convs.{FLOW_CONVS[index]}", cin, FLOW_FILTERS[index] // 2, 1)
        conv(f"{name}._convs.{FLOW_CONVS[index] + 1}", FLOW_FILTERS[index] // 2, 2, 1)

    estimator("predict_flow._predictor", SPECIALIZED, SPECIALIZED)
    for level in range(SPECIALIZED):
        estimator(f"predict_flow._predictors.{SPECIALIZED - 1 - level}", level, level)

    def aligned_channels(level):
        return 2 * (3 + feature_channels(level)) + 4

    below = aligned_channels(SUB_LEVELS)
    for k, level in enumerate(reversed(range(SUB_LEVELS))):
        width = FILTERS << min(level, SPECIALIZED)
        conv(f"fuse.convs.{k}.0", below, width, 2)
        conv(f"fuse.convs.{k}.1", aligned_channels(level) + width, width, 3)
        conv(f"fuse.convs.{k}.2", width, width, 3)
        below = width
    shapes["fuse.output_conv.weight"] = (3, FILTERS, 1, 1)
    shapes["fuse.output_conv.bias"] = (3,)
    weights = {}
    for name, shape in shapes.items():
        fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
        gain = 0.8 / fan_in ** 0.5
        if shape[0] == 2 or name.startswith("fuse.output_conv"):
            # Flow outputs double at each of 6 finer levels, and the fused frame should stay
            # mostly inside 0…1: both get small gains.
            gain *= 0.05 if shape[0] == 2 else 0.2
        weights[name] = torch.randn(shape) * gain
    weights["fuse.output_conv.bias"] = torch.full((3,), 0.5)
    return weights


def film_conv(p, name, x, activation=True):
    weight, bias = p[f"{name}.conv.weight"], p[f"{name}.conv.bias"]
    if weight.shape[-1] % 2 == 0:
        y = F.conv2d(F.pad(x, (0, 1, 0, 1)), weight, bias)
    else:
        y = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)
    return F.leaky_relu(y, 0.2) if activation else y


def pyramids(p, frame):
    images = [frame]
    for _ in range(1, LEVELS):
        images.append(F.avg_pool2d(images[-1], 2))
    extracted = []
    for i, image in enumerate(images):
        outs, x = [], image
        for layer in range(min(LEVELS - i, SUB_LEVELS)):
            if layer:
                x = F.avg_pool2d(x, 2)
            x = film_conv(p, f"extract.extract_sublevels.convs.{layer}.0", x)
            x = film_conv(p, f"extract.extract_sublevels.convs.{layer}.1", x)
            outs.append(x)
        extracted.append(outs)
    features = [torch.cat([extracted[i - j][j] for j in range(min(i + 1, SUB_LEVELS))], 1) for i in range(LEVELS)]
    return images, features


def warp(image, flow):
    """Backward warp by `flow` pixels; pixel centres in normalized coordinates."""
    _, _, h, w = flow.shape
    xs = (2 * torch.arange(w, dtype=torch.float32) + 1) / w - 1
    ys = (2 * torch.arange(h, dtype=torch.float32) + 1) / h - 1
    gx = xs.view(1, 1, w) + flow[:, 0] * (2 / w)
    gy = ys.view(1, h, 1) + flow[:, 1] * (2 / h)
    return F.grid_sample(image, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border", align_corners=False)


def estimate(p, level, a, b):
    name = f"predict_flow._predictors.{SPECIALIZED - 1 - level}" if level < SPECIALIZED else "predict_flow._predictor"
    index = min(level, SPECIALIZED)
    x = torch.cat([a, b], 1)
    for k in range(FLOW_CONVS[index] + 2):
        x = film_conv(p, f"{name}._convs.{k}", x, activation=k < FLOW_CONVS[index] + 1)
    return x


def flow_pyramid(p, fa, fb):
    up = lambda v, like: F.interpolate(v, size=like.shape[2:], mode="bilinear") * 2
    v = estimate(p, LEVELS - 1, fa[-1], fb[-1])
    residuals = {LEVELS - 1: v}
    for level in reversed(range(LEVELS - 1)):
        v = up(v, fa[level])
        residuals[level] = estimate(p, level, fa[level], warp(fb[level], v))
        v = v + residuals[level]
    flows = {LEVELS - 1: residuals[LEVELS - 1]}
    for level in reversed(range(LEVELS - 1)):
        flows[level] = up(flows[level + 1], residuals[level]) + residuals[level]
    return [flows[level] for level in range(LEVELS)]


def between(p, pyr0, pyr1, t):
    (images0, features0), (images1, features1) = pyr0, pyr1
    forward, backward = flow_pyramid(p, features0, features1), flow_pyramid(p, features1, features0)
    aligned = []
    for level in range(FUSION_LEVELS):
        back, fwd = backward[level] * t, forward[level] * (1 - t)
        aligned.append(torch.cat([
            warp(torch.cat([images0[level], features0[level]], 1), back),
            warp(torch.cat([images1[level], features1[level]], 1), fwd),
            back, fwd], 1))
    net = aligned[-1]
    for k, level in enumerate(reversed(range(SUB_LEVELS))):
        net = film_conv(p, f"fuse.convs.{k}.0", F.interpolate(net, size=aligned[level].shape[2:], mode="nearest"), False)
        net = film_conv(p, f"fuse.convs.{k}.2", film_conv(p, f"fuse.convs.{k}.1", torch.cat([aligned[level], net], 1)))
    return F.conv2d(net, p["fuse.output_conv.weight"], p["fuse.output_conv.bias"])


def main():
    out_dir = Path(sys.argv[1])
    p = make_weights(0)
    save_file({k: v.contiguous() for k, v in p.items()}, str(out_dir / "film_net.safetensors"))
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(96.0), indexing="ij")
    frames = torch.stack([
        torch.stack([
            0.5 + 0.4 * torch.sin((xs + 4 * f) / 10) * torch.cos(ys / 15),
            0.5 + 0.3 * torch.cos((xs - 3 * f + ys) / 12),
            torch.full_like(xs, 0.3 + 0.2 * f),
        ], -1) for f in range(3)
    ]).clamp(0, 1)
    multiplier = 3
    with torch.no_grad():
        pyrs = [pyramids(p, frames[i:i + 1].movedim(-1, 1)) for i in range(3)]
        out = [frames[0:1]]
        for i in range(2):
            for k in range(1, multiplier):
                out.append(between(p, pyrs[i], pyrs[i + 1], k / multiplier).movedim(1, -1))
            out.append(frames[i + 1:i + 2])
        result = torch.cat(out).clamp(0, 1)
    made = result[1:3]
    assert ((made > 0) & (made < 1)).float().mean() > 0.5, "most outputs clamped"
    assert (made[0] - made[1]).abs().mean() > 1e-3, "the timestep changes nothing"
    save_file({"frames": frames.contiguous(), "film_x3": result.contiguous()}, str(out_dir / "io.safetensors"))


if __name__ == "__main__":
    main()
