//! Latent nodes (`nodes.py`, `comfy_extras/nodes_sd3.py`, `nodes_hunyuan.py`, `nodes_latent.py`).

use std::sync::Arc;

use tch::{Kind, Tensor};

use super::media_save::{metadata, target, ui};
use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::sampling::model::{repeat_to_batch, Latent};
use crate::upscale::{common_upscale, py_round};

const METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic", "bislerp"];

fn node(
    style: Style,
    name: &str,
    display: &str,
    category: &str,
    f: fn(&Inputs, &ExecContext) -> NodeResult,
) -> NodeDef {
    NodeDef::builtin(name, style, display, category, f)
}

pub(super) fn out(l: Latent) -> NodeResult {
    Ok(NodeOutput::one(Value::object(l)))
}

fn zeros(shape: &[i64]) -> Tensor {
    Tensor::zeros(shape, (Kind::Float, tch::Device::Cpu))
}

fn empty_latent(i: &Inputs, _: &ExecContext) -> NodeResult {
    out(Latent::new(zeros(&[
        i.int("batch_size")?,
        4,
        i.int("height")? / 8,
        i.int("width")? / 8,
    ])))
}

fn empty_sd3(i: &Inputs, _: &ExecContext) -> NodeResult {
    out(Latent::new(zeros(&[
        i.int("batch_size")?,
        16,
        i.int("height")? / 8,
        i.int("width")? / 8,
    ])))
}

fn empty_hunyuan_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let frames = (i.int("length")? - 1) / 4 + 1;
    out(Latent::new(zeros(&[
        i.int("batch_size")?,
        16,
        frames,
        i.int("height")? / 8,
        i.int("width")? / 8,
    ])))
}

fn upscale_to(
    latent: &Latent,
    method: &str,
    width: i64,
    height: i64,
    crop: &str,
) -> Result<Latent, NodeError> {
    if method == "bislerp" {
        return Err(NodeError::value("bislerp upscaling is not supported yet"));
    }
    Ok(latent.with_samples(common_upscale(
        &latent.samples,
        width,
        height,
        method,
        crop,
    )?))
}

fn latent_upscale(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let (mut w, mut h) = (i.int("width")?, i.int("height")?);
    if w == 0 && h == 0 {
        return out(latent.clone());
    }
    let size = latent.samples.size();
    let (lh, lw) = (size[size.len() - 2] as f64, size[size.len() - 1] as f64);
    if w == 0 {
        h = h.max(64);
        w = py_round(lw * h as f64 / lh).max(64);
    } else if h == 0 {
        w = w.max(64);
        h = py_round(lh * w as f64 / lw).max(64);
    } else {
        w = w.max(64);
        h = h.max(64);
    }
    out(upscale_to(
        latent,
        &i.string("upscale_method")?,
        w / 8,
        h / 8,
        &i.string("crop")?,
    )?)
}

fn latent_upscale_by(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let size = latent.samples.size();
    let f = i.float("scale_by")?;
    let (w, h) = (
        py_round(size[size.len() - 1] as f64 * f),
        py_round(size[size.len() - 2] as f64 * f),
    );
    out(upscale_to(
        latent,
        &i.string("upscale_method")?,
        w,
        h,
        "disabled",
    )?)
}

/// `latent` resized (bilinear, centre crop) to `target`'s height and width when any of its
/// non-batch sizes differs, as LatentBatch and ComfyUI's `reshape_latent_to` do.
pub(super) fn resized_like(target: &Tensor, latent: &Tensor) -> Result<Tensor, NodeError> {
    let (ts, ls) = (target.size(), latent.size());
    if ts[1..] == ls[1..] {
        return Ok(latent.shallow_clone());
    }
    let (h, w) = (ts[ts.len() - 2], ts[ts.len() - 1]);
    Ok(common_upscale(latent, w, h, "bilinear", "center")?)
}

/// Inputs `latents.latent0` … of `BatchLatentsNode`'s Autogrow.
const BATCH_LATENT_INPUTS: usize = 50;

