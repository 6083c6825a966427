//! ComfyUI's `sampler_post_cfg_function` patches, which CFGZeroStar, SkipLayerGuidanceDiT,
//! CFGNorm, Mahiro, Epsilon Scaling, TemporalScoreRescaling and LTXVReferenceAudio put on a
//! MODEL, and
//! `cfg_function`, which applies them to each guided estimate; the `sampler_cfg_function` that
//! CFGNorm's pre-CFG form and RescaleCFG put in place of the CFG combine; and the unconditional
//! block skipping of SkipLayerGuidanceDiTSimple.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::guidance::calc_conds;
use super::model::{BlockSkip, Conditioning, Model, REF_AUDIO, SKIP_DOUBLE_BLOCKS};
use super::model_sampling::Prediction;

/// One post-CFG patch.
#[derive(Clone, Debug, PartialEq)]
pub enum PostCfg {
    /// CFGZeroStar: the unconditional estimate rescaled by the projection of the conditional
    /// one onto it (`optimized_scale` of the two noise estimates).
    ZeroStar,
    /// SkipLayerGuidanceDiT.
    SkipLayers(SkipLayers),
    /// CFGNorm: the guided estimate scaled down (never up) to the conditional one's norm over
    /// the channels, times `strength`.
    Norm { strength: f64 },
    /// Mahiro: the guided estimate blended towards `cond·scale` by how far the unconditional
    /// leap points away from the merged one (cosine similarity of their signed square roots).
    Mahiro,
    /// Epsilon Scaling: the guided noise divided by `factor`.
    EpsilonScaling { factor: f64 },
    /// TemporalScoreRescaling: the guided estimate interpolated from `x / α` by a ratio that
    /// goes from 1 at low SNR to `k` at high SNR; `variance` is `tsr_sigma²`.
    ScoreRescaling { k: f64, variance: f64 },
    /// LTXVReferenceAudio's identity guidance.
    ReferenceIdentity(ReferenceIdentity),
}

/// LTXVReferenceAudio's identity guidance: between `sigma_start` and `sigma_end`, one more call
/// of the positive conditioning without its reference clip ([`REF_AUDIO`]), the difference of
/// the conditional estimate to it added times `scale`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceIdentity {
    pub scale: f64,
    pub sigma_start: f64,
    pub sigma_end: f64,
}

impl ReferenceIdentity {
    fn apply(&self, step: &CfgStep, denoised: Tensor) -> Result<Tensor> {
        let active =
            self.scale != 0.0 && step.sigma >= self.sigma_end && step.sigma <= self.sigma_start;
        if !active {
            return Ok(denoised);
        }
        let without = Conditioning(
            step.cond
                .0
                .iter()
                .map(|entry| {
                    let mut entry = entry.clone();
                    entry.extra.remove(REF_AUDIO);
                    entry
                })
                .collect(),
        );
        let [plain] = calc_conds(step.model, [&without], step.x, step.sigma)?;
        Ok(denoised + (step.cond_pred - plain) * self.scale)
    }
}

/// A `sampler_cfg_function`: the CFG combine replaced (the last patch that sets one wins).
#[derive(Clone, Debug, PartialEq)]
pub enum CfgFunction {
    /// CFGNorm with `pre_cfg`: the combined noise estimate rescaled to the conditional one's
    /// channel norm (up or down), blended back towards plain CFG by `strength`.
    Norm { strength: f64 },
    /// RescaleCFG: the combined estimate rescaled to the conditional one's standard deviation
    /// and blended back by `multiplier`; in x0 space for flow models, in v space for the others.
    Rescale { multiplier: f64 },
}

impl CfgFunction {
    /// The guided denoised estimate from the two.
    fn combine(&self, step: &CfgStep) -> Tensor {
        match self {
            CfgFunction::Norm { strength } => normed_combine(step, *strength),
            CfgFunction::Rescale { multiplier } => {
                if step.model.sampling.prediction == Prediction::Flow {
                    rescaled_x0(step, *multiplier)
                } else {
                    rescaled_v(step, *multiplier)
                }
            }
        }
    }
}

