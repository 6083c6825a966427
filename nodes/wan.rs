//! Wan conditioning and latents (`comfy_extras/nodes_wan.py`): WanImageToVideo,
//! WanFirstLastFrameToVideo, WanFunInpaintToVideo, WanFunControlToVideo,
//! Wan22FunControlToVideo, WanVaceToVideo, TrimVideoLatent, Wan22ImageToVideoLatent, and the
//! camera pair WanCameraEmbedding (`nodes_camera_trajectory.py`) and WanCameraImageToVideo, and
//! ATI's WanTrackToVideo.

use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeFunction, NodeOutput, NodeResult, Style,
    MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::models::clip_vision::ClipVisionOutput;
use crate::models::vae::Vae;
use crate::models::wan::camera::{camera_embedding, POSES};
use crate::models::wan::tracks::{batch_indices, parse_tracks, track_conditioning};
use crate::sampling::latent_format::LatentFormat;
use crate::sampling::model::{Conditioning, Latent};
use crate::upscale::common_upscale;

fn wan_node(name: &str, f: NodeFunction) -> NodeDef {
    NodeDef::builtin(name, Style::V3, name, "model/conditioning/wan", f)
        .module("comfy_extras.nodes_wan")
}

/// The inputs every Wan conditioning node starts with: positive, negative, vae, width, height,
/// length (`default_length` frames) and batch_size.
pub(super) fn conditioning_inputs(node: NodeDef, default_length: i64) -> NodeDef {
    node.input(InputDef::new("positive", "CONDITIONING"))
        .input(InputDef::new("negative", "CONDITIONING"))
        .input(InputDef::new("vae", "VAE"))
        .input(video_side("width", 832))
        .input(video_side("height", 480))
        .input(video_length(default_length))
        .input(InputDef::int("batch_size").default(1).min(1).max(4096))
}

/// A video width or height widget of the Wan conditioning nodes: 16 to MAX_RESOLUTION in
/// steps of 16.
pub(super) fn video_side(name: &str, default: i64) -> InputDef {
    InputDef::int(name)
        .default(default)
        .min(16)
        .max(MAX_RESOLUTION)
        .step(16)
}

/// The Wan conditioning nodes' frame count widget: 1 to MAX_RESOLUTION in steps of 4.
pub(super) fn video_length(default: i64) -> InputDef {
    InputDef::int("length")
        .default(default)
        .min(1)
        .max(MAX_RESOLUTION)
        .step(4)
}

/// Latent frames for `length` video frames.
pub(super) fn latent_frames(length: i64) -> i64 {
    (length - 1) / 4 + 1
}

/// `start_image[:length]` resized (bilinear, center crop) to `width × height`, `[N, H, W, C]`.
pub(super) fn fit_start(
    image: &Tensor,
    length: i64,
    width: i64,
    height: i64,
) -> Result<Tensor, NodeError> {
    let n = image.size()[0].min(length);
    let frames = image.narrow(0, 0, n).permute([0, 3, 1, 2]);
    Ok(common_upscale(&frames, width, height, "bilinear", "center")?.permute([0, 2, 3, 1]))
}

/// The last `length` of `images` resized (bilinear, center crop) to `width × height`.
pub(super) fn fit_end(
    image: &Tensor,
    length: i64,
    width: i64,
    height: i64,
) -> Result<Tensor, NodeError> {
    let n = image.size()[0];
    let tail = image.narrow(0, (n - length).max(0), n.min(length));
    fit_start(&tail, length, width, height)
}

/// `conditioning_set_values` with `append=True` for tensors that ComfyUI keeps as lists: the
/// new value joins an existing one along `axis` (the list's position).
fn with_appended(cond: &Conditioning, key: &str, value: &Tensor, axis: i64) -> Conditioning {
    Conditioning(
        cond.0
            .iter()
            .map(|e| {
                let joined = match e.extra(key) {
                    Some(old) => Tensor::cat(&[old, value], axis),
                    None => value.shallow_clone(),
                };
                e.clone().with_extra(key, joined)
            })
            .collect(),
    )
}

/// `conditioning_set_values`: every entry gets the same extra tensors.
pub(super) fn with_extras(cond: &Conditioning, extras: &[(&str, &Tensor)]) -> Conditioning {
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
        let (concat, mask) = start_frames_concat(i, start)?;
        let extras = [("concat_latent_image", &concat), ("concat_mask", &mask)];
        (positive, negative) = both_with(&positive, &negative, &extras);
    }
    let (positive, negative) = with_clip_vision(i, positive, negative);
    conditioned(positive, negative, latent)
}