/// `BatchLatentsNode` (`batch_latents`): every connected latent resized to the first one's
/// frame and batched; the first one's other entries kept, and the batch indices each latent's
/// own (or 0…n−1 for each, as upstream counts them).
fn batch_latents(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latents: Vec<&Latent> = (0..BATCH_LATENT_INPUTS)
        .filter_map(|n| i.opt_object::<Latent>(&format!("latents.latent{n}")))
        .collect();
    let first = latents
        .first()
        .ok_or_else(|| NodeError::value("BatchLatentsNode needs at least one latent"))?;
    let mut tensors = Vec::new();
    let mut indices = Vec::new();
    for latent in &latents {
        tensors.push(resized_like(&first.samples, &latent.samples)?);
        match &latent.batch_index {
            Some(b) => indices.extend(b.iter().copied()),
            None => indices.extend(0..latent.samples.size()[0]),
        }
    }
    let mut result = first.with_samples(Tensor::cat(&tensors, 0));
    result.batch_index = Some(indices);
    out(result)
}

fn latent_batch(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (a, b) = (
        i.object::<Latent>("samples1")?,
        i.object::<Latent>("samples2")?,
    );
    let (sa, sb) = (a.samples.size(), b.samples.size());
    let b_samples = resized_like(&a.samples, &b.samples)?;
    let mut result = Latent::new(Tensor::cat(&[&**a.samples, &b_samples], 0));
    let ia = a
        .batch_index
        .clone()
        .unwrap_or_else(|| (0..sa[0]).collect());
    let ib = b.batch_index.clone().unwrap_or_else(|| {
        (0..sb[0])
            .map(|x| x + ia.last().map_or(0, |l| l + 1))
            .collect()
    });
    result.batch_index = Some([ia, ib].concat());
    out(result)
}

fn latent_from_batch(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let n = latent.samples.size()[0];
    // A negative index counts from the end; either way it is clamped into the batch.
    let index = i.int("batch_index")?;
    let start = if index < 0 { index + n } else { index }.clamp(0, n - 1);
    let length = i.int("length")?.min(n - start);
    let mut result = latent.with_samples(latent.samples.narrow(0, start, length).copy());
    if let Some(mask) = &latent.noise_mask {
        let masks = mask.size()[0];
        let m = if masks == 1 {
            mask.copy()
        } else {
            // A shorter mask batch repeats to the latent's, as upstream does.
            let repeated = if masks < n {
                let mut times = vec![1; mask.dim()];
                times[0] = (n + masks - 1) / masks;
                mask.repeat(&times[..]).narrow(0, 0, n)
            } else {
                mask.shallow_clone()
            };
            let end = (start + length).min(repeated.size()[0]);
            repeated
                .narrow(0, start.min(end), end - start.min(end))
                .copy()
        };
        result.noise_mask = Some(Arc::new(crate::engine::value::SharedTensor::new(m)));
    }
    result.batch_index = Some(match &latent.batch_index {
        // Python's slice: clamped to the list.
        Some(b) => {
            let from = (start as usize).min(b.len());
            let to = ((start + length) as usize).min(b.len());
            b[from..to].to_vec()
        }
        None => (start..start + length).collect(),
    });
    out(result)
}

fn set_noise_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let mask = i.tensor("mask")?;
    let size = mask.size();
    let m = mask.reshape([-1, 1, size[size.len() - 2], size[size.len() - 1]]);
    let mut result = latent.clone();
    result.noise_mask = Some(Arc::new(crate::engine::value::SharedTensor::new(m)));
    out(result)
}

/// The axis a `dim` choice names, counted from the end as ComfyUI does, so `t` of a 4-D image
/// latent is its channels.
fn latent_axis(samples: &Tensor, dim: &str) -> i64 {
    let rank = samples.dim() as i64;
    if dim.contains('x') {
        rank - 1
    } else if dim.contains('y') {
        rank - 2
    } else {
        rank - 3
    }
}

/// `LatentConcat`: the second latent (repeated or cut to the first's batch) after the first
/// along `dim`, or before it for the `-` choices; the first latent's other fields stay.
fn latent_concat(i: &Inputs, _: &ExecContext) -> NodeResult {
    let first = i.object::<Latent>("samples1")?;
    let a = &first.samples;
    let b = repeat_to_batch(&i.object::<Latent>("samples2")?.samples, a.size()[0]);
    let dim = i.string("dim")?;
    let pair = if dim.starts_with('-') {
        [&b, &**a]
    } else {
        [&**a, &b]
    };
    let axis = latent_axis(a, &dim);
    let (sa, sb) = (pair[0].size(), pair[1].size());
    let mismatch = (sa.len() != sb.len())
        .then_some(0)
        .or_else(|| (0..sa.len()).find(|&d| d as i64 != axis && sa[d] != sb[d]));
    if let Some(d) = mismatch {
        return Err(NodeError::runtime(format!(
            "Sizes of tensors must match except in dimension {axis}. Expected size {} but got \
             size {} for tensor number 1 in the list.",
            sa.get(d).copied().unwrap_or(0),
            sb.get(d).copied().unwrap_or(0)
        )));
    }
    out(first.with_samples(Tensor::cat(&pair, axis)))
}

