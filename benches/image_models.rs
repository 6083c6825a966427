//! FLUX.1-dev and SDXL base diffusion models on the GPU at full size with random weights made
//! here (written to safetensors files under ComfyUI's key names and loaded by the real loader),
//! in the precision the server and ComfyUI pick (FLUX bf16, SDXL fp16), 1024×1024: FLUX one
//! forward per step (cfg 1, 256 T5 tokens), SDXL one forward of the
//! batched cond + uncond per step (cfg > 1, 77 tokens); s/step over 20 steps, peak GPU memory
//! and for FLUX the GEMM + attention FLOP rate.
//! Run: `cargo bench --bench image_models` (BENCH_DIR picks where the 24 + 5 GB files go).

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

use videosdgx::models::flux::dit::{FluxConfig, FluxModel};
use videosdgx::models::sdxl::unet::Unet;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::accel::{allocator_stats, empty_cache, reset_peak};
use videosdgx::runtime::attention::prefer_cudnn_attention;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

const STEPS: usize = 20;
const GPU: Device = Device::Cuda(0);

type Layout = Vec<(String, Vec<i64>)>;

fn linear(keys: &mut Layout, name: &str, out: i64, inp: i64, bias: bool) {
    keys.push((format!("{name}.weight"), vec![out, inp]));
    if bias {
        keys.push((format!("{name}.bias"), vec![out]));
    }
}

fn vector(keys: &mut Layout, name: &str, n: i64) {
    keys.push((name.to_string(), vec![n]));
}

/// FLUX.1-dev: 19 double and 38 single blocks of width 3072.
fn flux_layout() -> Layout {
    let (h, mut k) = (3072, Vec::new());
    linear(&mut k, "img_in", h, 64, true);
    linear(&mut k, "txt_in", h, 4096, true);
    for (name, input) in [("time_in", 256), ("guidance_in", 256), ("vector_in", 768)] {
        linear(&mut k, &format!("{name}.in_layer"), h, input, true);
        linear(&mut k, &format!("{name}.out_layer"), h, h, true);
    }
    for n in 0..19 {
        for s in ["img", "txt"] {
            let p = format!("double_blocks.{n}.{s}");
            linear(&mut k, &format!("{p}_mod.lin"), 6 * h, h, true);
            linear(&mut k, &format!("{p}_attn.qkv"), 3 * h, h, true);
            vector(&mut k, &format!("{p}_attn.norm.query_norm.scale"), 128);
            vector(&mut k, &format!("{p}_attn.norm.key_norm.scale"), 128);
            linear(&mut k, &format!("{p}_attn.proj"), h, h, true);
            linear(&mut k, &format!("{p}_mlp.0"), 4 * h, h, true);
            linear(&mut k, &format!("{p}_mlp.2"), h, 4 * h, true);
        }
    }
    for n in 0..38 {
        let p = format!("single_blocks.{n}");
        linear(&mut k, &format!("{p}.modulation.lin"), 3 * h, h, true);
        linear(&mut k, &format!("{p}.linear1"), 7 * h, h, true);
        linear(&mut k, &format!("{p}.linear2"), h, 5 * h, true);
        vector(&mut k, &format!("{p}.norm.query_norm.scale"), 128);
        vector(&mut k, &format!("{p}.norm.key_norm.scale"), 128);
    }
    linear(&mut k, "final_layer.adaLN_modulation.1", 2 * h, h, true);
    linear(&mut k, "final_layer.linear", 64, h, true);
    k
}

fn conv(keys: &mut Layout, name: &str, out: i64, inp: i64, size: i64) {
    keys.push((format!("{name}.weight"), vec![out, inp, size, size]));
    keys.push((format!("{name}.bias"), vec![out]));
}

fn norm(keys: &mut Layout, name: &str, n: i64) {
    vector(keys, &format!("{name}.weight"), n);
    vector(keys, &format!("{name}.bias"), n);
}

fn res_block(k: &mut Layout, p: &str, cin: i64, cout: i64) {
    norm(k, &format!("{p}.in_layers.0"), cin);
    conv(k, &format!("{p}.in_layers.2"), cout, cin, 3);
    linear(k, &format!("{p}.emb_layers.1"), cout, 1280, true);
    norm(k, &format!("{p}.out_layers.0"), cout);
    conv(k, &format!("{p}.out_layers.3"), cout, cout, 3);
    if cin != cout {
        conv(k, &format!("{p}.skip_connection"), cout, cin, 1);
    }
}

