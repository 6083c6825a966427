//! The `extra_options` ComfyUI's Sampler* nodes hand `comfy.samplers.ksampler(name, …)`. A
//! field left `None` keeps the sampler's own default, so KSamplerSelect's choice is
//! `SamplerOptions::default()`.

use super::seeds::Phi;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplerOptions {
    /// Strength of the ancestral or SDE noise.
    pub eta: Option<f64>,
    /// Multiplier of the injected noise.
    pub s_noise: Option<f64>,
    /// The intermediate stage's fraction of the step (dpmpp_sde, seeds_2).
    pub r: Option<f64>,
    /// LMS's order.
    pub order: Option<usize>,
    /// DPM++(2M) SDE's second-order correction: Heun's instead of the midpoint's.
    pub heun: Option<bool>,
    /// SEEDS-2's second-stage weights.
    pub phi: Option<Phi>,
    pub er_sde: Option<ErSdeOptions>,
    pub sa_solver: Option<SaSolverOptions>,
    pub dpm_adaptive: Option<DpmAdaptiveOptions>,
    /// LCM's noise multiplier at the last step (linear from `s_noise`) and its clamp in
    /// standard deviations (0 disables).
    pub lcm: Option<LcmNoise>,
}

/// ER-SDE's noise scaler and how many stages it may use (SamplerER_SDE).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErSdeOptions {
    pub scaler: NoiseScaler,
    pub max_stage: usize,
}

impl Default for ErSdeOptions {
    fn default() -> Self {
        ErSdeOptions {
            scaler: NoiseScaler::ErSde { eta: 1.0 },
            max_stage: 3,
        }
    }
}

/// ER-SDE's `noise_scaler(λ)` families, `eta` scaling the stochastic part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NoiseScaler {
    /// `λ · (exp(λ^0.3) + 10)^eta` (eta 1 is the solver's default).
    ErSde { eta: f64 },
    /// `λ^(eta + 1)`.
    ReverseTime { eta: f64 },
    /// `λ`: deterministic.
    Ode,
}

impl NoiseScaler {
    pub fn apply(&self, lambda: f64) -> f64 {
        match *self {
            NoiseScaler::ErSde { eta } => lambda * (lambda.powf(0.3).exp() + 10.0).powf(eta),
            NoiseScaler::ReverseTime { eta } => lambda.powf(eta + 1.0),
            NoiseScaler::Ode => lambda,
        }
    }
}

/// SA-Solver's settings (SamplerSASolver); the default is ComfyUI's `sa_solver`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SaSolverOptions {
    /// The stochastic interval: `tau = eta` for `end_sigma ≤ σ ≤ start_sigma`, else 0. `None`
    /// takes the model's sigmas at 20 % and 80 % with eta 1.
    pub tau: Option<TauInterval>,
    pub predictor_order: usize,
    pub corrector_order: usize,
    /// Re-evaluate the model on each corrected state.
    pub pece: bool,
    /// The paper's simplified order-2 coefficients where two estimates are combined.
    pub simple_order_2: bool,
}

impl Default for SaSolverOptions {
    fn default() -> Self {
        SaSolverOptions {
            tau: None,
            predictor_order: 3,
            corrector_order: 4,
            pece: false,
            simple_order_2: false,
        }
    }
}

/// ComfyUI's `get_tau_interval_func(start_sigma, end_sigma, eta)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TauInterval {
    pub start_sigma: f64,
    pub end_sigma: f64,
    pub eta: f64,
}

impl TauInterval {
    pub fn tau(&self, sigma: f64) -> f64 {
        if self.eta > 0.0 && self.start_sigma >= sigma && sigma >= self.end_sigma {
            self.eta
        } else {
            0.0
        }
    }
}

/// DPM-Solver-12/23's step-size control (SamplerDPMAdaptative); the default is k-diffusion's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpmAdaptiveOptions {
    /// 2 (DPM-Solver-12) or 3 (DPM-Solver-23).
    pub order: usize,
    pub rtol: f64,
    pub atol: f64,
    pub h_init: f64,
    pub pcoeff: f64,
    pub icoeff: f64,
    pub dcoeff: f64,
    pub accept_safety: f64,
}

impl Default for DpmAdaptiveOptions {
    fn default() -> Self {
        DpmAdaptiveOptions {
            order: 3,
            rtol: 0.05,
            atol: 0.0078,
            h_init: 0.05,
            pcoeff: 0.0,
            icoeff: 1.0,
            dcoeff: 0.0,
            accept_safety: 0.81,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LcmNoise {
    pub s_noise_end: f64,
    pub noise_clip_std: f64,
}
