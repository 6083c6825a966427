//! Model loaders (`nodes.py`): UNETLoader, CLIPLoader, VAELoader, LoraLoaderModelOnly. Their
//! outputs name files and options; the networks load through the `ModelManager` when used.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use crate::engine::context::{ExecContext, NodeEnv};
use crate::engine::node::ComboFn;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput, NodeResult, Style,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::clip_vision::ClipVision;
use crate::models::text_encoder::TextEncoder;
use crate::models::vae::Vae;
use crate::models::wan::net::{WanNet, WeightDtype};
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

fn files(folder: &'static str) -> ComboFn {
    Arc::new(move |env: &NodeEnv| env.paths.filename_list(folder).unwrap_or_default())
}

/// `folder_paths.get_full_path_or_raise`.
fn model_file(ctx: &ExecContext, folder: &str, name: &str) -> Result<PathBuf, NodeError> {
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
    let net = WanNet::open(ctx.env.models.clone(), &path, dtype)?;
    // ComfyUI's Wan configs sample discrete flow with shift 8.
    let sampling = ModelSampling::new(
        Prediction::Flow,
        Schedule::Flow {
            shift: 8.0,
            multiplier: 1000.0,
        },
    );
    Ok(NodeOutput::one(Value::object(Model {
        net: Arc::new(net),
        sampling: Arc::new(sampling),
    })))
}

fn clip_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "text_encoders", &i.string("clip_name")?)?;
    let kind = i.string("type")?;
    if kind != "wan" {
        return Err(NodeError::value(format!(
            "CLIPLoader type {kind} is not supported yet (wan is)"
        )));
    }
    let cpu = matches!(i.get("device"), Some(Value::Str(d)) if d == "cpu");
    let clip = TextEncoder::umt5(ctx.env.models.clone(), &path, cpu)?;
    Ok(NodeOutput::one(Value::object(Arc::new(clip))))
}

fn vae_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "vae", &i.string("vae_name")?)?;
    let vae = Vae::open(ctx.env.models.clone(), &path)?;
    Ok(NodeOutput::one(Value::object(Arc::new(vae))))
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
    Ok(NodeOutput::one(Value::object(Model {
        net,
        sampling: model.sampling.clone(),
    })))
}

pub fn register(r: &mut Registry) {
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
                .opt("advanced", json!(true)),
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
            .input(
                InputDef::combo("device", &["default", "cpu"])
                    .optional()
                    .opt("advanced", json!(true)),
            )
            .output("CLIP"),
    );
    r.add(
        loader("VAELoader", vae_loader)
            .display("Load VAE")
            .input(InputDef::combo_dynamic("vae_name", files("vae")))
            .output("VAE"),
    );
    r.add(
        loader("CLIPVisionLoader", clip_vision_loader)
            .display("Load CLIP Vision")
            .input(InputDef::combo_dynamic("clip_name", files("clip_vision")))
            .output("CLIP_VISION"),
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
