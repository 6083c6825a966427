//! The MODEL a Wan UNETLoader returns: which file, weight dtype and LoRAs — the DiT itself lives
//! in the `ModelManager` and is fetched per call, so it can be evicted between prompts. What
//! ComfyUI's `WAN21`/`WAN22` model classes add around the DiT is here: the I2V concat
//! conditioning (mask + image latent), CLIP-vision tokens, and Wan 2.2's per-frame timesteps
//! from the inpainting mask.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::dit::{WanConfig, WanModel};
use crate::models::loading::{component, component_bytes, compute_dtype, model_key};
use crate::models::weights::Weights;
use crate::runtime::lora::{load_lora, unet_key_map, LoadedLora};
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;
use crate::sampling::latent_format::{process_in_blocks, LatentFormat};
use crate::sampling::model::{repeat_to_batch, CondEntry, DiffusionNet};
use crate::upscale::common_upscale;

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
pub struct WanNet {
    manager: Arc<ModelManager>,
    path: PathBuf,
    prefix: String,
    config: WanConfig,
    /// ComfyUI's model class: `WAN21_T2V`, `WAN21_I2V` or `WAN22_T2V` (TI2V 5B).
    architecture: String,
    weight_dtype: WeightDtype,
    loras: Vec<(PathBuf, f64)>,
    format: Arc<LatentFormat>,
    /// What the weights take on the device (the manager's budget unit), read once at open: the
    /// network is fetched on every step.
    bytes: u64,
}

impl WanNet {
    /// Reads the file's header: fails here (in the loader node) on files that are not Wan.
    pub fn open(
        manager: Arc<ModelManager>,
        path: &Path,
        weight_dtype: WeightDtype,
    ) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let found = component(&file, "diffusion_model")?;
        if !found.architecture.starts_with("WAN") {
            bail!(
                "{} is a {} model, not Wan",
                path.display(),
                found.architecture
            );
        }
        let config = WanConfig::from_detected(&found.config)?;
        let format = if found.architecture == "WAN22_T2V" {
            LatentFormat::wan22()
        } else {
            LatentFormat::wan21()
        };
        Ok(Self {
            bytes: component_bytes(&file, &found.prefix, compute_dtype(manager.device())),
            manager,
            path: path.to_path_buf(),
            prefix: found.prefix,
            config,
            architecture: found.architecture,
            weight_dtype,
            loras: Vec::new(),
            format: Arc::new(format),
        })
    }

    /// LoraLoaderModelOnly: the same model with one more LoRA merged at load.
    pub fn with_lora(&self, path: &Path, strength: f64) -> Self {
        let mut next = self.clone();
        next.loras.push((path.to_path_buf(), strength));
        next
    }

    fn is_wan22(&self) -> bool {
        self.architecture == "WAN22_T2V"
    }

    fn key(&self) -> String {
        let loras: Vec<String> = self
            .loras
            .iter()
            .map(|(p, s)| format!("{}@{s}", p.display()))
            .collect();
        model_key(
            "diffusion_model",
            &self.path,
            &format!("{:?}|{}", self.weight_dtype, loras.join(",")),
        )
    }

    fn loaded(&self) -> Result<Arc<Loaded<WanModel>>> {
        let device = self.manager.device();
        let dtype = compute_dtype(device);
        self.manager.get_or_load(&self.key(), self.bytes, |_| {
            let file = SafetensorsFile::open(&self.path)?;
            let model_keys: Vec<String> = file
                .names()
                .filter_map(|n| n.strip_prefix(&self.prefix))
                .map(|n| format!("diffusion_model.{n}"))
                .collect();
            let key_map = unet_key_map(model_keys.iter().map(String::as_str));
            let loras: Vec<(LoadedLora, f64)> = self
                .loras
                .iter()
                .map(|(path, strength)| {
                    let lora = load_lora(&SafetensorsFile::open(path)?, &key_map)?;
                    if !lora.unused.is_empty() {
                        log::warn!(
                            "{}: {} LoRA keys not loaded (first: {})",
                            path.display(),
                            lora.unused.len(),
                            lora.unused[0]
                        );
                    }
                    Ok((lora, *strength))
                })
                .collect::<Result<_>>()?;
            let mut weights = Weights::new(&file, &self.prefix, dtype, device)?;
            weights.cast_linear = self.weight_dtype.cast();
            weights.loras = loras.iter().map(|(l, s)| (&l.patches, *s)).collect();
            WanModel::load(&weights, self.config.clone())
        })
    }

    /// `WAN21.concat_cond`: what goes beside the noisy latent on the channel axis, if the
    /// model takes more channels than the latent has.
    fn concat(&self, x: &Tensor, cond: &CondEntry) -> Option<Tensor> {
        let size = x.size();
        let extra = self.config.in_dim - size[1];
        if extra <= 0 {
            return None;
        }
        let (b, t, h, w) = (size[0], size[2], size[3], size[4]);
        let options = (Kind::Float, x.device());
        let image = match cond.extra("concat_latent_image") {
            None => Tensor::zeros([b, extra, t, h, w], options),
            Some(image) => {
                let image = image.to_device(x.device()).to_kind(Kind::Float);
                let image = upscale_frames(&image, h, w);
                repeat_to_batch(&process_in_blocks(&self.format, &image), b)
            }
        };
        let image_channels = image.size()[1];
        if extra != image_channels + 4 && (!self.config.i2v || extra == image_channels) {
            return Some(image);
        }
        let image = image.narrow(1, 0, image_channels.min(extra - 4));
        let mask = cond
            .extra("concat_mask")
            .or_else(|| cond.extra("denoise_mask"));
        let mask = match mask {
            None => Tensor::zeros([b, 4, t, h, w], options),
            Some(mask) => {
                let mut m = mask.to_device(x.device()).to_kind(Kind::Float);
                if m.size()[1] != 4 {
                    m = m.mean_dim(1, true, Kind::Float);
                }
                let m = upscale_frames(&(1.0 - m), h, w);
                let frames = m.size()[2];
                let m = if frames < t {
                    m.constant_pad_nd([0, 0, 0, 0, 0, t - frames])
                } else {
                    m
                };
                let m = if m.size()[1] == 1 {
                    m.repeat([1, 4, 1, 1, 1])
                } else {
                    m
                };
                repeat_to_batch(&m, b)
            }
        };
        Some(Tensor::cat(&[mask, image], 1))
    }

    /// `WAN22.process_timestep`: each latent frame's timestep scaled by how much of it is
    /// denoised (0 for frames given as images).
    fn timesteps(&self, t: &Tensor, cond: &CondEntry) -> Tensor {
        match cond.extra("denoise_mask").filter(|_| self.is_wan22()) {
            Some(mask) => {
                let b = t.size()[0];
                let mask = mask.to_device(t.device()).to_kind(Kind::Float);
                (mask.mean_dim([1i64, 3, 4].as_slice(), true, Kind::Float)
                    * t.view([b, 1, 1, 1, 1]))
                .reshape([b, -1])
            }
            None => t.shallow_clone(),
        }
    }
}

