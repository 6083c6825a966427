//! SEEDS (Gonzalez et al., stochastic explicit exponential derivative-free solvers) in data
//! prediction and log-SNR time, and ComfyUI's exponential Heun built on SEEDS-2.
//! Noise is the seeded per-step noise, drawn once per sub-interval as ComfyUI draws it.

use anyhow::Result;
use tch::Tensor;

use super::noise::StepNoise;
use super::samplers::{log_snr_schedule, Denoiser, StepCallback};

/// Which exponential-integrator weights SEEDS-2's second stage uses.
#[derive(Clone, Copy, PartialEq, Eq)]
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
struct SegmentNoise {
    current: Option<Tensor>,
}

impl SegmentNoise {
    /// Advances over the segment between fractions `from` and `to` of the step, scaled like
    /// ComfyUI's `sde_noise`.
    fn advance(&mut self, noise: &mut StepNoise, x: &Tensor, h_eta: f64, from: f64, to: f64) {
        let factor = (from - to) * h_eta;
        let fresh = noise.next(x) * (-(2.0 * factor).exp_m1()).sqrt();
        self.current = Some(match self.current.take() {
            Some(carried) => carried * factor.exp() + fresh,
            None => fresh,
        });
    }

    fn scaled(&self, scale: f64) -> Tensor {
        self.current.as_ref().expect("advanced before use") * scale
    }
}

#[allow(clippy::too_many_arguments)]
pub fn seeds_2(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    eta: f64,
    r: f64,
    phi: Phi,
) -> Result<Tensor> {
    let (sigmas, ls) = log_snr_schedule(model, sigmas);
    let inject = eta > 0.0;
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
        let alpha_1 = sigma_1 * lam_1.exp();
        let alpha_t = next * lam_t.exp();
        let mut sde = SegmentNoise { current: None };

        let mut x2 = &x * (sigma_1 / sigma * (-r * h * eta).exp())
            - &denoised * (alpha_1 * phi_1(-r * h_eta));
        if inject {
            sde.advance(noise, &x, h * eta, 0.0, r);
            x2 += sde.scaled(sigma_1);
        }
        let denoised2 = model.denoise(&x2, sigma_1)?;

        let carry = &x * (next / sigma * (-h * eta).exp());
        x = match phi {
            Phi::One => {
                let blended = denoised.lerp(&denoised2, 1.0 / (2.0 * r));
                carry - blended * (alpha_t * phi_1(-h_eta))
            }
            Phi::Two => {
                let b2 = phi_2(-h_eta) / r;
                let b1 = phi_1(-h_eta) - b2;
                carry - (denoised * b1 + denoised2 * b2) * alpha_t
            }
        };
        if inject {
            sde.advance(noise, &x, h * eta, r, 1.0);
            x += sde.scaled(next);
        }
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
    let inject = eta > 0.0;
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
        let (alpha_1, alpha_2) = (sigma_1 * lam_1.exp(), sigma_2 * lam_2.exp());
        let alpha_t = next * lam_t.exp();
        let mut sde = SegmentNoise { current: None };

        let mut x2 = &x * (sigma_1 / sigma * (-r1 * h * eta).exp())
            - &denoised * (alpha_1 * phi_1(-r1 * h_eta));
        if inject {
            sde.advance(noise, &x, h * eta, 0.0, r1);
            x2 += sde.scaled(sigma_1);
        }
        let denoised2 = model.denoise(&x2, sigma_1)?;

        let a2 = r2 / r1 * phi_2(-r2 * h_eta);
        let a1 = phi_1(-r2 * h_eta) - a2;
        let mut x3 = &x * (sigma_2 / sigma * (-r2 * h * eta).exp())
            - (&denoised * a1 + &denoised2 * a2) * alpha_2;
        if inject {
            sde.advance(noise, &x, h * eta, r1, r2);
            x3 += sde.scaled(sigma_2);
        }
        let denoised3 = model.denoise(&x3, sigma_2)?;

        let b3 = phi_2(-h_eta) / r2;
        let b1 = phi_1(-h_eta) - b3;
        x = &x * (next / sigma * (-h * eta).exp()) - (denoised * b1 + denoised3 * b3) * alpha_t;
        if inject {
            sde.advance(noise, &x, h * eta, r2, 1.0);
            x += sde.scaled(next);
        }
    }
    Ok(x)
}
