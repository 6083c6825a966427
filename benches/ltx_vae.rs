//! The LTX-2 video VAE on a CUDA GPU at full width: random bfloat16 weights in the layout
//! ComfyUI assumes for a 0.9.5/LTX-2 VAE file without a config (128 → 2048-channel encoder,
//! 1024 → 128-channel timestep-conditioned decoder), written here. First the GPU's bfloat16
//! decode against the CPU's float32 on a small latent, then the seconds and peak GPU memory of
//! the templates' decodes (121 frames at 704×1280 in one piece, 81 at 480×832) and encodes.
//!
//! Usage: `ltx_vae DIR` (DIR takes the 2.6 GB weights file).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};
use videosdgx::models::ltx::vae_config::VaeConfig;
use videosdgx::models::ltx::video_vae::LtxVideoVae;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::accel::{allocator_stats, empty_cache, reset_peak};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

const GPU: Device = Device::Cuda(0);

type Layout = Vec<(String, Vec<i64>)>;

fn conv(l: &mut Layout, name: &str, cin: i64, cout: i64) {
    l.push((format!("{name}.conv.weight"), vec![cout, cin, 3, 3, 3]));
    l.push((format!("{name}.conv.bias"), vec![cout]));
}

fn res_blocks(l: &mut Layout, name: &str, n: usize, c: i64, timestep: bool) {
    for i in 0..n {
        let b = format!("{name}.res_blocks.{i}");
        conv(l, &format!("{b}.conv1"), c, c);
        conv(l, &format!("{b}.conv2"), c, c);
        if timestep {
            l.push((format!("{b}.scale_shift_table"), vec![4, c]));
        }
    }
    if timestep {
        embedder(l, &format!("{name}.time_embedder"), 4 * c);
    }
}

fn embedder(l: &mut Layout, name: &str, out: i64) {
    let e = format!("{name}.timestep_embedder");
    l.push((format!("{e}.linear_1.weight"), vec![out, 256]));
    l.push((format!("{e}.linear_1.bias"), vec![out]));
    l.push((format!("{e}.linear_2.weight"), vec![out, out]));
    l.push((format!("{e}.linear_2.bias"), vec![out]));
}

/// ComfyUI's version-2 default: encoder `res_x 4, space, res_x 6, time, res_x 6, all, res_x 2,
/// all, res_x 2` doubling from 128; decoder `res_x 5` and three ×2 depth-to-space steps down
/// from 1024, every residual group timestep-conditioned.
fn layout() -> Layout {
    let mut l = Layout::new();
    conv(&mut l, "encoder.conv_in", 48, 128);
    let mut c = 128;
    let encoder: [(usize, i64); 5] = [(4, 4), (6, 2), (6, 8), (2, 8), (2, 0)];
    for (k, (layers, fold)) in encoder.into_iter().enumerate() {
        res_blocks(
            &mut l,
            &format!("encoder.down_blocks.{}", 2 * k),
            layers,
            c,
            false,
        );
        if fold > 0 {
            conv(
                &mut l,
                &format!("encoder.down_blocks.{}.conv", 2 * k + 1),
                c,
                2 * c / fold,
            );
            c *= 2;
        }
    }
    conv(&mut l, "encoder.conv_out", c, 129);
    let mut c = 1024;
    conv(&mut l, "decoder.conv_in", 128, c);
    for k in 0..4 {
        res_blocks(&mut l, &format!("decoder.up_blocks.{}", 2 * k), 5, c, true);
        if k < 3 {
            conv(
                &mut l,
                &format!("decoder.up_blocks.{}.conv", 2 * k + 1),
                c,
                4 * c,
            );
            c /= 2;
        }
    }
    conv(&mut l, "decoder.conv_out", c, 48);
    embedder(&mut l, "decoder.last_time_embedder", 2 * c);
    l.push(("decoder.last_scale_shift_table".into(), vec![2, c]));
    l.push(("decoder.timestep_scale_multiplier".into(), vec![]));
    l.push(("per_channel_statistics.mean-of-means".into(), vec![128]));
    l.push(("per_channel_statistics.std-of-means".into(), vec![128]));
    l
}