/// WanImageToVideo's concat inputs: the start frames first in a mid-grey video of the node's
/// size and length, encoded, and the mask `[1, 1, frames, h, w]` that keeps their latent frames.
pub(super) fn start_frames_concat(
    i: &Inputs,
    start: &Tensor,
) -> Result<(Tensor, Tensor), NodeError> {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let vae = i.object::<Arc<Vae>>("vae")?;
    let start = fit_start(start, length, width, height)?;
    let n = start.size()[0];
    let channels = start.size()[3];
    let cpu = (Kind::Float, tch::Device::Cpu);
    let video = Tensor::full([length, height, width, channels], 0.5, cpu);
    video.narrow(0, 0, n).copy_(&start.to_kind(Kind::Float));
    let concat = vae.encode(&video.narrow(3, 0, 3))?;
    let s = concat.size();
    let frames = latent_frames(length);
    let mask = Tensor::ones([1, 1, frames, s[3], s[4]], cpu);
    let _ = mask.narrow(2, 0, latent_frames(n).min(frames)).fill_(0.0);
    Ok((concat, mask))
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

/// Positive, negative and the empty latent, as the Wan conditioning nodes return them.
pub(super) fn conditioned(
    positive: Conditioning,
    negative: Conditioning,
    latent: Tensor,
) -> NodeResult {
    Ok(NodeOutput::values(vec![
        Value::object(positive),
        Value::object(negative),
        Value::object(Latent::new(latent)),
    ]))
}

/// Both conditionings with the same extras.
pub(super) fn both_with(
    positive: &Conditioning,
    negative: &Conditioning,
    extras: &[(&str, &Tensor)],
) -> (Conditioning, Conditioning) {
    (with_extras(positive, extras), with_extras(negative, extras))
}

/// Both conditionings with the `clip_vision_output` input's penultimate states, if it is given.
pub(super) fn with_clip_vision(
    i: &Inputs,
    positive: Conditioning,
    negative: Conditioning,
) -> (Conditioning, Conditioning) {
    match i.opt_object::<ClipVisionOutput>("clip_vision_output") {
        Some(clip) => {
            let extras = [("clip_vision_output", &**clip.penultimate)];
            both_with(&positive, &negative, &extras)
        }
        None => (positive, negative),
    }
}

/// The concat mask of the nodes that keep given frames, `[1, 4, frames, h, w]`: four mask
/// frames per latent frame, 0 for the first `start + 3` (the start frames and the rest of the
/// first latent frame) and for the last `end`, 1 elsewhere.
fn kept_frames_mask(frames: i64, (h, w): (i64, i64), start: i64, end: i64) -> Tensor {
    let mask = Tensor::ones([1, 1, frames * 4, h, w], (Kind::Float, tch::Device::Cpu));
    if start > 0 {
        let _ = mask.narrow(2, 0, (start + 3).min(frames * 4)).fill_(0.0);
    }
    if end > 0 {
        let _ = mask.narrow(2, frames * 4 - end, end).fill_(0.0);
    }
    mask.view([1, frames, 4, h, w]).transpose(1, 2)
}

/// `WanFirstLastFrameToVideo` (and `WanFunInpaintToVideo`, which is it with one CLIP-vision
/// input): the start frames first and the end frames last in a mid-grey video, encoded as the
/// concat image, with a 4-per-latent-frame mask that keeps them; CLIP-vision states of both
/// images side by side.
fn first_last_frame(
    i: &Inputs,
    clip_start: Option<&ClipVisionOutput>,
    clip_end: Option<&ClipVisionOutput>,
) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let vae = i.object::<Arc<Vae>>("vae")?;
    let scale = vae.spatial_ratio;
    let (frames, h, w) = (latent_frames(length), height / scale, width / scale);
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros([batch, vae.latent_channels, frames, h, w], cpu);
    let video = Tensor::full([length, height, width, 3], 0.5, cpu);
    let (mut kept_start, mut kept_end) = (0, 0);
    if let Some(start) = i.opt_tensor("start_image") {
        let start = fit_start(start, length, width, height)?;
        kept_start = start.size()[0];
        video
            .narrow(0, 0, kept_start)
            .copy_(&start.narrow(3, 0, 3).to_kind(Kind::Float));
    }
    if let Some(end) = i.opt_tensor("end_image") {
        let end = fit_end(end, length, width, height)?;
        kept_end = end.size()[0];
        video
            .narrow(0, length - kept_end, kept_end)
            .copy_(&end.narrow(3, 0, 3).to_kind(Kind::Float));
    }
    let concat = vae.encode(&video)?;
    let mask = kept_frames_mask(frames, (h, w), kept_start, kept_end);
    let positive = i.object::<Conditioning>("positive")?;
    let negative = i.object::<Conditioning>("negative")?;
    let extras = [("concat_latent_image", &concat), ("concat_mask", &mask)];
    let (mut positive, mut negative) = both_with(positive, negative, &extras);
    let states: Vec<&Tensor> = [clip_start, clip_end]
        .into_iter()
        .flatten()
        .map(|c| &**c.penultimate)
        .collect();
    if !states.is_empty() {
        let joined = Tensor::cat(&states, -2);
        let extras = [("clip_vision_output", &joined)];
        (positive, negative) = both_with(&positive, &negative, &extras);
    }
    conditioned(positive, negative, latent)
}

