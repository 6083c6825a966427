//! What every model handle needs to load through the `ModelManager`: the component of a file
//! (detected), its size, and the precision it runs in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use safetensors::Dtype;
use tch::{Device, Kind};

use super::weights::Weights;
use crate::runtime::detect::{detect, Detected};
use crate::runtime::lora::load_lora_files;
use crate::runtime::manager::{Loaded, ModelManager, Placement};
use crate::runtime::safetensors_file::{kind_of, SafetensorsFile};

/// What a component computes in, and what its full-precision Linear weights are held in (each
/// forward casts them to the input's dtype).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Precision {
    pub compute: Kind,
    pub linears: Kind,
}

impl Precision {
    /// The VAEs: `forced` (`--fp16-vae` and its kin) or ComfyUI's `vae_dtype` for the Wan and
    /// KL VAEs, bf16 on a GPU and float32 on the CPU.
    pub fn vae(device: Device, forced: Option<Kind>) -> Self {
        let kind = forced.unwrap_or(match device {
            Device::Cpu => Kind::Float,
            _ => Kind::BFloat16,
        });
        Self {
            compute: kind,
            linears: kind,
        }
    }

    /// Text and vision encoders as ComfyUI runs them: in float32 (its CLIP and T5 embed into
    /// float32 and cast each layer's weights to that), with the Linear weights held in `held`
    /// on a GPU so a 5.7B-parameter UMT5 does not double in memory.
    pub fn encoder(device: Device, held: Kind) -> Self {
        Self {
            compute: Kind::Float,
            linears: if device == Device::Cpu {
                Kind::Float
            } else {
                held
            },
        }
    }
}

/// The kind most of the component's elements are stored in (ComfyUI's `weight_dtype`).
pub fn stored_dtype(file: &SafetensorsFile, prefix: &str) -> Option<Kind> {
    let mut elements: BTreeMap<Dtype, usize> = BTreeMap::new();
    for (_, entry) in file.entries().iter().filter(|(n, _)| n.starts_with(prefix)) {
        *elements.entry(entry.dtype).or_default() += entry.numel();
    }
    let most = elements.into_iter().max_by_key(|(_, n)| *n)?.0;
    kind_of(most)
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

/// One component to load: its manager key kind (`vae`, `clip_vision`, `text_encoder:<prefix>`),
/// its file and key prefix, and where and in what precision it runs.
pub struct LoadTarget<'a> {
    pub kind: &'a str,
    pub path: &'a Path,
    pub prefix: &'a str,
    pub device: Device,
    pub precision: Precision,
}

/// The network `build` makes from `target`, with `loras` merged: through the manager (resident
/// until evicted) on the manager's device, kept on the host outside its budget otherwise (e.g.
/// CLIPLoader's `device: cpu`, `--cpu-vae`). `build` finds the manager's [`Placement`] in
/// `Weights::placement`: networks with blocks keep those that fit and stream the rest under
/// `--lowvram`.
pub fn load_component<T: Send + 'static>(
    manager: &ModelManager,
    target: &LoadTarget,
    loras: Option<&LoraMerge>,
    build: impl FnOnce(&Weights) -> Result<T>,
) -> Result<Arc<Loaded<T>>> {
    let (device, precision) = (target.device, target.precision);
    let file = SafetensorsFile::open(target.path)?;
    let load = |placement: Placement| {
        let mut weights = Weights::new(&file, target.prefix, precision.compute, device)?;
        weights.linear_dtype = precision.linears;
        weights.placement = placement;
        let Some(merge) = loras else {
            return build(&weights);
        };
        let loaded = load_lora_files(merge.files, merge.key_map, false)?;
        weights.loras = loaded.iter().map(|(l, s)| (&l.patches, *s)).collect();
        weights.lora_namespace = merge.namespace.to_string();
        build(&weights)
    };
    let options = loras.map(|l| lora_options(l.files)).unwrap_or_default();
    let key = model_key(target.kind, target.path, &options);
    if device != manager.device() {
        return manager.get_or_load_on_host(&key, || load(Placement::resident(device)));
    }
    let bytes = component_bytes(&file, target.prefix, precision.linears);
    manager.get_or_load(&key, bytes, load)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    #[test]
    fn encoders_compute_in_float32_and_hold_their_linears_narrow_on_a_gpu() {
        let gpu = Device::Cuda(0);
        let held = Precision::encoder(gpu, Kind::Half);
        assert_eq!((held.compute, held.linears), (Kind::Float, Kind::Half));
        let cpu = Precision::encoder(Device::Cpu, Kind::Half);
        assert_eq!((cpu.compute, cpu.linears), (Kind::Float, Kind::Float));
        let vae = Precision::vae(gpu, None);
        assert_eq!((vae.compute, vae.linears), (Kind::BFloat16, Kind::BFloat16));
        assert_eq!(Precision::vae(Device::Cpu, None).compute, Kind::Float);
        let forced = Precision::vae(gpu, Some(Kind::Float));
        assert_eq!((forced.compute, forced.linears), (Kind::Float, Kind::Float));
    }

    #[test]
    fn stored_dtype_counts_elements_under_the_prefix() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("mixed.safetensors");
        let zeros = |n: i64, kind| Tensor::zeros([n], (kind, Device::Cpu));
        Tensor::write_safetensors(
            &[
                ("model.diffusion_model.a", zeros(10, Kind::BFloat16)),
                ("model.diffusion_model.b", zeros(4, Kind::Half)),
                ("model.diffusion_model.c", zeros(4, Kind::Half)),
                ("model.diffusion_model.d", zeros(4, Kind::Half)),
                ("first_stage_model.e", zeros(100, Kind::Float)),
            ],
            &path,
        )?;
        let file = SafetensorsFile::open(&path)?;
        assert_eq!(
            stored_dtype(&file, "model.diffusion_model."),
            Some(Kind::Half)
        );
        assert_eq!(stored_dtype(&file, ""), Some(Kind::Float));
        assert_eq!(stored_dtype(&file, "cond_stage_model."), None);
        Ok(())
    }
}
