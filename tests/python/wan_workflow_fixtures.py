"""Tiny random-weight models in ComfyUI's layouts under the file names the official Wan
templates load, for running those templates end to end on the CPU:

  models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors     Wan 2.1 T2V DiT
  models/diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors Wan 2.1 I2V DiT (CLIP tokens)
  models/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors      Wan 2.2 TI2V DiT (48 channels)
  models/diffusion_models/wan2.2_{t2v,i2v}_{high,low}_noise_14B_fp8_scaled.safetensors
      the Wan 2.2 A14B pairs (I2V: 36 input channels, no CLIP tokens), block Linears in
      ComfyUI's scaled FP8
  models/loras/wan2.2_{t2v,i2v}_lightx2v_4steps_lora_*_{high,low}_noise.safetensors
  models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors  UMT5 in scaled FP8 (its Linears)
                                                              with its spiece_model
  models/vae/wan_2.1_vae.safetensors, wan2.2_vae.safetensors   Wan VAEs
  models/clip_vision/clip_vision_h.safetensors                 CLIP vision tower
and for the first-last-frame, Fun and VACE templates:
  models/diffusion_models/wan2.1_flf2v_720p_14B_fp16.safetensors  I2V with learned positions
      for two images' CLIP tokens
  models/diffusion_models/wan2.1_fun_{inp,control}_1.3B_bf16.safetensors  Fun InP / Control 2.1
      (I2V layout with 36 / 48 input channels)
  models/diffusion_models/wan2.2_fun_inpaint_{high,low}_noise_14B_fp8_scaled.safetensors,
      wan2.2_fun_inpaint_5B_bf16.safetensors                   Fun InP (mask + start/end latents)
  models/diffusion_models/wan2.2_fun_control_{high,low}_noise_14B_fp8_scaled.safetensors,
      wan2.2_fun_control_5B_bf16.safetensors                   Fun Control (control latents,
                                                              mask, start latents; ref_conv)
  models/diffusion_models/wan2.1_fun_camera_v1.1_{1.3B,14B}_bf16.safetensors,
      wan2.2_fun_camera_{high,low}_noise_14B_fp8_scaled.safetensors  Fun Camera (control adapter)
  models/diffusion_models/Wan2_1-I2V-ATI-14B_fp8_e4m3fn.safetensors  ATI (I2V, plain FP8 Linears)
  models/diffusion_models/wan2.1_t2v_14B_fp8_scaled.safetensors, loras/wan_alpha_2.1_rgba_lora,
      vae/wan_alpha_2.1_vae_{rgb,alpha}_channel.safetensors  Wan-Alpha (RGB and alpha decoders)
  models/diffusion_models/wan2.1_vace_14B_fp16.safetensors      VACE (control blocks)
  models/loras/Wan21_CausVid_14B_T2V_lora_rank32.safetensors,
      lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors  LoRAs for the VACE DiT
  models/text_encoders/umt5_xxl_fp16.safetensors               UMT5 unquantized
and for Wan Animate 2:
  models/diffusion_models/wan_animate_2{,_distill}_int8_convrot.safetensors  the I2V DiT marked
      `animate2` in its header config, block Linears in comfy-kitchen's int8 ConvRot layout
  models/vae/Wan2_1_VAE_bf16.safetensors                       the Wan 2.1 VAE in bf16
and for VACE inpainting (SAM 3.1 finds what to repaint):
  models/checkpoints/sam3.1_multiplex_fp16.safetensors          SAM 3.1 (tests/python/sam3_reference.py)
  models/diffusion_models/wan2.1_14B_SCAIL_2_{fp16,int8_convrot}.safetensors  SCAIL-2 (20 input
      channels, pose and identity-mask patch embeddings), plain and in INT8 ConvRot
  models/loras/wan2.1_SCAIL_2_DPO_lora_bf16.safetensors         a LoRA for it
and for Wan Dancer:
  models/diffusion_models/wan2.2_dancer_14b_{global,local}_fp8_scaled.safetensors  I2V DiTs with
      the music encoder (its original stacked in_proj), two music injectors, the reference
      image's CLIP projection and the global patch embedding and head

Usage: BASE_DIR (the server's base directory)."""
import json
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel, WanVACETransformer3DModel
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

