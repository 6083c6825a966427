"""ComfyUI's own Wan 2.1 T2V 1.3B diffusion model (`comfy/ldm/wan/model.py`), random fp16 (or
bf16) weights, timed on this GPU at benches/wan_dit.rs's inputs: one CFG step (cond + uncond on
one latent, the template's two prompts padded to 512 tokens), 832×480 at 33 and 81 frames. It gives
the issue's ComfyUI baseline on the machine our benches ran on, rather than on the one the
issue's figures came from.

ComfyUI's source is not part of this repository. Extract `comfy/` and `comfyui_version.py` of the
0.3.64 release (commit 63722199 of comfyanonymous/ComfyUI) into a folder and pass that folder.
As ComfyUI's UNETLoader does for an fp16 file on this GPU, the model uses
`comfy.ops.disable_weight_init` layers in fp16, and attention is whatever
`optimized_attention` picks here (PyTorch SDPA without xformers or sage-attention).

ComfyUI computes Wan in fp16 on any GPU of compute capability 8 or more, whatever the file
holds; `--dtype bf16` times what its `--bf16-unet` flag would run. `--vace` times its
`VaceWanModel` (the VACE 1.3B layout: 15 control blocks, 96 control channels) with one control
at strength 1, as benches/wan_vace.rs does.

Usage: python3 comfyui_wan.py COMFYUI_DIR [--dtype fp16|bf16] [--vace] [FRAMES...]
  (a tiny model when no GPU is present)
"""
import argparse
import sys
import time

import torch

CUDA = torch.cuda.is_available()
parser = argparse.ArgumentParser()
parser.add_argument("comfyui_dir")
parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16")
parser.add_argument("--vace", action="store_true")
parser.add_argument("frames", nargs="*", type=int)
ARGS = parser.parse_args()
sys.path.insert(0, ARGS.comfyui_dir)
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = not CUDA  # ComfyUI's --cpu, read when model_management loads
import comfy.ldm.modules.attention as comfy_attention  # noqa: E402
import comfy.ops  # noqa: E402
from comfy.ldm.wan.model import VaceWanModel, WanModel  # noqa: E402
from comfyui_version import __version__  # noqa: E402

# The template's prompts: about 20 and 110 UMT5 tokens (benches/common/wan_1_3b.rs).
PROMPT_TOKENS = (20, 110)
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16}[ARGS.dtype] if CUDA else torch.float32


def model():
    size = dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30) if CUDA else \
        dict(dim=256, ffn_dim=512, num_heads=2, num_layers=2)
    common = dict(in_dim=16, out_dim=16, freq_dim=256, text_dim=4096, device=DEVICE, dtype=DTYPE,
                  operations=comfy.ops.disable_weight_init, **size)
    if ARGS.vace:
        layers = size["num_layers"] // 2
        net = VaceWanModel(vace_layers=layers, vace_in_dim=96, **common)
    else:
        net = WanModel(model_type="t2v", **common)
    # disable_weight_init leaves the parameters uninitialised, as a checkpoint would fill them.
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.normal_(1.0 if "norm" in name else 0.0, 0.02)
    return net.eval()


def inputs(frames):
    torch.manual_seed(frames)
    latent_frames = (frames - 1) // 4 + 1
    height, width = (60, 104) if CUDA else (8, 8)
    x = torch.randn(1, 16, latent_frames, height, width, device=DEVICE, dtype=DTYPE).repeat(2, 1, 1, 1, 1)
    context = torch.zeros(2, 512, 4096, device=DEVICE, dtype=DTYPE)
    for item, tokens in enumerate(PROMPT_TOKENS):
        context[item, :tokens] = torch.randn(tokens, 4096, device=DEVICE, dtype=DTYPE)
    t = torch.tensor([900.0, 900.0], device=DEVICE)
    kwargs = {}
    if ARGS.vace:
        latents = torch.randn(1, 1, 32, latent_frames, height, width, device=DEVICE, dtype=DTYPE)
        mask = torch.ones(1, 1, 64, latent_frames, height, width, device=DEVICE, dtype=DTYPE)
        kwargs = dict(vace_context=torch.cat([latents, mask], 2).repeat(2, 1, 1, 1, 1, 1),
                      vace_strength=[1.0])
    return x, t, context, kwargs


def seconds_per_step(net, frames, reps=4):
    x, t, context, kwargs = inputs(frames)
    net(x, t, context, **kwargs)
    if CUDA:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        out = net(x, t, context, **kwargs)
    if CUDA:
        torch.cuda.synchronize()
    assert out.shape == x.shape and torch.isfinite(out).all()
    return (time.perf_counter() - start) / reps


def main():
    frames = ARGS.frames or ([33, 81] if CUDA else [5])
    name = torch.cuda.get_device_name() if CUDA else "CPU (tiny model, a smoke test)"
    model_class = "VaceWanModel" if ARGS.vace else "WanModel"
    print(f"ComfyUI {__version__} {model_class}, {name}, torch {torch.__version__}, "
          f"attention {comfy_attention.optimized_attention.__name__}, {DTYPE}")
    print("| frames | s/step (CFG, batch 2) | peak GPU GB |")
    print("| --- | --- | --- |")
    with torch.inference_mode():
        net = model()
        for f in frames:
            if CUDA:
                torch.cuda.reset_peak_memory_stats()
            s = seconds_per_step(net, f)
            peak = torch.cuda.max_memory_allocated() / 1e9 if CUDA else 0.0
            print(f"| {f} | {s:.3f} | {peak:.1f} |")


if __name__ == "__main__":
    main()
