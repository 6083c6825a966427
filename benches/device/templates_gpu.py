"""Runs official templates (workflows/*_api.json) with the `videosdgx run` CLI on the GPU and on
the CPU of the same machine, on the tiny random checkpoints the CPU tests write
(tests/python/{wan,flux,sdxl}_workflow_fixtures.py), and compares the sampled latents. This is the
check that the CUDA paths the CPU tests cannot reach (FP8 `_scaled_mm` in the A14B pair and UMT5,
the fused kernels, the text and vision encoders and VAE encode on the GPU, `--lowvram`
streaming) compute what the CPU does.

Each template runs at test size, its output replaced by SaveImage of the decoded frames and
SaveLatent of the sampled latent (the lent GPU image has no FFmpeg: run the binary with
benches/device/ffmpeg_stubs.sh's libraries first in LD_LIBRARY_PATH). The comparison runs at
cfg 1: with cfg > 1 a random network's small cond − uncond difference turns half-precision
rounding into a large relative error, so those runs are reported, not judged; and with Euler in
place of an SDE or ancestral sampler, whose step noise comes from the device's own generator.

Control videos come from a LoadImage in place of LoadVideo (+ Video Slice) +
GetVideoComponents, every LoadImage from a seeded noisy EmptyImage (ImageAddNoise), and
LoadAudio gives way to two seconds of EmptyAudio: all of them need FFmpeg.

Wan Animate 2's pose video is the control image too, its frames scaled to 64×32; `:windows`
switches its context windows on, 2 latent frames with 1 of overlap. Wan Dancer runs at 13
frames (its global pass over the silent song at 6 fps, then the local 30 fps segment), `:turbo`
for its cfg-1 settings.

:patches puts the guidance patches and EasyCache between the model and ModelSamplingSD3 and
samples 4 steps, so that the cache can skip the last ones: at cfg 1 APG, RescaleCFG, Mahiro, TSR
and Epsilon Scaling act (TCFG and FreSca pass, as in ComfyUI, and act in the reported cfg runs).

Usage: python3 templates_gpu.py BINARY BASE_DIR WORKFLOWS_DIR TEMPLATE[:turbo|:windows|:patches]...
  BASE_DIR holds models/ (the fixtures) and input/ (the masks of Painter nodes, if any, as
  painter_<node id>.png).
Prints one line per run; exits non-zero if a GPU latent is not close to the CPU one."""
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

WIDTH, HEIGHT, LENGTH = 64, 32, 5
# Half-precision activations and FP8 kernels on the GPU against float32 on the CPU over two
# steps of a tiny random network: percent-level differences are rounding, a wrong path is O(1).
TOLERANCE = 0.05
SAMPLERS = ("KSampler", "KSamplerAdvanced")
# The Wan conditioning nodes whose literal size and length set the video's.
WAN_CONDITIONING = ("EmptyHunyuanLatentVideo", "WanImageToVideo", "Wan22ImageToVideoLatent",
                    "WanFirstLastFrameToVideo", "WanFunInpaintToVideo", "WanFunControlToVideo",
                    "Wan22FunControlToVideo", "WanVaceToVideo", "WanCameraEmbedding",
                    "WanTrackToVideo", "WanMoveTrackToVideo", "WanHuMoImageToVideo", "WanAnimateToVideo")
# The VACE templates' PrimitiveInts: 512 / 960 px sides, 81 frames, `a · 16 + 1` frames from a.
PRIMITIVE_INTS = {512: WIDTH, 960: WIDTH, 81: LENGTH, 77: LENGTH, 5: 1, 20: 4, 10: 2}
# InfiniteTalk's PrimitiveInts: the video's 832×480.
PRIMITIVE_INTS.update({832: WIDTH, 480: HEIGHT})
# Wan Dancer's: its 720×1280 sides, 149 frames (13 here: 4 latent frames, 8 music runs each)
# and the turbo pass's 6 steps.
DANCER_INTS = {720: WIDTH, 1280: HEIGHT, 149: 13, 6: 2}


