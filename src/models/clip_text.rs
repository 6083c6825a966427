//! CLIP text encoders (CLIP-L, OpenCLIP-G) as ComfyUI runs them (`comfy/clip_model.py`):
//! token plus position embeddings, a causal pre-norm transformer, the final layer norm, the
//! pooled state at the first end token and its projection. Reads the transformers layout
//! (`text_model.*`, ComfyUI's `clip_l.safetensors`) and OpenCLIP's (`transformer.resblocks.*`,
//! CLIP-G inside SDXL checkpoints).

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::clip_vision::{clip_norm, Activation, Layer};
use super::embeddings::embed_ids;
use super::weights::Weights;
use crate::runtime::linear::{Linear, LinearWeight};
use crate::runtime::lora::LORA_CLIP_MODULES;
use crate::runtime::manager::{in_order, log_partial_load, resident_count, Streamed};

/// Every CLIP text tower ComfyUI ships a config for uses 64-wide heads.
const HEAD_DIM: i64 = 64;

pub struct ClipTextModel {
    token_embedding: Tensor,
    position_embedding: Tensor,
    /// Under `--lowvram` the layers that do not fit are streamed from pinned host memory.
    layers: Vec<Streamed<Layer>>,
    final_norm: (Tensor, Tensor),
    projection: Option<Tensor>,
    heads: i64,
    activation: Activation,
}

/// What one encoder call gives: the chosen layer's states and the pooled outputs.
pub struct ClipTextOutput {
    /// `[B, T, width]`: the last layer (normed) or the requested hidden layer.
    pub hidden: Tensor,
    /// The final-normed state at each row's first end token, `[B, width]`.
    pub pooled: Tensor,
    /// `pooled` through `text_projection`, when the model has one.
    pub projected: Option<Tensor>,
}

/// Which hidden state the encoder returns (ComfyUI's `layer`/`layer_idx`, CLIPSetLastLayer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClipLayer {
    Last,
    /// A hidden layer by index (negative from the end), final-normed or not.
    Hidden {
        index: i64,
        final_norm: bool,
    },
}

/// Every weight in float32: ComfyUI computes CLIP in float32 whatever the stored dtype.
fn f32(w: &Weights, name: &str) -> Result<Tensor> {
    w.tensor_as(name, Kind::Float)
}

/// `<name>.weight` and `<name>.bias` of a norm.
fn norm(w: &Weights, name: &str) -> Result<(Tensor, Tensor)> {
    Ok((
        f32(w, &format!("{name}.weight"))?,
        f32(w, &format!("{name}.bias"))?,
    ))
}

/// A dense Linear `<name>` with its bias and LoRA patches.
fn linear(w: &Weights, name: &str) -> Result<Linear> {
    linear_named(w, name, name)
}

/// The dense Linear stored as `<stored>`, patched by LoRAs as ComfyUI's module `<module>`.
fn linear_named(w: &Weights, stored: &str, module: &str) -> Result<Linear> {
    Ok(dense(
        w.patched(module, f32(w, &format!("{stored}.weight"))?)?,
        f32(w, &format!("{stored}.bias"))?,
    ))
}

fn dense(weight: Tensor, bias: Tensor) -> Linear {
    Linear::new(LinearWeight::Dense(weight), Some(bias))
}

/// The weights LoRAs can patch in a tower with `layers` layers, as ComfyUI names them under the
/// tower (transformers' names whatever the file's layout).
pub fn lora_targets(layers: usize, projection: bool) -> Vec<String> {
    let mut names: Vec<String> = (0..layers)
        .flat_map(|i| {
            LORA_CLIP_MODULES
                .iter()
                .map(move |m| format!("text_model.encoder.layers.{i}.{m}.weight"))
        })
        .collect();
    if projection {
        names.push("text_projection.weight".into());
    }
    names
}

