//! Wan Animate 2's nodes (`WanAnimate2ToVideo` and `WanAnimate2Cache` in
//! `comfy_extras/nodes_wan.py`): the reference image as one latent frame in front of the video,
//! the pose video's latents and prompt for the model's pose branch (limited to a window of the
//! schedule through timestep ranges), and the cache of that branch's block inputs.

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::wan::{latent_frames, video_length, video_side, with_extras};
use super::wan_animate::{continued_motion, fit_area, held_to};
use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::clip_vision::ClipVisionOutput;
use crate::models::vae::Vae;
use crate::models::wan::animate2::{CacheStorage, PoseCache};
use crate::models::wan::net::WanNet;
use crate::sampling::model::{Conditioning, DiffusionNet, Latent, Model};

/// Frames of `continue_motion` carried into the next segment.
const CONTINUE_MOTION_FRAMES: i64 = 1;

/// A float setting as a one-element extra.
fn setting(value: f64) -> Tensor {
    Tensor::from_slice(&[value as f32])
}

fn animate2_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (start, end) = (i.float("pose_start_percent")?, i.float("pose_end_percent")?);
    if start > end {
        return Err(NodeError::value(format!(
            "pose_start_percent ({start}) must not be greater than pose_end_percent ({end})."
        )));
    }
    let vae = i.object::<Arc<Vae>>("vae")?;
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let mut offset = i.int("video_frame_offset")?;
    let (lh, lw, frames) = (height / 8, width / 8, latent_frames(length));
    let cpu = (Kind::Float, Device::Cpu);

    let reference = match i.opt_tensor("reference_image") {
        Some(image) => fit_area(image, 1, width, height)?,
        None => Tensor::zeros([1, height, width, 3], cpu),
    };
    let reference = vae.encode(&reference.narrow(3, 0, 3))?;
    let trim_latent = reference.size()[2];

    let (video, taken, motion_frames) = continued_motion(
        i.opt_tensor("continue_motion"),
        CONTINUE_MOTION_FRAMES,
        (width, height, length),
    )?;
    offset = (offset - taken).max(0);
    let concat = Tensor::cat(&[reference, vae.encode(&video.narrow(3, 0, 3))?], 2);
    // 0 where the frame is known: the reference slot and the continued motion.
    let mask = Tensor::ones([1, 1, frames + trim_latent, lh, lw], cpu);
    let _ = mask.narrow(2, 0, trim_latent + motion_frames).fill_(0.0);
    let mut extras: Vec<(&str, Tensor)> =
        vec![("concat_latent_image", concat), ("concat_mask", mask)];
    if let Some(clip) = i.opt_object::<ClipVisionOutput>("clip_vision_output") {
        extras.push(("clip_vision_output", clip.penultimate.shallow_clone()));
    }
    let reference_strength = i.float("reference_image_strength")?;
    if reference_strength != 1.0 {
        extras.push(("reference_strength", setting(reference_strength)));
    }

    let positive = i.object::<Conditioning>("positive")?;
    let mut pose: Vec<(&str, Tensor)> = Vec::new();
    if let Some(video) = i.opt_tensor("pose_video") {
        let n = video.size()[0];
        if n <= offset {
            return Err(NodeError::value(format!(
                "pose_video has {n} frames but video_frame_offset is {offset} -- nothing left to read."
            )));
        }
        let pose_video = fit_area(&video.narrow(0, offset, n - offset), length, width, height)?;
        let pose_video = held_to(pose_video, length);
        pose.push((
            "pose_video_latent",
            vae.encode(&pose_video.narrow(3, 0, 3))?,
        ));
    }
    let pose_clip = i
        .opt_object::<ClipVisionOutput>("clip_vision_output_pose")
        .or_else(|| i.opt_object::<ClipVisionOutput>("clip_vision_output"));
    if let Some(clip) = pose_clip {
        pose.push(("clip_vision_output_pose", clip.penultimate.shallow_clone()));
    }
    let pose_cond = i
        .opt_object::<Conditioning>("positive_pose")
        .unwrap_or(positive);
    if let Some(first) = pose_cond.0.first() {
        pose.push(("cross_attn_pose", first.context.shallow_clone()));
    }
    let pose_strength = i.float("pose_strength")?;
    if pose_strength != 1.0 {
        pose.push(("pose_strength", setting(pose_strength)));
    }

    let condition = |cond: &Conditioning| -> Conditioning {
        let borrowed: Vec<(&str, &Tensor)> = extras.iter().map(|(k, v)| (*k, v)).collect();
        let cond = with_extras(cond, &borrowed);
        let with_pose = |c: &Conditioning| {
            let p: Vec<(&str, &Tensor)> = pose.iter().map(|(k, v)| (*k, v)).collect();
            with_extras(c, &p)
        };
        if start <= 0.0 && end >= 1.0 {
            return with_pose(&cond);
        }
        // The pose values ride entries limited to the window; entries without them cover the
        // rest of the schedule, where the model runs without its pose branch.
        let ranged = |c: &Conditioning, from: f64, to: f64| {
            let mut c = c.clone();
            for e in c.0.iter_mut() {
                e.start_percent = from;
                e.end_percent = to;
            }
            c
        };
        let mut parts = ranged(&with_pose(&cond), start, end).0;
        if start > 0.0 {
            parts.extend(ranged(&cond, 0.0, start).0);
        }
        if end < 1.0 {
            parts.extend(ranged(&cond, end, 1.0).0);
        }
        Conditioning(parts)
    };
    let negative = i.object::<Conditioning>("negative")?;
    let (positive, negative) = (condition(positive), condition(negative));
    let latent = Tensor::zeros([batch, 16, frames + trim_latent, lh, lw], cpu);
    Ok(NodeOutput::values(vec![
        Value::object(positive),
        Value::object(negative),
        Value::object(Latent::new(latent)),
        Value::Int(trim_latent.into()),
        Value::Int((motion_frames * 4 - 3).max(0).into()),
        Value::Int((offset + length).into()),
    ]))
}