fn write_weights(path: &Path) -> Result<u64> {
    let mut params = 0;
    let tensors: Vec<(String, Tensor)> = layout()
        .into_iter()
        .map(|(name, shape)| {
            params += shape.iter().product::<i64>() as u64;
            let t = if name.ends_with("timestep_scale_multiplier") {
                Tensor::from(1000.0f32)
            } else if name.ends_with("std-of-means") {
                Tensor::rand([128], (Kind::Float, Device::Cpu)) + 0.5
            } else {
                let fan_in: i64 = shape[1..].iter().product::<i64>().max(1);
                Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu))
                    * (0.5 / (fan_in as f64).sqrt())
            };
            (name, t.to_kind(Kind::BFloat16))
        })
        .collect();
    Tensor::write_safetensors(&tensors, path)?;
    Ok(params)
}

fn load(file: &SafetensorsFile, kind: Kind, device: Device) -> Result<LtxVideoVae> {
    let weights = Weights::new(file, "", kind, device)?;
    LtxVideoVae::load(&weights, VaeConfig::new(None, 2)?)
}

/// Seconds of one run after a warm-up, and the peak GPU bytes.
fn timed(mut run: impl FnMut() -> Tensor) -> (f64, f64) {
    drop(run());
    tch::Cuda::synchronize(0);
    empty_cache();
    reset_peak(0);
    let start = Instant::now();
    drop(run());
    tch::Cuda::synchronize(0);
    let peak = allocator_stats(0).map_or(0, |s| s.peak_allocated);
    (start.elapsed().as_secs_f64(), peak as f64 / 1e9)
}

fn main() -> Result<()> {
    let _guard = tch::no_grad_guard();
    let dir = std::env::args().nth(1).context("usage: ltx_vae DIR")?;
    let path = Path::new(&dir).join("ltx2_vae_random.safetensors");
    let params = write_weights(&path)?;
    println!("random LTX-2 VAE: {:.2}B parameters", params as f64 / 1e9);
    let file = SafetensorsFile::open(&path)?;

    let latent = Tensor::randn([1, 128, 2, 4, 4], (Kind::Float, Device::Cpu));
    let reference = load(&file, Kind::Float, Device::Cpu)?.decode(&latent);
    let gpu = load(&file, Kind::BFloat16, GPU)?;
    let ours = gpu
        .decode(&latent.to_device(GPU).to_kind(Kind::BFloat16))
        .to_kind(Kind::Float)
        .to_device(Device::Cpu);
    let rel = (&ours - &reference).norm().double_value(&[]) / reference.norm().double_value(&[]);
    println!("decode [1,128,2,4,4] → 9×128×128: GPU bf16 vs CPU f32 relative L2 {rel:.2e}");

    println!("| LTX-2 VAE (bf16, one piece) | seconds | peak GPU GB |");
    println!("| --- | --- | --- |");
    let gpu_randn = |shape: &[i64]| Tensor::randn(shape, (Kind::BFloat16, GPU));
    for (what, shape) in [
        ("decode 121 frames 704×1280", [1, 128, 16, 22, 40]),
        ("decode 81 frames 480×832", [1, 128, 11, 15, 26]),
    ] {
        let z = gpu_randn(&shape);
        let (s, gb) = timed(|| gpu.decode(&z));
        println!("| {what} | {s:.2} | {gb:.1} |");
    }
    for (what, frames) in [
        ("encode 1 frame 704×1280", 1),
        ("encode 121 frames 704×1280", 121),
    ] {
        let video = gpu_randn(&[1, 3, frames, 704, 1280]).clamp(-1.0, 1.0);
        let (s, gb) = timed(|| gpu.encode(&video));
        println!("| {what} | {s:.2} | {gb:.1} |");
    }
    Ok(())
}
