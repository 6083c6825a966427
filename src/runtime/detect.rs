//! What a weight file holds, from its keys and tensor shapes alone (ComfyUI's
//! `model_detection.py`, `sd.py: detect_te_model`, `clip_vision.py`): each component's
//! architecture and the configuration its shapes imply, so a tiny test file and a real file go
//! through the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::safetensors_file::SafetensorsFile;

/// One detected component of a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Detected {
    /// `diffusion_model`, `vae`, `audio_vae`, `vocoder`, `text_encoder`, `text_projection`,
    /// `clip_vision`, `audio_encoder` or `segmentation`.
    pub component: &'static str,
    /// ComfyUI's model class where it has one (`WAN21_T2V`, `Flux`, `SDXL`…), else ours.
    pub architecture: String,
    /// The key prefix the component sits under in this file (`""` for bare files).
    pub prefix: String,
    pub config: Value,
    pub parameters: u64,
}

/// The keys of one component with its prefix removed, and their shapes.
pub struct Keys<'a> {
    shapes: BTreeMap<&'a str, &'a [usize]>,
}

impl<'a> Keys<'a> {
    pub fn new(shapes: BTreeMap<&'a str, &'a [usize]>) -> Self {
        Self { shapes }
    }

    pub fn has(&self, key: &str) -> bool {
        self.shapes.contains_key(key)
    }

    pub fn shape(&self, key: &str) -> Result<&'a [usize]> {
        self.shapes
            .get(key)
            .copied()
            .with_context(|| format!("missing tensor {key:?}"))
    }

    /// Dimension `dim` (negative counts from the end) of tensor `key`.
    pub fn dim(&self, key: &str, dim: isize) -> Result<usize> {
        let shape = self.shape(key)?;
        let index = if dim < 0 {
            shape.len() as isize + dim
        } else {
            dim
        };
        shape
            .get(index as usize)
            .copied()
            .with_context(|| format!("tensor {key:?} {shape:?} has no dimension {dim}"))
    }

    /// How many `N` there are in keys starting `{prefix}N.` (ComfyUI's `count_blocks`: the
    /// first missing index ends the count).
    pub fn count_blocks(&self, prefix: &str) -> usize {
        let present: BTreeSet<usize> = self
            .shapes
            .keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter_map(|rest| rest.split('.').next()?.parse().ok())
            .collect();
        (0..).take_while(|i| present.contains(i)).count()
    }

    fn first_key_ending(&self, prefix: &str, suffix: &str) -> Option<&'a str> {
        self.shapes
            .keys()
            .find(|k| k.starts_with(prefix) && k.ends_with(suffix))
            .copied()
    }

    fn parameters(&self) -> u64 {
        self.shapes
            .values()
            .map(|s| s.iter().product::<usize>() as u64)
            .sum()
    }
}

/// The first released size whose shape test holds, else `null`.
fn size_label(known: &[(&str, bool)]) -> Value {
    known
        .iter()
        .find(|(_, matches)| *matches)
        .map_or(Value::Null, |(name, _)| json!(name))
}

