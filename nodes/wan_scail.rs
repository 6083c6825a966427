//! SCAIL's nodes (`comfy_extras/nodes_scail.py`): WanSCAILToVideo, which encodes the reference
//! images, the half-size pose video and SCAIL-2's identity masks for the model, and
//! SCAIL2ColoredMask, which paints SAM 3 tracks in the colors the model was trained on.

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::wan::{latent_frames, video_length, with_extras};
use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::{SharedTensor, Value};
use crate::models::clip_vision::ClipVisionOutput;
use crate::models::sam3::track_data::{object_indices, unpack_masks, TrackData};
use crate::models::vae::Vae;
use crate::sampling::model::{Conditioning, Latent};
use crate::upscale::common_upscale;

/// The identity colors SCAIL-2 was trained on, in the order objects get them.
const PALETTE: [[f32; 3]; 6] = [
    [0.0, 0.0, 1.0],
    [1.0, 0.0, 0.0],
    [0.0, 1.0, 0.0],
    [1.0, 0.0, 1.0],
    [0.0, 1.0, 1.0],
    [1.0, 1.0, 0.0],
];

/// Images `[n, H, W, C]` resized by `method` (center crop) to `width × height`.
fn resized(images: &Tensor, width: i64, height: i64, method: &str) -> Result<Tensor, NodeError> {
    let nchw = images.to_kind(Kind::Float).permute([0, 3, 1, 2]);
    Ok(common_upscale(&nchw, width, height, method, "center")?.permute([0, 2, 3, 1]))
}

/// A colored mask video `[T, H, W, 3]` as SCAIL-2's 28-channel latent `[1, T_lat, 28, h, w]`:
/// seven binary color channels (white, red, green, blue, yellow, magenta, cyan; a channel is on
/// above 225/255), area-shrunk by 8 and stacked four frames to a latent frame (the first frame
/// four times).
fn mask_latent(video: &Tensor) -> Tensor {
    let (t, h, w) = (video.size()[0], video.size()[1], video.size()[2]);
    let on = video
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        .gt(225.0 / 255.0);
    let channel = |c: i64| on.narrow(1, c, 1).to_kind(Kind::Float);
    let (r, g, b) = (channel(0), channel(1), channel(2));
    let (nr, ng, nb) = (1.0 - &r, 1.0 - &g, 1.0 - &b);
    let colors = Tensor::cat(
        &[
            &r * &g * &b,
            &r * &ng * &nb,
            &nr * &g * &nb,
            &nr * &ng * &b,
            &r * &g * &nb,
            &r * &ng * &b,
            &nr * &g * &b,
        ],
        1,
    );
    let halved = |n: i64| (0..3).fold(n, |n, _| (n + 1) / 2);
    let shrunk = colors.adaptive_avg_pool2d([halved(h), halved(w)]);
    let frames = latent_frames(t);
    let padded = Tensor::cat(
        &[
            shrunk.narrow(0, 0, 1).repeat([4, 1, 1, 1]),
            shrunk.narrow(0, 1, t - 1),
        ],
        0,
    );
    padded.view([frames, 28, halved(h), halved(w)]).unsqueeze(0)
}

/// `conditioning_set_values_with_timestep_range`: the extras apply to each entry's part of the
/// schedule inside `start..end`; outside it the entry stays as it was (split at the edges, a
/// hair apart so that one entry is active at each step).
fn with_extras_in_range(
    cond: &Conditioning,
    extras: &[(&str, &Tensor)],
    (start, end): (f64, f64),
) -> Conditioning {
    const EDGE: f64 = 1e-5;
    if start > end {
        log::warn!("start_percent ({start}) must be <= end_percent ({end})");
        return cond.clone();
    }
    let mut parts = Vec::new();
    for entry in &cond.0 {
        let (from, to) = (start.max(entry.start_percent), end.min(entry.end_percent));
        if from >= to {
            parts.push(entry.clone());
            continue;
        }
        let ranged = |from: f64, to: f64| {
            let mut e = entry.clone();
            e.start_percent = from;
            e.end_percent = to;
            e
        };
        if from > entry.start_percent {
            parts.push(ranged(entry.start_percent, from - EDGE));
        }
        let single = Conditioning(vec![ranged(from, to)]);
        parts.extend(with_extras(&single, extras).0);
        if to < entry.end_percent {
            parts.push(ranged(to + EDGE, entry.end_percent));
        }
    }
    Conditioning(parts)
}

