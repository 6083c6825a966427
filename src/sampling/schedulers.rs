//! Noise schedules by ComfyUI name (`comfy/samplers.py` `SCHEDULER_HANDLERS`), in its order.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::model_sampling::ModelSampling;

/// ComfyUI's `SCHEDULER_NAMES`, in order.
pub const SCHEDULER_NAMES: &[&str] = &[
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
];

/// The sigmas (steps + 1 values, ending at 0) of a named schedule, as float32 like ComfyUI.
pub fn calculate_sigmas(ms: &ModelSampling, name: &str, steps: usize) -> Result<Tensor> {
    let (min, max) = (ms.sigma_min(), ms.sigma_max());
    let sigmas: Vec<f64> = match name {
        "simple" => simple(ms, steps),
        "sgm_uniform" => normal(ms, steps, true),
        "karras" => karras(steps, min, max, 7.0),
        "exponential" => exponential(steps, min, max),
        "ddim_uniform" => ddim_uniform(ms, steps),
        "beta" => beta_schedule(ms, steps, 0.6, 0.6),
        "normal" => normal(ms, steps, false),
        "linear_quadratic" => linear_quadratic(steps, 0.025, None)
            .into_iter()
            .map(|s| (s as f32 * max as f32) as f64)
            .collect(),
        "kl_optimal" => kl_optimal(steps, min, max),
        other => bail!("unknown scheduler {other:?}"),
    };
    Ok(Tensor::from_slice(&sigmas).to_kind(Kind::Float))
}

fn table(ms: &ModelSampling) -> Vec<f64> {
    Vec::<f64>::try_from(&ms.sigmas.to_kind(Kind::Double)).expect("1-D sigma table")
}

fn simple(ms: &ModelSampling, steps: usize) -> Vec<f64> {
    let s = table(ms);
    let ss = s.len() as f64 / steps as f64;
    let mut out: Vec<f64> = (0..steps)
        .map(|x| s[s.len() - 1 - (x as f64 * ss) as usize])
        .collect();
    out.push(0.0);
    out
}

fn ddim_uniform(ms: &ModelSampling, steps: usize) -> Vec<f64> {
    let s = table(ms);
    let mut steps = steps;
    let mut out = Vec::new();
    if (s[1]).abs() <= 0.00001 {
        steps += 1;
    } else {
        out.push(0.0);
    }
    let ss = (s.len() / steps).max(1);
    let mut x = 1;
    while x < s.len() {
        out.push(s[x]);
        x += ss;
    }
    out.reverse();
    out
}

/// float32 `torch.linspace(start, end, n)`.
fn linspace_f32(start: f64, end: f64, n: usize) -> Vec<f64> {
    let t = Tensor::linspace(start, end, n as i64, (Kind::Float, tch::Device::Cpu))
        .to_kind(Kind::Double);
    Vec::<f64>::try_from(&t).expect("1-D")
}

fn normal(ms: &ModelSampling, steps: usize, sgm: bool) -> Vec<f64> {
    let start = ms.timestep(ms.sigma_max());
    let end = ms.timestep(ms.sigma_min());
    let mut append_zero = true;
    let timesteps = if sgm {
        let mut t = linspace_f32(start, end, steps + 1);
        t.pop();
        t
    } else {
        let mut n = steps;
        if ms.sigma(end).abs() <= 0.00001 {
            n += 1;
            append_zero = false;
        }
        linspace_f32(start, end, n)
    };
    let mut out: Vec<f64> = timesteps.iter().map(|t| ms.sigma(*t)).collect();
    if append_zero {
        out.push(0.0);
    }
    out
}

/// Karras et al. (2022), computed in float32 like k-diffusion's `get_sigmas_karras`.
pub fn karras(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let ramp = Tensor::linspace(0.0, 1.0, n as i64, (Kind::Float, tch::Device::Cpu));
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    let sigmas = (ramp * (min_inv - max_inv) + max_inv).pow_tensor_scalar(rho);
    let mut out = Vec::<f64>::try_from(&sigmas.to_kind(Kind::Double)).expect("1-D");
    out.push(0.0);
    out
}

/// Log-linear between the extremes (k-diffusion's `get_sigmas_exponential`).
pub fn exponential(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
    let t = Tensor::linspace(
        sigma_max.ln(),
        sigma_min.ln(),
        n as i64,
        (Kind::Float, tch::Device::Cpu),
    )
    .exp();
    let mut out = Vec::<f64>::try_from(&t.to_kind(Kind::Double)).expect("1-D");
    out.push(0.0);
    out
}

