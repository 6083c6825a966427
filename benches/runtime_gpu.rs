//! The tensor runtime on the GPU: GEMM through our Linear at Wan 14B's 480p shape (bf16, FP8
//! `_scaled_mm` with and without the per-call activation quantization, NVFP4 dequantized, INT8
//! ConvRot through `_int_mm`), SDPA
//! at Wan's 480p attention shapes per backend order beside our Hopper kernel, and loading a
//! 2.8 GB fp16 file from the page cache to the GPU (GB/s and the loading process's peak RSS).
//! Run: `cargo bench --bench runtime_gpu` (torch's own figures: benches/torch_reference.py).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};
use videosdgx::runtime::accel::{set_sdp_priority, SdpBackend};
use videosdgx::runtime::attention_sm90;
use videosdgx::runtime::int8;
use videosdgx::runtime::linear::{Kernel, Linear, LinearWeight};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

fn sync() {
    tch::Cuda::synchronize(0);
}

/// Median milliseconds of `f` over `reps` runs after two warm-ups.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    sync();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            sync();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

fn gemm(device: Device) -> Result<()> {
    let (m, k, n) = (32760i64, 5120i64, 5120i64);
    let flops = 2.0 * (m * k * n) as f64;
    let tflops = |ms: f64| flops / (ms * 1e-3) / 1e12;
    let x = Tensor::randn([m, k], (Kind::BFloat16, device));
    let w = Tensor::randn([n, k], (Kind::BFloat16, device)) * 0.02;
    let dense = Linear::new(LinearWeight::Dense(w.shallow_clone()), None);
    let scale = w.abs().max().to_kind(Kind::Float) / 448.0;
    let fp8 = Linear::new(
        LinearWeight::Fp8 {
            weight: (&w / scale.to_kind(Kind::BFloat16)).to_kind(Kind::Float8e4m3fn),
            scale: scale.shallow_clone(),
            input_scale: None,
        },
        None,
    );
    let scaled = fp8.with_kernel(Kernel::ScaledMm);
    let LinearWeight::Fp8 { weight: w8, .. } = &scaled.weight else {
        unreachable!()
    };
    let x8 = x.clamp(-448.0, 448.0).to_kind(Kind::Float8e4m3fn);
    let one = Tensor::ones([], (Kind::Float, device));
    println!("GEMM M={m} K={k} N={n} (Wan 14B q/k/v/o at 480p x 81 frames)");
    println!("| path | ms | TFLOP/s |");
    println!("| --- | --- | --- |");
    let row = |name: &str, ms: f64| println!("| {name} | {ms:.3} | {:.1} |", tflops(ms));
    row(
        "bf16 Linear",
        time_ms(20, || drop(dense.forward(&x).unwrap())),
    );
    row(
        "fp8 Linear (_scaled_mm + activation quantization)",
        time_ms(20, || drop(scaled.forward(&x).unwrap())),
    );
    row(
        "fp8 _scaled_mm kernel alone",
        time_ms(20, || {
            drop(x8.internal_scaled_mm(
                &w8.tr(),
                &one,
                &scale,
                None::<&Tensor>,
                None::<&Tensor>,
                Kind::BFloat16,
                false,
            ))
        }),
    );
    let emulated = Linear::new(
        LinearWeight::Fp8 {
            weight: w8.shallow_clone(),
            scale: scale.shallow_clone(),
            input_scale: None,
        },
        None,
    );
    row(
        "fp8 Linear dequantized (GPUs without FP8)",
        time_ms(20, || drop(emulated.forward(&x).unwrap())),
    );
    // INT8 as in the Wan Animate 2 files: ConvRot in groups of 256, per-row scales.
    let (q, q_scale) = int8::quantize_convrot(&w, 256)?;
    let int8_layer = Linear::new(
        LinearWeight::Int8 {
            weight: q.shallow_clone(),
            scale: q_scale.shallow_clone(),
            convrot: Some(256),
        },
        None,
    );
    row(
        "int8 ConvRot Linear (rotation, row quantization, _int_mm, scales)",
        time_ms(20, || drop(int8_layer.forward(&x).unwrap())),
    );
    let x_q = x.clamp(-127.0, 127.0).to_kind(Kind::Int8);
    let wide = x_q.internal_int_mm(&q.tr().contiguous());
    ensure!(
        x_q.internal_int_mm(&q.tr()).equal(&wide),
        "_int_mm differs with the weight's transpose as a view"
    );
    row(
        "int8 _int_mm kernel alone (weight transposed as a view)",
        time_ms(20, || drop(x_q.internal_int_mm(&q.tr()))),
    );
    row(
        "int8 ConvRot dequantized to bf16, then bf16 Linear",
        time_ms(20, || {
            let dense = int8::dequantize(&q, &q_scale, Some(256), Kind::BFloat16).unwrap();
            drop(x.matmul(&dense.tr()))
        }),
    );
    Ok(())
}

