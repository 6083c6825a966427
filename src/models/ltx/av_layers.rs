//! The layers LTX's transformer and text connectors are built from
//! (`comfy/ldm/lightricks/model.py`): attention with RMS-normed queries and keys across heads
//! and optional split RoPE, the GELU(tanh) feed-forward, the adaLN-single timestep embedding and
//! the caption projection.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::av_rope::Rope;
use super::guide_attention::GuideMask;
use crate::models::layers::timestep_embedding;
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;
use crate::runtime::manager::Movable;

/// The q/k norms' epsilon (ComfyUI's `CrossAttention`; diffusers and Lightricks use 1e-6).
const QK_NORM_EPS: f64 = 1e-5;
/// The blocks' weightless RMSNorm and the output LayerNorm.
pub const NORM_EPS: f64 = 1e-6;
/// The width of the sinusoidal timestep features.
const TIMESTEP_FEATURES: i64 = 256;

/// RMSNorm over the last dimension without a weight (`comfy.ldm.common_dit.rms_norm`).
pub fn rms_norm(x: &Tensor) -> Tensor {
    let dim = x.size()[x.dim() - 1];
    x.rms_norm([dim], None::<&Tensor>, NORM_EPS)
}

pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    /// LTX-2.3's per-head gate logits from the query input (`to_gate_logits`).
    gate_logits: Option<Linear>,
    heads: i64,
}

impl Attention {
    /// `name`'s projections from `query_dim` and `context_dim` to `heads × head_dim`, with the
    /// per-head output gate when `gated`.
    pub fn load(
        w: &Weights,
        name: &str,
        (query_dim, context_dim): (i64, i64),
        (heads, head_dim): (i64, i64),
        gated: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let linear = |part: &str, shape| w.linear(&format!("{name}.{part}"), shape);
        Ok(Self {
            gate_logits: gated
                .then(|| linear("to_gate_logits", (heads, query_dim)))
                .transpose()?,
            to_q: linear("to_q", (inner, query_dim))?,
            to_k: linear("to_k", (inner, context_dim))?,
            to_v: linear("to_v", (inner, context_dim))?,
            to_out: linear("to_out.0", (query_dim, inner))?,
            q_norm: w.tensor(&format!("{name}.q_norm.weight"))?,
            k_norm: w.tensor(&format!("{name}.k_norm.weight"))?,
            heads,
        })
    }

    /// Attends from `x` to `context` (itself when `None`); queries rotated by `q_rope`, keys
    /// by `k_rope` (the queries' rotation when `None`).
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        q_rope: Option<&Rope>,
        k_rope: Option<&Rope>,
    ) -> Result<Tensor> {
        let (q, k, v) = self.project(x, context, q_rope, k_rope)?;
        self.output(&attention(&q, &k, &v, self.heads, None), x)
    }

    /// Self-attention under LTXVAddGuide's guide weights, when there are any.
    pub fn guided_self_attention(
        &self,
        x: &Tensor,
        rope: &Rope,
        guides: Option<&GuideMask>,
    ) -> Result<Tensor> {
        let (q, k, v) = self.project(x, None, Some(rope), None)?;
        let out = match guides {
            Some(mask) => mask.attend(&q, &k, &v, self.heads),
            None => attention(&q, &k, &v, self.heads, None),
        };
        self.output(&out, x)
    }

    /// The heads' output `[b, t, heads·d]`, gated by `x` `[b, t, query_dim]`, projected out.
    fn output(&self, out: &Tensor, x: &Tensor) -> Result<Tensor> {
        let Some(gate_logits) = &self.gate_logits else {
            return self.to_out.forward(out);
        };
        let (b, t, width) = out.size3()?;
        let gates = gate_logits.forward(x)?.sigmoid() * 2.0;
        let gated = out.view([b, t, self.heads, width / self.heads]) * gates.unsqueeze(-1);
        self.to_out.forward(&gated.view([b, t, width]))
    }

    /// Normed and rotated queries and keys, and values.
    fn project(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        q_rope: Option<&Rope>,
        k_rope: Option<&Rope>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let context = context.unwrap_or(x);
        let norm = |t: Tensor, weight: &Tensor, rope: Option<&Rope>| match rope {
            Some(rope) => rope.norm_and_apply(&t, weight, QK_NORM_EPS),
            None => {
                let dim = t.size()[2];
                Ok(t.rms_norm([dim], Some(weight), QK_NORM_EPS))
            }
        };
        let q = norm(self.to_q.forward(x)?, &self.q_norm, q_rope)?;
        let k = norm(
            self.to_k.forward(context)?,
            &self.k_norm,
            q_rope.map(|r| k_rope.unwrap_or(r)),
        )?;
        let v = self.to_v.forward(context)?;
        Ok((q, k, v))
    }
}

