//! What every model handle needs to load through the `ModelManager`: the component of a file
//! (detected), its size, and the compute dtype of a device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind};

use super::weights::Weights;
use crate::runtime::detect::{detect, Detected};
use crate::runtime::lora::load_lora_files;
use crate::runtime::manager::{Loaded, ModelManager, Placement};
use crate::runtime::safetensors_file::SafetensorsFile;

/// The compute dtype of the components other than the diffusion model (VAEs, text and vision
/// encoders): bf16 on CUDA, float32 on the CPU. Diffusion models follow ComfyUI's choice per
/// model class (`diffusion_file::diffusion_compute_dtype`).
pub fn compute_dtype(device: Device) -> Kind {
    match device {
        Device::Cpu => Kind::Float,
        _ => Kind::BFloat16,
    }
}

/// The file's component of kind `component` (`diffusion_model`, `vae`, `text_encoder`,
/// `clip_vision`), or an error naming what the file holds instead.
pub fn component(file: &SafetensorsFile, component: &str) -> Result<Detected> {
    let found = detect(file)?;
    if let Some(d) = found.iter().find(|d| d.component == component) {
        return Ok(d.clone());
    }
    let held: Vec<String> = found
        .iter()
        .map(|d| format!("{} ({})", d.component, d.architecture))
        .collect();
    bail!(
        "{} holds no {component}: it has {}",
        file.path.display(),
        held.join(", ")
    )
}

/// Bytes the component's tensors take in `dtype` (quantized tensors keep their size).
pub fn component_bytes(file: &SafetensorsFile, prefix: &str, dtype: Kind) -> u64 {
    let wide_bits = dtype.elt_size_in_bytes() as u64 * 8;
    file.entries()
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, e)| {
            let stored = e.dtype.bitsize() as u64;
            e.numel() as u64 * if stored >= 16 { wide_bits } else { stored } / 8
        })
        .sum()
}

/// A manager key for a file under given options.
pub fn model_key(kind: &str, path: &Path, options: &str) -> String {
    format!("{kind}:{}:{options}", path.display())
}

/// LoRAs merged into a component as it loads: the files with their strengths, ComfyUI's key map
/// for the model they patch, and where the component's weights sit in that model.
pub struct LoraMerge<'a> {
    pub files: &'a [(PathBuf, f64)],
    pub key_map: &'a BTreeMap<String, String>,
    pub namespace: &'a str,
}

/// Manager-key options naming LoRA files and strengths.
pub fn lora_options(files: &[(PathBuf, f64)]) -> String {
    let files: Vec<String> = files
        .iter()
        .map(|(p, s)| format!("{}@{s}", p.display()))
        .collect();
    files.join(",")
}

/// The network `build` makes from `path`'s component under `prefix`, on `device` in its compute
/// dtype, with `loras` merged: through the manager (resident until evicted) on the manager's
/// device, built outside its budget otherwise (e.g. CLIPLoader's `device: cpu`). `build` finds
/// the manager's [`Placement`] in `Weights::placement`: networks with blocks keep those that
/// fit and stream the rest under `--lowvram`.
pub fn load_component<T: Send + 'static>(
    manager: &ModelManager,
    device: Device,
    kind: &str,
    path: &Path,
    prefix: &str,
    loras: Option<&LoraMerge>,
    build: impl FnOnce(&Weights) -> Result<T>,
) -> Result<Arc<Loaded<T>>> {
    let dtype = compute_dtype(device);
    let file = SafetensorsFile::open(path)?;
    let load = |placement: Placement| {
        let mut weights = Weights::new(&file, prefix, dtype, device)?;
        weights.placement = placement;
        let Some(merge) = loras else {
            return build(&weights);
        };
        let loaded = load_lora_files(merge.files, merge.key_map, false)?;
        weights.loras = loaded.iter().map(|(l, s)| (&l.patches, *s)).collect();
        weights.lora_namespace = merge.namespace.to_string();
        build(&weights)
    };
    if device != manager.device() {
        return Ok(Arc::new(Loaded::unmanaged(load(Placement::resident(
            device,
        ))?)));
    }
    let bytes = component_bytes(&file, prefix, dtype);
    let options = loras.map(|l| lora_options(l.files)).unwrap_or_default();
    manager.get_or_load(&model_key(kind, path, &options), bytes, load)
}