fn wan_first_last_frame_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    first_last_frame(
        i,
        i.opt_object::<ClipVisionOutput>("clip_vision_start_image"),
        i.opt_object::<ClipVisionOutput>("clip_vision_end_image"),
    )
}

fn wan_fun_inpaint_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    first_last_frame(
        i,
        i.opt_object::<ClipVisionOutput>("clip_vision_output"),
        None,
    )
}

/// Fun Control's concat latent: `2 × channels` of blank latent (zeros after `process_out`), the
/// encoded control video in the first half and the start image in the second, as far as each
/// reaches.
fn control_latent(
    i: &Inputs,
    vae: &Vae,
    (width, height, length): (i64, i64, i64),
    (batch, frames): (i64, i64),
    start_image: Option<&Tensor>,
) -> Result<Tensor, NodeError> {
    let (channels, scale) = (vae.latent_channels, vae.spatial_ratio);
    let format = if channels == 48 {
        LatentFormat::wan22()
    } else {
        LatentFormat::wan21()
    };
    let cpu = (Kind::Float, tch::Device::Cpu);
    let blank = Tensor::zeros(
        [batch, channels, frames, height / scale, width / scale],
        cpu,
    );
    let concat = format.process_out(&blank).repeat([1, 2, 1, 1, 1]);
    let sources = [(i.opt_tensor("control_video"), 0), (start_image, channels)];
    for (images, offset) in sources {
        let Some(images) = images else { continue };
        let encoded = vae.encode(&fit_start(images, length, width, height)?.narrow(3, 0, 3))?;
        let n = encoded.size()[2].min(frames);
        concat
            .narrow(1, offset, channels)
            .narrow(2, 0, n)
            .copy_(&encoded.narrow(2, 0, n));
    }
    Ok(concat)
}

fn wan_fun_control_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let vae = i.object::<Arc<Vae>>("vae")?;
    let frames = latent_frames(length);
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros([batch, 16, frames, height / 8, width / 8], cpu);
    let concat = control_latent(
        i,
        vae,
        (width, height, length),
        (batch, frames),
        i.opt_tensor("start_image"),
    )?;
    let positive = i.object::<Conditioning>("positive")?;
    let negative = i.object::<Conditioning>("negative")?;
    let extras = [("concat_latent_image", &concat)];
    let (positive, negative) = both_with(positive, negative, &extras);
    let (positive, negative) = with_clip_vision(i, positive, negative);
    conditioned(positive, negative, latent)
}

