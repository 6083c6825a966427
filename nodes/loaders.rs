//! Model loaders (`nodes.py`): CheckpointLoaderSimple, UNETLoader, CLIPLoader, DualCLIPLoader,
//! VAELoader, CLIPVisionLoader, LoraLoader(ModelOnly), CLIPSetLastLayer. Their outputs name
//! files and options; the networks load through the `ModelManager` when used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::context::{ExecContext, NodeEnv};
use crate::engine::node::ComboFn;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput, NodeResult, Style,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::clip_vision::ClipVision;
use crate::models::diffusion_file::{DiffusionFile, WeightDtype};
use crate::models::flux::net::FluxNet;
use crate::models::ltx::av_net::LtxAvNet;
use crate::models::sam3::Sam3;
use crate::models::sdxl::net::SdxlNet;
use crate::models::text_encoder::TextEncoder;
use crate::models::vae::Vae;
use crate::models::wan::net::WanNet;
use crate::runtime::detect::{detect, Detected};
use crate::runtime::safetensors_file::SafetensorsFile;
use crate::sampling::model::Model;
use crate::sampling::model_sampling::{ModelSampling, Prediction, Schedule};

/// CLIPLoader's `type` choices, in ComfyUI's order.
const CLIP_TYPES: &[&str] = &[
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
    "flux2",
    "ovis",
    "longcat_image",
    "cogvideox",
    "lens",
    "pixeldit",
    "ideogram4",
    "boogu",
    "krea2",
    "joyimage",
    "mage",
    "minimax",
];

fn loader(name: &str, f: NodeFunction) -> NodeDef {
    NodeDef::builtin(name, Style::V1, name, "model/loaders", f)
}

pub(super) fn files(folder: &'static str) -> ComboFn {
    Arc::new(move |env: &NodeEnv| env.paths.filename_list(folder).unwrap_or_default())
}

/// `folder_paths.get_full_path_or_raise`.
pub(super) fn model_file(
    ctx: &ExecContext,
    folder: &str,
    name: &str,
) -> Result<PathBuf, NodeError> {
    ctx.env
        .paths
        .full_path(folder, name)
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            NodeError::new(
                "FileNotFoundError",
                format!("Model in folder '{folder}' with filename '{name}' not found."),
            )
        })
}

fn unet_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "diffusion_models", &i.string("unet_name")?)?;
    let dtype = WeightDtype::parse(&i.string("weight_dtype")?)?;
    let file = DiffusionFile::open(ctx.env.models.clone(), &path, dtype)?;
    Ok(NodeOutput::one(Value::object(diffusion_model(file)?)))
}

/// The MODEL for a detected diffusion model, with its family's default sampling.
fn diffusion_model(file: DiffusionFile) -> anyhow::Result<Model> {
    match file.detected.architecture.as_str() {
        "Flux" => {
            let net = FluxNet::open(file)?;
            let sampling = Arc::new(net.sampling());
            return Ok(Model::new(Arc::new(net), sampling));
        }
        "LTXAV" => {
            return Ok(Model::new(
                Arc::new(LtxAvNet::open(file)?),
                Arc::new(LtxAvNet::sampling()),
            ))
        }
        "SDXL" | "SDXLRefiner" | "LotusD" => {
            let net = SdxlNet::open(file)?;
            let sampling = Arc::new(net.sampling());
            return Ok(Model::new(Arc::new(net), sampling));
        }
        _ => {}
    }
    // ComfyUI's Wan configs sample discrete flow with shift 8 (Causal Forcing's with 5).
    let shift = if file.detected.architecture == "WAN21_CausalAR_T2V" {
        5.0
    } else {
        8.0
    };
    let sampling = ModelSampling::new(
        Prediction::Flow,
        Schedule::Flow {
            shift,
            multiplier: 1000.0,
        },
    );
    Ok(Model::new(
        Arc::new(WanNet::open(file)?),
        Arc::new(sampling),
    ))
}

