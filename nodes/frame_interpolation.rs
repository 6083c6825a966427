//! Frame interpolation (`comfy_extras/nodes_frame_interpolation.py`):
//! FrameInterpolationModelLoader and FrameInterpolate, which puts `multiplier − 1` frames
//! between each pair of neighbouring frames.

use std::sync::Arc;

use serde_json::json;

use super::loaders::{files, model_file};
use super::media_save::with_progress;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::frame_interp::InterpModel;

fn frame_interpolation_model_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "frame_interpolation", &i.string("model_name")?)?;
    let model = InterpModel::open(ctx.env.models.clone(), &path)?;
    Ok(NodeOutput::one(Value::object(Arc::new(model))))
}

fn frame_interpolate(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let model = i.object::<Arc<InterpModel>>("interp_model")?;
    let images = i.tensor("images")?;
    let multiplier = i.int("multiplier")?;
    let frames = with_progress(ctx, |report| model.interpolate(images, multiplier, report))?;
    Ok(NodeOutput::one(Value::tensor(frames)))
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, display: &str, category: &str, f| {
        NodeDef::builtin(name, Style::V3, display, category, f)
            .module("comfy_extras.nodes_frame_interpolation")
    };
    r.add(
        node(
            "FrameInterpolationModelLoader",
            "Load Frame Interpolation Model",
            "model/loaders",
            frame_interpolation_model_loader,
        )
        .input(
            InputDef::combo_dynamic("model_name", files("frame_interpolation")).tooltip(
                "Select a frame interpolation model to load. Models must be placed in the \
                 'frame_interpolation' folder.",
            ),
        )
        .output("INTERP_MODEL"),
    );
    r.add(
        node(
            "FrameInterpolate",
            "Run Frame Interpolation Model",
            "video",
            frame_interpolate,
        )
        .aliases(&[
            "rife",
            "film",
            "frame interpolation",
            "slow motion",
            "interpolate frames",
            "vfi",
        ])
        .input(InputDef::new("interp_model", "INTERP_MODEL"))
        .input(InputDef::new("images", "IMAGE"))
        .input(
            InputDef::int("multiplier")
                .default(json!(2))
                .opt("min", json!(2))
                .opt("max", json!(16)),
        )
        .output("IMAGE"),
    );
}
