//! Wan 2.2 Animate's node (`WanAnimateToVideo` in `comfy_extras/nodes_wan.py`): the reference
//! image as latent frames in front of the video, the pose video's latents, the face video at
//! 512×512 for the motion encoder (the negative prompt gets a blank face), and for character
//! replacement a background video and a character mask; continued motion from an earlier
//! segment is kept as known frames.

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::wan::{conditioning_inputs, latent_frames, with_extras};
use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::clip_vision::ClipVisionOutput;
use crate::models::vae::Vae;
use crate::models::wan::animate::FACE_SIZE;
use crate::sampling::model::{Conditioning, Latent};
use crate::upscale::common_upscale;

/// `images[:length]` (`[n, H, W, C]`) area-resized and center-cropped to `width × height`, as
/// the Animate nodes fit every input video.
pub(super) fn fit_area(
    images: &Tensor,
    length: i64,
    width: i64,
    height: i64,
) -> Result<Tensor, NodeError> {
    let n = images.size()[0].min(length);
    let nchw = images
        .narrow(0, 0, n)
        .to_kind(Kind::Float)
        .permute([0, 3, 1, 2]);
    Ok(common_upscale(&nchw, width, height, "area", "center")?.permute([0, 2, 3, 1]))
}

/// `video` (fitted, at least one frame) held on its last frame up to `length` frames, as
/// upstream pads a driving video that ends early.
pub(super) fn held_to(video: Tensor, length: i64) -> Tensor {
    let n = video.size()[0];
    if n >= length {
        return video;
    }
    let last = video.narrow(0, n - 1, 1).repeat([length - n, 1, 1, 1]);
    Tensor::cat(&[video, last], 0)
}

/// The video the Animate nodes encode beside the reference: mid-grey, with the last
/// `max_frames` frames of `motion` (at most `length`) at its start when an earlier segment's
/// motion continues. Returns it, how many frames were taken from `motion` (the frame offset
/// moves back by them) and how many latent frames they fill.
pub(super) fn continued_motion(
    motion: Option<&Tensor>,
    max_frames: i64,
    (width, height, length): (i64, i64, i64),
) -> Result<(Tensor, i64, i64), NodeError> {
    let cpu = (Kind::Float, Device::Cpu);
    let Some(motion) = motion else {
        return Ok((Tensor::full([length, height, width, 3], 0.5, cpu), 0, 0));
    };
    let n = motion.size()[0];
    let taken = max_frames.min(n);
    let kept = taken.min(length);
    let fitted = fit_area(&motion.narrow(0, n - kept, kept), kept, width, height)?;
    let video = Tensor::full([length, height, width, fitted.size()[3]], 0.5, cpu);
    video.narrow(0, 0, kept).copy_(&fitted);
    Ok((video, taken, latent_frames(kept)))
}

/// A driving video read from `offset` on, or `None` when it ends before that.
fn from_offset(video: Option<&Tensor>, offset: i64) -> Option<Tensor> {
    let video = video?;
    let n = video.size()[0];
    (n > offset).then(|| video.narrow(0, offset, n - offset))
}

/// The character mask `[n, H, W]` (or one mask for every frame) as `[1, 1, frames, lh, lw]`,
/// nearest-exact at the latent's size.
fn character_mask(
    mask: &Tensor,
    offset: i64,
    length: i64,
    (lh, lw): (i64, i64),
) -> Result<Option<Tensor>, NodeError> {
    let n = mask.size()[0];
    if n <= offset && n != 1 {
        return Ok(None);
    }
    let mask = if n == 1 {
        let mut repeats = vec![length];
        repeats.extend(std::iter::repeat_n(1, mask.dim() - 1));
        mask.repeat(repeats.as_slice())
    } else {
        mask.narrow(0, offset, n - offset)
    };
    let mask = match mask.dim() {
        3 => mask.unsqueeze(1).movedim(0, 1).unsqueeze(1),
        4 => mask.unsqueeze(1),
        _ => mask,
    };
    let frames = mask.size()[2].min(length);
    let mask = mask.to_kind(Kind::Float).narrow(2, 0, frames);
    Ok(Some(common_upscale(
        &mask,
        lw,
        lh,
        "nearest-exact",
        "center",
    )?))
}