/// Bilinear, center-cropped resize of every frame to `h × w` (ComfyUI's `common_upscale` on a
/// video latent); unchanged when the size already matches.
fn upscale_frames(x: &Tensor, h: i64, w: i64) -> Tensor {
    let s = x.size();
    if s[3] == h && s[4] == w {
        return x.shallow_clone();
    }
    let frames = x
        .permute([0, 2, 1, 3, 4])
        .reshape([s[0] * s[2], s[1], s[3], s[4]]);
    let up = common_upscale(&frames, w, h, "bilinear", "center").expect("bilinear is supported");
    up.reshape([s[0], s[2], s[1], h, w])
        .permute([0, 2, 1, 3, 4])
}

impl DiffusionNet for WanNet {
    fn forward(&self, xc: &Tensor, timestep: &Tensor, cond: &CondEntry) -> Result<Tensor> {
        let model = self.loaded()?;
        let device = self.manager.device();
        let x = xc.to_device(device).to_kind(Kind::Float);
        let x = match self.concat(&x, cond) {
            Some(extra) => Tensor::cat(&[x, extra], 1),
            None => x,
        };
        let t = self.timesteps(&timestep.to_device(device), cond);
        let context = cond.context.to_device(device);
        let clip = cond
            .extra("clip_vision_output")
            .map(|c| c.to_device(device));
        let out = model.forward(&x, &t, &context, clip.as_ref())?;
        Ok(out.to_kind(Kind::Float))
    }

    fn latent_channels(&self) -> i64 {
        self.format.channels
    }

    fn latent_format(&self) -> Option<&LatentFormat> {
        Some(&self.format)
    }

    fn device(&self) -> Device {
        self.manager.device()
    }

    fn keeps_clean_latent(&self) -> bool {
        self.is_wan22()
    }

    fn with_lora(&self, path: &Path, strength: f64) -> Option<Arc<dyn DiffusionNet>> {
        Some(Arc::new(WanNet::with_lora(self, path, strength)))
    }
}
