//! Wan 2.2 S2V's conditioning (`wan_sound_to_video` in `comfy_extras/nodes_wan.py`):
//! WanSoundImageToVideo and WanSoundImageToVideoExtend, which continues a video clip by clip,
//! its last latent frames as the motion input and the audio from where the video ends.

use std::sync::Arc;

use tch::{Kind, Tensor};

use super::wan::{
    conditioned, conditioning_inputs, fit_end, fit_start, latent_frames, video_length, with_extras,
};
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::models::audio_encoder::AudioEncoderOutput;
use crate::models::vae::Vae;
use crate::models::wan::sound_features::clip_features;
use crate::sampling::latent_format::LatentFormat;
use crate::sampling::model::{Conditioning, Latent};

/// Frames of motion images encoded (the model keeps the last 19 latent frames of them).
const MOTION_IMAGES: i64 = 73;
const MOTION_LATENT_FRAMES: i64 = 19;

/// What one clip is made from.
struct SoundClip<'a> {
    vae: &'a Vae,
    width: i64,
    height: i64,
    length: i64,
    batch: i64,
    /// Video frames already made (the audio starts there).
    offset: i64,
    motion_latent: Option<Tensor>,
}

fn set(cond: &Conditioning, key: &str, value: &Tensor) -> Conditioning {
    with_extras(cond, &[(key, value)])
}

/// `wan_sound_to_video`: the clip's audio features (silence for the negative), the reference
/// image's latent, the motion latents and the control video's latent (the latent mean where
/// none is given) on both conditionings, and the empty latent.
fn sound_to_video(i: &Inputs, clip: SoundClip) -> NodeResult {
    let mut positive = i.object::<Conditioning>("positive")?.clone();
    let mut negative = i.object::<Conditioning>("negative")?.clone();
    let (width, height, length) = (clip.width, clip.height, clip.length);
    let frames = latent_frames(length);
    if let Some(audio) = i.opt_object::<AudioEncoderOutput>("audio_encoder_output") {
        let layers: Vec<Tensor> = audio.all_layers.iter().map(|t| t.shallow_clone()).collect();
        let features = clip_features(&layers, frames * 4, clip.offset);
        if features.size()[3] > 0 {
            positive = set(&positive, "audio_embed", &features);
            negative = set(&negative, "audio_embed", &(&features * 0.0));
        }
    }
    if let Some(image) = i.opt_tensor("ref_image") {
        let image = fit_start(image, 1, width, height)?;
        let latent = clip.vae.encode(&image.narrow(3, 0, 3))?;
        // ComfyUI appends to `reference_latents` and the model reads the last one.
        positive = set(&positive, "reference_latent", &latent);
        negative = set(&negative, "reference_latent", &latent);
    }
    let motion = match (clip.motion_latent, i.opt_tensor("ref_motion")) {
        (Some(latent), _) => Some(latent),
        (None, Some(images)) => Some(clip.vae.encode(&motion_images(images, width, height)?)?),
        (None, None) => None,
    };
    if let Some(motion) = motion {
        let t = motion.size()[2];
        let kept = t.min(MOTION_LATENT_FRAMES);
        let motion = motion.narrow(2, t - kept, kept);
        positive = set(&positive, "reference_motion", &motion);
        negative = set(&negative, "reference_motion", &motion);
    }
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros([clip.batch, 16, frames, height / 8, width / 8], cpu);
    let control = LatentFormat::wan21().process_out(&latent.zeros_like());
    if let Some(video) = i.opt_tensor("control_video") {
        let video = fit_start(video, length, width, height)?;
        let encoded = clip.vae.encode(&video.narrow(3, 0, 3))?;
        let n = encoded.size()[2].min(frames);
        control
            .narrow(2, 0, n)
            .copy_(&encoded.narrow(2, 0, n).repeat([clip.batch, 1, 1, 1, 1]));
    }
    positive = set(&positive, "control_video", &control);
    negative = set(&negative, "control_video", &control);
    conditioned(positive, negative, latent)
}

/// The last 73 motion images at the video's size, mid-grey frames in front of fewer.
fn motion_images(images: &Tensor, width: i64, height: i64) -> Result<Tensor, NodeError> {
    let images = fit_end(images, MOTION_IMAGES, width, height)?.narrow(3, 0, 3);
    let n = images.size()[0];
    if n == MOTION_IMAGES {
        return Ok(images);
    }
    let cpu = (Kind::Float, tch::Device::Cpu);
    let grey = Tensor::full([MOTION_IMAGES - n, height, width, 3], 0.5, cpu);
    Ok(Tensor::cat(&[grey, images.to_kind(Kind::Float)], 0))
}

fn sound_image_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    sound_to_video(
        i,
        SoundClip {
            vae,
            width: i.int("width")?,
            height: i.int("height")?,
            length: i.int("length")?,
            batch: i.int("batch_size")?,
            offset: 0,
            motion_latent: None,
        },
    )
}

/// The next clip after `video_latent`: its size and batch, the audio from its end, its last
/// latent frames as motion.
fn sound_image_to_video_extend(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let video = &i.object::<Latent>("video_latent")?.samples;
    let s = video.size();
    if s.len() != 5 {
        return Err(NodeError::value("video_latent is not a video latent"));
    }
    sound_to_video(
        i,
        SoundClip {
            vae,
            width: s[4] * 8,
            height: s[3] * 8,
            length: i.int("length")?,
            batch: s[0],
            offset: s[2] * 4,
            motion_latent: Some(video.shallow_clone()),
        },
    )
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, f| {
        NodeDef::builtin(name, Style::V3, name, "model/conditioning/wan/sound", f)
            .module("comfy_extras.nodes_wan")
    };
    let optional = |name: &str, io_type: &str| InputDef::new(name, io_type).optional();
    let outputs = |d: NodeDef| {
        d.named_output("CONDITIONING", "positive")
            .named_output("CONDITIONING", "negative")
            .named_output("LATENT", "latent")
    };
    r.add(outputs(
        conditioning_inputs(node("WanSoundImageToVideo", sound_image_to_video), 77)
            .input(optional("audio_encoder_output", "AUDIO_ENCODER_OUTPUT"))
            .input(optional("ref_image", "IMAGE"))
            .input(optional("control_video", "IMAGE"))
            .input(optional("ref_motion", "IMAGE")),
    ));
    r.add(outputs(
        node("WanSoundImageToVideoExtend", sound_image_to_video_extend)
            .input(InputDef::new("positive", "CONDITIONING"))
            .input(InputDef::new("negative", "CONDITIONING"))
            .input(InputDef::new("vae", "VAE"))
            .input(video_length(77))
            .input(InputDef::new("video_latent", "LATENT"))
            .input(optional("audio_encoder_output", "AUDIO_ENCODER_OUTPUT"))
            .input(optional("ref_image", "IMAGE"))
            .input(optional("control_video", "IMAGE")),
    ));
}
