//! The `text_to_video_wan` template's work on the GPU at full size with random weights made
//! here: Wan 2.1 T2V 1.3B through the real loader and sampling path (UNETLoader's WanNet on the
//! model manager, ModelSamplingSD3 shift 8, KSampler uni_pc/simple, cfg 6, 30 steps, CFG
//! batched) at 832×480 and 33 / 81 frames, bf16 and fp8_e4m3fn_fast weights (both computed in
//! fp16, as ComfyUI and the server compute Wan); then VAEDecode of the result with the Wan 2.1
//! VAE. The text conditioning is random (UMT5-XXL's 512×4096 output shape, zeros after the
//! template's prompt lengths) so no 11 GB encoder is needed.
//! Reports s/step, VAE decode seconds, peak GPU memory, and the step's ratio to the roofline.
//! Run: `cargo bench --bench wan_workflow` (BENCH_DIR picks where the files go).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};
use videosdgx::models::diffusion_file::{DiffusionFile, WeightDtype};
use videosdgx::models::vae::Vae;
use videosdgx::models::wan::net::WanNet;
use videosdgx::runtime::accel::{allocator_stats, empty_cache, reset_peak};
use videosdgx::runtime::attention::prefer_cudnn_attention;
use videosdgx::runtime::manager::{MemoryConfig, ModelManager};
use videosdgx::sampling::guidance::Guider;
use videosdgx::sampling::ksampler::{ksampler_sigmas, sample_latent};
use videosdgx::sampling::model::{CondEntry, Conditioning, Latent, Model};
use videosdgx::sampling::model_sampling::{ModelSampling, Prediction, Schedule};
use videosdgx::sampling::noise::initial_noise;

use common::wan_1_3b::{
    flops, measured_peaks, vae_layout, write_checkpoint, write_random, CONFIG, PROMPT_TOKENS,
};

const STEPS: usize = 30;

/// A prompt's UMT5 output as CLIPTextEncode gives it: `tokens` random rows, zeros up to 512.
fn prompt(seed: i64, tokens: i64) -> Tensor {
    tch::manual_seed(seed);
    let context = Tensor::zeros([1, 512, 4096], (Kind::Float, Device::Cpu));
    context.narrow(1, 0, tokens).copy_(&Tensor::randn(
        [1, tokens, 4096],
        (Kind::Float, Device::Cpu),
    ));
    context
}

fn text(seed: i64, tokens: i64) -> Conditioning {
    Conditioning(vec![CondEntry::new(prompt(seed, tokens))])
}

fn peak_gb() -> f64 {
    allocator_stats(0).map_or(0.0, |s| s.peak_allocated as f64 / 1e9)
}

/// Seconds per step of the whole KSampler run, its peak memory, and the sampled latent.
fn sample(net: Arc<WanNet>, frames: i64) -> Result<(f64, f64, Tensor)> {
    let sampling = ModelSampling::new(
        Prediction::Flow,
        Schedule::Flow {
            shift: 8.0,
            multiplier: 1000.0,
        },
    );
    let model = Model::new(net, Arc::new(sampling));
    let steps = if frames < 33 { 2 } else { STEPS };
    let sigmas = ksampler_sigmas(&model.sampling, "simple", "uni_pc", steps, 1.0)?;
    let mut guider = Guider::Cfg {
        model,
        positive: text(1, PROMPT_TOKENS[0]),
        negative: text(2, PROMPT_TOKENS[1]),
        cfg: 6.0,
    };
    let shape = [1, 16, (frames - 1) / 4 + 1, 60, 104];
    let latent = Latent::new(Tensor::zeros(shape, (Kind::Float, Device::Cpu)));
    let noise = initial_noise(42, &shape, Kind::Float, None);
    tch::Cuda::synchronize(0);
    empty_cache();
    reset_peak(0);
    let start = Instant::now();
    let out = sample_latent(
        &mut guider,
        "uni_pc",
        &sigmas,
        &noise,
        &latent,
        Some(42),
        &mut |_, _, _| Ok(()),
    )?;
    tch::Cuda::synchronize(0);
    let seconds = start.elapsed().as_secs_f64() / steps as f64;
    Ok((seconds, peak_gb(), out.samples))
}

