//! Mask nodes (`comfy_extras/nodes_mask.py`). A MASK is a `[B, H, W]` float tensor.

use std::sync::Arc;

use serde_json::json;
use tch::{Kind, Tensor};

use super::image_files::preview_ui;
use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::sampling::model::{repeat_to_batch, Latent};

fn mask_node(name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult) -> NodeDef {
    NodeDef::new(name, Style::V3, Arc::new(f))
        .display(display)
        .category("image/mask")
        .module("comfy_extras.nodes_mask")
}

fn solid(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (w, h) = (i.int("width")?, i.int("height")?);
    let t = Tensor::full(
        [1, h, w],
        i.float("value")?,
        (Kind::Float, tch::Device::Cpu),
    );
    Ok(NodeOutput::one(Value::tensor(t)))
}

fn invert(i: &Inputs, _: &ExecContext) -> NodeResult {
    Ok(NodeOutput::one(Value::tensor(1.0 - i.tensor("mask")?)))
}

fn mask_to_image(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mask = i.tensor("mask")?;
    let size = mask.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    let image = mask
        .reshape([-1, 1, h, w])
        .movedim(1, -1)
        .expand([-1, -1, -1, 3], false);
    Ok(NodeOutput::one(Value::tensor(image.contiguous())))
}

fn image_to_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let channel = i.string("channel")?;
    let index = ["red", "green", "blue", "alpha"]
        .iter()
        .position(|c| *c == channel)
        .unwrap_or(0) as i64;
    let channels = image.size().last().copied().unwrap_or(0);
    if index >= channels {
        let msg = format!("index {index} is out of bounds for dimension 3 with size {channels}");
        return Err(crate::engine::node::NodeError::new("IndexError", msg));
    }
    Ok(NodeOutput::one(Value::tensor(
        image.select(3, index).contiguous(),
    )))
}

/// A mask as `[B, H, W]`.
fn masks(mask: &Tensor) -> Tensor {
    let s = mask.size();
    mask.reshape([-1, s[s.len() - 2], s[s.len() - 1]])
}

fn out(t: Tensor) -> NodeResult {
    Ok(NodeOutput::one(Value::tensor(t)))
}

/// `composite`: `source` `[B, C, h, w]` pasted into `destination` `[B, C, H, W]` at `(x, y)`
/// (in units of `multiplier` pixels; the nodes' bounds keep them ≥ 0) through `mask` resized
/// bilinearly to the source, or whole, cut where it leaves the destination; `resize_source`
/// scales the source to the destination first.
fn composite(
    destination: &Tensor,
    source: &Tensor,
    (x, y): (i64, i64),
    mask: Option<&Tensor>,
    multiplier: i64,
    resize_source: bool,
) -> Tensor {
    let (dh, dw) = (destination.size()[2], destination.size()[3]);
    let source = if resize_source {
        source.upsample_bilinear2d([dh, dw], false, None, None)
    } else {
        source.shallow_clone()
    };
    let source = repeat_to_batch(&source, destination.size()[0]);
    let (sh, sw) = (source.size()[2], source.size()[3]);
    let (left, top) = (
        x.clamp(0, dw * multiplier) / multiplier,
        y.clamp(0, dh * multiplier) / multiplier,
    );
    let (w, h) = (sw.min(dw - left), sh.min(dh - top));
    let result = destination.copy();
    if w <= 0 || h <= 0 {
        return result;
    }
    let mask = match mask {
        None => source.ones_like(),
        Some(m) => {
            let m = m
                .reshape([-1, 1, m.size()[m.dim() - 2], m.size()[m.dim() - 1]])
                .to_kind(Kind::Float)
                .upsample_bilinear2d([sh, sw], false, None, None);
            repeat_to_batch(&m, source.size()[0])
        }
    };
    let mask = mask.narrow(2, 0, h).narrow(3, 0, w);
    let mut region = result.narrow(2, top, h).narrow(3, left, w);
    let pasted =
        &mask * source.narrow(2, 0, h).narrow(3, 0, w) + (mask.ones_like() - &mask) * &region;
    region.copy_(&pasted);
    result
}

