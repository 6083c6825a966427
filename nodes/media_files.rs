//! Validation and change detection for loaders that read a file from `input/`.

use serde_json::{json, Value as Json};

use crate::engine::context::NodeEnv;
use crate::engine::node::Inputs;

/// ComfyUI's `VALIDATE_INPUTS` for loaders: the file must exist.
pub fn file_exists(i: &Inputs, env: &NodeEnv, input: &str, what: &str) -> Result<(), String> {
    let name = i.string(input).unwrap_or_else(|_| "None".into());
    match env.paths.annotated_input_path(&name) {
        Some(p) if p.is_file() => Ok(()),
        _ => Err(format!("Invalid {what} file: {name}")),
    }
}

/// Re-run the loader when the file changes (size and modification time).
pub fn file_fingerprint(i: &Inputs, env: &NodeEnv, input: &str) -> Option<Json> {
    let name = i.string(input).ok()?;
    let meta = std::fs::metadata(env.paths.annotated_input_path(&name)?).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(json!([name, meta.len(), modified.to_string()]))
}
