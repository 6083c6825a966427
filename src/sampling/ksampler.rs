//! Sampling a latent the way ComfyUI's `KSampler`/`CFGGuider`/`KSAMPLER` do: schedule with
//! denoise and start/end steps, noise scaling, inpainting masks, the sampler, unscaling.

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::ar_video::sample_ar_video;
use super::guidance::Guider;
use super::latent_format::LatentFormat;
use super::model::{repeat_to_batch, Latent, SamplerChoice};
use super::model_sampling::ModelSampling;
use super::nested::pack;
use super::noise::StepNoise;
use super::samplers::{sample, Denoiser, StepCallback};
use super::schedulers::calculate_sigmas;
use super::step_cache::StepCache;

/// Samplers whose schedule drops the penultimate sigma (ComfyUI's
/// `DISCARD_PENULTIMATE_SIGMA_SAMPLERS`).
const DISCARD_PENULTIMATE: &[&str] = &["dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"];

/// `KSampler.set_steps`: the schedule for `steps` at `denoise`.
pub fn ksampler_sigmas(
    ms: &ModelSampling,
    scheduler: &str,
    sampler: &str,
    steps: usize,
    denoise: f64,
) -> Result<Vec<f64>> {
    let schedule = |n: usize| -> Result<Vec<f64>> {
        let discard = DISCARD_PENULTIMATE.contains(&sampler);
        let n = if discard { n + 1 } else { n };
        let mut s =
            Vec::<f64>::try_from(&calculate_sigmas(ms, scheduler, n)?.to_kind(Kind::Double))?;
        if discard && s.len() >= 2 {
            s.remove(s.len() - 2);
        }
        Ok(s)
    };
    if denoise > 0.9999 {
        return schedule(steps);
    }
    if denoise <= 0.0 {
        return Ok(Vec::new());
    }
    let all = schedule((steps as f64 / denoise) as usize)?;
    Ok(all[all.len().saturating_sub(steps + 1)..].to_vec())
}

/// `KSampler.sample`'s step window: stop at `last_step` (zeroing the end when forced), start at
/// `start_step`. `None` means the latent comes back untouched.
pub fn step_window(
    mut sigmas: Vec<f64>,
    start_step: Option<usize>,
    last_step: Option<usize>,
    force_full_denoise: bool,
) -> Option<Vec<f64>> {
    if let Some(last) = last_step {
        if last < sigmas.len().saturating_sub(1) {
            sigmas.truncate(last + 1);
            if force_full_denoise {
                *sigmas.last_mut().expect("at least one sigma") = 0.0;
            }
        }
    }
    if let Some(start) = start_step {
        if start < sigmas.len().saturating_sub(1) {
            sigmas.drain(..start);
        } else {
            return None;
        }
    }
    Some(sigmas)
}

/// Re-noises the kept region of an inpainting mask each step (`KSamplerX0Inpaint`).
struct Inpaint<'a> {
    inner: &'a mut Guider,
    mask: Tensor,
    latent: Tensor,
    noise: Tensor,
    /// The kept region goes in clean, not re-noised (`scale_latent_inpaint` of Wan 2.2).
    keep_clean: bool,
    /// DifferentialDiffusion's thresholding: its strength and the schedule's first and last
    /// timesteps.
    differential: Option<(f64, f64, f64)>,
}

impl Inpaint<'_> {
    /// The mask at `sigma`: as given, or DifferentialDiffusion's — the cells whose mask value
    /// reaches the step's place in the schedule, blended back by the strength.
    fn mask_at(&self, sigma: f64) -> Tensor {
        let Some((strength, ts_from, ts_to)) = self.differential else {
            return self.mask.shallow_clone();
        };
        let ts = self.inner.model().sampling.timestep(sigma);
        let threshold = (ts - ts_to) / (ts_from - ts_to);
        let binary = self.mask.ge(threshold).to_kind(self.mask.kind());
        if strength > 0.0 && strength < 1.0 {
            binary * strength + &self.mask * (1.0 - strength)
        } else {
            binary
        }
    }

    /// The kept region re-noised to `sigma`, the rest as the sampler has it.
    fn masked_input(&self, x: &Tensor, mask: &Tensor, sigma: f64) -> Tensor {
        let kept = if self.keep_clean {
            self.latent.shallow_clone()
        } else {
            let sigma_t = Tensor::full([x.size()[0]], sigma, (x.kind(), x.device()));
            self.inner
                .model()
                .sampling
                .noise_scaling(&sigma_t, &self.noise, &self.latent, false)
        };
        x * mask + kept * (1.0f64 - mask)
    }

    /// The estimate inside the mask, the original latent outside it.
    fn blend(&self, out: Tensor, mask: &Tensor) -> Tensor {
        out * mask + &self.latent * (1.0f64 - mask)
    }
}

