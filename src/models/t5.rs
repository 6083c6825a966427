//! The T5 / UMT5 encoder stack as ComfyUI runs it (`comfy/text_encoders/t5.py`): RMS-style
//! layer norms, unscaled attention with bucketed relative-position biases (UMT5: one table per
//! layer; T5: layer 0's table shared by all), gated tanh-GELU feed-forward, final norm. Padded
//! positions are masked as keys and zeroed in the output (`zero_out_masked`).

use anyhow::{Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::models::embeddings::embed_ids;
use crate::models::weights::Weights;
use crate::runtime::attention::attention_with_scale;
use crate::runtime::linear::Linear;
use crate::runtime::manager::{in_order, log_partial_load, resident_count, Movable, Streamed};

const BUCKETS: i64 = 32;
const MAX_DISTANCE: f64 = 128.0;
const EPS: f64 = 1e-6;

#[derive(Clone, Debug, PartialEq)]
pub struct T5Config {
    pub d_model: i64,
    pub inner_dim: i64,
    pub num_heads: i64,
    pub d_ff: i64,
    pub num_layers: i64,
    pub vocab_size: i64,
}

impl T5Config {
    /// From `runtime::detect`'s `umt5`/`t5` config plus the q projection's shape (UMT5 and T5
    /// differ only in which layers carry a position table, which loading finds by itself).
    pub fn from_detected(config: &Value, w: &Weights) -> Result<Self> {
        let int = |key: &str| {
            config[key]
                .as_i64()
                .with_context(|| format!("T5 config has no {key}"))
        };
        let q = w
            .file
            .entry(&format!(
                "{}encoder.block.0.layer.0.SelfAttention.q.weight",
                w.prefix
            ))
            .context("T5 without encoder.block.0 q")?;
        Ok(Self {
            d_model: int("d_model")?,
            inner_dim: q.shape[0] as i64,
            num_heads: int("num_heads")?,
            d_ff: int("d_ff")?,
            num_layers: int("num_layers")?,
            vocab_size: int("vocab_size")?,
        })
    }
}

/// `weight · x / √(mean(x²) + ε)` (T5's LayerNorm: no mean, no bias).
fn t5_norm(x: &Tensor, weight: &Tensor) -> Tensor {
    let variance = x.square().mean_dim(-1, true, x.kind());
    weight * (x * (variance + EPS).rsqrt())
}

/// T5's bidirectional bucket of `key − query` offsets: 8 exact buckets per direction, then 8
/// logarithmic ones up to 128 positions.
fn relative_buckets(length: i64, device: tch::Device) -> Tensor {
    let positions = Tensor::arange(length, (Kind::Int64, device));
    let relative = positions.unsqueeze(0) - positions.unsqueeze(1);
    let half = BUCKETS / 2;
    let direction = relative.gt(0).to_kind(Kind::Int64) * half;
    let distance = relative.abs();
    let max_exact = half / 2;
    let large = ((distance.to_kind(Kind::Float) / max_exact as f64).log()
        / (MAX_DISTANCE / max_exact as f64).ln()
        * (half - max_exact) as f64)
        .to_kind(Kind::Int64)
        + max_exact;
    let large = large.clamp_max(half - 1);
    direction + distance.where_self(&distance.lt(max_exact), &large)
}

struct Block {
    norm_attn: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    bias_table: Option<Tensor>,
    norm_ff: Tensor,
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
}

impl Block {
    fn load(w: &Weights, n: i64, c: &T5Config) -> Result<Self> {
        let p = format!("encoder.block.{n}.layer");
        let (d, inner, ff) = (c.d_model, c.inner_dim, c.d_ff);
        let table = format!("{p}.0.SelfAttention.relative_attention_bias.weight");
        Ok(Self {
            norm_attn: w.tensor(&format!("{p}.0.layer_norm.weight"))?,
            q: w.linear(&format!("{p}.0.SelfAttention.q"), (inner, d))?,
            k: w.linear(&format!("{p}.0.SelfAttention.k"), (inner, d))?,
            v: w.linear(&format!("{p}.0.SelfAttention.v"), (inner, d))?,
            o: w.linear(&format!("{p}.0.SelfAttention.o"), (d, inner))?,
            bias_table: w.optional(&table)?,
            norm_ff: w.tensor(&format!("{p}.1.layer_norm.weight"))?,
            wi_0: w.linear(&format!("{p}.1.DenseReluDense.wi_0"), (ff, d))?,
            wi_1: w.linear(&format!("{p}.1.DenseReluDense.wi_1"), (ff, d))?,
            wo: w.linear(&format!("{p}.1.DenseReluDense.wo"), (d, ff))?,
        })
    }
}

impl Movable for Block {
    fn moved(&self, device: Device) -> Self {
        Self {
            norm_attn: self.norm_attn.moved(device),
            q: self.q.moved(device),
            k: self.k.moved(device),
            v: self.v.moved(device),
            o: self.o.moved(device),
            bias_table: self.bias_table.moved(device),
            norm_ff: self.norm_ff.moved(device),
            wi_0: self.wi_0.moved(device),
            wi_1: self.wi_1.moved(device),
            wo: self.wo.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        let linears = [
            &self.q, &self.k, &self.v, &self.o, &self.wi_0, &self.wi_1, &self.wo,
        ];
        linears.iter().map(|l| l.bytes()).sum::<u64>()
            + self.norm_attn.bytes()
            + self.bias_table.bytes()
            + self.norm_ff.bytes()
    }
}

pub struct T5Encoder {
    pub config: T5Config,
    pub dtype: Kind,
    shared: Tensor,
    /// Under `--lowvram` the blocks that do not fit are streamed from pinned host memory.
    blocks: Vec<Streamed<Block>>,
    final_norm: Tensor,
}

impl T5Encoder {
    pub fn load(w: &Weights, config: T5Config) -> Result<Self> {
        let mut placer = w.placement.placer();
        let blocks: Vec<Streamed<Block>> = (0..config.num_layers)
            .map(|n| Ok(placer.place(Block::load(w, n, &config)?)))
            .collect::<Result<_>>()?;
        let counts = (resident_count(&blocks), blocks.len());
        log_partial_load("T5 encoder", counts, "blocks", w.device);
        Ok(Self {
            dtype: w.dtype,
            // Kept as the Linears are (UMT5's table alone is a billion values).
            shared: w.tensor_as("shared.weight", w.linear_dtype)?,
            blocks,
            final_norm: w.tensor("encoder.final_layer_norm.weight")?,
            config,
        })
    }

    /// How many blocks stay on the compute device (the rest are streamed under `--lowvram`).
    pub fn resident_blocks(&self) -> usize {
        resident_count(&self.blocks)
    }

    /// Hidden states `[b, n, d_model]` for token ids `[b, n]`; `mask` (`[b, n]`, 1 = token,
    /// 0 = padding) hides padding from attention and zeroes its outputs; `embeddings` are the
    /// vectors that ids from `EMBEDDING_ID_BASE` stand for.
    pub fn forward(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        embeddings: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, n) = ids.size2()?;
        let device = ids.device();
        let mut x = embed_ids(&self.shared, ids, embeddings, self.dtype);
        let lowest = match self.dtype {
            Kind::Half => -65504.0,
            Kind::BFloat16 => -3.3895313892515355e38,
            _ => f64::from(f32::MIN),
        };
        let key_mask = mask.map(|m| {
            let padded = m.to_kind(self.dtype).neg() + 1.0;
            (padded * lowest).view([b, 1, 1, n])
        });
        let buckets = relative_buckets(n, device).flatten(0, -1);
        let heads = self.config.num_heads;
        let mut position_bias = None;
        for block in in_order(&self.blocks) {
            if let Some(table) = &block.bias_table {
                let bias = table.index_select(0, &buckets).view([n, n, heads]);
                position_bias = Some(bias.permute([2, 0, 1]).unsqueeze(0));
            }
            let bias = position_bias
                .as_ref()
                .context("T5 layer 0 has no position bias")?;
            let bias = match &key_mask {
                Some(m) => bias + m,
                None => bias.shallow_clone(),
            };
            let h = t5_norm(&x, &block.norm_attn);
            let out = attention_with_scale(
                &block.q.forward(&h)?,
                &block.k.forward(&h)?,
                &block.v.forward(&h)?,
                heads,
                Some(&bias),
                1.0,
            );
            let attended = &x + block.o.forward(&out)?;
            let h = t5_norm(&attended, &block.norm_ff);
            let gated = block.wi_0.forward(&h)?.gelu("tanh") * block.wi_1.forward(&h)?;
            x = attended + block.wo.forward(&gated)?;
        }
        let x = t5_norm(&x, &self.final_norm);
        Ok(match mask {
            Some(m) => x * m.to_kind(self.dtype).unsqueeze(-1),
            None => x,
        })
    }
}
