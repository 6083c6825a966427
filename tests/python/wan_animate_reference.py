"""Wan 2.2 Animate (diffusers' WanAnimateTransformer3DModel) at a tiny DiT config with the real
motion encoder (512×512 faces, StyleGAN-style convolutions) and face encoder, every parameter
randomized, saved under ComfyUI's key names (the inverse of diffusers'
`convert_wan_transformer_to_diffusers`), plus inputs and diffusers' output in float32.

Usage: DIR -> writes DIR/animate.safetensors and DIR/animate_io.safetensors: a video of the
reference slot and two latent frames, a two-frame pose latent and a five-frame face video.
ComfyUI's `AnimateWanModel` differs from diffusers in one place: it stabilizes the motion basis
with 1e-8·I before the QR decomposition where diffusers adds 1e-8 to every entry, which moves
the output by about 1e-8."""
import re
import sys
from pathlib import Path

import torch
from diffusers import WanAnimateTransformer3DModel
from safetensors.torch import save_file

from wan_reference import CLIP_TOKENS, randomize, to_comfy

# diffusers name -> ComfyUI name for the parts only Animate has; the rest is Wan's.
ANIMATE_RENAMES = [
    (r"^motion_encoder\.motion_synthesis_weight$", "motion_encoder.dec.direction.weight"),
    (r"^motion_encoder\.conv_in\.weight$", "motion_encoder.enc.net_app.convs.0.0.weight"),
    (r"^motion_encoder\.conv_in\.act_fn\.bias$", "motion_encoder.enc.net_app.convs.0.1.bias"),
    (r"^motion_encoder\.conv_out\.weight$", "motion_encoder.enc.net_app.convs.8.weight"),
    (r"^motion_encoder\.motion_network\.", "motion_encoder.enc.fc."),
    (r"^face_encoder\.(conv1_local|conv2|conv3)\.", r"face_encoder.\1.conv."),
    (r"^face_adapter\.(\d+)\.to_q\.", r"face_adapter.fuser_blocks.\1.linear1_q."),
    (r"^face_adapter\.(\d+)\.to_out\.", r"face_adapter.fuser_blocks.\1.linear2."),
    (r"^face_adapter\.(\d+)\.norm_q\.", r"face_adapter.fuser_blocks.\1.q_norm."),
    (r"^face_adapter\.(\d+)\.norm_k\.", r"face_adapter.fuser_blocks.\1.k_norm."),
]
RES_BLOCK_PARTS = {"conv1.weight": "conv1.0.weight", "conv1.act_fn.bias": "conv1.1.bias",
                   "conv2.weight": "conv2.1.weight", "conv2.act_fn.bias": "conv2.2.bias",
                   "conv_skip.weight": "skip.1.weight"}


def comfy_name(key):
    m = re.match(r"^motion_encoder\.res_blocks\.(\d+)\.(.+)$", key)
    if m:
        return f"motion_encoder.enc.net_app.convs.{int(m[1]) + 1}.{RES_BLOCK_PARTS[m[2]]}"
    if key.startswith(("motion_encoder.", "face_encoder.", "face_adapter.")):
        for pattern, repl in ANIMATE_RENAMES:
            key = re.sub(pattern, repl, key)
        return key
    return to_comfy(key)


def comfy_state(model):
    sd = {}
    for key, value in model.state_dict().items():
        if "norm_added_q" in key or re.match(r"^face_adapter\.\d+\.to_[kv]\.", key):
            continue
        value = value.contiguous()
        if key.startswith("motion_encoder.") and key.endswith("act_fn.bias"):
            value = value.view(1, -1, 1, 1)  # FusedLeakyReLU's bias as ComfyUI stores it
        sd[comfy_name(key)] = value
    # ComfyUI keeps the face adapter's keys and values as one Linear.
    for i, block in enumerate(model.face_adapter):
        sd[f"face_adapter.fuser_blocks.{i}.linear1_kv.weight"] = torch.cat([block.to_k.weight, block.to_v.weight])
        sd[f"face_adapter.fuser_blocks.{i}.linear1_kv.bias"] = torch.cat([block.to_k.bias, block.to_v.bias])
    return sd


def randomize_encoders(model, g):
    """The motion encoder's StyleGAN convolutions scale their weights at run time, so they are
    drawn at unit scale (as StyleGAN initializes them); then every encoder weight is rounded to
    fp16, which the file stores to halve its size."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("motion_encoder.") and not name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g))
            if name.startswith(("motion_encoder.", "face_encoder.")):
                p.copy_(p.half().float())


def main(out):
    g = torch.Generator().manual_seed(7)
    model = WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=36,
        latent_channels=16, out_channels=16, text_dim=32, freq_dim=16, ffn_dim=96, num_layers=10,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
        added_kv_proj_dim=256).eval()
    randomize(model, g)
    randomize_encoders(model, g)
    sd = comfy_state(model)
    encoders = ("motion_encoder.", "face_encoder.")
    save_file({k: v.half() if k.startswith(encoders) else v for k, v in sd.items()},
              out / "animate.safetensors")

    t, h, w, face_frames = 3, 6, 8, 5
    context = torch.randn(1, 512, 32, generator=g)
    context[:, 200:] = 0
    io = {"x": torch.randn(1, 36, t, h, w, generator=g), "context": context,
          "timestep": torch.tensor([712.25]), "clip": torch.randn(1, CLIP_TOKENS, 1280, generator=g),
          "pose_latents": torch.randn(1, 16, t - 1, h, w, generator=g),
          "face_pixels": torch.rand(1, 3, face_frames, 512, 512, generator=g) * 2 - 1}
    with torch.no_grad():
        io["output"] = model(io["x"], io["timestep"], io["context"], io["clip"], io["pose_latents"],
                             io["face_pixels"], return_dict=False)[0]
        # The same call with the face adapters' outputs zeroed: the test checks the faces matter.
        adapters = model.face_adapter
        hooks = [a.register_forward_hook(lambda m, i, o: o * 0) for a in adapters]
        io["output_without_faces"] = model(io["x"], io["timestep"], io["context"], io["clip"],
                                           io["pose_latents"], io["face_pixels"], return_dict=False)[0]
        for hook in hooks:
            hook.remove()
    save_file(io, out / "animate_io.safetensors")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
