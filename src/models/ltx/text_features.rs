//! LTX-2's text features (`comfy/text_encoders/lt.py`: `LTXAVTEModel.encode_token_weights`
//! with its single-linear projection): every Gemma 3 hidden state of the prompt, each normalized
//! over the prompt's tokens and channels as `8·(x − mean) / (max − min + 1e-6)`, laid side by
//! side per channel (`[b, t, hidden·states]`, the states innermost) and projected by the LTX
//! checkpoint's `text_embedding_projection.aggregate_embed`. The connectors take it from there.

use anyhow::Result;
use tch::Tensor;

use crate::runtime::linear::Linear;

/// The projected features `[b, t, caption]` of hidden states `[b, t, hidden]` each.
pub fn project(states: &[Tensor], aggregate_embed: &Linear) -> Result<Tensor> {
    let stacked = Tensor::stack(states, 3);
    let (b, t, hidden, count) = stacked.size4()?;
    let axes: &[i64] = &[1, 2];
    let mean = stacked.mean_dim(axes, true, stacked.kind());
    let range = stacked.amax(axes, true) - stacked.amin(axes, true) + 1e-6;
    let normed = (stacked - mean) * 8.0 / range;
    aggregate_embed.forward(&normed.reshape([b, t, hidden * count]))
}
