//! The MODEL for the UNets: a `DiffusionFile` plus what ComfyUI's `SDXL`, `SDXLRefiner` and
//! `Lotus` model classes add around it. SDXL's ADM vector is CLIP-G's pooled output and the size
//! conditioning (CLIPTextEncodeSDXL's values, else the latent's size ×8 with no crop); the
//! refiner's has the aesthetic score (6, or 2.5 for the negative prompt) in place of the target
//! size. Lotus-D's is its task embedding, and it samples `IMG_TO_IMG` (`lotus.rs`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::lotus;
use super::unclip::unclip_pooled;
use super::unet::Unet;
use crate::engine::value::SharedTensor;
use crate::models::diffusion_file::DiffusionFile;
use crate::models::layers::timestep_embedding;
use crate::sampling::guidance::PROMPT_NEGATIVE;
use crate::sampling::latent_format::LatentFormat;
use crate::sampling::model::{
    repeat_to_batch, BlockSkip, CondEntry, DiffusionNet, UNCLIP_EMBEDS, UNCLIP_PARAMS,
};
use crate::sampling::model_sampling::{ModelSampling, Prediction, Schedule};

/// The conditioning key CLIPTextEncodeSDXL fills: `[1, 6]` = height, width, crop_h, crop_w,
/// target_height, target_width.
pub const SIZE_KEY: &str = "sdxl_size";

/// The refiner's aesthetic score, set by CLIPTextEncodeSDXLRefiner (`[1]`).
pub const AESTHETIC_KEY: &str = "aesthetic_score";

/// `SDXL.encode_adm`: pooled `[b, p]` ⊕ 256 cos/sin features of each size value.
pub fn adm(pooled: &Tensor, sizes: &Tensor) -> Tensor {
    let b = pooled.size()[0];
    // The sizes are made on the host; the pooled output may sit on the device already.
    let sizes = repeat_to_batch(&sizes.to_device(pooled.device()), b);
    let features = timestep_embedding(&sizes.reshape([-1]), 256).reshape([b, -1]);
    Tensor::cat(&[pooled.to_kind(Kind::Float), features], 1)
}

/// The model classes that run the UNet.
#[derive(Clone, Copy, PartialEq)]
enum Class {
    Base,
    Refiner,
    Lotus,
}

#[derive(Clone)]
pub struct SdxlNet {
    file: DiffusionFile,
    format: Arc<LatentFormat>,
    class: Class,
}

impl SdxlNet {
    pub fn open(file: DiffusionFile) -> Result<Self> {
        let (class, format) = match file.detected.architecture.as_str() {
            "SDXL" => (Class::Base, LatentFormat::sdxl()),
            "SDXLRefiner" => (Class::Refiner, LatentFormat::sdxl()),
            "LotusD" => (Class::Lotus, LatentFormat::sd15()),
            other => bail!("{} is a {other} model, not a UNet", file.path().display()),
        };
        Ok(Self {
            file,
            format: Arc::new(format),
            class,
        })
    }

    /// The size (and for the refiner, aesthetic) values of `cond` for a `b × h × w` latent,
    /// one row per batch element: a batched call's entries each keep their own (the refiner
    /// scores a negative prompt 2.5 and a positive one 6 unless the entry sets a score).
    /// They stay on the network's device, where the conditioning already is: a copy to the host
    /// would wait for the GPU at every model call.
    fn size_values(&self, cond: &CondEntry, (b, h, w): (i64, i64, i64)) -> Tensor {
        let (h, w) = ((h * 8) as f32, (w * 8) as f32);
        let device = self.device();
        let rows = |t: &Tensor| repeat_to_batch(&t.to_device(device), b);
        if self.class != Class::Refiner {
            return match cond.extra(SIZE_KEY) {
                Some(s) => rows(s),
                None => rows(&Tensor::from_slice(&[h, w, 0.0, 0.0, h, w]).view([1, 6])),
            };
        }
        let sizes = match cond.extra(SIZE_KEY) {
            Some(s) => rows(s).narrow(1, 0, 4),
            None => rows(&Tensor::from_slice(&[h, w, 0.0, 0.0]).view([1, 4])),
        };
        let score = match (cond.extra(AESTHETIC_KEY), cond.extra(PROMPT_NEGATIVE)) {
            (Some(score), _) => rows(&score.view([-1, 1])),
            (None, Some(negative)) => rows(&(negative.view([-1, 1]) * -3.5 + 6.0)),
            (None, None) => Tensor::full([b, 1], 6.0, (Kind::Float, device)),
        };
        Tensor::cat(&[sizes, score.to_kind(Kind::Float)], 1)
    }

    /// SDXL's EPS prediction (Lotus-D's `IMG_TO_IMG`) over 1000 scaled-linear DDPM steps.
    pub fn sampling(&self) -> ModelSampling {
        let prediction = match self.class {
            Class::Lotus => Prediction::ImgToImg,
            Class::Base | Class::Refiner => Prediction::Eps,
        };
        ModelSampling::new(
            prediction,
            Schedule::Discrete {
                linear_start: 0.00085,
                linear_end: 0.012,
            },
        )
    }

    /// The ADM vector `[b, adm]` for a `b × h × w` latent.
    fn adm(&self, cond: &CondEntry, (b, h, w): (i64, i64, i64)) -> Result<Tensor> {
        if self.class == Class::Lotus {
            return Ok(repeat_to_batch(&lotus::depth_task(), b));
        }
        let pooled = cond
            .pooled
            .as_ref()
            .context("SDXL conditioning needs CLIP-G's pooled output")?;
        Ok(adm(
            &repeat_to_batch(pooled, b),
            &self.size_values(cond, (b, h, w)),
        ))
    }
}

impl DiffusionNet for SdxlNet {
    fn forward(&self, xc: &Tensor, timestep: &Tensor, cond: &CondEntry) -> Result<Tensor> {
        let unet = self.file.load(Unet::load)?;
        let device = self.device();
        let (b, _, h, w) = xc.size4()?;
        let y = self.adm(cond, (b, h, w))?.to_device(device);
        let out = unet.forward(
            &xc.to_device(device),
            &timestep.to_device(device),
            &cond.context.to_device(device),
            Some(&y),
        )?;
        Ok(out.to_kind(Kind::Float))
    }

    fn latent_format(&self) -> Option<&LatentFormat> {
        Some(&self.format)
    }

    /// ComfyUI's UNets have no `dit` block patches.
    fn block_skip(&self) -> BlockSkip {
        BlockSkip::Ignores
    }

    /// `sdxl_pooled`: unCLIP image embeddings replace CLIP-G's pooled output (base and
    /// refiner; Lotus reads no pooled vector).
    fn prepare_entry(&self, entry: &mut CondEntry, seed: u64) {
        if self.class == Class::Lotus {
            return;
        }
        if let (Some(embeds), Some(params)) =
            (entry.extra(UNCLIP_EMBEDS), entry.extra(UNCLIP_PARAMS))
        {
            let pooled = unclip_pooled(embeds, params, seed, self.device());
            entry.pooled = Some(Arc::new(SharedTensor::new(pooled)));
        }
    }

    fn uses_prompt_type(&self) -> bool {
        self.class == Class::Refiner
    }

    fn device(&self) -> Device {
        self.file.manager.device()
    }

    fn with_lora(&self, path: &Path, strength: f64) -> Option<Arc<dyn DiffusionNet>> {
        Some(Arc::new(SdxlNet {
            file: self.file.with_lora(path, strength),
            ..self.clone()
        }))
    }
}
