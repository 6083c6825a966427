"""Runs the SCAIL-2 character-replacement templates (plain and INT8 ConvRot) with the `videosdgx run`
CLI on the GPU and on the CPU of the same machine, on the tiny random checkpoints of
tests/python/wan_workflow_fixtures.py, and compares the two chunks' sampled latents. This is the
check that SAM 3.1's video tracker (the trunk, the text detector and the memory tracker on every
frame), SCAIL2ColoredMask, WanSCAILToVideo, the SCAIL-2 DiT and ColorTransfer run on CUDA and
compute what the CPU does.

The reduction is tests/wan_workflows.rs's (64×32, 5-frame chunks of 2 steps, the second anchored
on the first's last frame and sampling one new latent frame after it, every detection kept). The
lent GPU has no FFmpeg, so the driving video is `input/control.png` repeated 9 times in place
of LoadVideo + GetVideoComponents, and the outputs are SaveLatent of both samplers and SaveImage
of the final frames. The character's reference image is `input/control.png` as well.

Chunk 1 starts from chunk 0's decoded frames, so it inherits chunk 0's difference and amplifies
it (the anchor frame is decoded and encoded again). To check
chunk 1's own computation, both devices also run it from the same chunk-0 frames: the CPU run's,
saved as PNG and loaded in place of chunk 0's VAEDecode. Both chunks of the plain runs and
chunk 1 of those (`*_shared_anchor`) are held to the tolerance. `--fp32-vae`
and `--fp32-unet` runs, and the CPU's own `--bf16-vae` and `--bf16-unet` runs, show how much each
precision moves each chunk.

Usage: python3 scail2_gpu.py BINARY BASE_DIR WORKFLOWS_DIR
Prints one line per run; exits non-zero if a GPU latent is not close to the CPU one."""
import json
import shutil
import sys

import numpy as np
from PIL import Image
from pathlib import Path

from templates_gpu import TOLERANCE, read_latent, relative, run

WIDTH, HEIGHT, LENGTH, VIDEO_FRAMES = 64, 32, 5, 9
TEMPLATES = ("video_wan21_scail2_character_replacement", "video_wan21_scail2_character_replacement_int8")
# Per chunk: width, height, steps, the frame slice and the chunk-count expression.
CHUNKS = {"213": ("178", "179", "168", "177", "184"), "262": ("236", "237", "228", "235", "241")}
SAMPLERS = ("213:19", "262:227")
# Each chunk's SCAIL2ColoredMask of the driving video's tracks.
MASKS = ("213:197", "262:245")
# Chunk 0's decoded frames, which chunk 1 continues from.
CHUNK0_FRAMES = "213:6"
RUNS = (("cuda", []), ("cuda_fp32vae", ["--fp32-vae"]), ("cuda_fp32all", ["--fp32-unet", "--fp32-vae"]),
        ("cpu", ["--cpu"]), ("cpu_bf16vae", ["--cpu", "--bf16-vae"]), ("cpu_bf16unet", ["--cpu", "--bf16-unet"]))
SHARED_ANCHOR_RUNS = (("cuda_shared_anchor", []), ("cpu_shared_anchor", ["--cpu"]))


def reduced(prompt, prefix):
    for chunk, (width, height, steps, frames, expression) in CHUNKS.items():
        prompt[f"{chunk}:{width}"]["inputs"]["value"] = WIDTH
        prompt[f"{chunk}:{height}"]["inputs"]["value"] = HEIGHT
        prompt[f"{chunk}:{steps}"]["inputs"]["value"] = 2
        prompt[f"{chunk}:{frames}"]["inputs"]["length"] = LENGTH
        prompt[f"{chunk}:{expression}"]["inputs"].update({"values.b": LENGTH, "values.c": 1})
    prompt["213:114"]["inputs"]["previous_frame_count"] = 1
    prompt["262:259"]["inputs"]["previous_frame_count"] = 1
    prompt["262:251"]["inputs"]["batch_index"] = 1
    for node in prompt.values():
        if node["class_type"] == "SAM3_VideoTrack":
            node["inputs"]["detection_threshold"] = 0.0  # random weights score every detection low
    video = next(k for k, n in prompt.items() if n["class_type"] == "LoadVideo")
    frames = prompt[next(k for k, n in prompt.items() if n["class_type"] == "SaveVideo"
                         and "SCAIL2" in n["inputs"]["filename_prefix"])]
    final_images = prompt[frames["inputs"]["video"][0]]["inputs"]["images"]
    prompt[video] = {"class_type": "LoadImage", "inputs": {"image": "control.png"}}
    for node in prompt.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = "control.png"  # the character's reference image too
    for key in [k for k, n in prompt.items() if n["class_type"] == "GetVideoComponents"]:
        prompt[key] = {"class_type": "RepeatImageBatch", "inputs": {"image": [video, 0], "amount": VIDEO_FRAMES}}
    for key in [k for k, n in prompt.items() if n["class_type"] in ("SaveVideo", "CreateVideo")]:
        del prompt[key]
    prompt["save_frames"] = {"class_type": "SaveImage", "inputs": {"images": final_images, "filename_prefix": prefix}}
    prompt["save_chunk0"] = {"class_type": "SaveImage",
                             "inputs": {"images": [CHUNK0_FRAMES, 0], "filename_prefix": f"chunk0/{prefix}"}}
    for i, masks in enumerate(MASKS):
        prompt[f"save_masks_{i}"] = {"class_type": "SaveImage",
                                     "inputs": {"images": [masks, 0], "filename_prefix": f"masks/{prefix}_{i}"}}
    for i, sampler in enumerate(SAMPLERS):
        prompt[f"save_latent_{i}"] = {"class_type": "SaveLatent",
                                      "inputs": {"samples": [sampler, 0], "filename_prefix": f"latents/{prefix}_{i}"}}
    return prompt