/// `LatentCut`: `amount` entries from `index` (negative counts from the end) along `dim`,
/// both clamped to what the latent has.
fn latent_cut(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let s = &latent.samples;
    let axis = latent_axis(s, &i.string("dim")?);
    let size = s.size()[axis as usize];
    let (index, amount) = (i.int("index")?, i.int("amount")?);
    let (index, amount) = if index >= 0 {
        let index = index.min(size - 1);
        (index, amount.min(size - index))
    } else {
        let index = index.max(-size);
        (size + index, amount.min(-index))
    };
    out(latent.with_samples(s.narrow(axis, index, amount)))
}

/// `LatentCutToBatch`: the latent cut along `dim` into slices of `slice_size` (the rest
/// dropped) that become batch items; a latent without such an axis is returned as it is.
fn latent_cut_to_batch(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let s = &latent.samples;
    let axis = latent_axis(s, &i.string("dim")?);
    if axis < 2 {
        return out(latent.clone());
    }
    let moved = s.movedim(axis, 1);
    let size = moved.size()[1];
    let slice = i.int("slice_size")?.min(size);
    let moved = moved.narrow(1, 0, size / slice * slice);
    let mut shape = vec![-1, slice];
    shape.extend_from_slice(&moved.size()[2..]);
    out(latent.with_samples(moved.reshape(shape.as_slice()).movedim(1, axis)))
}

/// `RepeatLatentBatch`: the batch `amount` times over; a mask batch repeats along, and the
/// batch indices continue past the last one.
fn repeat_latent_batch(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let amount = i.int("amount")?;
    let repeated = |t: &Tensor| {
        let mut reps = vec![1i64; t.dim()];
        reps[0] = amount;
        t.repeat(reps.as_slice())
    };
    let mut result = latent.with_samples(repeated(&latent.samples));
    if let Some(mask) = latent.noise_mask.as_ref().filter(|m| m.size()[0] > 1) {
        result.noise_mask = Some(Arc::new(crate::engine::value::SharedTensor::new(repeated(
            mask,
        ))));
    }
    if let Some(indices) = &latent.batch_index {
        let (lo, hi) = (indices.iter().min(), indices.iter().max());
        let offset = hi.zip(lo).map_or(0, |(h, l)| h - l + 1);
        let mut all = indices.clone();
        for k in 1..amount {
            all.extend(indices.iter().map(|x| x + k * offset));
        }
        result.batch_index = Some(all);
    }
    out(result)
}

/// The latent's samples as an image latent `[B, C, H, W]`, or a clear error.
fn image_latent(latent: &Latent, node: &str) -> Result<Tensor, NodeError> {
    let s = &latent.samples;
    if s.dim() != 4 {
        return Err(NodeError::value(format!(
            "{node} takes image latents [B, C, H, W], got {:?}",
            s.size()
        )));
    }
    Ok(s.shallow_clone())
}

/// `LatentRotate`: `torch.rot90` over (W, H) by the chosen quarter turns.
fn latent_rotate(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let s = image_latent(latent, "LatentRotate")?;
    let turns = match i.string("rotation")?.as_str() {
        r if r.starts_with("90") => 1,
        r if r.starts_with("180") => 2,
        r if r.starts_with("270") => 3,
        _ => 0,
    };
    out(latent.with_samples(s.rot90(turns, [3, 2])))
}

fn latent_flip(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let s = image_latent(latent, "LatentFlip")?;
    let axis = if i.string("flip_method")?.starts_with('x') {
        2
    } else {
        3
    };
    out(latent.with_samples(s.flip([axis])))
}