/// Timesteps at Beta(alpha, beta) quantiles (arXiv:2407.12173), duplicates dropped, then 0;
/// float32 values like ComfyUI's.
pub fn beta_schedule(ms: &ModelSampling, steps: usize, alpha: f64, beta: f64) -> Vec<f64> {
    let s = table(ms);
    let total = (s.len() - 1) as f64;
    let mut out = Vec::new();
    let mut last = -1.0;
    for i in 0..steps {
        let q = 1.0 - i as f64 / steps as f64;
        let t = (beta_ppf(q, alpha, beta) * total).round_ties_even();
        if t != last {
            out.push(s[t as usize]);
        }
        last = t;
    }
    out.push(0.0);
    out
}

/// The Beta distribution's quantile function by bisection on its CDF.
fn beta_ppf(q: f64, a: f64, b: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if statrs::function::beta::beta_reg(a, b, mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Mochi's linear-then-quadratic schedule, in units of sigma_max.
fn linear_quadratic(steps: usize, threshold_noise: f64, linear_steps: Option<usize>) -> Vec<f64> {
    if steps == 1 {
        return vec![1.0, 0.0];
    }
    let linear_steps = linear_steps.unwrap_or(steps / 2);
    let (ls, n) = (linear_steps as f64, steps as f64);
    let mut schedule: Vec<f64> = (0..linear_steps)
        .map(|i| i as f64 * threshold_noise / ls)
        .collect();
    let step_diff = ls - threshold_noise * n;
    let quadratic_steps = n - ls;
    let quadratic_coef = step_diff / (ls * quadratic_steps * quadratic_steps);
    let linear_coef = threshold_noise / ls - 2.0 * step_diff / (quadratic_steps * quadratic_steps);
    let constant = quadratic_coef * ls * ls;
    schedule.extend((linear_steps..steps).map(|i| {
        let i = i as f64;
        quadratic_coef * i * i + linear_coef * i + constant
    }));
    schedule.push(1.0);
    schedule.into_iter().map(|x| 1.0 - x).collect()
}

/// Align Your Steps' KL-optimal schedule.
fn kl_optimal(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
    let idx = Tensor::arange(n as i64, (Kind::Float, tch::Device::Cpu)) / (n as f64 - 1.0);
    let s = (&idx * sigma_min.atan() + (1.0f64 - idx) * sigma_max.atan()).tan();
    let mut out = Vec::<f64>::try_from(&s.to_kind(Kind::Double)).expect("1-D");
    out.push(0.0);
    out
}

/// float32 `torch.linspace(start, end, n)` as a tensor.
fn linspace_tensor(start: f64, end: f64, n: usize) -> Tensor {
    Tensor::linspace(start, end, n as i64, (Kind::Float, tch::Device::Cpu))
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double)).expect("1-D")
}

/// A polynomial in log sigma (k-diffusion's `get_sigmas_polyexponential`), in float32.
pub fn polyexponential(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let ramp = linspace_tensor(1.0, 0.0, n).pow_tensor_scalar(rho);
    let (log_min, log_max) = (sigma_min.ln(), sigma_max.ln());
    let mut out = values(&(ramp * (log_max - log_min) + log_min).exp());
    out.push(0.0);
    out
}

/// The continuous VP schedule (k-diffusion's `get_sigmas_vp`), in float32.
pub fn vp(n: usize, beta_d: f64, beta_min: f64, eps_s: f64) -> Vec<f64> {
    let t = linspace_tensor(1.0, eps_s, n);
    let exponent = t.square() * beta_d / 2.0 + &t * beta_min;
    let mut out = values(&exponent.expm1().sqrt());
    out.push(0.0);
    out
}

/// Tiankai et al.'s Laplace schedule (ComfyUI's `get_sigmas_laplace`), in float32. Like
/// ComfyUI's it ends at `sigma_min`, not 0.
pub fn laplace(n: usize, sigma_min: f64, sigma_max: f64, mu: f64, beta: f64) -> Vec<f64> {
    let x = linspace_tensor(0.0, 1.0, n);
    let centred = x.neg() + 0.5;
    let spread = (centred.abs() * -2.0 + 1.0 + 1e-5).log();
    let lambda = (centred.sign() * beta * spread).neg() + mu;
    values(&lambda.exp().clamp(sigma_min, sigma_max))
}

/// numpy's `linspace(0, 1, n)`.
fn unit_linspace(n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![0.0];
    }
    let step = 1.0 / (n - 1) as f64;
    let mut xs: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
    xs[n - 1] = 1.0;
    xs
}

/// A decreasing schedule resampled to `num` points, linearly in log sigma (the
/// `loglinear_interp` of ComfyUI's Align Your Steps, GITS and OptimalSteps nodes).
fn loglinear_interp(levels: &[f64], num: usize) -> Vec<f64> {
    let xs = unit_linspace(levels.len());
    let ys: Vec<f64> = levels.iter().rev().map(|l| l.ln()).collect();
    let mut out: Vec<f64> = unit_linspace(num)
        .into_iter()
        .map(|x| {
            let k = xs.partition_point(|&p| p <= x).clamp(1, xs.len() - 1);
            let (x0, x1) = (xs[k - 1], xs[k]);
            let w = if x1 > x0 { (x - x0) / (x1 - x0) } else { 0.0 };
            (ys[k - 1] + w * (ys[k] - ys[k - 1])).exp()
        })
        .collect();
    out.reverse();
    out
}