fn normed_combine(step: &CfgStep, strength: f64) -> Tensor {
    let cond = step.x - step.cond_pred;
    let uncond = step.x - step.uncond_pred;
    let comb = &uncond + (&cond - &uncond) * step.cond_scale;
    let norm = |t: &Tensor| t.norm_scalaropt_dim(2, [1i64].as_slice(), true);
    let comb_norm = norm(&comb);
    let rescale = (norm(&cond) / comb_norm.clamp_min(1e-12))
        .where_self(&comb_norm.gt(0.0), &comb_norm.ones_like());
    let mut rescaled = &comb * rescale;
    if strength != 1.0 {
        rescaled = rescaled * strength + comb * (1.0 - strength);
    }
    step.x - rescaled
}

/// RescaleCFG on a flow model: the estimates are x0 predictions, rescaled as they are.
fn rescaled_x0(step: &CfgStep, multiplier: f64) -> Tensor {
    let (cond, uncond) = (step.cond_pred, step.uncond_pred);
    let cfg = uncond + (cond - uncond) * step.cond_scale;
    let dims: Vec<i64> = (1..cond.dim() as i64).collect();
    let std = |t: &Tensor| t.std_dim(dims.as_slice(), true, true);
    let rescaled = &cfg * (std(cond) / std(&cfg).clamp_min(1e-8));
    rescaled * multiplier + cfg * (1.0 - multiplier)
}

/// RescaleCFG on eps/v models: in v space, the standard deviation over dimensions 1–3 as
/// ComfyUI takes it (for video latents that leaves the width out).
fn rescaled_v(step: &CfgStep, multiplier: f64) -> Tensor {
    let x_orig = step.x;
    let mut shape = vec![1i64; x_orig.dim()];
    shape[0] = x_orig.size()[0];
    let sigma = Tensor::full(shape, step.sigma, (x_orig.kind(), x_orig.device()));
    let s2 = &sigma * &sigma + 1.0;
    let x = x_orig / &s2;
    let to_v = |denoised: &Tensor| (&x - denoised) * s2.sqrt() / &sigma;
    let (cond, uncond) = (to_v(step.cond_pred), to_v(step.uncond_pred));
    let cfg = &uncond + (&cond - &uncond) * step.cond_scale;
    let dims = [1i64, 2, 3];
    let std = |t: &Tensor| t.std_dim(dims.as_slice(), true, true);
    let rescaled = &cfg * (std(&cond) / std(&cfg));
    let fin = rescaled * multiplier + cfg * (1.0 - multiplier);
    x - fin * &sigma / s2.sqrt()
}

/// SkipLayerGuidanceDiT: between `sigma_start` and `sigma_end`, one more call of the positive
/// conditioning with `double` blocks skipped, its difference to the full call added times
/// `scale`, optionally rescaled towards the conditional estimate's standard deviation.
#[derive(Clone, Debug, PartialEq)]
pub struct SkipLayers {
    pub double: Vec<i64>,
    pub single: Vec<i64>,
    pub scale: f64,
    pub sigma_start: f64,
    pub sigma_end: f64,
    pub rescaling: f64,
}

/// SkipLayerGuidanceDiTSimple: between `sigma_start` and `sigma_end` the unconditional estimate
/// comes from a call with `double` blocks skipped, made apart from the conditional one.
#[derive(Clone, Debug, PartialEq)]
pub struct UncondSkip {
    pub double: Vec<i64>,
    pub sigma_start: f64,
    pub sigma_end: f64,
}

/// The conditional and unconditional estimates of a CFG step, with the model's unconditional
/// block skipping where it applies (ComfyUI's `calc_cond_batch`, or the function
/// SkipLayerGuidanceDiTSimple puts in its place).
pub fn cond_and_uncond(
    model: &Model,
    positive: &Conditioning,
    negative: &Conditioning,
    x: &Tensor,
    sigma: f64,
) -> Result<[Tensor; 2]> {
    let skip = model
        .uncond_skip
        .as_ref()
        .filter(|s| sigma >= s.sigma_end && sigma <= s.sigma_start);
    let Some(skip) = skip else {
        return calc_conds(model, [positive, negative], x, sigma);
    };
    match model.net.block_skip() {
        BlockSkip::Ignores => return calc_conds(model, [positive, negative], x, sigma),
        BlockSkip::NotYet => {
            bail!("SkipLayerGuidanceDiTSimple: skipping this model's blocks is not supported yet")
        }
        BlockSkip::Skips => {}
    }
    let [cond] = calc_conds(model, [positive], x, sigma)?;
    let [uncond] = calc_conds(model, [&with_skipped(negative, &skip.double)], x, sigma)?;
    Ok([cond, uncond])
}

