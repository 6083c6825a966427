//! The file side of a MODEL handle: which diffusion-model component of which file, loaded with
//! which weight dtype and LoRAs. The network itself lives in the `ModelManager` and is fetched
//! per call (so it can be evicted between prompts); each family's handle (`WanNet`, `FluxNet`)
//! wraps one of these and says how to build its network from the weights.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind};

use super::loading::{component, component_bytes, lora_options, model_key, stored_dtype};
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

/// ComfyUI's `supported_inference_dtypes` of a model class, in its order of preference (the
/// base class's fp16-first list unless the class overrides it). MAGI-1 and Waver, which
/// ComfyUI does not run, take bf16 as their reference code does.
fn supported_inference_dtypes(architecture: &str) -> &'static [Kind] {
    match architecture {
        "WAN21_T2V" | "WAN21_I2V" | "WAN21_FunControl2V" | "WAN21_Vace" | "WAN21_Camera"
        | "WAN21_HuMo" | "WAN21_CausalAR_T2V" | "WAN22_Camera" | "WAN22_T2V" | "SDXL"
        | "SDXLRefiner" | "LotusD" => &[Kind::Half, Kind::BFloat16, Kind::Float],
        "Flux" => &[Kind::BFloat16, Kind::Half, Kind::Float],
        _ => &[Kind::BFloat16, Kind::Float],
    }
}

/// The dtype ComfyUI computes a diffusion model in (`unet_dtype` with `unet_manual_cast`):
/// float32 on the CPU; on a GPU fp16 where the weights are stored in fp16 and the class
/// supports it, else the class's first choice. So Wan and SDXL run in fp16 whatever their file
/// holds (bf16, or FP8 cast up per layer), FLUX in bf16 unless its file is fp16.
pub fn diffusion_compute_dtype(architecture: &str, stored: Option<Kind>, device: Device) -> Kind {
    if device == Device::Cpu {
        return Kind::Float;
    }
    let supported = supported_inference_dtypes(architecture);
    if stored == Some(Kind::Half) && supported.contains(&Kind::Half) {
        return Kind::Half;
    }
    supported[0]
}

#[derive(Clone)]
pub struct DiffusionFile {
    pub manager: Arc<ModelManager>,
    path: PathBuf,
    /// The component's detection: key prefix, ComfyUI model class, config.
    pub detected: Detected,
    /// What the network computes in on the manager's device.
    pub dtype: Kind,
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
        // UNETLoader's FP8 choices store the weights in FP8, which ComfyUI casts up to the
        // class's first choice, whatever the file held.
        let stored = match weight_dtype.cast() {
            Some((kind, _)) => Some(kind),
            None => stored_dtype(&file, &detected.prefix),
        };
        let dtype = manager.unet_dtype().unwrap_or_else(|| {
            diffusion_compute_dtype(&detected.architecture, stored, manager.device())
        });
        Ok(Self {
            bytes: component_bytes(&file, &detected.prefix, dtype),
            dtype,
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
        let (device, dtype) = (self.manager.device(), self.dtype);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_dtype_follows_comfyui_per_model_class() {
        let gpu = Device::Cuda(0);
        let fp16_first = [
            "WAN21_T2V",
            "WAN21_I2V",
            "WAN21_FunControl2V",
            "WAN21_Vace",
            "WAN21_Camera",
            "WAN22_Camera",
            "WAN22_T2V",
            "SDXL",
            "SDXLRefiner",
        ];
        for wan in fp16_first {
            for stored in [Kind::Half, Kind::BFloat16, Kind::Float8e4m3fn, Kind::Float] {
                assert_eq!(diffusion_compute_dtype(wan, Some(stored), gpu), Kind::Half);
            }
        }
        let flux = |stored| diffusion_compute_dtype("Flux", Some(stored), gpu);
        assert_eq!(flux(Kind::Half), Kind::Half);
        assert_eq!(flux(Kind::BFloat16), Kind::BFloat16);
        assert_eq!(flux(Kind::Float8e4m3fn), Kind::BFloat16);
        // LTX lists no fp16, so an fp16 file still runs in bf16.
        assert_eq!(
            diffusion_compute_dtype("LTXV", Some(Kind::Half), gpu),
            Kind::BFloat16
        );
        for class in ["WAN21_T2V", "Flux", "LTXV"] {
            assert_eq!(
                diffusion_compute_dtype(class, Some(Kind::Half), Device::Cpu),
                Kind::Float
            );
        }
    }
}
