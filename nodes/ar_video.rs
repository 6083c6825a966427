//! Autoregressive video nodes (`comfy_extras/nodes_ar_video.py`, Causal Forcing and
//! Self-Forcing models): EmptyARVideoLatent, SamplerARVideo (the block-by-block sampler) and
//! ARVideoI2V (the start image the sampler caches first).

use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeFunction, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::models::vae::Vae;
use crate::sampling::model::{Latent, Model, SamplerChoice};
use crate::upscale::common_upscale;

/// The empty `[batch, 16, (length − 1) / 4 + 1, height / 8, width / 8]` latent.
fn empty_latent(i: &Inputs) -> Result<Latent, crate::engine::node::NodeError> {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let shape = [
        i.int("batch_size")?,
        16,
        (length - 1) / 4 + 1,
        height / 8,
        width / 8,
    ];
    Ok(Latent::new(Tensor::zeros(
        shape,
        (Kind::Float, tch::Device::Cpu),
    )))
}

fn empty_ar_video_latent(i: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(Value::object(empty_latent(i)?)))
}

fn sampler_ar_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let frames_per_block = i.int("num_frame_per_block")?;
    Ok(NodeOutput::one(Value::object(SamplerChoice::ArVideo {
        frames_per_block,
    })))
}

fn ar_video_i2v(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let (width, height) = (i.int("width")?, i.int("height")?);
    let start = i.tensor("start_image")?;
    let first = start.narrow(0, 0, 1).narrow(3, 0, 3).permute([0, 3, 1, 2]);
    let first = common_upscale(&first, width, height, "bilinear", "center")?;
    let initial = vae.encode(&first.permute([0, 2, 3, 1]))?;
    let model = Model {
        ar_initial: Some(Arc::new(SharedTensor::new(initial))),
        ..i.object::<Model>("model")?.clone()
    };
    Ok(NodeOutput::values(vec![
        Value::object(model),
        Value::object(empty_latent(i)?),
    ]))
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, category: &str, f: NodeFunction| {
        NodeDef::builtin(name, Style::V3, name, category, f).module("comfy_extras.nodes_ar_video")
    };
    let size = |d: NodeDef| {
        d.input(
            InputDef::int("width")
                .default(832)
                .min(16)
                .max(8192)
                .step(16),
        )
        .input(
            InputDef::int("height")
                .default(480)
                .min(16)
                .max(8192)
                .step(16),
        )
        .input(InputDef::int("length").default(81).min(1).max(1024).step(4))
        .input(InputDef::int("batch_size").default(1).min(1).max(64))
    };
    r.add(
        size(node(
            "EmptyARVideoLatent",
            "model/latent/autoregressive",
            empty_ar_video_latent,
        ))
        .named_output("LATENT", "LATENT"),
    );
    r.add(
        node(
            "SamplerARVideo",
            "model/sampling/samplers",
            sampler_ar_video,
        )
        .display("Sampler AR Video")
        .input(
            InputDef::int("num_frame_per_block")
                .tooltip(
                    "Frames per autoregressive block. 1 = framewise, 3 = chunkwise. Must match \
                     the checkpoint's training mode.",
                )
                .default(1)
                .min(1)
                .max(64),
        )
        .output("SAMPLER"),
    );
    r.add(
        size(
            node(
                "ARVideoI2V",
                "model/conditioning/autoregressive",
                ar_video_i2v,
            )
            .input(InputDef::new("model", "MODEL"))
            .input(InputDef::new("vae", "VAE"))
            .input(InputDef::new("start_image", "IMAGE")),
        )
        .named_output("MODEL", "MODEL")
        .named_output("LATENT", "LATENT"),
    );
}
