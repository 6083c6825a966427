//! Wan conditioning and latents (`comfy_extras/nodes_wan.py`): WanImageToVideo,
//! Wan22ImageToVideoLatent.

use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput, NodeResult, Style,
    MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::clip_vision::ClipVisionOutput;
use crate::models::vae::Vae;
use crate::sampling::latent_format::LatentFormat;
use crate::sampling::model::{Conditioning, Latent};
use crate::upscale::common_upscale;

fn wan_node(name: &str, f: NodeFunction) -> NodeDef {
    NodeDef::builtin(name, Style::V3, name, "model/conditioning/wan", f)
        .module("comfy_extras.nodes_wan")
}

/// Latent frames for `length` video frames.
fn latent_frames(length: i64) -> i64 {
    (length - 1) / 4 + 1
}

/// `start_image[:length]` resized (bilinear, center crop) to `width × height`, `[N, H, W, C]`.
fn fit_start(image: &Tensor, length: i64, width: i64, height: i64) -> Result<Tensor, NodeError> {
    let n = image.size()[0].min(length);
    let frames = image.narrow(0, 0, n).permute([0, 3, 1, 2]);
    Ok(common_upscale(&frames, width, height, "bilinear", "center")?.permute([0, 2, 3, 1]))
}

/// `conditioning_set_values`: every entry gets the same extra tensors.
fn with_extras(cond: &Conditioning, extras: &[(&str, &Tensor)]) -> Conditioning {
    Conditioning(
        cond.0
            .iter()
            .map(|e| {
                extras
                    .iter()
                    .fold(e.clone(), |e, (k, v)| e.with_extra(k, v.shallow_clone()))
            })
            .collect(),
    )
}

fn wan_image_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let mut positive = i.object::<Conditioning>("positive")?.clone();
    let mut negative = i.object::<Conditioning>("negative")?.clone();
    let frames = latent_frames(length);
    let latent = Tensor::zeros(
        [batch, 16, frames, height / 8, width / 8],
        (Kind::Float, tch::Device::Cpu),
    );
    if let Some(start) = i.opt_tensor("start_image") {
        let vae = i.object::<Arc<Vae>>("vae")?;
        let start = fit_start(start, length, width, height)?;
        let n = start.size()[0];
        let channels = start.size()[3];
        let video = Tensor::full(
            [length, height, width, channels],
            0.5,
            (Kind::Float, tch::Device::Cpu),
        );
        video.narrow(0, 0, n).copy_(&start.to_kind(Kind::Float));
        let concat = vae.encode(&video.narrow(3, 0, 3))?;
        let s = concat.size();
        let mask = Tensor::ones([1, 1, frames, s[3], s[4]], (Kind::Float, tch::Device::Cpu));
        let _ = mask.narrow(2, 0, latent_frames(n).min(frames)).fill_(0.0);
        let extras = [("concat_latent_image", &concat), ("concat_mask", &mask)];
        positive = with_extras(&positive, &extras);
        negative = with_extras(&negative, &extras);
    }
    if let Some(clip) = i.opt_object::<ClipVisionOutput>("clip_vision_output") {
        let penultimate: &Tensor = &clip.penultimate;
        let extras = [("clip_vision_output", penultimate)];
        positive = with_extras(&positive, &extras);
        negative = with_extras(&negative, &extras);
    }
    Ok(NodeOutput::values(vec![
        Value::object(positive),
        Value::object(negative),
        Value::object(Latent::new(latent)),
    ]))
}

fn wan22_image_to_video_latent(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let frames = latent_frames(length);
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros([1, 48, frames, height / 16, width / 16], cpu);
    let Some(start) = i.opt_tensor("start_image") else {
        return Ok(NodeOutput::one(Value::object(Latent::new(latent))));
    };
    let vae = i.object::<Arc<Vae>>("vae")?;
    let mask = Tensor::ones([1, 1, frames, height / 16, width / 16], cpu);
    let encoded = vae.encode(&fit_start(start, length, width, height)?)?;
    let given = encoded.size()[2].min(frames);
    latent
        .narrow(2, 0, given)
        .copy_(&encoded.narrow(2, 0, given));
    let _ = mask.narrow(2, 0, given).fill_(0.0);
    // The latent holds normalized values where noise goes and raw VAE values where the image
    // is kept (ComfyUI's mix of process_out and the encoded frames).
    let format = LatentFormat::wan22();
    let latent: Tensor = format.process_out(&latent) * &mask + &latent * (1.0 - &mask);
    let mut out = Latent::new(latent.repeat([batch, 1, 1, 1, 1]));
    out.noise_mask = Some(Arc::new(crate::engine::value::SharedTensor::new(
        mask.repeat([batch, 1, 1, 1, 1]),
    )));
    Ok(NodeOutput::one(Value::object(out)))
}

pub fn register(r: &mut Registry) {
    let size = |name: &str, default: i64, min: i64, step: i64| {
        InputDef::int(name)
            .default(default)
            .min(min)
            .max(MAX_RESOLUTION)
            .step(step)
    };
    let length = |default: i64| {
        InputDef::int("length")
            .default(default)
            .min(1)
            .max(MAX_RESOLUTION)
            .step(4)
    };
    let batch = || InputDef::int("batch_size").default(1).min(1).max(4096);
    r.add(
        wan_node("WanImageToVideo", wan_image_to_video)
            .input(InputDef::new("positive", "CONDITIONING"))
            .input(InputDef::new("negative", "CONDITIONING"))
            .input(InputDef::new("vae", "VAE"))
            .input(size("width", 832, 16, 16))
            .input(size("height", 480, 16, 16))
            .input(length(81))
            .input(batch())
            .input(InputDef::new("clip_vision_output", "CLIP_VISION_OUTPUT").optional())
            .input(InputDef::new("start_image", "IMAGE").optional())
            .named_output("CONDITIONING", "positive")
            .named_output("CONDITIONING", "negative")
            .named_output("LATENT", "latent"),
    );
    r.add(
        wan_node("Wan22ImageToVideoLatent", wan22_image_to_video_latent)
            .input(InputDef::new("vae", "VAE"))
            .input(size("width", 1280, 32, 32))
            .input(size("height", 704, 32, 32))
            .input(length(49))
            .input(batch())
            .input(InputDef::new("start_image", "IMAGE").optional())
            .output("LATENT"),
    );
}
