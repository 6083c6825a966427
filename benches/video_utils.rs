//! The video utility models on a CUDA GPU: the upscale models (ImageUpscaleWithModel) and the
//! frame interpolation models (FrameInterpolate) against their CPU references, then their speed
//! at full size on 832×480 frames (Wan's 480p) with random weights written here.
//!
//! Usage: `video_utils FIXTURES` where FIXTURES holds `up/`, `rife/` and `film/`, the folders
//! tests/python/upscale_reference.py, frame_interp_reference.py and film_reference.py write
//! (`rife/` needs only `rife_v4.26.safetensors` and `io.safetensors`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use tch::{Device, Kind, Tensor};
use videosdgx::models::frame_interp::InterpModel;
use videosdgx::models::upscale::{UpscaleModel, TILE};
use videosdgx::runtime::accel::{allocator_stats, empty_cache, reset_peak};
use videosdgx::runtime::manager::{MemoryConfig, ModelManager};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

const GPU: Device = Device::Cuda(0);
const WIDTH: i64 = 832;
const HEIGHT: i64 = 480;

fn manager() -> Arc<ModelManager> {
    Arc::new(ModelManager::new(GPU, MemoryConfig::default()))
}

fn io(dir: &Path) -> Result<SafetensorsFile> {
    SafetensorsFile::open(&dir.join("io.safetensors"))
}

/// Max and mean absolute difference.
fn error(ours: &Tensor, reference: &Tensor) -> (f64, f64) {
    let d = (ours - reference).abs();
    (
        d.max().double_value(&[]),
        d.mean(Kind::Double).double_value(&[]),
    )
}

fn accuracy(fixtures: &Path) -> Result<()> {
    println!("| model | input | max abs error vs CPU reference | mean |");
    println!("| --- | --- | --- | --- |");
    let up = fixtures.join("up");
    let io_up = io(&up)?;
    for name in [
        "esrgan_x4",
        "realesrgan_x4",
        "realesrgan_x2",
        "bsrgan_x2",
        "esrgan_plus_x1",
        "compact_x4",
    ] {
        let model = UpscaleModel::open(manager(), &up.join(format!("{name}.safetensors")))?;
        for input in ["wide", "small"] {
            let ours = model.upscale(&io_up.tensor(input, Device::Cpu)?, TILE, &mut || Ok(()))?;
            let reference = io_up.tensor(&format!("{name}_{input}"), Device::Cpu)?;
            let (max, mean) = error(&ours, &reference);
            println!("| {name} (float32) | {input} | {max:.2e} | {mean:.2e} |");
        }
    }
    for (dir, file, multiplier, expected) in [
        ("rife", "rife_v4.26.safetensors", 3, "rife_x3"),
        ("film", "film_net.safetensors", 3, "film_x3"),
    ] {
        let dir = fixtures.join(dir);
        let io = io(&dir)?;
        let model = InterpModel::open(manager(), &dir.join(file))?;
        let ours = model.interpolate(
            &io.tensor("frames", Device::Cpu)?,
            multiplier,
            &mut |_, _| Ok(()),
        )?;
        let (max, mean) = error(&ours, &io.tensor(expected, Device::Cpu)?);
        println!("| {file} (fp16) | ×{multiplier} | {max:.2e} | {mean:.2e} |");
    }
    Ok(())
}

type Layout = Vec<(String, Vec<i64>)>;

fn conv(layout: &mut Layout, name: &str, cin: i64, cout: i64, k: i64) {
    layout.push((format!("{name}.weight"), vec![cout, cin, k, k]));
    layout.push((format!("{name}.bias"), vec![cout]));
}

/// RealESRGAN_x4plus: 64 features, 23 RRDB blocks, Real-ESRGAN's key names.
fn realesrgan_x4plus() -> Layout {
    let mut l = Layout::new();
    conv(&mut l, "conv_first", 3, 64, 3);
    for b in 0..23 {
        for r in 1..=3 {
            for c in 1..=5 {
                let out = if c == 5 { 64 } else { 32 };
                conv(
                    &mut l,
                    &format!("body.{b}.rdb{r}.conv{c}"),
                    64 + 32 * (c - 1),
                    out,
                    3,
                );
            }
        }
    }
    for name in ["conv_body", "conv_up1", "conv_up2", "conv_hr"] {
        conv(&mut l, name, 64, 64, 3);
    }
    conv(&mut l, "conv_last", 64, 3, 3);
    l
}

