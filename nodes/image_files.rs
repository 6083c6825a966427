//! Nodes that read and write image files: LoadImage, LoadImageMask, SaveImage, PreviewImage.

use std::fs;
use std::sync::Arc;

use rand::Rng;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::engine::context::{ExecContext, NodeEnv};
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::imageio;

fn input_images(env: &NodeEnv) -> Vec<String> {
    env.paths.input_images()
}

/// Upstream's LoadImage: the file's frames as FFmpeg decodes them (PyAV's `VideoFromFile`,
/// every frame of an animation), EXIF-oriented, with the mask 1 − alpha, or zeros `[B, 64, 64]`
/// without alpha. What FFmpeg cannot read goes through the image decoder, as upstream falls
/// back to PIL.
fn load_input(i: &Inputs, ctx: &ExecContext) -> Result<(Tensor, Tensor), NodeError> {
    let name = i.string("image")?;
    let path = ctx
        .env
        .paths
        .annotated_input_path(&name)
        .ok_or_else(|| NodeError::value(format!("Invalid image file: {name}")))?;
    if let Ok(decoded) = crate::media::decode::read(&path, true) {
        if let Some((frames, _)) = decoded.frames {
            let orient = |t: Tensor| imageio::oriented_like_file(&path, t);
            let images = orient(frames);
            let mask = match decoded.alpha {
                Some(alpha) => 1.0 - orient(alpha).squeeze_dim(-1),
                None => Tensor::zeros([images.size()[0], 64, 64], (Kind::Float, Device::Cpu)),
            };
            return Ok((images, mask));
        }
    }
    let img = imageio::open(&path)
        .map_err(|e| NodeError::new("PIL.UnidentifiedImageError", format!("{e:#}")))?;
    Ok(imageio::image_and_mask(&img))
}

/// ComfyUI's `IS_CHANGED` for loaders: the file's sha256, so edits re-run the node.
fn file_hash(i: &Inputs, env: &NodeEnv) -> Option<Json> {
    let name = i.string("image").ok()?;
    let bytes = fs::read(env.paths.annotated_input_path(&name)?).ok()?;
    Some(json!(format!("{:x}", Sha256::digest(bytes))))
}

fn image_exists(i: &Inputs, env: &NodeEnv) -> Result<(), String> {
    let name = i
        .string("image")
        .map_err(|_| "Invalid image file: None".to_string())?;
    match env.paths.annotated_input_path(&name) {
        Some(p) if p.is_file() => Ok(()),
        _ => Err(format!("Invalid image file: {name}")),
    }
}

fn load_image(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let (image, mask) = load_input(i, ctx)?;
    Ok(NodeOutput::values(vec![
        Value::tensor(image),
        Value::tensor(mask),
    ]))
}

/// Upstream's LoadImageMask: `alpha` is LoadImage's mask; a colour is that channel of the image.
fn load_image_mask(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let (image, mask) = load_input(i, ctx)?;
    let channel = match i.string("channel")?.to_uppercase().chars().next() {
        Some('A') => return Ok(NodeOutput::one(Value::tensor(mask))),
        Some('G') => 1,
        Some('B') => 2,
        _ => 0,
    };
    Ok(NodeOutput::one(Value::tensor(image.select(-1, channel))))
}

/// Writes each image of the batch and returns ComfyUI's `{"ui": {"images": [...]}}`.
fn save(i: &Inputs, ctx: &ExecContext, kind: &str, prefix: String, fast: bool) -> NodeResult {
    let images = i.tensor("images")?;
    let ui = write_images(images, ctx, kind, &prefix, fast)?;
    Ok(NodeOutput {
        values: vec![Value::tensor(images.shallow_clone())],
        ui: Some(ui),
    })
}

/// Writes each image of the batch under `kind`'s folder; the `images` UI records.
fn write_images(
    images: &Tensor,
    ctx: &ExecContext,
    kind: &str,
    prefix: &str,
    fast: bool,
) -> Result<Map<String, Json>, NodeError> {
    let size = images.size();
    if size.len() != 4 {
        return Err(NodeError::value(format!(
            "images must have shape [B, H, W, C], got {size:?}"
        )));
    }
    let target = super::media_save::save_target(ctx, kind, prefix, (size[2], size[1]))?;
    let chunks = if ctx.env.disable_metadata {
        Vec::new()
    } else {
        imageio::metadata_chunks(Some(ctx.prompt), ctx.extra_pnginfo)
    };
    let mut results = Vec::new();
    for (n, image) in images.unbind(0).iter().enumerate() {
        ctx.check_interrupt()?;
        let stem = target.filename.replace("%batch_num%", &n.to_string());
        let file = format!("{stem}_{:05}_.png", target.counter + n as u64);
        imageio::save_png(&target.folder.join(&file), image, &chunks, fast)?;
        results.push(json!({"filename": file, "subfolder": target.subfolder, "type": kind}));
    }
    let mut ui = Map::new();
    ui.insert("images".into(), Json::Array(results));
    Ok(ui)
}

