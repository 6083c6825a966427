//! Text generation as ComfyUI's `BaseGenerate` runs it (`comfy/text_encoders/llama.py`): the
//! prompt's embeddings once through the decoder, filling a key/value cache, then one token at a
//! time until a stop token or `max_length` tokens. Each token is the argmax, or a draw after
//! ComfyUI's repetition and presence penalties (on the tokens generated so far), temperature,
//! top-k, min-p and top-p filters, from the device's generator seeded with the seed, so a seed
//! gives ComfyUI's text.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::gemma3::Gemma3Text;
use crate::sampling::noise::SeededDraws;

/// TextGenerate's `sampling_mode` "on" settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    pub temperature: f64,
    pub top_k: i64,
    pub top_p: f64,
    pub min_p: f64,
    pub repetition_penalty: f64,
    pub presence_penalty: f64,
    pub seed: u64,
}

/// How each token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoding {
    Greedy,
    Sampled(Sampling),
}

/// The tokens generated after `embeds` `[1, t, hidden]` (the prompt's embeddings in the model's
/// compute dtype), the stop token included when one ended it. `step` hears each token's count.
pub fn generate(
    model: &Gemma3Text,
    embeds: &Tensor,
    max_length: usize,
    stop_tokens: &[u32],
    decoding: &Decoding,
    step: &mut dyn FnMut(u64, u64) -> Result<()>,
) -> Result<Vec<u32>> {
    let _no_grad = tch::no_grad_guard();
    let device = embeds.device();
    // ComfyUI seeds a generator of the execution device for sampled decoding only.
    let _draws = match decoding {
        Decoding::Sampled(s) => Some(SeededDraws::new(s.seed, device)),
        Decoding::Greedy => None,
    };
    let mut cache = model.kv_cache(embeds.size()[0], embeds.size()[1] + max_length as i64);
    let mut x = embeds.to_kind(model.dtype());
    let mut generated: Vec<u32> = Vec::new();
    for n in 0..max_length {
        let states = model.forward_cached(&x, &mut cache)?;
        let logits = model.logits(&states);
        let token = match decoding {
            Decoding::Greedy => logits.argmax(-1, false).int64_value(&[0]),
            Decoding::Sampled(s) => sample_token(logits, s, &generated),
        } as u32;
        generated.push(token);
        step(n as u64 + 1, max_length as u64)?;
        if stop_tokens.contains(&token) {
            break;
        }
        let next = Tensor::from_slice(&[token as i64]).view([1, 1]);
        // A generated token's embedding is scaled in the table's dtype.
        x = model.embed(&next, model.embedding_kind());
    }
    Ok(generated)
}

/// ComfyUI's `sample_token` for logits `[1, vocab]`: penalties on the tokens generated so far,
/// temperature, then top-k (with min-p and top-p among the kept) or min-p and top-p over the
/// whole vocabulary, and one multinomial draw from the seeded generator.
fn sample_token(logits: Tensor, s: &Sampling, history: &[u32]) -> i64 {
    if s.temperature == 0.0 {
        return logits.argmax(-1, false).int64_value(&[0]);
    }
    let mut logits = logits;
    if !history.is_empty() && (s.repetition_penalty != 1.0 || s.presence_penalty != 0.0) {
        let mut seen: Vec<i64> = history.iter().map(|&t| t as i64).collect();
        seen.sort_unstable();
        seen.dedup();
        let ids = Tensor::from_slice(&seen).to_device(logits.device());
        let mut picked = logits.index_select(1, &ids);
        if s.repetition_penalty != 1.0 {
            let p = s.repetition_penalty;
            picked = (&picked * p).where_self(&picked.lt(0.0), &(&picked / p));
        }
        if s.presence_penalty != 0.0 {
            picked -= s.presence_penalty;
        }
        logits = logits.index_copy(1, &ids, &picked);
    }
    if s.temperature != 1.0 {
        logits /= s.temperature;
    }
    let lowest = lowest_value(logits.kind());
    if s.top_k > 0 {
        let k = s.top_k.min(logits.size()[1]);
        let (kept, indices) = logits.topk(k, -1, true, true);
        let kept = filter_min_p_top_p(kept, s, lowest);
        let draw = kept.softmax(-1, kept.kind()).multinomial(1, false);
        return indices.gather(1, &draw, false).int64_value(&[0, 0]);
    }
    let logits = filter_min_p_top_p(logits, s, lowest);
    logits
        .softmax(-1, logits.kind())
        .multinomial(1, false)
        .int64_value(&[0, 0])
}

/// Min-p (drop what is less likely than `min_p` times the likeliest) then top-p (keep the
/// likeliest tokens until their mass passes `top_p`, the first always), dropped logits set to
/// the dtype's lowest value.
fn filter_min_p_top_p(logits: Tensor, s: &Sampling, lowest: f64) -> Tensor {
    let mut logits = logits;
    if s.min_p > 0.0 {
        let probs = logits.softmax(-1, logits.kind());
        let threshold = probs.amax([-1], true) * s.min_p;
        logits = logits.masked_fill(&probs.lt_tensor(&threshold), lowest);
    }
    if s.top_p < 1.0 {
        let (sorted, order) = logits.sort(-1, true);
        let mass = sorted.softmax(-1, sorted.kind()).cumsum(-1, None::<Kind>);
        let drop_sorted = mass.gt(s.top_p);
        let _ = drop_sorted.narrow(-1, 0, 1).fill_(0);
        let drop = drop_sorted.zeros_like().scatter(1, &order, &drop_sorted);
        logits = logits.masked_fill(&drop, lowest);
    }
    logits
}

/// `torch.finfo(dtype).min`.
fn lowest_value(kind: Kind) -> f64 {
    match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.389_531_389_251_535_5e38,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    }
}
