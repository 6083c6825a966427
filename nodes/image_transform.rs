//! The image transform and scaling nodes: ResizeImageMaskNode (`comfy_extras/
//! nodes_post_processing.py`, "Resize Image/Mask"), an image `[B, H, W, C]` or a mask `[B, H, W]`
//! resized by the rule its DynamicCombo chooses, and ImageScaleToTotalPixels; ImageStitch, two
//! images side by side, ResizeAndPadImage and ImageScaleToMaxDimension (`nodes_images.py`).

use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{
    InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style, MAX_RESOLUTION,
};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::upscale::common_upscale;

const METHODS: [&str; 5] = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];

/// The input as `[B, C, H, W]`, and whether it was an image.
fn planes(input: &Tensor) -> (Tensor, bool) {
    if input.dim() == 4 {
        (input.movedim(-1, 1), true)
    } else {
        (input.unsqueeze(1), false)
    }
}

fn back(planes: Tensor, image: bool) -> Tensor {
    if image {
        planes.movedim(1, -1).contiguous()
    } else {
        planes.squeeze_dim(1)
    }
}

/// Height and width of an image `[B, H, W, C]` or a mask `[B, H, W]`.
fn hw(t: &Tensor) -> (f64, f64) {
    let s = t.size();
    (s[1] as f64, s[2] as f64)
}

/// Python's `round`.
fn round(v: f64) -> i64 {
    v.round_ties_even() as i64
}

fn upscaled(
    input: &Tensor,
    (w, h): (i64, i64),
    method: &str,
    crop: &str,
) -> Result<Tensor, NodeError> {
    if w < 1 || h < 1 {
        return Err(NodeError::value(format!("cannot resize to {w}×{h}")));
    }
    let (p, image) = planes(input);
    Ok(back(common_upscale(&p, w, h, method, crop)?, image))
}

/// `scale_to_multiple_cover`: scaled to cover the size rounded down to `multiple`, then the
/// middle cut out.
fn to_multiple(input: &Tensor, multiple: i64, method: &str) -> Result<Tensor, NodeError> {
    let (h, w) = hw(input);
    let (h, w) = (h as i64, w as i64);
    let (tw, th) = (w / multiple * multiple, h / multiple * multiple);
    if multiple <= 1 || tw == 0 || th == 0 || (tw == w && th == h) {
        return Ok(input.shallow_clone());
    }
    let (sw, sh) = (tw as f64 / w as f64, th as f64 / h as f64);
    let (scaled_w, scaled_h) = if sw >= sh {
        (tw, ((h as f64 * sw).ceil() as i64).max(th))
    } else {
        (((w as f64 * sh).ceil() as i64).max(tw), th)
    };
    let out = upscaled(input, (scaled_w, scaled_h), method, "disabled")?;
    let (x0, y0) = ((scaled_w - tw) / 2, (scaled_h - th) / 2);
    // Rows and columns are axes 1 and 2 of both images and masks.
    Ok(out.narrow(1, y0, th).narrow(2, x0, tw))
}

fn resize(i: &Inputs, _: &ExecContext) -> NodeResult {
    let input = i.tensor("input")?;
    let method = i.string("scale_method")?;
    let kind = i.string("resize_type")?;
    let arg = |name: &str| format!("resize_type.{name}");
    let (h, w) = hw(input);
    let out = match kind.as_str() {
        "scale by multiplier" => {
            let m = i.float(&arg("multiplier"))?;
            upscaled(input, (round(w * m), round(h * m)), &method, "disabled")?
        }
        "scale dimensions" | "scale width" | "scale height" => {
            let get = |name: &str| -> Result<i64, NodeError> {
                if kind == "scale dimensions" || kind.ends_with(name) {
                    i.int(&arg(name))
                } else {
                    Ok(0)
                }
            };
            let (width, height) = (get("width")?, get("height")?);
            let crop = if kind == "scale dimensions" {
                i.string(&arg("crop"))?
            } else {
                "disabled".into()
            };
            match (width, height) {
                (0, 0) => input.shallow_clone(),
                (0, height) => {
                    let width = round(w * height as f64 / h).max(1);
                    upscaled(input, (width, height), &method, &crop)?
                }
                (width, 0) => {
                    let height = round(h * width as f64 / w).max(1);
                    upscaled(input, (width, height), &method, &crop)?
                }
                size => upscaled(input, size, &method, &crop)?,
            }
        }
        "scale longer dimension" | "scale shorter dimension" => {
            let longer = kind == "scale longer dimension";
            let size = i.int(&arg(if longer {
                "longer_size"
            } else {
                "shorter_size"
            }))?;
            let width_first = if longer { w > h } else { w < h };
            let height_first = if longer { h > w } else { h < w };
            let target = if height_first {
                (round(w / h * size as f64), size)
            } else if width_first {
                (size, round(h / w * size as f64))
            } else {
                (size, size)
            };
            upscaled(input, target, &method, "disabled")?
        }
        "scale total pixels" => {
            let total = (i.float(&arg("megapixels"))? * 1024.0 * 1024.0) as i64;
            let scale = (total as f64 / (w * h)).sqrt();
            upscaled(
                input,
                (round(w * scale), round(h * scale)),
                &method,
                "disabled",
            )?
        }
        "match size" => {
            let reference = i.tensor(&arg("match"))?;
            let (mh, mw) = hw(reference);
            let crop = i.string(&arg("crop"))?;
            upscaled(input, (mw as i64, mh as i64), &method, &crop)?
        }
        "scale to multiple" => to_multiple(input, i.int(&arg("multiple"))?, &method)?,
        other => {
            return Err(NodeError::value(format!(
                "Unsupported resize type: {other}"
            )))
        }
    };
    Ok(NodeOutput::one(Value::tensor(out)))
}

