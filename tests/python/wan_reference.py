"""Tiny Wan DiTs from PyPI diffusers (WanTransformer3DModel), with every parameter randomized,
saved under ComfyUI's key names, plus inputs and diffusers' outputs in float32.

Usage: DIR -> writes DIR/{variant}.safetensors (weights) and DIR/{variant}_io.safetensors for
variants t2v, i2v, ti2v (Wan 2.2 TI2V 5B layout: 48 channels, per-frame timesteps), flf2v (I2V
with learned positions for a first and a last frame's CLIP tokens), vace (WanVACETransformer3DModel,
control blocks after main blocks 0 and 2), ref (Wan 2.2 Fun Control's reference image) and camera
(Wan 2.1 Fun Camera: I2V with a camera control adapter) and s2v (Wan 2.2 S2V: audio tokens
injected after block 0, control video, reference image and FramePack motion frames appended),
which diffusers does not model: ComfyUI's `ref_conv`, `control_adapter` and `WanModel_S2V` paths
written out over diffusers' modules; talk (an I2V DiT without CLIP tokens with an InfiniteTalk
patch, `model_multitalk.py` written out and hooked into diffusers' blocks); bernini (in-context
latents after the video's tokens, each on its own rotated grid); humo (audio cross-attention after
each block's cross-attention, reference frames after the video); causal (Causal Forcing's
cached self-attention over successive frames); animate2 (Wan Animate 2's pose branch); dancer
(Wan Dancer's music injection, reference image and global pass); scail and scail2 (SCAIL's
reference frames and half-size pose stream, SCAIL-2's identity masks, both rotation layouts); and
DIR/t2v_cfg_io.safetensors: a batch of cond and uncond on one latent with padded prompts."""
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel, WanVACETransformer3DModel
from safetensors.torch import save_file

# diffusers name -> ComfyUI name (inverse of diffusers' convert_wan_to_diffusers.py).
RENAMES = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^condition_embedder\.image_embedder\.norm1\.", "img_emb.proj.0."),
    (r"^condition_embedder\.image_embedder\.ff\.net\.0\.proj\.", "img_emb.proj.1."),
    (r"^condition_embedder\.image_embedder\.ff\.net\.2\.", "img_emb.proj.3."),
    (r"^condition_embedder\.image_embedder\.norm2\.", "img_emb.proj.4."),
    (r"^condition_embedder\.image_embedder\.pos_embed$", "img_emb.emb_pos"),
    (r"^(vace_blocks\.\d+)\.proj_in\.", r"\1.before_proj."),
    (r"^(vace_blocks\.\d+)\.proj_out\.", r"\1.after_proj."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"\.scale_shift_table$", ".modulation"),
    (r"\.attn1\.", ".self_attn."),
    (r"\.attn2\.", ".cross_attn."),
    (r"\.to_q\.", ".q."), (r"\.to_k\.", ".k."), (r"\.to_v\.", ".v."), (r"\.to_out\.0\.", ".o."),
    (r"\.add_k_proj\.", ".k_img."), (r"\.add_v_proj\.", ".v_img."), (r"\.norm_added_k\.", ".norm_k_img."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."), (r"\.ffn\.net\.2\.", ".ffn.2."),
    # diffusers' norm2 is the affine cross-attention norm ComfyUI calls norm3.
    (r"^((?:vace_)?blocks\.\d+)\.norm2\.", r"\1.norm3."),
]


def to_comfy(key):
    for pattern, repl in RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def comfy_state(model):
    """A diffusers Wan model's weights under ComfyUI's names (ComfyUI has no `norm_added_q`)."""
    return {to_comfy(k): v.contiguous() for k, v in model.state_dict().items() if "norm_added_q" not in k}


CHANNELS = {"t2v": (16, 16), "i2v": (36, 16), "flf2v": (36, 16), "ti2v": (48, 48), "vace": (16, 16),
            "ref": (52, 16), "camera": (32, 16), "scail": (20, 16)}
CAMERA_CHANNELS = 24
CLIP_TOKENS = 257
VACE_IN = 96


def randomize(model, g):
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            is_norm_gain = "norm" in name and name.endswith(".weight")
            p.copy_(1.0 + noise if is_norm_gain else noise)


def build(variant, g):
    in_ch, out_ch = CHANNELS[variant]
    image = variant in ("i2v", "flf2v", "camera", "scail")
    kwargs = dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=in_ch,
        out_channels=out_ch, text_dim=32, freq_dim=16, ffn_dim=96, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280 if image else None,
        added_kv_proj_dim=256 if image else None,
        pos_embed_seq_len=2 * CLIP_TOKENS if variant == "flf2v" else None)
    if variant == "vace":
        kwargs.update(num_layers=4, vace_layers=[0, 2], vace_in_channels=VACE_IN)
        model = WanVACETransformer3DModel(**kwargs).eval()
    else:
        model = WanTransformer3DModel(**kwargs).eval()
    randomize(model, g)
    return model, in_ch


def reference_conv(model, g):
    """Fun Control's `ref_conv`: a Conv2d from 16 latent channels to the width, stride = kernel."""
    conv = torch.nn.Conv2d(16, model.config.num_attention_heads * model.config.attention_head_dim,
                           kernel_size=(2, 2), stride=(2, 2))
    randomize(conv, g)
    return conv


class CameraAdapter(torch.nn.Module):
    """ComfyUI's `WanCamAdapter`: per frame, pixel unshuffle by 8, a 2×2 stride-2 convolution,
    and one residual block of two 3×3 convolutions with a ReLU between."""

    def __init__(self, width):
        super().__init__()
        self.conv = torch.nn.Conv2d(CAMERA_CHANNELS * 64, width, kernel_size=2, stride=2)
        self.conv1 = torch.nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.conv2 = torch.nn.Conv2d(width, width, kernel_size=3, padding=1)

    def forward(self, camera):
        b, c, f, h, w = camera.shape
        x = camera.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        x = self.conv(F.pixel_unshuffle(x, 8))
        x = self.conv2(torch.relu(self.conv1(x))) + x
        return x.view(b, f, *x.shape[1:]).permute(0, 2, 1, 3, 4)

    def comfy_state(self):
        return {"control_adapter.conv.weight": self.conv.weight, "control_adapter.conv.bias": self.conv.bias,
                "control_adapter.residual_blocks.0.conv1.weight": self.conv1.weight,
                "control_adapter.residual_blocks.0.conv1.bias": self.conv1.bias,
                "control_adapter.residual_blocks.0.conv2.weight": self.conv2.weight,
                "control_adapter.residual_blocks.0.conv2.bias": self.conv2.bias}