/// The conditioning with `blocks` marked to be skipped.
fn with_skipped(cond: &Conditioning, blocks: &[i64]) -> Conditioning {
    let blocks = Tensor::from_slice(blocks);
    Conditioning(
        cond.0
            .iter()
            .map(|e| {
                e.clone()
                    .with_extra(SKIP_DOUBLE_BLOCKS, blocks.shallow_clone())
            })
            .collect(),
    )
}

/// What a post-CFG function reads of one step (ComfyUI's `args`).
pub struct CfgStep<'a> {
    pub model: &'a Model,
    /// The conditioning of `cond_pred`.
    pub cond: &'a Conditioning,
    pub x: &'a Tensor,
    pub sigma: f64,
    pub cond_pred: &'a Tensor,
    /// Zeros where the unconditional call was skipped (cfg 1).
    pub uncond_pred: &'a Tensor,
    pub cond_scale: f64,
}

/// ComfyUI's `cfg_function`: `uncond + (cond − uncond)·scale` (or the model's
/// `sampler_cfg_function`), then the model's post-CFG patches.
pub fn cfg_function(step: &CfgStep) -> Result<Tensor> {
    let mut out = match &step.model.cfg_function {
        Some(function) => function.combine(step),
        None => step.uncond_pred + (step.cond_pred - step.uncond_pred) * step.cond_scale,
    };
    for patch in &step.model.post_cfg {
        out = patch.apply(step, out)?;
    }
    Ok(out)
}

impl PostCfg {
    fn apply(&self, step: &CfgStep, denoised: Tensor) -> Result<Tensor> {
        match self {
            PostCfg::ZeroStar => {
                let uncond = step.uncond_pred;
                let alpha = optimized_scale(&(step.x - step.cond_pred), &(step.x - uncond));
                Ok(denoised + uncond * (&alpha - 1.0) + uncond * (1.0 - alpha) * step.cond_scale)
            }
            PostCfg::SkipLayers(s) => s.apply(step, denoised),
            PostCfg::Norm { strength } => {
                let norm = |t: &Tensor| t.norm_scalaropt_dim(2, [1i64].as_slice(), true);
                let scale = (norm(step.cond_pred) / (norm(&denoised) + 1e-8)).clamp(0.0, 1.0);
                Ok(denoised * scale * *strength)
            }
            PostCfg::Mahiro => Ok(mahiro(step, &denoised)),
            PostCfg::EpsilonScaling { factor } => {
                let factor = if *factor == 0.0 { 1e-9 } else { *factor };
                Ok(step.x - (step.x - denoised) / factor)
            }
            PostCfg::ScoreRescaling { k, variance } => {
                Ok(score_rescaled(step, denoised, *k, *variance))
            }
            PostCfg::ReferenceIdentity(r) => r.apply(step, denoised),
        }
    }
}

/// Mahiro's `mahiro_normd`.
fn mahiro(step: &CfgStep, cfg: &Tensor) -> Tensor {
    let scale = step.cond_scale;
    let leap = step.cond_pred * scale;
    let u_leap = step.uncond_pred * scale;
    let merge = (&leap + cfg) / 2.0;
    let signed_sqrt = |t: &Tensor| t.abs().sqrt() * t.sign();
    let sim = Tensor::cosine_similarity(&signed_sqrt(&u_leap), &signed_sqrt(&merge), 1, 1e-8)
        .mean(None::<Kind>);
    let simsc = (sim + 1.0) * 2.0;
    (cfg * &simsc + leap * (simsc.neg() + 4.0)) / 4.0
}

/// TemporalScoreRescaling: with `h` the half log-SNR (`log((1 − σ)/σ)` for flow models,
/// `−log σ` otherwise), `snr = e^{2h}`, `r = (snr·v + 1)/(snr·v/k + 1)` and `α = σ·e^h`, the
/// estimate becomes `x/α + r·(denoised − x/α)`.
fn score_rescaled(step: &CfgStep, denoised: Tensor, k: f64, variance: f64) -> Tensor {
    let sigma = step.sigma;
    if k == 1.0 || sigma == 0.0 {
        return denoised;
    }
    let half_log_snr = if step.model.sampling.prediction == Prediction::Flow {
        ((1.0 - sigma) / sigma).ln()
    } else {
        -sigma.ln()
    };
    let snr = (2.0 * half_log_snr).exp();
    if snr == 0.0 {
        return denoised;
    }
    let r = if snr.is_infinite() {
        k
    } else {
        (snr * variance + 1.0) / (snr * variance / k + 1.0)
    };
    let scaled_x = step.x / (sigma * half_log_snr.exp());
    scaled_x.lerp(&denoised, r)
}