/// FILM at the released size (ComfyUI's `FILMNet()` defaults), ComfyUI's key names.
fn film_net() -> Layout {
    let filters = 64;
    let features = |level: i64| (0..(level + 1).min(4)).map(|j| filters << j).sum::<i64>();
    let mut l = Layout::new();
    let mut cin = 3;
    for i in 0..4 {
        let name = format!("extract.extract_sublevels.convs.{i}");
        conv(&mut l, &format!("{name}.0.conv"), cin, filters << i, 3);
        conv(
            &mut l,
            &format!("{name}.1.conv"),
            filters << i,
            filters << i,
            3,
        );
        cin = filters << i;
    }
    let flow_filters = [32, 64, 128, 256];
    let estimator = |l: &mut Layout, name: &str, level: i64| {
        let width = flow_filters[level as usize];
        let mut cin = 2 * features(level);
        for k in 0..3 {
            conv(l, &format!("{name}._convs.{k}.conv"), cin, width, 3);
            cin = width;
        }
        conv(l, &format!("{name}._convs.3.conv"), width, width / 2, 1);
        conv(l, &format!("{name}._convs.4.conv"), width / 2, 2, 1);
    };
    estimator(&mut l, "predict_flow._predictor", 3);
    for level in 0..3 {
        estimator(
            &mut l,
            &format!("predict_flow._predictors.{}", 2 - level),
            level,
        );
    }
    let aligned = |level: i64| 2 * (3 + features(level)) + 4;
    let mut below = aligned(4);
    for (k, level) in (0..4).rev().enumerate() {
        let width = filters << level.min(3);
        conv(&mut l, &format!("fuse.convs.{k}.0.conv"), below, width, 2);
        conv(
            &mut l,
            &format!("fuse.convs.{k}.1.conv"),
            aligned(level) + width,
            width,
            3,
        );
        conv(&mut l, &format!("fuse.convs.{k}.2.conv"), width, width, 3);
        below = width;
    }
    conv(&mut l, "fuse.output_conv", filters, 3, 1);
    l
}

fn write_checkpoint(layout: &Layout, path: &Path) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = layout
        .iter()
        .map(|(name, shape)| {
            let fan_in: i64 = shape[1..].iter().product::<i64>().max(1);
            let t = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu))
                * (0.5 / (fan_in as f64).sqrt());
            (name.clone(), t.to_kind(Kind::Half))
        })
        .collect();
    Tensor::write_safetensors(&tensors, path)?;
    Ok(())
}

/// 832×480 frames of a pattern that moves a little from frame to frame.
fn frames(n: i64) -> Tensor {
    let x = Tensor::arange(WIDTH, (Kind::Float, Device::Cpu)).view([1, 1, WIDTH, 1]);
    let y = Tensor::arange(HEIGHT, (Kind::Float, Device::Cpu)).view([1, HEIGHT, 1, 1]);
    let t = Tensor::arange(n, (Kind::Float, Device::Cpu)).view([n, 1, 1, 1]);
    let c = Tensor::from_slice(&[0.0f32, 2.0, 4.0]).view([1, 1, 1, 3]);
    (((x + t * 3.0) / 40.0 + c).sin() * (y / 55.0).cos() * 0.4 + 0.5).contiguous()
}

/// Seconds of one run after a warm-up, and the peak GPU bytes.
fn timed(mut run: impl FnMut() -> Result<Tensor>) -> Result<(f64, u64)> {
    drop(run()?);
    tch::Cuda::synchronize(0);
    empty_cache();
    reset_peak(0);
    let start = Instant::now();
    drop(run()?);
    tch::Cuda::synchronize(0);
    let peak = allocator_stats(0).map_or(0, |s| s.peak_allocated);
    Ok((start.elapsed().as_secs_f64(), peak))
}

fn speed(fixtures: &Path, dir: &Path) -> Result<()> {
    println!();
    println!("| model (832×480) | work | seconds | per frame made | peak GPU GB |");
    println!("| --- | --- | --- | --- | --- |");
    let gb = |b: u64| b as f64 / 1e9;
    let upscaler = dir.join("RealESRGAN_x4plus.safetensors");
    write_checkpoint(&realesrgan_x4plus(), &upscaler)?;
    let model = UpscaleModel::open(manager(), &upscaler)?;
    let input = frames(8);
    let (s, peak) = timed(|| model.upscale(&input, TILE, &mut || Ok(())))?;
    println!(
        "| RealESRGAN_x4plus (float32, 2 tiles a frame) | 8 frames → 3328×1920 | {s:.2} | {:.3} s | {:.1} |",
        s / 8.0,
        gb(peak)
    );
    let film = dir.join("film_net_fp16.safetensors");
    write_checkpoint(&film_net(), &film)?;
    for (name, path, n) in [
        (
            "RIFE 4.26 (fp16)",
            fixtures.join("rife/rife_v4.26.safetensors"),
            33,
        ),
        ("FILM (fp16)", film, 9),
    ] {
        let model = InterpModel::open(manager(), &path)?;
        let input = frames(n);
        let (s, peak) = timed(|| model.interpolate(&input, 2, &mut |_, _| Ok(())))?;
        let made = n - 1;
        println!(
            "| {name} | {n} frames ×2 → {} | {s:.2} | {:.3} s | {:.1} |",
            2 * made + 1,
            s / made as f64,
            gb(peak)
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    ensure!(tch::Cuda::is_available(), "this bench needs a CUDA GPU");
    let _guard = tch::no_grad_guard();
    let fixtures = std::env::args()
        .nth(1)
        .context("usage: video_utils FIXTURES")?;
    let fixtures = Path::new(&fixtures);
    accuracy(fixtures)?;
    let dir = tempfile::tempdir()?;
    speed(fixtures, dir.path())
}
