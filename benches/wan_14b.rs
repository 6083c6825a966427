//! Wan 14B diffusion-model step on the GPU from a file in ComfyUI's `fp8_scaled` layout (the
//! layout of `wan2.1_t2v_14B_fp8_scaled.safetensors` and of each Wan 2.2 A14B expert): random
//! weights written on that machine, loaded by the real loader (the scaled FP8 layers found in the
//! file, `_scaled_mm` on FP8 tensor cores). One CFG step (cond + uncond batched) at 832×480,
//! resident, and under `--lowvram` with a 6 GB budget for the blocks (the rest streamed from
//! pinned host memory), whose output must equal the resident model's: s/step and peak memory.
//! Run: `cargo bench --bench wan_14b` (BENCH_DIR picks where the 14 GB file goes).

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Result};
use safetensors::{Dtype, View};
use tch::{Device, Kind, Tensor};
mod common;

use common::timing::timed_steps;
use common::wan_1_3b::{flops, layout, measured_peaks, step_inputs};
use videosdgx::models::wan::dit::{WanConfig, WanModel};
use videosdgx::models::weights::Weights;
use videosdgx::runtime::accel::{allocator_stats, empty_cache};
use videosdgx::runtime::attention::prefer_cudnn_attention;
use videosdgx::runtime::manager::Placement;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

const CONFIG: WanConfig = WanConfig {
    dim: 5120,
    ffn_dim: 13824,
    freq_dim: 256,
    text_dim: 4096,
    in_dim: 16,
    out_dim: 16,
    num_heads: 40,
    num_layers: 40,
    i2v: false,
    vace: None,
    ref_conv_channels: None,
    camera_channels: None,
    sound: false,
    humo: false,
    animate: false,
    animate2: false,
    dancer: false,
    scail: None,
};

/// A tensor's bytes as the file stores them.
struct Stored {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Stored {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.data[..]).into()
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn stored(t: &Tensor, dtype: Dtype) -> Result<Stored> {
    // Flattened first: a scalar cannot be viewed as bytes.
    let flat = t.to_device(Device::Cpu).flatten(0, -1).contiguous();
    Ok(Stored {
        dtype,
        shape: t.size().iter().map(|&s| s as usize).collect(),
        data: Vec::<u8>::try_from(flat.view_dtype(Kind::Uint8))?,
    })
}

/// The block Linears ComfyUI's `fp8_scaled` files quantize.
fn quantized(name: &str) -> bool {
    name.starts_with("blocks.")
        && name.ends_with(".weight")
        && !name.contains("norm")
        && !name.contains("modulation")
}

/// Block Linears as float8_e4m3fn with a per-tensor `scale_weight` (amax / 448), the rest bf16,
/// and the `scaled_fp8` marker. Made on the GPU one tensor at a time (the float32 weights would
/// take 56 GB of host memory).
fn write_fp8_scaled(path: &Path) -> Result<()> {
    let device = Device::Cuda(0);
    let mut tensors = vec![(
        "scaled_fp8".to_string(),
        stored(&Tensor::empty([0], (Kind::Uint8, device)), Dtype::F8_E4M3)?,
    )];
    for (name, shape) in layout(&CONFIG) {
        let opts = (Kind::Float, device);
        let t = if name.contains("norm") && name.ends_with(".weight") {
            Tensor::ones(shape.as_slice(), opts)
        } else if shape.len() == 1 {
            Tensor::zeros(shape.as_slice(), opts)
        } else {
            let fan_in: i64 = shape[1..].iter().product();
            Tensor::randn(shape.as_slice(), opts) / (fan_in as f64).sqrt()
        };
        if quantized(&name) {
            let scale = t.abs().max() / 448.0;
            let fp8 = (&t / &scale).to_kind(Kind::Float8e4m3fn);
            let layer = name.trim_end_matches("weight");
            tensors.push((name.clone(), stored(&fp8, Dtype::F8_E4M3)?));
            tensors.push((format!("{layer}scale_weight"), stored(&scale, Dtype::F32)?));
        } else {
            tensors.push((name, stored(&t.to_kind(Kind::BFloat16), Dtype::BF16)?));
        }
    }
    let views = tensors.iter().map(|(n, s)| (n.clone(), s));
    safetensors::serialize_to_file(views, None, path)?;
    Ok(())
}

/// Seconds per step (mean of 2 after a warm-up), peak memory, and the warm-up's output.
fn step(model: &WanModel, frames: i64) -> Result<(f64, u64, Tensor)> {
    let (x, t, context) = step_inputs(frames);
    timed_steps(|| model.forward(&x, &t, &context, None))
}

fn main() -> Result<()> {
    ensure!(tch::Cuda::is_available(), "this bench needs a CUDA GPU");
    let _guard = tch::no_grad_guard();
    prefer_cudnn_attention()?;
    let device = Device::Cuda(0);
    let dir =
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let path = Path::new(&dir).join("wan_14b_fp8_scaled_bench.safetensors");
    let start = Instant::now();
    write_fp8_scaled(&path)?;
    println!(
        "random 14B fp8_scaled checkpoint ({:.1} GB) written in {:.1} s",
        std::fs::metadata(&path)?.len() as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );
    let file = SafetensorsFile::open(&path)?;
    let load = |resident_bytes| {
        // fp16 activations, as ComfyUI and the server compute Wan.
        let mut weights = Weights::new(&file, "", Kind::Half, device)?;
        weights.placement = Placement {
            device,
            resident_bytes,
        };
        let start = Instant::now();
        let model = WanModel::load(&weights, CONFIG.clone())?;
        tch::Cuda::synchronize(0);
        let held = allocator_stats(0).map_or(0, |s| s.allocated);
        println!(
            "<!-- loaded in {:.1} s, {} of 40 blocks resident, {:.1} GB on the GPU -->",
            start.elapsed().as_secs_f64(),
            model.resident_blocks(),
            held as f64 / 1e9
        );
        anyhow::Ok(model)
    };
    let (_, fp8_peak, attention_peak) = measured_peaks();
    println!("| placement | frames | s/step (CFG, batch 2) | peak GPU GB | roofline s | ratio |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut resident_outputs = Vec::new();
    for (label, budget) in [
        ("resident", u64::MAX),
        ("--lowvram, 6 GB of blocks", 6 << 30),
    ] {
        let model = load(budget)?;
        for (i, frames) in [33i64, 81].into_iter().enumerate() {
            let (seconds, peak, out) = step(&model, frames)?;
            let tokens = ((frames - 1) / 4 + 1) * 30 * 52;
            let (gemm, attention) = flops(&CONFIG, 2, tokens, 512);
            let roofline = gemm / fp8_peak + attention / attention_peak;
            println!(
                "| {label} | {frames} | {seconds:.3} | {:.1} | {roofline:.3} | {:.2} |",
                peak as f64 / 1e9,
                seconds / roofline
            );
            match resident_outputs.get(i) {
                None => resident_outputs.push(out),
                Some(expected) => ensure!(
                    out.equal(expected),
                    "the streamed model's output differs from the resident one's"
                ),
            }
        }
        drop(model);
        empty_cache();
    }
    println!("streamed outputs equal the resident model's");
    std::fs::remove_file(&path)?;
    Ok(())
}
