"""ComfyUI's own LTX-2 audio-video transformer (`comfy/ldm/lightricks/av_model.py`:
`LTXAVModel`), random bf16 weights at full width, timed on this GPU at benches/ltx_av.rs's
inputs and by its method: each call with 8 and with 16 blocks, the difference the per-block cost,
the 48-block call extrapolated from it. The inputs are the connectors' output (1024 text tokens),
random latents and σ 0.9 for every token; stage 1 and the 480p case run cond and uncond as one
batch of 2.

ComfyUI's source is not part of this repository: pass a folder holding `comfy/`,
`comfy_api/`, `comfy_execution/` and `comfyui_version.py` of the ComfyUI checkout to compare
with. ComfyUI computes LTX-2 in bf16 and its RoPE goes through comfy-kitchen, which must be
importable (ComfyUI's requirements install it). The model uses `comfy.ops.disable_weight_init`
layers, as UNETLoader gives a bf16 file, and attention is whatever `optimized_attention` picks.

With `--ltx23` the model has LTX-2.3's layers (gated attention, prompt-modulated text
cross-attention, no caption projection: the context is the connectors' video and audio widths).

Usage: python3 comfyui_ltx_av.py COMFYUI_DIR [--ltx23]   (a tiny model when no GPU is present)
"""
import sys
import time

import torch

CUDA = torch.cuda.is_available()
LTX23 = "--ltx23" in sys.argv[2:]
sys.path.insert(0, sys.argv[1])
sys.argv = [sys.argv[0]] + ([] if CUDA else ["--cpu"])  # ComfyUI parses the command line
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.ldm.modules.attention as comfy_attention  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.ops  # noqa: E402
from comfy.ldm.lightricks.av_model import LTXAVModel  # noqa: E402
from comfyui_version import __version__  # noqa: E402

if not CUDA:
    comfy.model_management.in_training = True  # the plain-torch RoPE, no comfy-kitchen
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32
FULL_BLOCKS = 48
TEXT_TOKENS = 1024 if CUDA else 16
# name, batch, latent (frames, height, width), audio latent frames: benches/ltx_av.rs's CASES.
CASES = [
    ("stage 1, 121 frames 640×360, CFG", 2, (16, 11, 20), 126),
    ("stage 2, 121 frames 1280×704", 1, (16, 22, 40), 126),
    ("81 frames 832×480, CFG", 2, (11, 15, 26), 85),
] if CUDA else [("tiny", 2, (2, 2, 3), 5)]


def model(blocks):
    width = {} if CUDA else dict(attention_head_dim=16, audio_attention_head_dim=8,
                                 num_attention_heads=2, audio_num_attention_heads=2,
                                 cross_attention_dim=32, audio_cross_attention_dim=16,
                                 caption_channels=24)
    if LTX23:
        width.update(apply_gated_attention=True, cross_attention_adaln=True,
                     caption_proj_before_connector=True, caption_projection_first_linear=False,
                     connector_apply_gated_attention=True, connector_num_layers=8,
                     connector_num_attention_heads=width.get("num_attention_heads", 32),
                     connector_attention_head_dim=width.get("attention_head_dim", 128),
                     audio_connector_num_attention_heads=width.get("audio_num_attention_heads", 32),
                     audio_connector_attention_head_dim=width.get("audio_attention_head_dim", 64))
    net = LTXAVModel(num_layers=blocks, causal_temporal_positioning=True,
                     use_middle_indices_grid=True, av_ca_timestep_scale_multiplier=1000.0,
                     rope_type="split", frequencies_precision="float64",
                     dtype=DTYPE, device=DEVICE, operations=comfy.ops.disable_weight_init,
                     **width)
    # disable_weight_init leaves the parameters uninitialised, as a checkpoint would fill them.
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.normal_(1.0 if "norm" in name else 0.0, 0.02)
    return net.eval()


def inputs(net, batch, video, audio):
    torch.manual_seed(0)
    f, h, w = video
    x = [torch.randn(batch, 128, f, h, w, device=DEVICE, dtype=DTYPE),
         torch.randn(batch, 8, audio, 16, device=DEVICE, dtype=DTYPE)]
    if LTX23:
        width = net.cross_attention_dim + net.audio_cross_attention_dim
    else:
        width = 2 * net.caption_channels
    context = torch.randn(batch, TEXT_TOKENS, width, device=DEVICE, dtype=DTYPE)
    sigma = torch.full((batch,), 0.9, device=DEVICE)
    return x, (sigma, sigma), context


def seconds_per_call(net, case, reps=6):
    _, batch, video, audio = case
    x, t, context = inputs(net, batch, video, audio)
    run = lambda: net(x, t, context, frame_rate=24.0, transformer_options={})  # noqa: E731
    run()
    if CUDA:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        out = run()
    if CUDA:
        torch.cuda.synchronize()
    assert out[0].shape == x[0].shape and torch.isfinite(out[0]).all()
    return (time.perf_counter() - start) / reps


def main():
    name = torch.cuda.get_device_name() if CUDA else "CPU (tiny model, a smoke test)"
    print(f"ComfyUI {__version__} LTXAVModel{' (LTX-2.3 layers)' if LTX23 else ''}, {name}, torch {torch.__version__}, "
          f"attention {comfy_attention.optimized_attention.__name__}, {DTYPE}")
    print("| case | s/call 8 blocks | s/call 16 blocks | s/block | s/call at 48 (extrapolated) "
          "| peak GPU GB (16 blocks) |")
    print("| --- | --- | --- | --- | --- | --- |")
    with torch.inference_mode():
        small = model(8)
        for case in CASES:  # the first call of each shape runs slower
            seconds_per_call(small, case)
        times = [seconds_per_call(small, case) for case in CASES]
        del small
        large = model(16)
        for case, t8 in zip(CASES, times):
            if CUDA:
                torch.cuda.reset_peak_memory_stats()
            t16 = seconds_per_call(large, case)
            peak = torch.cuda.max_memory_allocated() / 1e9 if CUDA else 0.0
            block = (t16 - t8) / 8
            full = t8 + (FULL_BLOCKS - 8) * block
            print(f"| {case[0]} | {t8:.3f} | {t16:.3f} | {block:.4f} | {full:.2f} | {peak:.1f} |")


if __name__ == "__main__":
    main()
