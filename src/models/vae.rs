//! ComfyUI's VAE value: pixels `[N, H, W, C]` in 0..1 ↔ latents, as `comfy/sd.py`'s `VAE` does
//! it (crop to the latent grid, ×2−1 in, clamp out), with the network behind the
//! `ModelManager`. Video VAEs (Wan 2.1 / 2.2, LTX) take the N images as one video
//! `[1, z, T, h, w]`; image VAEs (FLUX's AE, SDXL's) encode each image `[N, z, h, w]`. The
//! `pixel_space` VAE of pixel-space models leaves the pixels as they are (`[N, 3, H, W]` in
//! −1..1).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::kl_vae::KlVae;
use super::loading::{component, load_component, LoadTarget, Precision};
use super::ltx::vae_config::VaeConfig;
use super::ltx::video_vae::LtxVideoVae;
use super::tiled::{tiled_scale, Scale};
use super::wan::vae::WanVae;
use super::weights::Weights;
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;

/// Which network the file holds.
#[derive(Clone, Debug, PartialEq)]
enum Family {
    Wan,
    Ltx(VaeConfig),
    Kl,
    /// `comfy/pixel_space_convert.py`: no network.
    PixelSpace,
}

/// A loaded video VAE: `[B, 3, T, H, W]` in −1..1 ↔ latent `[B, z, t, h, w]`.
enum VideoNet {
    Wan(Arc<Loaded<WanVae>>),
    Ltx(Arc<Loaded<LtxVideoVae>>),
}

impl VideoNet {
    fn encode(&self, video: &Tensor) -> Tensor {
        match self {
            VideoNet::Wan(v) => v.encode(video),
            VideoNet::Ltx(v) => v.encode(video),
        }
    }

    fn decode(&self, latent: &Tensor) -> Tensor {
        match self {
            VideoNet::Wan(v) => v.decode(latent),
            VideoNet::Ltx(v) => v.decode(latent),
        }
    }
}

pub struct Vae {
    manager: Arc<ModelManager>,
    family: Family,
    path: PathBuf,
    prefix: String,
    /// Pixels per latent cell along each spatial side (8 for Wan 2.1, 16 for 2.2, 32 for LTX).
    pub spatial_ratio: i64,
    /// Video frames per latent frame after the first (4 for Wan, 8 for LTX, 1 for images).
    pub temporal_ratio: i64,
    pub latent_channels: i64,
}

impl Vae {
    pub fn open(manager: Arc<ModelManager>, path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let found = component(&file, "vae")?;
        let (family, spatial_ratio, temporal_ratio, latent_channels) =
            match found.architecture.as_str() {
                "wan21_vae" => (Family::Wan, 8, 4, 16),
                "wan22_vae" => (Family::Wan, 16, 4, 48),
                "flux_vae" => (Family::Kl, 8, 1, 16),
                "sdxl_vae" => (Family::Kl, 8, 1, 4),
                "ltxv_vae" => {
                    let version = found.config["version"].as_u64().unwrap_or(0) as u8;
                    let config = VaeConfig::new(found.config.get("metadata"), version)
                        .with_context(|| path.display().to_string())?;
                    let ratios = (config.spatial_ratio(), config.temporal_ratio());
                    let channels = found.config["latent_channels"].as_i64().unwrap_or(128);
                    (Family::Ltx(config), ratios.0, ratios.1, channels)
                }
                other => bail!(
                    "{}: the {other} VAE is not supported yet (Wan 2.1/2.2, LTX, FLUX and SDXL \
                     VAEs are)",
                    path.display()
                ),
            };
        Ok(Self {
            manager,
            family,
            path: path.to_path_buf(),
            prefix: found.prefix,
            spatial_ratio,
            temporal_ratio,
            latent_channels,
        })
    }

    /// An LTX VAE's per-channel latent statistics (mean, std) `[channels]`, float32 on the CPU,
    /// which LTXVLatentUpsampler un-normalizes and normalizes by.
    pub fn latent_statistics(&self) -> Result<(Tensor, Tensor)> {
        if !matches!(self.family, Family::Ltx(_)) {
            bail!("this is not an LTX VAE, which has per-channel latent statistics");
        }
        let file = SafetensorsFile::open(&self.path)?;
        let stat = |name: &str| -> Result<Tensor> {
            let key = format!("{}per_channel_statistics.{name}", self.prefix);
            Ok(file.tensor(&key, Device::Cpu)?.to_kind(Kind::Float))
        };
        Ok((stat("mean-of-means")?, stat("std-of-means")?))
    }

    /// VAELoader's `pixel_space` choice.
    pub fn pixel_space(manager: Arc<ModelManager>) -> Self {
        Self {
            manager,
            family: Family::PixelSpace,
            path: PathBuf::new(),
            prefix: String::new(),
            spatial_ratio: 1,
            temporal_ratio: 1,
            latent_channels: 3,
        }
    }

    fn device(&self) -> Device {
        self.manager.vae_device()
    }

    fn precision(&self) -> Precision {
        Precision::vae(self.device(), self.manager.vae_dtype())
    }

    fn dtype(&self) -> Kind {
        self.precision().compute
    }

