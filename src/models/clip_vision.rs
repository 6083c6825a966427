//! CLIP vision encoders (ViT-H/14 for Wan I2V, ViT-L, ViT-G; SigLIP for FLUX Redux) as ComfyUI
//! runs them
//! (`comfy/clip_model.py`, `clip_vision.py`): CLIP's preprocessing (bicubic with antialias,
//! 8-bit rounding, mean/std), pre-norm transformer, the penultimate layer's hidden states and
//! the projected pooled embedding. `ClipVision` is the CLIP_VISION value, loading through the
//! `ModelManager`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::loading::{component, load_component, LoadTarget, Precision};
use super::wan::dit::layer_norm;
use super::weights::Weights;
use crate::engine::value::SharedTensor;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;
use crate::runtime::manager::{
    in_order, log_partial_load, resident_count, Loaded, ModelManager, Movable, Streamed,
};
use crate::runtime::safetensors_file::SafetensorsFile;

const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_72];
const STD: [f32; 3] = [0.268_629_55, 0.261_302_6, 0.275_777_1];
const SIGLIP_MEAN_STD: [f32; 3] = [0.5, 0.5, 0.5];
const LN_EPS: f64 = 1e-5;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Gelu,
    QuickGelu,
    /// SigLIP's `gelu_pytorch_tanh`.
    GeluTanh,
}

impl Activation {
    fn apply(self, h: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => h.gelu("none"),
            Activation::QuickGelu => h * (h * 1.702).sigmoid(),
            Activation::GeluTanh => h.gelu("tanh"),
        }
    }
}

/// One pre-norm CLIP transformer layer (vision and text towers alike).
pub(super) struct Layer {
    pub norm1: (Tensor, Tensor),
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub out: Linear,
    pub norm2: (Tensor, Tensor),
    pub fc1: Linear,
    pub fc2: Linear,
}

/// CLIP's LayerNorm, computed in float32 and returned in `x`'s dtype. The affine parameters
/// are cast too: CUDA's LayerNorm takes half-precision weights only with a half-precision input.
pub(super) fn clip_norm(x: &Tensor, (w, b): &(Tensor, Tensor)) -> Tensor {
    let (w, b) = (w.to_kind(Kind::Float), b.to_kind(Kind::Float));
    layer_norm(&x.to_kind(Kind::Float), Some((&w, &b)), LN_EPS).to_kind(x.kind())
}

impl Movable for Layer {
    fn moved(&self, device: Device) -> Self {
        Self {
            norm1: self.norm1.moved(device),
            q: self.q.moved(device),
            k: self.k.moved(device),
            v: self.v.moved(device),
            out: self.out.moved(device),
            norm2: self.norm2.moved(device),
            fc1: self.fc1.moved(device),
            fc2: self.fc2.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        let linears = [&self.q, &self.k, &self.v, &self.out, &self.fc1, &self.fc2];
        linears.iter().map(|l| l.bytes()).sum::<u64>() + self.norm1.bytes() + self.norm2.bytes()
    }
}

impl Layer {
    /// The layer of width `width` at `p` (`vision_model.encoder.layers.N`).
    pub(super) fn load(w: &Weights, p: &str, width: i64) -> Result<Self> {
        let inner = w
            .file
            .entry(&w.key(&format!("{p}.mlp.fc1.weight")))
            .map_or(width * 4, |e| e.shape[0] as i64);
        let attn = |n: &str| w.linear(&format!("{p}.self_attn.{n}"), (width, width));
        Ok(Layer {
            norm1: norm(w, &format!("{p}.layer_norm1"))?,
            q: attn("q_proj")?,
            k: attn("k_proj")?,
            v: attn("v_proj")?,
            out: attn("out_proj")?,
            norm2: norm(w, &format!("{p}.layer_norm2"))?,
            fc1: w.linear(&format!("{p}.mlp.fc1"), (inner, width))?,
            fc2: w.linear(&format!("{p}.mlp.fc2"), (width, inner))?,
        })
    }