import sam3_reference
import spiece_reference
import wan_reference
import wan_vae_reference

TEXT_DIM = 32
CLIP_WIDTH = 64
CLIP_TOKENS = 5  # a 28 px image in 14 px patches, and the class token


def randomize(model, g, scale=0.1):
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            is_gain = ("norm" in name and name.endswith("weight")) or name.endswith("gamma")
            p.copy_(1.0 + noise if is_gain else noise)


def wan_dit(in_ch, out_ch, i2v, g, flf=False, ref_channels=None, vace=False, camera=False):
    """A two-block Wan DiT in ComfyUI's layout: I2V with CLIP tokens (`flf`: positions for two
    images'), Fun Control's `ref_conv` from `ref_channels`, VACE control blocks, or Fun
    Camera's control adapter (24 camera channels, pixel-unshuffled by 8)."""
    kwargs = dict(
        patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=128, in_channels=in_ch,
        out_channels=out_ch, text_dim=TEXT_DIM, freq_dim=16, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
        image_dim=CLIP_WIDTH if i2v else None, added_kv_proj_dim=128 if i2v else None,
        pos_embed_seq_len=2 * CLIP_TOKENS if flf else None)
    if vace:
        model = WanVACETransformer3DModel(**kwargs, vace_layers=[0, 1], vace_in_channels=96).eval()
    else:
        model = WanTransformer3DModel(**kwargs).eval()
    randomize(model, g)
    sd = wan_reference.comfy_state(model)
    if ref_channels:
        sd["ref_conv.weight"] = torch.randn(128, ref_channels, 2, 2, generator=g) * 0.1
        sd["ref_conv.bias"] = torch.randn(128, generator=g) * 0.1
    if camera:
        shapes = {"conv": (128, 24 * 64, 2, 2), "residual_blocks.0.conv1": (128, 128, 3, 3),
                  "residual_blocks.0.conv2": (128, 128, 3, 3)}
        for name, shape in shapes.items():
            sd[f"control_adapter.{name}.weight"] = torch.randn(*shape, generator=g) * 0.02
            sd[f"control_adapter.{name}.bias"] = torch.randn(shape[0], generator=g) * 0.02
    return sd


LORA_STRENGTH = 0.8
LORA_MODULES = ("self_attn.q", "cross_attn.k", "ffn.0")


def lora_and_merged(dit, g, rank=4, alpha=2.0):
    """A LoRA for the T2V DiT in the `diffusion_model.<module>.lora_A/B` form with alphas, and
    the DiT with it merged at LORA_STRENGTH the way ComfyUI merges (float32 W + s·alpha/r·B·A)."""
    lora, merged = {}, dict(dit)
    blocks = sorted({int(k.split(".")[1]) for k in dit if k.startswith("blocks.")})
    for b in blocks:
        for module in LORA_MODULES:
            key = f"blocks.{b}.{module}"
            weight = dit[f"{key}.weight"]
            down = torch.randn(rank, weight.shape[1], generator=g) * 0.1
            up = torch.randn(weight.shape[0], rank, generator=g) * 0.1
            lora[f"diffusion_model.{key}.lora_A.weight"] = down
            lora[f"diffusion_model.{key}.lora_B.weight"] = up
            lora[f"diffusion_model.{key}.alpha"] = torch.tensor(alpha)
            diff = up.float() @ down.float()
            merged[f"{key}.weight"] = (weight.float() + diff * (LORA_STRENGTH * alpha / rank)).to(weight.dtype)
    return lora, merged


def fp8_scaled(sd, quantized):
    """ComfyUI's `fp8_scaled` layout: the Linear weights `quantized` picks as float8_e4m3fn
    with a per-tensor `scale_weight`, everything else as it was, and the `scaled_fp8` marker."""
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, value in sd.items():
        if quantized(key):
            scale = value.abs().amax().float() / 448
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key[:-len("weight")] + "scale_weight"] = scale
        else:
            out[key] = value
    return out


