"""A tiny LTX-2 audio-video transformer and its two text connectors from PyPI diffusers
(LTX2VideoTransformer3DModel, LTX2ConnectorTransformer1d), every parameter randomized, saved
under ComfyUI's key names (comfy/ldm/lightricks/av_model.py, embeddings_connector.py) with the
`config.transformer` header metadata an LTX-2 checkpoint carries, plus inputs and outputs, all
float32.

Where ComfyUI deliberately differs from diffusers the reference is set up so the difference
cannot show, and the Rust test says so:
- ComfyUI's q/k RMSNorms use eps 1e-5 (diffusers 1e-6): the reference's are set to 1e-5.
- ComfyUI's video-to-audio attention reads the video *after* the audio-to-video update;
  diffusers (and Lightricks' code) read it before. So two files: `ltxav_v2a` with the
  audio-to-video output projections zeroed (the update is then nothing), and `ltxav_a2v` with
  the video-to-audio ones zeroed.
- ComfyUI gates audio-to-video with the audio's largest timestep, diffusers with each video
  token's: `ltxav_a2v` uses one timestep for every token, `ltxav_v2a` gives the first latent
  frame timestep 0 (an image-to-video conditioning frame), where only video-to-audio runs.

A third file, `ltxav_guides` (set up as `ltxav_v2a`), runs with two LTXVAddGuide guides appended
to the video, one latent frame each at timestep 0: their tokens take the keyframe positions
ComfyUI's node gives them (`keyframe_idxs`, here a first-frame image and an image at pixel frame
17), and the video self-attention weighs them as ComfyUI's `GuideAttentionMask` does, by strength
0.5 and by strength 0.8 times an area-averaged pixel mask. diffusers takes positions as
`video_coords` and the weights as a multiplicative `video_self_attention_mask` m, which it turns
into the bias (1 − m)·−10000; m = 1 + ln(w)/10000 gives ComfyUI's bias ln(w), exactly only in
float64, so this file's reference runs in float64.

A fourth file, `ltxav23` (set up as `ltxav_v2a`), has LTX-2.3's layers: every attention gated
per head, the text cross-attention modulated by the timestep (queries, and the text by a prompt
adaLN at the largest timestep, which diffusers takes as `sigma`), no caption projection, and the
text through LTX2TextConnectors' per-modality path: Gemma's hidden states (`states`) RMS-normed
per token and projected once per stream (ComfyUI's `text_embedding_projection.
{video,audio}_aggregate_embed`, in the checkpoint), then gated connectors as wide as each stream.

`ltxav_a2v` also runs with an ID-LoRA reference clip before the audio (`reference`,
`video_out_ref`, `audio_out_ref`): diffusers takes its tokens, per-token timesteps and spans as
they are; the set-up (timestep 0, spans ending one latent frame before 0, tokens dropped from
the output) is ComfyUI's. Only audio-to-video runs there, so ComfyUI's other gating of the
video-to-audio update at the reference's timestep 0 cannot show.

Usage: DIR -> writes DIR/NAME.safetensors and DIR/NAME_io.safetensors for the four names."""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import LTX2VideoTransformer3DModel
from diffusers.pipelines.ltx2.connectors import LTX2ConnectorTransformer1d, LTX2TextConnectors
from safetensors.torch import save_file

VIDEO_HEADS, VIDEO_HEAD_DIM, AUDIO_HEADS, AUDIO_HEAD_DIM = 2, 16, 2, 8
CAPTION, CONNECTOR_HEADS, CONNECTOR_HEAD_DIM = 24, 3, 8
VIDEO_CHANNELS, LAYERS, FPS, SIGMA = 128, 2, 24.0, 0.7
QK_EPS = 1e-5
# LTX-2.3's text: Gemma's hidden size and hidden-state count, here tiny.
GEMMA_HIDDEN, GEMMA_STATES = 24, 3

CONFIG = {
    "num_attention_heads": VIDEO_HEADS, "attention_head_dim": VIDEO_HEAD_DIM,
    "cross_attention_dim": VIDEO_HEADS * VIDEO_HEAD_DIM, "in_channels": VIDEO_CHANNELS,
    "audio_num_attention_heads": AUDIO_HEADS, "audio_attention_head_dim": AUDIO_HEAD_DIM,
    "audio_cross_attention_dim": AUDIO_HEADS * AUDIO_HEAD_DIM, "audio_in_channels": 128,
    "caption_channels": CAPTION, "num_layers": LAYERS,
    "connector_num_attention_heads": CONNECTOR_HEADS,
    "connector_attention_head_dim": CONNECTOR_HEAD_DIM,
    "positional_embedding_theta": 10000.0, "positional_embedding_max_pos": [20, 2048, 2048],
    "audio_positional_embedding_max_pos": [20], "causal_temporal_positioning": True,
    "use_middle_indices_grid": True, "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000, "rope_type": "split",
    "frequencies_precision": "float64",
}