fn image_composite_masked(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (destination, source) = (i.tensor("destination")?, i.tensor("source")?);
    // `image_alpha_fix`: the source takes the destination's channels (an opaque alpha added).
    let (dc, sc) = (destination.size()[3], source.size()[3]);
    let source = if dc < sc {
        source.narrow(3, 0, dc)
    } else if dc > sc {
        let s = source.size();
        let alpha = Tensor::ones([s[0], s[1], s[2], 1], (source.kind(), source.device()));
        Tensor::cat(&[source.shallow_clone(), alpha], 3)
    } else {
        source.shallow_clone()
    };
    if source.size()[3] != dc {
        return Err(NodeError::runtime(format!(
            "cannot paste an image of {sc} channels into one of {dc}"
        )));
    }
    let xy = (i.int("x")?, i.int("y")?);
    let result = composite(
        &destination.movedim(-1, 1),
        &source.movedim(-1, 1),
        xy,
        i.opt_tensor("mask"),
        1,
        i.boolean("resize_source")?,
    );
    out(result.movedim(1, -1).contiguous())
}

fn latent_composite_masked(i: &Inputs, _: &ExecContext) -> NodeResult {
    let destination = i.object::<Latent>("destination")?;
    let source = &i.object::<Latent>("source")?.samples;
    let xy = (i.int("x")?, i.int("y")?);
    let samples = &destination.samples;
    if samples.dim() != 4 || source.dim() != 4 || samples.size()[1] != source.size()[1] {
        return Err(NodeError::value(format!(
            "LatentCompositeMasked takes two image latents of the same channels, got {:?} and {:?}",
            samples.size(),
            source.size()
        )));
    }
    let result = composite(
        samples,
        source,
        xy,
        i.opt_tensor("mask"),
        8,
        i.boolean("resize_source")?,
    );
    Ok(NodeOutput::one(Value::object(
        destination.with_samples(result),
    )))
}

fn image_color_to_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let bytes = (image.clamp(0.0, 1.0) * 255.0).round().to_kind(Kind::Int);
    let rgb = bytes.select(3, 0) * 65536 + bytes.select(3, 1) * 256 + bytes.select(3, 2);
    out(rgb.eq(i.int("color")?).to_kind(Kind::Float))
}

fn crop_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mask = masks(i.tensor("mask")?);
    let (h, w) = (mask.size()[1], mask.size()[2]);
    let (x, y) = (i.int("x")?.min(w), i.int("y")?.min(h));
    let (width, height) = (i.int("width")?.min(w - x), i.int("height")?.min(h - y));
    out(mask.narrow(1, y, height).narrow(2, x, width).contiguous())
}

/// `MaskComposite`: `operation` of the destination and the source where they overlap (the
/// logical ones on rounded values), clamped to 0…1.
fn mask_composite(i: &Inputs, _: &ExecContext) -> NodeResult {
    let output = masks(i.tensor("destination")?).copy();
    let source = masks(i.tensor("source")?);
    let (h, w) = (output.size()[1], output.size()[2]);
    let (left, top) = (i.int("x")?, i.int("y")?);
    let (right, bottom) = (
        (left + source.size()[2]).min(w),
        (top + source.size()[1]).min(h),
    );
    let (vw, vh) = (right - left, bottom - top);
    if vw > 0 && vh > 0 {
        let batch = output.size()[0].max(source.size()[0]);
        if output.size()[0] != source.size()[0] && output.size()[0] != 1 && source.size()[0] != 1 {
            return Err(NodeError::runtime("the masks' batch sizes differ"));
        }
        let src = source.narrow(1, 0, vh).narrow(2, 0, vw);
        let mut dst = output.narrow(1, top, vh).narrow(2, left, vw);
        let bools = |t: &Tensor| t.round().to_kind(Kind::Bool);
        let combined = match i.string("operation")?.as_str() {
            "multiply" => &dst * &src,
            "add" => &dst + &src,
            "subtract" => &dst - &src,
            "and" => bools(&dst).logical_and(&bools(&src)).to_kind(Kind::Float),
            "or" => bools(&dst).logical_or(&bools(&src)).to_kind(Kind::Float),
            _ => bools(&dst).logical_xor(&bools(&src)).to_kind(Kind::Float),
        };
        if combined.size()[0] != output.size()[0] {
            return Err(NodeError::runtime(format!(
                "cannot write a batch of {batch} into one of {}",
                output.size()[0]
            )));
        }
        dst.copy_(&combined);
    }
    out(output.clamp(0.0, 1.0))
}