/// `Wan22FunControlToVideo`: the control latents, the all-ones mask (its schema has no start
/// image, so nothing is kept) between them and the start half (`concat_mask_index`), and the
/// reference image's latent.
fn wan22_fun_control_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let vae = i.object::<Arc<Vae>>("vae")?;
    let (channels, scale) = (vae.latent_channels, vae.spatial_ratio);
    let frames = latent_frames(length);
    let (h, w) = (height / scale, width / scale);
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros([batch, channels, frames, h, w], cpu);
    let concat = control_latent(i, vae, (width, height, length), (batch, frames), None)?;
    let mask = Tensor::ones([1, 4, frames, h, w], cpu);
    let index = Tensor::from_slice(&[channels]);
    let positive = i.object::<Conditioning>("positive")?;
    let negative = i.object::<Conditioning>("negative")?;
    let extras = [
        ("concat_latent_image", &concat),
        ("concat_mask", &mask),
        ("concat_mask_index", &index),
    ];
    let (mut positive, mut negative) = both_with(positive, negative, &extras);
    if let Some(reference) = i.opt_tensor("ref_image") {
        let first = reference.narrow(0, 0, 1);
        let encoded = vae.encode(&fit_start(&first, 1, width, height)?.narrow(3, 0, 3))?;
        // ComfyUI appends to `reference_latents` and the model reads the last one.
        let extras = [("reference_latent", &encoded)];
        (positive, negative) = both_with(&positive, &negative, &extras);
    }
    conditioned(positive, negative, latent)
}

/// `WanVaceToVideo`: the control video split by the mask into what stays (inactive) and what
/// is regenerated (reactive), both encoded; the mask folded to 64 channels per latent cell;
/// a reference image's latent in front as an extra frame, which `trim_latent` reports. Each
/// call appends one control to the conditioning (`vace_frames`, `vace_mask`, `vace_strength`,
/// the control's position in axis 1).
fn wan_vace_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let (batch, strength) = (i.int("batch_size")?, i.float("strength")?);
    let vae = i.object::<Arc<Vae>>("vae")?;
    let cpu = (Kind::Float, tch::Device::Cpu);
    let mut frames = latent_frames(length);
    let video = match i.opt_tensor("control_video") {
        Some(v) => pad_frames(&fit_start(v, length, width, height)?, length, 0.5),
        None => Tensor::full([length, height, width, 3], 0.5, cpu),
    };
    let reference = match i.opt_tensor("reference_image") {
        Some(image) => {
            let first = fit_start(&image.narrow(0, 0, 1), 1, width, height)?;
            let encoded = vae.encode(&first.narrow(3, 0, 3))?;
            let blank = LatentFormat::wan21().process_out(&encoded.zeros_like());
            Some(Tensor::cat(&[encoded, blank], 1))
        }
        None => None,
    };
    let mask = match i.opt_tensor("control_masks") {
        Some(m) => {
            let m = if m.dim() == 3 {
                m.unsqueeze(1)
            } else {
                m.shallow_clone()
            };
            let n = m.size()[0].min(length);
            let m = common_upscale(&m.narrow(0, 0, n), width, height, "bilinear", "center")?;
            pad_frames(&m.permute([0, 2, 3, 1]), length, 1.0)
        }
        None => Tensor::ones([length, height, width, 1], cpu),
    };
    let video = video.narrow(3, 0, 3).to_kind(Kind::Float) - 0.5;
    let mask = mask.to_kind(Kind::Float);
    let inactive = vae.encode(&(&video * (1.0 - &mask) + 0.5))?;
    let reactive = vae.encode(&(&video * &mask + 0.5))?;
    let mut control = Tensor::cat(&[inactive, reactive], 1);
    let (hm, wm) = (height / 8, width / 8);
    let mut mask = fold_vace_mask(&mask, frames);
    let mut trim = 0;
    if let Some(reference) = reference {
        trim = reference.size()[2];
        control = Tensor::cat(&[reference, control], 2);
        let pad = Tensor::zeros([1, 64, trim, hm, wm], cpu);
        mask = Tensor::cat(&[pad, mask], 2);
        frames += trim;
    }
    let strength = Tensor::from_slice(&[strength as f32]).view([1, 1]);
    let append = |cond: &Conditioning| {
        let cond = with_appended(cond, "vace_frames", &control.unsqueeze(1), 1);
        let cond = with_appended(&cond, "vace_mask", &mask.unsqueeze(1), 1);
        with_appended(&cond, "vace_strength", &strength, 1)
    };
    let positive = append(i.object::<Conditioning>("positive")?);
    let negative = append(i.object::<Conditioning>("negative")?);
    let latent = Tensor::zeros([batch, 16, frames, hm, wm], cpu);
    Ok(NodeOutput::values(vec![
        Value::object(positive),
        Value::object(negative),
        Value::object(Latent::new(latent)),
        Value::Int(trim.into()),
    ]))
}

