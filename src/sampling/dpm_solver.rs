//! DPM-Solver-Fast and DPM-Solver-12/23 adaptive (k-diffusion's `DPMSolver`, arXiv:2206.00927),
//! as ComfyUI runs them: from `sigmas[0]` down to the last nonzero sigma.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::noise::StepNoise;
use super::sampler_options::DpmAdaptiveOptions;
use super::samplers::{ancestral_step, Denoiser, StepCallback};

fn sigma_of(t: f64) -> f64 {
    (-t).exp()
}

/// `ε(x, t)`, cached per key within one step as k-diffusion does.
struct Eps<'a> {
    model: &'a mut dyn Denoiser,
    cache: Vec<(&'static str, Tensor)>,
}

impl Eps<'_> {
    fn get(&mut self, key: &'static str, x: &Tensor, t: f64) -> Result<Tensor> {
        if let Some((_, e)) = self.cache.iter().find(|(k, _)| *k == key) {
            return Ok(e.shallow_clone());
        }
        let s = sigma_of(t);
        let e = (x - self.model.denoise(x, s)?) / s;
        self.cache.push((key, e.shallow_clone()));
        Ok(e)
    }

    fn step1(&mut self, x: &Tensor, t: f64, t_next: f64) -> Result<Tensor> {
        let h = t_next - t;
        let eps = self.get("eps", x, t)?;
        Ok(x - eps * (sigma_of(t_next) * h.exp_m1()))
    }

    fn step2(&mut self, x: &Tensor, t: f64, t_next: f64, r1: f64) -> Result<Tensor> {
        let h = t_next - t;
        let eps = self.get("eps", x, t)?;
        let s1 = t + r1 * h;
        let u1 = x - &eps * (sigma_of(s1) * (r1 * h).exp_m1());
        let eps_r1 = self.get("eps_r1", &u1, s1)?;
        Ok(x - &eps * (sigma_of(t_next) * h.exp_m1())
            - (eps_r1 - &eps) * (sigma_of(t_next) / (2.0 * r1) * h.exp_m1()))
    }

    fn step3(&mut self, x: &Tensor, t: f64, t_next: f64) -> Result<Tensor> {
        let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
        let h = t_next - t;
        let eps = self.get("eps", x, t)?;
        let (s1, s2) = (t + r1 * h, t + r2 * h);
        let u1 = x - &eps * (sigma_of(s1) * (r1 * h).exp_m1());
        let eps_r1 = self.get("eps_r1", &u1, s1)?;
        let u2 = x
            - &eps * (sigma_of(s2) * (r2 * h).exp_m1())
            - (&eps_r1 - &eps) * (sigma_of(s2) * (r2 / r1) * ((r2 * h).exp_m1() / (r2 * h) - 1.0));
        let eps_r2 = self.get("eps_r2", &u2, s2)?;
        Ok(x - &eps * (sigma_of(t_next) * h.exp_m1())
            - (eps_r2 - &eps) * (sigma_of(t_next) / r2 * (h.exp_m1() / h - 1.0)))
    }
}

/// The last nonzero sigma and the first: the span ComfyUI hands these solvers.
fn span(sigmas: &[f64]) -> (f64, f64) {
    let last = sigmas[sigmas.len() - 1];
    let min = if last == 0.0 {
        sigmas[sigmas.len() - 2]
    } else {
        last
    };
    (min, sigmas[0])
}

/// DPM-Solver-Fast with as many model calls as the schedule has steps.
pub fn dpm_fast(
    model: &mut dyn Denoiser,
    x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
) -> Result<Tensor> {
    if sigmas.len() <= 1 {
        return Ok(x);
    }
    let (sigma_min, sigma_max) = span(sigmas);
    let nfe = sigmas.len() - 1;
    let (t_start, t_end) = (-sigma_max.ln(), -sigma_min.ln());
    let m = nfe / 3 + 1;
    // k-diffusion builds the time grid with torch.linspace, in float32.
    let ts = Vec::<f64>::try_from(
        &Tensor::linspace(
            t_start,
            t_end,
            m as i64 + 1,
            (Kind::Float, tch::Device::Cpu),
        )
        .to_kind(Kind::Double),
    )?;
    let orders: Vec<usize> = if nfe.is_multiple_of(3) {
        std::iter::repeat_n(3, m - 2).chain([2, 1]).collect()
    } else {
        std::iter::repeat_n(3, m - 1).chain([nfe % 3]).collect()
    };
    let mut x = x;
    for (i, order) in orders.iter().enumerate() {
        let (t, t_next) = (ts[i], ts[i + 1]);
        let mut eps = Eps {
            model: &mut *model,
            cache: Vec::new(),
        };
        let e = eps.get("eps", &x, t)?;
        let denoised = &x - e * sigma_of(t);
        cb(i, &x, &denoised)?;
        x = match order {
            1 => eps.step1(&x, t, t_next)?,
            2 => eps.step2(&x, t, t_next, 0.5)?,
            _ => eps.step3(&x, t, t_next)?,
        };
        // k-diffusion adds `0 · noise` without eta; the draw still happens.
        let _ = noise.next(&x);
    }
    Ok(x)
}