fn animate2_cache(i: &Inputs, _: &ExecContext) -> NodeResult {
    let model = i.object::<Model>("model")?;
    let storage = match i.string("dtype")?.as_str() {
        "int8" => CacheStorage::Int8,
        "int4" => CacheStorage::Int4,
        _ => CacheStorage::Default,
    };
    let Some(net) = model.net.as_any().and_then(|n| n.downcast_ref::<WanNet>()) else {
        // Other models have no pose branch: the option changes nothing, as in ComfyUI.
        return Ok(NodeOutput::one(Value::object(model.clone())));
    };
    let device = if i.string("device")? == "gpu" {
        net.device()
    } else {
        Device::Cpu
    };
    let Some(cached) = net.with_pose_cache(PoseCache::new(device, storage)) else {
        return Ok(NodeOutput::one(Value::object(model.clone())));
    };
    let patched = Model {
        net: Arc::new(cached),
        ..model.clone()
    };
    Ok(NodeOutput::one(Value::object(patched)))
}

pub fn register(r: &mut Registry) {
    let fraction = |name: &str, default: f64, max: f64| {
        InputDef::float(name)
            .default(default)
            .min(0.0)
            .max(max)
            .step(0.01)
    };
    let mut node = NodeDef::builtin(
        "WanAnimate2ToVideo",
        Style::V3,
        "WanAnimate2ToVideo",
        "model/conditioning/wan/animate",
        animate2_to_video,
    )
    .module("comfy_extras.nodes_wan")
    .description("Animate a character in a reference image using a video, effectively replicating the facial animation, body motion and hands gesture from the video.")
    .input(InputDef::new("positive", "CONDITIONING"))
    .input(InputDef::new("negative", "CONDITIONING"))
    .input(InputDef::new("vae", "VAE"))
    .input(video_side("width", 832).tooltip("Output video width in pixels."))
    .input(video_side("height", 480).tooltip("Output video height in pixels."))
    .input(
        video_length(81)
            .tooltip("Number of frames to generate."),
    )
    .input(
        InputDef::int("batch_size")
            .default(1)
            .min(1)
            .max(4096)
            .tooltip("Number of videos to generate simultaneously."),
    )
    .input(InputDef::new("reference_image", "IMAGE").optional().tooltip("The character to animate."))
    .input(InputDef::new("pose_video", "IMAGE").optional().tooltip("The video whose motion is transferred to the reference character."))
    .input(InputDef::new("clip_vision_output", "CLIP_VISION_OUTPUT").optional().tooltip("CLIP vision of the reference image."))
    .input(InputDef::new("positive_pose", "CONDITIONING").optional().tooltip("Prompt for the pose-video branch, describing the motion rather than the character. Defaults to positive. Used for both the cond and uncond passes."))
    .input(InputDef::new("clip_vision_output_pose", "CLIP_VISION_OUTPUT").optional().tooltip("CLIP vision of the pose video's first frame. Defaults to clip_vision_output."))
    .input(InputDef::new("continue_motion", "IMAGE").optional().tooltip("Previous motion sequence to continue from for temporal consistency."))
    .input(
        InputDef::int("video_frame_offset")
            .default(0)
            .min(0)
            .max(MAX_RESOLUTION)
            .step(1)
            .tooltip("Frames to seek into the pose video. Connect to the video_frame_offset output of the previous node when extending."),
    )
    .input(fraction("pose_strength", 1.0, 10.0).tooltip("Scales the pose video's influence on the motion. 1.0 is the trained behavior; below weakens adherence, above amplifies. 0.0 mutes it but does not fully remove it."))
    .input(fraction("pose_start_percent", 0.0, 1.0).tooltip("Sampling percent at which the pose influence starts. Outside the window the pose branch is skipped entirely, which also speeds those steps up."))
    .input(fraction("pose_end_percent", 1.0, 1.0).tooltip("Sampling percent at which the pose influence ends. Motion is mostly established early, so e.g. 0.7 can loosen fine detail while keeping the choreography."))
    .input(fraction("reference_image_strength", 1.0, 10.0).tooltip("Scales how strongly generated frames attend to the reference image's latent frame. Below 1.0 loosens identity/appearance adherence (e.g. to let the prompt restyle), above tightens it against drift."))
    .named_output("CONDITIONING", "positive")
    .named_output("CONDITIONING", "negative")
    .named_output("LATENT", "latent")
    .named_output("INT", "trim_latent")
    .output_tooltip("Number of latent frames that should be trimmed before decoding.")
    .named_output("INT", "trim_image")
    .output_tooltip("Number of overlapping image frames when extending a video.")
    .named_output("INT", "video_frame_offset")
    .output_tooltip("Frames to seek into the pose video.");
    node.experimental = true;
    r.add(node);

    let mut cache = NodeDef::builtin(
        "WanAnimate2Cache",
        Style::V3,
        "WanAnimate2Cache",
        "model/conditioning/wan/animate",
        animate2_cache,
    )
    .module("comfy_extras.nodes_wan")
    .description("Caches the pose-video's per-block activations so it runs once instead of on every sampling step. Roughly halves generation time Tradeoff is ~12.5 GB of system RAM at 480x832/81 frames in bf16 (scales with resolution and length). With context windows each window is cached separately, so RAM scales with the window count; use the static_standard schedule, as uniform schedules shift the windows every step and nothing ever recurs to hit the cache.")
    .input(InputDef::new("model", "MODEL"))
    .input(InputDef::combo("device", &["cpu", "gpu"]).default("cpu").tooltip("Where to keep the cache. cpu (RAM) is the safe choice, the cache will not fit in VRAM alongside the model at typical sizes. gpu (VRAM) can be faster if it fits."))
    .input(InputDef::combo("dtype", &["default", "int8", "int4"]).default("default").tooltip("Storage precision. default stores the activations in the model's compute dtype. int8 halves the cache, int4 quarters it, convrot is used to retain accuracy."))
    .output("MODEL");
    cache.experimental = true;
    r.add(cache);
}