impl Denoiser for Inpaint<'_> {
    fn is_flow(&self) -> bool {
        self.inner.is_flow()
    }

    fn noise_scaling(&self, sigma: f64, noise: &Tensor, x: &Tensor) -> Tensor {
        self.inner.noise_scaling(sigma, noise, x)
    }

    fn percent_to_sigma(&self, percent: f64) -> f64 {
        self.inner.percent_to_sigma(percent)
    }

    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let mask = self.mask_at(sigma);
        let input = self.masked_input(x, &mask, sigma);
        let out = self.inner.denoise(&input, sigma)?;
        Ok(self.blend(out, &mask))
    }

    fn denoise_with_uncond(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        let mask = self.mask_at(sigma);
        let input = self.masked_input(x, &mask, sigma);
        let (out, uncond) = self.inner.denoise_with_uncond(&input, sigma)?;
        Ok((self.blend(out, &mask), uncond))
    }
}

/// ComfyUI's `prepare_mask` (`reshape_mask`): the mask interpolated to the latent's spatial (and
/// for video latents temporal) size, repeated over channels and batch.
pub fn prepare_mask(mask: &Tensor, shape: &[i64]) -> Tensor {
    let size = mask.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    let m = mask.to_kind(Kind::Float);
    let m = if shape.len() == 5 {
        let m = if m.dim() < 5 {
            m.reshape([1, 1, -1, h, w])
        } else {
            m
        };
        m.upsample_trilinear3d([shape[2], shape[3], shape[4]], false, None, None, None)
    } else {
        m.reshape([-1, 1, h, w])
            .upsample_bilinear2d([shape[2], shape[3]], false, None, None)
    };
    let m = if m.size()[1] < shape[1] {
        let mut reps = vec![1i64; shape.len()];
        reps[1] = shape[1];
        m.repeat(reps.as_slice()).narrow(1, 0, shape[1])
    } else {
        m
    };
    repeat_to_batch(&m, shape[0])
}

/// What sampling returns: the final latent and the last denoised estimate.
pub struct Sampled {
    pub samples: Tensor,
    pub denoised: Option<Tensor>,
}

/// Samples `latent` with `guider` along `sigmas` from initial `noise` with a named sampler.
pub fn sample_latent(
    guider: &mut Guider,
    sampler: &str,
    sigmas: &[f64],
    noise: &Tensor,
    latent: &Latent,
    seed: Option<u64>,
    callback: &mut StepCallback,
) -> Result<Sampled> {
    let choice = SamplerChoice::named(sampler);
    sample_latent_with(guider, &choice, sigmas, noise, latent, seed, callback)
}