/// `FeatherMask`: each edge's first `n` rows or columns scaled by (k + 1)/n, in ComfyUI's
/// order (left, right, top, bottom, so corners are scaled twice).
fn feather_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let output = masks(i.tensor("mask")?).copy();
    let (h, w) = (output.size()[1], output.size()[2]);
    let (left, right) = (i.int("left")?.min(w), i.int("right")?.min(w));
    let (top, bottom) = (i.int("top")?.min(h), i.int("bottom")?.min(h));
    for x in 0..left {
        let _ = output
            .select(2, x)
            .f_mul_scalar_((x as f64 + 1.0) / left as f64);
    }
    for x in 0..right {
        let _ = output
            .select(2, w - 1 - x)
            .f_mul_scalar_((x + 1) as f64 / right as f64);
    }
    for y in 0..top {
        let _ = output
            .select(1, y)
            .f_mul_scalar_((y + 1) as f64 / top as f64);
    }
    for y in 0..bottom {
        let _ = output
            .select(1, h - 1 - y)
            .f_mul_scalar_((y + 1) as f64 / bottom as f64);
    }
    out(output)
}

/// `GrowMask`: `expand` greyscale dilations (erosions when negative) with a 3×3 cross, or a
/// full square without `tapered_corners`; edges reflect as in scipy's `grey_dilation`.
fn grow_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    let mut mask = masks(i.tensor("mask")?).to_kind(Kind::Float).unsqueeze(1);
    let expand = i.int("expand")?;
    let square = !i.boolean("tapered_corners")?;
    for _ in 0..expand.unsigned_abs() {
        // scipy's default `reflect` mode repeats the edge pixel.
        let padded = mask.replication_pad2d([1, 1, 1, 1]);
        let (h, w) = (mask.size()[2], mask.size()[3]);
        let mut taps = vec![];
        for (dy, dx) in [
            (-1i64, -1i64),
            (-1, 0),
            (-1, 1),
            (0, -1),
            (0, 0),
            (0, 1),
            (1, -1),
            (1, 0),
            (1, 1),
        ] {
            if !square && dy != 0 && dx != 0 {
                continue;
            }
            taps.push(padded.narrow(2, 1 + dy, h).narrow(3, 1 + dx, w));
        }
        let stacked = Tensor::stack(&taps, 0);
        mask = if expand < 0 {
            stacked.amin([0i64].as_slice(), false)
        } else {
            stacked.amax([0i64].as_slice(), false)
        };
    }
    out(mask.squeeze_dim(1))
}

fn threshold_mask(i: &Inputs, _: &ExecContext) -> NodeResult {
    out(i.tensor("mask")?.gt(i.float("value")?).to_kind(Kind::Float))
}

/// `MaskPreview`: the masks saved as grey preview images; the mask passes through.
fn mask_preview(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let mask = i.tensor("mask")?;
    let s = mask.size();
    let images = mask
        .reshape([-1, 1, s[s.len() - 2], s[s.len() - 1]])
        .movedim(1, -1)
        .expand([-1, -1, -1, 3], false)
        .contiguous();
    Ok(NodeOutput {
        values: vec![Value::tensor(mask.shallow_clone())],
        ui: Some(preview_ui(&images, ctx)?),
    })
}

