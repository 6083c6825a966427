//! SA-Solver (Xue et al., stochastic Adams predictor–corrector in data prediction and log-SNR
//! time) as ComfyUI runs it: by default predictor order 3, corrector order 4, stochastic
//! (tau = 1) between the sigmas at 20 % and 80 % of the model's schedule, orders lowered near a
//! final sigma of 0; SamplerSASolver sets each of these.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::noise::StepNoise;
use super::sampler_options::{SaSolverOptions, TauInterval};
use super::samplers::{log_snr_schedule, Denoiser, StepCallback};

/// `(1 + τ²) ∫ₛᵗ e^{(1+τ²)(x−t)} xᵖ dx` for p = 0..order, by repeated integration by parts.
fn exponential_coefficients(s: f64, t: f64, order: usize, tau: f64) -> Vec<f64> {
    let tau_mul = 1.0 + tau * tau;
    let decay = (-tau_mul * (t - s)).exp();
    let product: Vec<f64> = (0..order)
        .map(|p| t.powi(p as i32) - s.powi(p as i32) * decay)
        .collect();
    let factorial = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
    (0..order)
        .map(|p| {
            (0..=p)
                .map(|q| {
                    let depth = (p - q) as i32;
                    let sign = if depth % 2 == 0 { 1.0 } else { -1.0 };
                    sign * factorial(p) / factorial(q) / tau_mul.powi(depth) * product[q]
                })
                .sum()
        })
        .collect()
}

/// The weights of the stored estimates (oldest first, at `lambdas`) for a step from `lambda_s`
/// to `lambda_t`: the integrals of their Lagrange basis polynomials, by a Vandermonde solve, or
/// the paper's simple order-2 weights (`simple` is `Some(corrector step)`) for two estimates.
fn adams_coefficients(
    sigma_next: f64,
    lambdas: &[f64],
    lambda_s: f64,
    lambda_t: f64,
    tau: f64,
    simple: Option<bool>,
) -> Result<Vec<f64>> {
    let n = lambdas.len();
    let alpha_t = sigma_next * lambda_t.exp();
    if let (2, Some(corrector)) = (n, simple) {
        let tau_mul = 1.0 + tau * tau;
        let h = lambda_t - lambda_s;
        let whole = alpha_t * -(-h * tau_mul).exp_m1();
        return Ok(if corrector {
            let newest = alpha_t * (0.5 * tau_mul * h);
            vec![whole - newest, newest]
        } else {
            let oldest = alpha_t * (0.5 * tau_mul * h * h) / (lambdas[0] - lambda_s);
            vec![oldest, whole - oldest]
        });
    }
    let integrals = exponential_coefficients(lambda_s, lambda_t, n, tau);
    let vandermonde_t: Vec<f64> = (0..n)
        .flat_map(|power| lambdas.iter().map(move |l| l.powi(power as i32)))
        .collect();
    let a = Tensor::from_slice(&vandermonde_t).view([n as i64, n as i64]);
    let b = Tensor::from_slice(&integrals);
    let weights =
        Vec::<f64>::try_from(Tensor::f_linalg_solve(&a, &b, true)?.to_kind(Kind::Double))?;
    Ok(weights.into_iter().map(|w| w * alpha_t).collect())
}

/// `Σ wₖ · estimateₖ` over the newest `weights.len()` estimates.
fn combine(estimates: &[Tensor], weights: &[f64]) -> Tensor {
    let newest = &estimates[estimates.len() - weights.len()..];
    newest
        .iter()
        .zip(weights)
        .map(|(e, w)| e * *w)
        .reduce(|a, b| a + b)
        .expect("at least one estimate")
}

pub fn sa_solver(
    model: &mut dyn Denoiser,
    x: Tensor,
    sigmas: &[f64],
    noise: &mut StepNoise,
    cb: &mut StepCallback,
    options: &SaSolverOptions,
    s_noise: f64,
) -> Result<Tensor> {
    if sigmas.len() <= 1 {
        return Ok(x);
    }
    let (sigmas, ls) = log_snr_schedule(model, sigmas);
    let lambdas: Vec<f64> = sigmas.iter().map(|&s| ls.lambda(s)).collect();
    let interval = options.tau.unwrap_or(TauInterval {
        start_sigma: model.percent_to_sigma(0.2),
        end_sigma: model.percent_to_sigma(0.8),
        eta: 1.0,
    });
    let &SaSolverOptions {
        predictor_order: max_predictor,
        corrector_order: max_corrector,
        pece,
        simple_order_2,
        ..
    } = options;
    let simple = |corrector: bool| simple_order_2.then_some(corrector);
    let n = sigmas.len();
    let lower_order_to_end = sigmas[n - 1] == 0.0;
    let (mut x, mut x_pred) = (x.shallow_clone(), x);
    let (mut h, mut tau) = (0.0, 0.0);
    let mut step_noise: Option<Tensor> = None;
    let mut estimates: Vec<Tensor> = Vec::new();
    for i in 0..n - 1 {
        let mut denoised = model.denoise(&x_pred, sigmas[i])?;
        cb(i, &x_pred, &denoised)?;
        estimates.push(denoised.shallow_clone());
        if estimates.len() > max_predictor.max(max_corrector) {
            drop(estimates.remove(0));
        }
        let mut predictor_order = max_predictor.min(estimates.len());
        let mut corrector_order = if i == 0 || (sigmas[i + 1] == 0.0 && !pece) {
            0
        } else {
            max_corrector.min(estimates.len())
        };
        if lower_order_to_end {
            predictor_order = predictor_order.min(n - 2 - i);
            corrector_order = corrector_order.min(n - 1 - i);
        }

        if corrector_order == 0 {
            x = x_pred.shallow_clone();
        } else {
            let window = &lambdas[i + 1 - corrector_order..=i];
            let weights = adams_coefficients(
                sigmas[i],
                window,
                lambdas[i - 1],
                lambdas[i],
                tau,
                simple(true),
            )?;
            x = &x * (sigmas[i] / sigmas[i - 1] * (-tau * tau * h).exp())
                + combine(&estimates, &weights);
            if let (true, Some(carried)) = (tau > 0.0 && s_noise > 0.0, &step_noise) {
                x += carried;
            }
            if pece {
                denoised = model.denoise(&x, sigmas[i])?;
                *estimates.last_mut().expect("just pushed") = denoised.shallow_clone();
            }
        }

        if sigmas[i + 1] == 0.0 {
            x_pred = denoised;
            continue;
        }
        tau = interval.tau(sigmas[i + 1]);
        let window = &lambdas[i + 1 - predictor_order..=i];
        let weights = adams_coefficients(
            sigmas[i + 1],
            window,
            lambdas[i],
            lambdas[i + 1],
            tau,
            simple(false),
        )?;
        h = lambdas[i + 1] - lambdas[i];
        x_pred = &x * (sigmas[i + 1] / sigmas[i] * (-tau * tau * h).exp())
            + combine(&estimates, &weights);
        if tau > 0.0 && s_noise > 0.0 {
            let spread = sigmas[i + 1] * (-(-2.0 * tau * tau * h).exp_m1()).sqrt() * s_noise;
            let drawn = noise.next(&x) * spread;
            x_pred += &drawn;
            step_noise = Some(drawn);
        }
    }
    Ok(x_pred)
}
