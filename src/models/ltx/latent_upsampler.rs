//! LTX's latent upsampler (`comfy/ldm/lightricks/latent_upsampler.py`: `LatentUpsampler`), the
//! LATENT_UPSCALE_MODEL LatentUpscaleModelLoader reads (layout from the file's `config`
//! metadata): a convolution, GroupNorm and SiLU, residual blocks, an upsampler (spatial ×2 by
//! convolution and pixel shuffle per frame, LTX-2's rational resampler that blurs down after
//! shuffling, or temporal ×2), more residual blocks and a final convolution. It works on
//! un-normalized VAE latents.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::models::layers::Norm;
use crate::models::loading::{load_component, LoadTarget, Precision};
use crate::models::weights::Weights;
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;

const NORM_EPS: f64 = 1e-5;

/// How the middle features are resampled.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Resample {
    /// ×2 in space: a convolution to 4× the channels, then a 2×2 pixel shuffle, per frame.
    Spatial,
    /// `num / den` in space: a convolution to num² × the channels, a num×num pixel shuffle,
    /// then a binomial blur with stride `den`, per frame.
    Rational { num: i64, den: i64 },
    /// ×2 in time: a 3-D convolution to 2× the channels, a time shuffle, the first frame dropped.
    Temporal,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UpsamplerConfig {
    mid_channels: i64,
    blocks: i64,
    /// 2: every frame on its own; 3: 3-D convolutions.
    dims: i64,
    resample: Resample,
}

impl UpsamplerConfig {
    /// `LatentUpsampler.from_config` over the file's `config` metadata.
    fn from_metadata(config: &Value) -> Result<Self> {
        let int =
            |key: &str, default: i64| config.get(key).and_then(Value::as_i64).unwrap_or(default);
        let flag =
            |key: &str, default: bool| config.get(key).and_then(Value::as_bool).unwrap_or(default);
        let scale = config
            .get("spatial_scale")
            .and_then(Value::as_f64)
            .unwrap_or(2.0);
        let resample = match (
            flag("spatial_upsample", true),
            flag("temporal_upsample", false),
        ) {
            (true, true) => {
                bail!("latent upsamplers that scale space and time at once are not supported yet")
            }
            (true, false) if flag("rational_resampler", false) => {
                let (num, den) = match scale {
                    0.75 => (3, 4),
                    1.5 => (3, 2),
                    2.0 => (2, 1),
                    4.0 => (4, 1),
                    other => bail!("unsupported spatial_scale {other} (0.75, 1.5, 2 or 4)"),
                };
                Resample::Rational { num, den }
            }
            (true, false) => Resample::Spatial,
            (false, true) => Resample::Temporal,
            (false, false) => bail!("the latent upsampler scales neither space nor time"),
        };
        let dims = int("dims", 2);
        if ![2, 3].contains(&dims) {
            bail!("latent upsamplers have 2 or 3 dims, not {dims}");
        }
        if resample == Resample::Temporal && dims != 3 {
            bail!("a temporal latent upsampler needs 3-D convolutions");
        }
        Ok(Self {
            mid_channels: int("mid_channels", 128),
            blocks: int("num_blocks_per_stage", 4),
            dims,
            resample,
        })
    }
}

/// A convolution with padding 1 (2-D or 3-D by its weight).
struct Conv {
    weight: Tensor,
    bias: Tensor,
}

