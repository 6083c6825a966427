//! Classifier-free guidance over conditioning lists (ComfyUI's `sampling_function` and
//! `calc_cond_batch`), and the guiders built on it.

use anyhow::Result;
use tch::Tensor;

use super::model::{CondEntry, Conditioning, Model};
use super::samplers::Denoiser;

/// A guider: positive/negative (and more) conditioning with a CFG scale.
#[derive(Clone)]
pub enum Guider {
    /// One conditioning, no guidance (BasicGuider).
    Basic { model: Model, cond: Conditioning },
    /// Two conditionings stacked (DualCFGGuider): regular
    /// `neg + (c2 − neg)·cfg2 + (c1 − c2)·cfg1`, or nested `neg + cfg2·(c2 + (c1 − c2)·cfg1 − neg)`.
    DualCfg {
        model: Model,
        cond1: Conditioning,
        cond2: Conditioning,
        negative: Conditioning,
        cfg1: f64,
        cfg2: f64,
        nested: bool,
    },
    /// `uncond + (cond − uncond)·cfg` (CFGGuider, KSampler).
    Cfg {
        model: Model,
        positive: Conditioning,
        negative: Conditioning,
        cfg: f64,
    },
}

impl Guider {
    pub fn model(&self) -> &Model {
        match self {
            Guider::Basic { model, .. }
            | Guider::Cfg { model, .. }
            | Guider::DualCfg { model, .. } => model,
        }
    }
}

/// Whether an entry applies at `sigma` (its start/end percentages turned into sigmas).
fn active(model: &Model, entry: &CondEntry, sigma: f64) -> bool {
    let start = model.sampling.percent_to_sigma(entry.start_percent);
    let end = model.sampling.percent_to_sigma(entry.end_percent);
    !(sigma > start || sigma < end)
}

/// The strength-weighted mean of the entries that apply at `sigma`; zeros when none does.
fn calc_cond(model: &Model, cond: &Conditioning, x: &Tensor, sigma: f64) -> Result<Tensor> {
    let mut total = x.zeros_like();
    let mut weight = 1e-37;
    for entry in cond.0.iter().filter(|e| active(model, e, sigma)) {
        total += model.apply(x, sigma, entry)? * entry.strength;
        weight += entry.strength;
    }
    Ok(total / weight)
}

impl Denoiser for Guider {
    fn is_flow(&self) -> bool {
        self.model().sampling.prediction == super::model_sampling::Prediction::Flow
    }

    fn percent_to_sigma(&self, percent: f64) -> f64 {
        self.model().sampling.percent_to_sigma(percent)
    }

    fn denoise_with_uncond(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        match self {
            Guider::Cfg {
                model,
                positive,
                negative,
                cfg,
            } => {
                let cond = calc_cond(model, positive, x, sigma)?;
                let uncond = calc_cond(model, negative, x, sigma)?;
                Ok((&uncond + (cond - &uncond) * *cfg, uncond))
            }
            Guider::Basic { .. } | Guider::DualCfg { .. } => {
                let d = self.denoise(x, sigma)?;
                Ok((d.shallow_clone(), d))
            }
        }
    }

    fn noise_scaling(&self, sigma: f64, noise: &Tensor, x: &Tensor) -> Tensor {
        let s = Tensor::full([x.size()[0]], sigma, (x.kind(), x.device()));
        self.model().sampling.noise_scaling(&s, noise, x, false)
    }

    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        match self {
            Guider::Basic { model, cond } => calc_cond(model, cond, x, sigma),
            Guider::DualCfg {
                model,
                cond1,
                cond2,
                negative,
                cfg1,
                cfg2,
                nested,
            } => {
                let c1 = calc_cond(model, cond1, x, sigma)?;
                let c2 = calc_cond(model, cond2, x, sigma)?;
                let neg = calc_cond(model, negative, x, sigma)?;
                if *nested {
                    let text = &c2 + (c1 - &c2) * *cfg1;
                    Ok(&neg + (text - &neg) * *cfg2)
                } else {
                    Ok(&neg + (&c2 - &neg) * *cfg2 + (c1 - c2) * *cfg1)
                }
            }
            Guider::Cfg {
                model,
                positive,
                negative,
                cfg,
            } => {
                let cond = calc_cond(model, positive, x, sigma)?;
                // ComfyUI skips the negative pass at cfg 1: the result is the positive alone.
                if (*cfg - 1.0).abs() <= 1e-9 {
                    return Ok(cond);
                }
                let uncond = calc_cond(model, negative, x, sigma)?;
                Ok(&uncond + (cond - &uncond) * *cfg)
            }
        }
    }
}