# The :patches chain, in order, with its inputs.
PATCHES = [
    ("APG", {"eta": 0.8, "norm_threshold": 5.0, "momentum": -0.5}),
    ("TCFG", {}),
    ("FreSca", {"scale_low": 1.0, "scale_high": 1.25, "freq_cutoff": 20}),
    ("RescaleCFG", {"multiplier": 0.7}),
    ("Mahiro", {}),
    ("TemporalScoreRescaling", {"tsr_k": 0.95, "tsr_sigma": 1.0}),
    ("Epsilon Scaling", {"scaling_factor": 1.005}),
    ("EasyCache", {"reuse_threshold": 3.0, "start_percent": 0.0, "end_percent": 1.0, "verbose": True}),
]


def with_patches(prompt):
    """The PATCHES chain between each ModelSamplingSD3 and its model."""
    for key in [k for k, n in prompt.items() if n["class_type"] == "ModelSamplingSD3"]:
        model = prompt[key]["inputs"]["model"]
        for n, (kind, inputs) in enumerate(PATCHES):
            prompt[f"{key}_patch{n}"] = {"class_type": kind, "inputs": {**inputs, "model": model}}
            model = [f"{key}_patch{n}", 0]
        prompt[key]["inputs"]["model"] = model


def reduced(prompt, prefix, mode, cfg_one, inputs_dir):
    """The template at test size (as tests/wan_workflows.rs and tests/image_workflows.rs reduce
    them) saving its frames and its sampled latent under `prefix`. A Painter node paints
    `painter_<node id>.png` when `inputs_dir` has it."""
    for key, node in prompt.items():
        if node["class_type"] == "Painter" and (inputs_dir / f"painter_{key}.png").exists():
            node["inputs"]["mask"] = f"painter_{key}.png"
    # The AR video sampler re-noises between steps from the device's generator, as ComfyUI
    # does: one step per frame keeps GPU and CPU comparable.
    autoregressive = any(n["class_type"] == "SamplerARVideo" for n in prompt.values())
    dancer = any(n["class_type"] == "WanDancerVideo" for n in prompt.values())
    turbo = mode == "turbo"
    for node in prompt.values():
        inputs = node["inputs"]
        value = inputs.get("value")
        kind = node["class_type"]
        if kind in WAN_CONDITIONING:
            for key, size in (("width", WIDTH), ("height", HEIGHT), ("length", LENGTH)):
                if not isinstance(inputs.get(key), list):
                    inputs[key] = size
        elif kind == "BerniniConditioning":
            for key, size in (("width", WIDTH), ("height", 2 * HEIGHT)):
                if not isinstance(inputs.get(key), list):
                    inputs[key] = size
        elif kind == "ResizeImageMaskNode" and inputs.get("resize_type.longer_size") == 1280:
            inputs["resize_type.longer_size"] = WIDTH
        elif kind == "WanInfiniteTalkToVideo":
            inputs["length"] = LENGTH
            if "previous_frames" in inputs:
                inputs["motion_frame_count"] = 2
        elif kind == "BasicScheduler" and autoregressive:
            inputs["steps"] = 1
        elif kind == "BasicScheduler" and inputs.get("steps") in (6, 10):
            inputs["steps"] = 2
        elif kind == "ResizeImageMaskNode" and inputs.get("resize_type.width") == 482:
            inputs.update({"resize_type.width": WIDTH, "resize_type.height": HEIGHT})
        elif kind == "WanAnimate2ToVideo":
            inputs["length"] = LENGTH
        elif kind == "ContextWindowsManual" and mode == "windows":
            inputs.update(context_length=2, context_overlap=1)
        elif kind == "ComfySwitchNode" and isinstance(inputs.get("on_true"), list) \
                and prompt[inputs["on_true"][0]]["class_type"] == "ContextWindowsManual":
            inputs["switch"] = mode == "windows"
        elif kind == "ARVideoI2V":
            inputs.update(width=WIDTH, height=HEIGHT)
        elif kind == "WanSoundImageToVideo":
            # S2V's coarsest motion projection needs 8 latent rows.
            inputs.update(width=WIDTH, height=WIDTH)
        elif kind == "LoadAudio":
            # No FFmpeg on the lent GPU: two seconds of silence in its place.
            node["class_type"] = "EmptyAudio"
            node["inputs"] = {"duration": 2.0, "sample_rate": 44100, "channels": 2}
        elif kind in ("ImageScale", "GenerateTracks"):
            inputs.update(width=WIDTH, height=HEIGHT)  # the start image; WanMove's track frame
        elif kind in ("EmptyLatentImage", "EmptySD3LatentImage"):
            inputs.update(width=WIDTH, height=WIDTH)
        elif kind == "KSampler":
            inputs.update(steps=4 if mode == "patches" else 2, seed=7)
        elif kind == "KSamplerAdvanced" and inputs.get("steps") == 20:
            inputs["steps"] = 4
            for key in ("start_at_step", "end_at_step"):
                if inputs[key] == 10:
                    inputs[key] = 2
        elif kind == "PrimitiveFloat" and value == 5.0:
            inputs["value"] = 0.25
        elif kind == "PrimitiveInt" and dancer and isinstance(value, int) and value in DANCER_INTS:
            inputs["value"] = DANCER_INTS[value]
        elif kind == "WanDancerEncodeAudio" and not isinstance(inputs["video_frames"], list):
            inputs["video_frames"] = 13
        elif kind == "PrimitiveInt" and isinstance(value, int) and value in PRIMITIVE_INTS:
            inputs["value"] = PRIMITIVE_INTS[value]
        elif kind == "PrimitiveBoolean":
            inputs["value"] = turbo
        elif kind == "SkipLayerGuidanceDiT":
            inputs["double_layers"] = "1"  # the tiny models have two blocks
        elif kind == "GetVideoComponents":
            node["class_type"] = "LoadImage"
            node["inputs"] = {"image": "control.png"}
        if cfg_one and kind == "KSamplerSelect" and inputs["sampler_name"] in ("lcm", "euler_ancestral"):
            inputs["sampler_name"] = "euler"  # step noise from the device's generator
        if cfg_one and kind in SAMPLERS:
            inputs["cfg"] = 1.0
            # SDE and ancestral samplers draw their step noise from a generator on the latent's
            # device, as ComfyUI does, so GPU and CPU differ by design: compare with Euler.
            sampler = inputs.get("sampler_name", "")
            if isinstance(sampler, str) and ("sde" in sampler or "ancestral" in sampler):
                inputs["sampler_name"] = "euler"
    if mode == "patches":
        with_patches(prompt)
    for key in [k for k, n in prompt.items() if n["class_type"] in ("LoadVideo", "Video Slice")]:
        del prompt[key]
    # LoadImage decodes through FFmpeg too: a seeded noisy 40×30 image stands in for each, and
    # a blank mask for its mask output (an image without alpha gives one).
    for seed, key in enumerate([k for k, n in prompt.items() if n["class_type"] == "LoadImage"]):
        prompt[f"{key}_blank"] = {"class_type": "EmptyImage",
                                  "inputs": {"width": 40, "height": 30, "batch_size": 1, "color": 0x5A8040}}
        prompt[f"{key}_mask"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
        prompt[key] = {"class_type": "ImageAddNoise",
                       "inputs": {"image": [f"{key}_blank", 0], "seed": seed, "strength": 0.5}}
        for node in prompt.values():
            for name, value in node["inputs"].items():
                if value == [key, 1]:
                    node["inputs"][name] = [f"{key}_mask", 0]
    outputs = [k for k, n in prompt.items() if n["class_type"] in ("SaveVideo", "SaveImage", "SaveAnimatedWEBP")]
    # Wan Dancer's preview of its global pass aside, the final video.
    output = next((k for k in outputs if "preview" not in str(prompt[k]["inputs"].get("filename_prefix"))),
                  outputs[0])
    images = prompt[output]["inputs"].get("images") or prompt[prompt[output]["inputs"]["video"][0]]["inputs"]["images"]
    decode = prompt[images[0]]
    while "samples" not in decode["inputs"]:
        # JoinImageWithAlpha and the like back to VAEDecode; a batch of clips to its last one.
        links = [v for v in decode["inputs"].values() if isinstance(v, list)]
        decode = prompt[(decode["inputs"].get("image") or links[-1])[0]]
    del prompt[output]
    # Saving videos needs FFmpeg, which the lent GPU lacks.
    for key in [k for k, n in prompt.items() if n["class_type"] in ("SaveVideo", "CreateVideo")]:
        del prompt[key]
    prompt["save_frames"] = {"class_type": "SaveImage",
                             "inputs": {"images": images, "filename_prefix": prefix}}
    prompt["save_latent"] = {"class_type": "SaveLatent",
                             "inputs": {"samples": decode["inputs"]["samples"],
                                        "filename_prefix": f"latents/{prefix}"}}
    return prompt


def read_latent(path):
    """The `latent_tensor` of a SaveLatent file (safetensors, float32)."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    entry = header["latent_tensor"]
    start, end = entry["data_offsets"]
    raw = bytearray(data[8 + size + start:8 + size + end])
    return torch.frombuffer(raw, dtype=torch.float32).reshape(entry["shape"])


def run(binary, base, prompt, prefix, flags):
    """Runs the prompt; returns its latent, frame count, seconds and the device it used."""
    file = base / f"{prefix}.json"
    file.write_text(json.dumps(prompt))
    start = time.time()
    done = subprocess.run([binary, "run", str(file), "--base-directory", str(base), *flags],
                          capture_output=True, text=True)
    if done.returncode != 0:
        # The first lines say what failed; libtorch's backtrace follows them.
        sys.exit(f"{prefix}: exit {done.returncode}\n{done.stdout[:3000]}\n{done.stderr[:3000]}")
    frames = sorted((base / "output").glob(f"{prefix}_*.png"))
    latent = sorted((base / "output/latents").glob(f"{prefix}_*.latent"))[-1]
    device = next((line.split("] ", 1)[1] for line in done.stderr.splitlines()
                   if "videosdgx::setup] device" in line), "device ?")
    if "loaded partially" in done.stderr:
        device += "; blocks streamed"
    device += "".join(f"; {line.split('] ', 1)[1]}" for line in done.stderr.splitlines()
                      if "Cache - skipped" in line)
    return read_latent(latent), len(frames), time.time() - start, device


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def check(binary, base, workflows, name, mode):
    """Runs one template every way; returns whether the GPU agreed with the CPU."""
    runs = [("cuda", [], True), ("cuda_lowvram", ["--lowvram", "--vram-budget", "0"], True),
            ("cpu", ["--cpu"], True), ("cuda_cfg", [], False), ("cpu_cfg", ["--cpu"], False)]
    latents = {}
    for label, flags, cfg_one in runs:
        prefix = f"{name}_{mode}_{label}"
        prompt = reduced(json.loads((workflows / f"{name}_api.json").read_text()), prefix, mode,
                         cfg_one, base / "input")
        latent, frames, seconds, device = run(binary, base, prompt, prefix, flags)
        latents[label] = latent
        print(f"{name} {mode or 'plain'} {label}: latent {list(latent.shape)}, {frames} frames, "
              f"{seconds:.1f} s ({device})", flush=True)
    ok = True
    for label in ("cuda", "cuda_lowvram"):
        diff = relative(latents[label], latents["cpu"])
        good = diff < TOLERANCE and latents[label].shape == latents["cpu"].shape
        ok &= good
        print(f"  {label} vs cpu at cfg 1: relative L2 {diff:.2e} {'ok' if good else 'FAIL'}")
    print(f"  lowvram vs cuda: max abs {(latents['cuda_lowvram'] - latents['cuda']).abs().max():.2e}")
    print(f"  template cfg, cuda vs cpu: relative L2 {relative(latents['cuda_cfg'], latents['cpu_cfg']):.2e}")
    return ok


def main():
    binary, base, workflows = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    failed = False
    for case in sys.argv[4:]:
        name, _, mode = case.partition(":")
        failed |= not check(binary, base, workflows, name, mode)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
