//! ResizeImageMaskNode (`comfy_extras/nodes_post_processing.py`, "Resize Image/Mask"): an image
//! `[B, H, W, C]` or a mask `[B, H, W]` resized by the rule its DynamicCombo chooses.

use std::sync::Arc;

use tch::Tensor;

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

pub fn register(r: &mut Registry) {
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
}