fn spatial_transformer(k: &mut Layout, p: &str, c: i64, depth: i64) {
    norm(k, &format!("{p}.norm"), c);
    linear(k, &format!("{p}.proj_in"), c, c, true);
    for b in 0..depth {
        let t = format!("{p}.transformer_blocks.{b}");
        for (attn, context) in [("attn1", c), ("attn2", 2048)] {
            linear(k, &format!("{t}.{attn}.to_q"), c, c, false);
            linear(k, &format!("{t}.{attn}.to_k"), c, context, false);
            linear(k, &format!("{t}.{attn}.to_v"), c, context, false);
            linear(k, &format!("{t}.{attn}.to_out.0"), c, c, true);
        }
        for n in ["norm1", "norm2", "norm3"] {
            norm(k, &format!("{t}.{n}"), c);
        }
        linear(k, &format!("{t}.ff.net.0.proj"), 8 * c, c, true);
        linear(k, &format!("{t}.ff.net.2"), c, 4 * c, true);
    }
    linear(k, &format!("{p}.proj_out"), c, c, true);
}

/// SDXL base: channels 320 × [1, 2, 4], transformer depths [0, 2, 10], context 2048, ADM 2816.
fn sdxl_layout() -> Layout {
    let (mult, depth) = ([1i64, 2, 4], [0i64, 2, 10]);
    let mut k = Vec::new();
    linear(&mut k, "time_embed.0", 1280, 320, true);
    linear(&mut k, "time_embed.2", 1280, 1280, true);
    linear(&mut k, "label_emb.0.0", 1280, 2816, true);
    linear(&mut k, "label_emb.0.2", 1280, 1280, true);
    conv(&mut k, "input_blocks.0.0", 320, 4, 3);
    let (mut ch, mut skips, mut index) = (320, vec![320], 1);
    for level in 0..3 {
        for _ in 0..2 {
            let out = mult[level] * 320;
            res_block(&mut k, &format!("input_blocks.{index}.0"), ch, out);
            ch = out;
            if depth[level] > 0 {
                spatial_transformer(&mut k, &format!("input_blocks.{index}.1"), ch, depth[level]);
            }
            skips.push(ch);
            index += 1;
        }
        if level < 2 {
            conv(&mut k, &format!("input_blocks.{index}.0.op"), ch, ch, 3);
            skips.push(ch);
            index += 1;
        }
    }
    res_block(&mut k, "middle_block.0", ch, ch);
    spatial_transformer(&mut k, "middle_block.1", ch, 10);
    res_block(&mut k, "middle_block.2", ch, ch);
    let mut index = 0;
    for level in (0..3).rev() {
        for r in 0..3 {
            let out = mult[level] * 320;
            let skip = skips.pop().expect("one skip per input block");
            res_block(&mut k, &format!("output_blocks.{index}.0"), ch + skip, out);
            ch = out;
            let mut layer = 1;
            if depth[level] > 0 {
                spatial_transformer(
                    &mut k,
                    &format!("output_blocks.{index}.1"),
                    ch,
                    depth[level],
                );
                layer = 2;
            }
            if level > 0 && r == 2 {
                conv(
                    &mut k,
                    &format!("output_blocks.{index}.{layer}.conv"),
                    ch,
                    ch,
                    3,
                );
            }
            index += 1;
        }
    }
    norm(&mut k, "out.0", 320);
    conv(&mut k, "out.2", 4, 320, 3);
    k
}

/// Random bf16 weights (norm gains 1) drawn on the GPU, written as one safetensors file.
fn write_checkpoint(layout: &Layout, path: &Path) -> Result<u64> {
    let mut params = 0;
    let tensors: Vec<(String, Tensor)> = layout
        .iter()
        .map(|(name, shape)| {
            params += shape.iter().product::<i64>() as u64;
            let gain = name.contains("norm") && !name.ends_with(".bias");
            let t = if gain {
                Tensor::ones(shape.as_slice(), (Kind::BFloat16, GPU))
            } else {
                Tensor::randn(shape.as_slice(), (Kind::BFloat16, GPU)) * 0.02
            };
            (name.clone(), t.to_device(Device::Cpu))
        })
        .collect();
    Tensor::write_safetensors(&tensors, path)?;
    Ok(params)
}