/// The VACE mask `[length, H, W, 1]` as the model takes it: each 8×8 pixel cell's values as 64
/// channels (channel `8·dy + dx`), resampled to the latent's `frames` by nearest-exact,
/// `[1, 64, frames, H/8, W/8]`.
fn fold_vace_mask(mask: &Tensor, frames: i64) -> Tensor {
    let [length, height, width, _] = mask.size()[..] else {
        unreachable!("the mask is made [length, H, W, 1] above")
    };
    let (hm, wm) = (height / 8, width / 8);
    mask.view([length, hm, 8, wm, 8])
        .permute([2, 4, 0, 1, 3])
        .reshape([1, 64, length, hm, wm])
        .internal_upsample_nearest_exact3d([frames, hm, wm], None, None, None)
}

/// `WanCameraEmbedding`: a preset motion's Plücker embedding, and the size it was made for.
fn wan_camera_embedding(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let optional = |name: &str, default: f64| match i.get(name) {
        Some(_) => i.float(name),
        None => Ok(default),
    };
    let intrinsics = [
        optional("fx", 0.5)?,
        optional("fy", 0.5)?,
        optional("cx", 0.5)?,
        optional("cy", 0.5)?,
    ];
    let embedding = camera_embedding(
        &i.string("camera_pose")?,
        (width, height, length),
        optional("speed", 1.0)?,
        intrinsics,
    )?;
    Ok(NodeOutput::values(vec![
        Value::tensor(embedding),
        Value::Int(width.into()),
        Value::Int(height.into()),
        Value::Int(length.into()),
    ]))
}

/// `WanCameraImageToVideo`: the start image's latent over a blank concat latent, with the
/// 4-per-latent-frame mask that keeps it, and the camera embedding beside the conditioning.
fn wan_camera_image_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let frames = latent_frames(length);
    let (h, w) = (height / 8, width / 8);
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros([batch, 16, frames, h, w], cpu);
    let mut positive = i.object::<Conditioning>("positive")?.clone();
    let mut negative = i.object::<Conditioning>("negative")?.clone();
    if let Some(start) = i.opt_tensor("start_image") {
        let vae = i.object::<Arc<Vae>>("vae")?;
        let concat = LatentFormat::wan21().process_out(&latent.zeros_like());
        let start = fit_start(start, length, width, height)?;
        let encoded = vae.encode(&start.narrow(3, 0, 3))?;
        let n = encoded.size()[2].min(frames);
        concat.narrow(2, 0, n).copy_(&encoded.narrow(2, 0, n));
        let mask = kept_frames_mask(frames, (h, w), start.size()[0], 0);
        let extras = [("concat_latent_image", &concat), ("concat_mask", &mask)];
        (positive, negative) = both_with(&positive, &negative, &extras);
    }
    if let Some(camera) = i.opt_tensor("camera_conditions") {
        let extras = [("camera_conditions", camera)];
        (positive, negative) = both_with(&positive, &negative, &extras);
    }
    let (positive, negative) = with_clip_vision(i, positive, negative);
    conditioned(positive, negative, latent)
}

/// `WanTrackToVideo` (ATI): each start image first in a mid-grey video, encoded, and its
/// features carried along the JSON tracks (`tracks::track_conditioning`); without tracks it is
/// WanImageToVideo.
fn wan_track_to_video(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let sets = parse_tracks(&i.string("tracks")?);
    if sets.is_empty() {
        return wan_image_to_video(i, ctx);
    }
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros(
        [batch, 16, latent_frames(length), height / 8, width / 8],
        cpu,
    );
    let mut positive = i.object::<Conditioning>("positive")?.clone();
    let mut negative = i.object::<Conditioning>("negative")?.clone();
    if let Some(start) = i.opt_tensor("start_image") {
        let vae = i.object::<Arc<Vae>>("vae")?;
        let starts = fit_start(start, batch, width, height)?;
        let encoded = batch_indices(starts.size()[0] as usize, batch as usize)
            .into_iter()
            .map(|n| {
                let video = Tensor::full([length, height, width, 3], 0.5, cpu);
                video.narrow(0, 0, 1).copy_(
                    &starts
                        .narrow(0, n as i64, 1)
                        .narrow(3, 0, 3)
                        .to_kind(Kind::Float),
                );
                vae.encode(&video)
            })
            .collect::<anyhow::Result<Vec<Tensor>>>()?;
        let format = LatentFormat::wan21();
        let videos = format.process_in(&Tensor::cat(&encoded, 0));
        let (temperature, topk) = (i.float("temperature")?, i.int("topk")?);
        let (mask, moved) =
            track_conditioning(&sets, &videos, (width, height, length), temperature, topk);
        let concat = format.process_out(&moved);
        let extras = [("concat_mask", &mask), ("concat_latent_image", &concat)];
        (positive, negative) = both_with(&positive, &negative, &extras);
    }
    let (positive, negative) = with_clip_vision(i, positive, negative);
    conditioned(positive, negative, latent)
}