pub fn register(r: &mut Registry) {
    let dim = |name: &str| {
        InputDef::int(name)
            .default(512)
            .min(1)
            .max(MAX_RESOLUTION)
            .step(1)
    };
    r.add(
        mask_node("MaskToImage", "Convert Mask to Image", mask_to_image)
            .aliases(&["convert mask"])
            .input(InputDef::new("mask", "MASK"))
            .output("IMAGE"),
    );
    r.add(
        mask_node("ImageToMask", "Convert Image to Mask", image_to_mask)
            .aliases(&["extract channel", "channel to mask"])
            .input(InputDef::new("image", "IMAGE"))
            .input(InputDef::combo(
                "channel",
                &["red", "green", "blue", "alpha"],
            ))
            .output("MASK"),
    );
    r.add(
        mask_node("SolidMask", "Create Solid Mask", solid)
            .input(
                InputDef::float("value")
                    .default_float(1.0)
                    .min_float(0.0)
                    .max_float(1.0)
                    .step_float(0.01),
            )
            .input(dim("width"))
            .input(dim("height"))
            .output("MASK"),
    );
    r.add(
        mask_node("InvertMask", "Invert Mask", invert)
            .aliases(&["reverse mask", "flip mask"])
            .input(InputDef::new("mask", "MASK"))
            .output("MASK"),
    );
    let at = |name: &str, step: i64| {
        InputDef::int(name)
            .default(0)
            .min(0)
            .max(MAX_RESOLUTION)
            .step(step)
    };
    let mask = || InputDef::new("mask", "MASK");
    r.add(
        mask_node(
            "LatentCompositeMasked",
            "Latent Composite Masked",
            latent_composite_masked,
        )
        .category("model/latent")
        .aliases(&[
            "overlay latent",
            "layer latent",
            "paste latent",
            "inpaint latent",
        ])
        .input(InputDef::new("destination", "LATENT"))
        .input(InputDef::new("source", "LATENT"))
        .input(at("x", 8))
        .input(at("y", 8))
        .input(InputDef::boolean("resize_source").default(false))
        .input(mask().optional())
        .output("LATENT"),
    );
    r.add(
        mask_node(
            "ImageCompositeMasked",
            "Image Composite Masked",
            image_composite_masked,
        )
        .category("image/compositing")
        .aliases(&["overlay", "layer", "paste image", "images composition"])
        .input(InputDef::new("destination", "IMAGE"))
        .input(InputDef::new("source", "IMAGE"))
        .input(at("x", 1))
        .input(at("y", 1))
        .input(InputDef::boolean("resize_source").default(false))
        .input(mask().optional())
        .output("IMAGE"),
    );
    r.add(
        mask_node(
            "ImageColorToMask",
            "Convert Image Color to Mask",
            image_color_to_mask,
        )
        .aliases(&["color keying", "chroma key"])
        .input(InputDef::new("image", "IMAGE"))
        .input(
            InputDef::int("color")
                .default(0)
                .min(0)
                .max(0xFFFFFF)
                .step(1)
                .opt("display", json!("number")),
        )
        .output("MASK"),
    );
    r.add(
        mask_node("CropMask", "Crop Mask", crop_mask)
            .aliases(&["cut mask", "extract mask region", "mask slice"])
            .input(mask())
            .input(at("x", 1))
            .input(at("y", 1))
            .input(dim("width"))
            .input(dim("height"))
            .output("MASK"),
    );
    r.add(
        mask_node("MaskComposite", "Combine Masks", mask_composite)
            .aliases(&[
                "combine masks",
                "blend masks",
                "layer masks",
                "masks composition",
            ])
            .input(InputDef::new("destination", "MASK"))
            .input(InputDef::new("source", "MASK"))
            .input(at("x", 1))
            .input(at("y", 1))
            .input(InputDef::combo(
                "operation",
                &["multiply", "add", "subtract", "and", "or", "xor"],
            ))
            .output("MASK"),
    );
    r.add(
        mask_node("FeatherMask", "Feather Mask", feather_mask)
            .aliases(&["soft edge mask", "blur mask edges", "gradient mask edge"])
            .input(mask())
            .input(at("left", 1))
            .input(at("top", 1))
            .input(at("right", 1))
            .input(at("bottom", 1))
            .output("MASK"),
    );
    r.add(
        mask_node("GrowMask", "Grow Mask", grow_mask)
            .aliases(&["expand mask", "shrink mask"])
            .input(mask())
            .input(
                InputDef::int("expand")
                    .default(0)
                    .min(-MAX_RESOLUTION)
                    .max(MAX_RESOLUTION)
                    .step(1),
            )
            .input(
                InputDef::boolean("tapered_corners")
                    .advanced()
                    .default(true),
            )
            .output("MASK"),
    );
    r.add(
        mask_node("ThresholdMask", "Threshold Mask", threshold_mask)
            .aliases(&["binary mask"])
            .input(mask())
            .input(
                InputDef::float("value")
                    .default_float(0.5)
                    .min_float(0.0)
                    .max_float(1.0)
                    .step_float(0.01),
            )
            .output("MASK"),
    );
    r.add(
        mask_node("MaskPreview", "Preview Mask", mask_preview)
            .aliases(&["show mask", "view mask", "inspect mask", "debug mask"])
            .description("Preview the masks without saving them to the ComfyUI output directory.")
            .input(mask())
            .input(InputDef::hidden("prompt", "PROMPT"))
            .input(InputDef::hidden("extra_pnginfo", "EXTRA_PNGINFO"))
            .named_output("MASK", "mask")
            .output_node(),
    );
}
