//! LTX-2's text features (`comfy/text_encoders/lt.py`: `LTXAVTEModel.encode_token_weights`):
//! every Gemma 3 hidden state of the prompt, laid side by side per channel (`[b, t,
//! hidden·states]`, the states innermost), through the LTX checkpoint's
//! `text_embedding_projection`. The connectors take it from there.
//! - LTX-2 (`single_linear`): each state normalized over the prompt's tokens and channels as
//!   `8·(x − mean) / (max − min + 1e-6)`, one projection (`aggregate_embed`).
//! - LTX-2.3 (`dual_linear`): each state RMS-normed per token, one projection per stream
//!   (`video_aggregate_embed`, `audio_aggregate_embed`), each input scaled by
//!   √(its width / hidden); the two side by side.

use anyhow::{Context, Result};
use tch::Tensor;

use crate::models::weights::Weights;
use crate::runtime::linear::Linear;

/// Where an LTX checkpoint keeps its text projection.
pub const PROJECTION_PREFIX: &str = "text_embedding_projection.";
/// The per-token RMS norm's epsilon (`DualLinearProjection`).
const RMS_EPS: f64 = 1e-6;

pub enum FeatureProjection {
    Single(Linear),
    PerStream { video: Linear, audio: Linear },
}

impl FeatureProjection {
    /// From weights under [`PROJECTION_PREFIX`].
    pub fn load(w: &Weights) -> Result<Self> {
        let linear = |name: &str| {
            let key = w.key(&format!("{name}.weight"));
            let entry = w
                .file
                .entry(&key)
                .with_context(|| format!("the checkpoint holds no LTX text projection ({key})"))?;
            w.linear(name, (entry.shape[0] as i64, entry.shape[1] as i64))
        };
        if w.has("video_aggregate_embed.weight") {
            return Ok(Self::PerStream {
                video: linear("video_aggregate_embed")?,
                audio: linear("audio_aggregate_embed")?,
            });
        }
        Ok(Self::Single(linear("aggregate_embed")?))
    }

    /// The projected features `[b, t, width]` of hidden states `[b, t, hidden]` each.
    pub fn project(&self, states: &[Tensor]) -> Result<Tensor> {
        let stacked = Tensor::stack(states, 3);
        let (b, t, hidden, count) = stacked.size4()?;
        match self {
            Self::Single(aggregate_embed) => {
                let axes: &[i64] = &[1, 2];
                let mean = stacked.mean_dim(axes, true, stacked.kind());
                let range = stacked.amax(axes, true) - stacked.amin(axes, true) + 1e-6;
                let normed = (stacked - mean) * 8.0 / range;
                aggregate_embed.forward(&normed.reshape([b, t, hidden * count]))
            }
            Self::PerStream { video, audio } => {
                let square_mean = stacked.square().mean_dim(2, true, stacked.kind());
                let normed =
                    (&stacked * (square_mean + RMS_EPS).rsqrt()).reshape([b, t, hidden * count]);
                let scaled = |linear: &Linear| {
                    let width = linear.shape().0 as f64;
                    linear.forward(&(&normed * (width / hidden as f64).sqrt()))
                };
                Ok(Tensor::cat(&[scaled(video)?, scaled(audio)?], 2))
            }
        }
    }
}