/// [`sample_latent`] with any SAMPLER.
pub fn sample_latent_with(
    guider: &mut Guider,
    sampler: &SamplerChoice,
    sigmas: &[f64],
    noise: &Tensor,
    latent: &Latent,
    seed: Option<u64>,
    callback: &mut StepCallback,
) -> Result<Sampled> {
    if sigmas.is_empty() {
        return Ok(Sampled {
            samples: latent.samples.shallow_clone(),
            denoised: None,
        });
    }
    // Sampling runs in float32 on the network's device, in its latent space; a nested latent's
    // parts packed into one (their family's format is the identity).
    let nested = latent.nested.as_deref();
    let net = match nested {
        Some(n) => {
            let shapes: Vec<Vec<i64>> = n.parts.iter().map(|p| p.size()).collect();
            guider
                .model()
                .net
                .with_latent_shapes(&shapes)
                .context("this model does not take nested (audio-video) latents")?
        }
        None => guider.model().net.clone(),
    };
    let device = net.device();
    let format = if nested.is_some() {
        None
    } else {
        net.latent_format()
    };
    let on_device = |t: &Tensor| t.to_device(device).to_kind(Kind::Float);
    let latent_image = match nested {
        Some(n) => pack(&n.parts.iter().map(|p| on_device(p)).collect::<Vec<_>>()),
        None => on_device(&latent.samples),
    };
    let latent_image = format.map_or(latent_image.shallow_clone(), |f| {
        f.process_in(&latent_image)
    });
    let mut noise = noise.to_device(device).to_kind(Kind::Float);
    if let Some(windows) = &guider.model().context_windows {
        windows.begin(sigmas);
        if windows.freenoise {
            noise = windows.freenoise(&noise, seed.unwrap_or(0));
        }
    }
    let shape = latent_image.size();
    let mask = match nested {
        Some(n) => n.masks.as_ref().map(|masks| {
            let prepared: Vec<Tensor> = masks
                .iter()
                .zip(&n.parts)
                .map(|(m, part)| prepare_mask(m, &part.size()))
                .collect();
            pack(&prepared).to_device(device)
        }),
        None => latent
            .noise_mask
            .as_ref()
            .map(|m| prepare_mask(m, &shape).to_device(device)),
    };
    let mut prepared = guider.prepared(&shape[2..], mask.as_ref(), seed.unwrap_or(0));
    prepared.model_mut().net = net.clone();
    let guider = &mut prepared;
    let ms = guider.model().sampling.clone();
    let step_cache = guider.model().step_cache.clone();
    let _cache_run = step_cache
        .as_deref()
        .map(|cache| CacheRun::begin(cache, &ms, sigmas.len() - 1));
    let sigma_max = ms.sigma_max();
    let max_denoise = ((sigma_max - sigmas[0]).abs()
        <= 1e-5 * sigma_max.abs().max(sigmas[0].abs()))
        || sigmas[0] > sigma_max;
    let sigma0 = Tensor::full(
        [latent_image.size()[0]],
        sigmas[0],
        (latent_image.kind(), device),
    );
    let x = ms.noise_scaling(&sigma0, &noise, &latent_image, max_denoise);
    let (sampler, options) = match sampler {
        SamplerChoice::KSampler { name, options } => (name.as_str(), options),
        SamplerChoice::ArVideo { frames_per_block } => {
            if mask.is_some() {
                bail!("the ar_video sampler does not take a noise mask");
            }
            let initial = guider.model().ar_initial.clone().map(|l| {
                let l = l.to_device(device).to_kind(Kind::Float);
                format.map_or(l.shallow_clone(), |f| f.process_in(&l))
            });
            let mut last_denoised = None;
            let mut cb = |i: usize, x: &Tensor, denoised: &Tensor| -> Result<()> {
                last_denoised = Some(denoised.shallow_clone());
                callback(i, x, denoised)
            };
            let samples = sample_ar_video(
                net.as_ref(),
                guider,
                &x,
                sigmas,
                *frames_per_block,
                initial.as_ref(),
                seed.unwrap_or(0),
                &mut cb,
            )?;
            return Ok(finished(guider, samples, last_denoised, sigmas, format));
        }
    };
    let mut step_noise = match seed {
        Some(s) => StepNoise::seeded(s, device),
        None => StepNoise::unseeded(),
    };
    let mut last_denoised = None;
    let mut cb = |i: usize, x: &Tensor, denoised: &Tensor| -> Result<()> {
        last_denoised = Some(denoised.shallow_clone());
        callback(i, x, denoised)
    };
    let samples = match mask {
        Some(mask) => {
            // DifferentialDiffusion reads the whole schedule: from its first sigma to its last
            // (at least the model's smallest).
            let differential = guider.model().differential.map(|strength| {
                let to = sigmas.last().copied().unwrap_or(0.0).max(ms.sigma_min());
                (strength, ms.timestep(sigmas[0]), ms.timestep(to))
            });
            let mut inpaint = Inpaint {
                inner: guider,
                mask,
                latent: latent_image.shallow_clone(),
                noise,
                keep_clean: net.keeps_clean_latent(),
                differential,
            };
            sample(
                sampler,
                options,
                &mut inpaint,
                x,
                sigmas,
                &mut step_noise,
                &mut cb,
            )?
        }
        None => sample(
            sampler,
            options,
            guider,
            x,
            sigmas,
            &mut step_noise,
            &mut cb,
        )?,
    };
    drop(step_noise);
    Ok(finished(guider, samples, last_denoised, sigmas, format))
}

/// A step cache's sampling run (ComfyUI's OUTER_SAMPLE wrapper): fresh state at the start, the
/// skip count logged and the state dropped at the end, however sampling ends.
struct CacheRun<'a> {
    cache: &'a StepCache,
    steps: usize,
}

impl<'a> CacheRun<'a> {
    fn begin(cache: &'a StepCache, sampling: &ModelSampling, steps: usize) -> Self {
        cache.begin(sampling);
        CacheRun { cache, steps }
    }
}

impl Drop for CacheRun<'_> {
    fn drop(&mut self) {
        self.cache.finish(self.steps);
    }
}

/// The sampled latent (and last estimate) unscaled, back in the VAE's space on the host.
fn finished(
    guider: &Guider,
    samples: Tensor,
    last_denoised: Option<Tensor>,
    sigmas: &[f64],
    format: Option<&LatentFormat>,
) -> Sampled {
    let ms = &guider.model().sampling;
    let last = Tensor::full(
        [samples.size()[0]],
        *sigmas.last().expect("non-empty"),
        (samples.kind(), samples.device()),
    );
    let samples = ms.inverse_noise_scaling(&last, &samples);
    let to_output = |t: Tensor| {
        let t = t.to_kind(Kind::Float);
        format
            .map_or(t.shallow_clone(), |f| f.process_out(&t))
            .to_device(tch::Device::Cpu)
    };
    let samples = match &guider.model().fixed_start {
        Some(start) => start.output(to_output(samples)),
        None => to_output(samples),
    };
    Sampled {
        samples,
        denoised: last_denoised.map(to_output),
    }
}
