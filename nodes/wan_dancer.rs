//! Wan Dancer's nodes (`comfy_extras/nodes_wandancer.py`): the music features and the frame
//! rate they give the video (WanDancerEncodeAudio), the conditioning (WanDancerVideo: start or
//! key frames as concat latents with their mask, the first frame's and the reference image's
//! CLIP vision, the music), and the key frames of a whole song spread over its segments with
//! each segment's audio (WanDancerPadKeyframes and its list form).

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::wan::{both_with, conditioned, fit_start, latent_frames, video_length, video_side};
use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::media::music_features::{dancer_features, video_fps, BASE_FPS};
use crate::media::Audio;
use crate::models::clip_vision::ClipVisionOutput;
use crate::models::vae::Vae;
use crate::sampling::model::Conditioning;
use crate::upscale::common_upscale;

/// WanDancerEncodeAudio's AUDIO_ENCODER_OUTPUT: the features `[1, frames, 35]`, the frame
/// rate the video's frames stand for and the injection scale.
pub struct DancerAudio {
    pub features: SharedTensor,
    pub fps: f64,
    pub scale: f64,
}

fn encode_audio(i: &Inputs, _: &ExecContext) -> NodeResult {
    let audio = i.object::<Audio>("audio")?;
    let video_frames = i.int("video_frames")?;
    let waveform = audio.waveform.to_device(Device::Cpu).to_kind(Kind::Float);
    let first = if waveform.dim() == 3 {
        waveform.get(0)
    } else {
        waveform
    };
    let mono = first.mean_dim(0, false, Kind::Float);
    let features = dancer_features(&mono, audio.sample_rate as i64)
        .map_err(|e| NodeError::value(e.to_string()))?;
    let frames = features.size()[0];
    let fps = video_fps(frames, video_frames);
    if !fps.is_finite() {
        return Err(NodeError::new(
            "ZeroDivisionError",
            format!(
                "{frames} frames of music features are too few for {video_frames} video frames"
            ),
        ));
    }
    let fps_string = if (fps + 0.5) as i64 != BASE_FPS {
        format!(" 帧率是{fps:.4}")
    } else {
        ", 帧率是30fps。".to_string()
    };
    let output = DancerAudio {
        features: SharedTensor::new(features.unsqueeze(0)),
        fps,
        scale: i.float("audio_inject_scale")?,
    };
    Ok(NodeOutput::values(vec![
        Value::object(output),
        Value::Str(fps_string),
    ]))
}

/// The concat mask from a key-frame mask `[frames, H, W]` (1 where a frame is given): its
/// complement at the latent's size, the first frame four times over, in groups of four per
/// latent frame, `[1, 4, latent frames, h, w]`.
fn keyframe_mask(mask: &Tensor, length: i64, (h, w): (i64, i64)) -> Result<Tensor, NodeError> {
    let n = mask.size()[0].min(length);
    if n == 0 || mask.dim() != 3 {
        return Err(NodeError::value(format!(
            "the mask must be [frames, height, width] with at least one frame, got {:?}",
            mask.size()
        )));
    }
    let kept = (mask.narrow(0, 0, n).to_kind(Kind::Float).neg() + 1.0).unsqueeze(0);
    let small = common_upscale(&kept, w, h, "nearest-exact", "disabled")?;
    let first = small.narrow(1, 0, 1).repeat([1, 4, 1, 1]);
    let all = Tensor::cat(&[first, small.narrow(1, 1, n - 1)], 1);
    if all.size()[1] % 4 != 0 {
        return Err(NodeError::new(
            "RuntimeError",
            format!("a mask of {n} frames does not make whole latent frames (frames + 3 must divide by 4)"),
        ));
    }
    Ok(all.view([1, -1, 4, h, w]).transpose(1, 2))
}

