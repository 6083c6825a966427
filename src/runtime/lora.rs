//! LoRA files as ComfyUI applies them (`comfy/lora.py`, `comfy/weight_adapter/lora.py`,
//! `comfy/lora_convert.py`): the key forms trainers write, the map from LoRA keys to model
//! weights, and the patches: the low-rank merge `W + strength · (alpha / rank) · up·down`
//! (after padding `W` to a `reshape_weight` shape), full differences (`diff`, `diff_b`) and
//! replacements (`set_weight`), computed in float32.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
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

/// One model weight's patch.
pub enum LoraPatch {
    /// `up·down`, scaled by `alpha / rank` (1 without an alpha); the weight is first padded
    /// with zeros to `reshape` where the file gives one (BFL's control LoRAs widen `img_in`).
    LowRank {
        up: Tensor,
        down: Tensor,
        alpha: Option<f64>,
        reshape: Option<Vec<i64>>,
    },
    /// A full difference, added times the strength; a weight of another shape is left alone,
    /// as ComfyUI leaves it ("WEIGHT NOT MERGED").
    Diff(Tensor),
    /// A replacement, whatever the strength.
    Set(Tensor),
}

impl LoraPatch {
    /// The patched weight in the weight's own dtype (float32 arithmetic, as ComfyUI does it).
    pub fn apply(&self, weight: &Tensor, strength: f64) -> Result<Tensor> {
        let device = weight.device();
        let float = |t: &Tensor| t.to_device(device).to_kind(Kind::Float);
        let merged = match self {
            LoraPatch::LowRank {
                up,
                down,
                alpha,
                reshape,
            } => {
                let weight = match reshape {
                    Some(shape) => pad_to_shape(weight, shape)?,
                    None => weight.shallow_clone(),
                };
                let (up, down) = (float(up).flatten(1, -1), float(down).flatten(1, -1));
                let scale = match alpha {
                    Some(alpha) => alpha / down.size()[0] as f64,
                    None => 1.0,
                };
                let diff = up.f_mm(&down)?.f_reshape(weight.size())?;
                weight.to_kind(Kind::Float) + diff * (strength * scale)
            }
            LoraPatch::Diff(diff) if diff.size() != weight.size() => {
                log::warn!(
                    "LoRA difference of shape {:?} not merged into a weight of shape {:?}",
                    diff.size(),
                    weight.size()
                );
                return Ok(weight.shallow_clone());
            }
            LoraPatch::Diff(diff) => weight.to_kind(Kind::Float) + float(diff) * strength,
            LoraPatch::Set(value) => float(value),
        };
        Ok(merged.to_kind(weight.kind()))
    }
}

/// `pad_tensor_to_shape`: `weight` at the start of a zero tensor of `shape`.
fn pad_to_shape(weight: &Tensor, shape: &[i64]) -> Result<Tensor> {
    let size = weight.size();
    if shape.len() != size.len() || shape.iter().zip(&size).any(|(new, old)| new < old) {
        bail!("a LoRA cannot reshape a {size:?} weight to {shape:?}");
    }
    let padded = Tensor::zeros(shape, (weight.kind(), weight.device()));
    let mut window = padded.shallow_clone();
    for (dim, &len) in size.iter().enumerate() {
        window = window.narrow(dim as i64, 0, len);
    }
    window.copy_(weight);
    Ok(padded)
}

/// ComfyUI's generic map for diffusion-model LoRAs: `lora_unet_<path_with_underscores>` and the
/// plain module path, for every `diffusion_model.*` key of the model.
pub fn unet_key_map<'a>(model_keys: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for key in model_keys {
        if !key.starts_with("diffusion_model.") {
            continue;
        }
        // FLUX's RMSNorm gains are stored as `scale` and named `weight` in ComfyUI's model
        // (`Flux.process_unet_state_dict`).
        let renamed = key
            .strip_suffix("_norm.scale")
            .map(|module| format!("{module}_norm.weight"));
        let key = renamed.as_deref().unwrap_or(key);
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

