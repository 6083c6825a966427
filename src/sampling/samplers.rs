//! The k-diffusion samplers ComfyUI runs (`comfy/k_diffusion/sampling.py`), step for step.
//!
//! Scalars (sigmas, step sizes) are computed in f64; tensors keep the latent's dtype.

use anyhow::{bail, Result};
use tch::Tensor;

use super::noise::StepNoise;
use super::sampler_options::{ErSdeOptions, LcmNoise, SamplerOptions};
use super::seeds::{self, Phi};

/// A denoiser: the model wrapped with its sampling (and guidance), `x, sigma → x₀`.
pub trait Denoiser {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor>;

    /// Whether the model is rectified flow (ComfyUI's `CONST`): ancestral samplers then take
    /// their RF forms.
    fn is_flow(&self) -> bool {
        false
    }

    /// The guided estimate and the unconditional one, with CFG's shortcut at scale 1 disabled
    /// (the CFG++ samplers step along the unconditional estimate). Unguided denoisers return
    /// their estimate twice.
    fn denoise_with_uncond(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        let d = self.denoise(x, sigma)?;
        Ok((d.shallow_clone(), d))
    }

    /// The model's `percent_to_sigma` (ER-SDE moves a flow model's first sigma of 1 inward).
    fn percent_to_sigma(&self, percent: f64) -> f64 {
        1.0 - percent
    }

    /// Re-noises a clean estimate to `sigma` the model's way (used by LCM).
    fn noise_scaling(&self, sigma: f64, noise: &Tensor, x: &Tensor) -> Tensor {
        if self.is_flow() {
            noise * sigma + x * (1.0 - sigma)
        } else {
            noise * sigma + x
        }
    }
}

/// Per-step callback: `(step, x, denoised)`; an error (e.g. an interrupt) stops sampling.
pub type StepCallback<'a> = dyn FnMut(usize, &Tensor, &Tensor) -> Result<()> + 'a;

