//! SDXL text encoding with size conditioning (`comfy_extras/nodes_clip_sdxl.py`):
//! CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner.

use std::sync::Arc;

use serde_json::json;
use tch::Tensor;

use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeFunction, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::sdxl::net::{AESTHETIC_KEY, SIZE_KEY};
use crate::models::text_encoder::TextEncoder;
use crate::sampling::model::Conditioning;

fn sizes(values: [i64; 6]) -> Tensor {
    let values: Vec<f32> = values.iter().map(|v| *v as f32).collect();
    Tensor::from_slice(&values).view([1, 6])
}

fn encode_sdxl(i: &Inputs, _: &ExecContext) -> NodeResult {
    let clip = i.object::<Arc<TextEncoder>>("clip")?;
    let entry = clip.encode_parts(&[&i.string("text_l")?, &i.string("text_g")?])?;
    let size = sizes([
        i.int("height")?,
        i.int("width")?,
        i.int("crop_h")?,
        i.int("crop_w")?,
        i.int("target_height")?,
        i.int("target_width")?,
    ]);
    let entry = entry.with_extra(SIZE_KEY, size);
    Ok(NodeOutput::one(Value::object(Conditioning(vec![entry]))))
}

fn encode_refiner(i: &Inputs, _: &ExecContext) -> NodeResult {
    let clip = i.object::<Arc<TextEncoder>>("clip")?;
    let (h, w) = (i.int("height")?, i.int("width")?);
    let score = i.float("ascore")? as f32;
    let entry = clip
        .encode(&i.string("text")?)?
        .with_extra(SIZE_KEY, sizes([h, w, 0, 0, h, w]))
        .with_extra(AESTHETIC_KEY, Tensor::from_slice(&[score]));
    Ok(NodeOutput::one(Value::object(Conditioning(vec![entry]))))
}

fn size_input(name: &str, default: i64) -> InputDef {
    InputDef::int(name)
        .default(default)
        .min(0)
        .max(MAX_RESOLUTION)
}

fn text(name: &str) -> InputDef {
    InputDef::string(name)
        .opt("multiline", json!(true))
        .opt("dynamicPrompts", json!(true))
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, display: &str, f: NodeFunction| {
        NodeDef::new(name, Style::V3, Arc::new(f))
            .display(display)
            .category("model/conditioning/stable diffusion")
            .module("comfy_extras.nodes_clip_sdxl")
    };
    r.add(
        node(
            "CLIPTextEncodeSDXLRefiner",
            "CLIP Text Encode (SDXL Refiner)",
            encode_refiner,
        )
        .input(
            InputDef::float("ascore")
                .default_float(6.0)
                .min_float(0.0)
                .max_float(1000.0)
                .step_float(0.01),
        )
        .input(size_input("width", 1024))
        .input(size_input("height", 1024))
        .input(text("text"))
        .input(InputDef::new("clip", "CLIP"))
        .output("CONDITIONING"),
    );
    r.add(
        node("CLIPTextEncodeSDXL", "CLIP Text Encode (SDXL)", encode_sdxl)
            .input(InputDef::new("clip", "CLIP"))
            .input(size_input("width", 1024))
            .input(size_input("height", 1024))
            .input(size_input("crop_w", 0).advanced())
            .input(size_input("crop_h", 0).advanced())
            .input(size_input("target_width", 1024))
            .input(size_input("target_height", 1024))
            .input(text("text_g"))
            .input(text("text_l"))
            .output("CONDITIONING"),
    );
}
