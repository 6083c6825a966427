//! The MODEL an LTX-2 checkpoint loads as: a `DiffusionFile` plus what ComfyUI's `LTXAV` model
//! class adds around the transformer. It samples the video and audio latents packed into one
//! (`with_latent_shapes` says how to unpack them), gives conditioning frames (noise mask 0)
//! timestep 0 (`process_timestep`), runs the text connectors on the encoder's features
//! (`preprocess_text_embeds`) and places positions by the conditioning's frame rate and guides.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::av_config::AvConfig;
use super::av_model::{AvInputs, LtxAvModel};
use crate::models::diffusion_file::DiffusionFile;
use crate::sampling::model::{repeat_to_batch, CondEntry, DiffusionNet, KEYFRAME_IDXS, REF_AUDIO};
use crate::sampling::model_sampling::{ModelSampling, Prediction, Schedule};
use crate::sampling::nested::{pack, unpack};

/// LTXV's `sampling_settings` shift (ModelSamplingLTXV replaces it).
const SHIFT: f64 = 2.37;
/// The frame rate positions assume when no LTXVConditioning set one.
const DEFAULT_FRAME_RATE: f64 = 25.0;

#[derive(Clone)]
pub struct LtxAvNet {
    file: DiffusionFile,
    config: AvConfig,
    /// The packed latent's parts (video, then audio); one video latent when `None`.
    shapes: Option<Arc<Vec<Vec<i64>>>>,
}

impl LtxAvNet {
    pub fn open(file: DiffusionFile) -> Result<Self> {
        if file.detected.architecture != "LTXAV" {
            bail!(
                "{} is a {} model, not LTX-2",
                file.path().display(),
                file.detected.architecture
            );
        }
        let config = AvConfig::from_detected(&file.detected.config)?;
        Ok(Self {
            file,
            config,
            shapes: None,
        })
    }

    /// ComfyUI's LTXV sampling: flow matching, ModelSamplingFlux with shift 2.37.
    pub fn sampling() -> ModelSampling {
        ModelSampling::new(Prediction::Flow, Schedule::Flux { shift: SHIFT })
    }

    /// The latent's parts: video and, when packed with it, audio.
    fn parts(&self, x: &Tensor) -> Vec<Tensor> {
        match &self.shapes {
            Some(shapes) => unpack(x, shapes),
            None => vec![x.shallow_clone()],
        }
    }
}

/// σ `[b]` times a part's noise mask (its first channel, and for audio its first mel bin), one
/// timestep per token: `[b, tokens]`.
fn masked_timesteps(sigma: &Tensor, mask: &Tensor, audio: bool) -> Tensor {
    let b = sigma.size()[0];
    let mask = repeat_to_batch(&mask.narrow(1, 0, 1), b).to_kind(Kind::Float);
    let mask = if audio { mask.narrow(3, 0, 1) } else { mask };
    let mut shape = vec![b];
    shape.resize(mask.dim(), 1);
    (mask * sigma.view(shape.as_slice())).reshape([b, -1])
}

/// The guides' pixel spans `[3, tokens, 2]` of a batch's `keyframe_idxs` `[b, 3, tokens, 2]`.
/// LTXVAddGuide gives cond and uncond the same; positions here are one set for the batch.
fn shared_keyframes(keyframes: &Tensor) -> Result<Tensor> {
    let first = keyframes.get(0);
    if keyframes
        .ne_tensor(&first.unsqueeze(0))
        .any()
        .int64_value(&[])
        != 0
    {
        bail!("the conditionings sampled together place their LTX guides differently");
    }
    Ok(first)
}

impl DiffusionNet for LtxAvNet {
    fn forward(&self, xc: &Tensor, timestep: &Tensor, cond: &CondEntry) -> Result<Tensor> {
        let model = self
            .file
            .load(|w| LtxAvModel::load(w, self.config.clone()))?;
        let device = self.device();
        let parts = self.parts(&xc.to_device(device));
        let sigma = timestep.to_device(device).to_kind(Kind::Float);
        let masks = cond
            .extra("denoise_mask")
            .map(|m| self.parts(&m.to_device(device)));
        let timesteps: Vec<Tensor> = (0..parts.len())
            .map(|i| match &masks {
                Some(m) => masked_timesteps(&sigma, &m[i], i == 1),
                None => sigma.shallow_clone(),
            })
            .collect();
        let features = cond.context.to_device(device);
        // ComfyUI's text encoder leaves the connectors to the model (`unprocessed_ltxav_embeds`).
        let context = if model.needs_connectors(&features) {
            model.encode_context(&features)?
        } else {
            features
        };
        let keyframes = cond
            .extra(KEYFRAME_IDXS)
            .map(shared_keyframes)
            .transpose()?;
        let inputs = AvInputs {
            video: &parts[0],
            audio: parts.get(1),
            video_timestep: &timesteps[0],
            audio_timestep: timesteps.get(1).unwrap_or(&timesteps[0]),
            context: &context,
            frame_rate: cond.frame_rate.unwrap_or(DEFAULT_FRAME_RATE),
            keyframes: keyframes.as_ref(),
            guides: &cond.guides,
            reference_audio: cond.extra(REF_AUDIO),
        };
        let (video, audio) = model.forward(&inputs)?;
        let out = match audio {
            Some(audio) => pack(&[video, audio]),
            None => video,
        };
        Ok(out.to_kind(Kind::Float))
    }

    fn device(&self) -> Device {
        self.file.manager.device()
    }

    /// ComfyUI's `LTXAV.scale_latent_inpaint` returns the latent itself.
    fn keeps_clean_latent(&self) -> bool {
        true
    }

    fn with_lora(&self, path: &Path, strength: f64) -> Option<Arc<dyn DiffusionNet>> {
        Some(Arc::new(Self {
            file: self.file.with_lora(path, strength),
            ..self.clone()
        }))
    }

    fn with_latent_shapes(&self, shapes: &[Vec<i64>]) -> Option<Arc<dyn DiffusionNet>> {
        Some(Arc::new(Self {
            shapes: Some(Arc::new(shapes.to_vec())),
            ..self.clone()
        }))
    }
}
