//! The k-diffusion samplers ComfyUI runs (`comfy/k_diffusion/sampling.py`), step for step.
//!
//! Scalars (sigmas, step sizes) are computed in f64; tensors keep the latent's dtype.

use anyhow::{bail, Result};
use tch::Tensor;

use super::noise::StepNoise;

/// A denoiser: the model wrapped with its sampling (and guidance), `x, sigma → x₀`.
pub trait Denoiser {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor>;
}

/// Per-step callback: `(step, x, denoised)`; an error (e.g. an interrupt) stops sampling.
pub type StepCallback<'a> = dyn FnMut(usize, &Tensor, &Tensor) -> Result<()> + 'a;

/// The samplers implemented here, by ComfyUI name.
pub const IMPLEMENTED: &[&str] = &[
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2s_ancestral",
    "dpmpp_2m",
];

fn to_d(x: &Tensor, sigma: f64, denoised: &Tensor) -> Tensor {
    (x - denoised) / sigma
}

/// `(sigma_down, sigma_up)` for an ancestral step with `eta`.
pub fn ancestral_step(sigma_from: f64, sigma_to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (sigma_to, 0.0);
    }
    let up = (eta
        * (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
            / (sigma_from * sigma_from))
            .sqrt())
    .min(sigma_to);
    ((sigma_to * sigma_to - up * up).sqrt(), up)
}

/// The log-midpoint of two sigmas (`sigma.log().lerp(next.log(), 0.5).exp()`).
fn log_mid(a: f64, b: f64) -> f64 {
    let (la, lb) = (a.ln(), b.ln());
    (la + 0.5 * (lb - la)).exp()
}

/// Runs the named sampler from `x` (already noised to `sigmas[0]`) down the schedule.
pub fn sample(
    name: &str,
    model: &mut dyn Denoiser,
    x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    callback: &mut StepCallback,
) -> Result<Tensor> {
    // Samplers update x in place; never the caller's storage.
    let x = x.copy();
    match name {
        "euler" => euler(model, x, sigmas, callback),
        "euler_ancestral" => euler_ancestral(model, x, sigmas, noise, callback, 1.0, 1.0),
        "heun" => heun(model, x, sigmas, callback),
        "dpm_2" => dpm_2(model, x, sigmas, callback),
        "dpm_2_ancestral" => dpm_2_ancestral(model, x, sigmas, noise, callback, 1.0, 1.0),
        "lms" => lms(model, x, sigmas, callback, 4),
        "dpmpp_2s_ancestral" => dpmpp_2s_ancestral(model, x, sigmas, noise, callback, 1.0, 1.0),
        "dpmpp_2m" => dpmpp_2m(model, x, sigmas, callback),
        other => bail!("sampler {other:?} is not implemented yet"),
    }
}

fn steps(sigmas: &[f64]) -> usize {
    sigmas.len().saturating_sub(1)
}

pub fn euler(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
) -> Result<Tensor> {
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        let d = to_d(&x, sigmas[i], &denoised);
        cb(i, &x, &denoised)?;
        x += d * (sigmas[i + 1] - sigmas[i]);
    }
    Ok(x)
}

pub fn euler_ancestral(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        let (down, up) = ancestral_step(sigmas[i], sigmas[i + 1], eta);
        cb(i, &x, &denoised)?;
        let d = to_d(&x, sigmas[i], &denoised);
        x += d * (down - sigmas[i]);
        if sigmas[i + 1] > 0.0 {
            x = &x + noise.next(&x) * (s_noise * up);
        }
    }
    Ok(x)
}

pub fn heun(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
) -> Result<Tensor> {
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        let d = to_d(&x, sigmas[i], &denoised);
        cb(i, &x, &denoised)?;
        let dt = sigmas[i + 1] - sigmas[i];
        if sigmas[i + 1] == 0.0 {
            x += d * dt;
        } else {
            let x2 = &x + &d * dt;
            let denoised2 = model.denoise(&x2, sigmas[i + 1])?;
            let d2 = to_d(&x2, sigmas[i + 1], &denoised2);
            x += (d + d2) / 2.0 * dt;
        }
    }
    Ok(x)
}

pub fn dpm_2(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
) -> Result<Tensor> {
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        let d = to_d(&x, sigmas[i], &denoised);
        cb(i, &x, &denoised)?;
        if sigmas[i + 1] == 0.0 {
            x += d * (sigmas[i + 1] - sigmas[i]);
        } else {
            let mid = log_mid(sigmas[i], sigmas[i + 1]);
            let x2 = &x + &d * (mid - sigmas[i]);
            let denoised2 = model.denoise(&x2, mid)?;
            let d2 = to_d(&x2, mid, &denoised2);
            x += d2 * (sigmas[i + 1] - sigmas[i]);
        }
    }
    Ok(x)
}

