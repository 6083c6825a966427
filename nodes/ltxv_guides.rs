//! LTXVAddGuide and LTXVCropGuides (`comfy_extras/nodes_lt.py`): an image or a video encoded and
//! appended to an LTX video latent as clean guide frames, its positions (`keyframe_idxs`) and
//! attention strength recorded in both conditionings; the crop that drops them again before
//! the latent is decoded or resized; and GetICLoRAParameters, which reads an IC-LoRA's guide
//! settings from its metadata.

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::models::ltx::av_rope::pixel_spans;
use crate::models::vae::Vae;
use crate::sampling::model::{Conditioning, GuideAttention, Latent, Model, KEYFRAME_IDXS};
use crate::upscale::{common_upscale, py_round};

/// LTX video latents are this wide; an audio-video latent is not.
const VIDEO_CHANNELS: i64 = 128;

/// The latent's noise mask, or ones `[b, 1, f, 1, 1]` (ComfyUI's `get_noise_mask`).
pub fn noise_mask_or_ones(latent: &Latent) -> Tensor {
    match &latent.noise_mask {
        Some(mask) => mask.copy(),
        None => {
            let size = latent.samples.size();
            Tensor::ones([size[0], 1, size[2], 1, 1], (Kind::Float, Device::Cpu))
        }
    }
}

/// The guides' positions a conditioning carries `[1, 3, tokens, 2]` (its first entry's that has
/// them) and how many latent frames of `h × w` cells they fill.
fn keyframes(cond: &Conditioning, (h, w): (i64, i64)) -> (Option<Tensor>, i64) {
    match cond.0.iter().find_map(|e| e.extra(KEYFRAME_IDXS)) {
        Some(k) => (Some(k.shallow_clone()), k.size()[2] / (h * w)),
        None => (None, 0),
    }
}

/// Where a guide of `guide_frames` pixel frames starting at `frame_idx` lands: the pixel frame
/// (counted from the end when negative, and moved onto a latent frame's first pixel frame for
/// videos) and its latent frame.
fn guide_index(
    frame_idx: i64,
    guide_frames: i64,
    latent_frames: i64,
    time_scale: i64,
) -> (i64, i64) {
    let frame = if frame_idx >= 0 {
        frame_idx
    } else {
        ((latent_frames - 1) * time_scale + 1 + frame_idx).max(0)
    };
    let frame = if guide_frames > 1 && frame != 0 {
        (frame - 1).div_euclid(time_scale) * time_scale + 1
    } else {
        frame
    };
    (frame, (frame + time_scale - 1).div_euclid(time_scale))
}

/// Both conditionings with the guide's positions appended to their own and its attention entry
/// appended to their guides.
fn with_guide(
    cond: &Conditioning,
    spans: &Tensor,
    guide: &GuideAttention,
    cells: (i64, i64),
) -> Conditioning {
    let positions = match keyframes(cond, cells).0 {
        Some(existing) => Tensor::cat(&[existing, spans.shallow_clone()], 2),
        None => spans.shallow_clone(),
    };
    let mut guides = cond
        .0
        .iter()
        .map(|e| e.guides.clone())
        .find(|g| !g.is_empty())
        .unwrap_or_default();
    guides.push(guide.clone());
    let entries = cond
        .0
        .iter()
        .map(|e| {
            let mut e = e
                .clone()
                .with_extra(KEYFRAME_IDXS, positions.shallow_clone());
            e.guides = guides.clone();
            e
        })
        .collect();
    Conditioning(entries)
}

fn without_guides(cond: &Conditioning) -> Conditioning {
    let entries = cond
        .0
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.extra.remove(KEYFRAME_IDXS);
            e.guides.clear();
            e
        })
        .collect();
    Conditioning(entries)
}

fn masked_latent(samples: Tensor, mask: Tensor) -> Value {
    let mut out = Latent::new(samples);
    out.noise_mask = Some(Arc::new(SharedTensor::new(mask)));
    Value::object(out)
}

fn video_latent(latent: &Latent, node: &str) -> Result<(i64, i64, i64, i64, i64), NodeError> {
    let size = latent.samples.size();
    match size[..] {
        [b, c, f, h, w] if latent.nested.is_none() && c == VIDEO_CHANNELS => Ok((b, c, f, h, w)),
        _ => Err(NodeError::value(format!(
            "{node} takes an LTX video latent [b, 128, f, h, w], not {size:?} (adding a guide to a \
             combined audio-video latent is not supported: separate it first)"
        ))),
    }
}

/// IC_LORA_PARAMETERS: what GetICLoRAParameters reads of an IC-LoRA's metadata.
struct IcLoraParameters {
    /// How many times smaller than the video its guides are given ("small grid" IC-LoRAs).
    reference_downscale_factor: i64,
}

