//! ScaleROPE (`comfy_extras/nodes_rope.py`): the model with its rotary positions spaced and
//! shifted per axis (ChronoEdit spreads its two frames far apart in time).

use std::sync::Arc;

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::rope::RopeOptions;
use crate::sampling::model::Model;

fn scale_rope(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let options = RopeOptions {
        scale: [
            i.float("scale_t")?,
            i.float("scale_y")?,
            i.float("scale_x")?,
        ],
        shift: [
            i.float("shift_t")?,
            i.float("shift_y")?,
            i.float("shift_x")?,
        ],
    };
    // Networks without rotary positions ignore the options, as ComfyUI's do.
    let patched = match model.net.with_rope_options(options) {
        Some(net) => Model {
            net,
            ..model.clone()
        },
        None => model.clone(),
    };
    Ok(NodeOutput::one(Value::object(patched)))
}

pub fn register(r: &mut Registry) {
    let scale = |name: &str| {
        InputDef::float(name)
            .advanced()
            .default_float(1.0)
            .min_float(0.0)
            .max_float(100.0)
            .step_float(0.1)
    };
    let shift = |name: &str| {
        InputDef::float(name)
            .advanced()
            .default_float(0.0)
            .min_float(-256.0)
            .max_float(256.0)
            .step_float(0.1)
    };
    let mut node = NodeDef::new("ScaleROPE", Style::V3, Arc::new(scale_rope))
        .category("model/patch")
        .description("Scale and shift the ROPE of the model.")
        .module("comfy_extras.nodes_rope")
        .input(InputDef::new("model", "MODEL"))
        .input(scale("scale_x"))
        .input(shift("shift_x"))
        .input(scale("scale_y"))
        .input(shift("shift_y"))
        .input(scale("scale_t"))
        .input(shift("shift_t"))
        .output("MODEL");
    node.experimental = true;
    r.add(node);
}