impl Conv {
    fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{name}.weight"))?,
            bias: w.tensor(&format!("{name}.bias"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        if self.weight.dim() == 5 {
            x.conv3d(
                &self.weight,
                Some(&self.bias),
                [1, 1, 1],
                [1, 1, 1],
                [1, 1, 1],
                1,
            )
        } else {
            x.conv2d(&self.weight, Some(&self.bias), [1, 1], [1, 1], [1, 1], 1)
        }
    }
}

struct ResBlock {
    conv1: Conv,
    norm1: Norm,
    conv2: Conv,
    norm2: Norm,
}

impl ResBlock {
    fn load(w: &Weights, name: &str) -> Result<Self> {
        let part = |p: &str| format!("{name}.{p}");
        Ok(Self {
            conv1: Conv::load(w, &part("conv1"))?,
            norm1: Norm::load(w, &part("norm1"))?,
            conv2: Conv::load(w, &part("conv2"))?,
            norm2: Norm::load(w, &part("norm2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.norm1.group(&self.conv1.forward(x), NORM_EPS).silu();
        let h = self.norm2.group(&self.conv2.forward(&h), NORM_EPS);
        (h + x).silu()
    }
}

/// `[b, c, f, h, w]` → `[b·f, c, h, w]` and back.
fn frames(x: &Tensor) -> Tensor {
    let (b, c, f, h, w) = x.size5().expect("a video latent");
    x.permute([0, 2, 1, 3, 4]).reshape([b * f, c, h, w])
}

fn unframes(x: &Tensor, b: i64) -> Tensor {
    let (bf, c, h, w) = x.size4().expect("frames");
    x.reshape([b, bf / b, c, h, w]).permute([0, 2, 1, 3, 4])
}

/// The fixed `[1, 4, 6, 4, 1]` binomial blur with `stride`, per channel.
fn blur_down(x: &Tensor, stride: i64) -> Tensor {
    if stride == 1 {
        return x.shallow_clone();
    }
    let k = Tensor::from_slice(&[1.0f32, 4.0, 6.0, 4.0, 1.0]);
    let k2 = k.unsqueeze(1) * k.unsqueeze(0);
    let k2 = (&k2 / k2.sum(Kind::Float))
        .to_kind(x.kind())
        .to_device(x.device());
    let channels = x.size()[1];
    let weight = k2.view([1, 1, 5, 5]).expand([channels, 1, 5, 5], false);
    x.conv2d(
        &weight,
        None::<&Tensor>,
        [stride, stride],
        [2, 2],
        [1, 1],
        channels,
    )
}

struct Network {
    config: UpsamplerConfig,
    initial_conv: Conv,
    initial_norm: Norm,
    res_blocks: Vec<ResBlock>,
    upsampler: Conv,
    post_blocks: Vec<ResBlock>,
    final_conv: Conv,
}

impl Network {
    fn load(w: &Weights, config: UpsamplerConfig) -> Result<Self> {
        let blocks = |name: &str| {
            (0..config.blocks)
                .map(|n| ResBlock::load(w, &format!("{name}.{n}")))
                .collect::<Result<Vec<_>>>()
        };
        let upsampler = match config.resample {
            Resample::Rational { .. } => "upsampler.conv",
            Resample::Spatial | Resample::Temporal => "upsampler.0",
        };
        Ok(Self {
            initial_conv: Conv::load(w, "initial_conv")?,
            initial_norm: Norm::load(w, "initial_norm")?,
            res_blocks: blocks("res_blocks")?,
            upsampler: Conv::load(w, upsampler)?,
            post_blocks: blocks("post_upsample_res_blocks")?,
            final_conv: Conv::load(w, "final_conv")?,
            config,
        })
    }

    /// `LatentUpsampler.forward` on an un-normalized latent `[b, c, f, h, w]`.
    fn forward(&self, latent: &Tensor) -> Tensor {
        let b = latent.size()[0];
        let per_frame = self.config.dims == 2;
        let mut x = if per_frame {
            frames(latent)
        } else {
            latent.shallow_clone()
        };
        x = self
            .initial_norm
            .group(&self.initial_conv.forward(&x), NORM_EPS)
            .silu();
        for block in &self.res_blocks {
            x = block.forward(&x);
        }
        x = match self.config.resample {
            Resample::Temporal => {
                let y = self.upsampler.forward(&x);
                let (b, c2, f, h, w) = y.size5().expect("3-D features");
                y.reshape([b, c2 / 2, 2, f, h, w])
                    .permute([0, 1, 3, 2, 4, 5])
                    .reshape([b, c2 / 2, f * 2, h, w])
                    .narrow(2, 1, f * 2 - 1)
            }
            Resample::Spatial | Resample::Rational { .. } => {
                let (num, den) = match self.config.resample {
                    Resample::Rational { num, den } => (num, den),
                    _ => (2, 1),
                };
                let flat = if per_frame {
                    x.shallow_clone()
                } else {
                    frames(&x)
                };
                let y = blur_down(&self.upsampler.forward(&flat).pixel_shuffle(num), den);
                if per_frame {
                    y
                } else {
                    unframes(&y, b)
                }
            }
        };
        for block in &self.post_blocks {
            x = block.forward(&x);
        }
        let x = self.final_conv.forward(&x);
        if per_frame {
            unframes(&x, b)
        } else {
            x
        }
    }
}

/// The LATENT_UPSCALE_MODEL value: an LTX latent upsampler file, loaded through the manager when
/// it runs.
pub struct LatentUpscaleModel {
    manager: Arc<ModelManager>,
    path: PathBuf,
    config: UpsamplerConfig,
}

impl LatentUpscaleModel {
    pub fn open(manager: Arc<ModelManager>, path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        if !file.contains("post_upsample_res_blocks.0.conv2.bias") {
            bail!(
                "{} is not a latent upscale model this server runs (LTX's latent upsamplers are)",
                path.display()
            );
        }
        let config = file
            .metadata()
            .get("config")
            .map(|c| serde_json::from_str(c))
            .transpose()
            .context("the upsampler's config metadata is not JSON")?
            .unwrap_or(Value::Null);
        Ok(Self {
            manager,
            path: path.to_path_buf(),
            config: UpsamplerConfig::from_metadata(&config)?,
        })
    }

    fn loaded(&self) -> Result<Arc<Loaded<Network>>> {
        let device = self.manager.device();
        // ComfyUI runs it in its `vae_dtype`.
        let target = LoadTarget {
            kind: "latent_upscale_model",
            path: &self.path,
            prefix: "",
            device,
            precision: Precision::vae(device, None),
        };
        let config = self.config.clone();
        load_component(&self.manager, &target, None, move |w| {
            Network::load(w, config)
        })
    }

    /// The upsampled latent of an un-normalized latent `[b, c, f, h, w]`, float32 on the CPU.
    pub fn upsample(&self, latent: &Tensor) -> Result<Tensor> {
        let network = self.loaded()?;
        let device = self.manager.device();
        let kind = network.initial_conv.weight.kind();
        let out = network.forward(&latent.to_device(device).to_kind(kind));
        Ok(out.to_kind(Kind::Float).to_device(Device::Cpu))
    }
}
