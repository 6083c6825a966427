//! The MODEL a FLUX.1 UNETLoader returns: a `DiffusionFile` plus what ComfyUI's `Flux` model
//! class adds around the transformer: CLIP-L's pooled output as `y` and the distilled guidance
//! (FluxGuidance's value, 3.5 when none is set) for models with a guidance embedding.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::dit::{FluxConfig, FluxInputs, FluxModel, ReferenceMethod, PATCH};
use crate::models::diffusion_file::DiffusionFile;
use crate::models::rope::RopeOptions;
use crate::runtime::lora::weight_reshape;
use crate::sampling::latent_format::LatentFormat;
use crate::sampling::model::{
    reference_latent_key, repeat_to_batch, CondEntry, DiffusionNet, REFERENCE_METHOD_KEY,
};
use crate::sampling::model_sampling::{ModelSampling, Prediction, Schedule};
use crate::upscale::common_upscale;

/// ComfyUI's guidance for FLUX dev when the conditioning carries none.
const DEFAULT_GUIDANCE: f64 = 3.5;

#[derive(Clone)]
pub struct FluxNet {
    file: DiffusionFile,
    config: FluxConfig,
    /// The channels `img_in` takes: the file's, or a control LoRA's wider input.
    input_channels: i64,
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
            input_channels: config.in_channels,
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

impl FluxNet {
    /// `Flux.concat_cond`: for models taking more than the latent's 16 channels, the
    /// conditioning image's latent (Canny / Depth: 16 more), then for Fill the mask, each 8×8
    /// pixel block as 64 channels of its latent cell.
    fn concat(&self, x: &Tensor, cond: &CondEntry) -> Option<Tensor> {
        const LATENT: i64 = 16;
        let channels = self.input_channels;
        if channels <= LATENT {
            return None;
        }
        let (b, _, h, w) = x.size4().ok()?;
        let options = (Kind::Float, x.device());
        let image = match cond.extra("concat_latent_image") {
            Some(image) => {
                let image = image.to_device(x.device()).to_kind(Kind::Float);
                let image = common_upscale(&image, w, h, "bilinear", "center").ok()?;
                self.format.process_in(&repeat_to_batch(&image, b))
            }
            None => self
                .format
                .process_in(&Tensor::zeros([b, LATENT, h, w], options)),
        };
        if channels <= 2 * LATENT {
            return Some(image);
        }
        let mask = match cond
            .extra("concat_mask")
            .or_else(|| cond.extra("denoise_mask"))
        {
            Some(mask) => mask.to_device(x.device()).to_kind(Kind::Float),
            None => Tensor::ones([b, 1, h, w], options),
        };
        let mask = if mask.dim() == 3 {
            mask.unsqueeze(1)
        } else {
            mask
        };
        let mask = mask.mean_dim(1, true, Kind::Float);
        let mask = common_upscale(&mask, w * 8, h * 8, "bilinear", "center").ok()?;
        let n = mask.size()[0];
        let mask = mask
            .view([n, h, 8, w, 8])
            .permute([0, 2, 4, 1, 3])
            .reshape([n, 64, h, w]);
        Some(Tensor::cat(&[image, repeat_to_batch(&mask, b)], 1))
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
        let x = match self.concat(&x, cond) {
            Some(extra) => Tensor::cat(&[x.to_kind(Kind::Float), extra], 1),
            None => x,
        };
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

    /// A control LoRA that widens `img_in` (FLUX.1 Depth/Canny as LoRAs) makes the model take
    /// the conditioning image's channels (`Flux.concat_cond` reads `img_in`'s width); a file
    /// that cannot be read fails when the model loads.
    fn with_lora(&self, path: &Path, strength: f64) -> Option<Arc<dyn DiffusionNet>> {
        let widened = weight_reshape(path, "diffusion_model.img_in")
            .ok()
            .flatten();
        let input_channels = match widened.as_deref() {
            Some([_, columns]) => columns / (PATCH * PATCH),
            _ => self.input_channels,
        };
        Some(Arc::new(FluxNet {
            file: self.file.with_lora(path, strength),
            input_channels,
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