/// The conditioning with `latents` appended to its reference latents (ComfyUI's
/// `reference_latents` list, `append=True`).
fn with_references(cond: &Conditioning, latents: &[Tensor]) -> Conditioning {
    let entries = cond.0.iter().map(|e| {
        latents
            .iter()
            .fold(e.clone(), |e, latent| e.with_reference_latent(latent))
    });
    Conditioning(entries.collect())
}

/// `frames[offset..]`, or `None` when the offset reads past the end.
fn from_offset(frames: Option<&Tensor>, offset: i64) -> Option<Tensor> {
    let frames = frames?;
    let n = frames.size()[0];
    (n > offset).then(|| frames.narrow(0, offset, n - offset))
}

fn scail_to_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<Vae>>("vae")?;
    let (width, height, length) = (i.int("width")?, i.int("height")?, i.int("length")?);
    let batch = i.int("batch_size")?;
    let replacement = i.get("replacement_mode").is_some_and(Value::truthy);
    let mut offset = i.int("video_frame_offset")?;
    let cpu = (Kind::Float, Device::Cpu);
    let frames = latent_frames(length);
    let latent = Tensor::zeros([batch, 16, frames, height / 8, width / 8], cpu);
    let mut positive = i.object::<Conditioning>("positive")?.clone();
    let mut negative = i.object::<Conditioning>("negative")?.clone();
    let both = |p: &mut Conditioning, n: &mut Conditioning, extras: &[(&str, &Tensor)]| {
        *p = with_extras(p, extras);
        *n = with_extras(n, extras);
    };
    let flag = Tensor::from_slice(&[f32::from(u8::from(!replacement))]);
    both(&mut positive, &mut negative, &[("ref_mask_flag", &flag)]);

    let previous = i
        .opt_tensor("previous_frames")
        .filter(|p| p.size()[0] > 0)
        .map(|p| {
            let n = p.size()[0];
            let kept = i.int("previous_frame_count").unwrap_or(5).min(n);
            p.narrow(0, n - kept, kept)
        });
    if let Some(p) = &previous {
        offset = (offset - p.size()[0]).max(0);
    }

    let reference = i.opt_tensor("reference_image");
    let reference_mask = i.opt_tensor("reference_image_mask");
    if let Some(reference) = reference {
        let mut images = resized(reference, width, height, "bicubic")?;
        let n = images.size()[0];
        if let (true, Some(mask)) = (replacement, reference_mask) {
            // Replacement mode keeps the characters alone on black.
            let mask = resized(mask, width, height, "nearest-exact")?;
            let last = mask.size()[0] - 1;
            let index: Vec<i64> = (0..n).map(|k| k.min(last)).collect();
            let mask = mask.index_select(0, &Tensor::from_slice(&index));
            let color = mask.narrow(3, 0, 3).amax([3i64].as_slice(), true);
            images *= color.gt(0.1).to_kind(Kind::Float);
        }
        // One encode per image: a batched encode would be read as a video.
        let latents = (0..n)
            .map(|k| vae.encode(&images.narrow(0, k, 1).narrow(3, 0, 3)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        positive = with_references(&positive, &latents);
        negative = with_references(&negative, &latents);
    }
    if let Some(clip) = i.opt_object::<ClipVisionOutput>("clip_vision_output") {
        let extras = [("clip_vision_output", &**clip.penultimate)];
        both(&mut positive, &mut negative, &extras);
    }

    let mut pose = from_offset(i.opt_tensor("pose_video"), offset);
    let mut pose_mask = from_offset(i.opt_tensor("pose_video_mask"), offset);
    // Pose and mask are cut together to the shorter, at most `length`, in whole latent frames.
    let shortest = [&pose, &pose_mask]
        .into_iter()
        .flatten()
        .map(|v| v.size()[0])
        .min();
    if let Some(shortest) = shortest {
        let kept = (shortest.min(length) - 1) / 4 * 4 + 1;
        pose = pose.map(|v| v.narrow(0, 0, kept));
        pose_mask = pose_mask.map(|v| v.narrow(0, 0, kept));
    }
    let half = (width / 2, height / 2);
    if let Some(pose) = pose {
        let video = resized(&pose, half.0, half.1, "area")?;
        let latent = vae.encode(&video.narrow(3, 0, 3))? * i.float("pose_strength")?;
        let range = (i.float("pose_start")?, i.float("pose_end")?);
        let extras = [("pose_video_latent", &latent)];
        positive = with_extras_in_range(&positive, &extras, range);
        negative = with_extras_in_range(&negative, &extras, range);
    }
    if let Some(mask) = pose_mask {
        let driving = mask_latent(&resized(&mask, half.0, half.1, "area")?);
        both(
            &mut positive,
            &mut negative,
            &[("driving_mask_28ch", &driving)],
        );
    }
    // The reference mask binds the reference frames to identities.
    if let (Some(mask), Some(reference)) = (reference_mask, reference) {
        let mask = resized(mask, width, height, "nearest-exact")?;
        let last = mask.size()[0] - 1;
        let one = |k: i64| mask_latent(&mask.narrow(0, k.min(last), 1));
        let mut parts: Vec<Tensor> = (1..reference.size()[0]).map(one).collect();
        let primary = one(0);
        let (lh, lw) = (primary.size()[3], primary.size()[4]);
        parts.push(primary);
        parts.push(Tensor::zeros([1, frames, 28, lh, lw], cpu));
        let masks = Tensor::cat(&parts, 1);
        both(&mut positive, &mut negative, &[("ref_mask_28ch", &masks)]);
    }

    let mut out = Latent::new(latent);
    if let Some(previous) = previous {
        let pixels = resized(&previous, width, height, "bicubic")?;
        let encoded = vae.encode(&pixels.narrow(3, 0, 3))?;
        let kept = encoded.size()[2].min(frames);
        let samples = out.samples.shallow_clone();
        samples
            .narrow(2, 0, kept)
            .copy_(&encoded.narrow(2, 0, kept));
        let mask = Tensor::ones([1, 1, frames, height / 8, width / 8], cpu);
        let _ = mask.narrow(2, 0, kept).fill_(0.0);
        out.noise_mask = Some(Arc::new(SharedTensor::new(mask)));
    }
    Ok(NodeOutput::values(vec![
        Value::object(positive),
        Value::object(negative),
        Value::object(out),
        Value::Int((offset + length).into()),
    ]))
}

/// The video's masks `[T, objects, H, W]` (booleans) or `None` without objects.
fn masks_of(track: &TrackData) -> Option<Tensor> {
    track
        .packed
        .as_ref()
        .filter(|p| p.size()[1] > 0)
        .map(|p| unpack_masks(p))
}

/// Each object's first frame and, in that frame, its centroid's column and its area.
fn first_appearance(masks: &Tensor) -> (Vec<i64>, Vec<f64>, Vec<f64>) {
    let m = masks.to_kind(Kind::Float);
    let (t, w) = (m.size()[0], m.size()[3]);
    let columns = Tensor::arange(w, (Kind::Float, m.device())).view([1, 1, 1, w]);
    let area = m.sum_dim_intlist([-1i64, -2].as_slice(), false, Kind::Float);
    let cx = (&m * columns).sum_dim_intlist([-1i64, -2].as_slice(), false, Kind::Float)
        / area.clamp_min(1.0);
    let frame = Tensor::arange(t, (Kind::Int64, m.device())).unsqueeze(1);
    let first = frame
        .where_self(&area.gt(0.0), &Tensor::from(t))
        .amin([0i64].as_slice(), false);
    let at = first.clamp_max(t - 1).unsqueeze(0);
    let pick = |x: &Tensor| {
        Vec::<f64>::try_from(x.gather(0, &at, false).squeeze_dim(0).to_kind(Kind::Double))
    };
    (
        Vec::try_from(first).expect("frames"),
        pick(&cx).expect("columns"),
        pick(&area).expect("areas"),
    )
}

/// The track sorted (`left_to_right` or `area`, earlier objects first) and cut to `indices`.
fn prepared(track: &TrackData, sort_by: &str, indices: &str) -> TrackData {
    let mut track = TrackData {
        packed: track
            .packed
            .as_ref()
            .map(|p| SharedTensor::new(p.shallow_clone())),
        frames: track.frames,
        scores: track.scores.clone(),
        orig_size: track.orig_size,
    };
    if let (true, Some(masks)) = (sort_by != "none", masks_of(&track)) {
        let (first, cx, area) = first_appearance(&masks);
        let mut order: Vec<i64> = (0..first.len() as i64).collect();
        let key = |i: &i64| {
            let i = *i as usize;
            let second = if sort_by == "left_to_right" {
                cx[i]
            } else {
                -area[i]
            };
            (first[i], second)
        };
        order.sort_by(|a, b| key(a).partial_cmp(&key(b)).expect("finite"));
        track = track.subset(&order);
    }
    if !indices.trim().is_empty() {
        track = track.subset(&object_indices(indices, track.objects()));
    }
    track
}

fn background(white: bool) -> [f32; 3] {
    if white {
        [1.0; 3]
    } else {
        [0.0; 3]
    }
}

/// The tracks painted in the palette over `bg`, `[T, H, W, 3]` at the video's size (where
/// objects overlap the first one's color wins).
fn painted(track: &TrackData, bg: [f32; 3]) -> Tensor {
    let (h, w) = track.orig_size;
    let bg = Tensor::from_slice(&bg).view([1, 1, 1, 3]);
    let Some(masks) = masks_of(track) else {
        let t = track.packed.as_ref().map_or(track.frames, |p| p.size()[0]);
        return bg.expand([t, h, w, 3], false).contiguous();
    };
    let (t, n) = (masks.size()[0], masks.size()[1]);
    let colors: Vec<f32> = (0..n as usize)
        .flat_map(|k| PALETTE[k % PALETTE.len()])
        .collect();
    let colors = Tensor::from_slice(&colors).view([n, 3]);
    let (mh, mw) = (masks.size()[2], masks.size()[3]);
    let full = masks
        .to_kind(Kind::Float)
        .view([t * n, 1, mh, mw])
        .upsample_nearest2d([h, w], None, None)
        .view([t, n, h, w])
        .gt(0.5)
        .to_device(Device::Cpu);
    let any = full.any_dim(1, false).unsqueeze(-1);
    let overlay = colors.index_select(
        0,
        &full.to_kind(Kind::Uint8).argmax(1, false).flatten(0, -1),
    );
    let overlay = overlay.view([t, h, w, 3]);
    overlay.where_self(&any, &bg)
}

/// A plain MASK `[B, H, W]` painted as one identity (the palette's first color) over `bg`.
fn painted_mask(mask: &Tensor, bg: [f32; 3]) -> Tensor {
    let mask = if mask.dim() == 2 {
        mask.unsqueeze(0)
    } else {
        mask.shallow_clone()
    };
    let color = Tensor::from_slice(&PALETTE[0]).view([1, 1, 1, 3]);
    let bg = Tensor::from_slice(&bg).view([1, 1, 1, 3]);
    color.where_self(&mask.to_kind(Kind::Float).gt(0.5).unsqueeze(-1), &bg)
}

fn colored_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (sort_by, indices) = (i.string("sort_by")?, i.string("object_indices")?);
    let replacement = i.boolean("replacement_mode")?;
    let driving = prepared(
        i.object::<TrackData>("driving_track_data")?,
        &sort_by,
        &indices,
    );
    // Animation: driving on black, reference on white; replacement the other way round.
    let video = painted(&driving, background(replacement));
    let reference_bg = background(!replacement);
    let reference = match i.get("ref_track_data") {
        Some(v) => match (v.as_object::<TrackData>(), v.as_tensor()) {
            (Some(track), _) => painted(&prepared(track, &sort_by, &indices), reference_bg),
            (None, Some(mask)) => painted_mask(mask, reference_bg),
            (None, None) => {
                return Err(NodeError::new(
                    "TypeError",
                    format!("ref_track_data: expected SAM3_TRACK_DATA or MASK, got {v}"),
                ))
            }
        },
        None => {
            let (h, w) = driving.orig_size;
            Tensor::from_slice(&reference_bg)
                .view([1, 1, 1, 3])
                .expand([1, h, w, 3], false)
                .contiguous()
        }
    };
    Ok(NodeOutput::values(vec![
        Value::tensor(video),
        Value::tensor(reference),
    ]))
}

