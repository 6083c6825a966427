//! The MODEL a FLUX.1 UNETLoader returns: a `DiffusionFile` plus what ComfyUI's `Flux` model
//! class adds around the transformer: CLIP-L's pooled output as `y` and the distilled guidance
//! (FluxGuidance's value, 3.5 when none is set) for models with a guidance embedding.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::dit::{FluxConfig, FluxInputs, FluxModel, ReferenceMethod};
use crate::models::diffusion_file::DiffusionFile;
use crate::models::rope::RopeOptions;
use crate::sampling::latent_format::LatentFormat;
use crate::sampling::model::{
    reference_latent_key, repeat_to_batch, CondEntry, DiffusionNet, REFERENCE_METHOD_KEY,
};
use crate::sampling::model_sampling::{ModelSampling, Prediction, Schedule};

/// ComfyUI's guidance for FLUX dev when the conditioning carries none.
const DEFAULT_GUIDANCE: f64 = 3.5;

#[derive(Clone)]
pub struct FluxNet {
    file: DiffusionFile,
    config: FluxConfig,
    format: Arc<LatentFormat>,
    rope: RopeOptions,
}

impl FluxNet {
    pub fn open(file: DiffusionFile) -> Result<Self> {
        if file.detected.architecture != "Flux" {
            bail!(
                "{} is a {} model, not FLUX.1",
                file.path().display(),
                file.detected.architecture
            );
        }
        let config = FluxConfig::from_detected(&file.detected.config)?;
        Ok(Self {
            file,
            config,
            format: Arc::new(LatentFormat::flux()),
            rope: RopeOptions::default(),
        })
    }

    /// ComfyUI's defaults: dev (guidance-distilled) shifts by 1.15, schnell by 1.
    pub fn sampling(&self) -> ModelSampling {
        let shift = if self.config.guidance_embed {
            1.15
        } else {
            1.0
        };
        ModelSampling::new(Prediction::Flow, Schedule::Flux { shift })
    }
}

impl DiffusionNet for FluxNet {
    fn forward(&self, xc: &Tensor, timestep: &Tensor, cond: &CondEntry) -> Result<Tensor> {
        let model = self
            .file
            .load(|w| FluxModel::load(w, self.config.clone()))?;
        let device = self.device();
        let batch = xc.size()[0];
        let x = xc.to_device(device);
        let context = cond.context.to_device(device);
        let pooled = cond.pooled.as_ref().map(|p| p.to_device(device));
        let guidance = self
            .config
            .guidance_embed
            .then(|| match cond.extra("guidance") {
                Some(g) => repeat_to_batch(g, batch).to_device(device),
                None => Tensor::full([batch], DEFAULT_GUIDANCE, (Kind::Float, device)),
            });
        let references: Vec<Tensor> = (0..)
            .map_while(|i| cond.extra(&reference_latent_key(i)))
            .map(|latent| {
                let latent = latent.to_device(device).to_kind(Kind::Float);
                repeat_to_batch(&self.format.process_in(&latent), batch)
            })
            .collect();
        let reference_method = match cond.extra(REFERENCE_METHOD_KEY) {
            Some(code) => ReferenceMethod::from_code(code.int64_value(&[0]))?,
            None => ReferenceMethod::default(),
        };
        let inputs = FluxInputs {
            y: pooled.as_ref(),
            guidance: guidance.as_ref(),
            rope: self.rope,
            references: &references,
            reference_method,
        };
        let out = model.forward_with(&x, &timestep.to_device(device), &context, &inputs)?;
        Ok(out.to_kind(Kind::Float))
    }

    fn latent_format(&self) -> Option<&LatentFormat> {
        Some(&self.format)
    }

    fn device(&self) -> Device {
        self.file.manager.device()
    }

    fn with_lora(&self, path: &Path, strength: f64) -> Option<Arc<dyn DiffusionNet>> {
        Some(Arc::new(FluxNet {
            file: self.file.with_lora(path, strength),
            ..self.clone()
        }))
    }

    fn with_rope_options(&self, rope: RopeOptions) -> Option<Arc<dyn DiffusionNet>> {
        Some(Arc::new(FluxNet {
            rope,
            ..self.clone()
        }))
    }
}