/// `LatentComposite`: `samples_from` pasted at `(x, y)` (pixels, in whole latent cells), cut at
/// the edges; with `feather`, its borders that lie inside the target fade in over as many cells.
fn latent_composite(i: &Inputs, _: &ExecContext) -> NodeResult {
    let target = i.object::<Latent>("samples_to")?;
    let to = image_latent(target, "LatentComposite")?;
    let from = image_latent(i.object::<Latent>("samples_from")?, "LatentComposite")?;
    let (x, y, feather) = (i.int("x")? / 8, i.int("y")? / 8, i.int("feather")? / 8);
    let (th, tw) = (to.size()[2], to.size()[3]);
    if from.size()[..2] != to.size()[..2] {
        return Err(NodeError::runtime(format!(
            "cannot paste a latent of {:?} into one of {:?}",
            from.size(),
            to.size()
        )));
    }
    let (h, w) = (from.size()[2].min(th - y), from.size()[3].min(tw - x));
    let result = to.copy();
    if h <= 0 || w <= 0 {
        return out(target.with_samples(result));
    }
    let from = from.narrow(2, 0, h).narrow(3, 0, w);
    let mut region = result.narrow(2, y, h).narrow(3, x, w);
    if feather == 0 {
        region.copy_(&from);
        return out(target.with_samples(result));
    }
    let mask = from.ones_like();
    for t in 0..feather {
        let rate = (1.0 / feather as f64) * (t + 1) as f64;
        let scale = |axis: i64, at: i64| {
            if (0..mask.size()[axis as usize]).contains(&at) {
                let _ = mask.narrow(axis, at, 1).f_mul_scalar_(rate);
            }
        };
        if y != 0 {
            scale(2, t);
        }
        if y + h < th {
            scale(2, h - 1 - t);
        }
        if x != 0 {
            scale(3, t);
        }
        if x + w < tw {
            scale(3, w - 1 - t);
        }
    }
    let blended = &from * &mask + &region * (mask.ones_like() - &mask);
    region.copy_(&blended);
    out(target.with_samples(result))
}

/// `LatentBlend`: `samples1 · f + samples2 · (1 − f)`, the second resized (bicubic, centre crop)
/// to the first's size when they differ.
fn latent_blend(i: &Inputs, _: &ExecContext) -> NodeResult {
    let first = i.object::<Latent>("samples1")?;
    let a = &first.samples;
    let b = &i.object::<Latent>("samples2")?.samples;
    let factor = i.float("blend_factor")?;
    let b = if a.size() != b.size() {
        if a.dim() != 4 || b.dim() != 4 || a.size()[..2] != b.size()[..2] {
            return Err(NodeError::runtime(format!(
                "cannot blend latents of {:?} and {:?}",
                a.size(),
                b.size()
            )));
        }
        common_upscale(b, a.size()[3], a.size()[2], "bicubic", "center")?
    } else {
        b.shallow_clone()
    };
    let a: &Tensor = a;
    out(first.with_samples(a * factor + b * (1.0 - factor)))
}

/// `LatentCrop`: `width × height` pixels from `(x, y)`, in latent cells, the start kept at
/// least 8 cells from the far edges.
fn latent_crop(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let s = image_latent(latent, "LatentCrop")?;
    let (h, w) = (s.size()[2], s.size()[3]);
    let x = (i.int("x")? / 8).min(w - 8).max(0);
    let y = (i.int("y")? / 8).min(h - 8).max(0);
    let (cw, ch) = (
        (i.int("width")? / 8).min(w - x),
        (i.int("height")? / 8).min(h - y),
    );
    out(latent.with_samples(s.narrow(2, y, ch).narrow(3, x, cw)))
}

/// `LoadLatent`: a `.latent` file from the input folder; files without
/// `latent_format_version_0` hold SD1 latents scaled by 0.18215, which are undone.
fn load_latent(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let name = i.string("latent")?;
    let path = ctx
        .env
        .paths
        .annotated_input_path(&name)
        .ok_or_else(|| NodeError::value(format!("Invalid latent file: {name}")))?;
    let file = crate::runtime::safetensors_file::SafetensorsFile::open(&path)?;
    let samples = file
        .tensor("latent_tensor", tch::Device::Cpu)?
        .to_kind(Kind::Float);
    let samples = if file.contains("latent_format_version_0") {
        samples
    } else {
        samples * (1.0 / 0.18215)
    };
    out(Latent::new(samples))
}

