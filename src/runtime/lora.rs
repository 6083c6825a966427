//! LoRA files as ComfyUI applies them (`comfy/lora.py`, `comfy/weight_adapter/lora.py`): the
//! key forms trainers write, the map from LoRA keys to model weights, and the merge
//! `W + strength · (alpha / rank) · up·down` computed in float32.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

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

/// ComfyUI's map for text-encoder LoRAs (`model_lora_keys_clip`), from the CLIP value's weight
/// names as ComfyUI's state dict has them (`clip_l.transformer.text_model.…`,
/// `clip_g.transformer.…`, `t5xxl.transformer.encoder.…`, `umt5xxl.transformer.…`): the generic
/// `text_encoders.` names, kohya's `lora_te*_` names (te1 = CLIP-L, te2 = CLIP-G beside it, te =
/// a lone CLIP-G), diffusers' `text_encoder(_2).` names and OneTrainer's T5 and projection names.
pub fn clip_key_map(model_keys: &[String]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let has = |k: &str| model_keys.iter().any(|m| m == k);
    for key in model_keys {
        let Some(module) = key.strip_suffix(".weight") else {
            continue;
        };
        map.insert(format!("text_encoders.{module}"), key.clone());
        if let Some(at) = module.find(".transformer.").filter(|&at| at > 0) {
            if !key.starts_with("clip_") {
                map.insert(format!("text_encoders.{}", &module[at + 1..]), key.clone());
            }
        }
    }
    let clip_l = model_keys
        .iter()
        .any(|k| k.starts_with("clip_l.transformer.text_model.encoder.layers."));
    let clip_g = model_keys
        .iter()
        .any(|k| k.starts_with("clip_g.transformer.text_model.encoder.layers."));
    for key in model_keys {
        for (tower, kohya, diffusers) in [
            ("clip_l", "lora_te1_", "text_encoder."),
            (
                "clip_g",
                if clip_l { "lora_te2_" } else { "lora_te_" },
                if clip_l {
                    "text_encoder_2."
                } else {
                    "text_encoder."
                },
            ),
        ] {
            let Some(layer) = key
                .strip_prefix(&format!("{tower}.transformer.text_model.encoder.layers."))
                .and_then(|k| k.strip_suffix(".weight"))
            else {
                continue;
            };
            let (index, module) = layer.split_once('.').unwrap_or((layer, ""));
            if !LORA_CLIP_MODULES.contains(&module) {
                continue;
            }
            let kohya_name = format!(
                "text_model_encoder_layers_{index}_{}",
                module.replace('.', "_")
            );
            map.insert(format!("{kohya}{kohya_name}"), key.clone());
            map.insert(
                format!("{diffusers}text_model.encoder.layers.{layer}"),
                key.clone(),
            );
            if tower == "clip_l" {
                map.insert(format!("lora_te_{kohya_name}"), key.clone());
            } else if !clip_l {
                map.insert(format!("lora_prior_te_{kohya_name}"), key.clone());
            }
        }
        if let Some(module) = key
            .strip_prefix("t5xxl.transformer.")
            .and_then(|k| k.strip_suffix(".weight"))
        {
            // OneTrainer numbers T5 after the CLIP towers present (and for FLUX, under both).
            let name = module.replace('.', "_");
            let mut index = 1 + usize::from(clip_g) + usize::from(clip_l);
            if clip_l && index == 2 {
                map.insert(format!("lora_te2_{name}"), key.clone());
                index = 3;
            }
            map.insert(format!("lora_te{index}_{name}"), key.clone());
        }
    }
    for (key, names) in [
        (
            "clip_g.transformer.text_projection.weight",
            &["lora_prior_te_text_projection", "lora_te2_text_projection"][..],
        ),
        (
            "clip_l.transformer.text_projection.weight",
            &["lora_te1_text_projection"][..],
        ),
    ] {
        if has(key) {
            for name in names {
                map.insert(name.to_string(), key.to_string());
            }
        }
    }
    map
}

/// The CLIP layer modules kohya-style LoRAs name (`LORA_CLIP_MAP`).
pub const LORA_CLIP_MODULES: &[&str] = &[
    "mlp.fc1",
    "mlp.fc2",
    "self_attn.k_proj",
    "self_attn.q_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
];

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

/// LoRA files with their strengths, loaded against one component's key map. `warn_unused` logs
/// the keys that map to nothing (ComfyUI's "lora key not loaded"), except those aimed at the
/// other half of a LoRA (`lora_te*`, `text_encoder*` for the diffusion model).
pub fn load_lora_files(
    files: &[(PathBuf, f64)],
    key_map: &BTreeMap<String, String>,
    warn_unused: bool,
) -> Result<Vec<(LoadedLora, f64)>> {
    files
        .iter()
        .map(|(path, strength)| {
            let lora = load_lora(&SafetensorsFile::open(path)?, key_map)?;
            let unused: Vec<&String> = lora
                .unused
                .iter()
                .filter(|k| !is_text_encoder_key(k))
                .collect();
            if warn_unused && !unused.is_empty() {
                log::warn!(
                    "{}: {} LoRA keys not loaded (first: {})",
                    path.display(),
                    unused.len(),
                    unused[0]
                );
            }
            Ok((lora, *strength))
        })
        .collect()
}

fn is_text_encoder_key(key: &str) -> bool {
    ["lora_te", "lora_prior_te", "text_encoder"]
        .iter()
        .any(|p| key.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn clip_key_map_names_towers_as_comfyui_does() {
        let q = "text_model.encoder.layers.3.self_attn.q_proj.weight";
        let sdxl = keys(&[
            &format!("clip_l.transformer.{q}"),
            &format!("clip_g.transformer.{q}"),
            "clip_g.transformer.text_projection.weight",
        ]);
        let map = clip_key_map(&sdxl);
        let at = |k: &str| map.get(k).map(String::as_str);
        let kohya = "text_model_encoder_layers_3_self_attn_q_proj";
        assert_eq!(at(&format!("lora_te1_{kohya}")), Some(sdxl[0].as_str()));
        assert_eq!(at(&format!("lora_te_{kohya}")), Some(sdxl[0].as_str()));
        assert_eq!(at(&format!("lora_te2_{kohya}")), Some(sdxl[1].as_str()));
        assert_eq!(
            at("text_encoder_2.text_model.encoder.layers.3.self_attn.q_proj"),
            Some(sdxl[1].as_str())
        );
        assert_eq!(
            at("text_encoders.clip_g.transformer.text_model.encoder.layers.3.self_attn.q_proj"),
            Some(sdxl[1].as_str())
        );
        assert_eq!(at("lora_te2_text_projection"), Some(sdxl[2].as_str()));
        // A lone CLIP-G (the SDXL refiner) is `lora_te_`.
        let refiner = clip_key_map(&sdxl[1..2]);
        assert_eq!(refiner.get(&format!("lora_te_{kohya}")), Some(&sdxl[1]));
        // FLUX: CLIP-L is te1, T5 both te2 and te3 (OneTrainer), with and without the wrapper.
        let flux = keys(&[
            &format!("clip_l.transformer.{q}"),
            "t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight",
        ]);
        let map = clip_key_map(&flux);
        let t5 = "encoder_block_0_layer_0_SelfAttention_q";
        assert_eq!(map.get(&format!("lora_te2_{t5}")), Some(&flux[1]));
        assert_eq!(map.get(&format!("lora_te3_{t5}")), Some(&flux[1]));
        assert_eq!(
            map.get("text_encoders.transformer.encoder.block.0.layer.0.SelfAttention.q"),
            Some(&flux[1])
        );
    }
}