/// `frames` `[N, H, W, C]` padded at the end with `value` up to `length`.
fn pad_frames(frames: &Tensor, length: i64, value: f64) -> Tensor {
    let n = frames.size()[0];
    if n >= length {
        return frames.shallow_clone();
    }
    let mut shape = frames.size();
    shape[0] = length - n;
    let fill = Tensor::full(shape.as_slice(), value, (frames.kind(), frames.device()));
    Tensor::cat(&[frames.shallow_clone(), fill], 0)
}

/// `TrimVideoLatent`: the latent without its first `trim_amount` frames.
fn trim_video_latent(i: &Inputs, _: &ExecContext) -> NodeResult {
    let samples = i.object::<Latent>("samples")?;
    let trim = i.int("trim_amount")?;
    let s = &samples.samples;
    let frames = s.size()[2];
    let trim = trim.min(frames);
    let mut out = samples.clone();
    out.samples = Arc::new(SharedTensor::new(s.narrow(2, trim, frames - trim)));
    Ok(NodeOutput::one(Value::object(out)))
}

/// `WanPhantomSubjectToVideo`: each subject image encoded as one latent frame, the frames put
/// behind the video along time (`time_dim_concat`) for the positive and the first negative;
/// the second negative gets blank frames, so CFG can push away from the prompt and the
/// subjects separately.
fn wan_phantom_subject_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let cpu = (Kind::Float, tch::Device::Cpu);
    let latent = Tensor::zeros(
        [
            i.int("batch_size")?,
            16,
            latent_frames(length),
            height / 8,
            width / 8,
        ],
        cpu,
    );
    let positive = i.object::<Conditioning>("positive")?;
    let negative = i.object::<Conditioning>("negative")?;
    let (positive, negative_text, negative_images) = match i.opt_tensor("images") {
        Some(images) => {
            let vae = i.object::<Arc<Vae>>("vae")?;
            let fitted = fit_start(images, length, width, height)?;
            let frames = (0..fitted.size()[0])
                .map(|n| vae.encode(&fitted.narrow(0, n, 1).narrow(3, 0, 3)))
                .collect::<Result<Vec<_>, _>>()?;
            let subjects = Tensor::cat(&frames, 2);
            let blank = LatentFormat::wan21().process_out(&subjects.zeros_like());
            (
                with_extras(positive, &[("time_dim_concat", &subjects)]),
                with_extras(negative, &[("time_dim_concat", &subjects)]),
                with_extras(negative, &[("time_dim_concat", &blank)]),
            )
        }
        None => (positive.clone(), negative.clone(), negative.clone()),
    };
    Ok(NodeOutput::values(vec![
        Value::object(positive),
        Value::object(negative_text),
        Value::object(negative_images),
        Value::object(Latent::new(latent)),
    ]))
}

/// wanBlockSwap (`comfy_extras/nodes_nop.py`): ComfyUI intercepts the custom block-swap node
/// and passes the model through; so does this server, whose `--lowvram` streams blocks itself.
fn wan_block_swap(i: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(i.get("model").cloned().ok_or_else(
        || NodeError::value("wanBlockSwap: no model"),
    )?))
}