def fp8_scaled_kj(sd, quantized):
    """Kijai's `fp8_scaled_e4m3fn_KJ` layout of the same format: a bf16 `scaled_fp8` marker and
    bf16 per-tensor scales, everything else in bf16."""
    out = {"scaled_fp8": torch.zeros((), dtype=torch.bfloat16)}
    for key, value in sd.items():
        if quantized(key):
            scale = (value.abs().amax().float() / 448).bfloat16()
            out[key] = (value.float() / scale.float()).to(torch.float8_e4m3fn)
            out[key[:-len("weight")] + "scale_weight"] = scale
        else:
            out[key] = value.bfloat16()
    return out


def fp8_plain(sd, quantized):
    """Linear weights `quantized` picks stored as float8_e4m3fn without a scale (the layout of
    the community's `_fp8_e4m3fn` Wan files), everything else as it was."""
    return {k: v.to(torch.float8_e4m3fn) if quantized(k) else v for k, v in sd.items()}


def int8_convrot(sd, quantized, group=16):
    """ComfyUI's int8 ConvRot layout (comfy-kitchen's `int8_tensorwise` with `convrot`): the
    Linear weights `quantized` picks rotated per group of input channels and rounded to int8
    with a scale per row, a `comfy_quant` entry per layer naming the format; the rest in bf16."""
    from comfy_kitchen.backends.eager import quantization as ck
    conf = {"format": "int8_tensorwise", "convrot": True, "convrot_groupsize": group}
    marker = torch.tensor(list(json.dumps(conf).encode()), dtype=torch.uint8)
    out = {}
    for key, value in sd.items():
        if quantized(key):
            prefix = key[:-len("weight")]
            out[key], out[prefix + "weight_scale"] = ck.quantize_int8_convrot_weight(value.float(), group)
            out[prefix + "comfy_quant"] = marker.clone()
        else:
            out[key] = value.bfloat16()
    return out


def dit_linear(key):
    return key.startswith("blocks.") and key.endswith(".weight") and ".norm" not in key \
        and "modulation" not in key


def t5_linear(key):
    return key.endswith((".q.weight", ".k.weight", ".v.weight", ".o.weight", ".wi_0.weight",
                         ".wi_1.weight", ".wo.weight"))


A14B_LORAS = {"t2v": "wan2.2_t2v_lightx2v_4steps_lora_v1.1_{}_noise",
              "i2v": "wan2.2_i2v_lightx2v_4steps_lora_v1_{}_noise"}


def umt5(vocab, g):
    config = UMT5Config(vocab_size=vocab, d_model=TEXT_DIM, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=32, relative_attention_max_distance=128,
                        feed_forward_proj="gated-gelu", dropout_rate=0.0)
    model = UMT5EncoderModel(config).eval()
    randomize(model, g, 0.3)
    return {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def vae(v22, g):
    if v22:
        model = AutoencoderKLWan(base_dim=8, decoder_base_dim=12, z_dim=48, dim_mult=[1, 2, 4, 4],
                                 num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True],
                                 is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                                 scale_factor_spatial=16).eval()
    else:
        model = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                 attn_scales=[], temperal_downsample=[False, True, True]).eval()
    wan_vae_reference.randomize(model, g)
    state = model.state_dict()
    up_index = wan_vae_reference.flat_up_index(state)
    return {wan_vae_reference.to_comfy(k, up_index, v22): v.contiguous() for k, v in state.items()}


def clip_vision(g):
    config = CLIPVisionConfig(hidden_size=CLIP_WIDTH, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=16, image_size=28, patch_size=14, projection_dim=24,
                              hidden_act="quick_gelu")
    model = CLIPVisionModelWithProjection(config).eval()
    randomize(model, g)
    return {k: v.contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}


def bf16(sd):
    return {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}