/// `load_checkpoint_guess_config`: the diffusion model, text encoders and VAE of one file.
fn checkpoint_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "checkpoints", &i.string("ckpt_name")?)?;
    let models = ctx.env.models.clone();
    let components = detect(&SafetensorsFile::open(&path)?)?;
    if let Some(found) = components.iter().find(|d| d.component == "segmentation") {
        return sam3_checkpoint(ctx, &path, found, &components);
    }
    let file = DiffusionFile::open(models.clone(), &path, WeightDtype::Default)?;
    let architecture = file.detected.architecture.clone();
    let model = diffusion_model(file)?;
    let encoders: Vec<&Detected> = components
        .iter()
        .filter(|d| d.component == "text_encoder")
        .collect();
    let open_clip = |d: &&&Detected| d.config["layout"] == "open_clip";
    let g = encoders.iter().find(open_clip);
    let l = encoders.iter().find(|d| !open_clip(d));
    if architecture == "LTXAV" {
        // LTX-2 files hold no text encoder (LTXAVTextEncoderLoader reads Gemma 3 beside them):
        // ComfyUI's CLIP output is None.
        let vae = Vae::open(models, &path)?;
        return Ok(NodeOutput::values(vec![
            Value::object(model),
            Value::Json(serde_json::Value::Null),
            Value::object(Arc::new(vae)),
        ]));
    }
    let clip = match (architecture.as_str(), l, g) {
        ("SDXL", Some(l), Some(g)) => {
            TextEncoder::sdxl(models.clone(), &path, &l.prefix, &g.prefix)?
        }
        ("SDXLRefiner", _, Some(g)) => TextEncoder::sdxl_refiner(models.clone(), &path, &g.prefix)?,
        ("Flux", ..) if encoders.len() == 2 => {
            let tokenizer = ctx.env.paths.full_path("text_encoders", T5_TOKENIZER);
            let prefixes = [encoders[0].prefix.as_str(), encoders[1].prefix.as_str()];
            TextEncoder::flux_checkpoint(models.clone(), &path, prefixes, tokenizer.as_deref())?
        }
        (other, ..) => {
            return Err(NodeError::value(format!(
                "CheckpointLoaderSimple: {other} checkpoints are not supported yet (SDXL base \
                 and refiner, and FLUX.1 with CLIP-L and T5-XXL inside, are)"
            )))
        }
    };
    let vae = Vae::open(models, &path)?;
    Ok(NodeOutput::values(vec![
        Value::object(model),
        clip_value(ctx, clip),
        Value::object(Arc::new(vae)),
    ]))
}

/// A SAM 3 / SAM 3.1 checkpoint (`found`, among the file's `components`): the segmentation
/// model, its CLIP text tower, no VAE.
fn sam3_checkpoint(
    ctx: &ExecContext,
    path: &Path,
    found: &Detected,
    components: &[Detected],
) -> NodeResult {
    let models = ctx.env.models.clone();
    let text = components
        .iter()
        .find(|d| d.component == "text_encoder")
        .ok_or_else(|| NodeError::value("this SAM 3 checkpoint has no text encoder"))?;
    let clip = TextEncoder::sam3(models.clone(), path, &text.prefix)?;
    Ok(NodeOutput::values(vec![
        Value::object(Sam3::new(models, path, found.clone())),
        clip_value(ctx, clip),
        Value::Json(serde_json::Value::Null),
    ]))
}

/// LoraLoader: the model half merges like LoraLoaderModelOnly, the text-encoder half into the
/// CLIP value's encoders; a zero strength leaves its half as it was.
fn lora_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let clip = i.object::<Arc<TextEncoder>>("clip")?;
    let strength = i.float("strength_clip")?;
    let clip = if strength == 0.0 {
        clip.clone()
    } else {
        let path = model_file(ctx, "loras", &i.string("lora_name")?)?;
        Arc::new(clip.with_lora(&path, strength))
    };
    let mut out = lora_model_only(i, ctx)?;
    out.values.push(Value::object(clip));
    Ok(out)
}

