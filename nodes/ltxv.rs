//! The LTX-Video nodes of `comfy_extras/nodes_lt.py` that run without an LTX network: the
//! empty latent, the frame rate conditioning, the token-shifted schedule and model sampling,
//! image-to-video latents through the LTX VAE, and the H.264 preprocess.

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::loaders::{clip_value, files, model_file};
use super::sampling::{sigmas_out, with_sampling};
use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput, NodeResult, Style,
    MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::media::round_trip::h264_round_trip;
use crate::models::text_encoder::TextEncoder;
use crate::models::vae::Vae;
use crate::sampling::model::{Conditioning, Latent};
use crate::sampling::model_sampling::{ModelSampling, Prediction, Schedule};
use crate::upscale::common_upscale;

/// LTX latents: 128 channels, 8 frames and 32 pixels per cell.
const CHANNELS: i64 = 128;

fn latent_frames(length: i64) -> i64 {
    (length - 1).div_euclid(8) + 1
}

fn empty_ltxv_latent_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let samples = Tensor::zeros(
        [
            i.int("batch_size")?,
            CHANNELS,
            latent_frames(i.int("length")?),
            i.int("height")? / 32,
            i.int("width")? / 32,
        ],
        (Kind::Float, Device::Cpu),
    );
    Ok(NodeOutput::one(Value::object(Latent::new(samples))))
}

fn ltxv_conditioning(i: &Inputs, _: &ExecContext) -> NodeResult {
    let rate = i.float("frame_rate")?;
    let with_rate = |name: &str| -> Result<Value, NodeError> {
        let mut cond = i.object::<Conditioning>(name)?.clone();
        for entry in &mut cond.0 {
            entry.frame_rate = Some(rate);
        }
        Ok(Value::object(cond))
    };
    Ok(NodeOutput::values(vec![
        with_rate("positive")?,
        with_rate("negative")?,
    ]))
}

/// LTXAVTextEncoderLoader: Gemma 3 from `text_encoders/` with the text projection of the LTX-2
/// checkpoint `ckpt_name`, as a CLIP value.
fn ltxav_text_encoder_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let gemma = model_file(ctx, "text_encoders", &i.string("text_encoder")?)?;
    let checkpoint = model_file(ctx, "checkpoints", &i.string("ckpt_name")?)?;
    let cpu = i.string("device")? == "cpu";
    let clip = TextEncoder::ltxav(ctx.env.models.clone(), &gemma, &checkpoint, cpu)?;
    Ok(NodeOutput::one(clip_value(ctx, clip)))
}

/// The shift on the line through (1024 tokens, `base`) and (4096, `max`), for the latent's
/// token count (4096 without a latent).
fn token_shift(i: &Inputs) -> Result<f64, NodeError> {
    let (max_shift, base_shift) = (i.float("max_shift")?, i.float("base_shift")?);
    let tokens = i
        .opt_object::<Latent>("latent")
        .map_or(4096, |l| l.samples.size()[2..].iter().product::<i64>()) as f64;
    let slope = (max_shift - base_shift) / (4096.0 - 1024.0);
    Ok(tokens * slope + base_shift - slope * 1024.0)
}

/// `LTXVScheduler` in float32 with upstream's operations: the shifted `linspace(1, 0)`, then
/// optionally stretched so the last nonzero σ is `terminal`.
fn ltxv_sigmas(steps: i64, shift: f64, stretch: bool, terminal: f64) -> Vec<f64> {
    let t = Tensor::linspace(1.0, 0.0, steps + 1, (Kind::Float, Device::Cpu));
    let e = shift.exp();
    // Python's `scalar / tensor` is `tensor.reciprocal() * scalar`.
    let shifted = (t.reciprocal() - 1.0 + e).reciprocal() * e;
    let mut sigmas = shifted.where_self(&t.ne(0.0), &shifted.zeros_like());
    if stretch {
        let nonzero = sigmas.ne(0.0);
        let one_minus = -sigmas.masked_select(&nonzero) + 1.0;
        let scale = one_minus.get(one_minus.size()[0] - 1) / (1.0 - terminal);
        let stretched = -(one_minus / scale) + 1.0;
        let _ = sigmas.masked_scatter_(&nonzero, &stretched);
    }
    Vec::<f32>::try_from(&sigmas)
        .expect("float32 sigmas")
        .into_iter()
        .map(f64::from)
        .collect()
}

fn ltxv_scheduler(i: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(sigmas_out(ltxv_sigmas(
        i.int("steps")?,
        token_shift(i)?,
        i.boolean("stretch")?,
        i.float("terminal")?,
    ))))
}

fn model_sampling_ltxv(i: &Inputs, _: &ExecContext) -> NodeResult {
    let shift = token_shift(i)?;
    with_sampling(
        i,
        ModelSampling::new(Prediction::Flow, Schedule::Flux { shift }),
    )
}