fn wan(k: &Keys, meta: Option<&Value>) -> Result<(String, Value)> {
    let dim = k.dim("head.modulation", -1)?;
    let out_dim = k.dim("head.head.weight", 0)? / 4;
    let in_dim = k.dim("patch_embedding.weight", 1)?;
    let layers = k.count_blocks("blocks.");
    let model_type = if k.has("vace_patch_embedding.weight") {
        "vace"
    } else if k.has("control_adapter.conv.weight") {
        if k.has("img_emb.proj.0.bias") {
            "camera"
        } else {
            "camera_2.2"
        }
    } else if k.has("casual_audio_encoder.encoder.final_linear.weight") {
        "s2v"
    } else if k.has("audio_proj.audio_proj_glob_1.layer.bias") {
        "humo"
    } else if k.has("face_adapter.fuser_blocks.0.k_norm.weight") {
        "animate"
    } else if k.has("patch_embedding_mask.weight") {
        "scail2"
    } else if k.has("patch_embedding_pose.weight") {
        "scail"
    } else if k.has("patch_embedding_global.weight") {
        "wandancer"
    } else if k.has("img_emb.proj.0.bias") {
        "i2v"
    } else {
        "t2v"
    };
    let mut config = json!({
        "image_model": "wan2.1", "model_type": model_type, "dim": dim, "out_dim": out_dim,
        "in_dim": in_dim, "num_heads": dim / 128, "ffn_dim": k.dim("blocks.0.ffn.0.weight", 0)?,
        "num_layers": layers, "text_dim": k.dim("text_embedding.0.weight", 1)?,
        "freq_dim": k.dim("time_embedding.0.weight", 1)?,
        "size": size_label(&[("1.3B", dim == 1536 && layers == 30),
                             ("14B", dim == 5120 && layers == 40),
                             ("5B", dim == 3072 && layers == 30)]),
    });
    if model_type == "vace" {
        config["vace_in_dim"] = json!(k.dim("vace_patch_embedding.weight", 1)?);
        config["vace_layers"] = json!(k.count_blocks("vace_blocks."));
    }
    if k.has("img_emb.emb_pos") {
        config["flf_pos_embed_token_number"] = json!(k.dim("img_emb.emb_pos", 1)?);
    }
    if k.has("ref_conv.weight") {
        config["in_dim_ref_conv"] = json!(k.dim("ref_conv.weight", 1)?);
    }
    merge_metadata_config(&mut config, meta);
    // ComfyUI's supported-model order: WAN22_T2V (48-channel latent) first, then WAN21_T2V
    // (any t2v, which includes the Wan 2.2 A14B I2V and Fun pairs; Causal Forcing's files mark
    // themselves `causal_ar` in their config), WAN21_I2V (i2v with 36
    // input channels), WAN21_FunControl2V (i2v with 48), WAN21_Vace and the Fun Camera models
    // (WAN21_Camera with 32 input channels, WAN22_Camera with 36), WAN22_S2V, WAN22_Animate,
    // WAN_Animate2 (`model_type` "animate2" in the file's config), WAN22_WanDancer and the
    // SCAIL pair.
    let causal = config["causal_ar"] == json!(true);
    // The header's config may name the type (Wan Animate 2's files are I2V-shaped).
    let model_type = config["model_type"]
        .as_str()
        .unwrap_or(model_type)
        .to_string();
    let architecture = match (model_type.as_str(), in_dim) {
        ("t2v", _) if out_dim == 48 => "WAN22_T2V",
        ("t2v", _) if causal => "WAN21_CausalAR_T2V",
        ("t2v", _) => "WAN21_T2V",
        ("i2v", 36) => "WAN21_I2V",
        ("i2v", 48) => "WAN21_FunControl2V",
        ("vace", _) => "WAN21_Vace",
        ("camera", 32) => "WAN21_Camera",
        ("camera_2.2", 36) => "WAN22_Camera",
        ("s2v", _) => "WAN22_S2V",
        ("humo", _) => "WAN21_HuMo",
        ("animate", _) => "WAN22_Animate",
        // Wan Animate 2's files are I2V-shaped and name their type in their config.
        ("animate2", _) => "WAN_Animate2",
        ("wandancer", 36) => "WAN22_WanDancer",
        ("scail", _) => "WAN21_SCAIL",
        ("scail2", _) => "WAN21_SCAIL2",
        _ => bail!("a Wan {model_type} model (in_dim {in_dim}), which this build does not run"),
    };
    Ok((architecture.into(), config))
}

fn ltx(k: &Keys, meta: Option<&Value>) -> Result<(String, Value)> {
    let av = k.has("audio_adaln_single.linear.weight");
    let mut config = json!({
        "image_model": if av { "ltxav" } else { "ltxv" },
        "num_layers": k.count_blocks("transformer_blocks."),
        "attention_head_dim": k.dim("transformer_blocks.0.attn2.to_k.weight", 0)? / 32,
        "cross_attention_dim": k.dim("transformer_blocks.0.attn2.to_k.weight", 1)?,
    });
    merge_metadata_config(&mut config, meta);
    Ok((if av { "LTXAV" } else { "LTXV" }.into(), config))
}

