//! ComfyUI's per-layer quantization description and the dequantizations it implies.
//!
//! A file describes its quantized layers in the header (`__metadata__._quantization_metadata`),
//! with `<layer>.comfy_quant` tensors (UTF-8 JSON bytes), or — old "scaled fp8" files — with a
//! `<prefix>scaled_fp8` marker and per-layer `scale_weight`/`scale_input` tensors, which ComfyUI's
//! `convert_old_quants` rewrites into the same per-layer form.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
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

impl LayerQuant {
    /// An `int8_tensorwise` layer's ConvRot group size, when its weight is rotated (the flag and
    /// size at the top level or under `params`, 256 by default).
    pub fn convrot_group(&self) -> Option<i64> {
        let get = |key: &str| {
            self.options
                .get(key)
                .or_else(|| self.options.get("params").and_then(|p| p.get(key)))
        };
        let rotated = get("convrot").and_then(Value::as_bool).unwrap_or(false);
        rotated.then(|| {
            get("convrot_groupsize")
                .and_then(Value::as_i64)
                .unwrap_or(256)
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

/// E2M1 values by 4-bit code (bit 3 is the sign).
const E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Where block `(r, k)`'s scale sits in cuBLAS's 128×4-tiled ("swizzled") scale layout with
/// `padded_cols` block columns.
fn swizzled_index(rows: i64, blocks: i64, padded_cols: i64, device: Device) -> Tensor {
    let opts = (Kind::Int64, device);
    let r = Tensor::arange(rows, opts).unsqueeze(1);
    let k = Tensor::arange(blocks, opts).unsqueeze(0);
    let tile = r.floor_divide_scalar(128) * (padded_cols / 4) + k.floor_divide_scalar(4);
    tile * 512
        + r.remainder(32) * 16
        + r.remainder(128).floor_divide_scalar(32) * 4
        + k.remainder(4)
}

/// NVFP4 as ComfyUI stores it (two E2M1 codes per byte, high nibble first; e4m3 scales per 16
/// elements in the swizzled layout; an fp32 global scale) → `dtype`, cut to `(rows, cols)`.
pub fn dequantize_nvfp4(
    packed: &Tensor,
    block_scale: &Tensor,
    global_scale: &Tensor,
    (rows, cols): (i64, i64),
    dtype: Kind,
) -> Result<Tensor> {
    let (r, half) = packed.size2()?;
    ensure!(
        half % 8 == 0,
        "nvfp4 weight [{r}, {half}]: rows must hold whole blocks of 16 values"
    );
    let (c, blocks) = (half * 2, half / 8);
    let padded_cols = block_scale.size().last().copied().unwrap_or(0);
    if rows > r || cols > c || block_scale.numel() < ((r + 127) / 128 * 128 * padded_cols) as usize
    {
        bail!(
            "nvfp4 weight [{r}, {half}] with scales {:?} cannot hold a [{rows}, {cols}] matrix",
            block_scale.size()
        );
    }
    let device = packed.device();
    let bytes = packed.to_kind(Kind::Int64);
    let codes = Tensor::stack(&[bytes.floor_divide_scalar(16), bytes.remainder(16)], 2);
    let table = Tensor::from_slice(&E2M1).to_device(device);
    let values = table
        .index_select(0, &codes.flatten(0, -1))
        .view([r, blocks, 16]);
    let index = swizzled_index(r, blocks, padded_cols, device);
    let scales = block_scale
        .to_kind(Kind::Float)
        .flatten(0, -1)
        .index_select(0, &index.flatten(0, -1))
        .view([r, blocks, 1]);
    let total = scales * global_scale.to_kind(Kind::Float);
    Ok((values * total)
        .view([r, c])
        .narrow(0, 0, rows)
        .narrow(1, 0, cols)
        .to_kind(dtype))
}
