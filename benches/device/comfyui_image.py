"""ComfyUI's own FLUX.1-dev (`comfy/ldm/flux/model.py`) and SDXL base UNet
(`comfy/ldm/modules/diffusionmodules/openaimodel.py`), random weights in the precision ComfyUI
picks on this GPU (FLUX bf16, SDXL fp16), timed at benches/image_models.rs's inputs: 1024×1024,
FLUX one forward per step (256 T5 tokens, guidance 3.5), SDXL one forward of cond + uncond
batched (77 tokens); mean of 20 steps after a warm-up.

ComfyUI's source is not part of this repository: pass the folder that holds `comfy/` and
`comfyui_version.py` of the 0.3.64 release (see benches/device/comfyui_wan.py). The configs are
the ones its model detection gives for flux1-dev and SDXL base; the layers are
`comfy.ops.disable_weight_init`, as its loaders use when no cast is needed.

Usage: python3 comfyui_image.py COMFYUI_DIR   (a tiny smoke test when no GPU is present)
"""
import sys
import time

import torch

CUDA = torch.cuda.is_available()
sys.path.insert(0, sys.argv[1])
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = not CUDA
import comfy.ldm.modules.attention as comfy_attention  # noqa: E402
import comfy.ops  # noqa: E402
from comfy.ldm.flux.model import Flux  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402
from comfyui_version import __version__  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
STEPS = 20 if CUDA else 1
OPS = comfy.ops.disable_weight_init


def randomize(net):
    # disable_weight_init leaves the parameters uninitialised, as a checkpoint would fill them.
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.normal_(1.0 if "norm" in name else 0.0, 0.02)
    return net.eval()


def flux(dtype):
    size = dict(hidden_size=3072, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56]) \
        if CUDA else dict(hidden_size=256, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56])
    net = Flux(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, mlp_ratio=4.0,
               theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, image_model="flux",
               dtype=dtype, device=DEVICE, operations=OPS, **size)
    side = 128 if CUDA else 16
    inputs = (torch.randn(1, 16, side, side, device=DEVICE, dtype=dtype),
              torch.tensor([0.8], device=DEVICE), torch.randn(1, 256, 4096, device=DEVICE, dtype=dtype))
    kwargs = dict(y=torch.randn(1, 768, device=DEVICE, dtype=dtype),
                  guidance=torch.tensor([3.5], device=DEVICE))
    return randomize(net), inputs, kwargs


def sdxl(dtype):
    config = {'use_checkpoint': False, 'image_size': 32, 'out_channels': 4, 'use_spatial_transformer': True,
              'legacy': False, 'num_classes': 'sequential', 'adm_in_channels': 2816, 'in_channels': 4,
              'model_channels': 320, 'num_res_blocks': [2, 2, 2], 'transformer_depth': [0, 0, 2, 2, 10, 10],
              'channel_mult': [1, 2, 4], 'transformer_depth_middle': 10, 'use_linear_in_transformer': True,
              'context_dim': 2048, 'num_head_channels': 64, 'transformer_depth_output': [0, 0, 0, 2, 2, 2, 10, 10, 10],
              'use_temporal_attention': False, 'use_temporal_resblock': False}
    net = UNetModel(**config, dtype=dtype, device=DEVICE, operations=OPS)
    side = 128 if CUDA else 16
    inputs = (torch.randn(2, 4, side, side, device=DEVICE, dtype=dtype),
              torch.tensor([500.0, 500.0], device=DEVICE), torch.randn(2, 77, 2048, device=DEVICE, dtype=dtype))
    return randomize(net), inputs, dict(y=torch.randn(2, 2816, device=DEVICE, dtype=dtype))


def seconds_per_step(net, inputs, kwargs):
    net(*inputs, **kwargs)
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(STEPS):
        out = net(*inputs, **kwargs)
    if CUDA:
        torch.cuda.synchronize()
    assert torch.isfinite(out).all()
    return (time.perf_counter() - start) / STEPS


def main():
    name = torch.cuda.get_device_name() if CUDA else "CPU (tiny models, a smoke test)"
    print(f"ComfyUI {__version__}, {name}, torch {torch.__version__}, "
          f"attention {comfy_attention.optimized_attention.__name__}")
    print("| model (1024²) | compute | s/step | peak GPU GB |")
    print("| --- | --- | --- | --- |")
    with torch.inference_mode():
        for label, build, dtype in (("FLUX.1-dev", flux, torch.bfloat16),
                                    ("SDXL base (CFG batch 2)", sdxl, torch.float16)):
            dtype = dtype if CUDA else torch.float32
            net, inputs, kwargs = build(dtype)
            s = seconds_per_step(net, inputs, kwargs)
            peak = torch.cuda.max_memory_allocated() / 1e9 if CUDA else 0.0
            print(f"| {label} | {str(dtype).removeprefix('torch.')} | {s:.3f} | {peak:.1f} |", flush=True)
            del net
            if CUDA:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
