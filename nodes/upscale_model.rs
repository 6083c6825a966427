//! Upscale models (`comfy_extras/nodes_upscale_model.py`): UpscaleModelLoader and
//! ImageUpscaleWithModel, which runs the model over 512-pixel tiles and halves the tile after an
//! out-of-memory error, as ComfyUI does.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::loaders::{files, model_file};
use super::media_save::with_progress;
use crate::engine::context::ExecContext;
use crate::engine::executor::panic_message;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::models::upscale::{smaller_tile, tiles_per_image, UpscaleModel, TILE};

fn upscale_model_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "upscale_models", &i.string("model_name")?)?;
    let model = UpscaleModel::open(ctx.env.models.clone(), &path)?;
    Ok(NodeOutput::one(Value::object(Arc::new(model))))
}

fn image_upscale_with_model(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let model = i.object::<Arc<UpscaleModel>>("upscale_model")?;
    let image = i.tensor("image")?;
    let size = image.size();
    let mut tile = TILE;
    loop {
        let total = size[0] as u64 * tiles_per_image(size[2], size[1], tile);
        let attempt = catch_unwind(AssertUnwindSafe(|| {
            with_progress(ctx, |report| {
                let mut done = 0;
                model.upscale(image, tile, &mut || {
                    done += 1;
                    report(done, total)
                })
            })
        }));
        match attempt {
            Ok(upscaled) => return Ok(NodeOutput::one(Value::tensor(upscaled?))),
            Err(panic) => {
                let out_of_memory = panic_message(panic.as_ref()).contains("out of memory");
                match smaller_tile(tile) {
                    Some(next) if out_of_memory => tile = next,
                    _ => resume_unwind(panic),
                }
            }
        }
    }
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, display: &str, category: &str, f| {
        NodeDef::builtin(name, Style::V3, display, category, f)
            .module("comfy_extras.nodes_upscale_model")
    };
    r.add(
        node(
            "UpscaleModelLoader",
            "Load Upscale Model",
            "model/loaders",
            upscale_model_loader,
        )
        .input(InputDef::combo_dynamic(
            "model_name",
            files("upscale_models"),
        ))
        .output("UPSCALE_MODEL"),
    );
    r.add(
        node(
            "ImageUpscaleWithModel",
            "Upscale Image (using Model)",
            "image/upscaling",
            image_upscale_with_model,
        )
        .aliases(&[
            "upscale",
            "upscaler",
            "upsc",
            "enlarge image",
            "super resolution",
            "hires",
            "superres",
            "increase resolution",
        ])
        .input(InputDef::new("upscale_model", "UPSCALE_MODEL"))
        .input(InputDef::new("image", "IMAGE"))
        .output("IMAGE"),
    );
}
