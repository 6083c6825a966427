//! Classifier-free guidance over conditioning lists (ComfyUI's `sampling_function` and
//! `calc_cond_batch`), and the guiders built on it.

use anyhow::Result;
use tch::Tensor;

use super::model::{CondEntry, Conditioning, Model};
use super::regions;
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

/// ComfyUI's `calc_cond_batch` for one conditioning: each entry that applies at `sigma` runs on
/// its region, and the outputs are averaged with their weight maps; zeros where none applies.
fn calc_cond(model: &Model, cond: &Conditioning, x: &Tensor, sigma: f64) -> Result<Tensor> {
    let total = x.zeros_like();
    let counts = x.ones_like() * 1e-37;
    for entry in cond.0.iter().filter(|e| active(model, e, sigma)) {
        let region = regions::region(entry, x);
        let out = model.apply(&region.input, sigma, entry)? * &region.mult;
        regions::add_into(&total, region.crop.as_ref(), &out);
        regions::add_into(&counts, region.crop.as_ref(), &region.mult);
    }
    Ok(total / counts)
}

impl Guider {
    /// A copy ready to sample a latent with spatial `dims`: areas and masks resolved, and
    /// matching-area counterparts added across the conditionings (ComfyUI's `process_conds`).
    pub fn prepared(&self, dims: &[i64]) -> Guider {
        let mut g = self.clone();
        let mut lists: Vec<&mut Conditioning> = match &mut g {
            Guider::Basic { cond, .. } => vec![cond],
            Guider::Cfg {
                positive, negative, ..
            } => vec![positive, negative],
            Guider::DualCfg {
                cond1,
                cond2,
                negative,
                ..
            } => vec![cond1, cond2, negative],
        };
        let mut owned: Vec<Conditioning> = lists.iter().map(|c| (**c).clone()).collect();
        regions::prepare(&mut owned, dims);
        for (slot, resolved) in lists.iter_mut().zip(owned) {
            **slot = resolved;
        }
        g
    }
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
