//! Wan 2.1 VACE 1.3B diffusion-model step on the GPU (the layout of
//! `wan2.1_vace_1.3B_fp16.safetensors`: the T2V 1.3B model plus 15 control blocks, one after
//! every second main block, fed by a 96-channel patch embedding): random weights written on that
//! machine, loaded by the real loader, computed in fp16 as ComfyUI and the server run Wan. One
//! CFG step (cond + uncond batched, one control at strength 1) at 832×480: s/step, peak memory,
//! the roofline, and the distance of the output to a float32 forward of the same weights.
//! Run: `cargo bench --bench wan_vace` (BENCH_DIR picks where the checkpoint goes).

use std::path::Path;

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};
mod common;

use common::timing::timed_steps;
use common::wan_1_3b::{
    block_layout, flops, layout, measured_peaks, step_inputs, write_random, CONFIG,
};
use videosdgx::models::wan::dit::{Conditions, VaceConfig, WanConfig, WanModel};
use videosdgx::models::weights::Weights;
use videosdgx::runtime::accel::empty_cache;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

const VACE: VaceConfig = VaceConfig {
    layers: 15,
    in_dim: 96,
};

fn config() -> WanConfig {
    WanConfig {
        vace: Some(VACE),
        ..CONFIG
    }
}

/// The T2V keys, the control patch embedding and the control blocks (the first with its
/// `before_proj`, each with its `after_proj`).
fn vace_layout(c: &WanConfig) -> Vec<(String, Vec<i64>)> {
    let d = c.dim;
    let mut keys = layout(c);
    keys.push((
        "vace_patch_embedding.weight".into(),
        vec![d, VACE.in_dim, 1, 2, 2],
    ));
    keys.push(("vace_patch_embedding.bias".into(), vec![d]));
    for n in 0..VACE.layers {
        let b = format!("vace_blocks.{n}");
        keys.extend(block_layout(&b, c));
        let projections = if n == 0 {
            &["before_proj", "after_proj"][..]
        } else {
            &["after_proj"][..]
        };
        for p in projections {
            keys.push((format!("{b}.{p}.weight"), vec![d, d]));
            keys.push((format!("{b}.{p}.bias"), vec![d]));
        }
    }
    keys
}

/// The control of `WanVaceToVideo` as the model takes it: 32 latent channels (inactive and
/// reactive) and the 64-channel mask, `[2, 1, 96, t, 60, 104]`, the same for cond and uncond.
fn control(frames: i64, dtype: Kind) -> Tensor {
    let latent_frames = (frames - 1) / 4 + 1;
    let device = Device::Cuda(0);
    let latents =
        Tensor::randn([1, 1, 32, latent_frames, 60, 104], (Kind::Float, device)).to_kind(dtype);
    let mask = Tensor::ones([1, 1, 64, latent_frames, 60, 104], (dtype, device));
    Tensor::cat(&[latents, mask], 2).repeat([2, 1, 1, 1, 1, 1])
}

/// The forward at `frames` with one control at strength 1, in `dtype` inputs.
fn forward(model: &WanModel, frames: i64, dtype: Kind) -> Result<Tensor> {
    let (x, t, context) = step_inputs(frames);
    tch::manual_seed(frames + 1);
    let controls = control(frames, dtype);
    let conditions = Conditions {
        vace: Some((&controls, &[1.0])),
        ..Conditions::default()
    };
    model.forward_with(&x.to_kind(dtype), &t, &context.to_kind(dtype), &conditions)
}

fn main() -> Result<()> {
    ensure!(tch::Cuda::is_available(), "this bench needs a CUDA GPU");
    let _guard = tch::no_grad_guard();
    let device = Device::Cuda(0);
    let dir =
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let path = Path::new(&dir).join("wan_vace_1_3b_bench.safetensors");
    let c = config();
    write_random(&vace_layout(&c), &path)?;
    let file = SafetensorsFile::open(&path)?;
    let load = |dtype| WanModel::load(&Weights::new(&file, "", dtype, device)?, config());

    let (gemm_peak, _, attention_peak) = measured_peaks();
    println!("| frames | s/step (CFG, batch 2) | peak GPU GB | roofline s | ratio |");
    println!("| --- | --- | --- | --- | --- |");
    let model = load(Kind::Half)?;
    let mut outputs = Vec::new();
    for frames in [33i64, 81] {
        let (seconds, peak, out) = timed_steps(|| forward(&model, frames, Kind::Half))?;
        let tokens = ((frames - 1) / 4 + 1) * 30 * 52;
        // The control blocks are blocks of the same width; their projections add 16 d×d GEMMs.
        let all = WanConfig {
            num_layers: c.num_layers + VACE.layers,
            ..c.clone()
        };
        let (gemm, attention) = flops(&all, 2, tokens, 512);
        let projections =
            2.0 * 2.0 * (VACE.layers + 1) as f64 * tokens as f64 * (c.dim * c.dim) as f64;
        let roofline = (gemm + projections) / gemm_peak + attention / attention_peak;
        println!(
            "| {frames} | {seconds:.3} | {:.1} | {roofline:.3} | {:.2} |",
            peak as f64 / 1e9,
            seconds / roofline
        );
        outputs.push(out);
    }
    drop(model);
    empty_cache();
    let reference = forward(&load(Kind::Float)?, 33, Kind::Float)?;
    let out = outputs[0].to_kind(Kind::Float);
    let distance = ((&out - &reference).norm() / reference.norm()).double_value(&[]);
    println!("33 frames, fp16 against the float32 forward: relative distance {distance:.2e}");
    std::fs::remove_file(&path)?;
    Ok(())
}