fn flux(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    if k.has("double_stream_modulation_img.lin.weight") {
        bail!("a FLUX.2 model, which this build does not run");
    }
    let hidden = k.dim("img_in.weight", 0)?;
    let vec_in = if k.has("vector_in.in_layer.weight") {
        json!(k.dim("vector_in.in_layer.weight", 1)?)
    } else {
        Value::Null
    };
    let config = json!({
        "image_model": "flux", "hidden_size": hidden,
        "in_channels": k.dim("img_in.weight", 1)? / 4, "patch_size": 2,
        "context_in_dim": k.dim("txt_in.weight", 1)?, "vec_in_dim": vec_in,
        "num_heads": hidden / 128, "axes_dim": [16, 56, 56],
        "depth": k.count_blocks("double_blocks."),
        "depth_single_blocks": k.count_blocks("single_blocks."),
        "guidance_embed": k.has("guidance_in.in_layer.weight"),
    });
    Ok(("Flux".into(), config))
}

fn sdxl(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let model_channels = k.dim("input_blocks.0.0.weight", 0)?;
    let input_blocks = k.count_blocks("input_blocks.");
    let mut transformer_depth = Vec::new();
    let mut channel_mult = Vec::new();
    for i in 1..input_blocks {
        let res = format!("input_blocks.{i}.0.out_layers.3.weight");
        if k.has(&res) {
            channel_mult.push(k.dim(&res, 0)? / model_channels);
            transformer_depth
                .push(k.count_blocks(&format!("input_blocks.{i}.1.transformer_blocks.")));
        }
    }
    channel_mult.dedup();
    let context = k
        .first_key_ending("input_blocks.", "attn2.to_k.weight")
        .context("an SDXL UNet without cross-attention")?;
    let config = json!({
        "model_channels": model_channels, "in_channels": k.dim("input_blocks.0.0.weight", 1)?,
        "out_channels": k.dim("out.2.weight", 0)?,
        "adm_in_channels": k.dim("label_emb.0.0.weight", 1)?,
        "context_dim": k.dim(context, 1)?, "channel_mult": channel_mult,
        "transformer_depth": transformer_depth,
    });
    // Lotus-D (an SD 2 UNet) reads a 4-wide task embedding as its ADM vector. SDXL base has
    // three resolution levels (9 input blocks), the refiner four (12); smaller layouts (test
    // models) run as base.
    let architecture = if config["adm_in_channels"] == 4 {
        "LotusD"
    } else if input_blocks == 12 {
        "SDXLRefiner"
    } else {
        "SDXL"
    };
    Ok((architecture.into(), config))
}

fn magi(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let l0 = "videodit_blocks.layers.0.";
    let hidden = k.dim("x_embedder.weight", 0)?;
    let config = json!({
        "hidden_size": hidden, "in_channels": k.dim("x_embedder.weight", 1)?,
        "num_layers": k.count_blocks("videodit_blocks.layers."),
        "num_heads": hidden / 128,
        "num_query_groups": k.dim(&format!("{l0}self_attention.linear_qkv.k.weight"), 0)? / 128,
        "ffn_hidden": k.dim(&format!("{l0}mlp.linear_fc1.weight"), 0)?,
        "caption_channels": k.dim("y_embedder.y_proj_xattn.0.weight", 1)?,
        "size": size_label(&[("4.5B", hidden == 3072), ("24B", hidden == 6144)]),
    });
    Ok(("MAGI1".into(), config))
}

fn wan_vae(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let v22 = k.has("decoder.upsamples.0.upsamples.0.residual.2.weight");
    let config = json!({
        "z_dim": k.dim("conv2.weight", 0)?, "dim": k.dim("encoder.conv1.weight", 0)?,
        "in_channels": k.dim("encoder.conv1.weight", 1)?,
    });
    Ok((if v22 { "wan22_vae" } else { "wan21_vae" }.into(), config))
}

