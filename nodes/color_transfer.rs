//! ColorTransfer (`comfy_extras/nodes_post_processing.py`, "Transfer Color"): the schema and
//! its inputs; the color math is [`crate::color_transfer`].

use crate::color_transfer::{transfer, Method, SourceStats};
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;

fn color_transfer(i: &Inputs, _: &ExecContext) -> NodeResult {
    let target = i.tensor("image_target")?;
    let strength = i.float("strength")?;
    let Some(reference) = i.opt_tensor("image_ref").filter(|_| strength != 0.0) else {
        return Ok(NodeOutput::one(Value::tensor(target.shallow_clone())));
    };
    let stats = match i.string("source_stats")?.as_str() {
        "target_frame" => SourceStats::TargetFrame(i.int("source_stats.target_index")?),
        "uniform" => SourceStats::Uniform,
        _ => SourceStats::PerFrame,
    };
    let method = match i.string("method")?.as_str() {
        "histogram" => Method::Histogram,
        "mkl_lab" => Method::Mkl,
        _ => Method::Reinhard,
    };
    let image = transfer(target, reference, method, stats, strength);
    Ok(NodeOutput::one(Value::tensor(image)))
}

pub fn register(r: &mut Registry) {
    let target_index = InputDef::int("target_index")
        .default(0)
        .min(0)
        .max(10000)
        .tooltip(
            "Frame index used as the source baseline for computing the transform to image_ref",
        );
    r.add(
        NodeDef::builtin(
            "ColorTransfer",
            Style::V3,
            "Transfer Color",
            "image/filters",
            color_transfer,
        )
        .module("comfy_extras.nodes_post_processing")
        .description("Match the colors of one image to another using various algorithms.")
        .aliases(&[
            "color match",
            "color grading",
            "color correction",
            "match colors",
            "color transform",
            "mkl",
            "reinhard",
            "histogram",
        ])
        .input(InputDef::new("image_target", "IMAGE").tooltip("Image(s) to apply the color transform to."))
        .input(InputDef::new("image_ref", "IMAGE").tooltip("Reference image(s) to match colors to."))
        .input(InputDef::combo("method", &["reinhard_lab", "mkl_lab", "histogram"]))
        .input(
            InputDef::dynamic_combo(
                "source_stats",
                vec![
                    ("per_frame", vec![]),
                    ("uniform", vec![]),
                    ("target_frame", vec![target_index]),
                ],
            )
            .tooltip("per_frame: each frame matched to image_ref individually. uniform: pool stats across all source frames as baseline, match to image_ref. target_frame: use one chosen frame as the baseline for the transform to image_ref, applied uniformly to all frames (preserves relative differences)"),
        )
        .input(InputDef::float("strength").default(1.0).min(0.0).max(10.0).step(0.01))
        .named_output("IMAGE", "image"),
    );
}
