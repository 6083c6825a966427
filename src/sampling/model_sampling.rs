//! How a model's noise levels map to its timesteps and how its output becomes a denoised
//! estimate (ComfyUI's `comfy/model_sampling.py`): discrete DDPM schedules with eps or v
//! prediction, and rectified flow with a shift (SD3/Wan, AuraFlow, Flux).

use tch::{Device, Kind, Tensor};

use crate::engine::value::SharedTensor;

/// What the network predicts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prediction {
    Eps,
    V,
    /// ComfyUI's `IMG_TO_IMG` (Lotus): the network takes the latent unscaled and predicts the
    /// result itself (`X0`).
    ImgToImg,
    /// Rectified flow (ComfyUI's `CONST`): the velocity from data to noise.
    Flow,
}

/// How timesteps relate to sigmas.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// 1000 DDPM steps from a `scaled_linear` beta schedule.
    Discrete { linear_start: f64, linear_end: f64 },
    /// `ModelSamplingDiscreteFlow`: sigma = shift·t / (1 + (shift − 1)·t), t = timestep / multiplier.
    Flow { shift: f64, multiplier: f64 },
    /// `ModelSamplingFlux`: sigma = e^shift / (e^shift + 1/t − 1).
    Flux { shift: f64 },
}

pub struct ModelSampling {
    pub prediction: Prediction,
    pub schedule: Schedule,
    /// The table of sigmas (float32, ascending), as ComfyUI registers it.
    pub sigmas: SharedTensor,
    log_sigmas: SharedTensor,
    sigma_data: f64,
}

fn time_snr_shift(alpha: f64, t: f64) -> f64 {
    if alpha == 1.0 {
        t
    } else {
        alpha * t / (1.0 + (alpha - 1.0) * t)
    }
}

fn flux_time_shift(mu: f64, t: f64) -> f64 {
    mu.exp() / (mu.exp() + (1.0 / t - 1.0))
}

impl ModelSampling {
    pub fn new(prediction: Prediction, schedule: Schedule) -> Self {
        let cpu = (Kind::Double, Device::Cpu);
        let sigmas = match schedule {
            Schedule::Discrete {
                linear_start,
                linear_end,
            } => {
                let betas =
                    Tensor::linspace(linear_start.sqrt(), linear_end.sqrt(), 1000, cpu).square();
                let alphas_cumprod = (1.0f64 - betas).cumprod(0, Kind::Double);
                ((1.0f64 - &alphas_cumprod) / &alphas_cumprod).sqrt()
            }
            Schedule::Flow { shift, multiplier } => {
                let ts = Tensor::arange_start(1, 1001, cpu) / 1000.0 * multiplier;
                let v: Vec<f64> = Vec::<f64>::try_from(&ts)
                    .expect("double tensor")
                    .iter()
                    .map(|t| time_snr_shift(shift, t / multiplier))
                    .collect();
                Tensor::from_slice(&v)
            }
            Schedule::Flux { shift } => {
                let v: Vec<f64> = (1..=10000)
                    .map(|i| flux_time_shift(shift, i as f64 / 10000.0))
                    .collect();
                Tensor::from_slice(&v)
            }
        };
        let log_sigmas = sigmas.log().to_kind(Kind::Float);
        ModelSampling {
            prediction,
            schedule,
            sigmas: SharedTensor::new(sigmas.to_kind(Kind::Float)),
            log_sigmas: SharedTensor::new(log_sigmas),
            sigma_data: 1.0,
        }
    }

    /// SD1.x/SD2 style (`linear_start` 0.00085, `linear_end` 0.012).
    pub fn sd(prediction: Prediction) -> Self {
        Self::new(
            prediction,
            Schedule::Discrete {
                linear_start: 0.00085,
                linear_end: 0.012,
            },
        )
    }

    pub fn sigma_min(&self) -> f64 {
        self.sigmas.double_value(&[0])
    }

    pub fn sigma_max(&self) -> f64 {
        self.sigmas.double_value(&[-1])
    }