pub fn register(r: &mut Registry) {
    r.add(
        NodeDef::builtin(
            "wanBlockSwap",
            Style::V3,
            "wanBlockSwap",
            "",
            wan_block_swap,
        )
        .module("comfy_extras.nodes_nop")
        .description(
            "Intercept wanBlockSwap custom node that causes major instability and make it \
                 no-op.",
        )
        .input(InputDef::new("model", "MODEL"))
        .output("MODEL")
        .deprecated(),
    );
    let size = |name: &str, default: i64, min: i64, step: i64| {
        InputDef::int(name)
            .default(default)
            .min(min)
            .max(MAX_RESOLUTION)
            .step(step)
    };
    let batch = || InputDef::int("batch_size").default(1).min(1).max(4096);
    r.add(
        wan_node("WanImageToVideo", wan_image_to_video)
            .input(InputDef::new("positive", "CONDITIONING"))
            .input(InputDef::new("negative", "CONDITIONING"))
            .input(InputDef::new("vae", "VAE"))
            .input(video_side("width", 832))
            .input(video_side("height", 480))
            .input(video_length(81))
            .input(batch())
            .input(InputDef::new("clip_vision_output", "CLIP_VISION_OUTPUT").optional())
            .input(InputDef::new("start_image", "IMAGE").optional())
            .named_output("CONDITIONING", "positive")
            .named_output("CONDITIONING", "negative")
            .named_output("LATENT", "latent"),
    );
    let common = |node: NodeDef| conditioning_inputs(node, 81);
    let conditioning_outputs = |node: NodeDef| {
        node.named_output("CONDITIONING", "positive")
            .named_output("CONDITIONING", "negative")
            .named_output("LATENT", "latent")
    };
    let optional = |name: &str, io_type: &str| InputDef::new(name, io_type).optional();
    r.add(conditioning_outputs(
        common(wan_node(
            "WanFirstLastFrameToVideo",
            wan_first_last_frame_to_video,
        ))
        .input(optional("clip_vision_start_image", "CLIP_VISION_OUTPUT"))
        .input(optional("clip_vision_end_image", "CLIP_VISION_OUTPUT"))
        .input(optional("start_image", "IMAGE"))
        .input(optional("end_image", "IMAGE")),
    ));
    r.add(conditioning_outputs(
        common(
            wan_node("WanFunInpaintToVideo", wan_fun_inpaint_to_video)
                .category("model/conditioning/wan/fun inpaint"),
        )
        .input(optional("clip_vision_output", "CLIP_VISION_OUTPUT"))
        .input(optional("start_image", "IMAGE"))
        .input(optional("end_image", "IMAGE")),
    ));
    r.add(conditioning_outputs(
        common(
            wan_node("WanFunControlToVideo", wan_fun_control_to_video)
                .category("model/conditioning/wan/fun control"),
        )
        .input(optional("clip_vision_output", "CLIP_VISION_OUTPUT"))
        .input(optional("start_image", "IMAGE"))
        .input(optional("control_video", "IMAGE")),
    ));
    r.add(conditioning_outputs(
        common(
            wan_node("Wan22FunControlToVideo", wan22_fun_control_to_video)
                .category("model/conditioning/wan/fun control"),
        )
        .input(optional("ref_image", "IMAGE"))
        .input(optional("control_video", "IMAGE")),
    ));
    r.add(
        conditioning_outputs(
            common(
                wan_node("WanVaceToVideo", wan_vace_to_video)
                    .category("model/conditioning/wan/vace")
                    .aliases(&["video conditioning", "video control"]),
            )
            .input(
                InputDef::float("strength")
                    .default_float(1.0)
                    .min_float(0.0)
                    .max_float(1000.0)
                    .step_float(0.01),
            )
            .input(optional("control_video", "IMAGE"))
            .input(optional("control_masks", "MASK"))
            .input(optional("reference_image", "IMAGE")),
        )
        .named_output("INT", "trim_latent"),
    );
    r.add(conditioning_outputs(
        common(
            wan_node("WanCameraImageToVideo", wan_camera_image_to_video)
                .category("model/conditioning/wan/camera"),
        )
        .input(optional("clip_vision_output", "CLIP_VISION_OUTPUT"))
        .input(optional("start_image", "IMAGE"))
        .input(optional("camera_conditions", "WAN_CAMERA_EMBEDDING")),
    ));
    let intrinsic = |name: &str, step: f64| {
        InputDef::float(name)
            .optional()
            .opt("advanced", serde_json::json!(true))
            .default_float(0.5)
            // ComfyUI's schema gives these bounds as Python ints.
            .min(0)
            .max(1)
            .step_float(step)
    };
    r.add(
        NodeDef::builtin(
            "WanCameraEmbedding",
            Style::V3,
            "WanCameraEmbedding",
            "model/conditioning/wan/camera",
            wan_camera_embedding,
        )
        .module("comfy_extras.nodes_camera_trajectory")
        .input(InputDef::combo("camera_pose", &POSES).default("Static"))
        .input(video_side("width", 832))
        .input(video_side("height", 480))
        .input(video_length(81))
        .input(
            InputDef::float("speed")
                .optional()
                .default_float(1.0)
                .min(0)
                .max_float(10.0)
                .step_float(0.1),
        )
        .input(intrinsic("fx", 0.000000001))
        .input(intrinsic("fy", 0.000000001))
        .input(intrinsic("cx", 0.01))
        .input(intrinsic("cy", 0.01))
        .named_output("WAN_CAMERA_EMBEDDING", "camera_embedding")
        .named_output("INT", "width")
        .named_output("INT", "height")
        .named_output("INT", "length"),
    );
    r.add(conditioning_outputs(
        wan_node("WanTrackToVideo", wan_track_to_video)
            .category("model/conditioning/wan/move")
            .aliases(&[
                "motion tracking",
                "trajectory video",
                "point tracking",
                "keypoint animation",
            ])
            .input(InputDef::new("positive", "CONDITIONING"))
            .input(InputDef::new("negative", "CONDITIONING"))
            .input(InputDef::new("vae", "VAE"))
            .input(
                InputDef::string("tracks")
                    .default("[]")
                    .opt("multiline", serde_json::json!(true)),
            )
            .input(video_side("width", 832))
            .input(video_side("height", 480))
            .input(video_length(81))
            .input(batch())
            .input(
                InputDef::float("temperature")
                    .opt("advanced", serde_json::json!(true))
                    .default_float(220.0)
                    .min_float(1.0)
                    .max_float(1000.0)
                    .step_float(0.1),
            )
            .input(
                InputDef::int("topk")
                    .opt("advanced", serde_json::json!(true))
                    .default(2)
                    .min(1)
                    .max(10),
            )
            .input(InputDef::new("start_image", "IMAGE"))
            .input(optional("clip_vision_output", "CLIP_VISION_OUTPUT")),
    ));
    r.add(
        NodeDef::builtin(
            "TrimVideoLatent",
            Style::V3,
            "Trim Video Latent",
            "model/latent",
            trim_video_latent,
        )
        .module("comfy_extras.nodes_wan")
        .input(InputDef::new("samples", "LATENT"))
        .input(InputDef::int("trim_amount").default(0).min(0).max(99999))
        .output("LATENT"),
    );
    r.add(
        wan_node("Wan22ImageToVideoLatent", wan22_image_to_video_latent)
            .input(InputDef::new("vae", "VAE"))
            .input(size("width", 1280, 32, 32))
            .input(size("height", 704, 32, 32))
            .input(video_length(49))
            .input(batch())
            .input(InputDef::new("start_image", "IMAGE").optional())
            .output("LATENT"),
    );
    let phantom = NodeDef::builtin(
        "WanPhantomSubjectToVideo",
        Style::V3,
        "WanPhantomSubjectToVideo",
        "model/conditioning/wan/phantom subject",
        wan_phantom_subject_to_video,
    )
    .module("comfy_extras.nodes_wan");
    r.add(
        common(phantom)
            .input(InputDef::new("images", "IMAGE").optional())
            .named_output("CONDITIONING", "positive")
            .named_output("CONDITIONING", "negative_text")
            .named_output("CONDITIONING", "negative_img_text")
            .named_output("LATENT", "latent"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ComfyUI's `view(length, h, 8, w, 8).permute(2, 4, 0, 1, 3)` and `nearest-exact` in
    /// time: latent frame `t` of 2 takes video frame ⌊(t + ½)·5/2⌋ of 5, that is 1 and 3.
    #[test]
    fn vace_mask_folds_pixel_cells_into_channels_and_picks_frames_nearest_exact() {
        let (length, height, width) = (5i64, 16i64, 8i64);
        let values: Vec<f32> = (0..length * height * width).map(|i| i as f32).collect();
        let mask = Tensor::from_slice(&values).view([length, height, width, 1]);
        let folded = fold_vace_mask(&mask, 2);
        assert_eq!(folded.size(), [1, 64, 2, 2, 1]);
        for (t, source) in [(0i64, 1i64), (1, 3)] {
            for y in 0..height {
                for x in 0..width {
                    let got = folded.double_value(&[0, (y % 8) * 8 + x % 8, t, y / 8, x / 8]);
                    let want = mask.double_value(&[source, y, x, 0]);
                    assert_eq!(got, want, "frame {t}, pixel ({y}, {x})");
                }
            }
        }
    }
}