/// ComfyUI's `SAMPLER_NAMES` (`KSAMPLER_NAMES` then ddim, uni_pc, uni_pc_bh2), all implemented.
pub const SAMPLER_NAMES: &[&str] = &[
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "exp_heun_2_x0",
    "exp_heun_2_x0_sde",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
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

/// How much noise an SDE step injects: `eta` scales the stochastic part of the step, `s_noise`
/// the drawn noise.
#[derive(Clone, Copy, Debug)]
pub struct SdeNoise {
    pub eta: f64,
    pub s_noise: f64,
}

/// SamplerEulerCFGpp's "alternative" version, which ComfyUI runs without a sampler name.
pub const EULER_CFG_PP_ALTERNATIVE: &str = "euler_cfg_pp_alternative";

/// Runs the named sampler with its `options` from `x` (already noised to `sigmas[0]`) down the
/// schedule.
pub fn sample(
    name: &str,
    options: &SamplerOptions,
    model: &mut dyn Denoiser,
    x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    callback: &mut StepCallback,
) -> Result<Tensor> {
    // Samplers update x in place; never the caller's storage.
    let x = x.copy();
    // The _gpu SDE samplers grow their Brownian tree on the latent's device, the others on the CPU.
    noise.tree_on_device = name.ends_with("_gpu");
    let eta = options.eta.unwrap_or(1.0);
    let s_noise = options.s_noise.unwrap_or(1.0);
    let r = options.r;
    let flow = model.is_flow();
    match name {
        "euler" => euler(model, x, sigmas, callback),
        "euler_ancestral" if flow => {
            euler_ancestral_rf(model, x, sigmas, noise, callback, eta, s_noise)
        }
        "euler_ancestral" => euler_ancestral(model, x, sigmas, noise, callback, eta, s_noise),
        "heun" => heun(model, x, sigmas, callback),
        "heunpp2" => heunpp2(model, x, sigmas, callback),
        "dpm_2" => dpm_2(model, x, sigmas, callback),
        "dpm_2_ancestral" => dpm_2_ancestral(model, x, sigmas, noise, callback, eta, s_noise),
        "lms" => lms(model, x, sigmas, callback, options.order.unwrap_or(4)),
        "dpmpp_2s_ancestral" if flow => {
            dpmpp_2s_ancestral_rf(model, x, sigmas, noise, callback, eta, s_noise)
        }
        "dpmpp_2s_ancestral" => dpmpp_2s_ancestral(model, x, sigmas, noise, callback, eta, s_noise),
        "dpmpp_2m" => dpmpp_2m(model, x, sigmas, callback),
        "ddpm" => ddpm(model, x, sigmas, noise, callback),
        "lcm" => lcm(model, x, sigmas, noise, callback, s_noise, options.lcm),
        "ipndm" => ipndm(model, x, sigmas, callback, 4),
        "res_multistep" => res_multistep(model, x, sigmas, noise, callback, 0.0, false),
        "res_multistep_cfg_pp" => res_multistep(model, x, sigmas, noise, callback, 0.0, true),
        "res_multistep_ancestral" => res_multistep(model, x, sigmas, noise, callback, 1.0, false),
        "res_multistep_ancestral_cfg_pp" => {
            res_multistep(model, x, sigmas, noise, callback, 1.0, true)
        }
        "gradient_estimation" => gradient_estimation(model, x, sigmas, callback, 2.0, false),
        "gradient_estimation_cfg_pp" => gradient_estimation(model, x, sigmas, callback, 2.0, true),
        "euler_cfg_pp" => euler_ancestral_cfg_pp(model, x, sigmas, noise, callback, 0.0, 0.0),
        EULER_CFG_PP_ALTERNATIVE => euler_cfg_pp_alternative(model, x, sigmas, callback),
        "euler_ancestral_cfg_pp" => {
            euler_ancestral_cfg_pp(model, x, sigmas, noise, callback, eta, s_noise)
        }
        "dpmpp_2s_ancestral_cfg_pp" => {
            dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, noise, callback, 1.0, 1.0)
        }
        "dpmpp_2m_cfg_pp" => dpmpp_2m_cfg_pp(model, x, sigmas, callback),
        "ipndm_v" => ipndm_v(model, x, sigmas, callback, 4),
        "dpm_fast" => super::dpm_solver::dpm_fast(model, x, sigmas, noise, callback),
        "dpm_adaptive" => super::dpm_solver::dpm_adaptive(
            model,
            x,
            sigmas,
            noise,
            callback,
            &options.dpm_adaptive.unwrap_or_default(),
            options.eta.unwrap_or(0.0),
            s_noise,
        ),
        "dpmpp_sde" | "dpmpp_sde_gpu" => {
            let noise_scale = SdeNoise { eta, s_noise };
            dpmpp_sde(
                model,
                x,
                sigmas,
                noise,
                callback,
                noise_scale,
                r.unwrap_or(0.5),
            )
        }
        "dpmpp_2m_sde" | "dpmpp_2m_sde_gpu" => {
            let noise_scale = SdeNoise { eta, s_noise };
            let heun = options.heun.unwrap_or(false);
            dpmpp_2m_sde(model, x, sigmas, noise, callback, noise_scale, heun)
        }
        "dpmpp_2m_sde_heun" | "dpmpp_2m_sde_heun_gpu" => {
            let noise_scale = SdeNoise { eta, s_noise };
            let heun = options.heun.unwrap_or(true);
            dpmpp_2m_sde(model, x, sigmas, noise, callback, noise_scale, heun)
        }
        "dpmpp_3m_sde" | "dpmpp_3m_sde_gpu" => {
            dpmpp_3m_sde(model, x, sigmas, noise, callback, SdeNoise { eta, s_noise })
        }
        "er_sde" => er_sde(
            model,
            x,
            sigmas,
            noise,
            callback,
            options.er_sde.unwrap_or_default(),
            s_noise,
        ),
        "seeds_2" => seeds::seeds_2(
            model,
            x,
            sigmas,
            noise,
            callback,
            SdeNoise { eta, s_noise },
            r.unwrap_or(0.5),
            options.phi.unwrap_or(Phi::One),
        ),
        "exp_heun_2_x0" => {
            let deterministic = SdeNoise {
                eta: 0.0,
                s_noise: 0.0,
            };
            seeds::seeds_2(
                model,
                x,
                sigmas,
                noise,
                callback,
                deterministic,
                1.0,
                Phi::Two,
            )
        }
        "exp_heun_2_x0_sde" => {
            let noise_scale = SdeNoise { eta, s_noise };
            seeds::seeds_2(
                model,
                x,
                sigmas,
                noise,
                callback,
                noise_scale,
                1.0,
                Phi::Two,
            )
        }
        "seeds_3" => seeds::seeds_3(model, x, sigmas, noise, callback, 1.0),
        "sa_solver" | "sa_solver_pece" => {
            let mut sa = options.sa_solver.unwrap_or_default();
            sa.pece |= name == "sa_solver_pece";
            super::sa_solver::sa_solver(model, x, sigmas, noise, callback, &sa, s_noise)
        }
        // ComfyUI's ddim is euler (its random-noise inpainting option aside).
        "ddim" => euler(model, x, sigmas, callback),
        "deis" => super::deis::deis(model, x, sigmas, callback, 3),
        "uni_pc" => super::uni_pc::uni_pc(model, x, sigmas, callback, false),
        "uni_pc_bh2" => super::uni_pc::uni_pc(model, x, sigmas, callback, true),
        other => bail!("unknown sampler {other:?}"),
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
        if down == 0.0 {
            x = denoised;
        } else {
            let d = to_d(&x, sigmas[i], &denoised);
            x += d * (down - sigmas[i]) + noise.next(&x) * (s_noise * up);
        }
    }
    Ok(x)
}

/// The flow-model step of ComfyUI's ancestral samplers: `(sigma_down, alpha ratio, renoise)`.
fn rf_ancestral_step(sigma: f64, next: f64, eta: f64) -> (f64, f64, f64) {
    let down = next * (1.0 + (next / sigma - 1.0) * eta);
    let (alpha_next, alpha_down) = (1.0 - next, 1.0 - down);
    let renoise =
        (next * next - down * down * alpha_next * alpha_next / (alpha_down * alpha_down)).sqrt();
    (down, alpha_next / alpha_down, renoise)
}