def control_models(g, plain_te):
    """The first-last-frame, Fun InP, Fun Control, Fun Camera, ATI, WanMove, Wan-Alpha and VACE models, their LoRAs, and UMT5 in
    fp16. The Fun models' inputs: noise, then (InP) mask 4 + start/end latents, or (Control)
    control latents, mask 4 and start latents (ComfyUI's `concat_mask_index`)."""
    files = {"diffusion_models/wan2.1_flf2v_720p_14B_fp16.safetensors": wan_dit(36, 16, True, g, flf=True),
             "diffusion_models/wan2.1_fun_inp_1.3B_bf16.safetensors": bf16(wan_dit(36, 16, True, g)),
             "diffusion_models/wan2.1_fun_control_1.3B_bf16.safetensors": bf16(wan_dit(48, 16, True, g))}
    for noise in ("high", "low"):
        inpaint = wan_dit(36, 16, False, g)
        files[f"diffusion_models/wan2.2_fun_inpaint_{noise}_noise_14B_fp8_scaled.safetensors"] = \
            fp8_scaled(inpaint, dit_linear)
        control = wan_dit(52, 16, False, g, ref_channels=16)
        files[f"diffusion_models/wan2.2_fun_control_{noise}_noise_14B_fp8_scaled.safetensors"] = \
            fp8_scaled(control, dit_linear)
    files["diffusion_models/wan2.2_fun_inpaint_5B_bf16.safetensors"] = bf16(wan_dit(100, 48, False, g))
    files["diffusion_models/wan2.2_fun_control_5B_bf16.safetensors"] = \
        bf16(wan_dit(148, 48, False, g, ref_channels=48))
    for size in ("1.3B", "14B"):
        files[f"diffusion_models/wan2.1_fun_camera_v1.1_{size}_bf16.safetensors"] = \
            bf16(wan_dit(32, 16, True, g, camera=True))
    for noise in ("high", "low"):
        camera = wan_dit(36, 16, False, g, camera=True)
        files[f"diffusion_models/wan2.2_fun_camera_{noise}_noise_14B_fp8_scaled.safetensors"] = \
            fp8_scaled(camera, dit_linear)
    files["diffusion_models/Wan2_1-I2V-ATI-14B_fp8_e4m3fn.safetensors"] = \
        fp8_plain(wan_dit(36, 16, True, g), dit_linear)
    t2v_14b = wan_dit(16, 16, False, g)
    files["diffusion_models/wan2.1_t2v_14B_fp8_scaled.safetensors"] = fp8_scaled(t2v_14b, dit_linear)
    files["loras/wan_alpha_2.1_rgba_lora.safetensors"] = lora_and_merged(t2v_14b, g)[0]
    for channel in ("rgb", "alpha"):
        files[f"vae/wan_alpha_2.1_vae_{channel}_channel.safetensors"] = vae(False, g)
    vace = wan_dit(16, 16, False, g, vace=True)
    files["diffusion_models/wan2.1_vace_14B_fp16.safetensors"] = vace
    for lora in ("Wan21_CausVid_14B_T2V_lora_rank32", "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16"):
        files[f"loras/{lora}.safetensors"] = lora_and_merged(vace, g)[0]
    files["diffusion_models/Wan21-WanMove_fp8_scaled_e4m3fn_KJ.safetensors"] = \
        fp8_scaled_kj(wan_dit(36, 16, True, g), dit_linear)
    files["text_encoders/umt5_xxl_fp16.safetensors"] = {
        k: v.half() if v.is_floating_point() else v for k, v in plain_te.items()}
    return files