/// A LoRA file under the names ComfyUI reads it by (`lora_convert.convert_lora`): BFL's FLUX
/// control LoRAs (`img_in.lora_A.weight` beside `single_blocks.0.norm.key_norm.scale`) are
/// renamed into the `diffusion_model.` namespace, their `lora_B.bias` becoming `diff_b` and their
/// norm scales `set_weight`, and `img_in` is widened to the LoRA's input width.
struct LoraNames<'a> {
    file: &'a SafetensorsFile,
    /// Read name → the file's name, where they differ.
    renamed: BTreeMap<String, String>,
    /// Shapes the renaming adds (`reshape_weight`s no file holds).
    reshapes: BTreeMap<String, Vec<i64>>,
}

impl<'a> LoraNames<'a> {
    fn new(file: &'a SafetensorsFile) -> Result<Self> {
        let mut names = Self {
            file,
            renamed: BTreeMap::new(),
            reshapes: BTreeMap::new(),
        };
        if file.contains("img_in.lora_A.weight")
            && file.contains("single_blocks.0.norm.key_norm.scale")
        {
            for name in file.names() {
                let read = name
                    .replace(".lora_B.bias", ".diff_b")
                    .replace("_norm.scale", "_norm.set_weight");
                names
                    .renamed
                    .insert(format!("diffusion_model.{read}"), name.clone());
            }
            let dim = |name: &str, at: usize| -> Result<i64> {
                let entry = file.entry(name).with_context(|| format!("no {name}"))?;
                Ok(*entry
                    .shape
                    .get(at)
                    .with_context(|| format!("{name} is 1-D"))? as i64)
            };
            let shape = vec![
                dim("img_in.lora_B.weight", 0)?,
                dim("img_in.lora_A.weight", 1)?,
            ];
            names
                .reshapes
                .insert("diffusion_model.img_in.reshape_weight".into(), shape);
        }
        Ok(names)
    }

    /// The file's name for `name`, if it holds one.
    fn stored(&self, name: &str) -> Option<&str> {
        match self.renamed.get(name) {
            Some(stored) => Some(stored),
            None if self.renamed.is_empty() => self
                .file
                .entries()
                .get_key_value(name)
                .map(|(stored, _)| stored.as_str()),
            None => None,
        }
    }

    fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        self.stored(name)
            .map(|stored| self.file.tensor(stored, Device::Cpu))
            .transpose()
    }

    /// A `reshape_weight` as a shape (ComfyUI's `tolist()`).
    fn reshape(&self, name: &str) -> Result<Option<Vec<i64>>> {
        if let Some(shape) = self.reshapes.get(name) {
            return Ok(Some(shape.clone()));
        }
        Ok(self.tensor(name)?.map(|t| {
            let t = t.to_kind(Kind::Int64).reshape([-1]);
            (0..t.size()[0]).map(|i| t.int64_value(&[i])).collect()
        }))
    }
}

/// The shape LoRA file `path` widens model weight `module` to (`diffusion_model.img_in`), if it
/// widens it.
pub fn weight_reshape(path: &Path, module: &str) -> Result<Option<Vec<i64>>> {
    let file = SafetensorsFile::open(path)?;
    LoraNames::new(&file)?.reshape(&format!("{module}.reshape_weight"))
}

