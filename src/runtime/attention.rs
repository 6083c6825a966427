//! Multi-head attention on `[batch, tokens, heads·head_dim]` tensors (ComfyUI's
//! `optimized_attention`): on Hopper through our FA3-class kernel where it applies
//! (`attention_sm90`), otherwise through libtorch's `scaled_dot_product_attention`, which picks
//! flash, cuDNN or memory-efficient kernels on the GPU and a math kernel on the CPU.

use tch::{Device, Kind, Tensor};

use super::accel::{set_sdp_priority, SdpBackend};

/// Puts cuDNN attention first where it applies: on H100 at 32k tokens it runs 590–625 TFLOP/s
/// against 350–370 for the flash backend (specs/quant-perf-probe-h100.txt). Each backend still
/// checks its own constraints, so other shapes and devices fall through to the next one.
pub fn prefer_cudnn_attention() -> anyhow::Result<()> {
    use SdpBackend::*;
    set_sdp_priority(&[CuDnn, Flash, Efficient, Math, Overrideable])
}

/// `softmax(q·kᵀ/√d + mask)·v` per head; `mask` (additive, or boolean where true keeps) broadcasts
/// to `[batch, heads, q_tokens, kv_tokens]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: i64, mask: Option<&Tensor>) -> Tensor {
    let head_dim = q.size()[2] / heads;
    attention_with_scale(q, k, v, heads, mask, 1.0 / (head_dim as f64).sqrt())
}

/// As [`attention`] with the scores scaled by `scale` instead of 1/√d (T5 does not scale).
pub fn attention_with_scale(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: i64,
    mask: Option<&Tensor>,
    scale: f64,
) -> Tensor {
    if mask.is_none() {
        if let Some(out) = super::attention_sm90::attention(q, k, v, heads, scale, None) {
            return out;
        }
    }
    let (batch, q_len, width) = q.size3().expect("q is [batch, tokens, width]");
    let head_dim = width / heads;
    let split = |t: &Tensor| {
        let tokens = t.size()[1];
        t.view([batch, tokens, heads, head_dim]).transpose(1, 2)
    };
    let out = Tensor::scaled_dot_product_attention(
        &split(q),
        &split(k),
        &split(v),
        mask,
        0.0,
        false,
        scale,
        false,
    );
    out.transpose(1, 2).reshape([batch, q_len, width])
}

/// [`attention`] with grouped keys and values: `q` `[batch, q_tokens, heads, head_dim]`, `k`
/// and `v` `[batch, kv_tokens, kv_heads, head_dim]`, each key/value head serving
/// `heads / kv_heads` consecutive query heads (SDPA's `enable_gqa`), so the keys are not
/// copied per query head. Gives `[batch, q_tokens, heads · head_dim]`.
pub fn grouped_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let (batch, q_len, heads, head_dim) = q.size4().expect("q is [batch, tokens, heads, dim]");
    let heads_first = |t: &Tensor| t.transpose(1, 2);
    let out = Tensor::scaled_dot_product_attention(
        &heads_first(q),
        &heads_first(k),
        &heads_first(v),
        mask,
        0.0,
        false,
        1.0 / (head_dim as f64).sqrt(),
        true,
    );
    out.transpose(1, 2)
        .reshape([batch, q_len, heads * head_dim])
}

/// Keys whose last one stands for `copies` equal keys, as the rows a text prompt is padded
/// with do (ComfyUI pads UMT5 prompts to 512 tokens with zeros, which give equal keys and
/// values): the attention weighs that key as if every copy were there, by adding ln(copies) to
/// its score, so the copies need no projecting and no attending.
pub struct RepeatedLastKey {
    copies: i64,
    /// Float32 `[keys]`: 0, and ln(copies) for the last key; none when no key is repeated.
    bias: Option<Tensor>,
}

impl Clone for RepeatedLastKey {
    fn clone(&self) -> Self {
        Self {
            copies: self.copies,
            bias: self.bias.as_ref().map(Tensor::shallow_clone),
        }
    }
}

impl RepeatedLastKey {
    /// For `keys` keys on `device`; `copies` ≥ 1 (1: no key is repeated, and there may be no
    /// keys at all).
    pub fn new(keys: i64, copies: i64, device: Device) -> Self {
        Self {
            copies,
            bias: (copies > 1).then(|| Self::scores_bias(keys, copies, (Kind::Float, device))),
        }
    }

    /// 0 for each key but the last, ln(copies) for it. A fill, not a host copy: made for
    /// every forward of a step.
    fn scores_bias(keys: i64, copies: i64, options: (Kind, Device)) -> Tensor {
        let bias = Tensor::zeros([keys], options);
        let _ = bias.narrow(0, keys - 1, 1).fill_((copies as f64).ln());
        bias
    }
}