/// Seconds per call of `step` over `STEPS` calls after a warm-up, and the peak GPU bytes.
fn timed(mut step: impl FnMut() -> Result<Tensor>) -> Result<(f64, u64)> {
    drop(step()?);
    tch::Cuda::synchronize(0);
    empty_cache();
    reset_peak(0);
    let start = Instant::now();
    for _ in 0..STEPS {
        drop(step()?);
    }
    tch::Cuda::synchronize(0);
    let peak = allocator_stats(0).map_or(0, |s| s.peak_allocated);
    Ok((start.elapsed().as_secs_f64() / STEPS as f64, peak))
}

fn load<T>(path: &Path, dtype: Kind, build: impl FnOnce(&Weights) -> Result<T>) -> Result<T> {
    let file = SafetensorsFile::open(path)?;
    let model = build(&Weights::new(&file, "", dtype, GPU)?)?;
    tch::Cuda::synchronize(0);
    Ok(model)
}

fn report(name: &str, dtype: &str, params: u64, flops: Option<f64>, (seconds, peak): (f64, u64)) {
    let rate = flops.map_or("—".into(), |f| format!("{:.0}", f / seconds / 1e12));
    println!(
        "| {name} | {dtype} | {:.2} B | {seconds:.3} | {:.1} | {rate} |",
        params as f64 / 1e9,
        peak as f64 / 1e9,
    );
}

fn main() -> Result<()> {
    ensure!(tch::Cuda::is_available(), "this bench needs a CUDA GPU");
    let _guard = tch::no_grad_guard();
    prefer_cudnn_attention()?;
    let dir =
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    println!("| model (1024²) | compute | params | s/step | peak GPU GB | TFLOP/s |");
    println!("| --- | --- | --- | --- | --- | --- |");

    let path = Path::new(&dir).join("flux1_dev_bench.safetensors");
    let start = Instant::now();
    let params = write_checkpoint(&flux_layout(), &path)?;
    eprintln!(
        "FLUX checkpoint written in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    let config = FluxConfig {
        hidden: 3072,
        in_channels: 16,
        context_in: 4096,
        vec_in: Some(768),
        heads: 24,
        axes: vec![16, 56, 56],
        depth: 19,
        depth_single: 38,
        guidance_embed: true,
    };
    let model = load(&path, Kind::BFloat16, |w| FluxModel::load(w, config))?;
    let x = Tensor::randn([1, 16, 128, 128], (Kind::BFloat16, GPU));
    let context = Tensor::randn([1, 256, 4096], (Kind::BFloat16, GPU));
    let y = Tensor::randn([1, 768], (Kind::BFloat16, GPU));
    let t = Tensor::from_slice(&[0.8f32]).to_device(GPU);
    let g = Tensor::from_slice(&[3.5f32]).to_device(GPU);
    let tokens = 4096.0 + 256.0;
    // 2·params·tokens for the GEMMs, 4·L²·3072 per block for attention (57 blocks).
    let flops = 2.0 * params as f64 * tokens + 4.0 * tokens * tokens * 3072.0 * 57.0;
    let measured = timed(|| model.forward(&x, &t, &context, Some(&y), Some(&g)))?;
    report("FLUX.1-dev", "bf16", params, Some(flops), measured);
    drop(model);
    std::fs::remove_file(&path)?;
    empty_cache();

    let path = Path::new(&dir).join("sdxl_base_bench.safetensors");
    let params = write_checkpoint(&sdxl_layout(), &path)?;
    let unet = load(&path, Kind::Half, Unet::load)?;
    let x = Tensor::randn([2, 4, 128, 128], (Kind::Half, GPU));
    let context = Tensor::randn([2, 77, 2048], (Kind::Half, GPU));
    let adm = Tensor::randn([2, 2816], (Kind::Half, GPU));
    let t = Tensor::from_slice(&[500.0f32, 500.0]).to_device(GPU);
    let measured = timed(|| unet.forward(&x, &t, &context, Some(&adm)))?;
    report("SDXL base (CFG batch 2)", "fp16", params, None, measured);
    std::fs::remove_file(&path)?;
    Ok(())
}