pub fn load_lora(file: &SafetensorsFile, key_map: &BTreeMap<String, String>) -> Result<LoadedLora> {
    let names = LoraNames::new(file)?;
    let mut patches = BTreeMap::new();
    let mut used = BTreeSet::new();
    let take = |name: &str, used: &mut BTreeSet<String>| -> Result<Option<Tensor>> {
        let tensor = names.tensor(name)?;
        if tensor.is_some() {
            used.insert(name.to_string());
        }
        Ok(tensor)
    };
    for (lora_key, model_key) in key_map {
        if let Some(patch) = low_rank(&names, lora_key, &mut used)? {
            patches.insert(model_key.clone(), patch);
        }
        // ComfyUI's order: a full difference or a replacement overrides the low-rank patch.
        if let Some(diff) = take(&format!("{lora_key}.diff"), &mut used)? {
            patches.insert(model_key.clone(), LoraPatch::Diff(diff));
        }
        if let Some(diff) = take(&format!("{lora_key}.diff_b"), &mut used)? {
            let module = model_key.strip_suffix(".weight").unwrap_or(model_key);
            patches.insert(format!("{module}.bias"), LoraPatch::Diff(diff));
        }
        if let Some(value) = take(&format!("{lora_key}.set_weight"), &mut used)? {
            patches.insert(model_key.clone(), LoraPatch::Set(value));
        }
    }
    let used: BTreeSet<&str> = used.iter().filter_map(|name| names.stored(name)).collect();
    let unused = file
        .names()
        .filter(|stored| !used.contains(stored.as_str()))
        .cloned()
        .collect();
    Ok(LoadedLora { patches, unused })
}

/// The low-rank patch `lora_key` names in one of the trainers' forms, its alpha and reshape.
fn low_rank(
    names: &LoraNames,
    lora_key: &str,
    used: &mut BTreeSet<String>,
) -> Result<Option<LoraPatch>> {
    let Some((up_name, down_name)) = FORMS
        .iter()
        .map(|(up, down)| (format!("{lora_key}{up}"), format!("{lora_key}{down}")))
        .find(|(up, _)| names.stored(up).is_some())
    else {
        return Ok(None);
    };
    if names
        .stored(&format!("{lora_key}.lora_mid.weight"))
        .is_some()
    {
        bail!(
            "{}: {lora_key} is a LoCon (lora_mid), not supported yet",
            names.file.path.display()
        );
    }
    let alpha_name = format!("{lora_key}.alpha");
    let alpha = names.tensor(&alpha_name)?.map(|t| t.double_value(&[]));
    let reshape_name = format!("{lora_key}.reshape_weight");
    let reshape = names.reshape(&reshape_name)?;
    let (Some(up), Some(down)) = (names.tensor(&up_name)?, names.tensor(&down_name)?) else {
        bail!(
            "{}: {up_name} has no {down_name}",
            names.file.path.display()
        );
    };
    used.extend([up_name, down_name, alpha_name, reshape_name]);
    Ok(Some(LoraPatch::LowRank {
        up,
        down,
        alpha,
        reshape,
    }))
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
    fn patches_pad_add_and_replace_as_comfyui_does() {
        let weight = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let widened = LoraPatch::LowRank {
            up: Tensor::from_slice(&[1.0f32, 2.0]).view([2, 1]),
            down: Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([1, 4]),
            alpha: Some(2.0),
            reshape: Some(vec![2, 4]),
        };
        // Zero-padded to 2×4, plus 0.5 · (alpha 2 / rank 1) · up·down.
        let expected = [2.0f32, 2.0, 0.0, 1.0, 5.0, 4.0, 0.0, 2.0];
        let merged = widened.apply(&weight, 0.5).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(merged.reshape([-1])).unwrap(),
            expected
        );
        let other_shape = LoraPatch::Diff(Tensor::ones([3], (Kind::Float, Device::Cpu)));
        let unmerged = other_shape.apply(&weight, 1.0).unwrap();
        assert!(unmerged.equal(&weight));
        let set = LoraPatch::Set(Tensor::full([2, 2], 7.0, (Kind::Float, Device::Cpu)));
        let replaced = set.apply(&weight.to_kind(Kind::Half), 0.25).unwrap();
        assert_eq!(replaced.kind(), Kind::Half);
        assert!(replaced.equal(&Tensor::full([2, 2], 7.0, (Kind::Half, Device::Cpu))));
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
