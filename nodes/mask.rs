//! Mask nodes (`comfy_extras/nodes_mask.py`). A MASK is a `[B, H, W]` float tensor.

use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;

fn mask_node(name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult) -> NodeDef {
    NodeDef::new(name, Style::V3, Arc::new(f))
        .display(display)
        .category("image/mask")
        .module("comfy_extras.nodes_mask")
}

fn solid(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (w, h) = (i.int("width")?, i.int("height")?);
    let t = Tensor::full(
        [1, h, w],
        i.float("value")?,
        (Kind::Float, tch::Device::Cpu),
    );
    Ok(NodeOutput::one(Value::tensor(t)))
}

fn invert(i: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(Value::tensor(1.0 - i.tensor("mask")?)))
}

fn mask_to_image(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mask = i.tensor("mask")?;
    let size = mask.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    let image = mask
        .reshape([-1, 1, h, w])
        .movedim(1, -1)
        .expand([-1, -1, -1, 3], false);
    Ok(NodeOutput::one(Value::tensor(image.contiguous())))
}

fn image_to_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let channel = i.string("channel")?;
    let index = ["red", "green", "blue", "alpha"]
        .iter()
        .position(|c| *c == channel)
        .unwrap_or(0) as i64;
    let channels = image.size().last().copied().unwrap_or(0);
    if index >= channels {
        let msg = format!("index {index} is out of bounds for dimension 3 with size {channels}");
        return Err(crate::engine::node::NodeError::new("IndexError", msg));
    }
    Ok(NodeOutput::one(Value::tensor(
        image.select(3, index).contiguous(),
    )))
}

pub fn register(r: &mut Registry) {
    let dim = |name: &str| {
        InputDef::int(name)
            .default(512)
            .min(1)
            .max(MAX_RESOLUTION)
            .step(1)
    };
    r.add(
        mask_node("MaskToImage", "Convert Mask to Image", mask_to_image)
            .aliases(&["convert mask"])
            .input(InputDef::new("mask", "MASK"))
            .output("IMAGE"),
    );
    r.add(
        mask_node("ImageToMask", "Convert Image to Mask", image_to_mask)
            .aliases(&["extract channel", "channel to mask"])
            .input(InputDef::new("image", "IMAGE"))
            .input(InputDef::combo(
                "channel",
                &["red", "green", "blue", "alpha"],
            ))
            .output("MASK"),
    );
    r.add(
        mask_node("SolidMask", "Create Solid Mask", solid)
            .input(
                InputDef::float("value")
                    .default_float(1.0)
                    .min_float(0.0)
                    .max_float(1.0)
                    .step_float(0.01),
            )
            .input(dim("width"))
            .input(dim("height"))
            .output("MASK"),
    );
    r.add(
        mask_node("InvertMask", "Invert Mask", invert)
            .aliases(&["reverse mask", "flip mask"])
            .input(InputDef::new("mask", "MASK"))
            .output("MASK"),
    );
}