/// The image resized (bilinear, centre-cropped) to the latent's pixel size and encoded.
fn encode_image(vae: &Vae, image: &Tensor, width: i64, height: i64) -> Result<Tensor, NodeError> {
    let size = image.size();
    let pixels = if size[1] != height || size[2] != width {
        common_upscale(&image.movedim(-1, 1), width, height, "bilinear", "center")
            .map_err(NodeError::from)?
            .movedim(1, -1)
    } else {
        image.shallow_clone()
    };
    Ok(vae.encode(&pixels.narrow(3, 0, 3))?)
}

/// `samples[:, :, :t] = encoded` and the matching mask frames set to `1 − strength`.
fn write_first_frames(
    samples: &Tensor,
    mask: &Tensor,
    encoded: &Tensor,
    strength: f64,
) -> Result<(), NodeError> {
    let (given, frames) = (encoded.size()[2], samples.size()[2]);
    if given > frames {
        return Err(NodeError::runtime(format!(
            "the image encodes to {given} latent frames but the latent has {frames}"
        )));
    }
    samples.narrow(2, 0, given).copy_(encoded);
    let _ = mask.narrow(2, 0, given).fill_(1.0 - strength);
    Ok(())
}

fn masked_latent(samples: Tensor, mask: Tensor) -> Value {
    let mut out = Latent::new(samples);
    out.noise_mask = Some(Arc::new(SharedTensor::new(mask)));
    Value::object(out)
}

fn ltxv_img_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let (width, height) = (i.int("width")?, i.int("height")?);
    let batch = i.int("batch_size")?;
    let frames = latent_frames(i.int("length")?);
    let encoded = encode_image(vae, i.tensor("image")?, width, height)?;
    let cpu = (Kind::Float, Device::Cpu);
    let samples = Tensor::zeros([batch, CHANNELS, frames, height / 32, width / 32], cpu);
    let mask = Tensor::ones([batch, 1, frames, 1, 1], cpu);
    write_first_frames(&samples, &mask, &encoded, i.float("strength")?)?;
    let cond =
        |name: &str| Ok::<_, NodeError>(Value::object(i.object::<Conditioning>(name)?.clone()));
    Ok(NodeOutput::values(vec![
        cond("positive")?,
        cond("negative")?,
        masked_latent(samples, mask),
    ]))
}

fn ltxv_img_to_video_inplace(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("latent")?;
    if i.boolean("bypass")? {
        return Ok(NodeOutput::one(Value::object(latent.clone())));
    }
    let vae = i.object::<Arc<Vae>>("vae")?;
    let samples = latent.samples.copy();
    let size = samples.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    let encoded = encode_image(
        vae,
        i.tensor("image")?,
        w * vae.spatial_ratio,
        h * vae.spatial_ratio,
    )?;
    let mask = super::ltxv_guides::noise_mask_or_ones(latent);
    write_first_frames(&samples, &mask, &encoded, i.float("strength")?)?;
    Ok(NodeOutput::one(masked_latent(samples, mask)))
}

