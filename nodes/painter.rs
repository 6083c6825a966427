//! Painter (`comfy_extras/nodes_painter.py`): the frontend's painting canvas, uploaded as an
//! RGBA file, composited over a base image (or a plain background) and given as an image and
//! its alpha as a mask.

use std::fs;
use std::sync::Arc;

use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

use super::image_files::preview_ui;
use crate::engine::context::{ExecContext, NodeEnv};
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::imageio;

/// `hex_to_rgb`: `#rrggbb` in 0..1, black for anything else.
fn hex_to_rgb(hex: &str) -> [f64; 3] {
    let hex = hex.trim_start_matches('#');
    let channel = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
    match (hex.len(), channel(0), channel(2), channel(4)) {
        (6, Some(r), Some(g), Some(b)) => [r, g, b].map(|c| f64::from(c) / 255.0),
        _ => [0.0; 3],
    }
}

/// The painting's file, when the widget names one.
fn painting(i: &Inputs) -> Option<String> {
    let name = i.string("mask").ok()?;
    (!name.trim().is_empty()).then_some(name)
}

fn painter(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let cpu = (Kind::Float, tch::Device::Cpu);
    let base = match i.opt_tensor("image") {
        Some(image) => image.narrow(0, 0, 1).to_kind(Kind::Float),
        None => {
            let (w, h) = (i.int("width")?, i.int("height")?);
            let rgb = hex_to_rgb(&i.string("bg_color")?);
            let color = Tensor::from_slice(&rgb.map(|c| c as f32));
            Tensor::ones([1, h, w, 3], cpu) * color.view([1, 1, 1, 3])
        }
    };
    let (h, w) = (base.size()[1], base.size()[2]);
    let (image, mask) = match painting(i) {
        Some(name) => {
            let path = ctx
                .env
                .paths
                .annotated_input_path(&name)
                .ok_or_else(|| NodeError::value(format!("Invalid image file: {name}")))?;
            let img = imageio::open(&path)
                .map_err(|e| NodeError::new("PIL.UnidentifiedImageError", format!("{e:#}")))?;
            let rgba = img.to_rgba8();
            let (pw, ph) = rgba.dimensions();
            let rgba = crate::pil_resample::resize_lanczos(
                rgba.as_raw(),
                (pw as usize, ph as usize, 4),
                (w as usize, h as usize),
            )?;
            let paint = Tensor::from_slice(&rgba)
                .view([1, h, w, 4])
                .to_kind(Kind::Float)
                / 255.0;
            let (rgb, alpha) = (paint.narrow(3, 0, 3), paint.narrow(3, 3, 1));
            let composited = &rgb * &alpha + base.narrow(3, 0, 3) * (1.0 - &alpha);
            (composited, alpha.squeeze_dim(3))
        }
        None => (base.shallow_clone(), Tensor::zeros([1, h, w], cpu)),
    };
    let ui = preview_ui(&image, ctx)?;
    Ok(NodeOutput {
        values: vec![Value::tensor(image), Value::tensor(mask)],
        ui: Some(ui),
    })
}

/// `fingerprint_inputs`: the painting file's sha256, so a new painting re-runs the node.
fn painting_hash(i: &Inputs, env: &NodeEnv) -> Option<Json> {
    let bytes = fs::read(env.paths.annotated_input_path(&painting(i)?)?).ok()?;
    Some(json!(format!("{:x}", Sha256::digest(bytes))))
}

pub fn register(r: &mut Registry) {
    let hidden_size = |name: &str| {
        InputDef::int(name)
            .opt("hidden", json!(true))
            .default(512)
            .opt("socketless", json!(true))
            .min(64)
            .max(4096)
            .step(64)
    };
    let mut node = NodeDef::new("Painter", Style::V3, Arc::new(painter))
        .display("Painter")
        .category("image")
        .module("comfy_extras.nodes_painter")
        .input(
            InputDef::new("image", "IMAGE")
                .optional()
                .tooltip("Optional base image to paint over"),
        )
        .input(
            InputDef::string("mask")
                .opt("widgetType", json!("PAINTER"))
                .opt("image_upload", json!(true))
                .default("")
                .opt("socketless", json!(true)),
        )
        .input(hidden_size("width"))
        .input(hidden_size("height"))
        .input(
            InputDef::new("bg_color", "COLOR")
                .default("#000000")
                .opt("socketless", json!(true)),
        )
        .output("IMAGE")
        .output("MASK")
        .is_changed(Arc::new(painting_hash));
    node.has_intermediate_output = true;
    r.add(node);
}
