//! FLUX.1 nodes (`comfy_extras/nodes_flux.py`): CLIPTextEncodeFlux, FluxGuidance, and Kontext's
//! FluxKontextImageScale and FluxKontextMultiReferenceLatentMethod; ReferenceLatent
//! (`nodes_edit_model.py`), which sets an edit model's reference images.

use std::sync::Arc;

use serde_json::json;
use tch::Tensor;

use super::conditioning::set_values;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::flux::dit::REFERENCE_METHODS;
use crate::models::text_encoder::TextEncoder;
use crate::sampling::model::{Conditioning, Latent, REFERENCE_METHOD_KEY};
use crate::upscale::common_upscale;

/// Sets the distilled guidance FLUX dev embeds (its stand-in for CFG).
fn flux_guidance(i: &Inputs, _: &ExecContext) -> NodeResult {
    let guidance = i.float("guidance")?;
    set_values(i, |e| {
        *e = e
            .clone()
            .with_extra("guidance", Tensor::from_slice(&[guidance as f32]));
    })
}

/// CLIP-L reads `clip_l`, T5-XXL reads `t5xxl`; the distilled guidance joins the entry.
fn encode_flux(i: &Inputs, _: &ExecContext) -> NodeResult {
    let clip = i.object::<Arc<TextEncoder>>("clip")?;
    let entry = clip.encode_parts(&[&i.string("clip_l")?, &i.string("t5xxl")?])?;
    let guidance = Tensor::from_slice(&[i.float("guidance")? as f32]);
    let entry = entry.with_extra("guidance", guidance);
    Ok(NodeOutput::one(Value::object(Conditioning(vec![entry]))))
}

/// The sizes FLUX.1 Kontext was trained at (`PREFERRED_KONTEXT_RESOLUTIONS`).
const KONTEXT_SIZES: [(i64, i64); 17] = [
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
];

/// The Kontext size whose aspect is nearest the image's (ties to the narrower), Lanczos,
/// center-cropped.
fn kontext_image_scale(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let (h, w) = (image.size()[1] as f64, image.size()[2] as f64);
    let aspect = w / h;
    let (width, height) = KONTEXT_SIZES
        .iter()
        .map(|&(w, h)| ((aspect - w as f64 / h as f64).abs(), w, h))
        .min_by(|a, b| a.partial_cmp(b).expect("finite aspects"))
        .map(|(_, w, h)| (w, h))
        .expect("sizes");
    let scaled = common_upscale(
        &image.permute([0, 3, 1, 2]),
        width,
        height,
        "lanczos",
        "center",
    )?;
    Ok(NodeOutput::one(Value::tensor(scaled.permute([0, 2, 3, 1]))))
}

fn reference_method(i: &Inputs, _: &ExecContext) -> NodeResult {
    let name = i.string("reference_latents_method")?;
    let code = REFERENCE_METHODS
        .iter()
        .position(|m| *m == name)
        .ok_or_else(|| NodeError::value(format!("unknown method {name}")))?;
    set_values(i, |e| {
        *e = e
            .clone()
            .with_extra(REFERENCE_METHOD_KEY, Tensor::from_slice(&[code as i64]));
    })
}

/// ReferenceLatent: the latent joins the entries' reference latents (and is the last one).
fn reference_latent(i: &Inputs, _: &ExecContext) -> NodeResult {
    let Some(latent) = i.opt_object::<Latent>("latent") else {
        return set_values(i, |_| {});
    };
    let samples = latent.samples.shallow_clone();
    set_values(i, |e| *e = e.clone().with_reference_latent(&samples))
}

pub fn register(r: &mut Registry) {
    let text = |name: &str| {
        InputDef::string(name)
            .opt("multiline", json!(true))
            .opt("dynamicPrompts", json!(true))
    };
    r.add(
        NodeDef::new("CLIPTextEncodeFlux", Style::V3, Arc::new(encode_flux))
            .category("model/conditioning/flux")
            .module("comfy_extras.nodes_flux")
            .input(InputDef::new("clip", "CLIP"))
            .input(text("clip_l"))
            .input(text("t5xxl"))
            .input(
                InputDef::float("guidance")
                    .default_float(3.5)
                    .min_float(0.0)
                    .max_float(100.0)
                    .step_float(0.1),
            )
            .output("CONDITIONING"),
    );
    r.add(
        NodeDef::new("ReferenceLatent", Style::V3, Arc::new(reference_latent))
            .display("Set Reference Latent")
            .category("model/conditioning")
            .description(
                "This node sets the guiding latent for an edit model. If the model supports it \
                 you can chain multiple to set multiple reference images.",
            )
            .module("comfy_extras.nodes_edit_model")
            .input(InputDef::new("conditioning", "CONDITIONING"))
            .input(InputDef::new("latent", "LATENT").optional())
            .output("CONDITIONING"),
    );
    r.add(
        NodeDef::new(
            "FluxKontextImageScale",
            Style::V3,
            Arc::new(kontext_image_scale),
        )
        .category("model/conditioning/flux")
        .description("This node resizes the image to one that is more optimal for flux kontext.")
        .module("comfy_extras.nodes_flux")
        .input(InputDef::new("image", "IMAGE"))
        .output("IMAGE"),
    );
    let mut method = NodeDef::new(
        "FluxKontextMultiReferenceLatentMethod",
        Style::V3,
        Arc::new(reference_method),
    )
    .display("Edit Model Reference Method")
    .category("model/conditioning/flux")
    .module("comfy_extras.nodes_flux")
    .input(InputDef::new("conditioning", "CONDITIONING"))
    .input(InputDef::combo("reference_latents_method", &REFERENCE_METHODS).advanced())
    .output("CONDITIONING");
    method.experimental = true;
    r.add(method);
    r.add(
        NodeDef::new("FluxGuidance", Style::V3, Arc::new(flux_guidance))
            .category("model/conditioning/flux")
            .module("comfy_extras.nodes_flux")
            .input(InputDef::new("conditioning", "CONDITIONING"))
            .input(
                InputDef::float("guidance")
                    .default_float(3.5)
                    .min_float(0.0)
                    .max_float(100.0)
                    .step_float(0.1),
            )
            .output("CONDITIONING"),
    );
}
