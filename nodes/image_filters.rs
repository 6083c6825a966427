//! The image filter nodes of `comfy_extras/nodes_post_processing.py` (ImageBlend, ImageBlur,
//! ImageSharpen) over `crate::image_filters`, and ImageAddNoise (`nodes_images.py`).

use crate::engine::context::ExecContext;
use tch::Kind;

use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::image_filters::{blend, blur, sharpen, BLEND_MODES};

fn one(t: tch::Tensor) -> NodeResult {
    Ok(NodeOutput::one(Value::tensor(t)))
}

fn blend_node(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image1 = i.tensor("image1")?;
    let image2 = i.tensor("image2")?.to_device(image1.device());
    one(blend(
        image1,
        &image2,
        i.float("blend_factor")?,
        &i.string("blend_mode")?,
    )?)
}

fn blur_node(i: &Inputs, _: &ExecContext) -> NodeResult {
    one(blur(
        i.tensor("image")?,
        i.int("blur_radius")?,
        i.float("sigma")?,
    ))
}

fn sharpen_node(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    one(sharpen(
        image,
        i.int("sharpen_radius")?,
        i.float("sigma")?,
        i.float("alpha")?,
    ))
}

/// ImageAddNoise: `clip(image + strength · randn)`, the noise drawn as ComfyUI draws it (CPU
/// generator seeded with the seed), so a seed gives the same grain on both servers.
fn add_noise(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let seed = match i.get("seed") {
        Some(Value::Int(v)) => {
            u64::try_from(*v).map_err(|_| NodeError::value("seed must be in 0..2^64"))?
        }
        _ => return Err(NodeError::value("seed must be an integer")),
    };
    let noise = crate::sampling::noise::initial_noise(seed, &image.size(), Kind::Float, None);
    let noisy =
        image + noise.to_device(image.device()).to_kind(image.kind()) * i.float("strength")?;
    one(noisy.clamp(0.0, 1.0))
}

pub fn register(r: &mut Registry) {
    let filter = |name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult| {
        NodeDef::builtin(name, Style::V3, display, "image/filters", f)
            .module("comfy_extras.nodes_post_processing")
    };
    let radius = |name: &str| InputDef::int(name).default(1).min(1).max(31).step(1);
    r.add(
        filter("ImageAddNoise", "Add Noise to Image", add_noise)
            .module("comfy_extras.nodes_images")
            .aliases(&["film grain"])
            .input(InputDef::new("image", "IMAGE"))
            .input(
                InputDef::int("seed")
                    .tooltip("The random seed used for creating the noise.")
                    .default(0)
                    .min(0)
                    .max(u64::MAX)
                    .opt("control_after_generate", serde_json::json!(true)),
            )
            .input(
                InputDef::float("strength")
                    .default_float(0.5)
                    .min_float(0.0)
                    .max_float(1.0)
                    .step_float(0.01),
            )
            .output("IMAGE"),
    );
    r.add(
        filter("ImageBlend", "Blend Images", blend_node)
            .aliases(&["mix images"])
            .essentials("Image Tools")
            .input(InputDef::new("image1", "IMAGE"))
            .input(InputDef::new("image2", "IMAGE"))
            .input(
                InputDef::float("blend_factor")
                    .default_float(0.5)
                    .min_float(0.0)
                    .max_float(1.0)
                    .step_float(0.01),
            )
            .input(InputDef::combo("blend_mode", &BLEND_MODES))
            .output("IMAGE"),
    );
    r.add(
        filter("ImageBlur", "Blur Image", blur_node)
            .input(InputDef::new("image", "IMAGE"))
            .input(radius("blur_radius"))
            .input(
                InputDef::float("sigma")
                    .default_float(1.0)
                    .min_float(0.1)
                    .max_float(10.0)
                    .step_float(0.1),
            )
            .output("IMAGE"),
    );
    r.add(
        filter("ImageSharpen", "Sharpen Image", sharpen_node)
            .input(InputDef::new("image", "IMAGE"))
            .input(radius("sharpen_radius").advanced())
            .input(
                InputDef::float("sigma")
                    .advanced()
                    .default_float(1.0)
                    .min_float(0.1)
                    .max_float(10.0)
                    .step_float(0.01),
            )
            .input(
                InputDef::float("alpha")
                    .advanced()
                    .default_float(1.0)
                    .min_float(0.0)
                    .max_float(5.0)
                    .step_float(0.01),
            )
            .output("IMAGE"),
    );
}