fn dancer_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let frames = latent_frames(length);
    let latent = Tensor::zeros(
        [1, 16, frames, height / 8, width / 8],
        (Kind::Float, Device::Cpu),
    );
    let mut extras: Vec<(&str, Tensor)> = Vec::new();
    if let Some(start) = i.opt_tensor("start_image") {
        let vae = i.object::<Arc<Vae>>("vae")?;
        let start = fit_start(start, length, width, height)?;
        let (n, channels) = (start.size()[0], start.size()[3]);
        let image = Tensor::zeros(
            [length, height, width, channels],
            (start.kind(), Device::Cpu),
        );
        image.narrow(0, 0, n).copy_(&start);
        let latent_image = vae.encode(&image.narrow(3, 0, 3))?;
        let size = (latent_image.size()[3], latent_image.size()[4]);
        let mask = match i.opt_tensor("mask") {
            Some(mask) => keyframe_mask(mask, length, size)?,
            None => {
                let mask = Tensor::ones([1, 1, frames, size.0, size.1], (Kind::Float, Device::Cpu));
                let _ = mask.narrow(2, 0, (n - 1) / 4 + 1).fill_(0.0);
                mask
            }
        };
        extras.push(("concat_latent_image", latent_image));
        extras.push(("concat_mask", mask));
    }
    if let Some(clip) = i.opt_object::<ClipVisionOutput>("clip_vision_output") {
        extras.push(("clip_vision_output", clip.penultimate.shallow_clone()));
        if let Some(reference) = i.opt_object::<ClipVisionOutput>("clip_vision_output_ref") {
            extras.push((
                "clip_vision_output_ref",
                reference.penultimate.shallow_clone(),
            ));
        }
    }
    if i.get("audio_encoder_output").is_some() {
        let audio = i
            .opt_object::<DancerAudio>("audio_encoder_output")
            .ok_or_else(|| {
                NodeError::new(
                    "KeyError",
                    "'audio_feature': WanDancerVideo takes WanDancerEncodeAudio's output",
                )
            })?;
        extras.push(("audio_embed", audio.features.shallow_clone()));
        extras.push(("fps", Tensor::from_slice(&[audio.fps])));
        extras.push(("audio_inject_scale", Tensor::from_slice(&[audio.scale])));
    }
    let extras: Vec<(&str, &Tensor)> = extras.iter().map(|(k, v)| (*k, v)).collect();
    let (positive, negative) = both_with(
        i.object::<Conditioning>("positive")?,
        i.object::<Conditioning>("negative")?,
        &extras,
    );
    conditioned(positive, negative, latent)
}

/// Frames (at 30 fps) a whole song fills in segments of `segment_length`: one segment per
/// started segment after the first 0.2 s.
fn song_frames(seconds: f64, segment_length: i64) -> i64 {
    const BUFFER: f64 = 0.2;
    let segment_seconds = segment_length as f64 / BASE_FPS as f64;
    let segments = if seconds > BUFFER {
        ((seconds - BUFFER) / segment_seconds) as i64 + 1
    } else {
        0
    };
    segments * segment_length
}

/// The `(position in the segment, image index)` of the key frames of segment `index`: the
/// `images` spread evenly over the song's `total` frames, each segment taking them from where
/// the previous stopped, the last one at the segment's end.
fn keyframe_positions(images: i64, total: i64, length: i64, index: i64) -> Vec<(i64, i64)> {
    let interval = total as f64 / images as f64;
    let segments = (total as f64 / length as f64).ceil() as i64;
    let end_of = |segment: i64| {
        if segment == segments - 1 {
            total - length * segment - 1
        } else {
            length - 1
        }
    };
    let count = |end: i64| {
        (0..)
            .take_while(|&c| (c as f64) * interval < end as f64 - interval)
            .count() as i64
    };
    let before: i64 = (0..index).map(|s| count(end_of(s))).sum();
    let end = end_of(index);
    let n = count(end);
    let mut positions: Vec<(i64, i64)> = (0..n)
        .map(|c| ((interval * c as f64).ceil() as i64, before + c))
        .collect();
    positions.push((end, before + n));
    positions
        .into_iter()
        .filter(|&(pos, image)| image < images && pos < length)
        .collect()
}