fn ltxv_preprocess(i: &Inputs, _: &ExecContext) -> NodeResult {
    let images = i.tensor("image")?;
    let crf = i.int("img_compression")?;
    if crf == 0 {
        return Ok(NodeOutput::one(Value::tensor(images.shallow_clone())));
    }
    let frames = (0..images.size()[0])
        .map(|n| h264_round_trip(&images.get(n), crf).map_err(NodeError::from))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NodeOutput::one(Value::tensor(Tensor::stack(&frames, 0))))
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, category: &str, f: NodeFunction| {
        NodeDef::builtin(name, Style::V3, name, category, f).module("comfy_extras.nodes_lt")
    };
    let size = |name: &str, default: i64| {
        InputDef::int(name)
            .default(default)
            .min(64)
            .max(MAX_RESOLUTION)
            .step(32)
    };
    let float = |name: &str, default: f64, min: f64, max: f64| {
        InputDef::float(name)
            .default_float(default)
            .min_float(min)
            .max_float(max)
    };
    let batch = || InputDef::int("batch_size").default(1).min(1).max(4096);
    let cond = |name: &str| InputDef::new(name, "CONDITIONING");
    let shifts = |def: NodeDef| {
        def.input(float("max_shift", 2.05, 0.0, 100.0).step_float(0.01))
            .input(float("base_shift", 0.95, 0.0, 100.0).step_float(0.01))
    };
    let strength = || float("strength", 1.0, 0.0, 1.0);
    r.add(
        node(
            "EmptyLTXVLatentVideo",
            "model/latent/ltxv",
            empty_ltxv_latent_video,
        )
        .input(size("width", 768))
        .input(size("height", 512))
        .input(
            InputDef::int("length")
                .default(97)
                .min(1)
                .max(MAX_RESOLUTION)
                .step(8),
        )
        .input(batch())
        .output("LATENT"),
    );
    r.add(
        NodeDef::builtin(
            "LTXAVTextEncoderLoader",
            Style::V3,
            "LTXAVTextEncoderLoader",
            "model/loaders",
            ltxav_text_encoder_loader,
        )
        .module("comfy_extras.nodes_lt_audio")
        .display("Load LTXV Audio Text Encoder")
        .description("Recipes:\nltxav: gemma 3 12B or matching gemma 4 model")
        .input(InputDef::combo_dynamic(
            "text_encoder",
            files("text_encoders"),
        ))
        .input(InputDef::combo_dynamic("ckpt_name", files("checkpoints")))
        .input(InputDef::combo("device", &["default", "cpu"]).advanced())
        .output("CLIP"),
    );
    r.add(
        node(
            "LTXVConditioning",
            "model/conditioning/ltxv",
            ltxv_conditioning,
        )
        .input(cond("positive"))
        .input(cond("negative"))
        .input(float("frame_rate", 25.0, 0.0, 1000.0).step_float(0.01))
        .named_output("CONDITIONING", "positive")
        .named_output("CONDITIONING", "negative"),
    );
    r.add(
        shifts(
            node("ModelSamplingLTXV", "model/patch/ltxv", model_sampling_ltxv)
                .input(InputDef::new("model", "MODEL")),
        )
        .input(InputDef::new("latent", "LATENT").optional())
        .output("MODEL"),
    );
    r.add(
        shifts(
            node("LTXVScheduler", "model/sampling/schedulers", ltxv_scheduler)
                .input(InputDef::int("steps").default(20).min(1).max(10000)),
        )
        .input(
            InputDef::boolean("stretch")
                .default(true)
                .tooltip("Stretch the sigmas to be in the range [terminal, 1].")
                .advanced(),
        )
        .input(
            float("terminal", 0.1, 0.0, 0.99)
                .step_float(0.01)
                .tooltip("The terminal value of the sigmas after stretching.")
                .advanced(),
        )
        .input(InputDef::new("latent", "LATENT").optional())
        .output("SIGMAS"),
    );
    r.add(
        node(
            "LTXVImgToVideo",
            "model/conditioning/ltxv",
            ltxv_img_to_video,
        )
        .input(cond("positive"))
        .input(cond("negative"))
        .input(InputDef::new("vae", "VAE"))
        .input(InputDef::new("image", "IMAGE"))
        .input(size("width", 768))
        .input(size("height", 512))
        .input(
            InputDef::int("length")
                .default(97)
                .min(9)
                .max(MAX_RESOLUTION)
                .step(8),
        )
        .input(batch())
        .input(strength())
        .named_output("CONDITIONING", "positive")
        .named_output("CONDITIONING", "negative")
        .named_output("LATENT", "latent"),
    );
    r.add(
        node(
            "LTXVImgToVideoInplace",
            "model/conditioning/ltxv",
            ltxv_img_to_video_inplace,
        )
        .input(InputDef::new("vae", "VAE"))
        .input(InputDef::new("image", "IMAGE"))
        .input(InputDef::new("latent", "LATENT"))
        .input(strength())
        .input(
            InputDef::boolean("bypass")
                .default(false)
                .tooltip("Bypass the conditioning."),
        )
        .named_output("LATENT", "latent"),
    );
    r.add(
        node("LTXVPreprocess", "video/preprocessors", ltxv_preprocess)
            .display("LTXV Preprocess")
            .input(InputDef::new("image", "IMAGE"))
            .input(
                InputDef::int("img_compression")
                    .default(35)
                    .min(0)
                    .max(100)
                    .tooltip("Amount of compression to apply on image."),
            )
            .named_output("IMAGE", "output_image"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shift` as `token_shift` computes it for the default max/base shifts.
    fn shift_for(tokens: f64) -> f64 {
        let slope = (2.05 - 0.95) / 3072.0;
        tokens * slope + 0.95 - slope * 1024.0
    }

    /// Values printed by upstream ComfyUI's `LTXVScheduler.execute` (float32, CPU): the
    /// float32 rounding of the unstretched first σ shows the operations are the same.
    #[test]
    fn the_schedule_is_upstreams_to_the_bit() {
        let cases: [(i64, f64, bool, f64, &[f32]); 3] = [
            (
                20,
                3520.0,
                true,
                0.1,
                &[
                    1.0,
                    0.9900946,
                    0.9792788,
                    0.9674211,
                    0.95436287,
                    0.9399127,
                    0.92383516,
                    0.90583885,
                    0.88555884,
                    0.8625306,
                    0.836155,
                    0.80564505,
                    0.769946,
                    0.72761106,
                    0.67660034,
                    0.6139424,
                    0.5351337,
                    0.4330064,
                    0.29541367,
                    0.100000024,
                    0.0,
                ],
            ),
            (
                8,
                4096.0,
                false,
                0.1,
                &[
                    0.99999994, 0.98194146, 0.95885396, 0.9282974, 0.8859477, 0.8233447, 0.7213942,
                    0.525999, 0.0,
                ],
            ),
            (
                6,
                4992.0,
                true,
                0.25,
                &[
                    1.0, 0.95679677, 0.89488304, 0.79874563, 0.6291691, 0.25, 0.0,
                ],
            ),
        ];
        for (steps, tokens, stretch, terminal, expected) in cases {
            let got: Vec<f32> = ltxv_sigmas(steps, shift_for(tokens), stretch, terminal)
                .into_iter()
                .map(|s| s as f32)
                .collect();
            assert_eq!(got, expected, "{steps} steps, {tokens} tokens");
        }
    }
}