/// Align Your Steps' noise levels (research.nvidia.com/labs/toronto-ai/AlignYourSteps).
pub const ALIGN_YOUR_STEPS: [(&str, &[f64]); 3] = [
    (
        "SD1",
        &[
            14.6146412293,
            6.4745760956,
            3.8636745985,
            2.6946151520,
            1.8841921177,
            1.3943805092,
            0.9642583904,
            0.6523686016,
            0.3977456272,
            0.1515232662,
            0.0291671582,
        ],
    ),
    (
        "SDXL",
        &[
            14.6146412293,
            6.3184485287,
            3.7681790315,
            2.1811480769,
            1.3405244945,
            0.8620721141,
            0.5550693289,
            0.3798540708,
            0.2332364134,
            0.1114188177,
            0.0291671582,
        ],
    ),
    (
        "SVD",
        &[
            700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002,
        ],
    ),
];

/// OptimalSteps' searched noise levels (github.com/bebebe666/OptimalSteps).
pub const OPTIMAL_STEPS: [(&str, &[f64]); 3] = [
    (
        "FLUX",
        &[
            0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001,
        ],
    ),
    (
        "Wan",
        &[
            1.0, 0.997, 0.995, 0.993, 0.991, 0.989, 0.987, 0.985, 0.98, 0.975, 0.973, 0.968, 0.96,
            0.946, 0.927, 0.902, 0.864, 0.776, 0.539, 0.208, 0.001,
        ],
    ),
    (
        "Chroma",
        &[
            0.992, 0.99, 0.988, 0.985, 0.982, 0.978, 0.973, 0.968, 0.961, 0.953, 0.943, 0.931,
            0.917, 0.9, 0.881, 0.858, 0.832, 0.802, 0.769, 0.731, 0.69, 0.646, 0.599, 0.55, 0.501,
            0.451, 0.402, 0.355, 0.311, 0.27, 0.232, 0.199, 0.169, 0.143, 0.12, 0.101, 0.084, 0.07,
            0.058, 0.048, 0.001,
        ],
    ),
];

/// A schedule from published noise levels (Align Your Steps, OptimalSteps): the levels
/// resampled to `steps + 1`, the last `denoise` part of them kept, ending at 0, in float32.
pub fn from_noise_levels(levels: &[f64], steps: usize, denoise: f64) -> Vec<f64> {
    let mut total = steps;
    if denoise < 1.0 {
        if denoise <= 0.0 {
            return Vec::new();
        }
        total = crate::upscale::py_round(steps as f64 * denoise).max(0) as usize;
    }
    let sigmas = if steps + 1 == levels.len() {
        levels.to_vec()
    } else {
        loglinear_interp(levels, steps + 1)
    };
    let mut kept = sigmas[sigmas.len().saturating_sub(total + 1)..].to_vec();
    if let Some(last) = kept.last_mut() {
        *last = 0.0;
    }
    kept.into_iter().map(|s| s as f32 as f64).collect()
}

/// ExtendIntermediateSigmas' spacing of the inserted points within a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Spacing {
    Linear,
    Cosine,
    Sine,
}

/// Inserts `steps − 1` points into each step whose upper sigma lies in
/// `[end_at_sigma, start_at_sigma]` (a negative start means no upper bound), in float32.
pub fn extend_intermediate(
    sigmas: &[f64],
    steps: usize,
    start_at_sigma: f64,
    end_at_sigma: f64,
    spacing: Spacing,
) -> Vec<f64> {
    let start = if start_at_sigma < 0.0 {
        f64::INFINITY
    } else {
        start_at_sigma
    };
    let x = linspace_tensor(0.0, 1.0, steps + 1).narrow(0, 1, steps.saturating_sub(1) as i64);
    let fractions = match spacing {
        Spacing::Linear => x,
        Spacing::Cosine => (x * std::f64::consts::PI / 2.0).sin(),
        Spacing::Sine => (x * std::f64::consts::PI / 2.0).cos().neg() + 1.0,
    };
    let mut out = Vec::new();
    for pair in sigmas.windows(2) {
        let (current, next) = (pair[0], pair[1]);
        out.push(current);
        let current32 = current as f32;
        if end_at_sigma as f32 <= current32 && current32 <= start as f32 {
            let step = Tensor::from(next as f32 - current32);
            let inserted = &fractions * step + f64::from(current32);
            out.extend(values(&inserted));
        }
    }
    out.extend(sigmas.last());
    out
}