impl ClipTextModel {
    pub fn load(w: &Weights, activation: Activation) -> Result<Self> {
        if w.has("transformer.resblocks.0.attn.in_proj_weight") {
            Self::load_open_clip(w, activation)
        } else {
            Self::load_transformers(w, activation)
        }
    }

    fn load_transformers(w: &Weights, activation: Activation) -> Result<Self> {
        let (norm, linear) = (|n: &str| norm(w, n), |n: &str| linear(w, n));
        let mut placer = w.placement.placer();
        let mut layers = Vec::new();
        loop {
            let p = format!("text_model.encoder.layers.{}", layers.len());
            if !w.has(&format!("{p}.layer_norm1.weight")) {
                break;
            }
            layers.push(placer.place(Layer {
                norm1: norm(&format!("{p}.layer_norm1"))?,
                q: linear(&format!("{p}.self_attn.q_proj"))?,
                k: linear(&format!("{p}.self_attn.k_proj"))?,
                v: linear(&format!("{p}.self_attn.v_proj"))?,
                out: linear(&format!("{p}.self_attn.out_proj"))?,
                norm2: norm(&format!("{p}.layer_norm2"))?,
                fc1: linear(&format!("{p}.mlp.fc1"))?,
                fc2: linear(&format!("{p}.mlp.fc2"))?,
            }));
        }
        let projection = if w.has("text_projection.weight") {
            Some(w.patched("text_projection", f32(w, "text_projection.weight")?)?)
        } else {
            None
        };
        Self::assemble(
            f32(w, "text_model.embeddings.token_embedding.weight")?,
            f32(w, "text_model.embeddings.position_embedding.weight")?,
            layers,
            norm("text_model.final_layer_norm")?,
            projection,
            activation,
        )
    }

    /// OpenCLIP's names; the fused `in_proj` splits into q, k, v and `text_projection`
    /// (`x @ P`) becomes a Linear weight (`Pᵀ`), as ComfyUI's conversion does.
    fn load_open_clip(w: &Weights, activation: Activation) -> Result<Self> {
        let norm = |n: &str| norm(w, n);
        let mut placer = w.placement.placer();
        let mut layers = Vec::new();
        loop {
            let p = format!("transformer.resblocks.{}", layers.len());
            if !w.has(&format!("{p}.ln_1.weight")) {
                break;
            }
            // LoRAs name the modules as ComfyUI converts them (transformers' names).
            let hf = format!("text_model.encoder.layers.{}", layers.len());
            let patched = |ours: &str, theirs: &str| {
                linear_named(w, &format!("{p}.{ours}"), &format!("{hf}.{theirs}"))
            };
            let in_w = f32(w, &format!("{p}.attn.in_proj_weight"))?.chunk(3, 0);
            let in_b = f32(w, &format!("{p}.attn.in_proj_bias"))?.chunk(3, 0);
            let part = |i: usize, name: &str| -> Result<Linear> {
                let weight = in_w[i].contiguous();
                Ok(dense(
                    w.patched(&format!("{hf}.self_attn.{name}"), weight)?,
                    in_b[i].contiguous(),
                ))
            };
            layers.push(placer.place(Layer {
                norm1: norm(&format!("{p}.ln_1"))?,
                q: part(0, "q_proj")?,
                k: part(1, "k_proj")?,
                v: part(2, "v_proj")?,
                out: patched("attn.out_proj", "self_attn.out_proj")?,
                norm2: norm(&format!("{p}.ln_2"))?,
                fc1: patched("mlp.c_fc", "mlp.fc1")?,
                fc2: patched("mlp.c_proj", "mlp.fc2")?,
            }));
        }
        let projection = if w.has("text_projection") {
            let weight = f32(w, "text_projection")?.transpose(0, 1).contiguous();
            Some(w.patched("text_projection", weight)?)
        } else {
            None
        };
        Self::assemble(
            f32(w, "token_embedding.weight")?,
            f32(w, "positional_embedding")?,
            layers,
            norm("ln_final")?,
            projection,
            activation,
        )
    }

