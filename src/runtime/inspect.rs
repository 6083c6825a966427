//! `videosdgx inspect FILE`: what a weight file holds, as JSON.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use super::detect::{detect, detect_shapes, Detected};
use super::gguf::GgufFile;
use super::quant::quantized_layers;
use super::safetensors_file::SafetensorsFile;

/// The key prefixes ComfyUI's checkpoints put their components under.
const COMPONENT_PREFIXES: &[&str] = &[
    "model.diffusion_model.",
    "first_stage_model.",
    "cond_stage_model.",
    "conditioner.embedders.",
    "text_encoders.",
    "vae.",
];

/// Tensor counts per component prefix (`""` for keys under none of them).
fn components(file: &SafetensorsFile) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for name in file.names() {
        let prefix = COMPONENT_PREFIXES
            .iter()
            .copied()
            .find(|p| name.starts_with(p))
            .unwrap_or("");
        *counts.entry(prefix).or_insert(0) += 1;
    }
    counts
}

/// The report for a GGUF file: its block formats instead of dtypes, its key-value metadata.
fn inspect_gguf(path: &Path) -> Result<Value> {
    let file = GgufFile::open(path)?;
    let mut storage: BTreeMap<String, usize> = BTreeMap::new();
    let mut parameters = 0i64;
    for t in file.tensors.values() {
        *storage.entry(format!("{:?}", t.ggml_type)).or_insert(0) += 1;
        parameters += t.shape.iter().product::<i64>();
    }
    let shapes: BTreeMap<&str, Vec<usize>> = file
        .tensors
        .iter()
        .map(|(name, t)| (name.as_str(), t.shape.iter().map(|&d| d as usize).collect()))
        .collect();
    let borrowed = shapes.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    let detected = detection(detect_shapes(path, borrowed, None));
    Ok(json!({
        "file": path.display().to_string(),
        "format": "gguf",
        "detected": detected.0,
        "detection_error": detected.1,
        "version": file.version,
        "tensors": file.tensors.len(),
        "parameters": parameters,
        "storage": storage,
        "metadata": file.metadata,
    }))
}

/// The detected components as JSON, or the reason none was found.
fn detection(result: Result<Vec<Detected>>) -> (Value, Value) {
    match result {
        Ok(found) => (found.iter().map(Detected::to_json).collect(), Value::Null),
        Err(e) => (json!([]), json!(format!("{e:#}"))),
    }
}

pub fn inspect(path: &Path) -> Result<Value> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return inspect_gguf(path);
    }
    let file = SafetensorsFile::open(path)?;
    let mut storage: BTreeMap<String, usize> = BTreeMap::new();
    let mut parameters = 0usize;
    for entry in file.entries().values() {
        *storage.entry(format!("{:?}", entry.dtype)).or_insert(0) += 1;
        parameters += entry.numel();
    }
    // Each component may carry its own legacy scaled-fp8 marker; the header table covers all.
    let mut layers = BTreeMap::new();
    let components = components(&file);
    for prefix in components.keys() {
        layers.extend(quantized_layers(&file, prefix)?);
    }
    let mut quantized: BTreeMap<String, usize> = BTreeMap::new();
    for layer in layers.values() {
        *quantized.entry(layer.format.clone()).or_insert(0) += 1;
    }
    let detected = detection(detect(&file));
    Ok(json!({
        "file": path.display().to_string(),
        "format": "safetensors",
        "detected": detected.0,
        "detection_error": detected.1,
        "tensors": file.entries().len(),
        "parameters": parameters,
        "components": components,
        "storage": storage,
        "quantized_layers": quantized,
        "metadata": file.metadata(),
    }))
}
