//! What the video and audio save nodes share: target paths, metadata, UI records, progress.

use std::cell::Cell;

use serde_json::{json, Map, Value as Json};

use crate::engine::context::ExecContext;
use crate::engine::node::NodeError;
use crate::paths::SaveTarget;
use crate::pyjson;

/// ComfyUI's `get_save_image_path` in the folder of `kind` (`output` or `temp`).
pub fn save_target(
    ctx: &ExecContext,
    kind: &str,
    prefix: &str,
    (width, height): (i64, i64),
) -> Result<SaveTarget, NodeError> {
    let root = ctx.env.paths.type_dir(kind).expect("known type");
    Ok(ctx.env.paths.save_target(root, prefix, width, height)?)
}

/// Where a save node writes: `(path, ui record)`.
pub fn target(
    ctx: &ExecContext,
    kind: &str,
    prefix: &str,
    ext: &str,
    width: i64,
    height: i64,
) -> Result<(std::path::PathBuf, Json), NodeError> {
    let t = save_target(ctx, kind, prefix, (width, height))?;
    let file = format!("{}_{:05}_.{ext}", t.filename, t.counter);
    let record = json!({"filename": file, "subfolder": t.subfolder, "type": kind});
    Ok((t.folder.join(&file), record))
}

/// Container metadata as ComfyUI writes it: each `extra_pnginfo` key and `prompt`, JSON-encoded.
pub fn metadata(ctx: &ExecContext) -> Vec<(String, String)> {
    if ctx.env.disable_metadata {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(Json::Object(extra)) = ctx.extra_pnginfo {
        out.extend(extra.iter().map(|(k, v)| (k.clone(), pyjson::dumps(v))));
    }
    out.push(("prompt".to_string(), pyjson::dumps(ctx.prompt)));
    out
}

/// A UI dict of one list.
pub fn ui(key: &str, items: Vec<Json>) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert(key.into(), Json::Array(items));
    m
}

/// The UI dict of one saved animation or video: shown animated.
pub fn animated_ui(record: Json) -> Map<String, Json> {
    let mut m = ui("images", vec![record]);
    m.insert("animated".into(), Json::Array(vec![Json::Bool(true)]));
    m
}

/// Runs an encoder with progress reports that stop it on interrupt.
pub fn with_progress<T>(
    ctx: &ExecContext,
    f: impl FnOnce(&mut dyn FnMut(u64, u64) -> anyhow::Result<()>) -> anyhow::Result<T>,
) -> Result<T, NodeError> {
    let interrupted = Cell::new(false);
    let mut report = |v: u64, max: u64| -> anyhow::Result<()> {
        ctx.progress(v, max).map_err(|e| {
            interrupted.set(matches!(e, NodeError::Interrupted));
            anyhow::anyhow!("{e:?}")
        })
    };
    match f(&mut report) {
        Ok(v) => Ok(v),
        Err(_) if interrupted.get() => Err(NodeError::Interrupted),
        Err(e) => Err(e.into()),
    }
}
