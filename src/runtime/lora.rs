//! LoRA files as ComfyUI applies them (`comfy/lora.py`, `comfy/weight_adapter/lora.py`): the
//! key forms trainers write, the map from LoRA keys to model weights, and the merge
//! `W + strength · (alpha / rank) · up·down` computed in float32.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::safetensors_file::SafetensorsFile;

/// The up/down name pairs of the LoRA formats ComfyUI reads, in its order of preference.
const FORMS: &[(&str, &str)] = &[
    (".lora_up.weight", ".lora_down.weight"),
    ("_lora.up.weight", "_lora.down.weight"),
    (".lora_B.weight", ".lora_A.weight"),
    (".lora.up.weight", ".lora.down.weight"),
    (".lora_B", ".lora_A"),
    (
        ".lora_linear_layer.up.weight",
        ".lora_linear_layer.down.weight",
    ),
    (".lora_B.default.weight", ".lora_A.default.weight"),
];

/// One weight's low-rank update.
pub struct LoraPatch {
    pub up: Tensor,
    pub down: Tensor,
    /// The file's `alpha`; the update is scaled by `alpha / rank` (1 without one).
    pub alpha: Option<f64>,
}

impl LoraPatch {
    /// The patched weight in the weight's own dtype (float32 arithmetic, as ComfyUI does it).
    pub fn apply(&self, weight: &Tensor, strength: f64) -> Result<Tensor> {
        let device = weight.device();
        let up = self
            .up
            .to_device(device)
            .to_kind(Kind::Float)
            .flatten(1, -1);
        let down = self
            .down
            .to_device(device)
            .to_kind(Kind::Float)
            .flatten(1, -1);
        let scale = match self.alpha {
            Some(alpha) => alpha / down.size()[0] as f64,
            None => 1.0,
        };
        let diff = up.f_mm(&down)?.f_reshape(weight.size())?;
        let merged = weight.to_kind(Kind::Float) + diff * (strength * scale);
        Ok(merged.to_kind(weight.kind()))
    }
}

/// ComfyUI's generic map for diffusion-model LoRAs: `lora_unet_<path_with_underscores>` and the
/// plain module path, for every `diffusion_model.*` key of the model.
pub fn unet_key_map<'a>(model_keys: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for key in model_keys {
        if !key.starts_with("diffusion_model.") {
            continue;
        }
        match key.strip_suffix(".weight") {
            Some(module) => {
                let path = &module["diffusion_model.".len()..];
                map.insert(
                    format!("lora_unet_{}", path.replace('.', "_")),
                    key.to_string(),
                );
                map.insert(module.to_string(), key.to_string());
            }
            None => {
                map.insert(key.to_string(), key.to_string());
            }
        }
    }
    map
}

/// A LoRA file's patches keyed by the model weight they change, and the file's keys nothing
/// used (ComfyUI logs those as "lora key not loaded").
pub struct LoadedLora {
    pub patches: BTreeMap<String, LoraPatch>,
    pub unused: Vec<String>,
}

pub fn load_lora(file: &SafetensorsFile, key_map: &BTreeMap<String, String>) -> Result<LoadedLora> {
    let mut patches = BTreeMap::new();
    let mut used = BTreeSet::new();
    for (lora_key, model_key) in key_map {
        let Some((up_name, down_name)) = FORMS
            .iter()
            .map(|(up, down)| (format!("{lora_key}{up}"), format!("{lora_key}{down}")))
            .find(|(up, _)| file.contains(up))
        else {
            continue;
        };
        if file.contains(&format!("{lora_key}.lora_mid.weight")) {
            bail!(
                "{}: {lora_key} is a LoCon (lora_mid), not supported yet",
                file.path.display()
            );
        }
        let alpha_name = format!("{lora_key}.alpha");
        let alpha = if file.contains(&alpha_name) {
            used.insert(alpha_name.clone());
            Some(file.tensor(&alpha_name, Device::Cpu)?.double_value(&[]))
        } else {
            None
        };
        let patch = LoraPatch {
            up: file.tensor(&up_name, Device::Cpu)?,
            down: file.tensor(&down_name, Device::Cpu)?,
            alpha,
        };
        used.insert(up_name);
        used.insert(down_name);
        patches.insert(model_key.clone(), patch);
    }
    let unused = file
        .names()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    Ok(LoadedLora { patches, unused })
}