    /// The network (`WanVae` or `KlVae`) through the manager.
    fn loaded<T: Send + 'static>(
        &self,
        build: impl FnOnce(&Weights) -> Result<T>,
    ) -> Result<Arc<Loaded<T>>> {
        let target = LoadTarget {
            kind: "vae",
            path: &self.path,
            prefix: &self.prefix,
            device: self.device(),
            precision: self.precision(),
        };
        load_component(&self.manager, &target, None, build)
    }

    /// `VAEEncode`: images `[N, H, W, C]` → latent `[1, z, T, h, w]` (one video of N frames) or
    /// `[N, z, h, w]` (image VAEs).
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let pixels = self.crop_to_grid(pixels);
        if self.family == Family::PixelSpace {
            let images = pixels.narrow(3, 0, 3).permute([0, 3, 1, 2]);
            let latent = images.to_kind(self.dtype()) * 2.0 - 1.0;
            return Ok(latent.to_kind(Kind::Float));
        }
        if self.family == Family::Kl {
            let images = pixels
                .narrow(3, 0, 3)
                .permute([0, 3, 1, 2])
                .to_device(self.device())
                .to_kind(self.dtype());
            let latent = self.loaded(KlVae::load)?.encode(&(images * 2.0 - 1.0));
            return Ok(latent.to_kind(Kind::Float).to_device(Device::Cpu));
        }
        let video = pixels
            .narrow(3, 0, 3)
            .permute([3, 0, 1, 2])
            .unsqueeze(0)
            .to_device(self.device())
            .to_kind(self.dtype());
        let latent = self.video_net()?.encode(&(video * 2.0 - 1.0));
        Ok(latent.to_kind(Kind::Float).to_device(Device::Cpu))
    }

    /// The network of a video VAE.
    fn video_net(&self) -> Result<VideoNet> {
        Ok(match &self.family {
            Family::Ltx(config) => {
                let config = config.clone();
                VideoNet::Ltx(self.loaded(move |w| LtxVideoVae::load(w, config))?)
            }
            _ => VideoNet::Wan(self.loaded(WanVae::load)?),
        })
    }

    /// ComfyUI's `vae_encode_crop_pixels`: height and width cut down to whole latent cells,
    /// centered.
    fn crop_to_grid(&self, pixels: &Tensor) -> Tensor {
        let mut out = pixels.shallow_clone();
        for dim in [1, 2] {
            let size = out.size()[dim];
            let keep = size / self.spatial_ratio * self.spatial_ratio;
            if keep != size {
                out = out.narrow(dim as i64, (size % self.spatial_ratio) / 2, keep);
            }
        }
        out
    }

    /// `[B, 3, T, H, W]` in −1..1 → images `[B·T, H, W, 3]` in 0..1.
    fn to_images(video: &Tensor) -> Tensor {
        let s = video.size();
        ((video.to_kind(Kind::Float) + 1.0) / 2.0)
            .clamp(0.0, 1.0)
            .permute([0, 2, 3, 4, 1])
            .reshape([s[0] * s[2], s[3], s[4], s[1]])
    }

    /// `[B, 3, H, W]` in −1..1 → images `[B, H, W, 3]` in 0..1.
    fn image_batch(pixels: &Tensor) -> Tensor {
        ((pixels.to_kind(Kind::Float) + 1.0) / 2.0)
            .clamp(0.0, 1.0)
            .permute([0, 2, 3, 1])
    }

    /// `VAEDecode`: latent `[B, z, T, h, w]` → images `[B·(1+r(T−1)), H, W, 3]` (r the
    /// temporal ratio), or for image VAEs `[B, z, h, w]` → `[B, H, W, 3]`.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        if self.family == Family::PixelSpace {
            return Ok(Self::image_batch(&latent.to_kind(self.dtype())));
        }
        if self.family == Family::Kl {
            let vae = self.loaded(KlVae::load)?;
            let pixels = vae.decode(&latent.to_device(self.device()).to_kind(self.dtype()));
            return Ok(Self::image_batch(&pixels.to_device(Device::Cpu)));
        }
        let video = self
            .video_net()?
            .decode(&latent.to_device(self.device()).to_kind(self.dtype()));
        Ok(Self::to_images(&video.to_device(Device::Cpu)))
    }

    /// `VAE.decode_tiled` for video: latent tiles of `tile_t × tile × tile` cells with the
    /// given overlaps, blended.
    pub fn decode_tiled(
        &self,
        latent: &Tensor,
        tile: i64,
        overlap: i64,
        tile_t: i64,
        overlap_t: i64,
    ) -> Result<Tensor> {
        if self.family == Family::PixelSpace {
            // Each pixel decodes alone: tiles would give the same image.
            return self.decode(latent);
        }
        let (device, dtype) = (self.device(), self.dtype());
        let space = Scale {
            factor: self.spatial_ratio,
            trim: 0,
        };
        if self.family == Family::Kl {
            let vae = self.loaded(KlVae::load)?;
            let mut decode = |t: &Tensor| Ok(vae.decode(&t.to_device(device).to_kind(dtype)));
            let pixels = tiled_scale(
                latent,
                &mut decode,
                &[tile, tile],
                &[overlap, overlap],
                &[space, space],
                3,
            )?;
            return Ok(Self::image_batch(&pixels));
        }
        let vae = self.video_net()?;
        let mut decode = |t: &Tensor| Ok(vae.decode(&t.to_device(device).to_kind(dtype)));
        let time = Scale {
            factor: self.temporal_ratio,
            trim: self.temporal_ratio - 1,
        };
        let video = tiled_scale(
            latent,
            &mut decode,
            &[tile_t.max(2), tile, tile],
            &[overlap_t.max(1), overlap, overlap],
            &[time, space, space],
            3,
        )?;
        Ok(Self::to_images(&video))
    }
}
