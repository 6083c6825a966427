//! FLUX.1 nodes (`comfy_extras/nodes_flux.py`): FluxGuidance.

use std::sync::Arc;

use tch::Tensor;

use super::conditioning::set_values;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeResult, Style};
use crate::engine::registry::Registry;

/// Sets the distilled guidance FLUX dev embeds (its stand-in for CFG).
fn flux_guidance(i: &Inputs, _: &ExecContext) -> NodeResult {
    let guidance = i.float("guidance")?;
    set_values(i, |e| {
        *e = e
            .clone()
            .with_extra("guidance", Tensor::from_slice(&[guidance as f32]));
    })
}

pub fn register(r: &mut Registry) {
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