fn ltxv_vae(k: &Keys, meta: Option<&Value>) -> Result<(String, Value)> {
    // ComfyUI's version guess (`comfy/sd.py`) for files without a config: LTX-Video 0.9 has
    // 512 channels there, 0.9.1 has 1024, and 0.9.5 on (LTX-2's layout) adds a biased
    // space-to-depth convolution.
    let version = match k.dim("decoder.up_blocks.0.res_blocks.0.conv1.conv.weight", 0)? {
        1024 if k.has("encoder.down_blocks.1.conv.conv.bias") => 2,
        1024 => 1,
        _ => 0,
    };
    let mut config = json!({
        "latent_channels": k.dim("per_channel_statistics.mean-of-means", 0)?,
        "decoder_blocks": k.count_blocks("decoder.up_blocks."),
        "version": version,
    });
    if let Some(vae) = meta.and_then(|m| m.get("vae")) {
        config["metadata"] = vae.clone();
    }
    Ok(("ltxv_vae".into(), config))
}

/// The LDM `AutoencoderKL` of SD/SDXL (4 latent channels) and FLUX (16, no quant convs).
fn kl_vae(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let z = k.dim("decoder.conv_in.weight", 1)?;
    let config = json!({
        "z_channels": z, "ch": k.dim("encoder.conv_in.weight", 0)?,
        "levels": k.count_blocks("encoder.down."), "quant_conv": k.has("quant_conv.weight"),
    });
    let architecture = match z {
        16 => "flux_vae",
        4 => "sdxl_vae",
        other => bail!("a KL autoencoder with {other} latent channels (FLUX has 16, SDXL 4)"),
    };
    Ok((architecture.into(), config))
}

fn magi_vae(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let patch = k.shape("encoder.patch_embed.proj.weight")?;
    if patch.len() != 5 {
        bail!(
            "a ViT autoencoder with a {}-D patch embedding (MAGI-1's is 3-D)",
            patch.len() - 2
        );
    }
    let config = json!({
        "z_dim": k.dim("decoder.proj_in.weight", 1)?, "hidden_size": patch[0],
        "patch_size": &patch[2..], "num_layers": k.count_blocks("encoder.blocks."),
    });
    Ok(("magi1_vae".into(), config))
}

fn t5(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let layers = k.count_blocks("encoder.block.");
    // UMT5 gives every layer its own relative-position bias; T5 only the first.
    let umt5 = k.has("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight");
    let d_model = k.dim("shared.weight", 1)?;
    let config = json!({
        "num_layers": layers, "d_model": d_model, "vocab_size": k.dim("shared.weight", 0)?,
        "d_ff": k.dim("encoder.block.0.layer.1.DenseReluDense.wi_0.weight", 0)?,
        "num_heads": k.dim("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 1)?,
        "tokenizer_in_file": k.has("spiece_model"),
        "size": size_label(&[("xxl", d_model == 4096 && layers == 24)]),
    });
    Ok((if umt5 { "umt5" } else { "t5" }.into(), config))
}

/// CLIP text encoders, told apart by depth like ComfyUI (`layers.30` → G, `layers.22` → H).
fn clip_text(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let layers = k.count_blocks("text_model.encoder.layers.");
    let config = json!({
        "num_layers": layers,
        "hidden_size": k.dim("text_model.embeddings.token_embedding.weight", 1)?,
        "vocab_size": k.dim("text_model.embeddings.token_embedding.weight", 0)?,
        "projection": k.has("text_projection.weight"),
    });
    Ok((clip_name(layers).into(), config))
}

fn clip_name(layers: usize) -> &'static str {
    match layers {
        31.. => "clip_g",
        23.. => "clip_h",
        _ => "clip_l",
    }
}

/// OpenCLIP's own layout (SDXL checkpoints keep CLIP-G this way).
fn open_clip_text(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let layers = k.count_blocks("transformer.resblocks.");
    let config = json!({
        "num_layers": layers, "hidden_size": k.dim("token_embedding.weight", 1)?,
        "vocab_size": k.dim("token_embedding.weight", 0)?, "layout": "open_clip",
    });
    Ok((clip_name(layers).into(), config))
}