/// GetICLoRAParameters: the last loaded LoRA's `…reference_downscale_factor` metadata value,
/// rounded, at least 1 (1 when the file has none or it is not a number).
fn get_iclora_parameters(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("iclora_model")?;
    let factor = model
        .lora_metadata
        .as_ref()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.ends_with("reference_downscale_factor"))
        })
        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .map_or(1, |v| py_round(v).max(1));
    Ok(NodeOutput::one(Value::object(IcLoraParameters {
        reference_downscale_factor: factor,
    })))
}

fn ltxv_add_guide(i: &Inputs, _: &ExecContext) -> NodeResult {
    if i.get("iclora_parameters").is_some() {
        let factor = i
            .object::<IcLoraParameters>("iclora_parameters")?
            .reference_downscale_factor;
        if factor > 1 {
            return Err(NodeError::value(format!(
                "IC-LoRAs with a reference downscale factor above 1 (this one's is {factor}) \
                 are not supported yet"
            )));
        }
    }
    let vae = i.object::<Arc<Vae>>("vae")?;
    let latent = i.object::<Latent>("latent")?;
    let (_, _, frames, h, w) = video_latent(latent, "LTXVAddGuide")?;
    let (positive, negative) = (
        i.object::<Conditioning>("positive")?,
        i.object::<Conditioning>("negative")?,
    );
    let image = i.tensor("image")?;
    let (frame_idx, strength) = (i.int("frame_idx")?, i.float("strength")?);
    let time_scale = vae.temporal_ratio;
    let kept = (image.size()[0] - 1).div_euclid(time_scale) * time_scale + 1;
    let appended = keyframes(positive, (h, w)).1;
    let resolved = if frame_idx < 0 {
        ((frames - appended - 1) * time_scale + 1 + frame_idx).max(0)
    } else {
        frame_idx
    };
    // A guide that starts mid-video has no first-frame latent of its own: a copy of its first
    // frame is encoded before it and dropped, so the causal first latent frame falls on it.
    let causal = resolved == 0 || kept == 1;
    let image = if causal {
        image.shallow_clone()
    } else {
        Tensor::cat(&[image.narrow(0, 0, 1), image.shallow_clone()], 0)
    };
    let encoded_frames = (image.size()[0] - 1).div_euclid(time_scale) * time_scale + 1;
    let (pw, ph) = (w * vae.spatial_ratio, h * vae.spatial_ratio);
    let pixels = common_upscale(
        &image.narrow(0, 0, encoded_frames).movedim(-1, 1),
        pw,
        ph,
        "bilinear",
        "center",
    )?
    .movedim(1, -1);
    let mut guide = vae.encode(&pixels.narrow(3, 0, 3))?.to_kind(Kind::Float);
    let guide_frames = if causal {
        encoded_frames
    } else {
        guide = guide.narrow(2, 1, guide.size()[2] - 1);
        encoded_frames - 1
    };
    let (gb, _, gf, gh, gw) = guide.size5()?;
    let (frame, latent_idx) = guide_index(frame_idx, guide_frames, frames - appended, time_scale);
    if latent_idx + gf > frames {
        return Err(NodeError::value(
            "Conditioning frames exceed the length of the latent sequence.",
        ));
    }
    let spans = pixel_spans((gf, gh, gw), causal);
    let time = spans.narrow(0, 0, 1) + frame as f64;
    let spans = Tensor::cat(&[time, spans.narrow(0, 1, 2)], 0).unsqueeze(0);
    let entry = GuideAttention {
        tokens: gf * gh * gw,
        strength,
        pixel_mask: i
            .opt_tensor("attention_mask")
            .map(|m| Arc::new(SharedTensor::new(m.unsqueeze(0).unsqueeze(0)))),
        latent_shape: [gf, gh, gw],
    };
    let mask = noise_mask_or_ones(latent);
    let ms = mask.size();
    let guide_mask = Tensor::full(
        [ms[0], 1, gf, ms[3], ms[4]],
        (1.0 - strength).max(0.0),
        (Kind::Float, Device::Cpu),
    );
    if gb != latent.samples.size()[0] {
        return Err(NodeError::value(format!(
            "the guide encodes to a batch of {gb}, the latent has {}",
            latent.samples.size()[0]
        )));
    }
    let samples = Tensor::cat(&[latent.samples.to_kind(Kind::Float), guide], 2);
    let mask = Tensor::cat(&[mask, guide_mask], 2);
    Ok(NodeOutput::values(vec![
        Value::object(with_guide(positive, &spans, &entry, (h, w))),
        Value::object(with_guide(negative, &spans, &entry, (h, w))),
        masked_latent(samples, mask),
    ]))
}

