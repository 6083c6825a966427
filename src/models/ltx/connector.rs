//! LTX-2's text connector (`comfy/ldm/lightricks/embeddings_connector.py`:
//! `Embeddings1DConnector`): the prompt's projected features followed by learnt registers up
//! to a whole number of 128-register blocks (at least 1024 tokens), through pre-norm
//! self-attention blocks with 1-D split RoPE over the token index, then an RMSNorm. The video
//! and audio streams each have one; their outputs side by side are the transformer's context.

use anyhow::{bail, Result};
use tch::Tensor;

use super::av_config::ConnectorConfig;
use super::av_layers::{rms_norm, Attention, FeedForward};
use super::av_rope::{Rope, RopeGeometry};
use crate::models::weights::Weights;

/// The fewest tokens a connector's output has.
const MIN_TOKENS: i64 = 1024;
/// Its RoPE's largest position and base.
const MAX_POSITION: f64 = 4096.0;
const THETA: f64 = 10000.0;

struct ConnectorBlock {
    attn: Attention,
    ff: FeedForward,
}

pub struct Connector {
    blocks: Vec<ConnectorBlock>,
    /// `[registers, dim]`.
    registers: Tensor,
    heads: i64,
}

impl Connector {
    pub fn load(w: &Weights, name: &str, config: &ConnectorConfig) -> Result<Self> {
        let dim = config.heads * config.head_dim;
        let blocks = (0..config.layers)
            .map(|n| {
                let p = format!("{name}.transformer_1d_blocks.{n}");
                Ok(ConnectorBlock {
                    attn: Attention::load(
                        w,
                        &format!("{p}.attn1"),
                        (dim, dim),
                        (config.heads, config.head_dim),
                        config.gated_attention,
                    )?,
                    ff: FeedForward::load(w, &format!("{p}.ff"), dim)?,
                })
            })
            .collect::<Result<_>>()?;
        let registers = w.tensor(&format!("{name}.learnable_registers"))?;
        if registers.size()[1] != dim {
            bail!("{name}'s registers are not {dim} wide");
        }
        Ok(Self {
            blocks,
            registers,
            heads: config.heads,
        })
    }

    /// The connector's output for prompt features `x` `[b, n, dim]`: `[b, tokens, dim]` with
    /// `tokens = ⌈max(1024, n) / registers⌉ · registers`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, dim) = x.size3()?;
        let (per_block, width) = self.registers.size2()?;
        if dim != width {
            bail!(
                "the text features are {dim} wide but this LTX connector takes {width}: the text \
                 encoder's projection and the model come from different LTX versions"
            );
        }
        let tokens = (MIN_TOKENS.max(n) + per_block - 1) / per_block * per_block;
        // Position p ≥ n holds register p mod the register count.
        let tiled = self
            .registers
            .to_kind(x.kind())
            .repeat([tokens / per_block, 1])
            .narrow(0, n, tokens - n);
        let mut x = Tensor::cat(
            &[
                x.shallow_clone(),
                tiled.unsqueeze(0).expand([b, -1, -1], false),
            ],
            1,
        );

        let index = Tensor::arange(tokens, (tch::Kind::Float, tch::Device::Cpu));
        let positions = Tensor::stack(&[&index, &index], 1).unsqueeze(0);
        let geometry = RopeGeometry {
            dim,
            heads: self.heads,
            theta: THETA,
            double_precision: true,
            middle: false,
        };
        let rope = Rope::new(&positions.to_device(x.device()), &[MAX_POSITION], geometry);
        for block in &self.blocks {
            x = &x + block.attn.forward(&rms_norm(&x), None, Some(&rope), None)?;
            x = &x + block.ff.forward(&rms_norm(&x))?;
        }
        Ok(rms_norm(&x))
    }
}