/// The last image repeated until the batch holds `n`.
fn fill_batch(images: &Tensor, n: i64) -> Tensor {
    let b = images.size()[0];
    if b >= n {
        return images.shallow_clone();
    }
    let last = images.narrow(0, b - 1, 1).repeat([n - b, 1, 1, 1]);
    Tensor::cat(&[images.shallow_clone(), last], 0)
}

/// `amount` split as ComfyUI pads: the smaller half first.
fn halves(amount: i64) -> (i64, i64) {
    (amount / 2, amount - amount / 2)
}

/// `ImageStitch`: image2 beside image1 (`right`, `left`) or above/below it, its size matched
/// (Lanczos, keeping its aspect) or the other axis padded with the spacing colour's value,
/// channels evened with opaque alpha, an optional bar of `spacing_color` between.
fn stitch(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image1 = i.tensor("image1")?;
    let Some(image2) = i.opt_tensor("image2") else {
        return Ok(NodeOutput::one(Value::tensor(image1.shallow_clone())));
    };
    let direction = i.string("direction")?;
    let horizontal = matches!(direction.as_str(), "left" | "right");
    let batch = image1.size()[0].max(image2.size()[0]);
    let (mut a, mut b) = (fill_batch(image1, batch), fill_batch(image2, batch));
    let colour: [f64; 3] = match i.string("spacing_color")?.as_str() {
        "black" => [0.0; 3],
        "red" => [1.0, 0.0, 0.0],
        "green" => [0.0, 1.0, 0.0],
        "blue" => [0.0, 0.0, 1.0],
        _ => [1.0; 3],
    };
    // Padding takes the colour only when it is grey (ComfyUI pads with 0 for the others).
    let grey = colour.iter().all(|c| *c == colour[0]);
    let pad_value = if grey { colour[0] } else { 0.0 };
    let (h1, w1) = (a.size()[1], a.size()[2]);
    let (h2, w2) = (b.size()[1] as f64, b.size()[2] as f64);
    if i.boolean("match_image_size")? {
        let aspect = w2 / h2;
        let (tw, th) = if horizontal {
            ((h1 as f64 * aspect) as i64, h1)
        } else {
            (w1, (w1 as f64 / aspect) as i64)
        };
        if tw < 1 || th < 1 {
            return Err(NodeError::value(format!(
                "cannot match image2 to {tw}×{th}"
            )));
        }
        b = common_upscale(&b.movedim(-1, 1), tw, th, "lanczos", "disabled")?.movedim(1, -1);
    } else {
        let axis = if horizontal { 1 } else { 2 };
        let target = a.size()[axis].max(b.size()[axis]);
        let pad = |t: &Tensor| {
            let (before, after) = halves(target - t.size()[axis]);
            let spec: Vec<i64> = if horizontal {
                vec![0, 0, 0, 0, before, after]
            } else {
                vec![0, 0, before, after]
            };
            t.pad(spec.as_slice(), "constant", pad_value)
        };
        a = pad(&a);
        b = pad(&b);
    }
    let channels = a.size()[3].max(b.size()[3]);
    let widen = |t: Tensor| {
        let c = t.size()[3];
        if c >= channels {
            return t;
        }
        let s = t.size();
        let ones = Tensor::ones([s[0], s[1], s[2], channels - c], (t.kind(), t.device()));
        Tensor::cat(&[t, ones], 3)
    };
    let (a, b) = (widen(a), widen(b));
    let mut parts = if matches!(direction.as_str(), "left" | "up") {
        vec![b.shallow_clone(), a.shallow_clone()]
    } else {
        vec![a.shallow_clone(), b.shallow_clone()]
    };
    let spacing = i.int("spacing_width")?;
    if spacing > 0 {
        let spacing = spacing + spacing % 2;
        let shape = if horizontal {
            [batch, a.size()[1].max(b.size()[1]), spacing, channels]
        } else {
            [batch, spacing, a.size()[2].max(b.size()[2]), channels]
        };
        let bar = Tensor::zeros(shape, (a.kind(), a.device()));
        for (c, v) in colour.iter().enumerate().take(channels.min(3) as usize) {
            let _ = bar.select(3, c as i64).fill_(*v);
        }
        if channels == 4 {
            let _ = bar.select(3, 3).fill_(1.0);
        }
        parts.insert(1, bar);
    }
    let axis = if horizontal { 2 } else { 1 };
    let joined = Tensor::f_cat(&parts, axis).map_err(|_| {
        NodeError::runtime("the images do not line up (give them the same size or match it)")
    })?;
    Ok(NodeOutput::one(Value::tensor(joined)))
}

