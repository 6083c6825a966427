//! UniPC (Zhao et al. 2023) as ComfyUI runs it (`comfy/extra_samplers/uni_pc.py`): multistep
//! B(h) predictor–corrector in data-prediction mode, on the VP view of VE sigmas.

use anyhow::Result;
use tch::Tensor;

use super::samplers::{Denoiser, StepCallback};

/// The VP quantities of a VE sigma (ComfyUI's `SigmaConvert`).
struct Vp {
    alpha: f64,
    std: f64,
    lambda: f64,
}

fn vp(sigma: f64) -> Vp {
    let log_alpha = 0.5 * (1.0 / (sigma * sigma + 1.0)).ln();
    let std = (1.0 - (2.0 * log_alpha).exp()).sqrt();
    let log_std = 0.5 * (1.0 - (2.0 * log_alpha).exp()).ln();
    Vp {
        alpha: log_alpha.exp(),
        std,
        lambda: log_alpha - log_std,
    }
}

/// Data prediction on the VP latent: back to VE, eps from the denoiser, then x₀.
fn data_prediction(model: &mut dyn Denoiser, x: &Tensor, sigma: f64) -> Result<Tensor> {
    let input = x * (sigma * sigma + 1.0).sqrt();
    let eps = (&input - model.denoise(&input, sigma)?) / sigma;
    let v = vp(sigma);
    Ok((x - eps * v.std) / v.alpha)
}

/// Solves a small dense system by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|i, j| a[*i][col].abs().total_cmp(&a[*j][col].abs()))
            .expect("non-empty");
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col].clone();
        for row in col + 1..n {
            let f = a[row][col] / pivot_row[col];
            for (v, p) in a[row].iter_mut().zip(&pivot_row).skip(col) {
                *v -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

struct History {
    models: Vec<Tensor>,
    sigmas: Vec<f64>,
}

/// One B(h) update to `sigma` of the given order; returns the new x and, with the corrector,
/// the model value there.
fn bh_update(
    model: &mut dyn Denoiser,
    x: &Tensor,
    hist: &History,
    sigma: f64,
    order: usize,
    corrector: bool,
    bh2: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (prev_sigma, prev_model) = (
        *hist.sigmas.last().expect("history"),
        hist.models.last().expect("history"),
    );
    let (p0, t) = (vp(prev_sigma), vp(sigma));
    let h = t.lambda - p0.lambda;
    let mut rks = Vec::new();
    let mut d1s = Vec::new();
    for i in 1..order {
        let j = hist.sigmas.len() - 1 - i;
        let rk = (vp(hist.sigmas[j]).lambda - p0.lambda) / h;
        rks.push(rk);
        d1s.push((&hist.models[j] - prev_model) / rk);
    }
    rks.push(1.0);
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let b_h = if bh2 { hh.exp_m1() } else { hh };
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial = 1.0;
    let mut r = Vec::new();
    let mut b = Vec::new();
    for i in 1..=order {
        r.push(
            rks.iter()
                .map(|rk| rk.powi(i as i32 - 1))
                .collect::<Vec<f64>>(),
        );
        b.push(h_phi_k * factorial / b_h);
        factorial *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    let x_base = x * (t.std / p0.std) - prev_model * (t.alpha * h_phi_1);
    let weighted = |rhos: &[f64]| -> Option<Tensor> {
        d1s.iter()
            .zip(rhos)
            .map(|(d, rho)| d * *rho)
            .reduce(|a, c| a + c)
    };
    let mut x_t = x_base.shallow_clone();
    if !d1s.is_empty() {
        let rhos_p = if order == 2 {
            vec![0.5]
        } else {
            let k = order - 1;
            solve(
                r[..k].iter().map(|row| row[..k].to_vec()).collect(),
                b[..k].to_vec(),
            )
        };
        if let Some(pred) = weighted(&rhos_p) {
            x_t = &x_base - pred * (t.alpha * b_h);
        }
    }
    if !corrector {
        return Ok((x_t, None));
    }
    let rhos_c = if order == 1 { vec![0.5] } else { solve(r, b) };
    let model_t = data_prediction(model, &x_t, sigma)?;
    let d1_t = &model_t - prev_model;
    let last = *rhos_c.last().expect("non-empty");
    let correction = match weighted(&rhos_c[..rhos_c.len() - 1]) {
        Some(c) => c + d1_t * last,
        None => d1_t * last,
    };
    Ok((&x_base - correction * (t.alpha * b_h), Some(model_t)))
}

/// ComfyUI's `sample_unipc` (`bh1`, or `bh2` for uni_pc_bh2).
pub fn uni_pc(
    model: &mut dyn Denoiser,
    x: Tensor,
    sigmas: &[f64],
    cb: &mut StepCallback,
    bh2: bool,
) -> Result<Tensor> {
    let mut ts = sigmas.to_vec();
    if ts.last() == Some(&0.0) {
        *ts.last_mut().expect("non-empty") = 0.001;
    }
    let steps = ts.len().saturating_sub(1);
    let order = 3.min(ts.len().saturating_sub(2));
    let mut x = x / (1.0 + ts[0] * ts[0]).sqrt();
    let mut hist = History {
        models: Vec::new(),
        sigmas: Vec::new(),
    };
    for step_index in 0..steps {
        if step_index == 0 {
            hist.models.push(data_prediction(model, &x, ts[0])?);
            hist.sigmas.push(ts[0]);
        } else if step_index < order {
            let (nx, m) = bh_update(model, &x, &hist, ts[step_index], step_index, true, bh2)?;
            x = nx;
            let m = match m {
                Some(m) => m,
                None => data_prediction(model, &x, ts[step_index])?,
            };
            hist.models.push(m);
            hist.sigmas.push(ts[step_index]);
        } else {
            let extra = usize::from(step_index == steps - 1);
            for (step, &sigma) in ts.iter().enumerate().skip(step_index).take(extra + 1) {
                let step_order = order.min(steps + 1 - step);
                let (nx, m) = bh_update(model, &x, &hist, sigma, step_order, step != steps, bh2)?;
                x = nx;
                hist.models.rotate_left(1);
                hist.sigmas.rotate_left(1);
                *hist.sigmas.last_mut().expect("non-empty") = sigma;
                if step < steps {
                    let m = match m {
                        Some(m) => m,
                        None => data_prediction(model, &x, sigma)?,
                    };
                    *hist.models.last_mut().expect("non-empty") = m;
                }
            }
        }
        let denoised = hist.models.last().expect("non-empty").shallow_clone();
        cb(step_index, &x, &denoised)?;
    }
    Ok(x / vp(*ts.last().expect("non-empty")).alpha)
}