fn save_image(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    save(i, ctx, "output", i.string("filename_prefix")?, false)
}

/// ComfyUI's preview prefix: `ComfyUI_temp_` and five random letters (its alphabet has no w).
fn temp_prefix() -> String {
    temp_prefix_for("ComfyUI")
}

/// PreviewImage's prefix: `filename_prefix` and `_temp_` with five random letters.
fn temp_prefix_for(filename_prefix: &str) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstupvxyz";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| LETTERS[rng.gen_range(0..LETTERS.len())] as char)
        .collect();
    format!("{filename_prefix}_temp_{suffix}")
}

fn preview_image(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    save(i, ctx, "temp", temp_prefix(), true)
}

/// `PreviewImage().save_images(images, filename_prefix)`: the written images' UI records.
pub(super) fn preview_records(
    images: &Tensor,
    ctx: &ExecContext,
    filename_prefix: &str,
) -> Result<Json, NodeError> {
    let mut ui = write_images(images, ctx, "temp", &temp_prefix_for(filename_prefix), true)?;
    Ok(ui.remove("images").unwrap_or(Json::Array(Vec::new())))
}

/// The images written as a preview (`UI.PreviewImage`): the `images` UI records.
pub(super) fn preview_ui(
    images: &Tensor,
    ctx: &ExecContext,
) -> Result<Map<String, Json>, NodeError> {
    write_images(images, ctx, "temp", &temp_prefix(), true)
}

pub fn register(r: &mut Registry) {
    let upload_combo = || {
        InputDef::combo_dynamic("image", Arc::new(input_images)).opt("image_upload", json!(true))
    };
    let hidden = |d: NodeDef| {
        d.input(InputDef::hidden("prompt", "PROMPT"))
            .input(InputDef::hidden("extra_pnginfo", "EXTRA_PNGINFO"))
    };
    r.add(
        NodeDef::new("LoadImage", Style::V1, Arc::new(load_image))
            .display("Load Image")
            .category("image")
            .essentials("Basics")
            .aliases(&[
                "load image",
                "open image",
                "import image",
                "image input",
                "upload image",
                "read image",
                "image loader",
            ])
            .input(upload_combo())
            .output("IMAGE")
            .output("MASK")
            .is_changed(Arc::new(file_hash))
            .validator(Some(&["image"]), Arc::new(image_exists)),
    );
    // Its choices come from the frontend (the remote `/internal/files/output` list); names carry
    // an ` [output]` annotation, which the loader resolves.
    let mut from_output = NodeDef::new("LoadImageOutput", Style::V1, Arc::new(load_image))
        .display("Load Image (from Outputs)")
        .category("image")
        .essentials("Basics")
        .description(
            "Load an image from the output folder. When the refresh button is clicked, the node \
             will update the image list and automatically select the first image, allowing for \
             easy iteration.",
        )
        .aliases(&["output image", "previous generation"])
        .input(
            InputDef::new("image", "COMBO")
                .opt("image_upload", json!(true))
                .opt("image_folder", json!("output"))
                .opt(
                    "remote",
                    json!({"route": "/internal/files/output", "refresh_button": true,
                           "control_after_refresh": "first"}),
                ),
        )
        .output("IMAGE")
        .output("MASK")
        .is_changed(Arc::new(file_hash))
        .validator(Some(&["image"]), Arc::new(image_exists));
    from_output.experimental = true;
    r.add(from_output);
    r.add(
        NodeDef::new("LoadImageMask", Style::V1, Arc::new(load_image_mask))
            .display("Load Image (as Mask)")
            .category("image")
            .essentials("Image Tools")
            .aliases(&["import mask", "alpha mask", "channel mask"])
            .input(upload_combo())
            .input(InputDef::combo(
                "channel",
                &["alpha", "red", "green", "blue"],
            ))
            .output("MASK")
            .is_changed(Arc::new(file_hash))
            .validator(Some(&["image"]), Arc::new(image_exists)),
    );
    r.add(hidden(
        NodeDef::new("SaveImage", Style::V1, Arc::new(save_image))
            .display("Save Image")
            .category("image")
            .essentials("Basics")
            .description("Saves the input images to your ComfyUI output directory.")
            .aliases(&[
                "save",
                "save image",
                "export image",
                "output image",
                "write image",
                "download",
            ])
            .input(InputDef::new("images", "IMAGE").tooltip("The images to save."))
            .input(InputDef::string("filename_prefix").default("ComfyUI").tooltip(
                "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
            ))
            .named_output("IMAGE", "images")
            .output_node(),
    ));
    r.add(hidden(
        NodeDef::new("PreviewImage", Style::V1, Arc::new(preview_image))
            .display("Preview Image")
            .category("image")
            .essentials("Basics")
            .description("Preview the images without saving them to the ComfyUI output directory.")
            .aliases(&[
                "preview",
                "preview image",
                "show image",
                "view image",
                "display image",
                "image viewer",
            ])
            .input(InputDef::new("images", "IMAGE"))
            .named_output("IMAGE", "images")
            .output_node(),
    ));
}