fn gemma3(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let layers = k.count_blocks("model.layers.");
    let config = json!({
        "num_layers": layers, "hidden_size": k.dim("model.embed_tokens.weight", 1)?,
        "vocab_size": k.dim("model.embed_tokens.weight", 0)?,
        "vision": k.has("vision_model.embeddings.patch_embedding.weight")
            || k.has("vision_tower.vision_model.embeddings.patch_embedding.weight"),
        "tokenizer_in_file": k.has("spiece_model"),
        "size": size_label(&[("12B", layers == 48)]),
    });
    Ok(("gemma3".into(), config))
}

fn clip_vision(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let layers = k.count_blocks("vision_model.encoder.layers.");
    let config = json!({
        "num_layers": layers,
        "hidden_size": k.dim("vision_model.encoder.layers.0.layer_norm1.weight", 0)?,
        "patch_size": k.dim("vision_model.embeddings.patch_embedding.weight", -1)?,
        "positions": k.dim("vision_model.embeddings.position_embedding.weight", 0)?,
    });
    let architecture = match layers {
        _ if !k.has("vision_model.embeddings.class_embedding") => "siglip_vision",
        48.. => "clip_vision_g",
        31.. => "clip_vision_h",
        _ => "clip_vision_l",
    };
    Ok((architecture.into(), config))
}

fn wav2vec2(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let width = k.dim("encoder.layer_norm.bias", 0)?;
    let architecture = match width {
        1024 => "wav2vec2_large",
        768 => "wav2vec2_base",
        other => bail!("a wav2vec2 width of {other}; ComfyUI knows 1024 (large) and 768 (base)"),
    };
    let config = json!({
        "hidden_size": width, "num_layers": k.count_blocks("encoder.layers."),
    });
    Ok((architecture.into(), config))
}

fn whisper(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let root = if k.has("model.encoder.conv1.weight") {
        "model.encoder."
    } else {
        "encoder."
    };
    let config = json!({
        "hidden_size": k.dim(&format!("{root}conv1.weight"), 0)?,
        "num_layers": k.count_blocks(&format!("{root}layers.")),
    });
    Ok(("whisper3".into(), config))
}

/// SAM 3 / SAM 3.1 checkpoints (`detector.*`, `tracker.*`); SAM 3.1 has the multiplex necks.
fn sam3(k: &Keys, _: Option<&Value>) -> Result<(String, Value)> {
    let trunk = "detector.backbone.vision_backbone.trunk.";
    let multiplex = k.has("detector.backbone.vision_backbone.propagation_convs.0.conv_1x1.weight");
    let config = json!({
        "embed_dim": k.dim(&format!("{trunk}blocks.0.attn.qkv.weight"), 1)?,
        "depth": k.count_blocks(&format!("{trunk}blocks.")),
        "d_model": k.dim("detector.transformer.decoder.query_embed.weight", 1)?,
        "num_queries": k.dim("detector.transformer.decoder.query_embed.weight", 0)?,
    });
    Ok((if multiplex { "SAM31" } else { "SAM3" }.into(), config))
}

type Rule = fn(&Keys, Option<&Value>) -> Result<(String, Value)>;

