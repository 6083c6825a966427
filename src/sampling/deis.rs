//! DEIS (Zhang & Chen), the "tab" variant ComfyUI runs (`comfy/k_diffusion/deis.py`): a linear
//! multistep method in the time of a VP diffusion whose coefficients integrate Lagrange
//! polynomials over each step numerically.

use anyhow::Result;
use tch::Tensor;

use super::samplers::{Denoiser, StepCallback};

/// Points of ComfyUI's Riemann sum over each step.
const INTEGRATION_POINTS: usize = 10_000;

/// The VP schedule DEIS maps EDM sigmas onto. ComfyUI computes its constants from float32
/// tensors, so they are computed in f32 here too: in f64 they differ in the fourth digit.
struct VpSchedule {
    beta_min: f64,
    beta_min_squared: f64,
    beta_d: f64,
    /// `beta_1 - beta_0`, itself rounded to f32 as in ComfyUI.
    beta_span: f64,
}

impl VpSchedule {
    fn comfyui() -> Self {
        let (epsilon_s, sigma_min, sigma_max) = (1e-3f32, 0.002f32, 80f32);
        let log_min = (sigma_min * sigma_min + 1.0).ln();
        let log_max = (sigma_max * sigma_max + 1.0).ln();
        let beta_d = 2.0 * (log_min / epsilon_s - log_max) / (epsilon_s - 1.0);
        let beta_min = log_max - 0.5 * beta_d;
        let beta_1 = beta_d + beta_min;
        Self {
            beta_min: beta_min as f64,
            beta_min_squared: (beta_min * beta_min) as f64,
            beta_d: beta_d as f64,
            beta_span: (beta_1 - beta_min) as f64,
        }
    }

    /// The VP time of an EDM sigma.
    fn time(&self, sigma: f64) -> f64 {
        ((self.beta_min_squared + 2.0 * self.beta_d * (sigma * sigma + 1.0).ln()).sqrt()
            - self.beta_min)
            / self.beta_d
    }

    /// `-½ · d log α / dτ / √(α(1 − α))`, the weight the Lagrange polynomials integrate against.
    fn integrand(&self, tau: f64) -> f64 {
        let log_alpha = -0.5 * tau * tau * self.beta_span - tau * self.beta_min;
        let alpha = log_alpha.exp();
        let d_log_alpha = -tau * self.beta_span - self.beta_min;
        -0.5 * d_log_alpha / (alpha * (1.0 - alpha)).sqrt()
    }
}

/// torch.linspace's points: the first half counted up from `start`, the rest down from `end`.
fn linspace(start: f64, end: f64, n: usize) -> impl Iterator<Item = f64> {
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(move |i| {
        if i < n / 2 {
            start + step * i as f64
        } else {
            end - step * (n - 1 - i) as f64
        }
    })
}

/// The coefficients of one step from `times[0]` to `next`, for the slopes at `times`
/// (current first, then older).
fn step_coefficients(vp: &VpSchedule, times: &[f64], next: f64) -> Vec<f64> {
    let (cur, n) = (times[0], INTEGRATION_POINTS);
    let dtau = (next - cur) / n as f64;
    let mut sums = vec![0.0; times.len()];
    for tau in linspace(cur, next, n) {
        let weight = vp.integrand(tau);
        for (j, sum) in sums.iter_mut().enumerate() {
            let poly: f64 = (0..times.len())
                .filter(|&k| k != j)
                .map(|k| (tau - times[k]) / (times[j] - times[k]))
                .product();
            *sum += weight * poly;
        }
    }
    sums.into_iter().map(|s| s * dtau).collect()
}

pub fn deis(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
    max_order: usize,
) -> Result<Tensor> {
    let vp = VpSchedule::comfyui();
    let times: Vec<f64> = sigmas.iter().map(|&s| vp.time(s)).collect();
    // Slopes of earlier steps, most recent last.
    let mut history: Vec<Tensor> = Vec::new();
    for i in 0..sigmas.len().saturating_sub(1) {
        let (sigma, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = model.denoise(&x, sigma)?;
        cb(i, &x, &denoised)?;
        let d = (&x - &denoised) / sigma;
        let order = if next <= 0.0 { 1 } else { max_order.min(i + 1) };
        x = if order == 1 {
            &x + &d * (next - sigma)
        } else {
            let past: Vec<f64> = (0..order).map(|k| times[i - k]).collect();
            let coeffs = step_coefficients(&vp, &past, times[i + 1]);
            let mut step = &d * coeffs[0];
            for (k, c) in coeffs.iter().enumerate().skip(1) {
                step += &history[history.len() - k] * *c;
            }
            &x + step
        };
        if history.len() == max_order - 1 {
            drop(history.remove(0));
        }
        history.push(d);
    }
    Ok(x)
}