/// The CLIP output of a loader: the encoders reading `embedding:` files from the embeddings
/// folders.
pub(super) fn clip_value(ctx: &ExecContext, clip: TextEncoder) -> Value {
    let dirs = ctx.env.paths.folder_dirs("embeddings");
    Value::object(Arc::new(clip.with_embedding_dirs(dirs)))
}

fn clip_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "text_encoders", &i.string("clip_name")?)?;
    let kind = i.string("type")?;
    if kind != "wan" {
        return Err(NodeError::value(format!(
            "CLIPLoader type {kind} is not supported yet (wan is)"
        )));
    }
    let cpu = on_cpu(i);
    let clip = TextEncoder::umt5(ctx.env.models.clone(), &path, cpu)?;
    Ok(NodeOutput::one(clip_value(ctx, clip)))
}

/// DualCLIPLoader's `type` choices, in ComfyUI's order.
const DUAL_CLIP_TYPES: &[&str] = &[
    "sdxl",
    "sd3",
    "flux",
    "hunyuan_video",
    "hidream",
    "hunyuan_image",
    "hunyuan_video_15",
    "kandinsky5",
    "kandinsky5_image",
    "ltxv",
    "newbie",
    "ace",
];

/// Where T5-XXL's SentencePiece model goes (the T5 files ComfyUI loads carry none).
const T5_TOKENIZER: &str = "t5_tokenizer/spiece.model";

fn dual_clip_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let first = model_file(ctx, "text_encoders", &i.string("clip_name1")?)?;
    let second = model_file(ctx, "text_encoders", &i.string("clip_name2")?)?;
    let kind = i.string("type")?;
    if kind != "flux" {
        return Err(NodeError::value(format!(
            "DualCLIPLoader type {kind} is not supported yet (flux is)"
        )));
    }
    let cpu = on_cpu(i);
    let tokenizer = ctx.env.paths.full_path("text_encoders", T5_TOKENIZER);
    let clip = TextEncoder::flux(
        ctx.env.models.clone(),
        [&first, &second],
        tokenizer.as_deref(),
        cpu,
    )?;
    Ok(NodeOutput::one(clip_value(ctx, clip)))
}

fn clip_set_last_layer(i: &Inputs, _: &ExecContext) -> NodeResult {
    let clip = i.object::<Arc<TextEncoder>>("clip")?;
    let clip = clip.with_last_layer(i.int("stop_at_clip_layer")?);
    Ok(NodeOutput::one(Value::object(Arc::new(clip))))
}

/// The CLIP loaders' optional `device` input, and whether it asks for the CPU.
fn device_input() -> InputDef {
    InputDef::combo("device", &["default", "cpu"])
        .optional()
        .advanced()
}

fn on_cpu(i: &Inputs) -> bool {
    matches!(i.get("device"), Some(Value::Str(d)) if d == "cpu")
}

fn vae_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let name = i.string("vae_name")?;
    if name == PIXEL_SPACE {
        let vae = Vae::pixel_space(ctx.env.models.clone());
        return Ok(NodeOutput::one(Value::object(Arc::new(vae))));
    }
    let path = model_file(ctx, "vae", &name)?;
    let vae = Vae::open(ctx.env.models.clone(), &path)?;
    Ok(NodeOutput::one(Value::object(Arc::new(vae))))
}

/// Both LoRA loaders' search aliases.
const LORA_ALIASES: &[&str] = &[
    "lora",
    "load lora",
    "apply lora",
    "lora loader",
    "lora model",
];

/// LoraLoader's output tooltips, which LoraLoaderModelOnly inherits whole.
const LORA_OUTPUT_TOOLTIPS: [&str; 2] =
    ["The modified diffusion model.", "The modified CLIP model."];

/// VAELoader's choice of the identity VAE that pixel-space models use.
const PIXEL_SPACE: &str = "pixel_space";

