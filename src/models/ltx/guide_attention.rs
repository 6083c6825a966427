//! LTXVAddGuide's per-guide attention strength (`comfy/ldm/lightricks/model.py`:
//! `_build_guide_self_attention_mask`, `GuideAttentionMask`, `_attention_with_guide_mask`). A
//! guide's tokens sit after the video's; a strength other than 1, or a pixel mask, weighs the
//! attention between them and the video's tokens by adding ln(weight) to those scores: on the
//! guide's keys for the video's queries, and on the video's keys for the guide's queries.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::runtime::attention::attention;
use crate::sampling::model::GuideAttention;

/// The two bias masks, in the model's dtype as ComfyUI makes them.
pub struct GuideMask {
    /// The first guide token (every token before it is the video's).
    guide_start: i64,
    /// How many guide tokens carry a weight.
    tracked: i64,
    /// `[1, 1, 1, tokens]`: ln(weight) on the tracked keys.
    noisy_bias: Tensor,
    /// `[1, 1, tracked, tokens]`: each tracked query's ln(weight) on the video's keys.
    tracked_bias: Tensor,
}

/// `torch.finfo(kind)`'s `min` and `tiny`.
fn float_limits(kind: Kind) -> (f64, f64) {
    match kind {
        Kind::Half => (-65504.0, 6.103_515_625e-5),
        Kind::BFloat16 => (-3.389_531_389_251_535_5e38, f32::MIN_POSITIVE as f64),
        Kind::Double => (f64::MIN, f64::MIN_POSITIVE),
        _ => (f32::MIN as f64, f32::MIN_POSITIVE as f64),
    }
}

impl GuideMask {
    /// The masks for `tokens` video tokens whose last `guide_tokens` are `guides`' tokens, in
    /// order; `None` when every weight is 1.
    pub fn new(
        tokens: i64,
        guide_tokens: i64,
        guides: &[GuideAttention],
        kind: Kind,
        device: Device,
    ) -> Result<Option<Self>> {
        let attenuated = guides
            .iter()
            .any(|g| g.strength != 1.0 || g.pixel_mask.is_some());
        if guide_tokens == 0 || !attenuated {
            return Ok(None);
        }
        let counted: i64 = guides.iter().map(|g| g.tokens).sum();
        if counted != guide_tokens {
            bail!(
                "the guides count {counted} tokens but {guide_tokens} guide tokens were appended"
            );
        }
        let mut weights = Vec::new();
        for guide in guides.iter().filter(|g| g.tokens > 0) {
            let w = match &guide.pixel_mask {
                Some(mask) => {
                    let per_token = downsample_to_latent(
                        &mask.to_device(device).to_kind(kind),
                        guide.latent_shape,
                    )
                    .narrow(0, 0, 1);
                    let n = per_token.size()[1].min(guide.tokens);
                    per_token.narrow(1, 0, n) * guide.strength
                }
                None => Tensor::full([1, guide.tokens], guide.strength, (kind, device)),
            };
            weights.push(w);
        }
        if weights.is_empty() {
            return Ok(None);
        }
        let weights = Tensor::cat(&weights, 1);
        if weights.eq(1.0).all().int64_value(&[]) != 0 {
            return Ok(None);
        }
        let (min, tiny) = float_limits(kind);
        let log_w = weights
            .clamp_min(tiny)
            .log()
            .where_self(&weights.gt(0.0), &weights.full_like(min));
        let tracked = log_w.size()[1];
        let guide_start = tokens - guide_tokens;
        let noisy_bias = Tensor::zeros([1, 1, 1, tokens], (kind, device));
        noisy_bias
            .narrow(3, guide_start, tracked)
            .copy_(&log_w.view([1, 1, 1, tracked]));
        let tracked_bias = Tensor::zeros([1, 1, tracked, tokens], (kind, device));
        tracked_bias
            .narrow(3, 0, guide_start)
            .copy_(&log_w.view([1, 1, tracked, 1]));
        Ok(Some(Self {
            guide_start,
            tracked,
            noisy_bias,
            tracked_bias,
        }))
    }

    /// Self-attention over `[b, tokens, heads·d]` with the video's and the tracked guides'
    /// queries each under their own bias, the rest plain.
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, heads: i64) -> Tensor {
        let tokens = q.size()[1];
        let tracked_end = self.guide_start + self.tracked;
        let mut parts = Vec::new();
        if self.guide_start > 0 {
            let queries = q.narrow(1, 0, self.guide_start);
            parts.push(attention(&queries, k, v, heads, Some(&self.noisy_bias)));
        }
        let queries = q.narrow(1, self.guide_start, self.tracked);
        parts.push(attention(&queries, k, v, heads, Some(&self.tracked_bias)));
        if tracked_end < tokens {
            let queries = q.narrow(1, tracked_end, tokens - tracked_end);
            parts.push(attention(&queries, k, v, heads, None));
        }
        Tensor::cat(&parts, 1)
    }
}

/// A pixel mask `[b, 1, frames, height, width]` as one weight per latent cell
/// `[b, f·h·w]`: area-averaged to `h × w`, its first frame kept for the first latent frame and
/// the rest averaged in equal groups (trailing frames dropped), or repeated when there are fewer.
pub fn downsample_to_latent(mask: &Tensor, [f, h, w]: [i64; 3]) -> Tensor {
    let (b, _, frames, height, width) = mask.size5().expect("a guide mask is [b, 1, f, h, w]");
    let spatial = mask
        .view([b * frames, 1, height, width])
        .adaptive_avg_pool2d([h, w])
        .view([b, 1, frames, h, w]);
    let first = spatial.narrow(2, 0, 1);
    let latent = if frames > 1 && f > 1 {
        let group = (frames - 1) / (f - 1);
        let rest = if group < 1 {
            spatial
                .narrow(2, 1, frames - 1)
                .permute([0, 3, 4, 1, 2])
                .reshape([b * h * w, 1, frames - 1])
                .upsample_nearest1d([f - 1], None)
                .view([b, h, w, 1, f - 1])
                .permute([0, 3, 4, 1, 2])
        } else {
            spatial
                .narrow(2, 1, (f - 1) * group)
                .view([b, 1, f - 1, group, h, w])
                .mean_dim(3, false, None)
        };
        Tensor::cat(&[first, rest], 2)
    } else {
        first.expand([b, 1, f, h, w], false)
    };
    latent.reshape([b, -1])
}