def forward_over_modules(model, x, timestep, context, clip=None, reference=None, camera=None):
    """ComfyUI's WanModel around diffusers' modules, for what diffusers does not model: a
    reference latent's `ref_conv` tokens in front of the patch tokens, rotated as one more
    frame before the video (the grid has t + 1 frames) and cut off before the unpatchify
    (`reference` = (conv, latent)); the camera adapter's output added to the patch embedding
    (`camera` = (adapter, embedding))."""
    b, _, t, h, w = x.shape
    patches = model.patch_embedding(x)
    if camera is not None:
        adapter, embedding = camera
        patches = patches + adapter(embedding)
    tokens = patches.flatten(2).transpose(1, 2)
    ref_tokens = 0
    if reference is not None:
        conv, latent = reference
        ref = conv(latent).flatten(2).transpose(1, 2)
        ref_tokens = ref.shape[1]
        tokens = torch.cat([ref, tokens], dim=1)
    rotary_emb = model.rope(x.new_zeros(b, 1, t + (1 if ref_tokens else 0), h, w))
    temb, timestep_proj, context, image = model.condition_embedder(timestep, context, clip)
    timestep_proj = timestep_proj.unflatten(1, (6, -1))
    if image is not None:
        context = torch.concat([image, context], dim=1)
    for block in model.blocks:
        tokens = block(tokens, context, timestep_proj, rotary_emb)
    shift, scale = (model.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    tokens = (model.norm_out(tokens.float()) * (1 + scale) + shift).type_as(tokens)
    tokens = model.proj_out(tokens)[:, ref_tokens:]
    tokens = tokens.reshape(b, t, h // 2, w // 2, 1, 2, 2, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return tokens.flatten(6, 7).flatten(4, 5).flatten(2, 3)


S2V_AUDIO_DIM, S2V_AUDIO_LAYERS = 32, 3
# ComfyUI's audio_inject_layers; the two-block model reaches only the first.
S2V_INJECT_AFTER = [0, 4]


def causal(conv, x):
    """ComfyUI's CausalConv1d: replicate padding of kernel − 1 on the left."""
    return conv(F.pad(x, (conv.kernel_size[0] - 1, 0), mode="replicate"))


def norm_silu(x, eps=1e-6):
    return F.silu(F.layer_norm(x, x.shape[-1:], eps=eps))


def rms(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight


class S2VParts(torch.nn.Module):
    """What WanModel_S2V adds to the DiT, restated: markers, control-video embedding, the causal
    audio encoder (4 tokens a frame + a padding token; an AdaIN vector a frame), the audio
    injectors and the FramePack projections."""

    def __init__(self, dim):
        super().__init__()
        nn = torch.nn
        self.cond_mask = nn.Parameter(torch.zeros(3, dim))
        self.cond_encoder = nn.Conv3d(16, dim, (1, 2, 2), stride=(1, 2, 2))
        self.layer_weights = nn.Parameter(torch.zeros(1, S2V_AUDIO_LAYERS, 1, 1))
        self.conv1_local = nn.Conv1d(S2V_AUDIO_DIM, dim, 3)
        self.conv1_global = nn.Conv1d(S2V_AUDIO_DIM, dim // 4, 3)
        self.conv2 = nn.Conv1d(dim // 4, dim // 2, 3, stride=2)
        self.conv3 = nn.Conv1d(dim // 2, dim, 3, stride=2)
        self.final_linear = nn.Linear(dim, dim)
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.injectors = nn.ModuleList()
        for _ in S2V_INJECT_AFTER:
            inj = nn.Module()
            for name in ("q", "k", "v", "o"):
                setattr(inj, name, nn.Linear(dim, dim))
            inj.norm_q = nn.Parameter(torch.ones(dim))
            inj.norm_k = nn.Parameter(torch.ones(dim))
            inj.adain = nn.Linear(dim, 2 * dim)
            self.injectors.append(inj)
        self.proj = nn.Conv3d(16, dim, (1, 2, 2), stride=(1, 2, 2))
        self.proj_2x = nn.Conv3d(16, dim, (2, 4, 4), stride=(2, 4, 4))
        self.proj_4x = nn.Conv3d(16, dim, (4, 8, 8), stride=(4, 8, 8))

    def comfy_state(self):
        e = "casual_audio_encoder.encoder."
        out = {"trainable_cond_mask.weight": self.cond_mask, "casual_audio_encoder.weights": self.layer_weights,
               e + "padding_tokens": self.padding_tokens,
               e + "final_linear.weight": self.final_linear.weight, e + "final_linear.bias": self.final_linear.bias}
        convs = {"cond_encoder": self.cond_encoder, e + "conv1_local.conv": self.conv1_local,
                 e + "conv1_global.conv": self.conv1_global, e + "conv2.conv": self.conv2,
                 e + "conv3.conv": self.conv3, "frame_packer.proj": self.proj,
                 "frame_packer.proj_2x": self.proj_2x, "frame_packer.proj_4x": self.proj_4x}
        for name, conv in convs.items():
            out[f"{name}.weight"], out[f"{name}.bias"] = conv.weight, conv.bias
        for i, inj in enumerate(self.injectors):
            p = f"audio_injector.injector.{i}"
            for name in ("q", "k", "v", "o"):
                out[f"{p}.{name}.weight"] = getattr(inj, name).weight
                out[f"{p}.{name}.bias"] = getattr(inj, name).bias
            out[f"{p}.norm_q.weight"], out[f"{p}.norm_k.weight"] = inj.norm_q, inj.norm_k
            out[f"audio_injector.injector_adain_layers.{i}.linear.weight"] = inj.adain.weight
            out[f"audio_injector.injector_adain_layers.{i}.linear.bias"] = inj.adain.bias
        return {k: v.detach().contiguous() for k, v in out.items()}

    def audio(self, features):
        """Features `[b, layers, c, 4t]` → (AdaIN vectors `[b, t, 1, dim]`, tokens `[b, t, 5, dim]`)."""
        w = F.silu(self.layer_weights)
        x = (features * w / w.sum(dim=1, keepdim=True)).sum(dim=1)
        b = x.shape[0]

        def down(y):
            y = causal(self.conv2, y.transpose(1, 2)).transpose(1, 2)
            y = causal(self.conv3, norm_silu(y).transpose(1, 2)).transpose(1, 2)
            return norm_silu(y)

        local = causal(self.conv1_local, x)
        local = local.view(b, 4, -1, local.shape[-1]).permute(0, 1, 3, 2).flatten(0, 1)
        local = down(norm_silu(local))
        local = local.view(b, 4, *local.shape[1:]).permute(0, 2, 1, 3)
        local = torch.cat([local, self.padding_tokens.expand(b, local.shape[1], 1, -1)], dim=2)
        glob = self.final_linear(down(norm_silu(causal(self.conv1_global, x).transpose(1, 2))))
        return glob.unsqueeze(2), local

    def inject(self, i, tokens, video_tokens, glob, local, heads):
        inj = self.injectors[i]
        b, _, dim = tokens.shape
        frames = local.shape[1]
        video = tokens[:, :video_tokens].reshape(b * frames, -1, dim)
        shift, scale = inj.adain(F.silu(glob.reshape(b * frames, dim))).chunk(2, dim=1)
        x = F.layer_norm(video, (dim,), eps=1e-5) * (1 + scale[:, None]) + shift[:, None]
        ctx = local.reshape(b * frames, -1, dim)
        split = lambda t: t.unflatten(2, (heads, -1)).transpose(1, 2)
        q, k, v = split(rms(inj.q(x), inj.norm_q)), split(rms(inj.k(ctx), inj.norm_k)), split(inj.v(ctx))
        out = inj.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
        added = tokens[:, :video_tokens] + out.reshape(b, video_tokens, dim)
        return torch.cat([added, tokens[:, video_tokens:]], dim=1)

    def motion(self, motion):
        """FramePack: the last 19 frames (zeros in front of fewer) at three resolutions, and the
        rope positions ComfyUI's rope_encode gives each part."""
        b, c, f, h, w = motion.shape
        padded = motion.new_zeros(b, c, 19, h, w)
        padded[:, :, -min(f, 19):] = motion[:, :, -min(f, 19):]
        far, mid, near = padded.split([16, 2, 1], dim=2)
        hl, wl = (h + 1) // 2, (w + 1) // 2
        tokens, positions = [], []
        for latents, conv, t_start, t_len in ((near, self.proj, -1, 1), (mid, self.proj_2x, -3, 1),
                                              (far, self.proj_4x, -19, 4)):
            out = conv(latents)
            tokens.append(out.flatten(2).transpose(1, 2))
            positions.append((torch.linspace(t_start, t_start + t_len - 1, out.shape[2]),
                              torch.linspace(0, hl - 1, out.shape[3]), torch.linspace(0, wl - 1, out.shape[4])))
        return torch.cat(tokens, dim=1) + self.cond_mask[2], positions


def rope_at(model, t_ids, h_ids, w_ids):
    """diffusers' rotary tables (cos, sin repeated per pair) at any positions of a grid."""
    head = model.config.attention_head_dim
    hw = 2 * (head // 6)
    parts_cos, parts_sin = [], []
    grid = torch.meshgrid(t_ids, h_ids, w_ids, indexing="ij")
    for pos, dim in zip(grid, (head - 2 * hw, hw, hw)):
        freqs = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
        angles = pos.reshape(-1).double()[:, None] * freqs
        parts_cos.append(angles.cos().float().repeat_interleave(2, dim=1))
        parts_sin.append(angles.sin().float().repeat_interleave(2, dim=1))
    n = parts_cos[0].shape[0]
    return torch.cat(parts_cos, 1).view(1, n, 1, head), torch.cat(parts_sin, 1).view(1, n, 1, head)


def forward_s2v(model, parts, x, timestep, context, audio, reference, motion, control):
    """ComfyUI's WanModel_S2V around diffusers' modules: the control video's embedding and the
    video marker added to the patches; the reference image (rotated at time max(30, t + 9))
    and the motion tokens appended with their markers; one timestep row per frame, doubled with
    motion, 0 for the reference and motion rows, spread over the tokens as `repeat_e` does;
    audio injected after the blocks S2V names; the head over every token, the video kept."""
    b, _, t, h, w = x.shape
    heads = model.config.num_attention_heads
    patches = model.patch_embedding(x) + parts.cond_encoder(control)
    tokens = [patches.flatten(2).transpose(1, 2) + parts.cond_mask[0]]
    video_tokens = tokens[0].shape[1]
    grid = lambda n: torch.arange(n, dtype=torch.float32)
    cos_sin = [rope_at(model, grid(t), grid(h // 2), grid(w // 2))]
    rows = timestep[:, None].repeat(1, t)
    tokens.append(model.patch_embedding(reference).flatten(2).transpose(1, 2) + parts.cond_mask[1])
    start = float(max(30, t + 9))
    cos_sin.append(rope_at(model, torch.linspace(start, start, 1), grid(h // 2), grid(w // 2)))
    rows = torch.cat([rows, rows.new_zeros(b, 1)], dim=1)
    motion_tokens, positions = parts.motion(motion)
    tokens.append(motion_tokens)
    cos_sin += [rope_at(model, *p) for p in positions]
    rows = torch.cat([rows.repeat_interleave(2, dim=1), rows.new_zeros(b, 3)], dim=1)
    tokens = torch.cat(tokens, dim=1)
    n = tokens.shape[1]
    repeats = n // rows.shape[1]
    per_token = rows.repeat_interleave(repeats if repeats * rows.shape[1] == n else repeats + 1, dim=1)[:, :n]
    rotary = (torch.cat([c for c, _ in cos_sin], 1), torch.cat([s for _, s in cos_sin], 1))
    temb, proj, context, _ = model.condition_embedder(per_token.flatten(), context, None, timestep_seq_len=n)
    proj = proj.unflatten(2, (6, -1))
    glob, local = parts.audio(audio[..., :4 * t])
    for i, block in enumerate(model.blocks):
        tokens = block(tokens, context, proj, rotary)
        if i in S2V_INJECT_AFTER:
            tokens = parts.inject(S2V_INJECT_AFTER.index(i), tokens, video_tokens, glob, local, heads)
    shift, scale = (model.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
    tokens = model.norm_out(tokens.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)
    tokens = model.proj_out(tokens)[:, :video_tokens]
    tokens = tokens.reshape(b, t, h // 2, w // 2, 1, 2, 2, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return tokens.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def s2v(out, g):
    """The S2V variant: a T2V DiT with S2VParts; a 3-frame 8×8 latent, 16 audio frames (the
    model reads 12), a reference image, 5 motion frames and a control video."""
    model, _ = build("t2v", g)
    parts = S2VParts(model.config.num_attention_heads * model.config.attention_head_dim)
    randomize(parts, g)
    # The helper's rotations equal diffusers' own on the integer grid.
    ids = lambda n: torch.arange(n, dtype=torch.float32)
    cos, sin = model.rope(torch.zeros(1, 16, 3, 8, 8))
    ours = rope_at(model, ids(3), ids(4), ids(4))
    assert torch.allclose(cos, ours[0]) and torch.allclose(sin, ours[1])
    sd = comfy_state(model)
    sd.update(parts.comfy_state())
    save_file(sd, out / "s2v.safetensors")
    t, h, w = 3, 8, 8
    io = {"x": torch.randn(1, 16, t, h, w, generator=g), "context": torch.randn(1, 7, 32, generator=g),
          "timestep": torch.tensor([712.25]),
          "audio": torch.randn(1, S2V_AUDIO_LAYERS, S2V_AUDIO_DIM, 16, generator=g),
          "sound_reference": torch.randn(1, 16, 1, h, w, generator=g),
          "motion": torch.randn(1, 16, 5, h, w, generator=g),
          "control": torch.randn(1, 16, t, h, w, generator=g)}
    with torch.no_grad():
        io["output"] = forward_s2v(model, parts, io["x"], io["timestep"], io["context"], io["audio"],
                                   io["sound_reference"], io["motion"], io["control"])
    save_file(io, out / "s2v_io.safetensors")


def scaled_ids(n, scale=1.0, shift=0.0):
    """ScaleROPE's positions of n patches along an axis: `rope_encode`'s linspace."""
    return torch.linspace(shift, shift + (n - 1) * scale, n)


def forward_bernini(model, x, timestep, context, latents, rope=((1, 1, 1), (0, 0, 0))):
    """ComfyUI's WanModel with Bernini's `context_latents` around diffusers' modules: each latent
    patch-embedded and appended after the video's tokens, rotated on its own grid with every
    pair's angle advanced by its stream index (1, 2, ...) at the whole head's frequencies; the
    head's output cut back to the video. `rope`: ScaleROPE's (scale, shift) per axis (t, y, x)
    for every grid."""
    b, _, t, h, w = x.shape
    head = model.config.attention_head_dim
    (st, sy, sx), (ht, hy, hx) = rope
    grid_ids = lambda lt, lh, lw: (scaled_ids(lt, st, ht), scaled_ids(lh, sy, hy), scaled_ids(lw, sx, hx))
    tokens = [model.patch_embedding(x).flatten(2).transpose(1, 2)]
    c0, s0 = rope_at(model, *grid_ids(t, h // 2, w // 2))
    cos, sin = [c0], [s0]
    omega = 1.0 / (10000.0 ** (torch.arange(0, head, 2, dtype=torch.float64) / head))
    for i, latent in enumerate(latents):
        tokens.append(model.patch_embedding(latent).flatten(2).transpose(1, 2))
        _, _, lt, lh, lw = latent.shape
        c, s_ = rope_at(model, *grid_ids(lt, lh // 2, lw // 2))
        shift = ((i + 1) * omega).repeat_interleave(2)
        angle = torch.atan2(s_.double(), c.double()) + shift
        cos.append(angle.cos().float())
        sin.append(angle.sin().float())
    video = tokens[0].shape[1]
    tokens = torch.cat(tokens, 1)
    rotary = (torch.cat(cos, 1), torch.cat(sin, 1))
    temb, proj, context, _ = model.condition_embedder(timestep, context, None)
    proj = proj.unflatten(1, (6, -1))
    for block in model.blocks:
        tokens = block(tokens, context, proj, rotary)
    shift_, scale = (model.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    tokens = (model.norm_out(tokens.float()) * (1 + scale) + shift_).type_as(tokens)
    tokens = model.proj_out(tokens)[:, :video]
    tokens = tokens.reshape(b, t, h // 2, w // 2, 1, 2, 2, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return tokens.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def bernini(out, g):
    """Bernini's in-context latents on the T2V DiT: a two-frame latent of the video's size and a
    one-frame latent of another aspect."""
    model, _ = build("t2v", g)
    sd = comfy_state(model)
    save_file(sd, out / "bernini.safetensors")
    t, h, w = 3, 6, 8
    io = {"x": torch.randn(1, 16, t, h, w, generator=g), "context": torch.randn(1, 7, 32, generator=g),
          "timestep": torch.tensor([712.25]),
          "context_latent_0": torch.randn(1, 16, 2, h, w, generator=g),
          "context_latent_1": torch.randn(1, 16, 1, 4, 10, generator=g)}
    with torch.no_grad():
        io["output"] = forward_bernini(model, io["x"], io["timestep"], io["context"],
                                       [io["context_latent_0"], io["context_latent_1"]])
    save_file(io, out / "bernini_io.safetensors")
    # ScaleROPE (ChronoEdit's time spacing of 7, and shifted, respaced rows and columns) on the
    # video's grid and a context latent's.
    rope = ((7.0, 2.0, 0.5), (0.0, 1.5, -1.0))
    io = {k: io[k] for k in ("x", "context", "timestep", "context_latent_0")}
    io["rope_scale"], io["rope_shift"] = torch.tensor(rope[0]), torch.tensor(rope[1])
    with torch.no_grad():
        io["output"] = forward_bernini(model, io["x"], io["timestep"], io["context"],
                                       [io["context_latent_0"]], rope)
    save_file(io, out / "rope_io.safetensors")

# HuMo (ComfyUI's HumoWanModel, written out here): Whisper features of 5 layer groups × 12 per
# 8-frame window, 16 audio tokens of width 24 per latent frame.
HUMO_FEATURES, HUMO_AUDIO_DIM, HUMO_INTER = 12, 24, 32


class HumoParts(torch.nn.Module):
    """`audio_proj` and each block's `audio_cross_attn_wrapper`."""

    def __init__(self, dim, blocks, features=HUMO_FEATURES, audio_dim=HUMO_AUDIO_DIM):
        super().__init__()
        self.audio_dim = audio_dim
        self.glob_1 = torch.nn.Linear(8 * 5 * features, HUMO_INTER)
        self.glob_2 = torch.nn.Linear(HUMO_INTER, HUMO_INTER)
        self.glob_3 = torch.nn.Linear(HUMO_INTER, 16 * audio_dim)
        self.glob_norm = torch.nn.LayerNorm(audio_dim)
        self.norm = torch.nn.ModuleList(torch.nn.LayerNorm(dim, eps=1e-6) for _ in range(blocks))
        self.q = torch.nn.ModuleList(torch.nn.Linear(dim, dim) for _ in range(blocks))
        self.k = torch.nn.ModuleList(torch.nn.Linear(audio_dim, dim) for _ in range(blocks))
        self.v = torch.nn.ModuleList(torch.nn.Linear(audio_dim, dim) for _ in range(blocks))
        self.o = torch.nn.ModuleList(torch.nn.Linear(dim, dim) for _ in range(blocks))
        self.norm_q = torch.nn.ParameterList(torch.nn.Parameter(torch.ones(dim)) for _ in range(blocks))
        self.norm_k = torch.nn.ParameterList(torch.nn.Parameter(torch.ones(dim)) for _ in range(blocks))

    def comfy_state(self):
        sd = {}
        for n, layer in (("1", self.glob_1), ("2", self.glob_2), ("3", self.glob_3), ("norm", self.glob_norm)):
            sd[f"audio_proj.audio_proj_glob_{n}.layer.weight"] = layer.weight
            sd[f"audio_proj.audio_proj_glob_{n}.layer.bias"] = layer.bias
        for i in range(len(self.q)):
            p = f"blocks.{i}.audio_cross_attn_wrapper"
            sd[f"{p}.norm1_audio.weight"], sd[f"{p}.norm1_audio.bias"] = self.norm[i].weight, self.norm[i].bias
            for m in ("q", "k", "v", "o"):
                sd[f"{p}.audio_cross_attn.{m}.weight"] = getattr(self, m)[i].weight
                sd[f"{p}.audio_cross_attn.{m}.bias"] = getattr(self, m)[i].bias
            sd[f"{p}.audio_cross_attn.norm_q.weight"] = self.norm_q[i]
            sd[f"{p}.audio_cross_attn.norm_k.weight"] = self.norm_k[i]
        return {k: v.detach().contiguous() for k, v in sd.items()}

    def project(self, audio):
        """`AudioProjModel`: [b, f, 8, 5, c] -> [b, f * 16, audio_dim], frame-major."""
        b, f = audio.shape[:2]
        x = torch.relu(self.glob_1(audio.reshape(b * f, -1)))
        x = torch.relu(self.glob_2(x))
        tokens = self.glob_norm(self.glob_3(x).reshape(b * f, 16, self.audio_dim))
        return tokens.reshape(b, f, 16, -1).permute(0, 3, 1, 2).flatten(2).transpose(1, 2)

    def attend(self, i, x, audio, heads):
        """`AudioCrossAttentionWrapper`'s attention (`WanT2VCrossAttentionGather`)."""
        rms = lambda t, w: t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * w
        h = self.norm[i](x)
        q = rms(self.q[i](h), self.norm_q[i])
        k = rms(self.k[i](audio), self.norm_k[i])
        v = self.v[i](audio)
        b, n, d = x.shape[0], heads, x.shape[-1] // heads
        k = k.reshape(-1, 16, n, d).transpose(1, 2)
        v = v.reshape(-1, 16, n, d).transpose(1, 2)
        q = q.reshape(k.shape[0], -1, n, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, n * d)
        return self.o[i](out)


def forward_humo(model, parts, x, timestep, context, audio, reference):
    """HumoWanModel around diffusers' modules: the reference latent's tokens after the video's,
    rotated from time t on; the audio padded with zero frames for the reference and projected;
    after each block's cross-attention x + the audio cross-attention; the head's output cut to
    the video."""
    b, _, t, h, w = x.shape
    heads = model.config.num_attention_heads
    rt = reference.shape[2]
    video = model.patch_embedding(x).flatten(2).transpose(1, 2)
    ref = model.patch_embedding(reference).flatten(2).transpose(1, 2)
    tokens = torch.cat([video, ref], 1)
    ids = lambda start, n: torch.arange(start, start + n, dtype=torch.float32)
    c0, s0 = rope_at(model, ids(0, t), ids(0, h // 2), ids(0, w // 2))
    c1, s1 = rope_at(model, ids(t, rt), ids(0, h // 2), ids(0, w // 2))
    rotary = (torch.cat([c0, c1], 1), torch.cat([s0, s1], 1))
    audio = torch.cat([audio, audio.new_zeros(b, rt, *audio.shape[2:])], 1)
    audio_tokens = parts.project(audio)
    temb, proj, context, _ = model.condition_embedder(timestep, context, None)
    proj = proj.unflatten(1, (6, -1))
    hooks, state = [], {}
    for i, block in enumerate(model.blocks):
        def norm2_pre(module, args):
            state["x"] = args[0]
        def attn2_post(module, args, out, i=i):
            return out + parts.attend(i, state["x"] + out, audio_tokens, heads)
        hooks += [block.norm2.register_forward_pre_hook(norm2_pre), block.attn2.register_forward_hook(attn2_post)]
    try:
        for block in model.blocks:
            tokens = block(tokens, context, proj, rotary)
    finally:
        for hk in hooks:
            hk.remove()
    shift, scale = (model.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    tokens = (model.norm_out(tokens.float()) * (1 + scale) + shift).type_as(tokens)
    tokens = model.proj_out(tokens)[:, :video.shape[1]]
    tokens = tokens.reshape(b, t, h // 2, w // 2, 1, 2, 2, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return tokens.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def humo(out, g):
    """HuMo on the T2V DiT (the 1.7B layout: 16 input channels): a one-frame reference latent and
    audio features for the 3 latent frames."""
    model, _ = build("t2v", g)
    dim = model.config.num_attention_heads * model.config.attention_head_dim
    parts = HumoParts(dim, len(model.blocks))
    randomize(parts, g)
    sd = comfy_state(model)
    sd.update(parts.comfy_state())
    save_file(sd, out / "humo.safetensors")
    t, h, w = 3, 6, 8
    io = {"x": torch.randn(1, 16, t, h, w, generator=g), "context": torch.randn(1, 7, 32, generator=g),
          "timestep": torch.tensor([712.25]),
          "humo_audio": torch.randn(1, t, 8, 5, HUMO_FEATURES, generator=g),
          "humo_reference": torch.randn(1, 16, 1, h, w, generator=g)}
    with torch.no_grad():
        io["output"] = forward_humo(model, parts, io["x"], io["timestep"], io["context"], io["humo_audio"],
                                    io["humo_reference"])
    save_file(io, out / "humo_io.safetensors")

class CausalAttention(torch.nn.Module):
    """ComfyUI's CausalWanSelfAttention over a diffusers block's attn1: rotated keys and plain
    values appended to a cache shared by the calls, the queries attending to everything cached."""

    def __init__(self, attn, heads, cache):
        super().__init__()
        self.attn, self.heads, self.cache = attn, heads, cache

    def forward(self, h, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        a = self.attn
        q, k, v = rotated_qkv(a, h, self.heads, rotary_emb)
        end = self.cache["end"]
        self.cache["k"] = torch.cat([self.cache["k"][:, :end], k], 1) if end else k
        self.cache["v"] = torch.cat([self.cache["v"][:, :end], v], 1) if end else v
        out = F.scaled_dot_product_attention(q.transpose(1, 2), self.cache["k"].transpose(1, 2),
                                             self.cache["v"].transpose(1, 2))
        return a.to_out[0](out.transpose(1, 2).flatten(2))


def forward_causal(model, caches, x, timestep, context, start):
    """CausalWanModel.forward_block over diffusers' modules: the block's frames rotated from
    `start` on, every block's self-attention through its cache."""
    b, _, t, h, w = x.shape
    heads = model.config.num_attention_heads
    originals = [block.attn1 for block in model.blocks]
    for block, cache in zip(model.blocks, caches):
        block.attn1 = CausalAttention(block.attn1, heads, cache)
    try:
        tokens = model.patch_embedding(x).flatten(2).transpose(1, 2)
        ids = lambda s, n: torch.arange(s, s + n, dtype=torch.float32)
        rotary = rope_at(model, ids(start, t), ids(0, h // 2), ids(0, w // 2))
        temb, proj, context, _ = model.condition_embedder(timestep, context, None)
        proj = proj.unflatten(1, (6, -1))
        for block in model.blocks:
            tokens = block(tokens, context, proj, rotary)
    finally:
        for block, attn in zip(model.blocks, originals):
            block.attn1 = attn
    for cache in caches:
        cache["end"] += tokens.shape[1]
    shift, scale = (model.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    tokens = (model.norm_out(tokens.float()) * (1 + scale) + shift).type_as(tokens)
    tokens = model.proj_out(tokens)
    tokens = tokens.reshape(b, t, h // 2, w // 2, 1, 2, 2, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return tokens.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def causal_forcing(out, g):
    """Causal Forcing's calls on the T2V DiT, as the AR sampler makes them: frame 0 at a noise
    level (its keys then rolled back), frame 0 clean (kept), frame 1 attending to both."""
    model, _ = build("t2v", g)
    sd = comfy_state(model)
    save_file(sd, out / "causal.safetensors")
    h, w = 6, 8
    caches = [{"end": 0} for _ in model.blocks]
    io = {"context": torch.randn(1, 7, 32, generator=g)}
    calls = [("noisy", 0, 700.0, True), ("clean", 0, 0.0, False), ("next", 1, 500.0, False)]
    with torch.no_grad():
        for name, start, t, rollback in calls:
            x = torch.randn(1, 16, 1, h, w, generator=g)
            io[f"{name}_x"] = x
            io[f"{name}_output"] = forward_causal(model, caches, x, torch.tensor([t]), io["context"], start)
            if rollback:
                for cache in caches:
                    cache["end"] -= (h // 2) * (w // 2)
    save_file(io, out / "causal_io.safetensors")

# InfiniteTalk (ComfyUI's `comfy/ldm/wan/model_multitalk.py`, written out here): wav2vec2
# features of 3 layers × 8, 4 audio tokens of width 12 per latent frame.
TALK_LAYERS, TALK_WIDTH, TALK_TOKENS, TALK_AUDIO_DIM, TALK_INTER = 3, 8, 4, 12, 16


class TalkParts(torch.nn.Module):
    """MultiTalkModelPatch's tensors: `audio_proj` and per block `norm_x` and the audio
    cross-attention's q / kv / proj."""

    def __init__(self, dim, blocks, features=TALK_LAYERS * TALK_WIDTH, tokens=TALK_TOKENS,
                 audio_dim=TALK_AUDIO_DIM):
        super().__init__()
        self.tokens, self.audio_dim = tokens, audio_dim
        self.proj1 = torch.nn.Linear(5 * features, TALK_INTER)
        self.proj1_vf = torch.nn.Linear(8 * features, TALK_INTER)
        self.proj2 = torch.nn.Linear(TALK_INTER, TALK_INTER)
        self.proj3 = torch.nn.Linear(TALK_INTER, tokens * audio_dim)
        self.norm = torch.nn.LayerNorm(audio_dim)
        self.norm_x = torch.nn.ModuleList(torch.nn.LayerNorm(dim) for _ in range(blocks))
        self.q = torch.nn.ModuleList(torch.nn.Linear(dim, dim) for _ in range(blocks))
        self.kv = torch.nn.ModuleList(torch.nn.Linear(audio_dim, 2 * dim) for _ in range(blocks))
        self.proj = torch.nn.ModuleList(torch.nn.Linear(dim, dim) for _ in range(blocks))

    def comfy_state(self):
        sd = {}
        for name in ("proj1", "proj1_vf", "proj2", "proj3", "norm"):
            layer = getattr(self, name)
            sd[f"audio_proj.{name}.weight"] = layer.weight
            sd[f"audio_proj.{name}.bias"] = layer.bias
        for i in range(len(self.q)):
            for ours, theirs in (("norm_x", f"blocks.{i}.norm_x"), ("q", f"blocks.{i}.audio_cross_attn.q_linear"),
                                 ("kv", f"blocks.{i}.audio_cross_attn.kv_linear"),
                                 ("proj", f"blocks.{i}.audio_cross_attn.proj")):
                layer = getattr(self, ours)[i]
                sd[f"{theirs}.weight"] = layer.weight
                sd[f"{theirs}.bias"] = layer.bias
        return {k: v.detach().contiguous() for k, v in sd.items()}

    def project(self, speakers, start, end):
        """`get_audio_embeds` + `project_audio_features` + `MultiTalkAudioProjModel`."""
        offsets = torch.arange(5) - 2
        windows = []
        for feats in speakers:
            if end > speakers[0].shape[0]:
                pad = feats[:1].repeat(end - speakers[0].shape[0], 1, 1)
                feats = torch.cat([feats, pad])
            idx = (torch.arange(start, end)[:, None] + offsets[None]).clamp(0, feats.shape[0] - 1)
            windows.append(feats[idx][None])
        emb = torch.cat(windows)  # h, T, 5, layers, width
        h = emb.shape[0]
        first = emb[:, :1]
        later = emb[:, 1:].reshape(h, -1, 4, *emb.shape[2:])  # h, n_t, 4, 5, layers, width
        parts = [later[:, :, :1, :3], later[:, :, 1:-1, 2:3], later[:, :, -1:, 2:]]
        later = torch.cat([p.flatten(2, 3) for p in parts], dim=2)  # h, n_t, 8, layers, width
        a = torch.relu(self.proj1(first.flatten(2)))
        b = torch.relu(self.proj1_vf(later.flatten(2)))
        c = torch.relu(self.proj2(torch.cat([a, b], dim=1)))
        tokens = self.norm(self.proj3(c).unflatten(2, (self.tokens, self.audio_dim)))
        return torch.cat(tokens.split(1), dim=2)[0]  # frames, h·tokens, audio_dim


def interleaved_rope(x, pos):
    """`RotaryPositionalEmbedding1D` over x [..., tokens, head_dim] at positions [tokens]."""
    d = x.shape[-1]
    freqs = 1.0 / (10000 ** (torch.arange(0, d, 2)[: d // 2].float() / d))
    angles = (pos.float()[:, None] * freqs).repeat_interleave(2, dim=-1)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * angles.cos() + rotated * angles.sin()


def speaker_map(q, k, masks, frame_tokens):
    """`get_attn_map_with_target` (heads in two halves, averaged), float32: [speakers, tokens]."""
    scale = 1.0 / q.shape[-1] ** 0.5
    heads = q.shape[2]
    half = heads // 2
    total = 0
    for i in range(2):
        qh = q[:, :, i * half:(i + 1) * half].transpose(1, 2) * scale  # B, H, L, K
        kh = k[:, :frame_tokens, i * half:(i + 1) * half]
        maps = []
        for m in masks:
            attn = (qh @ kh.permute(0, 2, 3, 1)).softmax(-1)
            maps.append(((attn * m.view(1, 1, 1, -1)).sum(-1) / (m.sum() + 1e-8)).mean(dim=1))
        total = total + torch.cat(maps)
    return total / 2


def talk_attention(parts, i, x, audio, grid, heads, attn_map):
    """`SingleStreamAttention` / `SingleStreamMultiAttention` for batch 1."""
    t, hw = grid
    dim = x.shape[-1]
    d = dim // heads
    q = parts.q[i](x).view(t, hw, heads, d).transpose(1, 2)  # t, H, S, d
    kv = parts.kv[i](audio)
    n_a = audio.shape[1]
    k, v = kv.view(t, n_a, 2, heads, d).unbind(2)
    k, v = k.transpose(1, 2), v.transpose(1, 2)
    if attn_map is not None:
        lo = attn_map.min(1).values
        hi = attn_map.max(1).values
        h1 = (attn_map[0] - lo[0]) / (hi[0] - lo[0] + 1e-8) * 4 + 0
        h2 = (attn_map[1] - lo[1]) / (hi[1] - lo[1] + 1e-8) * 4 + 20
        pos = torch.stack([h1, h2], 1)[torch.arange(attn_map.shape[1]), attn_map.argmax(0)]
        q = interleaved_rope(q.transpose(0, 1).flatten(1, 2), pos).unflatten(1, (t, hw)).transpose(0, 1)
        key_pos = torch.zeros(n_a)
        key_pos[: n_a // 2] = 2.0
        key_pos[n_a // 2:] = 22.0
        k = interleaved_rope(k, key_pos)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, t * hw, dim)
    return parts.proj[i](out)


def apply_rotary(x, cos, sin):
    """diffusers' WanAttnProcessor rotation of x [B, S, H, D]."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out


def rotated_qkv(a, h, heads, rotary_emb):
    """diffusers' Wan self-attention inputs: q/k normed and rotated, split into heads."""
    q = a.norm_q(a.to_q(h)).unflatten(2, (heads, -1))
    k = a.norm_k(a.to_k(h)).unflatten(2, (heads, -1))
    v = a.to_v(h).unflatten(2, (heads, -1))
    return apply_rotary(q, *rotary_emb), apply_rotary(k, *rotary_emb), v


def forward_talk(model, parts, x, timestep, context, audio, scale, masks, grid):
    """diffusers' forward with ComfyUI's `attn1_patch` (the speaker map from each block's
    rotated q and k) and `attn2_patch` (x + scale · audio cross-attention of norm_x(x), after
    the cross-attention's residual) on every block."""
    heads = model.config.num_attention_heads
    hooks, state = [], {}
    for i, block in enumerate(model.blocks):
        def attn1_pre(module, args, i=i):
            h, rotary = args[0], args[3]
            b, s, _ = h.shape
            q = module.norm_q(module.to_q(h)).unflatten(2, (heads, -1))
            k = module.norm_k(module.to_k(h)).unflatten(2, (heads, -1))
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            state["map"] = speaker_map(q, k, masks, grid[1]) if masks is not None else None
        def norm2_pre(module, args):
            state["x"] = args[0]
        def attn2_post(module, args, out, i=i):
            h = state["x"] + out
            talk = talk_attention(parts, i, parts.norm_x[i](h), audio, grid, heads, state.pop("map"))
            return out + talk * scale
        hooks += [block.attn1.register_forward_pre_hook(attn1_pre), block.norm2.register_forward_pre_hook(norm2_pre),
                  block.attn2.register_forward_hook(attn2_post)]
    try:
        return model(x, timestep, context, return_dict=False)[0]
    finally:
        for hk in hooks:
            hk.remove()


def infinite_talk(out, g):
    """An I2V DiT without CLIP-vision tokens (ComfyUI then gives the image keys the whole text:
    diffusers sees the text twice) and a two-block InfiniteTalk patch; one speaker whose audio
    ends before the clip (padded), and two speakers one after the other with region masks."""
    model, in_ch = build("i2v", g)
    dim = model.config.num_attention_heads * model.config.attention_head_dim
    parts = TalkParts(dim, len(model.blocks))
    randomize(parts, g)
    sd = comfy_state(model)
    save_file(sd, out / "talk.safetensors")
    save_file(parts.comfy_state(), out / "talk_patch.safetensors")
    t, h, w = 3, 6, 8
    grid = (t, (h // 2) * (w // 2))
    for case, speakers, start, masks, scale in (
            ("talk_single", [torch.randn(7, TALK_LAYERS, TALK_WIDTH, generator=g)], 0, None, 0.8),
            ("talk_two", [torch.randn(20, TALK_LAYERS, TALK_WIDTH, generator=g) for _ in range(2)], 3,
             (torch.rand(2, grid[1], generator=g) > 0.5).float(), 1.0)):
        if len(speakers) == 2:  # "add": one after the other, each silent while the other speaks
            n = speakers[0].shape[0]
            speakers = [torch.cat([speakers[0], torch.zeros_like(speakers[1])]),
                        torch.cat([torch.zeros_like(speakers[0]), speakers[1]])]
        context = torch.randn(1, 512, 32, generator=g)
        context[:, 200:] = 0
        io = {"x": torch.randn(1, in_ch, t, h, w, generator=g), "context": context,
              "timestep": torch.tensor([712.25]), "start": torch.tensor([start]), "scale": torch.tensor([scale])}
        for j, s in enumerate(speakers):
            io[f"speaker{j}"] = s
        if masks is not None:
            io["masks"] = masks
        with torch.no_grad():
            audio = parts.project(speakers, start, start + 4 * (t - 1) + 1)
            io["audio"] = audio
            io["output"] = forward_talk(model, parts, io["x"], io["timestep"], torch.cat([context, context], 1),
                                        audio, scale, masks, grid)
        save_file(io, out / f"{case}_io.safetensors")


# Wan Animate 2 (ComfyUI's `comfy/ldm/wan/model_animate2.py`, written out over diffusers' I2V
# modules): a pose branch beside the video, each video frame after the reference slot attending
# to its pose frame's keys and values too.
class PoseSelfAttention(torch.nn.Module):
    """A block's attn1 that either hands back its rotated keys and values (the pose branch) or
    lets frame j of the video also attend to pose frame j - 1 (the reference slot, frame 0,
    has none), with the reference slot's values scaled."""

    def __init__(self, attn, heads):
        super().__init__()
        self.attn, self.heads = attn, heads
        self.mode, self.kept, self.pose_kv, self.hw, self.frames, self.ref = "pose", None, None, 0, 0, 1.0

    def forward(self, h, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        a = self.attn
        q, k, v = rotated_qkv(a, h, self.heads, rotary_emb)
        sdpa = lambda q, k, v: F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        if self.mode == "pose":
            self.kept = (k, v)
            out = sdpa(q, k, v)
        else:
            hw = self.hw
            v = torch.cat([v[:, :hw] * self.ref, v[:, hw:]], 1)
            kp, vp = self.pose_kv
            outs = []
            for j in range(self.frames):
                qj = q[:, j * hw:(j + 1) * hw]
                if j == 0:
                    outs.append(sdpa(qj, k, v))
                else:
                    pk, pv = kp[:, (j - 1) * hw:j * hw], vp[:, (j - 1) * hw:j * hw]
                    outs.append(sdpa(qj, torch.cat([k, pk], 1), torch.cat([v, pv], 1)))
            out = torch.cat(outs, 1)
        return a.to_out[0](out.flatten(2))


def pose_keys_values(block, attn, x, proj, rotary, heads):
    """A block's self-attention keys and values of its input `x` alone."""
    shift, scale = (block.scale_shift_table + proj.float()).chunk(6, dim=1)[:2]
    normed = (block.norm1(x.float()) * (1 + scale) + shift).type_as(x)
    a = attn.attn
    k = a.norm_k(a.to_k(normed)).unflatten(2, (heads, -1))
    return apply_rotary(k, *rotary), a.to_v(normed).unflatten(2, (heads, -1))


def forward_animate2(model, x, timestep, context, clip, pose, context_pose, clip_pose, pose_strength,
                     ref_strength, stored=None):
    """WanAnimate2Model.forward_orig over diffusers' modules. `stored`: turns each pose block
    input into the value the keys and values are taken from (the int8 cache's round trip)."""
    b, _, t, h, w = x.shape
    heads = model.config.num_attention_heads
    hw = (h // 2) * (w // 2)
    tokens = model.patch_embedding(x).flatten(2).transpose(1, 2)
    rotary = model.rope(x.new_zeros(b, 1, t, h, w))
    tp = pose.shape[2]
    pose_in = torch.cat([pose, torch.ones_like(pose[:, :4]), pose], 1)
    ptokens = model.patch_embedding(pose_in).flatten(2).transpose(1, 2)
    ids = lambda s, n: torch.arange(s, s + n, dtype=torch.float32)
    protary = rope_at(model, ids(1, tp), ids(0, h // 2), ids(w // 2, w // 2))
    temb, proj, ctx, image = model.condition_embedder(timestep, context, clip)
    ctx = torch.cat([image, ctx], 1)
    proj = proj.unflatten(1, (6, -1))
    _, pproj, pctx, pimage = model.condition_embedder(torch.ones(b), context_pose, clip_pose)
    pctx = torch.cat([pimage, pctx], 1)
    pproj = pproj.unflatten(1, (6, -1))
    originals = [block.attn1 for block in model.blocks]
    try:
        for block in model.blocks:
            block.attn1 = PoseSelfAttention(block.attn1, heads)
        for block in model.blocks:
            attn = block.attn1
            attn.mode = "pose"
            x_in = ptokens
            ptokens = block(ptokens, pctx, pproj, protary)
            kp, vp = attn.kept
            if stored is not None:
                kp, vp = pose_keys_values(block, attn, stored(x_in), pproj, protary, heads)
            attn.mode, attn.pose_kv = "gen", (kp, vp * pose_strength)
            attn.hw, attn.frames, attn.ref = hw, t, ref_strength
            tokens = block(tokens, ctx, proj, rotary)
    finally:
        for block, attn in zip(model.blocks, originals):
            block.attn1 = attn
    shift, scale = (model.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    tokens = (model.norm_out(tokens.float()) * (1 + scale) + shift).type_as(tokens)
    tokens = model.proj_out(tokens)
    tokens = tokens.reshape(b, t, h // 2, w // 2, 1, 2, 2, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return tokens.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def int8_round_trip(x):
    """WanAnimate2Cache's int8 storage: comfy-kitchen's ConvRot row-wise quantization per token
    (group 256 divided by 4 until it divides the width) and back."""
    from comfy_kitchen.backends.eager import quantization as ck
    width = x.shape[-1]
    group = 256
    while group > 4 and width % group:
        group //= 4
    q, s = ck.quantize_int8_convrot_weight(x[:1].reshape(-1, width), group)
    back = ck.dequantize_int8_convrot_weight(q, s, group).reshape(x[:1].shape).to(x.dtype)
    return back.repeat(x.shape[0], 1, 1)


def int4_round_trip(x):
    """WanAnimate2Cache's int4 storage: comfy-kitchen's ConvRot W4A4 weight quantization per
    token (the same group) and back."""
    from comfy_kitchen.backends.eager import convrot_w4a4 as ck
    width = x.shape[-1]
    group = 256
    while group > 4 and width % group:
        group //= 4
    q, s = ck.quantize_convrot_w4a4_weight(x[:1].reshape(-1, width), group)
    back = ck.dequantize_convrot_w4a4_weight(q, s, group, output_dtype=x.dtype).reshape(x[:1].shape)
    return back.repeat(x.shape[0], 1, 1)


def animate2(out, g):
    """Wan Animate 2 on the I2V DiT: a video of the reference slot and two frames, a two-frame
    pose video with its own prompt and CLIP vision, pose strength 0.8, reference strength 1.3;
    and the same call with the pose branch's block inputs read back from the int8 and int4
    caches."""
    import json
    model, _ = build("i2v", g)
    sd = comfy_state(model)
    save_file(sd, out / "animate2.safetensors",
              metadata={"config": json.dumps({"transformer": {"model_type": "animate2"}})})
    t, h, w = 3, 6, 8
    context, context_pose = torch.randn(1, 512, 32, generator=g), torch.randn(1, 512, 32, generator=g)
    context[:, 200:] = 0
    context_pose[:, 150:] = 0
    io = {"x": torch.randn(1, 36, t, h, w, generator=g), "context": context, "timestep": torch.tensor([712.25]),
          "clip": torch.randn(1, CLIP_TOKENS, 1280, generator=g),
          "pose": torch.randn(1, 16, t - 1, h, w, generator=g), "context_pose": context_pose,
          "clip_pose": torch.randn(1, CLIP_TOKENS, 1280, generator=g)}
    args = (model, io["x"], io["timestep"], io["context"], io["clip"], io["pose"], io["context_pose"],
            io["clip_pose"], 0.8, 1.3)
    with torch.no_grad():
        io["output"] = forward_animate2(*args)
        io["output_int8"] = forward_animate2(*args, stored=int8_round_trip)
        io["output_int4"] = forward_animate2(*args, stored=int4_round_trip)
    save_file(io, out / "animate2_io.safetensors")


# Wan Dancer (ComfyUI's `comfy/ldm/wan/model_wandancer.py`, written out over diffusers' I2V
# modules): a music encoder injected after chosen blocks, a second CLIP-vision projection for the
# reference image, and a global patch embedding, head and time spacing for videos whose frames
# stand for another rate than 30 fps.
DANCER_MUSIC_DIM, DANCER_MUSIC_HEADS, DANCER_INJECT_AFTER = 256, 4, [0, 4]


class DancerParts(torch.nn.Module):
    def __init__(self, dim, heads, in_ch):
        super().__init__()
        self.heads = heads
        self.projection = torch.nn.Linear(35, DANCER_MUSIC_DIM)
        self.layers = torch.nn.ModuleList()
        for _ in range(2):
            layer = torch.nn.Module()
            layer.in_proj = torch.nn.Linear(DANCER_MUSIC_DIM, 3 * DANCER_MUSIC_DIM)
            layer.out_proj = torch.nn.Linear(DANCER_MUSIC_DIM, DANCER_MUSIC_DIM)
            layer.linear1 = torch.nn.Linear(DANCER_MUSIC_DIM, 1024)
            layer.linear2 = torch.nn.Linear(1024, DANCER_MUSIC_DIM)
            layer.norm1 = torch.nn.LayerNorm(DANCER_MUSIC_DIM)
            layer.norm2 = torch.nn.LayerNorm(DANCER_MUSIC_DIM)
            self.layers.append(layer)
        self.injectors = torch.nn.ModuleList()
        for _ in DANCER_INJECT_AFTER:
            inj = torch.nn.Module()
            for name in ("q", "k", "v", "o"):
                setattr(inj, name, torch.nn.Linear(dim, dim))
            inj.norm_q = torch.nn.RMSNorm(dim, eps=1e-6)
            inj.norm_k = torch.nn.RMSNorm(dim, eps=1e-6)
            self.injectors.append(inj)
        self.refimage = torch.nn.Sequential(torch.nn.LayerNorm(1280), torch.nn.Linear(1280, 1280), torch.nn.GELU(),
                                            torch.nn.Linear(1280, dim), torch.nn.LayerNorm(dim))
        self.patch_global = torch.nn.Conv3d(in_ch, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.head_global = torch.nn.Linear(dim, 16 * 4)
        self.head_global_modulation = torch.nn.Parameter(torch.zeros(1, 2, dim))

    def comfy_state(self):
        sd = {"music_projection.weight": self.projection.weight, "music_projection.bias": self.projection.bias,
              "patch_embedding_global.weight": self.patch_global.weight,
              "patch_embedding_global.bias": self.patch_global.bias,
              "head_global.head.weight": self.head_global.weight, "head_global.head.bias": self.head_global.bias,
              "head_global.modulation": self.head_global_modulation}
        for i, layer in enumerate(self.layers):
            p = f"music_encoder.{i}"
            # The original files' MultiheadAttention layout (ComfyUI splits in_proj on load).
            sd[f"{p}.self_attn.in_proj_weight"] = layer.in_proj.weight
            sd[f"{p}.self_attn.in_proj_bias"] = layer.in_proj.bias
            for name in ("out_proj",):
                sd[f"{p}.self_attn.{name}.weight"] = getattr(layer, name).weight
                sd[f"{p}.self_attn.{name}.bias"] = getattr(layer, name).bias
            for name in ("linear1", "linear2", "norm1", "norm2"):
                sd[f"{p}.{name}.weight"] = getattr(layer, name).weight
                sd[f"{p}.{name}.bias"] = getattr(layer, name).bias
        for i, inj in enumerate(self.injectors):
            p = f"music_injector.injector.{i}"
            for name in ("q", "k", "v", "o"):
                sd[f"{p}.{name}.weight"] = getattr(inj, name).weight
                sd[f"{p}.{name}.bias"] = getattr(inj, name).bias
            sd[f"{p}.norm_q.weight"] = inj.norm_q.weight
            sd[f"{p}.norm_k.weight"] = inj.norm_k.weight
        for n in (0, 1, 3, 4):
            sd[f"img_emb_refimage.proj.{n}.weight"] = self.refimage[n].weight
            sd[f"img_emb_refimage.proj.{n}.bias"] = self.refimage[n].bias
        return {k: v.detach().contiguous() for k, v in sd.items()}

    def music(self, features, frames, dim):
        """The encoded features stretched to 8 tokens per latent frame."""
        x = self.projection(features)
        n = x.shape[1]
        head = DANCER_MUSIC_DIM // DANCER_MUSIC_HEADS
        freqs = 1.0 / (10000.0 ** (torch.arange(0, head, 2, dtype=torch.float64) / head))
        angles = torch.arange(n, dtype=torch.float64)[:, None] * freqs
        cos = angles.cos().float().repeat_interleave(2, dim=1).view(1, n, 1, head)
        sin = angles.sin().float().repeat_interleave(2, dim=1).view(1, n, 1, head)
        for layer in self.layers:
            q, k, v = layer.in_proj(layer.norm1(x)).chunk(3, dim=-1)
            q, k, v = (t.unflatten(2, (DANCER_MUSIC_HEADS, -1)) for t in (q, k, v))
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            x = x + layer.out_proj(out.transpose(1, 2).flatten(2))
            x = x + layer.linear2(F.gelu(layer.linear1(layer.norm2(x))))
        return F.interpolate(x.unsqueeze(1), size=(frames * 8, dim), mode="bilinear").squeeze(1)

    def inject(self, i, tokens, seq, music, scale):
        """Each run of video tokens attends (full cross-attention, q and k RMS-normed) to its
        music token."""
        inj = self.injectors[i]
        b, _, dim = tokens.shape
        runs = music.shape[1]
        video = tokens[:, :seq].reshape(b * runs, seq // runs, dim)
        q = inj.norm_q(inj.q(F.layer_norm(video, (dim,), eps=1e-6))).unflatten(2, (self.heads, -1))
        m = music.reshape(b * runs, 1, dim)
        k = inj.norm_k(inj.k(m)).unflatten(2, (self.heads, -1))
        v = inj.v(m).unflatten(2, (self.heads, -1))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        residual = inj.o(out.transpose(1, 2).flatten(2)).reshape(b, seq, dim)
        return torch.cat([tokens[:, :seq] + residual * scale, tokens[:, seq:]], dim=1)


def forward_dancer(model, parts, x, timestep, context, clip, clip_ref, music, fps, scale):
    """WanDancerModel.forward_orig over diffusers' modules."""
    b, _, t, h, w = x.shape
    dim = model.config.num_attention_heads * model.config.attention_head_dim
    is_global = int(fps + 0.5) != 30
    patch = parts.patch_global if is_global else model.patch_embedding
    tokens = patch(x).flatten(2).transpose(1, 2)
    seq = tokens.shape[1]
    if is_global:
        spacing = 30.0 / fps
        times = torch.arange(t, dtype=torch.float32) * spacing
        times[-1] = int(spacing * t + 0.5) - 1
    else:
        times = torch.arange(t, dtype=torch.float32)
    rotary = rope_at(model, times, torch.arange(h // 2, dtype=torch.float32), torch.arange(w // 2, dtype=torch.float32))
    temb, proj, ctx, image = model.condition_embedder(timestep, context, clip)
    ctx = torch.cat([parts.refimage(clip_ref), image, ctx], 1)
    proj = proj.unflatten(1, (6, -1))
    tokens_music = parts.music(music, t, dim)
    for i, block in enumerate(model.blocks):
        tokens = block(tokens, ctx, proj, rotary)
        if i in DANCER_INJECT_AFTER:
            tokens = parts.inject(DANCER_INJECT_AFTER.index(i), tokens, seq, tokens_music, scale)
    table, head = ((parts.head_global_modulation, parts.head_global) if is_global
                   else (model.scale_shift_table, model.proj_out))
    shift, scale_ = (table + temb.unsqueeze(1)).chunk(2, dim=1)
    tokens = head(model.norm_out(tokens.float()) * (1 + scale_) + shift)
    tokens = tokens.reshape(b, t, h // 2, w // 2, 1, 2, 2, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return tokens.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def dancer(out, g):
    """Wan Dancer on a five-block I2V DiT (music injected after blocks 0 and 4): a 3-frame 8×8
    latent, 20 frames of music features at scale 0.7, the first frame's and the reference
    image's CLIP vision; once at 30 fps (the DiT's own patch embedding, head and time
    positions) and once at 6 fps (the global ones, frames 0, 5 and 14)."""
    in_ch = 36
    kwargs = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=in_ch,
                  out_channels=16, text_dim=32, freq_dim=16, ffn_dim=96, num_layers=5, cross_attn_norm=True,
                  qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=256)
    model = WanTransformer3DModel(**kwargs).eval()
    randomize(model, g)
    parts = DancerParts(256, 2, in_ch).eval()
    randomize(parts, g)
    sd = comfy_state(model)
    sd.update(parts.comfy_state())
    save_file(sd, out / "dancer.safetensors")
    t, h, w = 3, 8, 8
    context = torch.randn(1, 512, 32, generator=g)
    context[:, 120:] = 0
    io = {"x": torch.randn(1, in_ch, t, h, w, generator=g), "context": context, "timestep": torch.tensor([712.25]),
          "clip": torch.randn(1, CLIP_TOKENS, 1280, generator=g), "clip_ref": torch.randn(1, CLIP_TOKENS, 1280, generator=g),
          "music": torch.randn(1, 20, 35, generator=g)}
    with torch.no_grad():
        for name, fps in (("output_30fps", 30.0), ("output_6fps", 6.0)):
            io[name] = forward_dancer(model, parts, io["x"], io["timestep"], io["context"], io["clip"],
                                      io["clip_ref"], io["music"], fps, 0.7)
    save_file(io, out / "dancer_io.safetensors")


SCAIL_MASK_CHANNELS = 28
# Where SCAIL puts the pose's columns and, in replacement mode, the reference frames' rows.
SCAIL_POSE_COLUMN = SCAIL_REFERENCE_ROW = 120.0


def forward_scail(model, parts, x, timestep, context, clip, reference, pose, masks=None, replacement=False):
    """ComfyUI's SCAILWanModel / SCAIL2WanModel around diffusers' modules: the reference frames
    patch-embedded in front of the video, the half-size pose video through its own patch
    embedding after it; SCAIL-2's identity masks (`masks` = (reference and video masks, pose
    masks)) through `patch_embedding_mask` added to both. Rotations: in animation mode the
    reference and the video share one grid and the pose follows in time, stretched over the
    video's extent from column 120 on; in replacement mode (`ref_mask_flag` false) the
    references sit at row 120, the video starts at the last reference's time and the pose
    beside it. The head's output is cut back to the video."""
    pose_conv, mask_conv = parts
    b, _, t, h, w = x.shape
    r, (f, hp, wp) = reference.shape[2], pose.shape[2:]
    tokens = model.patch_embedding(torch.cat([reference, x], 2))
    pose_tokens = pose_conv(pose)
    if masks is not None:
        tokens = tokens + mask_conv(masks[0])
        pose_tokens = pose_tokens + mask_conv(masks[1])
    flat = lambda t_: t_.flatten(2).transpose(1, 2)
    tokens = torch.cat([flat(tokens), flat(pose_tokens)], 1)
    gh, gw = h // 2, w // 2
    hs, ws = h / hp, w / wp

    def pose_grid(start):
        return (scaled_ids(f, 1.0, start), scaled_ids(hp // 2, hs, (hs - 1) / 2),
                scaled_ids(wp // 2, ws, SCAIL_POSE_COLUMN + (ws - 1) / 2))

    if replacement:
        start = max(r - 1, 0)
        grids = [(scaled_ids(r), scaled_ids(gh, 1.0, SCAIL_REFERENCE_ROW), scaled_ids(gw)),
                 (scaled_ids(t, 1.0, start), scaled_ids(gh), scaled_ids(gw)), pose_grid(start)]
    else:
        grids = [(scaled_ids(r + t), scaled_ids(gh), scaled_ids(gw)), pose_grid(r)]
    tables = [rope_at(model, *grid) for grid in grids]
    rotary = (torch.cat([c for c, _ in tables], 1), torch.cat([s_ for _, s_ in tables], 1))
    temb, proj, context, image = model.condition_embedder(timestep, context, clip)
    proj = proj.unflatten(1, (6, -1))
    context = torch.concat([image, context], dim=1)
    for block in model.blocks:
        tokens = block(tokens, context, proj, rotary)
    shift, scale = (model.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    tokens = (model.norm_out(tokens.float()) * (1 + scale) + shift).type_as(tokens)
    start = r * gh * gw
    tokens = model.proj_out(tokens)[:, start:start + t * gh * gw]
    tokens = tokens.reshape(b, t, gh, gw, 1, 2, 2, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return tokens.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def scail(out, g):
    """SCAIL-2 (20 input channels, the pose and mask patch embeddings): two reference frames
    (an extra one and the primary), a 3-frame video at 8×12 and its pose at 4×6, with identity
    masks, in animation and in replacement mode; and SCAIL (no mask stream) in animation
    mode."""
    model, in_ch = build("scail", g)
    width = model.config.num_attention_heads * model.config.attention_head_dim
    pose_conv = torch.nn.Conv3d(in_ch, width, kernel_size=(1, 2, 2), stride=(1, 2, 2))
    mask_conv = torch.nn.Conv3d(SCAIL_MASK_CHANNELS, width, kernel_size=(1, 2, 2), stride=(1, 2, 2))
    randomize(pose_conv, g)
    randomize(mask_conv, g)
    sd = comfy_state(model)
    sd["patch_embedding_pose.weight"] = pose_conv.weight.detach().contiguous()
    sd["patch_embedding_pose.bias"] = pose_conv.bias.detach().contiguous()
    save_file(sd, out / "scail.safetensors")
    sd["patch_embedding_mask.weight"] = mask_conv.weight.detach().contiguous()
    sd["patch_embedding_mask.bias"] = mask_conv.bias.detach().contiguous()
    save_file(sd, out / "scail2.safetensors")
    t, h, w, r = 3, 8, 12, 2
    # diffusers takes the last 512 context tokens as the text (see main).
    context = torch.randn(1, 512, 32, generator=g)
    context[:, 7:] = 0
    base = {"x": torch.randn(1, in_ch, t, h, w, generator=g), "context": context,
            "timestep": torch.tensor([712.25]), "clip": torch.randn(1, CLIP_TOKENS, 1280, generator=g),
            "scail_reference": torch.randn(1, in_ch, r, h, w, generator=g),
            "scail_pose": torch.randn(1, in_ch, t, h // 2, w // 2, generator=g)}
    masks = ((torch.rand(1, SCAIL_MASK_CHANNELS, r + t, h, w, generator=g) > 0.5).float(),
             (torch.rand(1, SCAIL_MASK_CHANNELS, t, h // 2, w // 2, generator=g) > 0.5).float())
    cases = {"scail": ((pose_conv, None), None, False), "scail2": ((pose_conv, mask_conv), masks, False),
             "scail2_replace": ((pose_conv, mask_conv), masks, True)}
    for name, (parts, m, replacement) in cases.items():
        io = dict(base)
        if m is not None:
            io["scail_reference_mask"], io["scail_pose_mask"] = m
        if replacement:
            io["scail_replacement"] = torch.tensor([1.0])
        with torch.no_grad():
            io["output"] = forward_scail(model, parts, io["x"], io["timestep"], io["context"], io["clip"],
                                         io["scail_reference"], io["scail_pose"], m, replacement)
        save_file(io, out / f"{name}_io.safetensors")


def main(out):
    g = torch.Generator().manual_seed(42)
    for variant in ("t2v", "i2v", "ti2v", "flf2v", "vace", "ref", "camera"):
        model, in_ch = build(variant, g)
        sd = comfy_state(model)
        conv = reference_conv(model, g) if variant == "ref" else None
        if conv is not None:
            sd["ref_conv.weight"] = conv.weight.detach().contiguous()
            sd["ref_conv.bias"] = conv.bias.detach().contiguous()
        adapter = None
        if variant == "camera":
            adapter = CameraAdapter(model.config.num_attention_heads * model.config.attention_head_dim)
            randomize(adapter, g)
            sd.update({k: v.detach().contiguous() for k, v in adapter.comfy_state().items()})
        save_file(sd, out / f"{variant}.safetensors")
        t, h, w = 3, 6, 8
        x = torch.randn(1, in_ch, t, h, w, generator=g)
        # diffusers splits I2V context as "the last 512 tokens are text" (UMT5's padded length);
        # ComfyUI splits after the 257 CLIP tokens. They agree when the text has 512 tokens.
        image = variant in ("i2v", "flf2v", "camera")
        context = torch.randn(1, 512 if image else 7, 32, generator=g)
        if image:
            context[:, 200:] = 0  # a 200-token prompt padded with zeros, as ComfyUI's UMT5 gives
        io = {"x": x, "context": context}
        kwargs = {}
        if variant == "ti2v":
            # ComfyUI gives Wan 2.2 one timestep per latent frame; diffusers one per token.
            per_frame = torch.tensor([[0.0, 640.5, 999.0]])
            io["timestep"] = per_frame
            timestep = per_frame.repeat_interleave((h // 2) * (w // 2), dim=1)
        else:
            timestep = torch.tensor([712.25])
            io["timestep"] = timestep
        if image:
            # FLF2V: ComfyUI joins the two images' states along the tokens, diffusers takes them
            # as two batch items and joins them itself.
            frames = 2 if variant == "flf2v" else 1
            clip = torch.randn(frames, CLIP_TOKENS, 1280, generator=g)
            io["clip"] = clip.reshape(1, frames * CLIP_TOKENS, 1280)
            kwargs["encoder_hidden_states_image"] = clip
        if variant == "vace":
            # One control at strength 0.7: diffusers scales per control layer.
            control = torch.randn(1, VACE_IN, t, h, w, generator=g)
            io["vace_context"] = control.unsqueeze(1)
            io["vace_strength"] = torch.tensor([0.7])
            kwargs["control_hidden_states"] = control
            kwargs["control_hidden_states_scale"] = torch.tensor([0.7, 0.7])
        with torch.no_grad():
            if variant == "ref":
                io["reference"] = torch.randn(1, 16, h, w, generator=g)
                io["output"] = forward_over_modules(model, x, timestep, context,
                                                   reference=(conv, io["reference"]))
            elif variant == "camera":
                io["camera"] = torch.randn(1, CAMERA_CHANNELS, t, h * 8, w * 8, generator=g)
                io["output"] = forward_over_modules(model, x, timestep, context, clip=clip,
                                                   camera=(adapter, io["camera"]))
            else:
                io["output"] = model(x, timestep, context, return_dict=False, **kwargs)[0]
        save_file(io, out / f"{variant}_io.safetensors")
        if variant == "t2v":
            save_file(cfg_batch(model, x, g), out / "t2v_cfg_io.safetensors")
    s2v(out, g)
    infinite_talk(out, g)
    bernini(out, g)
    humo(out, g)
    causal_forcing(out, g)
    animate2(out, g)
    dancer(out, g)
    scail(out, g)


def cfg_batch(model, x, g):
    """A CFG call as ComfyUI makes it: cond and uncond on one latent and timestep, each prompt
    padded with zero rows (5 and 9 tokens of 24)."""
    context = torch.randn(2, 24, 32, generator=g)
    context[0, 5:] = 0
    context[1, 9:] = 0
    io = {"x": x.repeat(2, 1, 1, 1, 1), "context": context, "timestep": torch.tensor([712.25, 712.25])}
    with torch.no_grad():
        io["output"] = model(io["x"], io["timestep"], context, return_dict=False)[0]
    return io


if __name__ == "__main__":
    main(Path(sys.argv[1]))