/// An image `[B, H, W, C]` scaled to `(w, h)` without cropping.
fn scaled(image: &Tensor, (w, h): (i64, i64), method: &str) -> Result<Tensor, NodeError> {
    upscaled(image, (w, h), method, "disabled")
}

/// `ImageScaleToTotalPixels`: about `megapixels` of pixels, keeping the aspect, each side a
/// multiple of `resolution_steps`.
fn scale_to_total_pixels(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let (h, w) = hw(image);
    let total = i.float("megapixels")? * 1024.0 * 1024.0;
    let steps = i.int("resolution_steps")? as f64;
    let scale = (total / (w * h)).sqrt();
    let side = |v: f64| round(v * scale / steps) * steps as i64;
    let out = scaled(image, (side(w), side(h)), &i.string("upscale_method")?)?;
    Ok(NodeOutput::one(Value::tensor(out)))
}

/// `ImageScaleToMaxDimension`: the longer side to `largest_size`, keeping the aspect.
fn scale_to_max_dimension(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let (h, w) = hw(image);
    let size = i.int("largest_size")?;
    let target = if h > w {
        (round(w / h * size as f64), size)
    } else if w > h {
        (size, round(h / w * size as f64))
    } else {
        (size, size)
    };
    let out = scaled(image, target, &i.string("upscale_method")?)?;
    Ok(NodeOutput::one(Value::tensor(out)))
}

/// `ResizeAndPadImage`: scaled to fit the target keeping the aspect, centred on white or black.
fn resize_and_pad(i: &Inputs, _: &ExecContext) -> NodeResult {
    let image = i.tensor("image")?;
    let (h, w) = hw(image);
    let (tw, th) = (i.int("target_width")?, i.int("target_height")?);
    let scale = (tw as f64 / w).min(th as f64 / h);
    let (nw, nh) = ((w * scale) as i64, (h * scale) as i64);
    let resized = scaled(image, (nw, nh), &i.string("interpolation")?)?;
    let value = if i.string("padding_color")? == "black" {
        0.0
    } else {
        1.0
    };
    let s = image.size();
    let padded = Tensor::full([s[0], th, tw, s[3]], value, (Kind::Float, image.device()));
    let (y, x) = ((th - nh) / 2, (tw - nw) / 2);
    padded
        .narrow(1, y, nh)
        .narrow(2, x, nw)
        .copy_(&resized.to_kind(Kind::Float));
    Ok(NodeOutput::one(Value::tensor(padded)))
}

/// ImageRotate: quarter turns clockwise (`torch.rot90` from width towards height).
fn rotate(i: &Inputs, _: &ExecContext) -> NodeResult {
    let rotation = i.string("rotation")?;
    let turns = ["90", "180", "270"]
        .iter()
        .position(|p| rotation.starts_with(p))
        .map_or(0, |n| n as i64 + 1);
    let image = i.tensor("image")?;
    Ok(NodeOutput::one(Value::tensor(image.rot90(turns, [2, 1]))))
}