pub fn dpm_2_ancestral(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        let (down, up) = ancestral_step(sigmas[i], sigmas[i + 1], eta);
        cb(i, &x, &denoised)?;
        let d = to_d(&x, sigmas[i], &denoised);
        if down == 0.0 {
            x += d * (down - sigmas[i]);
        } else {
            let mid = log_mid(sigmas[i], down);
            let x2 = &x + &d * (mid - sigmas[i]);
            let denoised2 = model.denoise(&x2, mid)?;
            let d2 = to_d(&x2, mid, &denoised2);
            x += d2 * (down - sigmas[i]);
            x = &x + noise.next(&x) * (s_noise * up);
        }
    }
    Ok(x)
}

/// ∫ from t[i] to t[i+1] of the Lagrange basis polynomial `j` over `t[i-k]`, k < order
/// (k-diffusion's `linear_multistep_coeff`, exact by Gauss–Legendre).
fn lms_coeff(order: usize, t: &[f64], i: usize, j: usize) -> f64 {
    let basis = |tau: f64| {
        (0..order)
            .filter(|k| *k != j)
            .fold(1.0, |p, k| p * (tau - t[i - k]) / (t[i - j] - t[i - k]))
    };
    // Four Gauss–Legendre nodes integrate the cubic (order ≤ 4) basis exactly.
    const NODES: [(f64, f64); 4] = [
        (-0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
        (-0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
        (0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
        (0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
    ];
    let (a, b) = (t[i], t[i + 1]);
    let (half, mid) = ((b - a) / 2.0, (a + b) / 2.0);
    NODES
        .iter()
        .map(|(x, w)| w * basis(mid + half * x))
        .sum::<f64>()
        * half
}

pub fn lms(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
    order: usize,
) -> Result<Tensor> {
    let mut ds: Vec<Tensor> = Vec::new();
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        ds.push(to_d(&x, sigmas[i], &denoised));
        if ds.len() > order {
            drop(ds.remove(0));
        }
        cb(i, &x, &denoised)?;
        let cur = (i + 1).min(order);
        let mut update = x.zeros_like();
        for (j, d) in ds.iter().rev().enumerate().take(cur) {
            update += d * lms_coeff(cur, sigmas, i, j);
        }
        x += update;
    }
    Ok(x)
}

fn t_of(sigma: f64) -> f64 {
    -sigma.ln()
}

fn sigma_of(t: f64) -> f64 {
    (-t).exp()
}

pub fn dpmpp_2s_ancestral(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        let (down, up) = ancestral_step(sigmas[i], sigmas[i + 1], eta);
        cb(i, &x, &denoised)?;
        if down == 0.0 {
            let d = to_d(&x, sigmas[i], &denoised);
            x += d * (down - sigmas[i]);
        } else {
            let (t, t_next) = (t_of(sigmas[i]), t_of(down));
            let h = t_next - t;
            let s = t + 0.5 * h;
            let x2 = &x * (sigma_of(s) / sigma_of(t)) - &denoised * (-h * 0.5).exp_m1();
            let denoised2 = model.denoise(&x2, sigma_of(s))?;
            x = x * (sigma_of(t_next) / sigma_of(t)) - denoised2 * (-h).exp_m1();
        }
        if sigmas[i + 1] > 0.0 {
            x = &x + noise.next(&x) * (s_noise * up);
        }
    }
    Ok(x)
}

pub fn dpmpp_2m(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
) -> Result<Tensor> {
    let mut old: Option<Tensor> = None;
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        cb(i, &x, &denoised)?;
        let (t, t_next) = (t_of(sigmas[i]), t_of(sigmas[i + 1]));
        let h = t_next - t;
        let ratio = sigma_of(t_next) / sigma_of(t);
        x = match (&old, sigmas[i + 1] == 0.0) {
            (Some(prev), false) => {
                let r = (t - t_of(sigmas[i - 1])) / h;
                let d = &denoised * (1.0 + 1.0 / (2.0 * r)) - prev * (1.0 / (2.0 * r));
                x * ratio - d * (-h).exp_m1()
            }
            _ => x * ratio - &denoised * (-h).exp_m1(),
        };
        old = Some(denoised);
    }
    Ok(x)
}