pub fn euler_ancestral_rf(
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
        cb(i, &x, &denoised)?;
        if sigmas[i + 1] == 0.0 {
            x = denoised;
            continue;
        }
        let (down, alpha_ratio, renoise) = rf_ancestral_step(sigmas[i], sigmas[i + 1], eta);
        let ratio = down / sigmas[i];
        x = x * ratio + denoised * (1.0 - ratio);
        if eta > 0.0 {
            x = &x * alpha_ratio + noise.next(&x) * (s_noise * renoise);
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

/// Heun++: away from the end of the schedule a third evaluation, the three slopes blended with
/// sigma-proportional weights; Heun one step before the end, Euler onto it. (ComfyUI's churn
/// options are off, so its unused `randn_like` draw is left out.)
pub fn heunpp2(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
) -> Result<Tensor> {
    let Some(&s_end) = sigmas.last() else {
        return Ok(x);
    };
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        let d = to_d(&x, sigmas[i], &denoised);
        cb(i, &x, &denoised)?;
        let dt = sigmas[i + 1] - sigmas[i];
        if sigmas[i + 1] == s_end {
            x += d * dt;
            continue;
        }
        let x2 = &x + &d * dt;
        let d2 = to_d(&x2, sigmas[i + 1], &model.denoise(&x2, sigmas[i + 1])?);
        let slope = if sigmas[i + 2] == s_end {
            let w2 = sigmas[i + 1] / (2.0 * sigmas[0]);
            d * (1.0 - w2) + d2 * w2
        } else {
            let x3 = &x2 + &d2 * (sigmas[i + 2] - sigmas[i + 1]);
            let d3 = to_d(&x3, sigmas[i + 2], &model.denoise(&x3, sigmas[i + 2])?);
            let w = 3.0 * sigmas[0];
            let (w2, w3) = (sigmas[i + 1] / w, sigmas[i + 2] / w);
            d * (1.0 - w2 - w3) + d2 * w2 + d3 * w3
        };
        x += slope * dt;
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
    let flow = model.is_flow();
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        // Flow models step down and re-noise the RF way; others as k-diffusion does.
        let (down, up, alpha_ratio) = if flow {
            let (down, ratio, renoise) = rf_ancestral_step(sigmas[i], sigmas[i + 1], eta);
            (down, renoise, ratio)
        } else {
            let (down, up) = ancestral_step(sigmas[i], sigmas[i + 1], eta);
            (down, up, 1.0)
        };
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
            x = &x * alpha_ratio + noise.next(&x) * (s_noise * up);
        }
    }
    Ok(x)
}

/// ∫ from t[i] to t[i+1] of the Lagrange basis polynomial `j` over `t[i-k]`, k < order
/// (k-diffusion's `linear_multistep_coeff`), exact by Gauss–Legendre: the basis has degree
/// `order − 1`, which `⌈order / 2⌉` nodes integrate exactly.
fn lms_coeff(order: usize, t: &[f64], i: usize, j: usize) -> f64 {
    let basis = |tau: f64| {
        (0..order)
            .filter(|k| *k != j)
            .fold(1.0, |p, k| p * (tau - t[i - k]) / (t[i - j] - t[i - k]))
    };
    let (a, b) = (t[i], t[i + 1]);
    let (half, mid) = ((b - a) / 2.0, (a + b) / 2.0);
    gauss_legendre(order.div_ceil(2))
        .iter()
        .map(|(x, w)| w * basis(mid + half * x))
        .sum::<f64>()
        * half
}

/// The `n` Gauss–Legendre nodes and weights on [−1, 1], by Newton's method on Pₙ.
fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    (0..n)
        .map(|k| {
            // Tricomi's estimate of the k-th root, then Newton on the three-term recurrence.
            let mut x = (std::f64::consts::PI * (k as f64 + 0.75) / (n as f64 + 0.5)).cos();
            let mut derivative = 1.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, x);
                for m in 2..=n {
                    let m = m as f64;
                    (p0, p1) = (p1, ((2.0 * m - 1.0) * x * p1 - (m - 1.0) * p0) / m);
                }
                // p1 = Pₙ(x), p0 = Pₙ₋₁(x).
                derivative = n as f64 * (x * p1 - p0) / (x * x - 1.0);
                let dx = p1 / derivative;
                x -= dx;
                if dx.abs() < 1e-16 {
                    break;
                }
            }
            (x, 2.0 / ((1.0 - x * x) * derivative * derivative))
        })
        .collect()
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
        if sigmas[i + 1] == 0.0 {
            x = denoised;
            continue;
        }
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

