//! SEEDS (Gonzalez et al., stochastic explicit exponential derivative-free solvers) in data
//! prediction and log-SNR time, and ComfyUI's exponential Heun built on SEEDS-2.
//! Noise is the seeded per-step noise, drawn once per sub-interval as ComfyUI draws it.

use anyhow::Result;
use tch::Tensor;

use super::noise::StepNoise;
use super::samplers::{log_snr_schedule, Denoiser, SdeNoise, StepCallback};

/// Which exponential-integrator weights SEEDS-2's second stage uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phi {
    /// Blend the two estimates, then one φ₁ step.
    One,
    /// φ₁/φ₂ weights on the two estimates.
    Two,
}

/// `h·φ₁(h)`.
fn phi_1(h: f64) -> f64 {
    h.exp_m1()
}

/// `h·φ₂(h)`.
fn phi_2(h: f64) -> f64 {
    (h.exp_m1() - h) / h
}

/// torch.lerp's formula, exact at both ends.
fn lerp(a: f64, b: f64, w: f64) -> f64 {
    if w < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

/// The stochastic part of SEEDS: one noise draw per sub-interval, carried forward with the decay
/// `exp((r_from − r_to)·h·eta)` so the sub-steps share one Brownian path.
struct SegmentNoise<'a> {
    noise: &'a mut StepNoise,
    current: Option<Tensor>,
}

impl SegmentNoise<'_> {
    /// Advances over the segment between fractions `from` and `to` of the step, scaled like
    /// ComfyUI's `sde_noise`.
    fn advance(&mut self, x: &Tensor, h_eta: f64, from: f64, to: f64) -> &Tensor {
        let factor = (from - to) * h_eta;
        let fresh = self.noise.next(x) * (-(2.0 * factor).exp_m1()).sqrt();
        let next = match self.current.take() {
            Some(carried) => carried * factor.exp() + fresh,
            None => fresh,
        };
        self.current.insert(next)
    }
}

/// One step's frame: where it starts and how far (in log-SNR) it goes.
struct Frame {
    sigma: f64,
    h: f64,
    eta: f64,
    s_noise: f64,
}

impl Frame {
    /// The state at fraction `r` of the step (noise level `sigma_r`): `x` decayed there, minus the
    /// `weighted` estimates, plus the shared noise over `[r_from, r]`.
    fn stage(
        &self,
        x: &Tensor,
        weighted: Tensor,
        sigma_r: f64,
        (r_from, r): (f64, f64),
        sde: &mut SegmentNoise,
    ) -> Tensor {
        let out = x * (sigma_r / self.sigma * (-r * self.h * self.eta).exp()) - weighted;
        if self.eta > 0.0 && self.s_noise > 0.0 {
            out + sde.advance(x, self.h * self.eta, r_from, r) * (sigma_r * self.s_noise)
        } else {
            out
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn seeds_2(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    SdeNoise { eta, s_noise }: SdeNoise,
    r: f64,
    phi: Phi,
) -> Result<Tensor> {
    let (sigmas, ls) = log_snr_schedule(model, sigmas);
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = model.denoise(&x, sigma)?;
        cb(i, &x, &denoised)?;
        if next == 0.0 {
            x = denoised;
            continue;
        }
        let (lam_s, lam_t) = (ls.lambda(sigma), ls.lambda(next));
        let h = lam_t - lam_s;
        let h_eta = h * (eta + 1.0);
        let lam_1 = lerp(lam_s, lam_t, r);
        let sigma_1 = ls.sigma(lam_1);
        let frame = Frame {
            sigma,
            h,
            eta,
            s_noise,
        };
        let mut sde = SegmentNoise {
            noise: &mut *noise,
            current: None,
        };

        let weighted = &denoised * (sigma_1 * lam_1.exp() * phi_1(-r * h_eta));
        let x2 = frame.stage(&x, weighted, sigma_1, (0.0, r), &mut sde);
        let denoised2 = model.denoise(&x2, sigma_1)?;

        let weighted = match phi {
            Phi::One => denoised.lerp(&denoised2, 1.0 / (2.0 * r)) * phi_1(-h_eta),
            Phi::Two => {
                let b2 = phi_2(-h_eta) / r;
                denoised * (phi_1(-h_eta) - b2) + denoised2 * b2
            }
        };
        x = frame.stage(
            &x,
            weighted * (next * lam_t.exp()),
            next,
            (r, 1.0),
            &mut sde,
        );
    }
    Ok(x)
}

pub fn seeds_3(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    eta: f64,
) -> Result<Tensor> {
    let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
    let (sigmas, ls) = log_snr_schedule(model, sigmas);
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = model.denoise(&x, sigma)?;
        cb(i, &x, &denoised)?;
        if next == 0.0 {
            x = denoised;
            continue;
        }
        let (lam_s, lam_t) = (ls.lambda(sigma), ls.lambda(next));
        let h = lam_t - lam_s;
        let h_eta = h * (eta + 1.0);
        let (lam_1, lam_2) = (lerp(lam_s, lam_t, r1), lerp(lam_s, lam_t, r2));
        let (sigma_1, sigma_2) = (ls.sigma(lam_1), ls.sigma(lam_2));
        let frame = Frame {
            sigma,
            h,
            eta,
            s_noise: 1.0,
        };
        let mut sde = SegmentNoise {
            noise: &mut *noise,
            current: None,
        };

        let weighted = &denoised * (sigma_1 * lam_1.exp() * phi_1(-r1 * h_eta));
        let x2 = frame.stage(&x, weighted, sigma_1, (0.0, r1), &mut sde);
        let denoised2 = model.denoise(&x2, sigma_1)?;

        let a2 = r2 / r1 * phi_2(-r2 * h_eta);
        let a1 = phi_1(-r2 * h_eta) - a2;
        let weighted = (&denoised * a1 + &denoised2 * a2) * (sigma_2 * lam_2.exp());
        let x3 = frame.stage(&x, weighted, sigma_2, (r1, r2), &mut sde);
        let denoised3 = model.denoise(&x3, sigma_2)?;

        let b3 = phi_2(-h_eta) / r2;
        let b1 = phi_1(-h_eta) - b3;
        let weighted = (denoised * b1 + denoised3 * b3) * (next * lam_t.exp());
        x = frame.stage(&x, weighted, next, (r2, 1.0), &mut sde);
    }
    Ok(x)
}