impl SkipLayers {
    fn apply(&self, step: &CfgStep, denoised: Tensor) -> Result<Tensor> {
        let active =
            self.scale > 0.0 && step.sigma >= self.sigma_end && step.sigma <= self.sigma_start;
        if !active {
            return Ok(denoised);
        }
        match step.model.net.block_skip() {
            // ComfyUI's patch is never consulted: the extra call equals the conditional one.
            BlockSkip::Ignores => return Ok(denoised),
            BlockSkip::NotYet => {
                bail!("SkipLayerGuidanceDiT: skipping this model's blocks is not supported yet")
            }
            BlockSkip::Skips => {}
        }
        let skipped = with_skipped(step.cond, &self.double);
        let [slg] = calc_conds(step.model, [&skipped], step.x, step.sigma)?;
        let mut out = denoised + (step.cond_pred - slg) * self.scale;
        if self.rescaling != 0.0 {
            let factor = step.cond_pred.std(true) / out.std(true);
            out = &out * (factor * self.rescaling + (1.0 - self.rescaling));
        }
        Ok(out)
    }
}

/// CFG-Zero*'s `optimized_scale`: per batch item `⟨p, n⟩ / (‖n‖² + 1e-8)`, shaped to broadcast.
fn optimized_scale(positive: &Tensor, negative: &Tensor) -> Tensor {
    let b = positive.size()[0];
    let p = positive.reshape([b, -1]);
    let n = negative.reshape([b, -1]);
    let dot = (&p * &n).sum_dim_intlist(1, true, None);
    let norm = (&n * &n).sum_dim_intlist(1, true, None) + 1e-8;
    let mut shape = vec![b];
    shape.resize(positive.dim(), 1);
    (dot / norm).reshape(shape)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tch::{Device, Kind};

    use super::*;
    use crate::sampling::model::{CondEntry, DiffusionNet};
    use crate::sampling::model_sampling::{ModelSampling, Prediction};

    /// Predicts the conditioning's mean everywhere, plus 0.25 per skipped block and 0.125
    /// with a reference clip.
    struct SkippingNet;

    impl DiffusionNet for SkippingNet {
        fn forward(&self, xc: &Tensor, _: &Tensor, cond: &CondEntry) -> Result<Tensor> {
            let skipped = cond.extra(SKIP_DOUBLE_BLOCKS).map_or(0, |b| b.numel());
            let reference = if cond.extra(REF_AUDIO).is_some() {
                0.125
            } else {
                0.0
            };
            let value = cond.context.mean(Kind::Float).double_value(&[])
                + 0.25 * skipped as f64
                + reference;
            Ok(xc.zeros_like() + value)
        }

        fn block_skip(&self) -> BlockSkip {
            BlockSkip::Skips
        }
    }

    fn model(post_cfg: Vec<PostCfg>) -> Model {
        Model {
            post_cfg,
            ..Model::new(
                Arc::new(SkippingNet),
                Arc::new(ModelSampling::sd(Prediction::Eps)),
            )
        }
    }

    fn conditioning(value: f64) -> Conditioning {
        Conditioning(vec![CondEntry::new(Tensor::full(
            [1, 2, 4],
            value,
            (Kind::Float, Device::Cpu),
        ))])
    }

    /// A random latent, `m`'s conditional estimate of it for `positive` at σ 2, and an
    /// unconditional estimate of −0.3 everywhere.
    fn estimates(m: &Model, positive: &Conditioning) -> (Tensor, Tensor, Tensor) {
        let x = Tensor::randn([1, 4, 2, 2], (Kind::Float, Device::Cpu));
        let [cond] = calc_conds(m, [positive], &x, 2.0).unwrap();
        let uncond = cond.zeros_like() - 0.3;
        (x, cond, uncond)
    }

    /// A CFG step at scale 4 over those estimates.
    fn cfg_step<'a>(
        model: &'a Model,
        cond: &'a Conditioning,
        (x, cond_pred, uncond_pred): (&'a Tensor, &'a Tensor, &'a Tensor),
        sigma: f64,
    ) -> CfgStep<'a> {
        CfgStep {
            model,
            cond,
            x,
            sigma,
            cond_pred,
            uncond_pred,
            cond_scale: 4.0,
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// CFG-Zero*'s scale is the least-squares factor that best maps `n` onto `p`.
    #[test]
    fn optimized_scale_projects_per_item() {
        let n = Tensor::from_slice(&[1.0f32, 2.0, 0.0, 3.0]).view([2, 2]);
        let p = Tensor::from_slice(&[2.0f32, 4.0, 1.0, 1.5]).view([2, 2]);
        let s = optimized_scale(&p, &n);
        assert_eq!(s.size(), [2, 1]);
        assert!((s.double_value(&[0, 0]) - 2.0).abs() < 1e-6);
        assert!((s.double_value(&[1, 0]) - 0.5).abs() < 1e-6);
    }

    /// CFGZeroStar turns `u + (c − u)·s` into `c·s + u·α·(1 − s)`, with α the projection of
    /// `x − c` onto `x − u` for each item.
    #[test]
    fn zero_star_rescales_the_unconditional_estimate() {
        let x = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let cond = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let uncond = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let m = model(vec![PostCfg::ZeroStar]);
        let step = CfgStep {
            model: &m,
            cond: &conditioning(0.0),
            x: &x,
            sigma: 1.0,
            cond_pred: &cond,
            uncond_pred: &uncond,
            cond_scale: 5.0,
        };
        let out = cfg_function(&step).unwrap();
        for item in 0..2 {
            let (xi, ci, ui) = (x.get(item), cond.get(item), uncond.get(item));
            let (p, n) = (&xi - &ci, &xi - &ui);
            let alpha = (&p * &n).sum(Kind::Double).double_value(&[])
                / ((&n * &n).sum(Kind::Double).double_value(&[]) + 1e-8);
            let want = &ci * 5.0 + &ui * (alpha * (1.0 - 5.0));
            assert!(max_diff(&out.get(item), &want) < 1e-4, "item {item}");
        }
    }

    /// Inside its sigma window SkipLayerGuidanceDiT adds (cond − cond with blocks skipped)·scale
    /// from one more call of the positive conditioning; outside it changes nothing.
    #[test]
    fn skip_layer_guidance_adds_the_skipped_difference_in_its_window() {
        let slg = SkipLayers {
            double: vec![9, 10],
            single: vec![],
            scale: 3.0,
            sigma_start: 5.0,
            sigma_end: 1.0,
            rescaling: 0.0,
        };
        let m = model(vec![PostCfg::SkipLayers(slg.clone())]);
        let positive = conditioning(0.5);
        let (x, cond, uncond) = estimates(&m, &positive);
        let step = |sigma| cfg_step(&m, &positive, (&x, &cond, &uncond), sigma);
        let plain = &uncond + (&cond - &uncond) * 4.0;
        // The skipped call predicts 0.5 more eps, so its denoised estimate is 0.5·σ lower.
        let inside = cfg_function(&step(2.0)).unwrap();
        assert!(max_diff(&inside, &(&plain + 0.5 * 2.0 * 3.0)) < 1e-5);
        let outside = cfg_function(&step(6.0)).unwrap();
        assert!(max_diff(&outside, &plain) < 1e-6);
        let rescaled = SkipLayers {
            rescaling: 0.5,
            ..slg
        };
        let m = model(vec![PostCfg::SkipLayers(rescaled)]);
        let out = cfg_function(&CfgStep {
            model: &m,
            ..step(2.0)
        })
        .unwrap();
        let guided = &plain + 3.0;
        let factor = (cond.std(true) / guided.std(true)).double_value(&[]);
        let want = &guided * (0.5 * factor + 0.5);
        assert!(max_diff(&out, &want) < 1e-5);
    }

    /// LTXVReferenceAudio's identity guidance adds (cond − cond without the reference)·scale
    /// inside its sigma window, from one more call; outside it, or at scale 0, nothing.
    #[test]
    fn identity_guidance_adds_the_reference_difference_in_its_window() {
        let identity = ReferenceIdentity {
            scale: 3.0,
            sigma_start: 5.0,
            sigma_end: 1.0,
        };
        let m = model(vec![PostCfg::ReferenceIdentity(identity.clone())]);
        let reference = Tensor::zeros([1, 2, 128], (Kind::Float, Device::Cpu));
        let positive = Conditioning(
            conditioning(0.5)
                .0
                .into_iter()
                .map(|e| e.with_extra(REF_AUDIO, reference.shallow_clone()))
                .collect(),
        );
        let (x, cond, uncond) = estimates(&m, &positive);
        let step = |sigma| cfg_step(&m, &positive, (&x, &cond, &uncond), sigma);
        let plain = &uncond + (&cond - &uncond) * 4.0;
        // With the reference the eps is 0.125 higher, so the denoised estimate 0.125·σ lower.
        let inside = cfg_function(&step(2.0)).unwrap();
        assert!(max_diff(&inside, &(&plain - 0.125 * 2.0 * 3.0)) < 1e-5);
        let outside = cfg_function(&step(0.5)).unwrap();
        assert!(max_diff(&outside, &plain) < 1e-6);
        let off = model(vec![PostCfg::ReferenceIdentity(ReferenceIdentity {
            scale: 0.0,
            ..identity
        })]);
        let out = cfg_function(&CfgStep {
            model: &off,
            ..step(2.0)
        })
        .unwrap();
        assert!(max_diff(&out, &plain) < 1e-6);
    }

    /// SkipLayerGuidanceDiTSimple: inside the sigma range only the unconditional call skips
    /// its blocks (0.25 more eps per block here), made apart from the conditional one; outside
    /// it both come from the batched call.
    #[test]
    fn the_simple_variant_skips_blocks_in_the_unconditional_call_only() {
        let m = Model {
            uncond_skip: Some(UncondSkip {
                double: vec![1, 2],
                sigma_start: 4.0,
                sigma_end: 1.0,
            }),
            ..model(Vec::new())
        };
        let x = Tensor::zeros([1, 2, 4], (Kind::Float, Device::Cpu));
        let (positive, negative) = (conditioning(0.5), conditioning(-0.5));
        // Apart, each call sees its own conditioning: eps 0.5 for the positive, −0.5 + 0.5 for
        // the skipping negative; denoised = x − σ·eps at x = 0, σ = 2.
        let [cond, uncond] = cond_and_uncond(&m, &positive, &negative, &x, 2.0).unwrap();
        assert!(max_diff(&cond, &(x.zeros_like() - 1.0)) < 1e-6);
        assert!(max_diff(&uncond, &x) < 1e-6);
        let [_, outside] = cond_and_uncond(&m, &positive, &negative, &x, 6.0).unwrap();
        let [_, plain_outside] = calc_conds(&m, [&positive, &negative], &x, 6.0).unwrap();
        assert!(max_diff(&outside, &plain_outside) < 1e-6);
    }

    /// CFGNorm: post-CFG the guided estimate is scaled down to the conditional one's channel
    /// norm (never up); pre-CFG the combined noise takes the conditional noise's norm.
    #[test]
    fn cfg_norm_matches_the_conditional_norm() {
        let x = Tensor::zeros([1, 2, 1, 1], (Kind::Float, Device::Cpu));
        let cond = Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2, 1, 1]); // norm 5
        let uncond = Tensor::from_slice(&[0.0f32, 4.0]).view([1, 2, 1, 1]);
        let positive = conditioning(0.0);
        let step = |m| CfgStep {
            model: m,
            cond: &positive,
            x: &x,
            sigma: 1.0,
            cond_pred: &cond,
            uncond_pred: &uncond,
            cond_scale: 3.0,
        };
        // Plain CFG: (9, 4), norm √97 > 5, so it is scaled by 5/√97, then by the strength.
        let post = model(vec![PostCfg::Norm { strength: 0.5 }]);
        let out = cfg_function(&step(&post)).unwrap();
        let want =
            Tensor::from_slice(&[9.0f32, 4.0]).view([1, 2, 1, 1]) * (5.0 / 97f64.sqrt() * 0.5);
        assert!(max_diff(&out, &want) < 1e-5);
        // Pre-CFG on the noise x − d: the combined (−9, −4) rescaled to norm 5, x − that.
        let pre = Model {
            cfg_function: Some(CfgFunction::Norm { strength: 1.0 }),
            ..model(Vec::new())
        };
        let out = cfg_function(&step(&pre)).unwrap();
        assert!(
            max_diff(
                &out,
                &(Tensor::from_slice(&[9.0f32, 4.0]).view([1, 2, 1, 1]) * (5.0 / 97f64.sqrt()))
            ) < 1e-5
        );
    }
}