# diffusers name -> ComfyUI name, for the parts that are renamed.
RENAMES = [
    ("proj_in.", "patchify_proj."), ("audio_proj_in.", "audio_patchify_proj."),
    ("time_embed.", "adaln_single."), ("audio_time_embed.", "audio_adaln_single."),
    ("av_cross_attn_video_scale_shift.", "av_ca_video_scale_shift_adaln_single."),
    ("av_cross_attn_audio_scale_shift.", "av_ca_audio_scale_shift_adaln_single."),
    ("av_cross_attn_video_a2v_gate.", "av_ca_a2v_gate_adaln_single."),
    ("av_cross_attn_audio_v2a_gate.", "av_ca_v2a_gate_adaln_single."),
    ("prompt_adaln.", "prompt_adaln_single."), ("audio_prompt_adaln.", "audio_prompt_adaln_single."),
]

CONFIG_23 = {
    **CONFIG,
    "apply_gated_attention": True, "connector_apply_gated_attention": True,
    "cross_attention_adaln": True, "caption_proj_before_connector": True,
    "caption_projection_first_linear": False,
    "connector_num_attention_heads": VIDEO_HEADS, "connector_attention_head_dim": VIDEO_HEAD_DIM,
    "audio_connector_num_attention_heads": AUDIO_HEADS,
    "audio_connector_attention_head_dim": AUDIO_HEAD_DIM,
}


def to_comfy(key):
    for old, new in RENAMES:
        if key.startswith(old):
            key = new + key[len(old):]
    return (key.replace(".norm_q.", ".q_norm.").replace(".norm_k.", ".k_norm.")
            .replace(".video_a2v_cross_attn_scale_shift_table", ".scale_shift_table_a2v_ca_video")
            .replace(".audio_a2v_cross_attn_scale_shift_table", ".scale_shift_table_a2v_ca_audio"))


def connector_to_comfy(key):
    return key.replace("transformer_blocks.", "transformer_1d_blocks.") \
        .replace(".norm_q.", ".q_norm.").replace(".norm_k.", ".k_norm.")


def randomize(module, g):
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("bias") or "scale_shift_table" in name:
                p.copy_(0.1 * noise)
            elif name.endswith("learnable_registers"):
                p.copy_(noise)
            elif p.dim() == 1:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(noise / p.shape[1] ** 0.5)
        for m in module.modules():
            if hasattr(m, "norm_q"):
                m.norm_q.eps = m.norm_k.eps = QK_EPS


def connector(g):
    c = LTX2ConnectorTransformer1d(num_attention_heads=CONNECTOR_HEADS,
                                   attention_head_dim=CONNECTOR_HEAD_DIM, num_layers=2,
                                   rope_type="split").eval()
    randomize(c, g)
    return c


def keyframe_spans(frame_idx, height, width):
    """ComfyUI's keyframe_idxs for a one-image guide: its latent cell spans in pixels, the
    time axis causal (one pixel frame), shifted to `frame_idx`."""
    grid = torch.meshgrid(torch.arange(1), torch.arange(height), torch.arange(width), indexing="ij")
    start = torch.stack([a.flatten() for a in grid]) * torch.tensor([8, 32, 32]).view(3, 1)
    spans = torch.stack([start, start + torch.tensor([8, 32, 32]).view(3, 1)], -1)
    spans[0] = (spans[0] + 1 - 8).clamp(min=0) + frame_idx
    return spans.float()


def guide_mask(tokens, weights):
    """diffusers' multiplicative mask giving ComfyUI's additive ln(w) between the video's
    tokens and the guides' (the last len(weights) tokens)."""
    bias = torch.zeros(tokens, tokens, dtype=torch.float64)
    start = tokens - len(weights)
    log_w = weights.double().log()
    bias[:start, start:] = log_w
    bias[start:, :start] = log_w[:, None]
    return (1 + bias / 10000.0)[None]


