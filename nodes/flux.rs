//! FLUX.1 nodes (`comfy_extras/nodes_flux.py`): CLIPTextEncodeFlux and FluxGuidance.

use std::sync::Arc;

use serde_json::json;
use tch::Tensor;

use super::conditioning::set_values;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::text_encoder::TextEncoder;
use crate::sampling::model::Conditioning;

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

pub fn register(r: &mut Registry) {
    let text = |name: &str| {
        InputDef::string(name)
            .opt("multiline", json!(true))
            .opt("dynamicPrompts", json!(true))
    };
    r.add(
        NodeDef::new("CLIPTextEncodeFlux", Style::V3, Arc::new(encode_flux))
            .display("CLIPTextEncodeFlux")
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
        NodeDef::new("FluxGuidance", Style::V3, Arc::new(flux_guidance))
            .display("FluxGuidance")
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
