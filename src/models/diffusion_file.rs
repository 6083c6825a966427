//! The file side of a MODEL handle: which diffusion-model component of which file, loaded with
//! which weight dtype and LoRAs. The network itself lives in the `ModelManager` and is fetched
//! per call (so it can be evicted between prompts); each family's handle (`WanNet`, `FluxNet`)
//! wraps one of these and says how to build its network from the weights.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::Kind;

use super::loading::{component, component_bytes, compute_dtype, lora_options, model_key};
use super::weights::Weights;
use crate::runtime::detect::Detected;
use crate::runtime::lora::{load_lora_files, unet_key_map};
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;

/// UNETLoader's `weight_dtype`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightDtype {
    Default,
    Fp8E4m3fn,
    Fp8E4m3fnFast,
    Fp8E5m2,
}

impl WeightDtype {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "default" => Self::Default,
            "fp8_e4m3fn" => Self::Fp8E4m3fn,
            "fp8_e4m3fn_fast" => Self::Fp8E4m3fnFast,
            "fp8_e5m2" => Self::Fp8E5m2,
            other => bail!("unknown weight_dtype {other}"),
        })
    }

    fn cast(self) -> Option<(Kind, bool)> {
        match self {
            Self::Default => None,
            Self::Fp8E4m3fn => Some((Kind::Float8e4m3fn, false)),
            Self::Fp8E4m3fnFast => Some((Kind::Float8e4m3fn, true)),
            Self::Fp8E5m2 => Some((Kind::Float8e5m2, false)),
        }
    }
}

#[derive(Clone)]
pub struct DiffusionFile {
    pub manager: Arc<ModelManager>,
    path: PathBuf,
    /// The component's detection: key prefix, ComfyUI model class, config.
    pub detected: Detected,
    weight_dtype: WeightDtype,
    loras: Vec<(PathBuf, f64)>,
    /// What the weights take on the device (the manager's budget unit), read once at open: the
    /// network is fetched on every step.
    bytes: u64,
}

impl DiffusionFile {
    /// Reads the file's header and detects its diffusion model (fails in the loader node on
    /// files that hold none).
    pub fn open(
        manager: Arc<ModelManager>,
        path: &Path,
        weight_dtype: WeightDtype,
    ) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let detected = component(&file, "diffusion_model")?;
        Ok(Self {
            bytes: component_bytes(&file, &detected.prefix, compute_dtype(manager.device())),
            manager,
            path: path.to_path_buf(),
            detected,
            weight_dtype,
            loras: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same file with one more LoRA merged at load (LoraLoaderModelOnly).
    pub fn with_lora(&self, path: &Path, strength: f64) -> Self {
        let mut next = self.clone();
        next.loras.push((path.to_path_buf(), strength));
        next
    }

    fn key(&self) -> String {
        model_key(
            "diffusion_model",
            &self.path,
            &format!("{:?}|{}", self.weight_dtype, lora_options(&self.loras)),
        )
    }

    /// The network `build` makes of the weights (LoRAs merged, FP8 cast applied), resident
    /// in the manager until evicted.
    pub fn load<T: Send + 'static>(
        &self,
        build: impl FnOnce(&Weights) -> Result<T>,
    ) -> Result<Arc<Loaded<T>>> {
        let device = self.manager.device();
        let dtype = compute_dtype(device);
        let prefix = &self.detected.prefix;
        self.manager
            .get_or_load(&self.key(), self.bytes, |placement| {
                let file = SafetensorsFile::open(&self.path)?;
                let model_keys: Vec<String> = file
                    .names()
                    .filter_map(|n| n.strip_prefix(prefix.as_str()))
                    .map(|n| format!("diffusion_model.{n}"))
                    .collect();
                let key_map = unet_key_map(model_keys.iter().map(String::as_str));
                let loras = load_lora_files(&self.loras, &key_map, true)?;
                let mut weights = Weights::new(&file, prefix, dtype, device)?;
                weights.cast_linear = self.weight_dtype.cast();
                weights.loras = loras.iter().map(|(l, s)| (&l.patches, *s)).collect();
                weights.placement = placement;
                build(&weights)
            })
    }
}