pub fn register(r: &mut Registry) {
    let side = |name: &str, default: i64| {
        InputDef::int(name)
            .default(default)
            .min(32)
            .max(MAX_RESOLUTION)
            .step(32)
    };
    let fraction = |name: &str, default: f64, max: f64, tip: &str| {
        InputDef::float(name)
            .default(default)
            .min(0.0)
            .max(max)
            .step(0.01)
            .tooltip(tip)
    };
    let mut to_video = NodeDef::builtin(
        "WanSCAILToVideo",
        Style::V3,
        "WanSCAILToVideo",
        "model/conditioning/wan/scail",
        scail_to_video,
    )
    .module("comfy_extras.nodes_scail")
    .input(InputDef::new("positive", "CONDITIONING"))
    .input(InputDef::new("negative", "CONDITIONING"))
    .input(InputDef::new("vae", "VAE"))
    .input(side("width", 512))
    .input(side("height", 896))
    .input(video_length(81))
    .input(InputDef::int("batch_size").default(1).min(1).max(4096))
    .input(InputDef::new("pose_video", "IMAGE").optional().tooltip("Video used for pose conditioning. Will be downscaled to half the resolution of the main video."))
    .input(InputDef::new("pose_video_mask", "IMAGE").optional().tooltip("SCAIL-2 only. Colored per-identity SAM3 mask video at the same resolution as pose_video."))
    .input(InputDef::boolean("replacement_mode").default(false).optional().tooltip("SCAIL-2 only. False = Animation Mode (pose_video_mask should have black background). True = Replacement Mode (pose_video_mask should have white background)."))
    .input(fraction("pose_strength", 1.0, 10.0, "Strength of the pose latent."))
    .input(fraction("pose_start", 0.0, 1.0, "Start step of the pose conditioning."))
    .input(fraction("pose_end", 1.0, 1.0, "End step of the pose conditioning."))
    .input(InputDef::new("reference_image", "IMAGE").optional().tooltip("Reference image. The first image is the primary reference (composite all identities onto it). SCAIL-2: extra batch images are used as additional views (back view, close-up, occluded background), each needing a matching reference_image_mask in that identity's color."))
    .input(InputDef::new("reference_image_mask", "IMAGE").optional().tooltip("SCAIL-2 only. Colored reference mask, batch matching reference_image (first = primary reference mask, rest = identity masks for the additional reference_image)."))
    .input(InputDef::new("clip_vision_output", "CLIP_VISION_OUTPUT").optional().tooltip("CLIP vision features for conditioning. Model is trained with stretch resize to aspect ratio."))
    .input(InputDef::int("video_frame_offset").default(0).min(0).max(MAX_RESOLUTION).step(1).tooltip("Cumulative output frame this chunk begins at. Wire from the previous chunk's video_frame_offset output."))
    .input(InputDef::int("previous_frame_count").default(5).min(1).max(MAX_RESOLUTION).step(4).tooltip("Tail frames of previous_frames to anchor. SCAIL-2 trained at 5 (81-frame chunks, 76-frame step)."))
    .input(InputDef::new("previous_frames", "IMAGE").optional().tooltip("SCAIL-2 only. Full decoded output of the previous chunk. Only the last previous_frame_count are used as the extension anchor."))
    .named_output("CONDITIONING", "positive")
    .named_output("CONDITIONING", "negative")
    .named_output("LATENT", "latent")
    .output_tooltip("Empty latent of the generation size.")
    .named_output("INT", "video_frame_offset")
    .output_tooltip("Adjusted offset + length. Wire into the next chunk.");
    to_video.experimental = true;
    r.add(to_video);

    let mut colored = NodeDef::builtin(
        "SCAIL2ColoredMask",
        Style::V3,
        "Create SCAIL-2 Colored Mask",
        "model/conditioning/wan/scail",
        colored_mask,
    )
    .module("comfy_extras.nodes_scail")
    .input(InputDef::new("driving_track_data", "SAM3_TRACK_DATA").tooltip("SAM3 track of the driving pose video. Will be rendered into the pose_video_mask output."))
    .input(InputDef::new("ref_track_data", "SAM3_TRACK_DATA,MASK").optional().opt("display_name", serde_json::json!("reference_masks")).tooltip("SAM3 track of the reference image(s) (one identity per object, colored in batch order), or a plain MASK of the reference subject (rendered as a single identity)."))
    .input(InputDef::string("object_indices").default("").tooltip("Comma-separated list of person indices to include (e.g. '0,2,3'). Applied to both reference and pose video masks. Empty = all."))
    .input(InputDef::combo("sort_by", &["none", "left_to_right", "area"]).default("left_to_right").tooltip("Order in which palette colors are assigned to the tracked objects (applied to both reference and pose video so each identity keeps the same color). Objects that appear in earlier frames always come first; within a frame, left_to_right = leftmost object (by centroid at first appearance) gets the first color, area = biggest object (by mask area at first appearance) gets the first color; none = keep SAM3's order."))
    .input(InputDef::boolean("replacement_mode").default(false).tooltip("False = Animation Mode (pose_video_mask has black background, reference_image_mask has white background). True = Replacement Mode (pose_video_mask has white background, reference_image_mask has black background)."))
    .named_output("IMAGE", "pose_video_mask")
    .named_output("IMAGE", "reference_image_mask");
    colored.experimental = true;
    r.add(colored);
}
