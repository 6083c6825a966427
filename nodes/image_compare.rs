//! ImageCompare (`comfy_extras/nodes_image_compare.py`): two images previewed for the
//! frontend's comparison slider.

use std::sync::Arc;

use serde_json::{json, Map, Value as Json};

use super::image_files::preview_records;
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;

fn image_compare(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let mut ui = Map::new();
    for (input, key, prefix) in [
        ("image_a", "a_images", "comfy.compare.a"),
        ("image_b", "b_images", "comfy.compare.b"),
    ] {
        let records = match i.opt_tensor(input).filter(|t| t.size()[0] > 0) {
            Some(images) => preview_records(images, ctx, prefix)?,
            None => Json::Array(Vec::new()),
        };
        ui.insert(key.into(), records);
    }
    Ok(NodeOutput {
        values: Vec::new(),
        ui: Some(ui),
    })
}

pub fn register(r: &mut Registry) {
    let mut node = NodeDef::new("ImageCompare", Style::V3, Arc::new(image_compare))
        .display("Compare Images")
        .description("Compares two images side by side with a slider.")
        .category("image")
        .module("comfy_extras.nodes_image_compare")
        .essentials("Image Tools")
        .input(InputDef::new("image_a", "IMAGE").optional())
        .input(InputDef::new("image_b", "IMAGE").optional())
        // The frontend's slider widget; it sends `["", ""]` and the node ignores it.
        .input(InputDef::new("compare_view", "IMAGECOMPARE").opt("socketless", json!(true)))
        .output_node();
    node.experimental = true;
    r.add(node);
}