/// LTXVCropGuides: the latent without the guide frames the positive conditioning counts, and both
/// conditionings without guides. Like ComfyUI's it returns the latent with a noise mask (all
/// ones when it had none) and nothing else of its dict.
fn ltxv_crop_guides(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("latent")?;
    let (_, _, frames, h, w) =
        match latent.samples.size()[..] {
            [b, c, f, h, w] if latent.nested.is_none() => (b, c, f, h, w),
            _ => return Err(NodeError::value(
                "LTXVCropGuides takes a video latent [b, c, f, h, w] (separate an AV latent first)",
            )),
        };
    let (positive, negative) = (
        i.object::<Conditioning>("positive")?,
        i.object::<Conditioning>("negative")?,
    );
    let mask = noise_mask_or_ones(latent);
    let appended = keyframes(positive, (h, w)).1.min(frames);
    if appended == 0 {
        return Ok(NodeOutput::values(vec![
            Value::object(positive.clone()),
            Value::object(negative.clone()),
            masked_latent(latent.samples.shallow_clone(), mask),
        ]));
    }
    let kept = frames - appended;
    Ok(NodeOutput::values(vec![
        Value::object(without_guides(positive)),
        Value::object(without_guides(negative)),
        masked_latent(
            latent.samples.narrow(2, 0, kept),
            mask.narrow(2, 0, kept.min(mask.size()[2])),
        ),
    ]))
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, f: fn(&Inputs, &ExecContext) -> NodeResult| {
        NodeDef::builtin(name, Style::V3, name, "model/conditioning/ltxv", f)
            .module("comfy_extras.nodes_lt")
            .input(InputDef::new("positive", "CONDITIONING"))
            .input(InputDef::new("negative", "CONDITIONING"))
    };
    let outputs = |def: NodeDef| {
        def.named_output("CONDITIONING", "positive")
            .named_output("CONDITIONING", "negative")
            .named_output("LATENT", "latent")
    };
    r.add(outputs(
        node("LTXVAddGuide", ltxv_add_guide)
            .input(InputDef::new("vae", "VAE"))
            .input(InputDef::new("latent", "LATENT"))
            .input(InputDef::new("image", "IMAGE").tooltip(
                "Image or video to condition the latent video on. Must be 8*n + 1 frames. If the \
                 video is not 8*n + 1 frames, it will be cropped to the nearest 8*n + 1 frames.",
            ))
            .input(
                InputDef::int("frame_idx")
                    .default(0)
                    .min(-9999)
                    .max(9999)
                    .tooltip(
                        "Frame index to start the conditioning at. For single-frame images or \
                         videos with 1-8 frames, any frame_idx value is acceptable. For videos \
                         with 9+ frames, frame_idx must be divisible by 8, otherwise it will be \
                         rounded down to the nearest multiple of 8. Negative values are counted \
                         from the end of the video.",
                    ),
            )
            .input(
                InputDef::float("strength")
                    .default_float(1.0)
                    .min_float(0.0)
                    .max_float(10.0)
                    .step_float(0.01),
            )
            .input(InputDef::new("attention_mask", "MASK").optional().tooltip(
                "Optional pixel-space spatial mask. Controls per-region conditioning influence \
                 via self-attention, multiplied by strength.",
            ))
            .input(
                InputDef::new("iclora_parameters", "IC_LORA_PARAMETERS")
                    .optional()
                    .tooltip(
                        "Optional IC-LoRA parameters from a Get IC-LoRA Parameters node. Used for \
                         adjusting guide processing as required by certain IC-LoRAs (eg. those \
                         with a reference_downscale_factor > 1). When chained, each LTXVAddGuide \
                         uses only the parameters connected to it.",
                    ),
            ),
    ));
    r.add(outputs(
        node("LTXVCropGuides", ltxv_crop_guides).input(InputDef::new("latent", "LATENT")),
    ));
    r.add(
        NodeDef::builtin(
            "GetICLoRAParameters",
            Style::V3,
            "GetICLoRAParameters",
            "model/conditioning/ltxv",
            get_iclora_parameters,
        )
        .module("comfy_extras.nodes_lt")
        .display("Get IC-LoRA Parameters")
        .description(
            "Extracts IC-LoRA parameters from the safetensors metadata of a LoRA-loaded model and \
             outputs them for LTXVAddGuide (eg. reference_downscale_factor).",
        )
        .aliases(&[
            "ic-lora",
            "ic lora",
            "iclora",
            "downscale factor",
            "reference downscale",
        ])
        .input(InputDef::new("iclora_model", "MODEL").tooltip(
            "Direct output from a LoRA Loader for the specific IC-LoRA from which to extract the \
             metadata.",
        ))
        .named_output("IC_LORA_PARAMETERS", "iclora_parameters")
        .output_tooltip(
            "IC-LoRA parameters extracted from the LoRA metadata (eg. reference_downscale_factor). \
             Connect to LTXVAddGuide if the LoRA requires special handling of the guides.",
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guides_land_on_a_latent_frames_first_pixel_frame() {
        // An image anywhere; a video at 0, or moved back onto 8n + 1.
        assert_eq!(guide_index(13, 1, 16, 8), (13, 2));
        assert_eq!(guide_index(0, 121, 16, 8), (0, 0));
        assert_eq!(guide_index(16, 9, 16, 8), (9, 2));
        // Counted from the end: the last pixel frame of 16 latent frames is 120.
        assert_eq!(guide_index(-1, 1, 16, 8), (120, 15));
        assert_eq!(guide_index(-9, 9, 16, 8), (105, 14));
    }
}