fn sdpa(device: Device) -> Result<()> {
    use SdpBackend::*;
    println!("\nSDPA at 32760 tokens, head dim 128 (Wan 480p x 81 frames)");
    println!("| heads | backend order | ms | TFLOP/s | libtorch's choice |");
    println!("| --- | --- | --- | --- | --- |");
    for heads in [12i64, 40] {
        let (tokens, dim) = (32760i64, 128i64);
        let q = Tensor::randn([1, tokens, heads * dim], (Kind::BFloat16, device));
        let flops = 4.0 * (heads * tokens * tokens * dim) as f64;
        for (name, order) in [
            ("cuDNN first", [CuDnn, Flash, Efficient, Math, Overrideable]),
            ("flash first", [Flash, CuDnn, Efficient, Math, Overrideable]),
        ] {
            set_sdp_priority(&order)?;
            let split = q.view([1, tokens, heads, dim]).transpose(1, 2);
            let choice = Tensor::internal_fused_sdp_choice(
                &split,
                &split,
                &split,
                None::<&Tensor>,
                0.0,
                false,
                None,
                false,
            );
            let ms = time_ms(5, || {
                drop(Tensor::scaled_dot_product_attention(
                    &split,
                    &split,
                    &split,
                    None::<&Tensor>,
                    0.0,
                    false,
                    None,
                    false,
                ))
            });
            let tflops = flops / (ms * 1e-3) / 1e12;
            println!("| {heads} | {name} | {ms:.2} | {tflops:.0} | {choice} |");
        }
        let scale = (dim as f64).powf(-0.5);
        if attention_sm90::attention(&q, &q, &q, heads, scale, None).is_some() {
            let ms = time_ms(5, || {
                drop(attention_sm90::attention(&q, &q, &q, heads, scale, None))
            });
            let tflops = flops / (ms * 1e-3) / 1e12;
            println!("| {heads} | Hopper kernel (attention_sm90) | {ms:.2} | {tflops:.0} | – |");
        }
    }
    Ok(())
}

/// Peak resident set of this process (VmHWM), bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The child half of the load bench: every tensor of `path` to the GPU.
fn load_all(path: &Path) -> Result<()> {
    let device = Device::Cuda(0);
    let start = Instant::now();
    let file = SafetensorsFile::open(path)?;
    let names: Vec<String> = file.names().cloned().collect();
    let mut resident = BTreeMap::new();
    let mut bytes = 0usize;
    for name in names {
        let t = file.tensor(&name, device)?;
        bytes += t.numel() * t.kind().elt_size_in_bytes();
        resident.insert(name, t);
    }
    sync();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\": {bytes}, \"seconds\": {secs:.3}, \"peak_rss\": {}}}",
        peak_rss()
    );
    Ok(())
}

fn load(dir: &Path) -> Result<()> {
    // Wan 2.1 1.3B-like: 30 blocks of 1536-wide layers in fp16, ~2.8 GB.
    let path = dir.join("load_bench.safetensors");
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for block in 0..30 {
        for (name, rows, cols) in [
            ("self_attn.qkvo", 4 * 1536, 1536),
            ("cross_attn.qkvo", 4 * 1536, 1536),
            ("ffn.0", 8960, 1536),
            ("ffn.2", 1536, 8960),
        ] {
            let t = Tensor::randn([rows, cols], (Kind::Half, Device::Cpu));
            tensors.push((format!("blocks.{block}.{name}.weight"), t));
        }
    }
    let bytes: usize = tensors.iter().map(|(_, t)| t.numel() * 2).sum();
    Tensor::write_safetensors(&tensors, &path)?;
    drop(tensors);
    // Warm the page cache the way a second load of the same model finds it.
    std::io::copy(&mut std::fs::File::open(&path)?, &mut std::io::sink())?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--load")
        .arg(&path)
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let seconds = report["seconds"].as_f64().unwrap_or(f64::NAN);
    let rss = report["peak_rss"].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nLoad {:.2} GB fp16 (page cache) -> cuda:0: {seconds:.2} s, {:.2} GB/s, peak RSS {:.2} GB = {:.2}x the file",
        bytes as f64 / 1e9,
        bytes as f64 / 1e9 / seconds,
        rss / 1e9,
        rss / bytes as f64
    );
    std::fs::remove_file(&path)?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--load") {
        return load_all(Path::new(&args[i + 1]));
    }
    let _guard = tch::no_grad_guard();
    ensure!(tch::Cuda::is_available(), "this bench needs a CUDA GPU");
    let device = Device::Cuda(0);
    let cc = videosdgx::system::compute_capability(0);
    println!(
        "device: {:?}, compute capability {cc:?}",
        videosdgx::system::cuda_device(0).map(|d| d.name)
    );
    gemm(device)?;
    sdpa(device)?;
    let dir =
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    load(Path::new(&dir))?;
    Ok(())
}
