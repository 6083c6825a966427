//! Reading one component's weights out of a file: its key prefix, quantized-layer table, compute
//! dtype and device in one place, so model code names only the module paths.

use std::collections::BTreeMap;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::runtime::linear::{Linear, LinearWeight};
use crate::runtime::lora::LoraPatch;
use crate::runtime::manager::Placement;
use crate::runtime::quant::{quantized_layers, LayerQuant};
use crate::runtime::safetensors_file::SafetensorsFile;

pub struct Weights<'a> {
    pub file: &'a SafetensorsFile,
    pub prefix: String,
    /// The compute dtype: what `tensor` returns.
    pub dtype: Kind,
    /// What full-precision Linear weights are held in (`dtype` unless the component computes
    /// wider than it keeps its weights: the text and vision encoders).
    pub linear_dtype: Kind,
    pub device: Device,
    layers: BTreeMap<String, LayerQuant>,
    /// UNETLoader's `weight_dtype` fp8 choices: full-precision Linear weights are cast to this
    /// FP8 kind (scale 1); `true` also multiplies in FP8 where the device can (`_fast`).
    pub cast_linear: Option<(Kind, bool)>,
    /// LoRA patches merged into the Linear layers, keyed as ComfyUI names model weights
    /// (`diffusion_model.<module>.weight`), each with its strength.
    pub loras: Vec<(&'a BTreeMap<String, LoraPatch>, f64)>,
    /// Where this component's weights sit in ComfyUI's state dict, which LoRA keys map into
    /// (`diffusion_model.`, `clip_l.transformer.`, `t5xxl.transformer.`).
    pub lora_namespace: String,
    /// How much of the component may stay on the device; models that stream their blocks
    /// (`--lowvram`) place them through it, the others load whole.
    pub placement: Placement,
}

impl<'a> Weights<'a> {
    pub fn new(
        file: &'a SafetensorsFile,
        prefix: &str,
        dtype: Kind,
        device: Device,
    ) -> Result<Self> {
        // Keyed by full tensor names, as `Linear::load` looks them up.
        let layers = quantized_layers(file, prefix)?;
        Ok(Self {
            file,
            prefix: prefix.to_string(),
            dtype,
            linear_dtype: dtype,
            device,
            layers,
            cast_linear: None,
            loras: Vec::new(),
            lora_namespace: "diffusion_model.".into(),
            placement: Placement::resident(device),
        })
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.contains(&self.key(name))
    }

    /// A tensor in the compute dtype, `None` where the file has none (an optional bias).
    pub fn optional(&self, name: &str) -> Result<Option<Tensor>> {
        self.has(name).then(|| self.tensor(name)).transpose()
    }

    /// A tensor in the compute dtype.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        Ok(self
            .file
            .tensor(&self.key(name), self.device)?
            .to_kind(self.dtype))
    }

    /// A tensor in `kind` (e.g. float32 for layers ComfyUI keeps in full precision).
    pub fn tensor_as(&self, name: &str, kind: Kind) -> Result<Tensor> {
        Ok(self
            .file
            .tensor(&self.key(name), self.device)?
            .to_kind(kind))
    }

    /// The LoRA patches for module `name`'s `part` (`weight`, `bias`), with their strengths.
    fn patches(&self, name: &str, part: &str) -> Vec<(&LoraPatch, f64)> {
        let patch_key = format!("{}{name}.{part}", self.lora_namespace);
        self.loras
            .iter()
            .filter_map(|(p, strength)| p.get(&patch_key).map(|p| (p, *strength)))
            .collect()
    }

    /// `weight`, module `name`'s weight as loaded (for layers not read through `linear`), with
    /// its LoRA patches merged. `name` is ComfyUI's module name, which a loader converting
    /// another layout gives for the converted tensor.
    pub fn patched(&self, name: &str, weight: Tensor) -> Result<Tensor> {
        self.patches(name, "weight")
            .into_iter()
            .try_fold(weight, |w, (patch, strength)| patch.apply(&w, strength))
    }

    /// The Linear `name` of module shape (out, in), in its stored format.
    pub fn linear(&self, name: &str, shape: (i64, i64)) -> Result<Linear> {
        let key = self.key(name);
        let linear = Linear::load(
            self.file,
            &self.layers,
            &key,
            shape,
            self.linear_dtype,
            self.device,
        )?;
        let patches = self.patches(name, "weight");
        let mut linear = if patches.is_empty() {
            linear
        } else {
            linear.with_lora(&patches, self.linear_dtype)?
        };
        if let Some(bias) = &linear.bias {
            let patched = self
                .patches(name, "bias")
                .into_iter()
                .try_fold(bias.shallow_clone(), |b, (patch, strength)| {
                    patch.apply(&b, strength)
                })?;
            linear.bias = Some(patched);
        }
        Ok(match (&linear.weight, self.cast_linear) {
            (LinearWeight::Dense(w), Some((kind, fast))) => {
                let bias = linear.bias.as_ref().map(Tensor::shallow_clone);
                Linear::cast_to_fp8(w, bias, kind, fast)
            }
            _ => linear,
        })
    }
}