def text_connectors_23(g):
    """LTX-2.3's per-stream text projections and gated connectors, as wide as each stream."""
    c = LTX2TextConnectors(
        caption_channels=GEMMA_HIDDEN, text_proj_in_factor=GEMMA_STATES,
        video_connector_num_attention_heads=VIDEO_HEADS,
        video_connector_attention_head_dim=VIDEO_HEAD_DIM, video_connector_num_layers=2,
        video_gated_attn=True, audio_connector_num_attention_heads=AUDIO_HEADS,
        audio_connector_attention_head_dim=AUDIO_HEAD_DIM, audio_connector_num_layers=2,
        audio_gated_attn=True, rope_type="split", per_modality_projections=True,
        video_hidden_dim=VIDEO_HEADS * VIDEO_HEAD_DIM, audio_hidden_dim=AUDIO_HEADS * AUDIO_HEAD_DIM,
        proj_bias=True).eval()
    randomize(c, g)
    return c


def reference_forward(dit, video, audio, contexts, video_timestep, frames, height, width):
    """The forward with an ID-LoRA reference clip before the audio, set up as ComfyUI's LTXAV
    model sets it up for LTXVReferenceAudio's `ref_audio`: its tokens first, at timestep 0,
    their spans moved back to end one latent frame (0.04 s) before time 0; the output's
    reference tokens dropped. Returns the reference tokens and the two outputs."""
    g = torch.Generator().manual_seed(5)
    ref_frames, audio_frames = 3, audio.shape[2]
    ref_tokens = torch.randn(1, 8, ref_frames, 16, generator=g).permute(0, 2, 1, 3).flatten(2)
    cpu = torch.device("cpu")
    own = dit.audio_rope.prepare_audio_coords(1, audio_frames, cpu)
    ref = dit.audio_rope.prepare_audio_coords(1, ref_frames, cpu)
    ref = ref - (ref[0, 0, -1, 1].item() + 0.04)
    tokens = torch.cat([ref_tokens, audio.permute(0, 2, 1, 3).flatten(2)], 1)
    audio_timestep = torch.cat([torch.zeros(1, ref_frames),
                                torch.full((1, audio_frames), SIGMA * 1000)], 1)
    with torch.no_grad():
        v, a = dit(
            hidden_states=video.flatten(2).transpose(1, 2), audio_hidden_states=tokens,
            encoder_hidden_states=contexts[0], audio_encoder_hidden_states=contexts[1],
            timestep=video_timestep * 1000, audio_timestep=audio_timestep,
            num_frames=frames, height=height, width=width, fps=FPS,
            audio_num_frames=ref_frames + audio_frames, audio_coords=torch.cat([ref, own], 2),
            return_dict=False)
    a = a[:, ref_frames:]
    return {"reference": ref_tokens,
            "video_out_ref": v.transpose(1, 2).reshape(video.shape).contiguous(),
            "audio_out_ref": a.reshape(1, audio_frames, 8, 16).permute(0, 2, 1, 3).contiguous()}