/// k-diffusion's PID step-size controller.
struct Pid {
    h: f64,
    b1: f64,
    b2: f64,
    b3: f64,
    accept_safety: f64,
    eps: f64,
    errs: Vec<f64>,
}

impl Pid {
    fn propose(&mut self, error: f64) -> bool {
        let inv = 1.0 / (error + self.eps);
        if self.errs.is_empty() {
            self.errs = vec![inv; 3];
        }
        self.errs[0] = inv;
        let factor =
            self.errs[0].powf(self.b1) * self.errs[1].powf(self.b2) * self.errs[2].powf(self.b3);
        let factor = 1.0 + (factor - 1.0).atan();
        let accept = factor >= self.accept_safety;
        if accept {
            self.errs[2] = self.errs[1];
            self.errs[1] = self.errs[0];
        }
        self.h *= factor;
        accept
    }
}

/// DPM-Solver-12 or -23 with adaptive steps, ancestral with `eta` > 0 (k-diffusion's
/// `dpm_solver_adaptive`).
#[allow(clippy::too_many_arguments)]
pub fn dpm_adaptive(
    model: &mut dyn Denoiser,
    x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    options: &DpmAdaptiveOptions,
    eta: f64,
    s_noise: f64,
) -> Result<Tensor> {
    if sigmas.len() <= 1 {
        return Ok(x);
    }
    let &DpmAdaptiveOptions {
        order,
        rtol,
        atol,
        h_init,
        pcoeff,
        icoeff,
        dcoeff,
        accept_safety,
    } = options;
    if !(2..=3).contains(&order) {
        bail!("dpm_adaptive's order should be 2 or 3, not {order}");
    }
    // A zero first step never grows: k-diffusion would loop in place until interrupted.
    if h_init == 0.0 {
        bail!("dpm_adaptive's h_init must not be 0");
    }
    let (sigma_min, sigma_max) = span(sigmas);
    let (t_start, t_end) = (-sigma_max.ln(), -sigma_min.ln());
    // k-diffusion holds atol and rtol as float32 tensors.
    let (rtol, atol) = (rtol as f32 as f64, atol as f32 as f64);
    let controller_order = if eta != 0.0 { 1.5 } else { order as f64 };
    let mut pid = Pid {
        h: h_init.abs(),
        b1: (pcoeff + icoeff + dcoeff) / controller_order,
        b2: -(pcoeff + 2.0 * dcoeff) / controller_order,
        b3: dcoeff / controller_order,
        accept_safety,
        eps: 1e-8,
        errs: Vec::new(),
    };
    let mut s = t_start;
    let mut x = x;
    let mut x_prev = x.shallow_clone();
    let mut step = 0;
    while s < t_end - 1e-5 {
        let t = t_end.min(s + pid.h);
        let (t_, su) = if eta != 0.0 {
            let (down, _) = ancestral_step(sigma_of(s), sigma_of(t), eta);
            let t_ = t_end.min(-down.ln());
            (t_, (sigma_of(t).powi(2) - sigma_of(t_).powi(2)).sqrt())
        } else {
            (t, 0.0)
        };
        let mut eps = Eps {
            model: &mut *model,
            cache: Vec::new(),
        };
        let e = eps.get("eps", &x, s)?;
        let denoised = &x - e * sigma_of(s);
        let (x_low, x_high) = if order == 2 {
            (eps.step1(&x, s, t_)?, eps.step2(&x, s, t_, 0.5)?)
        } else {
            (eps.step2(&x, s, t_, 1.0 / 3.0)?, eps.step3(&x, s, t_)?)
        };
        let delta = (x_low.abs().maximum(&x_prev.abs()) * rtol).clamp_min(atol);
        let error = ((&x_low - &x_high) / delta)
            .square()
            .sum(Kind::Double)
            .sqrt()
            .double_value(&[])
            / (x.numel() as f64).sqrt();
        if pid.propose(error) {
            x_prev = x_low;
            x = x_high + noise.next(&x) * (su * s_noise);
            s = t;
        }
        cb(step, &x, &denoised)?;
        step += 1;
    }
    Ok(x)
}