/// ComfyUI's SaveLatent: a `.latent` safetensors file with `latent_tensor`.
fn save_latent(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let (path, record) = target(ctx, "output", &i.string("filename_prefix")?, "latent", 0, 0)?;
    let samples = latent
        .samples
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let mut data = vec![0f32; samples.numel()];
    let n = data.len();
    samples.copy_data(&mut data, n);
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape: Vec<usize> = samples.size().iter().map(|d| *d as usize).collect();
    let tensors = vec![
        (
            "latent_tensor".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes)
                .map_err(|e| NodeError::runtime(e.to_string()))?,
        ),
        (
            "latent_format_version_0".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![0], &[])
                .map_err(|e| NodeError::runtime(e.to_string()))?,
        ),
    ];
    let meta: std::collections::HashMap<String, String> = metadata(ctx).into_iter().collect();
    safetensors::serialize_to_file(tensors, Some(meta), &path)
        .map_err(|e| NodeError::runtime(e.to_string()))?;
    Ok(NodeOutput {
        values: vec![i
            .get("samples")
            .cloned()
            .unwrap_or(Value::Json(serde_json::Value::Null))],
        ui: Some(ui("latents", vec![record])),
    })
}

/// ReplaceVideoLatentFrames: the source's frames written over the destination's from `index`
/// (negative counts from the end). Without a source, or where it does not fit, the destination
/// passes unchanged (upstream only logs a warning); otherwise the result keeps the source's
/// other entries, as upstream copies the source dict.
fn replace_video_frames(i: &Inputs, _: &ExecContext) -> NodeResult {
    let destination = i.object::<Latent>("destination")?;
    let unchanged = || {
        Ok(NodeOutput::one(
            i.get("destination").cloned().expect("read above"),
        ))
    };
    let Some(source) = i.opt_object::<Latent>("source") else {
        return unchanged();
    };
    let frames = destination.samples.size()[2];
    let count = source.samples.size()[2];
    let index = i.int("index")?;
    let index = if index < 0 { frames + index } else { index };
    if index > frames || index + count > frames {
        log::warn!(
            "ReplaceVideoLatentFrames: {count} source frames do not fit at index {index} of {frames}"
        );
        return unchanged();
    }
    let samples = destination.samples.copy();
    samples
        .f_narrow(2, index, count)?
        .f_copy_(&source.samples.to_kind(samples.kind()))?;
    out(source.with_samples(samples))
}