/// ImageFlip: `x-axis` flips top to bottom, `y-axis` left to right.
fn flip(i: &Inputs, _: &ExecContext) -> NodeResult {
    let method = i.string("flip_method")?;
    let image = i.tensor("image")?;
    let flipped = if method.starts_with('x') {
        image.flip([1])
    } else if method.starts_with('y') {
        image.flip([2])
    } else {
        image.shallow_clone()
    };
    Ok(NodeOutput::one(Value::tensor(flipped)))
}

pub fn register(r: &mut Registry) {
    let transform = |name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult| {
        NodeDef::builtin(name, Style::V3, display, "image/transform", f)
            .module("comfy_extras.nodes_images")
    };
    r.add(
        transform("ImageRotate", "Rotate Image", rotate)
            .aliases(&["turn", "flip orientation"])
            .essentials("Image Tools")
            .input(InputDef::new("image", "IMAGE"))
            .input(InputDef::combo(
                "rotation",
                &["none", "90 degrees", "180 degrees", "270 degrees"],
            ))
            .output("IMAGE"),
    );
    r.add(
        transform("ImageFlip", "Flip Image", flip)
            .aliases(&["mirror", "reflect"])
            .input(InputDef::new("image", "IMAGE"))
            .input(InputDef::combo(
                "flip_method",
                &["x-axis: vertically", "y-axis: horizontally"],
            ))
            .output("IMAGE"),
    );
    let upscaling = |name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult| {
        NodeDef::new(name, Style::V3, Arc::new(f))
            .display(display)
            .category("image/upscaling")
    };
    r.add(
        upscaling(
            "ImageScaleToTotalPixels",
            "Scale Image to Total Pixels",
            scale_to_total_pixels,
        )
        .module("comfy_extras.nodes_post_processing")
        .input(InputDef::new("image", "IMAGE"))
        .input(InputDef::combo("upscale_method", &METHODS))
        .input(
            InputDef::float("megapixels")
                .default_float(1.0)
                .min_float(0.01)
                .max_float(16.0)
                .step_float(0.01),
        )
        .input(
            InputDef::int("resolution_steps")
                .opt("advanced", serde_json::json!(true))
                .default(1)
                .min(1)
                .max(256),
        )
        .output("IMAGE"),
    );
    r.add(
        upscaling(
            "ImageScaleToMaxDimension",
            "Scale Image to Max Dimension",
            scale_to_max_dimension,
        )
        .module("comfy_extras.nodes_images")
        .input(InputDef::new("image", "IMAGE"))
        .input(InputDef::combo(
            "upscale_method",
            &[
                "area",
                "lanczos",
                "bilinear",
                "nearest-exact",
                "bilinear",
                "bicubic",
            ],
        ))
        .input(
            InputDef::int("largest_size")
                .default(512)
                .min(0)
                .max(MAX_RESOLUTION)
                .step(1),
        )
        .output("IMAGE"),
    );
    r.add(
        NodeDef::new("ResizeAndPadImage", Style::V3, Arc::new(resize_and_pad))
            .display("Resize And Pad Image")
            .category("image/transform")
            .module("comfy_extras.nodes_images")
            .aliases(&["fit to size"])
            .input(InputDef::new("image", "IMAGE"))
            .input(
                InputDef::int("target_width")
                    .default(512)
                    .min(1)
                    .max(MAX_RESOLUTION)
                    .step(1),
            )
            .input(
                InputDef::int("target_height")
                    .default(512)
                    .min(1)
                    .max(MAX_RESOLUTION)
                    .step(1),
            )
            .input(
                InputDef::combo("padding_color", &["white", "black"])
                    .opt("advanced", serde_json::json!(true)),
            )
            .input(
                InputDef::combo(
                    "interpolation",
                    &["area", "bicubic", "nearest-exact", "bilinear", "lanczos"],
                )
                .opt("advanced", serde_json::json!(true)),
            )
            .output("IMAGE"),
    );
    let size = |name: &str, tooltip: &str| {
        InputDef::int(name)
            .tooltip(tooltip)
            .default(512)
            .min(0)
            .max(MAX_RESOLUTION)
            .step(1)
    };
    let crop = || {
        InputDef::combo("crop", &["disabled", "center"])
            .tooltip(
                "How to handle aspect ratio mismatch: 'disabled' stretches to fit, 'center' crops \
                 to maintain aspect ratio.",
            )
            .default("center")
    };
    let options = vec![
        (
            "scale dimensions",
            vec![
                size("width", "Target width in pixels. Set to 0 to auto-calculate from height while preserving aspect ratio."),
                size("height", "Target height in pixels. Set to 0 to auto-calculate from width while preserving aspect ratio."),
                crop(),
            ],
        ),
        (
            "scale by multiplier",
            vec![InputDef::float("multiplier")
                .tooltip("Scale factor (e.g., 2.0 doubles size, 0.5 halves size).")
                .default_float(1.0)
                .min_float(0.01)
                .max_float(8.0)
                .step_float(0.01)],
        ),
        (
            "scale longer dimension",
            vec![size("longer_size", "The longer edge will be resized to this value. Aspect ratio is preserved.")],
        ),
        (
            "scale shorter dimension",
            vec![size("shorter_size", "The shorter edge will be resized to this value. Aspect ratio is preserved.")],
        ),
        (
            "scale width",
            vec![size("width", "Target width in pixels. Height auto-adjusts to preserve aspect ratio.")],
        ),
        (
            "scale height",
            vec![size("height", "Target height in pixels. Width auto-adjusts to preserve aspect ratio.")],
        ),
        (
            "scale total pixels",
            vec![InputDef::float("megapixels")
                .tooltip("Target total megapixels (e.g., 1.0 ≈ 1024×1024). Aspect ratio is preserved.")
                .default_float(1.0)
                .min_float(0.01)
                .max_float(16.0)
                .step_float(0.01)],
        ),
        (
            "match size",
            vec![
                InputDef::new("match", "IMAGE,MASK").tooltip(
                    "Resize input to match the dimensions of this reference image or mask.",
                ),
                crop(),
            ],
        ),
        (
            "scale to multiple",
            vec![InputDef::int("multiple")
                .tooltip("Resize so width and height are divisible by this number. Useful for latent alignment (e.g., 8 or 64).")
                .default(8)
                .min(1)
                .max(MAX_RESOLUTION)
                .step(1)],
        ),
    ];
    r.add(
        NodeDef::new("ResizeImageMaskNode", Style::V3, Arc::new(resize))
            .display("Resize Image/Mask")
            .description("Resize an image or mask using various scaling methods.")
            .category("image/transform")
            .module("comfy_extras.nodes_post_processing")
            .aliases(&[
                "resize",
                "resize image",
                "resize mask",
                "scale",
                "scale image",
                "scale mask",
                "image resize",
                "change size",
                "dimensions",
                "shrink",
                "enlarge",
            ])
            .input(InputDef::match_type_of("input", "input_type", "IMAGE,MASK"))
            .input(InputDef::dynamic_combo("resize_type", options).tooltip(
                "Select how to resize: by exact dimensions, scale factor, matching another \
                     image, etc.",
            ))
            .input(
                InputDef::combo("scale_method", &METHODS)
                    .tooltip(
                        "Interpolation algorithm. 'area' is best for downscaling, 'lanczos' for \
                         upscaling, 'nearest-exact' for pixel art.",
                    )
                    .default("area"),
            )
            .match_type_output("input_type", "resized"),
    );
    r.add(
        NodeDef::new("ImageStitch", Style::V3, Arc::new(stitch))
            .display("Stitch Images")
            .description(
                "Stitches image2 to image1 in the specified direction.\nIf image2 is not \
                 provided, returns image1 unchanged.\nOptional spacing can be added between \
                 images.",
            )
            .category("image/transform")
            .module("comfy_extras.nodes_images")
            .aliases(&[
                "combine images",
                "join images",
                "concatenate images",
                "side by side",
            ])
            .input(InputDef::new("image1", "IMAGE"))
            .input(InputDef::combo("direction", &["right", "down", "left", "up"]).default("right"))
            .input(InputDef::boolean("match_image_size").default(true))
            .input(
                InputDef::int("spacing_width")
                    .opt("advanced", serde_json::json!(true))
                    .default(0)
                    .min(0)
                    .max(1024)
                    .step(2),
            )
            .input(
                InputDef::combo("spacing_color", &["white", "black", "red", "green", "blue"])
                    .opt("advanced", serde_json::json!(true))
                    .default("white"),
            )
            .input(InputDef::new("image2", "IMAGE").optional())
            .output("IMAGE"),
    );
}
