//! Lotus-D (ComfyUI's `LotusD` config and `Lotus` model class): an SD 2 UNet (the SDXL code's
//! UNet, its layout read from the keys) that predicts a depth map's latent from an image's in
//! one step. It takes the latent unscaled and returns the result itself (`IMG_TO_IMG`), reads
//! a 4-wide task embedding as its ADM vector (depth: sin and cos of (1, 0)), and is always
//! prompted with the empty prompt, whose text states LotusConditioning gives.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::unet::Unet;
use crate::models::diffusion_file::DiffusionFile;
use crate::sampling::latent_format::LatentFormat;
use crate::sampling::model::{repeat_to_batch, BlockSkip, CondEntry, DiffusionNet};
use crate::sampling::model_sampling::{ModelSampling, Prediction, Schedule};

/// OpenCLIP ViT-H's last hidden states for the empty prompt (2 tokens × 1024, float16 values),
/// as ComfyUI's LotusConditioning inlines them: Lotus was trained with that frozen prompt.
const NULL_PROMPT: &[u8] = include_bytes!("lotus_null_prompt.f16");

/// The text states LotusConditioning gives, float32 `[1, 2, 1024]`.
pub fn null_prompt() -> Tensor {
    let values: Vec<f32> = NULL_PROMPT
        .chunks_exact(2)
        .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
        .collect();
    Tensor::from_slice(&values).view([1, 2, 1024])
}

/// Lotus's task embedding for depth, `[1, 4]`: sin(1), sin(0), cos(1), cos(0).
fn depth_task() -> Tensor {
    let task = Tensor::from_slice(&[1.0f32, 0.0]);
    Tensor::cat(&[task.sin(), task.cos()], 0).unsqueeze(0)
}

#[derive(Clone)]
pub struct LotusNet {
    file: DiffusionFile,
    format: Arc<LatentFormat>,
}

impl LotusNet {
    pub fn open(file: DiffusionFile) -> Result<Self> {
        if file.detected.architecture != "LotusD" {
            bail!(
                "{} is a {} model, not Lotus",
                file.path().display(),
                file.detected.architecture
            );
        }
        Ok(Self {
            file,
            format: Arc::new(LatentFormat::sd15()),
        })
    }

    /// SD 2's 1000 scaled-linear DDPM steps, the output taken as the result.
    pub fn sampling() -> ModelSampling {
        ModelSampling::new(
            Prediction::ImgToImg,
            Schedule::Discrete {
                linear_start: 0.00085,
                linear_end: 0.012,
            },
        )
    }
}

impl DiffusionNet for LotusNet {
    fn forward(&self, xc: &Tensor, timestep: &Tensor, cond: &CondEntry) -> Result<Tensor> {
        let unet = self.file.load(Unet::load)?;
        let device = self.device();
        let y = repeat_to_batch(&depth_task(), xc.size()[0]).to_device(device);
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

    fn device(&self) -> Device {
        self.file.manager.device()
    }

    fn with_lora(&self, path: &Path, strength: f64) -> Option<Arc<dyn DiffusionNet>> {
        Some(Arc::new(Self {
            file: self.file.with_lora(path, strength),
            ..self.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_null_prompt_holds_comfyuis_values() {
        let p = null_prompt();
        assert_eq!(p.size(), [1, 2, 1024]);
        // Its first value, and the large activation of channel 457 in the first token.
        assert_eq!(p.double_value(&[0, 0, 0]), -0.3134765625);
        assert_eq!(p.abs().max().double_value(&[]), 13.0234375);
        assert_eq!(p.abs().argmax(None, false).int64_value(&[]), 457);
    }
}
