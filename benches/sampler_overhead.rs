//! The sampling stack's own cost per step on the GPU, for every sampler, at a Wan 2.1 480p × 81
//! frame latent ([1, 16, 21, 60, 104], float32) on a flow schedule (shift 8, "simple", 20 steps).
//! A one-kernel analytic denoiser stands in for the network, so the figures are what the
//! samplers add on top of the model's forwards. Run: `cargo bench --bench sampler_overhead`.

use std::time::Instant;

use anyhow::Result;
use tch::{Device, Kind, Tensor};
use videosdgx::sampling::model_sampling::{ModelSampling, Prediction, Schedule};
use videosdgx::sampling::noise::StepNoise;
use videosdgx::sampling::sampler_options::SamplerOptions;
use videosdgx::sampling::samplers::{sample, Denoiser, SAMPLER_NAMES};
use videosdgx::sampling::schedulers::calculate_sigmas;

/// `x₀ = 0.9·x`, counting its evaluations.
struct Analytic {
    calls: usize,
}

impl Denoiser for Analytic {
    fn denoise(&mut self, x: &Tensor, _sigma: f64) -> Result<Tensor> {
        self.calls += 1;
        Ok(x * 0.9)
    }
    fn is_flow(&self) -> bool {
        true
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn main() -> Result<()> {
    let _guard = tch::no_grad_guard();
    let device = Device::cuda_if_available();
    let ms = ModelSampling::new(
        Prediction::Flow,
        Schedule::Flow {
            shift: 8.0,
            multiplier: 1000.0,
        },
    );
    let steps = 20;
    let sigmas = Vec::<f64>::try_from(calculate_sigmas(&ms, "simple", steps)?)?;
    let x = Tensor::randn([1, 16, 21, 60, 104], (Kind::Float, device));
    println!("device: {device:?}, latent {:?}, {steps} steps", x.size());
    println!("| sampler | ms/step | model calls/step | ms/step beyond the model calls |");
    println!("| --- | --- | --- | --- |");
    // One bare model call (after warm-up), to subtract.
    let mut probe = Analytic { calls: 0 };
    let mut time_calls = |n: usize| -> Result<f64> {
        let t = Instant::now();
        for _ in 0..n {
            drop(probe.denoise(&x, 1.0)?);
        }
        sync(device);
        Ok(t.elapsed().as_secs_f64() * 1000.0 / n as f64)
    };
    time_calls(20)?;
    let call_ms = time_calls(200)?;
    for name in SAMPLER_NAMES {
        let mut noise = StepNoise::seeded(0, device);
        let mut model = Analytic { calls: 0 };
        let warm = sample(
            name,
            &SamplerOptions::default(),
            &mut model,
            x.copy(),
            &sigmas[..4],
            &mut noise,
            &mut |_, _, _| Ok(()),
        )?;
        drop(warm);
        sync(device);
        let mut model = Analytic { calls: 0 };
        let t = Instant::now();
        let out = sample(
            name,
            &SamplerOptions::default(),
            &mut model,
            x.copy(),
            &sigmas,
            &mut noise,
            &mut |_, _, _| Ok(()),
        )?;
        sync(device);
        let ms_step = t.elapsed().as_secs_f64() * 1000.0 / steps as f64;
        drop(noise);
        let calls = model.calls as f64 / steps as f64;
        assert!(
            out.isfinite().all().int64_value(&[]) == 1,
            "{name} produced non-finite values"
        );
        println!(
            "| {name} | {ms_step:.2} | {calls:.2} | {:.2} |",
            ms_step - calls * call_ms
        );
    }
    println!("one model call (x·0.9): {call_ms:.3} ms");
    Ok(())
}