    /// `x + attn(ln1(x))`, then `+ mlp(ln2(x))`; out of place, so earlier states kept by the
    /// caller stay valid. `mask` is additive (the text tower's causal mask).
    pub(super) fn forward(
        &self,
        x: &Tensor,
        heads: i64,
        activation: Activation,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = clip_norm(x, &self.norm1);
        let (q, k, v) = (
            self.q.forward(&h)?,
            self.k.forward(&h)?,
            self.v.forward(&h)?,
        );
        let x = x + self.out.forward(&attention(&q, &k, &v, heads, mask))?;
        let h = self.fc1.forward(&clip_norm(&x, &self.norm2))?;
        Ok(&x + self.fc2.forward(&activation.apply(&h))?)
    }
}

pub struct ClipVisionModel {
    /// CLIP's class token; SigLIP towers have none (and a patch bias, no pre-norm, and their
    /// final norm on every token).
    class_embedding: Option<Tensor>,
    patch_embedding: Tensor,
    patch_bias: Option<Tensor>,
    position_embedding: Tensor,
    pre_norm: Option<(Tensor, Tensor)>,
    /// Under `--lowvram` the layers that do not fit are streamed from pinned host memory.
    layers: Vec<Streamed<Layer>>,
    post_norm: (Tensor, Tensor),
    projection: Option<Linear>,
    heads: i64,
    activation: Activation,
    pub image_size: i64,
    dtype: Kind,
}

/// ComfyUI's CLIP_VISION_OUTPUT: what the encoder gives for a batch of images.
pub struct ClipVisionOutput {
    pub last_hidden_state: Arc<SharedTensor>,
    pub penultimate: Arc<SharedTensor>,
    pub image_embeds: Arc<SharedTensor>,
}

/// The encoder layers of width `width` under `vision_model.encoder.layers.`, placed for
/// `--lowvram` (`what` names the tower in the log).
pub(super) fn load_layers(w: &Weights, width: i64, what: &str) -> Result<Vec<Streamed<Layer>>> {
    let mut placer = w.placement.placer();
    let mut layers = Vec::new();
    while w.has(&format!(
        "vision_model.encoder.layers.{}.layer_norm1.weight",
        layers.len()
    )) {
        let p = format!("vision_model.encoder.layers.{}", layers.len());
        layers.push(placer.place(Layer::load(w, &p, width)?));
    }
    log_partial_load(
        what,
        (resident_count(&layers), layers.len()),
        "layers",
        w.device,
    );
    Ok(layers)
}

pub(super) fn norm(w: &Weights, name: &str) -> Result<(Tensor, Tensor)> {
    Ok((
        w.tensor(&format!("{name}.weight"))?,
        w.tensor(&format!("{name}.bias"))?,
    ))
}

impl ClipVisionModel {
    /// Weights under `vision_model.` / `visual_projection.` (the layout ComfyUI and
    /// transformers share); 16 heads as in every CLIP vision tower ComfyUI ships configs for.
    /// A tower without a class embedding is SigLIP (`siglip_vision_model`).
    pub fn load(w: &Weights, activation: Activation) -> Result<Self> {
        let patch_embedding = w.tensor("vision_model.embeddings.patch_embedding.weight")?;
        let width = patch_embedding.size()[0];
        let layers = load_layers(w, width, "CLIP vision model")?;
        if layers.len() < 2 {
            bail!("CLIP vision model with {} layers", layers.len());
        }
        let position_embedding = w.tensor("vision_model.embeddings.position_embedding.weight")?;
        let patch = patch_embedding.size()[2];
        let class_embedding = w.optional("vision_model.embeddings.class_embedding")?;
        let patches = position_embedding.size()[0] - i64::from(class_embedding.is_some());
        let projection = if w.has("visual_projection.weight") {
            let out = w
                .file
                .entry(&w.key("visual_projection.weight"))
                .map_or(width, |e| e.shape[0] as i64);
            Some(w.linear("visual_projection", (out, width))?)
        } else {
            None
        };
        let pre_norm = match class_embedding {
            Some(_) => Some(norm(w, "vision_model.pre_layrnorm")?),
            None => None,
        };
        Ok(Self {
            class_embedding,
            patch_bias: w.optional("vision_model.embeddings.patch_embedding.bias")?,
            patch_embedding,
            position_embedding,
            pre_norm,
            layers,
            post_norm: norm(w, "vision_model.post_layernorm")?,
            projection,
            heads: 16,
            activation,
            image_size: ((patches as f64).sqrt().round() as i64) * patch,
            dtype: w.dtype,
        })
    }

    /// Layers on the compute device; the rest are streamed (`--lowvram`).
    pub fn resident_layers(&self) -> usize {
        resident_count(&self.layers)
    }

    /// The patch grid's side: `image_size` over the patch size.
    pub fn patches_per_side(&self) -> i64 {
        self.image_size / self.patch_embedding.size()[2]
    }

    /// The per-channel mean and std `preprocess` normalizes by: CLIP's, or SigLIP's 0.5.
    pub fn mean_std(&self) -> (&'static [f32; 3], &'static [f32; 3]) {
        match self.class_embedding {
            Some(_) => (&MEAN, &STD),
            None => (&SIGLIP_MEAN_STD, &SIGLIP_MEAN_STD),
        }
    }