fn animate_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let mut offset = i.int("video_frame_offset")?;
    let frames = latent_frames(length);
    let cpu = (Kind::Float, Device::Cpu);

    let reference = match i.opt_tensor("reference_image") {
        Some(image) => fit_area(image, length, width, height)?,
        None => Tensor::zeros([1, height, width, 3], cpu),
    };
    let reference = vae.encode(&reference.narrow(3, 0, 3))?;
    let (trim_latent, lh, lw) = {
        let s = reference.size();
        (s[2], s[3], s[4])
    };

    let (video, taken, motion_frames) = continued_motion(
        i.opt_tensor("continue_motion"),
        i.int("continue_motion_max_frames")?,
        (width, height, length),
    )?;
    offset = (offset - taken).max(0);

    let mut extras: Vec<(&str, Tensor)> = Vec::new();
    if let Some(clip) = i.opt_object::<ClipVisionOutput>("clip_vision_output") {
        extras.push(("clip_vision_output", clip.penultimate.shallow_clone()));
    }
    if let Some(pose) = from_offset(i.opt_tensor("pose_video"), offset) {
        let pose = held_to(fit_area(&pose, length, width, height)?, length);
        extras.push(("pose_video_latent", vae.encode(&pose.narrow(3, 0, 3))?));
    }
    let faces = match from_offset(i.opt_tensor("face_video"), offset) {
        Some(face) => {
            let face = fit_area(&face, length, FACE_SIZE, FACE_SIZE)? * 2.0 - 1.0;
            // [n, H, W, C] → [1, C, n, H, W]
            Some(face.permute([3, 0, 1, 2]).unsqueeze(0))
        }
        None => None,
    };

    let reference_images = (motion_frames * 4 - 3).max(0);
    if let Some(background) = from_offset(i.opt_tensor("background_video"), offset) {
        let background = fit_area(&background, length, width, height)?;
        let n = background.size()[0];
        if n > reference_images {
            let span = n - reference_images;
            video
                .narrow(0, reference_images, span)
                .copy_(&background.narrow(0, reference_images, span));
        }
    }
    // 1 where a frame is generated: not the continued motion's frames, and only inside the
    // character's mask when one is given.
    let known = Tensor::ones([1, 1, frames * 4, lh, lw], cpu);
    if motion_frames > 0 {
        let _ = known.narrow(2, 0, motion_frames * 4).fill_(0.0);
    }
    if let Some(mask) = i.opt_tensor("character_mask") {
        if let Some(mask) = character_mask(mask, offset, length, (lh, lw))? {
            let n = mask.size()[2];
            if n > reference_images {
                let span = n - reference_images;
                known.narrow(2, reference_images, span).copy_(&mask.narrow(
                    2,
                    reference_images,
                    span,
                ));
            }
        }
    }
    let concat = Tensor::cat(&[reference, vae.encode(&video.narrow(3, 0, 3))?], 2);
    let known = known.view([1, frames, 4, lh, lw]).transpose(1, 2);
    let mask = Tensor::cat(&[Tensor::zeros([1, 4, trim_latent, lh, lw], cpu), known], 2);
    extras.push(("concat_latent_image", concat));
    extras.push(("concat_mask", mask));

    let condition = |cond: &Conditioning, face: Option<Tensor>| {
        let mut all: Vec<(&str, &Tensor)> = extras.iter().map(|(k, v)| (*k, v)).collect();
        if let Some(face) = &face {
            all.push(("face_video_pixels", face));
        }
        with_extras(cond, &all)
    };
    let positive = condition(
        i.object::<Conditioning>("positive")?,
        faces.as_ref().map(Tensor::shallow_clone),
    );
    // The negative prompt sees a blank (all −1) face.
    let blank = faces.as_ref().map(|f| f.full_like(-1.0));
    let negative = condition(i.object::<Conditioning>("negative")?, blank);
    let latent = Tensor::zeros(
        [batch, 16, frames + trim_latent, height / 8, width / 8],
        cpu,
    );
    Ok(NodeOutput::values(vec![
        Value::object(positive),
        Value::object(negative),
        Value::object(Latent::new(latent)),
        Value::Int(trim_latent.into()),
        Value::Int(reference_images.into()),
        Value::Int((offset + length).into()),
    ]))
}

pub fn register(r: &mut Registry) {
    let node = NodeDef::builtin(
        "WanAnimateToVideo",
        Style::V3,
        "WanAnimateToVideo",
        "model/conditioning/wan/animate",
        animate_to_video,
    )
    .module("comfy_extras.nodes_wan");
    let mut node = conditioning_inputs(node, 77)
    .input(InputDef::new("clip_vision_output", "CLIP_VISION_OUTPUT").optional())
    .input(InputDef::new("reference_image", "IMAGE").optional())
    .input(InputDef::new("face_video", "IMAGE").optional())
    .input(InputDef::new("pose_video", "IMAGE").optional())
    .input(
        InputDef::int("continue_motion_max_frames")
            .default(5)
            .min(1)
            .max(MAX_RESOLUTION)
            .step(4),
    )
    .input(InputDef::new("background_video", "IMAGE").optional())
    .input(InputDef::new("character_mask", "MASK").optional())
    .input(InputDef::new("continue_motion", "IMAGE").optional())
    .input(
        InputDef::int("video_frame_offset")
            .default(0)
            .min(0)
            .max(MAX_RESOLUTION)
            .step(1)
            .tooltip("The amount of frames to seek in all the input videos. Used for generating longer videos by chunk. Connect to the video_frame_offset output of the previous node for extending a video."),
    )
    .named_output("CONDITIONING", "positive")
    .named_output("CONDITIONING", "negative")
    .named_output("LATENT", "latent")
    .named_output("INT", "trim_latent")
    .named_output("INT", "trim_image")
    .named_output("INT", "video_frame_offset");
    node.experimental = true;
    r.add(node);
}
