//! LTX's latent upsampling: LatentUpscaleModelLoader (for LTX latent upsampler files; ComfyUI's
//! node also loads HunyuanVideo 1.5's, which are refused) and LTXVLatentUpsampler.

use std::sync::Arc;

use tch::Tensor;

use super::loaders::{files, model_file};
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::ltx::latent_upsampler::LatentUpscaleModel;
use crate::models::vae::Vae;
use crate::sampling::model::Latent;

fn latent_upscale_model_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "latent_upscale_models", &i.string("model_name")?)?;
    let model = LatentUpscaleModel::open(ctx.env.models.clone(), &path)?;
    Ok(NodeOutput::one(Value::object(Arc::new(model))))
}

/// The latent un-normalized by the VAE's statistics, upsampled, normalized again; its noise mask
/// is dropped (the upsampled latent has another shape).
fn ltxv_latent_upsampler(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let model = i.object::<Arc<LatentUpscaleModel>>("upscale_model")?;
    let vae = i.object::<Arc<Vae>>("vae")?;
    if latent.nested.is_some() || latent.samples.dim() != 5 {
        return Err(NodeError::value(
            "LTXVLatentUpsampler takes a video latent [b, c, f, h, w] (separate an AV latent first)",
        ));
    }
    let (mean, std) = vae.latent_statistics()?;
    let stat = |t: &Tensor| t.view([1, -1, 1, 1, 1]);
    let raw = latent.samples.to_kind(tch::Kind::Float) * stat(&std) + stat(&mean);
    let upsampled = model.upsample(&raw)?;
    let mut out = latent.with_samples((upsampled - stat(&mean)) / stat(&std));
    out.noise_mask = None;
    Ok(NodeOutput::one(Value::object(out)))
}

pub fn register(r: &mut Registry) {
    r.add(
        NodeDef::builtin(
            "LatentUpscaleModelLoader",
            Style::V3,
            "LatentUpscaleModelLoader",
            "model/loaders",
            latent_upscale_model_loader,
        )
        .module("comfy_extras.nodes_hunyuan")
        .display("Load Latent Upscale Model")
        .input(InputDef::combo_dynamic(
            "model_name",
            files("latent_upscale_models"),
        ))
        .output("LATENT_UPSCALE_MODEL"),
    );
    r.add(
        NodeDef::builtin(
            "LTXVLatentUpsampler",
            Style::V3,
            "LTXVLatentUpsampler",
            "model/latent/ltxv",
            ltxv_latent_upsampler,
        )
        .module("comfy_extras.nodes_lt_upsampler")
        .experimental()
        .input(InputDef::new("samples", "LATENT"))
        .input(InputDef::new("upscale_model", "LATENT_UPSCALE_MODEL"))
        .input(InputDef::new("vae", "VAE"))
        .output("LATENT"),
    );
}