pub fn dpmpp_2s_ancestral_rf(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    let lambda = |sigma: f64| ((1.0 - sigma) / sigma).ln();
    let sigma_of_lambda = |l: f64| 1.0 / (l.exp() + 1.0);
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        let (down, alpha_ratio, renoise) = rf_ancestral_step(sigmas[i], sigmas[i + 1], eta);
        cb(i, &x, &denoised)?;
        if sigmas[i + 1] == 0.0 {
            let d = to_d(&x, sigmas[i], &denoised);
            x += d * (down - sigmas[i]);
        } else {
            let sigma_s = if sigmas[i] == 1.0 {
                0.9999
            } else {
                let (l_i, l_down) = (lambda(sigmas[i]), lambda(down));
                sigma_of_lambda(l_i + 0.5 * (l_down - l_i))
            };
            let s_ratio = sigma_s / sigmas[i];
            let u = &x * s_ratio + &denoised * (1.0 - s_ratio);
            let d_i = model.denoise(&u, sigma_s)?;
            let down_ratio = down / sigmas[i];
            x = x * down_ratio + d_i * (1.0 - down_ratio);
        }
        if sigmas[i + 1] > 0.0 && eta > 0.0 {
            x = &x * alpha_ratio + noise.next(&x) * (s_noise * renoise);
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

/// ComfyUI's DDPM ancestral step in the variance-preserving frame.
pub fn ddpm(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
) -> Result<Tensor> {
    for i in 0..steps(sigmas) {
        let (sigma, prev) = (sigmas[i], sigmas[i + 1]);
        let denoised = model.denoise(&x, sigma)?;
        cb(i, &x, &denoised)?;
        let eps = (&x - &denoised) / sigma;
        let xs = &x / (1.0 + sigma * sigma).sqrt();
        let ac = 1.0 / (sigma * sigma + 1.0);
        let ac_prev = 1.0 / (prev * prev + 1.0);
        let alpha = ac / ac_prev;
        let mut mu = (xs - eps * ((1.0 - alpha) / (1.0 - ac).sqrt())) * (1.0 / alpha).sqrt();
        if prev > 0.0 {
            mu = &mu + noise.next(&mu) * ((1.0 - alpha) * (1.0 - ac_prev) / (1.0 - ac)).sqrt();
            mu *= (1.0 + prev * prev).sqrt();
        }
        x = mu;
    }
    Ok(x)
}

/// Latent consistency: jump to the estimate, re-noise to the next sigma.
pub fn lcm(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    s_noise: f64,
    schedule: Option<LcmNoise>,
) -> Result<Tensor> {
    let LcmNoise {
        s_noise_end,
        noise_clip_std,
    } = schedule.unwrap_or(LcmNoise {
        s_noise_end: s_noise,
        noise_clip_std: 0.0,
    });
    let n_steps = steps(sigmas).max(1);
    for i in 0..steps(sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        cb(i, &x, &denoised)?;
        x = denoised;
        if sigmas[i + 1] > 0.0 {
            let mut n = noise.next(&x);
            if noise_clip_std > 0.0 {
                let clip = noise_clip_std * n.std(true).double_value(&[]);
                n = n.clamp(-clip, clip);
            }
            let t = if n_steps > 1 {
                i as f64 / (n_steps - 1) as f64
            } else {
                0.0
            };
            let s_noise_i = s_noise + (s_noise_end - s_noise) * t;
            if s_noise_i != 1.0 {
                n *= s_noise_i;
            }
            x = model.noise_scaling(sigmas[i + 1], &n, &x);
        }
    }
    Ok(x)
}

/// Improved PNDM: Adams–Bashforth steps over up to `max_order` derivatives.
pub fn ipndm(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
    max_order: usize,
) -> Result<Tensor> {
    let mut history: Vec<Tensor> = Vec::new();
    for i in 0..steps(sigmas) {
        let (t, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = model.denoise(&x, t)?;
        cb(i, &x, &denoised)?;
        let d = (&x - &denoised) / t;
        let dt = next - t;
        let order = max_order.min(i + 1);
        let h = |k: usize| &history[history.len() - k];
        x = if next == 0.0 {
            denoised
        } else {
            match order {
                1 => &x + &d * dt,
                2 => &x + (&d * 3.0 - h(1)) / 2.0 * dt,
                3 => &x + (&d * 23.0 - h(1) * 16.0 + h(2) * 5.0) / 12.0 * dt,
                _ => &x + (&d * 55.0 - h(1) * 59.0 + h(2) * 37.0 - h(3) * 9.0) / 24.0 * dt,
            }
        };
        if history.len() == max_order - 1 {
            drop(history.remove(0));
        }
        history.push(d);
    }
    Ok(x)
}

/// Gradient estimation (Permenter & Yuan): Euler plus a (γ − 1)-weighted change of direction;
/// with `cfg_pp`, directions come from the unconditional estimate.
pub fn gradient_estimation(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
    gamma: f64,
    cfg_pp: bool,
) -> Result<Tensor> {
    let mut old: Option<Tensor> = None;
    for i in 0..steps(sigmas) {
        let (denoised, uncond) = if cfg_pp {
            model.denoise_with_uncond(&x, sigmas[i])?
        } else {
            let d = model.denoise(&x, sigmas[i])?;
            (d.shallow_clone(), d)
        };
        let d = to_d(&x, sigmas[i], &uncond);
        cb(i, &x, &denoised)?;
        let dt = sigmas[i + 1] - sigmas[i];
        if sigmas[i + 1] == 0.0 {
            x = denoised;
        } else {
            x = if cfg_pp {
                &denoised + &d * sigmas[i + 1]
            } else {
                &x + &d * dt
            };
            if let Some(prev) = &old {
                x = &x + (&d - prev) * ((gamma - 1.0) * dt);
            }
        }
        old = Some(d);
    }
    Ok(x)
}

/// RES multistep (arXiv:2308.02157), deterministic (`eta` 0) or ancestral; `cfg_pp` steps
/// along the unconditional estimate.
pub fn res_multistep(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    eta: f64,
    cfg_pp: bool,
) -> Result<Tensor> {
    let phi1 = |t: f64| t.exp_m1() / t;
    let phi2 = |t: f64| (phi1(t) - 1.0) / t;
    let finite_or_zero = |v: f64| if v.is_nan() { 0.0 } else { v };
    let mut old: Option<(Tensor, f64)> = None;
    for i in 0..steps(sigmas) {
        let (denoised, uncond) = if cfg_pp {
            model.denoise_with_uncond(&x, sigmas[i])?
        } else {
            let d = model.denoise(&x, sigmas[i])?;
            (d.shallow_clone(), d)
        };
        let (down, up) = ancestral_step(sigmas[i], sigmas[i + 1], eta);
        cb(i, &x, &denoised)?;
        match &old {
            Some((old_denoised, old_down)) if down != 0.0 => {
                let (t, t_old, t_next, t_prev) = (
                    t_of(sigmas[i]),
                    t_of(*old_down),
                    t_of(down),
                    t_of(sigmas[i - 1]),
                );
                let h = t_next - t;
                let c2 = (t_prev - t_old) / h;
                let (p1, p2) = (phi1(-h), phi2(-h));
                let b1 = finite_or_zero(p1 - p2 / c2);
                let b2 = finite_or_zero(p2 / c2);
                if cfg_pp {
                    x = &x + (&denoised - &uncond);
                }
                x = &x * sigma_of(h) + (&uncond * b1 + old_denoised * b2) * h;
            }
            _ => {
                let d = to_d(&x, sigmas[i], &uncond);
                x = if cfg_pp {
                    &denoised + d * down
                } else {
                    &x + d * (down - sigmas[i])
                };
            }
        }
        if sigmas[i + 1] > 0.0 {
            x = &x + noise.next(&x) * up;
        }
        old = Some((uncond, down));
    }
    Ok(x)
}

/// ER-SDE-Solver-3 (arXiv:2309.06169) with ComfyUI's default noise scaler.
pub fn er_sde(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    ErSdeOptions { scaler, max_stage }: ErSdeOptions,
    s_noise: f64,
) -> Result<Tensor> {
    let scaler = |v: f64| scaler.apply(v);
    let flow = model.is_flow();
    let mut sigmas = sigmas.to_vec();
    if flow && sigmas.len() > 1 && sigmas[0] >= 1.0 {
        sigmas[0] = model.percent_to_sigma(1e-4);
    }
    // er_lambda = sigma / alpha = exp(−half-logSNR).
    let er: Vec<f64> = sigmas
        .iter()
        .map(|s| {
            let half_log_snr = if flow { ((1.0 - s) / s).ln() } else { -s.ln() };
            (-half_log_snr).exp()
        })
        .collect();
    const POINTS: usize = 200;
    let mut old: Option<Tensor> = None;
    let mut old_d: Option<Tensor> = None;
    for i in 0..steps(&sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        cb(i, &x, &denoised)?;
        let stage = max_stage.min(i + 1);
        if sigmas[i + 1] == 0.0 {
            x = denoised.shallow_clone();
        } else {
            let (ls, lt) = (er[i], er[i + 1]);
            let alpha_s = sigmas[i] / ls;
            let alpha_t = sigmas[i + 1] / lt;
            let r = scaler(lt) / scaler(ls);
            x = &x * (alpha_t / alpha_s * r) + &denoised * (alpha_t * (1.0 - r));
            if stage >= 2 {
                let dt = lt - ls;
                let step = -dt / POINTS as f64;
                let pos: Vec<f64> = (0..POINTS).map(|k| lt + k as f64 * step).collect();
                let s_int: f64 = pos.iter().map(|p| 1.0 / scaler(*p)).sum::<f64>() * step;
                let prev = old.as_ref().expect("stage 2 has a previous estimate");
                let denoised_d = (&denoised - prev) / (ls - er[i - 1]);
                x = &x + &denoised_d * (alpha_t * (dt + s_int * scaler(lt)));
                if stage >= 3 {
                    let s_u: f64 = pos.iter().map(|p| (p - ls) / scaler(*p)).sum::<f64>() * step;
                    let prev_d = old_d.as_ref().expect("stage 3 has a previous derivative");
                    let denoised_u = (&denoised_d - prev_d) / ((ls - er[i - 2]) / 2.0);
                    x = &x + denoised_u * (alpha_t * (dt * dt / 2.0 + s_u * scaler(lt)));
                }
                old_d = Some(denoised_d);
            }
            if s_noise > 0.0 {
                let spread = (lt * lt - ls * ls * r * r).sqrt();
                let spread = if spread.is_nan() { 0.0 } else { spread };
                x = &x + noise.next(&x) * (alpha_t * s_noise * spread);
            }
        }
        old = Some(denoised);
    }
    Ok(x)
}

/// `sigma · exp(half-logSNR)`: 1 for VE models, 1 − sigma for rectified flow.
fn cfg_pp_alpha(flow: bool, sigma: f64) -> f64 {
    if flow {
        1.0 - sigma
    } else {
        1.0
    }
}

/// Euler (ancestral with `eta` > 0) in the CFG++ form: denoise with the guided estimate, step
/// along the unconditional one.
pub fn euler_ancestral_cfg_pp(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    let flow = model.is_flow();
    for i in 0..steps(sigmas) {
        let (denoised, uncond) = model.denoise_with_uncond(&x, sigmas[i])?;
        cb(i, &x, &denoised)?;
        if sigmas[i + 1] == 0.0 {
            x = denoised;
            continue;
        }
        let (alpha_s, alpha_t) = (
            cfg_pp_alpha(flow, sigmas[i]),
            cfg_pp_alpha(flow, sigmas[i + 1]),
        );
        let d = (&x - &uncond * alpha_s) / sigmas[i];
        let (down, up) = ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta);
        x = &denoised * alpha_t + d * (alpha_t * down);
        if eta > 0.0 && s_noise > 0.0 {
            x = &x + noise.next(&x) * (alpha_t * s_noise * up);
        }
    }
    Ok(x)
}

/// SamplerEulerCFGpp's "alternative" Euler (`sample_euler_pp`): the step's derivative is taken
/// at `x − denoised + uncond`, which moves the state along the unconditional estimate.
pub fn euler_cfg_pp_alternative(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
) -> Result<Tensor> {
    for i in 0..steps(sigmas) {
        let (denoised, uncond) = model.denoise_with_uncond(&x, sigmas[i])?;
        let d = to_d(&(&x - &denoised + uncond), sigmas[i], &denoised);
        cb(i, &x, &denoised)?;
        x += d * (sigmas[i + 1] - sigmas[i]);
    }
    Ok(x)
}

/// DPM-Solver++(2S) ancestral in the CFG++ form (with ComfyUI's rectified-flow variant).
pub fn dpmpp_2s_ancestral_cfg_pp(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    let flow = model.is_flow();
    let lambda = |sigma: f64| ((1.0 - sigma) / sigma).ln();
    let sigma_of_lambda = |l: f64| 1.0 / (l.exp() + 1.0);
    for i in 0..steps(sigmas) {
        let (denoised, uncond) = model.denoise_with_uncond(&x, sigmas[i])?;
        let guidance = &denoised - &uncond;
        cb(i, &x, &denoised)?;
        if flow {
            let (down, alpha_ratio, renoise) = rf_ancestral_step(sigmas[i], sigmas[i + 1], eta);
            if sigmas[i + 1] == 0.0 {
                x = &x + to_d(&x, sigmas[i], &uncond) * (down - sigmas[i]);
            } else {
                let sigma_s = if sigmas[i] == 1.0 {
                    0.9999
                } else {
                    let (l_i, l_down) = (lambda(sigmas[i]), lambda(down));
                    sigma_of_lambda(l_i + 0.5 * (l_down - l_i))
                };
                let s_ratio = sigma_s / sigmas[i];
                let u = &x * s_ratio + &uncond * (1.0 - s_ratio);
                let (_, uncond_2) = model.denoise_with_uncond(&u, sigma_s)?;
                let down_ratio = down / sigmas[i];
                x = &x * down_ratio + uncond_2 * (1.0 - down_ratio);
            }
            if sigmas[i + 1] > 0.0 && eta > 0.0 {
                x = &x * alpha_ratio + noise.next(&x) * (s_noise * renoise);
            }
            x = &x + guidance * (1.0 - sigmas[i + 1]);
        } else {
            let (down, up) = ancestral_step(sigmas[i], sigmas[i + 1], eta);
            if down == 0.0 {
                x = &x + to_d(&x, sigmas[i], &uncond) * (down - sigmas[i]);
            } else {
                let (t, t_next) = (t_of(sigmas[i]), t_of(down));
                let h = t_next - t;
                let s = t + 0.5 * h;
                let x2 = &x * (sigma_of(s) / sigma_of(t)) - &uncond * (-h * 0.5).exp_m1();
                let (_, uncond_2) = model.denoise_with_uncond(&x2, sigma_of(s))?;
                x = &x * (sigma_of(t_next) / sigma_of(t)) - uncond_2 * (-h).exp_m1();
            }
            if sigmas[i + 1] > 0.0 {
                x = &x + noise.next(&x) * (s_noise * up);
            }
            x = &x + guidance;
        }
    }
    Ok(x)
}

/// DPM-Solver++(2M) in the CFG++ form.
pub fn dpmpp_2m_cfg_pp(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
) -> Result<Tensor> {
    let mut old_uncond: Option<Tensor> = None;
    for i in 0..steps(sigmas) {
        let (denoised, uncond) = model.denoise_with_uncond(&x, sigmas[i])?;
        cb(i, &x, &denoised)?;
        let (t, t_next) = (t_of(sigmas[i]), t_of(sigmas[i + 1]));
        let h = t_next - t;
        let mix = match (&old_uncond, sigmas[i + 1] == 0.0) {
            (Some(prev), false) => {
                let r = (t - t_of(sigmas[i - 1])) / h;
                &uncond * -(-h).exp() - (&denoised - prev) * ((-h).exp_m1() * (1.0 / (2.0 * r)))
            }
            _ => &uncond * -(-h).exp(),
        };
        x = &denoised + mix + &x * (-h).exp();
        old_uncond = Some(uncond);
    }
    Ok(x)
}

/// iPNDM with variable step sizes (zju-pi/diff-sampler's `ipndm_v`).
pub fn ipndm_v(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
    max_order: usize,
) -> Result<Tensor> {
    let mut history: Vec<Tensor> = Vec::new();
    for i in 0..steps(sigmas) {
        let (t, next) = (sigmas[i], sigmas[i + 1]);
        let denoised = model.denoise(&x, t)?;
        cb(i, &x, &denoised)?;
        let d = (&x - &denoised) / t;
        let order = max_order.min(i + 1);
        let dt = next - t;
        let hb = |k: usize| &history[history.len() - k];
        x = if next == 0.0 {
            denoised
        } else if order == 1 {
            &x + &d * dt
        } else {
            let h_n = dt;
            let h_n1 = t - sigmas[i - 1];
            match order {
                2 => {
                    let c1 = (2.0 + h_n / h_n1) / 2.0;
                    let c2 = -(h_n / h_n1) / 2.0;
                    &x + (&d * c1 + hb(1) * c2) * dt
                }
                3 => {
                    let h_n2 = sigmas[i - 1] - sigmas[i - 2];
                    let temp = (1.0
                        - h_n / (3.0 * (h_n + h_n1)) * (h_n * (h_n + h_n1))
                            / (h_n1 * (h_n1 + h_n2)))
                        / 2.0;
                    let c1 = (2.0 + h_n / h_n1) / 2.0 + temp;
                    let c2 = -(h_n / h_n1) / 2.0 - (1.0 + h_n1 / h_n2) * temp;
                    let c3 = temp * h_n1 / h_n2;
                    &x + (&d * c1 + hb(1) * c2 + hb(2) * c3) * dt
                }
                _ => {
                    let h_n2 = sigmas[i - 1] - sigmas[i - 2];
                    let h_n3 = sigmas[i - 2] - sigmas[i - 3];
                    let temp1 = (1.0
                        - h_n / (3.0 * (h_n + h_n1)) * (h_n * (h_n + h_n1))
                            / (h_n1 * (h_n1 + h_n2)))
                        / 2.0;
                    let temp2 = ((1.0 - h_n / (3.0 * (h_n + h_n1))) / 2.0
                        + (1.0 - h_n / (2.0 * (h_n + h_n1))) * h_n / (6.0 * (h_n + h_n1 + h_n2)))
                        * (h_n * (h_n + h_n1) * (h_n + h_n1 + h_n2))
                        / (h_n1 * (h_n1 + h_n2) * (h_n1 + h_n2 + h_n3));
                    let ratio = h_n1 * (h_n1 + h_n2) / (h_n2 * (h_n2 + h_n3));
                    let c1 = (2.0 + h_n / h_n1) / 2.0 + temp1 + temp2;
                    let c2 = -(h_n / h_n1) / 2.0
                        - (1.0 + h_n1 / h_n2) * temp1
                        - (1.0 + h_n1 / h_n2 + ratio) * temp2;
                    let c3 =
                        temp1 * h_n1 / h_n2 + (h_n1 / h_n2 + ratio * (1.0 + h_n2 / h_n3)) * temp2;
                    let c4 = -temp2 * ratio * h_n1 / h_n2;
                    &x + (&d * c1 + hb(1) * c2 + hb(2) * c3 + hb(3) * c4) * dt
                }
            }
        };
        if history.len() == max_order - 1 {
            drop(history.remove(0));
        }
        history.push(d);
    }
    Ok(x)
}

/// Half-logSNR `log(alpha/sigma)` and back: `−ln σ` for VE models, `ln((1 − σ)/σ)` for flow.
pub(super) struct LogSnr {
    flow: bool,
}

impl LogSnr {
    pub(super) fn lambda(&self, sigma: f64) -> f64 {
        if self.flow {
            ((1.0 - sigma) / sigma).ln()
        } else {
            -sigma.ln()
        }
    }
    pub(super) fn sigma(&self, lambda: f64) -> f64 {
        if self.flow {
            1.0 / (1.0 + lambda.exp())
        } else {
            (-lambda).exp()
        }
    }
}

/// The Brownian noise range (from the schedule as given) and the log-SNR schedule.
fn sde_setup(
    model: &dyn Denoiser,
    x: &Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
) -> (super::brownian::BrownianNoise, Vec<f64>, LogSnr) {
    let min = sigmas
        .iter()
        .copied()
        .filter(|s| *s > 0.0)
        .fold(f64::INFINITY, f64::min);
    let max = sigmas.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let brownian = noise.brownian(x, min, max);
    let (sigmas, log_snr) = log_snr_schedule(model, sigmas);
    (brownian, sigmas, log_snr)
}

/// The log-SNR map of the model, and the schedule with ComfyUI's nudge of a flow model's first
/// sigma of 1, where the log-SNR is infinite.
pub(super) fn log_snr_schedule(model: &dyn Denoiser, sigmas: &[f64]) -> (Vec<f64>, LogSnr) {
    let flow = model.is_flow();
    let mut sigmas = sigmas.to_vec();
    if flow && sigmas.len() > 1 && sigmas[0] >= 1.0 {
        sigmas[0] = model.percent_to_sigma(1e-4);
    }
    (sigmas, LogSnr { flow })
}

/// DPM-Solver++ (stochastic, two stages at ratio `r`).
pub fn dpmpp_sde(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    SdeNoise { eta, s_noise }: SdeNoise,
    r: f64,
) -> Result<Tensor> {
    if sigmas.len() <= 1 {
        return Ok(x);
    }
    let (mut bn, sigmas, ls) = sde_setup(model, &x, sigmas, noise);
    for i in 0..steps(&sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        cb(i, &x, &denoised)?;
        if sigmas[i + 1] == 0.0 {
            x = denoised;
            continue;
        }
        let (lam_s, lam_t) = (ls.lambda(sigmas[i]), ls.lambda(sigmas[i + 1]));
        let h = lam_t - lam_s;
        let lam_s1 = lam_s + r * h;
        let fac = 1.0 / (2.0 * r);
        let sigma_s1 = ls.sigma(lam_s1);
        let alpha_s = sigmas[i] * lam_s.exp();
        let alpha_s1 = sigma_s1 * lam_s1.exp();
        let alpha_t = sigmas[i + 1] * lam_t.exp();
        let (sd, su) = ancestral_step((-lam_s).exp(), (-lam_s1).exp(), eta);
        let h_ = -sd.ln() - lam_s;
        let mut x2 =
            &x * (alpha_s1 / alpha_s * (-h_).exp()) - &denoised * (alpha_s1 * (-h_).exp_m1());
        if eta > 0.0 && s_noise > 0.0 {
            x2 += bn.sample(sigmas[i], sigma_s1) * (alpha_s1 * su * s_noise);
        }
        let denoised2 = model.denoise(&x2, sigma_s1)?;
        let (sd, su) = ancestral_step((-lam_s).exp(), (-lam_t).exp(), eta);
        let h_ = -sd.ln() - lam_s;
        let dd = &denoised * (1.0 - fac) + denoised2 * fac;
        x = &x * (alpha_t / alpha_s * (-h_).exp()) - dd * (alpha_t * (-h_).exp_m1());
        if eta > 0.0 && s_noise > 0.0 {
            x = &x + bn.sample(sigmas[i], sigmas[i + 1]) * (alpha_t * su * s_noise);
        }
    }
    Ok(x)
}

/// DPM-Solver++(2M) SDE, midpoint or Heun second-order correction.
pub fn dpmpp_2m_sde(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    SdeNoise { eta, s_noise }: SdeNoise,
    heun: bool,
) -> Result<Tensor> {
    if sigmas.len() <= 1 {
        return Ok(x);
    }
    let (mut bn, sigmas, ls) = sde_setup(model, &x, sigmas, noise);
    let mut old: Option<Tensor> = None;
    let mut h_last = 0.0;
    for i in 0..steps(&sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        cb(i, &x, &denoised)?;
        if sigmas[i + 1] == 0.0 {
            x = denoised.shallow_clone();
        } else {
            let (lam_s, lam_t) = (ls.lambda(sigmas[i]), ls.lambda(sigmas[i + 1]));
            let h = lam_t - lam_s;
            let h_eta = h * (eta + 1.0);
            let alpha_t = sigmas[i + 1] * lam_t.exp();
            let phi = -(-h_eta).exp_m1();
            x = &x * (sigmas[i + 1] / sigmas[i] * (-h * eta).exp()) + &denoised * (alpha_t * phi);
            if let Some(prev) = &old {
                let r = h_last / h;
                let coeff = if heun {
                    alpha_t * (phi / -h_eta + 1.0)
                } else {
                    0.5 * alpha_t * phi
                };
                x = &x + (&denoised - prev) * (coeff / r);
            }
            if eta > 0.0 && s_noise > 0.0 {
                x = &x
                    + bn.sample(sigmas[i], sigmas[i + 1])
                        * (sigmas[i + 1] * (-(-2.0 * h * eta).exp_m1()).sqrt() * s_noise);
            }
            h_last = h;
        }
        old = Some(denoised);
    }
    Ok(x)
}

/// DPM-Solver++(3M) SDE.
pub fn dpmpp_3m_sde(
    model: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    SdeNoise { eta, s_noise }: SdeNoise,
) -> Result<Tensor> {
    if sigmas.len() <= 1 {
        return Ok(x);
    }
    let (mut bn, sigmas, ls) = sde_setup(model, &x, sigmas, noise);
    let (mut d1, mut d2): (Option<Tensor>, Option<Tensor>) = (None, None);
    let (mut h1, mut h2): (Option<f64>, Option<f64>) = (None, None);
    for i in 0..steps(&sigmas) {
        let denoised = model.denoise(&x, sigmas[i])?;
        cb(i, &x, &denoised)?;
        let mut h = None;
        if sigmas[i + 1] == 0.0 {
            x = denoised.shallow_clone();
        } else {
            let (lam_s, lam_t) = (ls.lambda(sigmas[i]), ls.lambda(sigmas[i + 1]));
            let hv = lam_t - lam_s;
            let h_eta = hv * (eta + 1.0);
            let alpha_t = sigmas[i + 1] * lam_t.exp();
            x = &x * (sigmas[i + 1] / sigmas[i] * (-hv * eta).exp())
                + &denoised * (alpha_t * -(-h_eta).exp_m1());
            match (&d1, &d2, h1, h2) {
                (Some(p1), Some(p2), Some(h_1), Some(h_2)) => {
                    let (r0, r1) = (h_1 / hv, h_2 / hv);
                    let d1_0 = (&denoised - p1) / r0;
                    let d1_1 = (p1 - p2) / r1;
                    let dd1 = &d1_0 + (&d1_0 - &d1_1) * (r0 / (r0 + r1));
                    let dd2 = (d1_0 - d1_1) / (r0 + r1);
                    let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
                    let phi_3 = phi_2 / h_eta - 0.5;
                    x = &x + dd1 * (alpha_t * phi_2) - dd2 * (alpha_t * phi_3);
                }
                (Some(p1), _, Some(h_1), _) => {
                    let d = (&denoised - p1) / (h_1 / hv);
                    let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
                    x = &x + d * (alpha_t * phi_2);
                }
                _ => {}
            }
            if eta > 0.0 && s_noise > 0.0 {
                x = &x
                    + bn.sample(sigmas[i], sigmas[i + 1])
                        * (sigmas[i + 1] * (-(-2.0 * hv * eta).exp_m1()).sqrt() * s_noise);
            }
            h = Some(hv);
        }
        d2 = d1.take();
        d1 = Some(denoised);
        h2 = h1;
        h1 = h;
    }
    Ok(x)
}