/// One segment's key frames `[length, H, W, C]`, their mask `[length, H, W]` and its audio.
fn pad_keyframes(
    images: &Tensor,
    length: i64,
    index: i64,
    audio: &Audio,
) -> Result<[Value; 3], NodeError> {
    let (b, h, w, c) = images.size4().map_err(|_| {
        NodeError::value(format!(
            "images must be [B, H, W, C], got {:?}",
            images.size()
        ))
    })?;
    let waveform = &audio.waveform;
    let rate = audio.sample_rate as f64;
    let seconds = waveform.size()[waveform.dim() - 1] as f64 / rate;
    let total = song_frames(seconds, length);
    let options = (images.kind(), images.device());
    let mask = Tensor::zeros([length, h, w], options);
    let keyframes = Tensor::zeros([length, h, w, c], options);
    if total > 0 && b > 0 {
        for (pos, image) in keyframe_positions(b, total, length, index) {
            let _ = mask.get(pos).fill_(1.0);
            keyframes.get(pos).copy_(&images.get(image));
        }
    }
    let segment_seconds = length as f64 / BASE_FPS as f64;
    let start = index as f64 * segment_seconds;
    let end = (start + segment_seconds).min(seconds);
    let (first, last) = ((start * rate) as i64, (end * rate) as i64);
    let samples = waveform.size()[waveform.dim() - 1];
    let first = first.min(samples);
    let part = waveform.narrow(-1, first, (last.min(samples) - first).max(0));
    Ok([
        Value::tensor(keyframes),
        Value::tensor(mask),
        Value::object(Audio::new(part, audio.sample_rate)),
    ])
}

fn pad_keyframes_node(i: &Inputs, _: &ExecContext) -> NodeResult {
    let [keyframes, mask, audio] = pad_keyframes(
        i.tensor("images")?,
        i.int("segment_length")?,
        i.int("segment_index")?,
        i.object::<Audio>("audio")?,
    )?;
    Ok(NodeOutput::values(vec![keyframes, mask, audio]))
}

fn pad_keyframes_list(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (images, length) = (i.tensor("images")?, i.int("segment_length")?);
    let audio = i.object::<Audio>("audio")?;
    let mut lists = [Vec::new(), Vec::new(), Vec::new()];
    for index in 0..i.int("num_segments")? {
        for (list, value) in lists
            .iter_mut()
            .zip(pad_keyframes(images, length, index, audio)?)
        {
            list.push(value);
        }
    }
    Ok(NodeOutput::values(
        lists.into_iter().map(Value::List).collect(),
    ))
}

fn segment_length() -> InputDef {
    InputDef::int("segment_length")
        .default(149)
        .min(1)
        .max(10000)
}