pub fn register(r: &mut Registry) {
    let dim = |name: &str, default: i64, min: i64, step: i64| {
        InputDef::int(name)
            .default(default)
            .min(min)
            .max(MAX_RESOLUTION)
            .step(step)
    };
    let batch = || InputDef::int("batch_size").default(1).min(1).max(4096);
    let samples = || InputDef::new("samples", "LATENT");
    r.add(
        node(
            Style::V1,
            "EmptyLatentImage",
            "Empty Latent Image",
            "model/latent",
            empty_latent,
        )
        .description("Create a new batch of empty latent images to be denoised via sampling.")
        .aliases(&[
            "empty",
            "empty latent",
            "new latent",
            "create latent",
            "blank latent",
            "blank",
        ])
        .input(dim("width", 512, 16, 8).tooltip("The width of the latent images in pixels."))
        .input(dim("height", 512, 16, 8).tooltip("The height of the latent images in pixels."))
        .input(batch().tooltip("The number of latent images in the batch."))
        .output("LATENT")
        .output_tooltip("The empty latent image batch."),
    );
    r.add(
        node(
            Style::V3,
            "EmptySD3LatentImage",
            "EmptySD3LatentImage",
            "model/latent/stable diffusion",
            empty_sd3,
        )
        .module("comfy_extras.nodes_sd3")
        .input(dim("width", 1024, 16, 16))
        .input(dim("height", 1024, 16, 16))
        .input(batch())
        .output("LATENT"),
    );
    r.add(
        node(
            Style::V3,
            "EmptyHunyuanLatentVideo",
            "Empty HunyuanVideo 1.0 Latent",
            "model/latent/hunyuan video",
            empty_hunyuan_video,
        )
        .module("comfy_extras.nodes_hunyuan")
        .input(dim("width", 848, 16, 16))
        .input(dim("height", 480, 16, 16))
        .input(
            InputDef::int("length")
                .default(25)
                .min(1)
                .max(MAX_RESOLUTION)
                .step(4),
        )
        .input(batch())
        .output("LATENT"),
    );
    r.add(
        node(
            Style::V1,
            "LatentUpscale",
            "Upscale Latent",
            "model/latent",
            latent_upscale,
        )
        .aliases(&["enlarge latent", "resize latent"])
        .input(samples())
        .input(InputDef::combo("upscale_method", METHODS))
        .input(dim("width", 512, 0, 8))
        .input(dim("height", 512, 0, 8))
        .input(InputDef::combo("crop", &["disabled", "center"]))
        .output("LATENT"),
    );
    r.add(
        node(
            Style::V1,
            "LatentUpscaleBy",
            "Upscale Latent By",
            "model/latent",
            latent_upscale_by,
        )
        .aliases(&["enlarge latent", "resize latent", "scale latent"])
        .input(samples())
        .input(InputDef::combo("upscale_method", METHODS))
        .input(
            InputDef::float("scale_by")
                .default_float(1.5)
                .min_float(0.01)
                .max_float(8.0)
                .step_float(0.01),
        )
        .output("LATENT"),
    );
    r.add(
        node(
            Style::V3,
            "LatentBatch",
            "Batch Latents (DEPRECATED)",
            "model/latent/batch",
            latent_batch,
        )
        .deprecated()
        .aliases(&["combine latents", "merge latents", "join latents"])
        .module("comfy_extras.nodes_latent")
        .input(InputDef::new("samples1", "LATENT"))
        .input(InputDef::new("samples2", "LATENT"))
        .output("LATENT"),
    );
    r.add(
        node(
            Style::V1,
            "LatentFromBatch",
            "Get Latent From Batch",
            "model/latent/batch",
            latent_from_batch,
        )
        .aliases(&["select from batch", "pick latent", "batch subset"])
        .input(samples())
        .input(
            InputDef::int("batch_index")
                .default(0)
                .min(-MAX_RESOLUTION)
                .max(MAX_RESOLUTION),
        )
        .input(InputDef::int("length").default(1).min(1).max(64))
        .output("LATENT"),
    );
    r.add(
        node(
            Style::V1,
            "SetLatentNoiseMask",
            "Set Latent Noise Mask",
            "model/latent",
            set_noise_mask,
        )
        .input(samples())
        .input(InputDef::new("mask", "MASK"))
        .output("LATENT"),
    );
    let transform = |name: &str, display: &str, f, aliases: &[&str]| {
        node(Style::V1, name, display, "model/latent/transform", f).aliases(aliases)
    };
    r.add(
        transform("LatentRotate", "Rotate Latent", latent_rotate, &[])
            .input(samples())
            .input(InputDef::combo(
                "rotation",
                &["none", "90 degrees", "180 degrees", "270 degrees"],
            ))
            .output("LATENT"),
    );
    r.add(
        transform("LatentFlip", "Flip Latent", latent_flip, &["mirror latent"])
            .input(samples())
            .input(InputDef::combo(
                "flip_method",
                &["x-axis: vertically", "y-axis: horizontally"],
            ))
            .output("LATENT"),
    );
    r.add(
        transform(
            "LatentCrop",
            "Crop Latent",
            latent_crop,
            &["trim latent", "cut latent"],
        )
        .input(samples())
        .input(dim("width", 512, 64, 8))
        .input(dim("height", 512, 64, 8))
        .input(dim("x", 0, 0, 8))
        .input(dim("y", 0, 0, 8))
        .output("LATENT"),
    );
    r.add(
        node(
            Style::V1,
            "LatentComposite",
            "Latent Composite",
            "model/latent",
            latent_composite,
        )
        .aliases(&["overlay latent", "layer latent", "paste latent"])
        .input(InputDef::new("samples_to", "LATENT"))
        .input(InputDef::new("samples_from", "LATENT"))
        .input(dim("x", 0, 0, 8))
        .input(dim("y", 0, 0, 8))
        .input(dim("feather", 0, 0, 8))
        .output("LATENT"),
    );
    r.add(
        node(
            Style::V1,
            "LatentBlend",
            "Latent Blend",
            "experimental",
            latent_blend,
        )
        .aliases(&["mix latents", "interpolate latents"])
        .input(InputDef::new("samples1", "LATENT"))
        .input(InputDef::new("samples2", "LATENT"))
        .input(
            InputDef::float("blend_factor")
                .default_float(0.5)
                .min(0)
                .max(1)
                .step_float(0.01),
        )
        .output("LATENT"),
    );
    r.add(
        node(
            Style::V1,
            "RepeatLatentBatch",
            "Repeat Latent Batch",
            "model/latent/batch",
            repeat_latent_batch,
        )
        .aliases(&["duplicate latent", "clone latent"])
        .input(samples())
        .input(InputDef::int("amount").default(1).min(1).max(64))
        .output("LATENT"),
    );
    r.add(
        node(
            Style::V1,
            "LoadLatent",
            "Load Latent",
            "model/latent",
            load_latent,
        )
        .aliases(&["import latent", "open latent"])
        .input(InputDef::combo_dynamic(
            "latent",
            Arc::new(|env: &crate::engine::context::NodeEnv| {
                let mut files: Vec<String> = std::fs::read_dir(&env.paths.input)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_file())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".latent"))
                    .collect();
                files.sort();
                files
            }),
        ))
        .output("LATENT")
        .is_changed(Arc::new(
            |i: &Inputs, env: &crate::engine::context::NodeEnv| {
                super::media_files::file_fingerprint(i, env, "latent")
            },
        ))
        .validator(
            Some(&["latent"]),
            Arc::new(|i: &Inputs, env: &crate::engine::context::NodeEnv| {
                super::media_files::file_exists(i, env, "latent", "latent")
            }),
        ),
    );
    let advanced = |name: &str, f, aliases: &[&str]| {
        node(Style::V3, name, name, "model/latent/advanced", f)
            .module("comfy_extras.nodes_latent")
            .aliases(aliases)
    };
    r.add(
        advanced(
            "LatentConcat",
            latent_concat,
            &["join latents", "stitch latents"],
        )
        .input(InputDef::new("samples1", "LATENT"))
        .input(InputDef::new("samples2", "LATENT"))
        .input(InputDef::combo("dim", &["x", "-x", "y", "-y", "t", "-t"]))
        .output("LATENT"),
    );
    r.add(
        advanced(
            "LatentCut",
            latent_cut,
            &["crop latent", "slice latent", "extract region"],
        )
        .input(samples())
        .input(InputDef::combo("dim", &["x", "y", "t"]))
        .input(
            InputDef::int("index")
                .default(0)
                .min(-MAX_RESOLUTION)
                .max(MAX_RESOLUTION)
                .step(1),
        )
        .input(dim("amount", 1, 1, 1))
        .output("LATENT"),
    );
    r.add(
        advanced(
            "LatentCutToBatch",
            latent_cut_to_batch,
            &["slice to batch", "split latent", "tile latent"],
        )
        .input(samples())
        .input(InputDef::combo("dim", &["t", "x", "y"]))
        .input(dim("slice_size", 1, 1, 1))
        .output("LATENT"),
    );
    r.add(
        NodeDef::builtin(
            "BatchLatentsNode",
            Style::V3,
            "Batch Latents",
            "model/latent/batch",
            batch_latents,
        )
        .module("comfy_extras.nodes_post_processing")
        .aliases(&["combine latents", "stack latents", "merge latents"])
        .input(InputDef::autogrow_prefix(
            "latents",
            InputDef::new("latent", "LATENT"),
            "latent",
            1,
            BATCH_LATENT_INPUTS,
        ))
        .output("LATENT"),
    );
    r.add(
        advanced("ReplaceVideoLatentFrames", replace_video_frames, &[])
            .display("Replace Video Latent Frames")
            .category("model/latent/batch")
            .input(InputDef::new("destination", "LATENT").tooltip("The destination latent where frames will be replaced."))
            .input(InputDef::new("source", "LATENT").optional().tooltip("The source latent providing frames to insert into the destination latent. If not provided, the destination latent is returned unchanged."))
            .input(
                InputDef::int("index")
                    .tooltip("The starting latent frame index in the destination latent where the source latent frames will be placed. Negative values count from the end.")
                    .default(0)
                    .min(-MAX_RESOLUTION)
                    .max(MAX_RESOLUTION)
                    .step(1),
            )
            .output("LATENT"),
    );
    r.add(
        node(
            Style::V1,
            "SaveLatent",
            "Save Latent",
            "model/latent",
            save_latent,
        )
        .aliases(&["export latent"])
        .input(samples())
        .input(InputDef::string("filename_prefix").default("latents/ComfyUI"))
        .input(InputDef::hidden("prompt", "PROMPT"))
        .input(InputDef::hidden("extra_pnginfo", "EXTRA_PNGINFO"))
        .named_output("LATENT", "samples")
        .output_node(),
    );
}