/// (component, what it is, the keys that identify it, how to read its config), in the order
/// they are tried; the identifying keys double as the "expected" list of the unknown-file error.
const RULES: &[(&str, &str, &[&str], Rule)] = &[
    (
        "diffusion_model",
        "Wan 2.1/2.2 DiT",
        &["head.modulation"],
        wan,
    ),
    (
        "diffusion_model",
        "LTX-Video/LTX-2 DiT",
        &["adaln_single.emb.timestep_embedder.linear_1.bias"],
        ltx,
    ),
    (
        "diffusion_model",
        "FLUX.1 DiT",
        &[
            "double_blocks.0.img_attn.norm.key_norm.scale",
            "img_in.weight",
        ],
        flux,
    ),
    (
        "diffusion_model",
        "UNet (SDXL, Lotus-D)",
        &["input_blocks.0.0.weight", "label_emb.0.0.weight"],
        sdxl,
    ),
    (
        "diffusion_model",
        "MAGI-1 DiT",
        &["videodit_blocks.layers.0.ada_modulate_layer.proj.0.weight"],
        magi,
    ),
    (
        "segmentation",
        "SAM 3 / SAM 3.1",
        &[
            "detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight",
            "detector.transformer.decoder.query_embed.weight",
        ],
        sam3,
    ),
    (
        "vae",
        "Wan 2.2 VAE",
        &["decoder.upsamples.0.upsamples.0.residual.2.weight"],
        wan_vae,
    ),
    (
        "vae",
        "Wan 2.1 VAE",
        &["decoder.middle.0.residual.0.gamma"],
        wan_vae,
    ),
    (
        "vae",
        "LTX video VAE",
        &["decoder.up_blocks.0.res_blocks.0.conv1.conv.weight"],
        ltxv_vae,
    ),
    (
        "vae",
        "FLUX/SDXL VAE",
        &[
            "decoder.conv_in.weight",
            "encoder.down.0.block.0.conv1.weight",
        ],
        kl_vae,
    ),
    (
        "vae",
        "MAGI-1 VAE",
        &["encoder.patch_embed.proj.weight", "decoder.proj_in.weight"],
        magi_vae,
    ),
    (
        "text_encoder",
        "T5/UMT5 encoder",
        &["encoder.block.0.layer.1.DenseReluDense.wi_1.weight"],
        t5,
    ),
    (
        "text_encoder",
        "CLIP text encoder",
        &["text_model.encoder.layers.0.mlp.fc1.weight"],
        clip_text,
    ),
    (
        "text_encoder",
        "OpenCLIP text encoder",
        &[
            "transformer.resblocks.0.attn.in_proj_weight",
            "token_embedding.weight",
        ],
        open_clip_text,
    ),
    (
        "text_encoder",
        "Gemma 3",
        &[
            "model.layers.0.self_attn.q_norm.weight",
            "model.layers.0.post_feedforward_layernorm.weight",
        ],
        gemma3,
    ),
    (
        "clip_vision",
        "CLIP vision",
        &["vision_model.encoder.layers.0.layer_norm1.weight"],
        clip_vision,
    ),
    (
        "audio_encoder",
        "wav2vec2 audio encoder",
        &[
            "feature_extractor.conv_layers.0.conv.weight",
            "encoder.layer_norm.bias",
        ],
        wav2vec2,
    ),
    (
        "audio_encoder",
        "Whisper audio encoder",
        &["model.encoder.embed_positions.weight"],
        whisper,
    ),
    (
        "audio_encoder",
        "Whisper audio encoder",
        &["encoder.embed_positions.weight", "encoder.conv1.weight"],
        whisper,
    ),
];

/// Detects one component from its prefix-stripped keys.
pub fn detect_keys(
    keys: &Keys,
    metadata: Option<&Value>,
) -> Result<Option<(&'static str, String, Value)>> {
    for (component, what, identifying, rule) in RULES {
        if identifying.iter().all(|key| keys.has(key)) {
            let (architecture, config) =
                rule(keys, metadata).with_context(|| format!("looks like a {what}"))?;
            return Ok(Some((component, architecture, config)));
        }
    }
    Ok(None)
}

/// Components that LTX-2 checkpoints keep under their own prefixes and that are known by
/// that prefix alone.
const NAMED_PREFIXES: &[(&str, &str, &str)] = &[
    ("audio_vae.", "audio_vae", "ltx2_audio_vae"),
    ("vocoder.", "vocoder", "ltx2_vocoder"),
    (
        "text_embedding_projection.",
        "text_projection",
        "ltx2_text_projection",
    ),
];

/// Prefixes ComfyUI's checkpoints put components under (ComfyUI strips `model.diffusion_model.`,
/// `model.model.` and `net.` from diffusion models; SDXL nests its encoders once more).
const PREFIXES: &[&str] = &[
    "model.diffusion_model.",
    "model.model.",
    "net.",
    "first_stage_model.",
    "vae.",
    "cond_stage_model.transformer.",
    "cond_stage_model.",
    "conditioner.embedders.0.transformer.",
    "conditioner.embedders.0.model.",
    "conditioner.embedders.1.model.",
    "conditioner.embedders.1.transformer.",
    "wav2vec2.",
    "detector.backbone.language_backbone.encoder.",
];