pub fn register(r: &mut Registry) {
    let module = "comfy_extras.nodes_wandancer";
    let category = "model/conditioning/wan/dancer";
    r.add(
        NodeDef::builtin("WanDancerVideo", Style::V3, "WanDancerVideo", category, dancer_video)
            .module(module)
            .input(InputDef::new("positive", "CONDITIONING"))
            .input(InputDef::new("negative", "CONDITIONING"))
            .input(InputDef::new("vae", "VAE"))
            .input(video_side("width", 480))
            .input(video_side("height", 832))
            .input(video_length(149).tooltip("The number of frames in the generated video. Should stay 149 for WanDancer."))
            .input(InputDef::new("clip_vision_output", "CLIP_VISION_OUTPUT").optional().tooltip("The CLIP vision embeds for the first frame."))
            .input(InputDef::new("clip_vision_output_ref", "CLIP_VISION_OUTPUT").optional().tooltip("The CLIP vision embeds for the reference image."))
            .input(InputDef::new("start_image", "IMAGE").optional().tooltip("The initial image(s) to be encoded, can be any number of frames."))
            .input(InputDef::new("mask", "MASK").optional().tooltip("Image conditioning mask for the start image(s). White is kept, black is generated. Used for the local generations."))
            .input(InputDef::new("audio_encoder_output", "AUDIO_ENCODER_OUTPUT").optional())
            .named_output("CONDITIONING", "positive")
            .named_output("CONDITIONING", "negative")
            .named_output("LATENT", "latent")
            .output_tooltip("Empty latent."),
    );
    r.add(
        NodeDef::builtin("WanDancerEncodeAudio", Style::V3, "WanDancerEncodeAudio", category, encode_audio)
            .module(module)
            .input(InputDef::new("audio", "AUDIO"))
            .input(InputDef::int("video_frames").default(149).min(1).max(MAX_RESOLUTION).step(4))
            .input(InputDef::float("audio_inject_scale").default_float(1.0).min_float(0.0).max_float(10.0).step_float(0.01).tooltip("The scale for the audio features when injected into the video model."))
            .named_output("AUDIO_ENCODER_OUTPUT", "audio_encoder_output")
            .named_output("STRING", "fps_string")
            .output_tooltip("The calculated fps based on the audio length and the number of video frames. Used in the prompt."),
    );
    r.add(
        NodeDef::builtin(
            "WanDancerPadKeyframes",
            Style::V3,
            "WanDancerPadKeyframes",
            "image/video",
            pad_keyframes_node,
        )
        .module(module)
        .input(InputDef::new("images", "IMAGE"))
        .input(segment_length().tooltip("Length of this segment (usually 149 frames)"))
        .input(
            InputDef::int("segment_index")
                .default(0)
                .min(0)
                .max(100)
                .tooltip("Which segment this is (0 for first, 1 for second, etc.)"),
        )
        .input(
            InputDef::new("audio", "AUDIO")
                .tooltip("Audio to calculate total output frames from and extract segment audio."),
        )
        .named_output("IMAGE", "keyframes_sequence")
        .output_tooltip("Padded keyframe sequence")
        .named_output("MASK", "keyframes_mask")
        .output_tooltip("Mask indicating valid frames")
        .named_output("AUDIO", "audio_segment")
        .output_tooltip("Audio segment for this video segment"),
    );
    r.add(
        NodeDef::builtin(
            "WanDancerPadKeyframesList",
            Style::V3,
            "WanDancerPadKeyframesList",
            "image/video",
            pad_keyframes_list,
        )
        .module(module)
        .input(InputDef::new("images", "IMAGE"))
        .input(segment_length().tooltip("Length of each segment (usually 149 frames)"))
        .input(
            InputDef::int("num_segments")
                .default(1)
                .min(1)
                .max(100)
                .tooltip("How many padded segments to emit as lists."),
        )
        .input(InputDef::new("audio", "AUDIO").tooltip("Audio to slice for each emitted segment."))
        .named_output("IMAGE", "keyframes_sequence")
        .list_output()
        .output_tooltip("Padded keyframe sequences")
        .named_output("MASK", "keyframes_mask")
        .list_output()
        .output_tooltip("Masks indicating valid frames")
        .named_output("AUDIO", "audio_segment")
        .list_output()
        .output_tooltip("Audio segment for each video segment"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_songs_key_frames_spread_over_its_segments_as_comfyuis_do() {
        // 10 s of song at 149-frame segments: two segments (298 frames) for 6 images, one
        // every 49.67 frames while a whole interval fits before the segment's end, then one
        // at its end (checked against ComfyUI's loop).
        assert_eq!(song_frames(10.0, 149), 298);
        assert_eq!(song_frames(0.2, 149), 0);
        assert_eq!(
            keyframe_positions(6, 298, 149, 0),
            [(0, 0), (50, 1), (148, 2)]
        );
        // The boundary image ends one segment and starts the next.
        assert_eq!(
            keyframe_positions(6, 298, 149, 1),
            [(0, 2), (50, 3), (148, 4)]
        );
    }
}