/// [`attention`] over `k`, `v` with the last key and value repeated `repeated.copies` times.
/// The bias is exact where it stays float32: in the Hopper kernel, and in SDPA on float32 or
/// float64 inputs. A half-precision mask would round ln(copies), so other devices and kinds
/// attend the copies themselves (the last key and value expanded).
pub fn attention_repeated_last_key(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: i64,
    repeated: &RepeatedLastKey,
) -> Tensor {
    let Some(bias) = &repeated.bias else {
        return attention(q, k, v, heads, None);
    };
    let head_dim = q.size()[2] / heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    if let Some(out) = super::attention_sm90::attention(q, k, v, heads, scale, Some(bias)) {
        return out;
    }
    if matches!(q.kind(), Kind::Float | Kind::Double) {
        let keys = k.size()[1];
        let mask = RepeatedLastKey::scores_bias(keys, repeated.copies, (q.kind(), q.device()));
        return attention(q, k, v, heads, Some(&mask.view([1, 1, 1, keys])));
    }
    let expand = |t: &Tensor| {
        let (batch, keys, width) = t.size3().expect("k, v are [batch, tokens, width]");
        let last = t.narrow(1, keys - 1, 1);
        Tensor::cat(
            &[t, &last.expand([batch, repeated.copies - 1, width], false)],
            1,
        )
    };
    attention(q, &expand(k), &expand(v), heads, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook formula, head by head.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: i64, mask: Option<&Tensor>) -> Tensor {
        let (b, n, w) = q.size3().unwrap();
        let d = w / heads;
        let split = |t: &Tensor| {
            let m = t.size()[1];
            t.view([b, m, heads, d]).permute([0, 2, 1, 3])
        };
        let mut scores = split(q).matmul(&split(k).transpose(-1, -2)) / (d as f64).sqrt();
        if let Some(mask) = mask {
            scores += mask;
        }
        let out = scores.softmax(-1, Kind::Double).matmul(&split(v));
        out.permute([0, 2, 1, 3]).reshape([b, n, w])
    }

    #[test]
    fn attention_matches_the_textbook_formula_with_and_without_a_mask() {
        let _guard = tch::no_grad_guard();
        tch::manual_seed(1);
        let opts = (Kind::Double, Device::Cpu);
        let q = Tensor::randn([2, 7, 24], opts);
        let k = Tensor::randn([2, 5, 24], opts);
        let v = Tensor::randn([2, 5, 24], opts);
        let mask = Tensor::randn([2, 1, 7, 5], opts);
        for mask in [None, Some(&mask)] {
            let out = attention(&q, &k, &v, 3, mask);
            let diff = (out - reference(&q, &k, &v, 3, mask)).abs().max();
            assert!(diff.double_value(&[]) < 1e-12);
        }
    }

    #[test]
    fn grouped_keys_serve_consecutive_query_heads() {
        let _guard = tch::no_grad_guard();
        tch::manual_seed(3);
        let opts = (Kind::Double, Device::Cpu);
        // 6 query heads over 2 key/value heads of 4 dims.
        let q = Tensor::randn([2, 7, 6, 4], opts);
        let k = Tensor::randn([2, 5, 2, 4], opts);
        let v = Tensor::randn([2, 5, 2, 4], opts);
        let mask = Tensor::randn([2, 1, 7, 5], opts);
        let flat = |t: &Tensor| t.repeat_interleave_self_int(3, 2, None).reshape([2, 5, 24]);
        for mask in [None, Some(&mask)] {
            let out = grouped_attention(&q, &k, &v, mask);
            let expected = reference(&q.reshape([2, 7, 24]), &flat(&k), &flat(&v), 6, mask);
            let diff = (out - expected).abs().max();
            assert!(diff.double_value(&[]) < 1e-12);
        }
    }

    #[test]
    fn a_repeated_last_key_counts_as_its_copies() {
        let _guard = tch::no_grad_guard();
        tch::manual_seed(2);
        for kind in [Kind::Double, Kind::Float, Kind::BFloat16] {
            let opts = (kind, Device::Cpu);
            let q = Tensor::randn([2, 7, 24], opts);
            let k = Tensor::randn([2, 4, 24], opts);
            let v = Tensor::randn([2, 4, 24], opts);
            let copies = 6;
            let repeat = |t: &Tensor| {
                let last = t.narrow(1, 3, 1).repeat([1, copies - 1, 1]);
                Tensor::cat(&[t, &last], 1)
            };
            let expected = reference(
                &q.to_kind(Kind::Double),
                &repeat(&k).to_kind(Kind::Double),
                &repeat(&v).to_kind(Kind::Double),
                3,
                None,
            );
            let repeated = RepeatedLastKey::new(4, copies, Device::Cpu);
            let out = attention_repeated_last_key(&q, &k, &v, 3, &repeated);
            let diff = (out.to_kind(Kind::Double) - expected).abs().max();
            // Float64 and float32 within their rounding; bfloat16 attends the copies, with the
            // probabilities and the output rounded once each (2u·max|v|, 3u for slack).
            let max_v = v.abs().max().to_kind(Kind::Double).double_value(&[]);
            let bound = match kind {
                Kind::Double => 1e-12,
                Kind::Float => 1e-5,
                _ => 3.0 * 2f64.powi(-8) * max_v,
            };
            assert!(diff.double_value(&[]) < bound, "{kind:?}: {diff}");
        }
        let none = RepeatedLastKey::new(4, 1, Device::Cpu);
        assert!(none.bias.is_none());
        let no_keys = RepeatedLastKey::new(0, 1, Device::Cpu);
        assert!(
            no_keys.bias.is_none(),
            "an empty text has nothing to repeat"
        );
    }
}
