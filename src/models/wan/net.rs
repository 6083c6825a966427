//! The MODEL a Wan UNETLoader returns: a `DiffusionFile` (file, weight dtype, LoRAs; the DiT is
//! fetched from the `ModelManager` per call) and what ComfyUI's `WAN21`/`WAN22` model classes add around the DiT is here: the I2V concat
//! conditioning (mask + image latent), CLIP-vision tokens, and Wan 2.2's per-frame timesteps
//! from the inpainting mask.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::dit::{WanConfig, WanModel};
use crate::models::diffusion_file::DiffusionFile;
use crate::runtime::manager::Loaded;
use crate::sampling::latent_format::{process_in_blocks, LatentFormat};
use crate::sampling::model::{repeat_to_batch, CondEntry, DiffusionNet};
use crate::upscale::common_upscale;

#[derive(Clone)]
pub struct WanNet {
    file: DiffusionFile,
    config: WanConfig,
    format: Arc<LatentFormat>,
}

impl WanNet {
    /// Fails here (in the loader node) on files that are not Wan.
    pub fn open(file: DiffusionFile) -> Result<Self> {
        let found = &file.detected;
        if !found.architecture.starts_with("WAN") {
            bail!(
                "{} is a {} model, not Wan",
                file.path().display(),
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
            file,
            config,
            format: Arc::new(format),
        })
    }

    /// ComfyUI's model class `WAN22_T2V` (TI2V 5B).
    fn is_wan22(&self) -> bool {
        self.file.detected.architecture == "WAN22_T2V"
    }

    fn loaded(&self) -> Result<Arc<Loaded<WanModel>>> {
        self.file.load(|w| WanModel::load(w, self.config.clone()))
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
        let device = self.file.manager.device();
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

    fn latent_format(&self) -> Option<&LatentFormat> {
        Some(&self.format)
    }

    fn device(&self) -> Device {
        self.file.manager.device()
    }

    fn keeps_clean_latent(&self) -> bool {
        self.is_wan22()
    }

    fn with_lora(&self, path: &Path, strength: f64) -> Option<Arc<dyn DiffusionNet>> {
        Some(Arc::new(WanNet {
            file: self.file.with_lora(path, strength),
            ..self.clone()
        }))
    }
}