/// Seconds of one batched (cond + uncond) call of the network alone, for the sampler's share:
/// one latent and the two prompts, as KSampler batches them.
fn forward_only(net: &WanNet, frames: i64) -> Result<f64> {
    use videosdgx::sampling::model::DiffusionNet;
    let device = Device::Cuda(0);
    let x = Tensor::randn(
        [1, 16, (frames - 1) / 4 + 1, 60, 104],
        (Kind::Float, device),
    )
    .repeat([2, 1, 1, 1, 1]);
    let t = Tensor::from_slice(&[900.0f32, 900.0]).to_device(device);
    let prompts = [prompt(1, PROMPT_TOKENS[0]), prompt(2, PROMPT_TOKENS[1])];
    let cond = CondEntry::new(Tensor::cat(&prompts, 0).to_device(device));
    drop(net.forward(&x, &t, &cond)?);
    tch::Cuda::synchronize(0);
    let start = Instant::now();
    for _ in 0..5 {
        drop(net.forward(&x, &t, &cond)?);
    }
    tch::Cuda::synchronize(0);
    Ok(start.elapsed().as_secs_f64() / 5.0)
}

fn main() -> Result<()> {
    ensure!(tch::Cuda::is_available(), "this bench needs a CUDA GPU");
    let _guard = tch::no_grad_guard();
    // CUDNN_BENCHMARK=1: let cuDNN time its convolution algorithms (the VAE's 3-D convs).
    if std::env::var("CUDNN_BENCHMARK").is_ok_and(|v| v == "1") {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    prefer_cudnn_attention()?;
    let (bf16_peak, fp8_peak, attention_peak) = measured_peaks();
    let dir =
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dit_path = Path::new(&dir).join("wan2.1_t2v_1.3B_bench.safetensors");
    let vae_path = Path::new(&dir).join("wan_2.1_vae_bench.safetensors");
    write_checkpoint(&dit_path)?;
    write_random(&vae_layout(), &vae_path)?;
    let manager = Arc::new(ModelManager::new(Device::Cuda(0), MemoryConfig::default()));
    let vae = Vae::open(manager.clone(), &vae_path)?;

    println!("| weights | frames | s/step (30 steps, CFG) | peak GPU GB | roofline s | ratio | VAE decode s | decode peak GB |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, dtype, gemm_peak) in [
        ("bf16 file, fp16 compute", WeightDtype::Default, bf16_peak),
        (
            "fp8_e4m3fn_fast, fp16 compute",
            WeightDtype::Fp8E4m3fnFast,
            fp8_peak,
        ),
    ] {
        let file = DiffusionFile::open(manager.clone(), &dit_path, dtype)?;
        ensure!(file.dtype == Kind::Half, "Wan computes in {:?}", file.dtype);
        let net = Arc::new(WanNet::open(file)?);
        // Load (and cast) the weights and warm up the kernels outside the timed runs.
        drop(sample(net.clone(), 5)?);
        for frames in [33i64, 81] {
            let (seconds, peak_gb_sampling, latent) = sample(net.clone(), frames)?;
            println!(
                "<!-- {name} {frames}: network call alone {:.3} s -->",
                forward_only(&net, frames)?
            );
            let tokens = ((frames - 1) / 4 + 1) * 30 * 52;
            let (gemm, attention) = flops(&CONFIG, 2, tokens, 512);
            let roofline = gemm / gemm_peak + attention / attention_peak;
            // The decode runs with the DiT still resident, as in the template; the first call
            // of a shape lets cuDNN pick its convolution algorithms.
            drop(vae.decode(&latent)?);
            tch::Cuda::synchronize(0);
            reset_peak(0);
            let start = Instant::now();
            let images = vae.decode(&latent)?;
            tch::Cuda::synchronize(0);
            let decode = start.elapsed().as_secs_f64();
            ensure!(images.size()[0] == frames, "decoded {:?}", images.size());
            println!(
                "| {name} | {frames} | {seconds:.3} | {peak_gb_sampling:.1} | {roofline:.3} | {:.2} | {decode:.2} | {:.1} |",
                seconds / roofline,
                peak_gb()
            );
        }
        manager.unload_all();
        empty_cache();
    }
    std::fs::remove_file(&dit_path)?;
    std::fs::remove_file(&vae_path)?;
    Ok(())
}