def write(name, silenced, per_token, out, g, guides=False, v23=False, reference=False):
    dit = LTX2VideoTransformer3DModel(
        in_channels=VIDEO_CHANNELS, out_channels=VIDEO_CHANNELS, num_attention_heads=VIDEO_HEADS,
        attention_head_dim=VIDEO_HEAD_DIM, cross_attention_dim=VIDEO_HEADS * VIDEO_HEAD_DIM,
        audio_in_channels=128, audio_out_channels=128, audio_num_attention_heads=AUDIO_HEADS,
        audio_attention_head_dim=AUDIO_HEAD_DIM,
        audio_cross_attention_dim=AUDIO_HEADS * AUDIO_HEAD_DIM, num_layers=LAYERS,
        caption_channels=CAPTION, rope_type="split", gated_attn=v23, cross_attn_mod=v23,
        audio_gated_attn=v23, audio_cross_attn_mod=v23, use_prompt_embeddings=not v23).eval()
    randomize(dit, g)
    with torch.no_grad():
        for block in dit.transformer_blocks:
            getattr(block, silenced).to_out[0].weight.zero_()
            getattr(block, silenced).to_out[0].bias.zero_()
    sd = {f"model.diffusion_model.{to_comfy(k)}": v for k, v in dit.state_dict().items()}
    if v23:
        text_connectors = text_connectors_23(g)
        video_connector = text_connectors.video_connector
        audio_connector = text_connectors.audio_connector
        for stream in ("video", "audio"):
            proj = getattr(text_connectors, f"{stream}_text_proj_in")
            sd[f"text_embedding_projection.{stream}_aggregate_embed.weight"] = proj.weight
            sd[f"text_embedding_projection.{stream}_aggregate_embed.bias"] = proj.bias
    else:
        video_connector, audio_connector = connector(g), connector(g)
    for prefix, c in (("video", video_connector), ("audio", audio_connector)):
        for k, v in c.state_dict().items():
            sd[f"model.diffusion_model.{prefix}_embeddings_connector.{connector_to_comfy(k)}"] = v
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / f"{name}.safetensors"),
              metadata={"config": json.dumps({"transformer": CONFIG_23 if v23 else CONFIG})})

    frames, height, width, audio_frames, words = 3, 2, 3, 5, 7
    guide_frames = 2 if guides else 0
    video = torch.randn(1, VIDEO_CHANNELS, frames + guide_frames, height, width, generator=g)
    audio = torch.randn(1, 8, audio_frames, 16, generator=g)
    width_in = GEMMA_HIDDEN * GEMMA_STATES if v23 else CAPTION
    text = torch.randn(1, words, width_in, generator=g)
    # diffusers' connectors take a whole number of register blocks and a mask (ComfyUI appends
    # the registers itself): the prompt, then padding that the registers replace.
    padded = torch.cat([text, torch.randn(1, 1024 - words, width_in, generator=g)], 1)
    mask = torch.zeros(1, 1, 1, 1024)
    mask[..., words:] = -torch.finfo(torch.float32).max
    cells = height * width
    tokens = (frames + guide_frames) * cells
    video_timestep = torch.full((1, tokens), SIGMA)
    if per_token:
        video_timestep[:, :cells] = 0.0
    extra, io = {}, {}
    if guides:
        video_timestep[:, frames * cells:] = 0.0
        pixel_mask = 0.2 + 0.8 * torch.rand(1, 1, 1, height * 32, width * 32, generator=g)
        weights = torch.cat([torch.full((cells,), 0.5),
                             0.8 * F.interpolate(pixel_mask[0], size=(height, width),
                                                 mode="area").flatten()])
        keyframes = torch.cat([keyframe_spans(0, height, width),
                               keyframe_spans(17, height, width)], 1)
        coords = dit.rope.prepare_video_coords(1, frames + guide_frames, height, width,
                                               torch.device("cpu"), fps=FPS)
        coords[0, :, frames * cells:] = keyframes
        coords[0, 0, frames * cells:] /= FPS
        extra = {"video_coords": coords.double(),
                 "video_self_attention_mask": guide_mask(tokens, weights)}
        io = {"keyframes": keyframes, "pixel_mask": pixel_mask}
        dit, video_connector, audio_connector = dit.double(), video_connector.double(), \
            audio_connector.double()
    dtype = torch.float64 if guides else torch.float32
    with torch.no_grad():
        if v23:
            # Gemma's states [b, t, hidden, states] (the states innermost, as `text` lays them).
            binary = torch.zeros(1, 1024, dtype=torch.int64)
            binary[:, :words] = 1
            video_context, audio_context, _ = text_connectors(padded, binary)
            # The largest timesteps ComfyUI's prompt adaLN reads.
            extra = {"sigma": torch.tensor([SIGMA * 1000]), "audio_sigma": torch.tensor([SIGMA * 1000])}
        else:
            video_context = video_connector(padded.to(dtype), mask.to(dtype))[0]
            audio_context = audio_connector(padded.to(dtype), mask.to(dtype))[0]
        v, a = dit(
            hidden_states=video.flatten(2).transpose(1, 2).to(dtype),
            audio_hidden_states=audio.permute(0, 2, 1, 3).flatten(2).to(dtype),
            encoder_hidden_states=video_context, audio_encoder_hidden_states=audio_context,
            timestep=(video_timestep * 1000).to(dtype),
            audio_timestep=torch.full((1, audio_frames), SIGMA * 1000, dtype=dtype),
            num_frames=frames + guide_frames, height=height, width=width, fps=FPS,
            audio_num_frames=audio_frames, return_dict=False, **extra)
    if v23:
        io["states"] = text.view(1, words, GEMMA_HIDDEN, GEMMA_STATES).clone()
    if reference:
        io.update(reference_forward(dit, video, audio, (video_context, audio_context),
                                    video_timestep, frames, height, width))
    save_file({
        "video": video, "audio": audio, "text": text, "video_timestep": video_timestep,
        "context": torch.cat([video_context, audio_context], -1).float().contiguous(),
        "video_out": v.transpose(1, 2).reshape(video.shape).float().contiguous(),
        "audio_out": a.reshape(1, audio_frames, 8, 16).permute(0, 2, 1, 3).float().contiguous(),
        **io,
    }, str(out / f"{name}_io.safetensors"))


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    write("ltxav_v2a", "audio_to_video_attn", True, out, g)
    write("ltxav_a2v", "video_to_audio_attn", False, out, g, reference=True)
    write("ltxav_guides", "audio_to_video_attn", True, out, g, guides=True)
    write("ltxav23", "audio_to_video_attn", True, out, g, v23=True)


if __name__ == "__main__":
    main()