impl Movable for Attention {
    fn moved(&self, device: Device) -> Self {
        Self {
            to_q: self.to_q.moved(device),
            to_k: self.to_k.moved(device),
            to_v: self.to_v.moved(device),
            to_out: self.to_out.moved(device),
            q_norm: self.q_norm.moved(device),
            k_norm: self.k_norm.moved(device),
            gate_logits: self.gate_logits.as_ref().map(|g| g.moved(device)),
            heads: self.heads,
        }
    }

    fn bytes(&self) -> u64 {
        [&self.to_q, &self.to_k, &self.to_v, &self.to_out]
            .iter()
            .map(|l| l.bytes())
            .sum::<u64>()
            + self.q_norm.bytes()
            + self.k_norm.bytes()
            + self.gate_logits.as_ref().map_or(0, Linear::bytes)
    }
}

/// `net.0.proj` → GELU(tanh) → `net.2`, four times as wide inside.
pub struct FeedForward {
    fc_in: Linear,
    fc_out: Linear,
}

impl FeedForward {
    pub fn load(w: &Weights, name: &str, dim: i64) -> Result<Self> {
        Ok(Self {
            fc_in: w.linear(&format!("{name}.net.0.proj"), (4 * dim, dim))?,
            fc_out: w.linear(&format!("{name}.net.2"), (dim, 4 * dim))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc_out.forward(&self.fc_in.forward_gelu_tanh(x)?)
    }
}

impl Movable for FeedForward {
    fn moved(&self, device: Device) -> Self {
        Self {
            fc_in: self.fc_in.moved(device),
            fc_out: self.fc_out.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.fc_in.bytes() + self.fc_out.bytes()
    }
}

/// `AdaLayerNormSingle`: sinusoidal features of the (scaled) timestep → `linear_1` → SiLU →
/// `linear_2` (the embedded timestep), then SiLU → `linear` to `parts` modulation vectors.
pub struct AdaLnSingle {
    linear_1: Linear,
    linear_2: Linear,
    linear: Linear,
}

impl AdaLnSingle {
    pub fn load(w: &Weights, name: &str, dim: i64, parts: i64) -> Result<Self> {
        let embedder = format!("{name}.emb.timestep_embedder");
        Ok(Self {
            linear_1: w.linear(&format!("{embedder}.linear_1"), (dim, TIMESTEP_FEATURES))?,
            linear_2: w.linear(&format!("{embedder}.linear_2"), (dim, dim))?,
            linear: w.linear(&format!("{name}.linear"), (parts * dim, dim))?,
        })
    }

    /// For timesteps `t` `[n]` (float32): the modulation `[n, parts·dim]` and the embedded
    /// timestep `[n, dim]`, in `kind`.
    pub fn forward(&self, t: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)> {
        let features = timestep_embedding(t, TIMESTEP_FEATURES).to_kind(kind);
        let embedded = self
            .linear_2
            .forward(&self.linear_1.forward(&features)?.silu())?;
        Ok((self.linear.forward(&embedded.silu())?, embedded))
    }
}

/// `PixArtAlphaTextProjection`: `linear_1` → GELU(tanh) → `linear_2`.
pub struct TextProjection {
    linear_1: Linear,
    linear_2: Linear,
}

impl TextProjection {
    pub fn load(w: &Weights, name: &str, input: i64, hidden: i64) -> Result<Self> {
        Ok(Self {
            linear_1: w.linear(&format!("{name}.linear_1"), (hidden, input))?,
            linear_2: w.linear(&format!("{name}.linear_2"), (hidden, hidden))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward_gelu_tanh(x)?)
    }
}