    fn assemble(
        token_embedding: Tensor,
        position_embedding: Tensor,
        layers: Vec<Streamed<Layer>>,
        final_norm: (Tensor, Tensor),
        projection: Option<Tensor>,
        activation: Activation,
    ) -> Result<Self> {
        if layers.is_empty() {
            bail!("a CLIP text model without layers");
        }
        let counts = (resident_count(&layers), layers.len());
        log_partial_load(
            "CLIP text model",
            counts,
            "layers",
            token_embedding.device(),
        );
        let width = token_embedding.size()[1];
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_norm,
            projection,
            heads: width / HEAD_DIM,
            activation,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layers on the compute device; the rest are streamed (`--lowvram`).
    pub fn resident_layers(&self) -> usize {
        resident_count(&self.layers)
    }

    /// Token rows `[B, T]` (int64, T ≤ the position table) → the chosen hidden state and the
    /// pooled outputs at each row's first `end` token (ComfyUI's `num_tokens − 1`), in float32.
    /// `embeddings` are the vectors that ids from `EMBEDDING_ID_BASE` stand for.
    pub fn forward(
        &self,
        ids: &Tensor,
        end: i64,
        layer: ClipLayer,
        embeddings: Option<&Tensor>,
    ) -> Result<ClipTextOutput> {
        self.forward_masked(ids, end, layer, embeddings, None)
    }

    /// [`forward`](Self::forward) with the keys of each row limited to `keep` (`[B, T]`,
    /// nonzero attends) on top of the causal mask: ComfyUI's `enable_attention_masks` (SAM 3).
    pub fn forward_masked(
        &self,
        ids: &Tensor,
        end: i64,
        layer: ClipLayer,
        embeddings: Option<&Tensor>,
        keep: Option<&Tensor>,
    ) -> Result<ClipTextOutput> {
        let tokens = ids.size()[1];
        let embedded = embed_ids(&self.token_embedding, ids, embeddings, Kind::Float);
        let mut x = embedded + self.position_embedding.narrow(0, 0, tokens);
        let causal = Tensor::full(
            [tokens, tokens],
            f64::NEG_INFINITY,
            (Kind::Float, x.device()),
        )
        .triu(1);
        let causal = match keep {
            None => causal,
            Some(keep) => {
                let keys = keep.to_device(x.device()).ne(0).view([-1, 1, 1, tokens]);
                let blocked = Tensor::full([], f64::NEG_INFINITY, (Kind::Float, x.device()));
                causal + blocked.zeros_like().where_self(&keys, &blocked)
            }
        };
        let count = self.layers.len() as i64;
        let wanted = match layer {
            ClipLayer::Last => None,
            ClipLayer::Hidden { index, .. } => Some(if index < 0 { count + index } else { index }),
        };
        let mut hidden = None;
        for (i, l) in in_order(&self.layers).enumerate() {
            x = l.forward(&x, self.heads, self.activation, Some(&causal))?;
            if wanted == Some(i as i64) {
                hidden = Some(x.shallow_clone());
            }
        }
        let last = clip_norm(&x, &self.final_norm);
        let hidden = match (layer, hidden) {
            (ClipLayer::Hidden { final_norm, .. }, Some(h)) => {
                if final_norm {
                    clip_norm(&h, &self.final_norm)
                } else {
                    h
                }
            }
            _ => last.shallow_clone(),
        };
        let first_end = ids.eq(end).to_kind(Kind::Int).argmax(-1, false);
        let rows = Tensor::arange(ids.size()[0], (Kind::Int64, x.device()));
        let pooled = last.index(&[Some(rows), Some(first_end)]);
        let projected = self
            .projection
            .as_ref()
            .map(|p| pooled.matmul(&p.transpose(0, 1)));
        Ok(ClipTextOutput {
            hidden,
            pooled,
            projected,
        })
    }
}
