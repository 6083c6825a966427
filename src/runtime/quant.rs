//! ComfyUI's per-layer quantization description and the dequantizations it implies.
//!
//! A file describes its quantized layers in the header (`__metadata__._quantization_metadata`),
//! with `<layer>.comfy_quant` tensors (UTF-8 JSON bytes), or — old "scaled fp8" files — with a
//! `<prefix>scaled_fp8` marker and per-layer `scale_weight`/`scale_input` tensors, which ComfyUI's
//! `convert_old_quants` rewrites into the same per-layer form.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::safetensors_file::SafetensorsFile;

/// One quantized layer: its `comfy_quant` object (`format` plus options).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerQuant {
    pub format: String,
    /// Dequantize and multiply in full precision instead of an FP8 matmul (scaled-fp8 files whose
    /// marker has two elements).
    pub full_precision_matrix_mult: bool,
    pub options: Value,
}

impl LayerQuant {
    fn from_json(options: Value) -> Result<Self> {
        let format = options
            .get("format")
            .and_then(Value::as_str)
            .context("comfy_quant without a \"format\"")?
            .to_string();
        let full_precision_matrix_mult = options
            .get("full_precision_matrix_mult")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Self {
            format,
            full_precision_matrix_mult,
            options,
        })
    }
}

/// The scale-tensor names of one layer after ComfyUI's renames (`scale_weight` → `weight_scale`,
/// `scale_input` → `input_scale`).
pub fn scale_key(file: &SafetensorsFile, layer: &str, name: &str) -> Option<String> {
    let legacy = match name {
        "weight_scale" => "scale_weight",
        "input_scale" => "scale_input",
        other => other,
    };
    [format!("{layer}.{name}"), format!("{layer}.{legacy}")]
        .into_iter()
        .find(|k| file.contains(k))
}

/// The quantized layers under `prefix` (e.g. `model.diffusion_model.`), keyed by layer name
/// (the module path without `.weight`), as ComfyUI reads them.
pub fn quantized_layers(
    file: &SafetensorsFile,
    prefix: &str,
) -> Result<BTreeMap<String, LayerQuant>> {
    let mut layers = BTreeMap::new();
    if let Some(meta) = file.metadata().get("_quantization_metadata") {
        let meta: Value = serde_json::from_str(meta).with_context(|| {
            format!(
                "{}: _quantization_metadata is not JSON",
                file.path.display()
            )
        })?;
        let Some(entries) = meta.get("layers").and_then(Value::as_object) else {
            bail!(
                "{}: _quantization_metadata has no layers",
                file.path.display()
            );
        };
        for (layer, options) in entries {
            layers.insert(layer.clone(), LayerQuant::from_json(options.clone())?);
        }
    } else if file.contains(&format!("{prefix}scaled_fp8")) {
        let marker = file.entry(&format!("{prefix}scaled_fp8")).expect("present");
        let full_precision = marker.numel() == 2;
        for name in file.names().filter(|n| n.starts_with(prefix)) {
            if let Some(layer) = name.strip_suffix(".scale_weight") {
                let mut options = serde_json::json!({"format": "float8_e4m3fn"});
                if full_precision {
                    options["full_precision_matrix_mult"] = Value::Bool(true);
                }
                layers.insert(layer.to_string(), LayerQuant::from_json(options)?);
            }
        }
    }
    for name in file.names() {
        if let Some(layer) = name.strip_suffix(".comfy_quant") {
            let bytes = file.bytes(name)?;
            let options: Value = serde_json::from_slice(bytes)
                .with_context(|| format!("{}: {name} is not JSON", file.path.display()))?;
            layers.insert(layer.to_string(), LayerQuant::from_json(options)?);
        }
    }
    Ok(layers)
}

/// A layer's activation scale, if it has one (ComfyUI drops legacy `scale_input`s of exactly 1).
pub fn input_scale(file: &SafetensorsFile, layer: &str) -> Result<Option<Tensor>> {
    let Some(key) = scale_key(file, layer, "input_scale") else {
        return Ok(None);
    };
    let scale = file.tensor(&key, Device::Cpu)?.to_kind(Kind::Float);
    let legacy = key.ends_with(".scale_input");
    Ok((!(legacy && scale.double_value(&[]) == 1.0)).then_some(scale))
}

/// comfy-kitchen's `dequantize_per_tensor_fp8`: `w.to(dtype) · scale.to(dtype)`.
pub fn dequantize_fp8(weight: &Tensor, scale: &Tensor, dtype: Kind) -> Tensor {
    weight.to_kind(dtype) * scale.to_kind(dtype)
}

/// A layer's weight in `dtype`: dequantized when the layer is fp8-quantized, cast otherwise.
pub fn load_weight(
    file: &SafetensorsFile,
    layers: &BTreeMap<String, LayerQuant>,
    layer: &str,
    dtype: Kind,
    device: Device,
) -> Result<Tensor> {
    let weight = file.tensor(&format!("{layer}.weight"), device)?;
    match layers.get(layer).map(|q| q.format.as_str()) {
        None => Ok(weight.to_kind(dtype)),
        Some("float8_e4m3fn" | "float8_e5m2") => {
            let key = scale_key(file, layer, "weight_scale")
                .with_context(|| format!("{}: {layer} has no weight_scale", file.path.display()))?;
            let scale = file.tensor(&key, device)?;
            Ok(dequantize_fp8(&weight, &scale, dtype))
        }
        Some(other) => bail!(
            "{}: {layer} is stored as {other}, which this build cannot dequantize yet",
            file.path.display()
        ),
    }
}