/// The VAE files, then `pixel_space`. (Upstream also lists TAESD decoders from `vae_approx`,
/// which we do not load.)
fn vae_choices(env: &NodeEnv) -> Vec<String> {
    let mut choices = env.paths.filename_list("vae").unwrap_or_default();
    choices.push(PIXEL_SPACE.into());
    choices
}

fn clip_vision_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "clip_vision", &i.string("clip_name")?)?;
    let clip = ClipVision::open(ctx.env.models.clone(), &path)?;
    Ok(NodeOutput::one(Value::object(Arc::new(clip))))
}

fn lora_model_only(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let strength = i.float("strength_model")?;
    if strength == 0.0 {
        return Ok(NodeOutput::one(Value::object(model.clone())));
    }
    let path = model_file(ctx, "loras", &i.string("lora_name")?)?;
    let net = model
        .net
        .with_lora(&path, strength)
        .ok_or_else(|| NodeError::value("this model does not take LoRAs yet"))?;
    // The LoRA joins the network; sampling and post-CFG patches stay. A file with metadata
    // attaches it, replacing an earlier LoRA's.
    let metadata = SafetensorsFile::open(&path)?.metadata().clone();
    let lora_metadata = if metadata.is_empty() {
        model.lora_metadata.clone()
    } else {
        Some(Arc::new(metadata))
    };
    Ok(NodeOutput::one(Value::object(Model {
        net,
        lora_metadata,
        ..model.clone()
    })))
}