    /// Pixel values `[B, 3, S, S]` (already preprocessed) → (last hidden state, penultimate
    /// layer's hidden state, projected pooled embedding). CLIP pools its class token through
    /// the final norm; SigLIP's final norm covers every token and is its last hidden state and
    /// pooled output alike.
    pub fn forward(&self, pixels: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let ln = |x: &Tensor, norm: &(Tensor, Tensor)| clip_norm(x, norm).to_kind(self.dtype);
        let x = pixels.to_kind(self.dtype).conv2d(
            &self.patch_embedding,
            self.patch_bias.as_ref(),
            self.patch_embedding.size()[2..].to_vec(),
            [0, 0],
            [1, 1],
            1,
        );
        let b = x.size()[0];
        let x = x.flatten(2, -1).transpose(1, 2);
        let x = match &self.class_embedding {
            Some(class) => Tensor::cat(&[class.view([1, 1, -1]).expand([b, 1, -1], false), x], 1),
            None => x,
        } + &self.position_embedding;
        let mut x = match &self.pre_norm {
            Some(norm) => ln(&x, norm),
            None => x,
        };
        let penultimate_at = self.layers.len() - 2;
        let mut penultimate = None;
        for (i, layer) in in_order(&self.layers).enumerate() {
            x = layer.forward(&x, self.heads, self.activation, None)?;
            if i == penultimate_at {
                penultimate = Some(x.shallow_clone());
            }
        }
        let (last, pooled) = match self.class_embedding {
            Some(_) => {
                let pooled = ln(&x.select(1, 0), &self.post_norm);
                (x, pooled)
            }
            None => {
                let normed = ln(&x, &self.post_norm);
                (normed.shallow_clone(), normed)
            }
        };
        let embeds = match &self.projection {
            Some(p) => p.forward(&pooled)?,
            None => pooled,
        };
        Ok((last, penultimate.expect("at least two layers"), embeds))
    }
}

/// `clip_preprocess`: images `[B, H, W, C]` in 0..1 → pixels `[B, 3, S, S]` normalized by the
/// tower's per-channel `mean` and `std` ([`ClipVisionModel::mean_std`]). `crop` scales the
/// short side to `size` and center-crops; otherwise the image is squashed.
pub fn preprocess(
    images: &Tensor,
    size: i64,
    crop: bool,
    (mean, std): (&[f32; 3], &[f32; 3]),
) -> Tensor {
    let x = images
        .narrow(3, 0, 3.min(images.size()[3]))
        .permute([0, 3, 1, 2]);
    let (h, w) = (x.size()[2], x.size()[3]);
    let x = if h == size && w == size {
        x
    } else {
        let (sh, sw) = if crop {
            let scale = size as f64 / h.min(w) as f64;
            (
                (scale * h as f64).round() as i64,
                (scale * w as f64).round() as i64,
            )
        } else {
            (size, size)
        };
        let resized = Tensor::internal_upsample_bicubic2d_aa(&x, [sh, sw], false, None, None);
        resized
            .narrow(2, (sh - size) / 2, size)
            .narrow(3, (sw - size) / 2, size)
    };
    let x = (x * 255.0).clamp(0.0, 255.0).round() / 255.0;
    let mean = Tensor::from_slice(mean)
        .view([3, 1, 1])
        .to_device(x.device());
    let std = Tensor::from_slice(std)
        .view([3, 1, 1])
        .to_device(x.device());
    (x - mean) / std
}

/// The CLIP_VISION value: a file, loaded through the manager when encoding.
pub struct ClipVision {
    manager: Arc<ModelManager>,
    path: PathBuf,
    prefix: String,
    activation: Activation,
}

impl ClipVision {
    pub fn open(manager: Arc<ModelManager>, path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let found = component(&file, "clip_vision")?;
        // ViT-L from OpenAI uses quick-GELU; H and G (OpenCLIP) use exact GELU; SigLIP the
        // tanh form.
        let activation = match found.architecture.as_str() {
            "clip_vision_l" => Activation::QuickGelu,
            "siglip_vision" => Activation::GeluTanh,
            _ => Activation::Gelu,
        };
        Ok(Self {
            manager,
            path: path.to_path_buf(),
            prefix: found.prefix,
            activation,
        })
    }

    fn loaded(&self) -> Result<Arc<Loaded<ClipVisionModel>>> {
        let device = self.manager.device();
        let target = LoadTarget {
            kind: "clip_vision",
            path: &self.path,
            prefix: &self.prefix,
            device,
            // ComfyUI holds CLIP vision in fp16 and runs it in float32.
            precision: Precision::encoder(device, Kind::Half),
        };
        load_component(&self.manager, &target, None, |w| {
            ClipVisionModel::load(w, self.activation)
        })
    }

    /// `CLIPVisionEncode`.
    pub fn encode(&self, images: &Tensor, crop: bool) -> Result<ClipVisionOutput> {
        let model = self.loaded()?;
        let pixels = preprocess(
            &images.to_device(self.manager.device()).to_kind(Kind::Float),
            model.image_size,
            crop,
            model.mean_std(),
        );
        let (last, penultimate, embeds) = model.forward(&pixels)?;
        let cpu = |t: Tensor| {
            Arc::new(SharedTensor::new(
                t.to_kind(Kind::Float).to_device(Device::Cpu),
            ))
        };
        Ok(ClipVisionOutput {
            last_hidden_state: cpu(last),
            penultimate: cpu(penultimate),
            image_embeds: cpu(embeds),
        })
    }
}