def s2v_extras(g, dim=128, audio_dim=1024, audio_layers=3, injectors=2):
    """What Wan 2.2 S2V adds to the DiT, in ComfyUI's names (`WanModel_S2V`): the control-video
    and marker embeddings, the causal audio encoder (4 audio tokens per frame, hidden width
    `dim`), `injectors` audio injectors with AdaIN, and the FramePack motion projections."""
    shapes = {"trainable_cond_mask.weight": (3, dim), "cond_encoder.weight": (dim, 16, 1, 2, 2),
              "cond_encoder.bias": (dim,), "casual_audio_encoder.weights": (1, audio_layers, 1, 1),
              "casual_audio_encoder.encoder.padding_tokens": (1, 1, 1, dim),
              "casual_audio_encoder.encoder.final_linear.weight": (dim, dim),
              "casual_audio_encoder.encoder.final_linear.bias": (dim,)}
    convs = {"conv1_local": (dim, audio_dim), "conv1_global": (dim // 4, audio_dim),
             "conv2": (dim // 2, dim // 4), "conv3": (dim, dim // 2)}
    for name, (out, inp) in convs.items():
        shapes[f"casual_audio_encoder.encoder.{name}.conv.weight"] = (out, inp, 3)
        shapes[f"casual_audio_encoder.encoder.{name}.conv.bias"] = (out,)
    for i in range(injectors):
        p = f"audio_injector.injector.{i}"
        for m in ("q", "k", "v", "o"):
            shapes[f"{p}.{m}.weight"], shapes[f"{p}.{m}.bias"] = (dim, dim), (dim,)
        shapes[f"{p}.norm_q.weight"] = shapes[f"{p}.norm_k.weight"] = (dim,)
        shapes[f"audio_injector.injector_adain_layers.{i}.linear.weight"] = (2 * dim, dim)
        shapes[f"audio_injector.injector_adain_layers.{i}.linear.bias"] = (2 * dim,)
    for name, kernel in (("proj", (1, 2, 2)), ("proj_2x", (2, 4, 4)), ("proj_4x", (4, 8, 8))):
        shapes[f"frame_packer.{name}.weight"] = (dim, 16, *kernel)
        shapes[f"frame_packer.{name}.bias"] = (dim,)
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(*shape, generator=g) * 0.05
        out[key] = 1.0 + noise if key.endswith(("norm_q.weight", "norm_k.weight")) else noise
    return out


def wav2vec2_large(g):
    """A "large"-shaped wav2vec2 (width 1024: layer-normed convolutions, pre-norm layers) in
    transformers' layout, two layers, narrow convolutions and position kernel so the file stays
    small; fp16 like ComfyUI's."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    config = Wav2Vec2Config(hidden_size=1024, num_hidden_layers=2, num_attention_heads=16,
                            intermediate_size=64, feat_extract_norm="layer", conv_bias=True,
                            do_stable_layer_norm=True, conv_dim=(32,) * 7,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16)
    model = Wav2Vec2Model(config).eval()
    randomize(model, g)
    return {k: v.half().contiguous() for k, v in model.state_dict().items()}


def sound_models(g):
    """Wan 2.2 S2V (its blocks FP8-scaled as the template's file) and its audio encoder."""
    s2v = wan_dit(16, 16, False, g)
    s2v.update(s2v_extras(g))
    return {"diffusion_models/wan2.2_s2v_14B_fp8_scaled.safetensors": fp8_scaled(s2v, dit_linear),
            "audio_encoders/wav2vec2_large_english_fp16.safetensors": wav2vec2_large(g)}


def wav2vec2_base(g):
    """A "base"-shaped wav2vec2 (width 768: group-normed first convolution, post-norm layers),
    two layers, otherwise narrow like `wav2vec2_large`; fp16."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    config = Wav2Vec2Config(hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                            intermediate_size=64, feat_extract_norm="group", conv_bias=False,
                            do_stable_layer_norm=False, conv_dim=(32,) * 7,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16)
    model = Wav2Vec2Model(config).eval()
    randomize(model, g)
    return {k: v.half().contiguous() for k, v in model.state_dict().items()}


def talk_models(g):
    """InfiniteTalk's template files: the I2V DiT in Kijai's FP8 layout, the InfiniteTalk
    patch for its width (features of the base wav2vec2's 2 layers × 768, 32 audio tokens of
    width 12 per latent frame), the base wav2vec2 and the bf16 VAE."""
    parts = wan_reference.TalkParts(128, 2, features=2 * 768, tokens=32, audio_dim=12)
    randomize(parts, g)
    return {"diffusion_models/Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors":
            fp8_scaled_kj(wan_dit(36, 16, True, g), dit_linear),
            "model_patches/wan2.1_infiniteTalk_multi_fp16.safetensors":
            {k: v.half() for k, v in parts.comfy_state().items()},
            "audio_encoders/wav2vec2-chinese-base_fp16.safetensors": wav2vec2_base(g),
            "vae/Wan2_1_VAE_bf16.safetensors": bf16(vae(False, g))}


def bernini_models(g):
    """Bernini-R's A14B pair (T2V-shaped DiTs, FP8-scaled) and the T2V lightx2v LoRA."""
    files = {}
    for noise in ("high", "low"):
        dit = wan_dit(16, 16, False, g)
        files[f"diffusion_models/wan2.2_bernini_r_{noise}_noise_fp8_scaled.safetensors"] = fp8_scaled(dit, dit_linear)
    files["loras/lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors"] = lora_and_merged(dit, g)[0]
    return files


def chrono_models(g):
    """ChronoEdit 14B (an I2V-shaped DiT) and its distillation LoRA."""
    dit = wan_dit(36, 16, True, g)
    return {"diffusion_models/chrono_edit_14B_fp16.safetensors": dit,
            "loras/chronoedit_distill_lora.safetensors": lora_and_merged(dit, g)[0]}


def whisper_large(g):
    """A Whisper encoder in large-v3's layout and layer count (32, as HuMo groups them; 128 mel
    bins) but 64 wide, under transformers' `model.encoder.` names; fp16."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    config = WhisperConfig(num_mel_bins=128, d_model=64, encoder_layers=32, encoder_attention_heads=1,
                           encoder_ffn_dim=64, max_source_positions=1500)
    encoder = WhisperEncoder(config).eval()
    randomize(encoder, g)
    return {f"model.encoder.{k}": v.half().contiguous() for k, v in encoder.state_dict().items()}


def humo_models(g):
    """HuMo 17B (36 input channels, plain FP8 like the template's file) reading the 64-wide
    Whisper's features, and the Whisper encoder."""
    dit = wan_dit(36, 16, False, g)
    parts = wan_reference.HumoParts(128, 2, features=64, audio_dim=24)
    randomize(parts, g)
    dit.update(parts.comfy_state())
    return {"diffusion_models/humo_17B_fp8_e4m3fn.safetensors": fp8_plain(dit, dit_linear),
            "audio_encoders/whisper_large_v3_fp16.safetensors": whisper_large(g)}


def causal_models(g):
    """Causal Forcing's framewise model: a T2V DiT whose header config marks it `causal_ar`."""
    config = json.dumps({"transformer": {"causal_ar": True}})
    return {"diffusion_models/causal_forcing-framewise.safetensors":
            (wan_dit(16, 16, False, g), {"config": config})}


def animate2_models(g):
    """Wan Animate 2 and its distilled form: I2V DiTs with `model_type: animate2` in the
    header config, in int8 ConvRot; the VAE under the name the templates load."""
    config = {"config": json.dumps({"transformer": {"model_type": "animate2"}})}
    return {f"diffusion_models/wan_animate_2{kind}_int8_convrot.safetensors":
            (int8_convrot(wan_dit(36, 16, True, g), dit_linear), config) for kind in ("", "_distill")} | {
        "vae/Wan2_1_VAE_bf16.safetensors": bf16(vae(False, g))}


def scail2_models(g):
    """SCAIL-2 (an I2V-shaped DiT of 20 input channels with the pose and identity-mask patch
    embeddings), its INT8 ConvRot form, and its DPO LoRA."""
    dit = wan_dit(20, 16, True, g)
    for name, channels in (("patch_embedding_pose", 20), ("patch_embedding_mask", 28)):
        dit[f"{name}.weight"] = torch.randn(128, channels, 1, 2, 2, generator=g) * 0.1
        dit[f"{name}.bias"] = torch.randn(128, generator=g) * 0.1
    return {"diffusion_models/wan2.1_14B_SCAIL_2_fp16.safetensors": dit,
            "diffusion_models/wan2.1_14B_SCAIL_2_int8_convrot.safetensors": int8_convrot(dit, dit_linear),
            "loras/wan2.1_SCAIL_2_DPO_lora_bf16.safetensors": lora_and_merged(dit, g)[0]}


def dancer_extras(g, dim=128, music_dim=256, injectors=2):
    """What Wan Dancer adds to the I2V DiT, in ComfyUI's names (`WanDancerModel`)."""
    shapes = {"music_projection.weight": (music_dim, 35), "music_projection.bias": (music_dim,),
              "patch_embedding_global.weight": (dim, 36, 1, 2, 2), "patch_embedding_global.bias": (dim,),
              "head_global.head.weight": (16 * 4, dim), "head_global.head.bias": (16 * 4,),
              "head_global.modulation": (1, 2, dim),
              "img_emb_refimage.proj.0.weight": (CLIP_WIDTH,), "img_emb_refimage.proj.0.bias": (CLIP_WIDTH,),
              "img_emb_refimage.proj.1.weight": (CLIP_WIDTH, CLIP_WIDTH),
              "img_emb_refimage.proj.1.bias": (CLIP_WIDTH,),
              "img_emb_refimage.proj.3.weight": (dim, CLIP_WIDTH), "img_emb_refimage.proj.3.bias": (dim,),
              "img_emb_refimage.proj.4.weight": (dim,), "img_emb_refimage.proj.4.bias": (dim,)}
    for i in range(2):
        p = f"music_encoder.{i}"
        shapes |= {f"{p}.self_attn.in_proj_weight": (3 * music_dim, music_dim),
                   f"{p}.self_attn.in_proj_bias": (3 * music_dim,),
                   f"{p}.self_attn.out_proj.weight": (music_dim, music_dim),
                   f"{p}.self_attn.out_proj.bias": (music_dim,),
                   f"{p}.linear1.weight": (1024, music_dim), f"{p}.linear1.bias": (1024,),
                   f"{p}.linear2.weight": (music_dim, 1024), f"{p}.linear2.bias": (music_dim,),
                   f"{p}.norm1.weight": (music_dim,), f"{p}.norm1.bias": (music_dim,),
                   f"{p}.norm2.weight": (music_dim,), f"{p}.norm2.bias": (music_dim,)}
    for i in range(injectors):
        p = f"music_injector.injector.{i}"
        for m in ("q", "k", "v", "o"):
            shapes[f"{p}.{m}.weight"], shapes[f"{p}.{m}.bias"] = (dim, dim), (dim,)
        shapes[f"{p}.norm_q.weight"] = shapes[f"{p}.norm_k.weight"] = (dim,)
    gains = ("norm1.weight", "norm2.weight", "norm_q.weight", "norm_k.weight", "proj.0.weight", "proj.4.weight")
    return {key: (1.0 if key.endswith(gains) else 0.0) + torch.randn(*shape, generator=g) * 0.05
            for key, shape in shapes.items()}


def dancer_models(g):
    """Wan Dancer's global and local models, block Linears in ComfyUI's scaled FP8."""
    return {f"diffusion_models/wan2.2_dancer_14b_{kind}_fp8_scaled.safetensors":
            fp8_scaled(wan_dit(36, 16, True, g) | dancer_extras(g), dit_linear) for kind in ("global", "local")}


def main(base):
    g = torch.Generator().manual_seed(3)
    models = base / "models"
    spiece = spiece_reference.train(120)
    plain_te = umt5(120, g)
    plain_te["spiece_model"] = torch.tensor(list(spiece), dtype=torch.uint8)
    te = fp8_scaled(plain_te, t5_linear)
    t2v = wan_dit(16, 16, False, g)
    lora, merged = lora_and_merged(t2v, g)
    files = {
        "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors": t2v,
        "diffusion_models/wan2.1_t2v_1.3B_lora_merged.safetensors": merged,
        "loras/wan_test_lora.safetensors": lora,
        "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors": wan_dit(36, 16, True, g),
        "diffusion_models/wan2.2_ti2v_5B_fp16.safetensors": wan_dit(48, 48, False, g),
        "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors": te,
        "vae/wan_2.1_vae.safetensors": vae(False, g),
        "vae/wan2.2_vae.safetensors": vae(True, g),
        "clip_vision/clip_vision_h.safetensors": clip_vision(g),
    }
    for kind, in_ch in (("t2v", 16), ("i2v", 36)):
        for noise in ("high", "low"):
            dit = wan_dit(in_ch, 16, False, g)
            files[f"diffusion_models/wan2.2_{kind}_{noise}_noise_14B_fp8_scaled.safetensors"] = \
                fp8_scaled(dit, dit_linear)
            files[f"loras/{A14B_LORAS[kind].format(noise)}.safetensors"] = lora_and_merged(dit, g)[0]
    files.update(control_models(g, plain_te))
    files.update(sound_models(g))
    files.update(talk_models(g))
    files.update(bernini_models(g))
    files.update(chrono_models(g))
    files.update(humo_models(g))
    files.update(causal_models(g))
    files.update(animate2_models(g))
    files.update(dancer_models(g))
    files.update(scail2_models(g))
    sam3 = sam3_reference.checkpoint(True, g)[0]
    files["checkpoints/sam3.1_multiplex_fp16.safetensors"] = {k: v.half() for k, v in sam3.items()}
    for name, sd in files.items():
        path = models / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sd, metadata = sd if isinstance(sd, tuple) else (sd, None)
        save_file(sd, str(path), metadata=metadata)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