    /// The timestep the network is conditioned on for a sigma.
    pub fn timestep(&self, sigma: f64) -> f64 {
        match self.schedule {
            Schedule::Discrete { .. } => {
                let log_sigma = (sigma as f32).ln() as f64;
                let dists = (self.log_sigmas.to_kind(Kind::Double) - log_sigma).abs();
                dists.argmin(0, false).int64_value(&[]) as f64
            }
            Schedule::Flow { multiplier, .. } => sigma * multiplier,
            Schedule::Flux { .. } => sigma,
        }
    }

    /// The sigma of a (possibly fractional) timestep.
    pub fn sigma(&self, timestep: f64) -> f64 {
        match self.schedule {
            Schedule::Discrete { .. } => {
                let t = (timestep as f32).clamp(0.0, (self.sigmas.size()[0] - 1) as f32);
                let (low, high) = (t.floor() as i64, t.ceil() as i64);
                let w = t.fract();
                let (l, h) = (
                    self.log_sigmas.double_value(&[low]) as f32,
                    self.log_sigmas.double_value(&[high]) as f32,
                );
                ((1.0 - w) * l + w * h).exp() as f64
            }
            Schedule::Flow { shift, multiplier } => time_snr_shift(shift, timestep / multiplier),
            Schedule::Flux { shift } => flux_time_shift(shift, timestep),
        }
    }

    /// ComfyUI's `percent_to_sigma` (for timestep ranges and start/end percentages).
    pub fn percent_to_sigma(&self, percent: f64) -> f64 {
        match self.schedule {
            Schedule::Discrete { .. } => {
                if percent <= 0.0 {
                    return 999999999.9;
                }
                if percent >= 1.0 {
                    return 0.0;
                }
                self.sigma((1.0 - percent) * 999.0)
            }
            Schedule::Flow { shift, .. } => {
                if percent <= 0.0 {
                    return 1.0;
                }
                if percent >= 1.0 {
                    return 0.0;
                }
                time_snr_shift(shift, 1.0 - percent)
            }
            Schedule::Flux { shift } => {
                if percent <= 0.0 {
                    return 1.0;
                }
                if percent >= 1.0 {
                    return 0.0;
                }
                flux_time_shift(shift, 1.0 - percent)
            }
        }
    }

    fn view(sigma: &Tensor, like: &Tensor) -> Tensor {
        let mut shape = vec![-1i64];
        shape.extend(std::iter::repeat_n(1, like.dim() - 1));
        sigma.view(shape.as_slice())
    }

    /// The network's input for a noisy latent (`calculate_input`).
    pub fn calculate_input(&self, sigma: &Tensor, x: &Tensor) -> Tensor {
        match self.prediction {
            Prediction::Flow | Prediction::ImgToImg => x.shallow_clone(),
            _ => x / (Self::view(sigma, x).square() + self.sigma_data * self.sigma_data).sqrt(),
        }
    }

    /// The denoised estimate from the network's output (`calculate_denoised`).
    pub fn calculate_denoised(&self, sigma: &Tensor, output: &Tensor, input: &Tensor) -> Tensor {
        let s = Self::view(sigma, output);
        match self.prediction {
            Prediction::Eps | Prediction::Flow => input - output * s,
            Prediction::ImgToImg => output.shallow_clone(),
            Prediction::V => {
                let sd2 = self.sigma_data * self.sigma_data;
                let denom = s.square() + sd2;
                input * sd2 / &denom - output * &s * self.sigma_data / denom.sqrt()
            }
        }
    }

    /// Mixes noise into a latent at `sigma` (`noise_scaling`).
    pub fn noise_scaling(
        &self,
        sigma: &Tensor,
        noise: &Tensor,
        latent: &Tensor,
        max_denoise: bool,
    ) -> Tensor {
        let s = Self::view(sigma, noise);
        match self.prediction {
            Prediction::Flow => &s * noise + (1.0 - &s) * latent,
            _ if max_denoise => noise * (s.square() + 1.0f64).sqrt() + latent,
            _ => noise * s + latent,
        }
    }

    /// Undoes the scaling of the final latent (`inverse_noise_scaling`).
    pub fn inverse_noise_scaling(&self, sigma: &Tensor, latent: &Tensor) -> Tensor {
        match self.prediction {
            Prediction::Flow => latent / (1.0 - Self::view(sigma, latent)),
            _ => latent.shallow_clone(),
        }
    }
}