def from_frames(prompt, files):
    """The prompt with chunk 1 reading `files` (in the input folder) where it read chunk 0's
    decoded frames."""
    loads = [f"anchor_{i}" for i in range(len(files))]
    for key, file in zip(loads, files):
        prompt[key] = {"class_type": "LoadImage", "inputs": {"image": file}}
    prompt["anchor"] = {"class_type": "BatchImagesNode",
                        "inputs": {f"images.image{i}": [key, 0] for i, key in enumerate(loads)}}
    for key, node in prompt.items():
        if key.startswith("262:"):
            for name, value in node["inputs"].items():
                if value == [CHUNK0_FRAMES, 0]:
                    node["inputs"][name] = ["anchor", 0]
    return prompt


def run_all(binary, base, workflows, name, runs, edit=lambda prompt: prompt):
    """Each run's two sampled latents, by label."""
    latents = {}
    for label, flags in runs:
        prefix = f"{name}_{label}"
        prompt = edit(reduced(json.loads((workflows / f"{name}_api.json").read_text()), prefix))
        _, frames, seconds, device = run(binary, base, prompt, prefix, flags)
        latents[label] = [read_latent(sorted((base / "output/latents").glob(f"{prefix}_{i}_*.latent"))[-1])
                          for i in range(len(SAMPLERS))]
        print(f"{name} {label}: {seconds:.1f} s ({device})", flush=True)
    return latents


def compare(latents, label, reference, chunks, held):
    """Prints `label`'s distance to `reference` per chunk; returns whether the held ones pass."""
    good = True
    for i in chunks:
        other, base = latents[label][i], latents[reference][i]
        diff = relative(other, base)
        verdict = ""
        if held:
            ok = other.shape == base.shape and diff < TOLERANCE
            good &= ok
            verdict = " ok" if ok else " FAIL"
        print(f"  chunk {i} latent {list(other.shape)}: {label} vs {reference} relative L2 {diff:.2e}{verdict}")
    return good


def main():
    binary, base, workflows = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    failed = False
    for name in TEMPLATES:
        latents = run_all(binary, base, workflows, name, RUNS)
        frames = sorted(p.name for p in (base / "output/chunk0").glob(f"{name}_cpu_0*.png"))
        for file in frames:
            shutil.copy(base / "output/chunk0" / file, base / "input" / file)
        latents.update(run_all(binary, base, workflows, name, SHARED_ANCHOR_RUNS,
                               lambda prompt: from_frames(prompt, frames)))
        for i in range(len(MASKS)):
            stacks = {label: np.stack([np.asarray(Image.open(f)) for f in
                                       sorted((base / "output/masks").glob(f"{name}_{label}_{i}_*.png"))])
                      for label in ("cuda", "cpu")}
            differ = (stacks["cuda"] != stacks["cpu"]).any(-1).mean()
            print(f"  chunk {i} identity masks {list(stacks['cpu'].shape)}: {differ:.2%} of pixels differ cuda vs cpu")
        failed |= not compare(latents, "cuda", "cpu", (0, 1), held=True)
        for label in ("cuda_fp32vae", "cuda_fp32all", "cpu_bf16vae", "cpu_bf16unet"):
            compare(latents, label, "cpu", (0, 1), held=False)
        failed |= not compare(latents, "cuda_shared_anchor", "cpu_shared_anchor", (1,), held=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