pub fn register(r: &mut Registry) {
    r.add(
        loader("CheckpointLoaderSimple", checkpoint_loader)
            .display("Load Checkpoint")
            .description(
                "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
            )
            .aliases(&[
                "load model",
                "checkpoint",
                "model loader",
                "load checkpoint",
                "ckpt",
                "model",
            ])
            .input(
                InputDef::combo_dynamic("ckpt_name", files("checkpoints"))
                    .tooltip("The name of the checkpoint (model) to load."),
            )
            .output("MODEL")
            .output_tooltip("The model used for denoising latents.")
            .output("CLIP")
            .output_tooltip("The CLIP model used for encoding text prompts.")
            .output("VAE")
            .output_tooltip(
                "The VAE model used for encoding and decoding images to and from latent space.",
            ),
    );
    r.add(
        loader("UNETLoader", unet_loader)
            .display("Load Diffusion Model")
            .input(InputDef::combo_dynamic(
                "unet_name",
                files("diffusion_models"),
            ))
            .input(
                InputDef::combo(
                    "weight_dtype",
                    &["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],
                )
                .advanced(),
            )
            .output("MODEL"),
    );
    r.add(
        loader("CLIPLoader", clip_loader)
            .display("Load CLIP")
            .description(
                "Recipes:\nsd: clip-l\nstable cascade: clip-g\nsd3: t5 xxl / clip-g / clip-l\n\
                 stable audio: t5 base\nmochi: t5 xxl\ncogvideox: t5 xxl (226-token padding)\n\
                 cosmos: old t5 xxl\nlumina2: gemma 2 2B\nwan: umt5 xxl\n\
                 hidream: llama-3.1 (Recommend) or t5\nomnigen2: qwen vl 2.5 3B\n\
                 joyimage: qwen3-vl 8B\nlens: gpt-oss-20b\npixeldit: gemma 2 2B elm\n\
                 minimax: MiniMax H3 Qwen3-VL or Music3 Qwen/RVQ",
            )
            .input(InputDef::combo_dynamic("clip_name", files("text_encoders")))
            .input(InputDef::combo("type", CLIP_TYPES))
            .input(device_input())
            .output("CLIP"),
    );
    r.add(
        loader("DualCLIPLoader", dual_clip_loader)
            .display("Load CLIP (Dual)")
            .description(
                "Recipes:\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / clip-g, t5\n\
                 flux: clip-l, t5\nhidream: at least one of t5 or llama, recommended t5 and \
                 llama\nhunyuan_image: qwen2.5vl 7b and byt5 small\nnewbie: gemma-3-4b-it, \
                 jina clip v2",
            )
            .input(InputDef::combo_dynamic(
                "clip_name1",
                files("text_encoders"),
            ))
            .input(InputDef::combo_dynamic(
                "clip_name2",
                files("text_encoders"),
            ))
            .input(InputDef::combo("type", DUAL_CLIP_TYPES))
            .input(device_input())
            .output("CLIP"),
    );
    r.add(
        NodeDef::builtin(
            "CLIPSetLastLayer",
            Style::V1,
            "CLIP Set Last Layer",
            "model/conditioning",
            clip_set_last_layer,
        )
        .input(InputDef::new("clip", "CLIP"))
        .input(
            InputDef::int("stop_at_clip_layer")
                .default(-1)
                .min(-24)
                .max(-1)
                .step(1)
                .advanced(),
        )
        .output("CLIP"),
    );
    r.add(
        loader("VAELoader", vae_loader)
            .display("Load VAE")
            .input(InputDef::combo_dynamic("vae_name", Arc::new(vae_choices)))
            .output("VAE"),
    );
    r.add(
        loader("CLIPVisionLoader", clip_vision_loader)
            .display("Load CLIP Vision")
            .input(InputDef::combo_dynamic("clip_name", files("clip_vision")))
            .output("CLIP_VISION"),
    );
    r.add(
        loader("LoraLoader", lora_loader)
            .display("Load LoRA (Model and CLIP)")
            .essentials("Image Generation")
            .description(
                "This LoRA loader is used to modify both diffusion and CLIP models, altering the \
                 way in which latents are denoised such as applying styles. Multiple LoRA nodes \
                 can be linked together.",
            )
            .aliases(LORA_ALIASES)
            .input(
                InputDef::new("model", "MODEL")
                    .tooltip("The diffusion model the LoRA will be applied to."),
            )
            .input(
                InputDef::new("clip", "CLIP")
                    .tooltip("The CLIP model the LoRA will be applied to."),
            )
            .input(
                InputDef::combo_dynamic("lora_name", files("loras"))
                    .tooltip("The name of the LoRA."),
            )
            .input(
                InputDef::float("strength_model")
                    .default_float(1.0)
                    .min_float(-100.0)
                    .max_float(100.0)
                    .step_float(0.01)
                    .tooltip(
                        "How strongly to modify the diffusion model. This value can be negative.",
                    ),
            )
            .input(
                InputDef::float("strength_clip")
                    .default_float(1.0)
                    .min_float(-100.0)
                    .max_float(100.0)
                    .step_float(0.01)
                    .tooltip("How strongly to modify the CLIP model. This value can be negative."),
            )
            .output("MODEL")
            .output_tooltip(LORA_OUTPUT_TOOLTIPS[0])
            .output("CLIP")
            .output_tooltip(LORA_OUTPUT_TOOLTIPS[1]),
    );
    r.add(
        NodeDef::builtin(
            "LoraLoaderModelOnly",
            Style::V1,
            "Load LoRA",
            "model/loaders",
            lora_model_only,
        )
        .description(
            "This LoRAs loader is used to modify the diffusion model, altering the way in which \
             latents are denoised such as applying styles. Multiple LoRA nodes can be linked \
             together.",
        )
        .essentials("Image Generation")
        .aliases(LORA_ALIASES)
        // Upstream's class inherits LoraLoader's two output tooltips.
        .inherited_output_tooltips(&LORA_OUTPUT_TOOLTIPS)
        .input(InputDef::new("model", "MODEL"))
        .input(InputDef::combo_dynamic("lora_name", files("loras")))
        .input(
            InputDef::float("strength_model")
                .default_float(1.0)
                .min_float(-100.0)
                .max_float(100.0)
                .step_float(0.01),
        )
        .output("MODEL"),
    );
}