/// The component prefix of a key: a known prefix, `text_encoders.NAME.` (with a `transformer.`
/// below it when present), or `""`.
fn prefix_of(key: &str) -> String {
    for (prefix, ..) in NAMED_PREFIXES {
        if key.starts_with(prefix) {
            return (*prefix).into();
        }
    }
    if let Some(rest) = key.strip_prefix("text_encoders.") {
        if let Some((name, inner)) = rest.split_once('.') {
            let base = format!("text_encoders.{name}.");
            return if inner.starts_with("transformer.") {
                format!("{base}transformer.")
            } else {
                base
            };
        }
    }
    PREFIXES
        .iter()
        .find(|p| key.starts_with(**p))
        .map_or_else(String::new, |p| (*p).into())
}

fn merge_metadata_config(config: &mut Value, meta: Option<&Value>) {
    let (Some(Value::Object(section)), Value::Object(target)) =
        (meta.and_then(|m| m.get("transformer")), config)
    else {
        return;
    };
    let extra: Map<String, Value> = section.clone();
    target.extend(extra);
}

/// Every component of a safetensors file (its header `config` JSON, in LTX files, completes
/// the configs).
pub fn detect(file: &SafetensorsFile) -> Result<Vec<Detected>> {
    let shapes = file
        .entries()
        .iter()
        .map(|(name, entry)| (name.as_str(), entry.shape.as_slice()))
        .collect();
    let meta = file
        .metadata()
        .get("config")
        .and_then(|c| serde_json::from_str(c).ok());
    detect_shapes(&file.path, shapes, meta.as_ref())
}

/// Every component among the named tensor shapes; an error naming the file and the layouts this
/// server knows when none is recognised.
pub fn detect_shapes(
    path: &Path,
    shapes: BTreeMap<&str, &[usize]>,
    meta: Option<&Value>,
) -> Result<Vec<Detected>> {
    let mut groups: BTreeMap<String, BTreeMap<&str, &[usize]>> = BTreeMap::new();
    for (name, shape) in &shapes {
        let prefix = prefix_of(name);
        groups
            .entry(prefix.clone())
            .or_default()
            .insert(&name[prefix.len()..], shape);
    }
    let mut found = Vec::new();
    for (prefix, shapes) in groups {
        let keys = Keys::new(shapes);
        let parameters = keys.parameters();
        if let Some((_, component, architecture)) =
            NAMED_PREFIXES.iter().find(|(p, ..)| *p == prefix)
        {
            let config = meta
                .and_then(|m| m.get(*component))
                .cloned()
                .unwrap_or(Value::Null);
            found.push(Detected {
                component,
                architecture: (*architecture).into(),
                prefix,
                config,
                parameters,
            });
            continue;
        }
        let detected = detect_keys(&keys, meta)
            .with_context(|| format!("{}: {}", path.display(), describe(&prefix)))?;
        if let Some((component, architecture, config)) = detected {
            found.push(Detected {
                component,
                architecture,
                prefix,
                config,
                parameters,
            });
        }
    }
    if found.is_empty() {
        let expected: Vec<&str> = RULES.iter().map(|(_, what, ..)| *what).collect();
        let sample: Vec<&&str> = shapes.keys().take(5).collect();
        bail!(
            "{}: not a model this server knows; expected one of: {}; its first keys are {:?}",
            path.display(),
            expected.join(", "),
            sample
        );
    }
    Ok(found)
}

impl Detected {
    pub fn to_json(&self) -> Value {
        json!({
            "component": self.component, "architecture": self.architecture,
            "prefix": self.prefix, "parameters": self.parameters, "config": self.config,
        })
    }
}

fn describe(prefix: &str) -> String {
    if prefix.is_empty() {
        "the keys without a prefix".into()
    } else {
        format!("the keys under {prefix:?}")
    }
}
