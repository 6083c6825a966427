//! The LTX-2 (19B) audio-video transformer on a CUDA GPU at full width: random weights in
//! ComfyUI's key layout with 16 of the 48 blocks, written here. First the GPU's bfloat16 forward
//! against the CPU's float32 on a tiny latent (two blocks); then the seconds of one model call
//! at the `video_ltx2_*` templates' sizes with 8 and with 16 blocks, whose difference is the
//! per-block cost that the 48-block step is extrapolated from (the blocks are identical), in
//! bfloat16 and with FP8 weights (`weight_dtype` fp8_e4m3fn_fast, like the templates' fp8 file).
//! Attention is the server's choice: the Hopper kernel where `VIDEOSDGX_SM90_KERNELS` (or the
//! venv) has it, else libtorch's SDPA.
//!
//! With `2.3` the transformer has LTX-2.3's layers (gated attention, prompt-modulated text
//! cross-attention, 8-layer gated connectors as wide as each stream, no caption projection).
//!
//! Usage: `ltx_av DIR [2.3]` (DIR takes the 14 GB weights file).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use tch::{Device, Kind, Tensor};
mod common;

use common::timing::{timed_reps, timed_steps};
use common::wan_1_3b::{measured_peaks, write_random};
use videosdgx::models::ltx::av_config::AvConfig;
use videosdgx::models::ltx::av_model::{AvInputs, LtxAvModel};
use videosdgx::models::weights::Weights;
use videosdgx::runtime::accel::empty_cache;
use videosdgx::runtime::linear::{Linear, LinearWeight};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

const GPU: Device = Device::Cuda(0);
const BLOCKS: i64 = 16;
const FULL_BLOCKS: i64 = 48;
const VIDEO: i64 = 4096;
const AUDIO: i64 = 2048;
const CAPTION: i64 = 3840;
const TEXT_TOKENS: i64 = 1024;
/// Timed calls per case: the per-block cost is a difference of two calls' times.
const REPS: u32 = 6;

type Layout = Vec<(String, Vec<i64>)>;

fn linear(l: &mut Layout, name: &str, out: i64, input: i64) {
    l.push((format!("{name}.weight"), vec![out, input]));
    l.push((format!("{name}.bias"), vec![out]));
}

/// An attention (32 heads, as every LTX attention has); `gated` adds LTX-2.3's gate logits.
fn attention(l: &mut Layout, name: &str, (query, context, inner): (i64, i64, i64), gated: bool) {
    if gated {
        linear(l, &format!("{name}.to_gate_logits"), 32, query);
    }
    linear(l, &format!("{name}.to_q"), inner, query);
    linear(l, &format!("{name}.to_k"), inner, context);
    linear(l, &format!("{name}.to_v"), inner, context);
    linear(l, &format!("{name}.to_out.0"), query, inner);
    l.push((format!("{name}.q_norm.weight"), vec![inner]));
    l.push((format!("{name}.k_norm.weight"), vec![inner]));
}

fn feed_forward(l: &mut Layout, name: &str, dim: i64) {
    linear(l, &format!("{name}.net.0.proj"), 4 * dim, dim);
    linear(l, &format!("{name}.net.2"), dim, 4 * dim);
}

fn adaln(l: &mut Layout, name: &str, dim: i64, parts: i64) {
    let e = format!("{name}.emb.timestep_embedder");
    linear(l, &format!("{e}.linear_1"), dim, 256);
    linear(l, &format!("{e}.linear_2"), dim, dim);
    linear(l, &format!("{name}.linear"), parts * dim, dim);
}

/// Every tensor of LTX-2's (or LTX-2.3's) transformer with `blocks` blocks (ComfyUI's names,
/// no prefix).
fn layout(blocks: i64, v23: bool) -> Layout {
    let mut l = Layout::new();
    let rows = if v23 { 9 } else { 6 };
    linear(&mut l, "patchify_proj", VIDEO, 128);
    linear(&mut l, "audio_patchify_proj", AUDIO, 128);
    adaln(&mut l, "adaln_single", VIDEO, rows);
    adaln(&mut l, "audio_adaln_single", AUDIO, rows);
    if v23 {
        adaln(&mut l, "prompt_adaln_single", VIDEO, 2);
        adaln(&mut l, "audio_prompt_adaln_single", AUDIO, 2);
    }
    adaln(&mut l, "av_ca_video_scale_shift_adaln_single", VIDEO, 4);
    adaln(&mut l, "av_ca_audio_scale_shift_adaln_single", AUDIO, 4);
    adaln(&mut l, "av_ca_a2v_gate_adaln_single", VIDEO, 1);
    adaln(&mut l, "av_ca_v2a_gate_adaln_single", AUDIO, 1);
    if !v23 {
        for (name, dim) in [
            ("caption_projection", VIDEO),
            ("audio_caption_projection", AUDIO),
        ] {
            linear(&mut l, &format!("{name}.linear_1"), dim, CAPTION);
            linear(&mut l, &format!("{name}.linear_2"), dim, dim);
        }
    }
    let (connector_layers, connector_widths) = if v23 {
        (8, [VIDEO, AUDIO])
    } else {
        (2, [CAPTION, CAPTION])
    };
    for (stream, width) in ["video", "audio"].into_iter().zip(connector_widths) {
        let c = format!("{stream}_embeddings_connector");
        for n in 0..connector_layers {
            let b = format!("{c}.transformer_1d_blocks.{n}");
            attention(&mut l, &format!("{b}.attn1"), (width, width, width), v23);
            feed_forward(&mut l, &format!("{b}.ff"), width);
        }
        l.push((format!("{c}.learnable_registers"), vec![128, width]));
    }
    for n in 0..blocks {
        let b = format!("transformer_blocks.{n}");
        for (name, dims) in [
            ("attn1", (VIDEO, VIDEO, VIDEO)),
            ("attn2", (VIDEO, VIDEO, VIDEO)),
            ("audio_attn1", (AUDIO, AUDIO, AUDIO)),
            ("audio_attn2", (AUDIO, AUDIO, AUDIO)),
            ("audio_to_video_attn", (VIDEO, AUDIO, AUDIO)),
            ("video_to_audio_attn", (AUDIO, VIDEO, AUDIO)),
        ] {
            attention(&mut l, &format!("{b}.{name}"), dims, v23);
        }
        feed_forward(&mut l, &format!("{b}.ff"), VIDEO);
        feed_forward(&mut l, &format!("{b}.audio_ff"), AUDIO);
        l.push((format!("{b}.scale_shift_table"), vec![rows, VIDEO]));
        l.push((format!("{b}.audio_scale_shift_table"), vec![rows, AUDIO]));
        if v23 {
            l.push((format!("{b}.prompt_scale_shift_table"), vec![2, VIDEO]));
            l.push((
                format!("{b}.audio_prompt_scale_shift_table"),
                vec![2, AUDIO],
            ));
        }
        l.push((
            format!("{b}.scale_shift_table_a2v_ca_video"),
            vec![5, VIDEO],
        ));
        l.push((
            format!("{b}.scale_shift_table_a2v_ca_audio"),
            vec![5, AUDIO],
        ));
    }
    l.push(("scale_shift_table".into(), vec![2, VIDEO]));
    l.push(("audio_scale_shift_table".into(), vec![2, AUDIO]));
    linear(&mut l, "proj_out", 128, VIDEO);
    linear(&mut l, "audio_proj_out", 128, AUDIO);
    l
}

/// The LTX-2 (or LTX-2.3) checkpoint's `config.transformer` (as detection merges it), with
/// `blocks` blocks.
fn config(blocks: i64, v23: bool) -> Result<AvConfig> {
    let mut c = json!({
        "num_layers": blocks, "attention_head_dim": 128, "cross_attention_dim": VIDEO,
        "rope_type": "split", "frequencies_precision": "float64",
        "causal_temporal_positioning": true, "use_middle_indices_grid": true,
        "av_ca_timestep_scale_multiplier": 1000,
    });
    if v23 {
        let switches = json!({
            "apply_gated_attention": true, "connector_apply_gated_attention": true,
            "cross_attention_adaln": true, "caption_proj_before_connector": true,
            "caption_projection_first_linear": false, "connector_num_attention_heads": 32,
            "connector_num_layers": 8, "audio_connector_attention_head_dim": 64,
            "audio_connector_num_attention_heads": 32,
        });
        c.as_object_mut()
            .expect("an object")
            .extend(switches.as_object().expect("an object").clone());
    }
    AvConfig::from_detected(&c)
}

fn load(
    file: &SafetensorsFile,
    (blocks, v23): (i64, bool),
    kind: Kind,
    device: Device,
    fp8: bool,
) -> Result<LtxAvModel> {
    let mut weights = Weights::new(file, "", kind, device)?;
    if fp8 {
        weights.cast_linear = Some((Kind::Float8e4m3fn, true));
    }
    LtxAvModel::load(&weights, config(blocks, v23)?)
}

/// GEMM and attention FLOPs of one block for `batch` samples of `video` and `audio` tokens.
fn block_flops(batch: i64, video: i64, audio: i64) -> (f64, f64) {
    let (n, m, t) = (video as f64, audio as f64, TEXT_TOKENS as f64);
    let (v, a) = (VIDEO as f64, AUDIO as f64);
    let gemm = 2.0
        * (4.0 * n * v * v // video self-attention
            + 2.0 * n * v * v + 2.0 * t * v * v // text cross-attention
            + 8.0 * n * v * v // feed-forward
            + 4.0 * m * a * a + 2.0 * m * a * a + 2.0 * t * a * a + 8.0 * m * a * a // audio
            + 2.0 * n * v * a + 2.0 * m * a * a // audio-to-video: q, out from video
            + 2.0 * m * a * a + 2.0 * n * v * a); // video-to-audio: k, v from video
    let attention = 4.0 * (n * n * v + n * t * v + m * m * a + m * t * a + 2.0 * n * m * a);
    (gemm * batch as f64, attention * batch as f64)
}

struct Case {
    name: &'static str,
    batch: i64,
    /// Latent frames, height, width; audio latent frames.
    video: [i64; 3],
    audio: i64,
}

const CASES: [Case; 3] = [
    Case {
        name: "stage 1, 121 frames 640×360, CFG",
        batch: 2,
        video: [16, 11, 20],
        audio: 126,
    },
    Case {
        name: "stage 2, 121 frames 1280×704",
        batch: 1,
        video: [16, 22, 40],
        audio: 126,
    },
    Case {
        name: "81 frames 832×480, CFG",
        batch: 2,
        video: [11, 15, 26],
        audio: 85,
    },
];

/// Seconds and peak GPU bytes of one model call on random inputs; the text `context_width` wide.
fn time_case(model: &LtxAvModel, case: &Case, context_width: i64) -> Result<(f64, u64)> {
    let [f, h, w] = case.video;
    let b = case.batch;
    let video = Tensor::randn([b, 128, f, h, w], (Kind::BFloat16, GPU));
    let audio = Tensor::randn([b, 8, case.audio, 16], (Kind::BFloat16, GPU));
    let context = Tensor::randn([b, TEXT_TOKENS, context_width], (Kind::BFloat16, GPU));
    let sigma = Tensor::full([b], 0.9, (Kind::Float, GPU));
    let inputs = AvInputs {
        video: &video,
        audio: Some(&audio),
        video_timestep: &sigma,
        audio_timestep: &sigma,
        context: &context,
        frame_rate: 24.0,
        keyframes: None,
        guides: &[],
        reference_audio: None,
    };
    let (seconds, peak, _) = timed_reps(REPS, || model.forward(&inputs))?;
    Ok((seconds, peak))
}

fn main() -> Result<()> {
    let _guard = tch::no_grad_guard();
    let dir = std::env::args().nth(1).context("usage: ltx_av DIR [2.3]")?;
    let v23 = std::env::args().nth(2).as_deref() == Some("2.3");
    let (version, context_width, features) = if v23 {
        ("LTX-2.3", VIDEO + AUDIO, VIDEO + AUDIO)
    } else {
        ("LTX-2", 2 * CAPTION, CAPTION)
    };
    let path = Path::new(&dir).join("ltx2_dit_random.safetensors");
    let layout = layout(BLOCKS, v23);
    let params: i64 = layout.iter().map(|(_, s)| s.iter().product::<i64>()).sum();
    let per_block: i64 = layout
        .iter()
        .filter(|(n, _)| n.starts_with("transformer_blocks.0."))
        .map(|(_, s)| s.iter().product::<i64>())
        .sum();
    println!(
        "random {version} transformer: {BLOCKS} blocks, {:.2}B parameters ({:.1}M per block, {:.2}B at 48)",
        params as f64 / 1e9,
        per_block as f64 / 1e6,
        (params + (FULL_BLOCKS - BLOCKS) * per_block) as f64 / 1e9
    );
    write_random(&layout, &path)?;
    let file = SafetensorsFile::open(&path)?;

    let video = Tensor::randn([1, 128, 2, 2, 3], (Kind::Float, Device::Cpu));
    let audio = Tensor::randn([1, 8, 5, 16], (Kind::Float, Device::Cpu));
    let text = Tensor::randn([1, 40, features], (Kind::Float, Device::Cpu));
    let sigma = Tensor::from_slice(&[0.6f32]);
    let run = |model: &LtxAvModel, device: Device| -> Result<(Tensor, Tensor)> {
        let to = |t: &Tensor| t.to_device(device);
        let context = model.encode_context(&to(&text))?;
        let (v, a) = model.forward(&AvInputs {
            video: &to(&video),
            audio: Some(&to(&audio)),
            video_timestep: &to(&sigma),
            audio_timestep: &to(&sigma),
            context: &context,
            frame_rate: 24.0,
            keyframes: None,
            guides: &[],
            reference_audio: None,
        })?;
        let host = |t: Tensor| t.to_kind(Kind::Float).to_device(Device::Cpu);
        Ok((host(v), host(a.context("no audio")?)))
    };
    let (cpu_v, cpu_a) = run(
        &load(&file, (2, v23), Kind::Float, Device::Cpu, false)?,
        Device::Cpu,
    )?;
    let (gpu_v, gpu_a) = run(&load(&file, (2, v23), Kind::BFloat16, GPU, false)?, GPU)?;
    let rel =
        |a: &Tensor, b: &Tensor| (a - b).norm().double_value(&[]) / b.norm().double_value(&[]);
    println!(
        "2 blocks, tiny latent: GPU bf16 vs CPU f32 relative L2 video {:.2e}, audio {:.2e}",
        rel(&gpu_v, &cpu_v),
        rel(&gpu_a, &cpu_a)
    );

    // The feed-forward's first GEMM at stage 2's size, alone: what FP8 weights gain there.
    let x = Tensor::randn([14080, VIDEO], (Kind::BFloat16, GPU));
    let w = Tensor::randn([4 * VIDEO, VIDEO], (Kind::BFloat16, GPU)) / 64.0;
    let flops = 2.0 * 14080.0 * (4 * VIDEO * VIDEO) as f64;
    for (label, layer) in [
        (
            "bf16",
            Linear::new(LinearWeight::Dense(w.shallow_clone()), None),
        ),
        (
            "fp8_e4m3fn_fast",
            Linear::cast_to_fp8(&w, None, Kind::Float8e4m3fn, true),
        ),
    ] {
        let (s, _, _) = timed_steps(|| layer.forward(&x))?;
        println!(
            "GEMM 14080×4096 → 16384, {label}: {:.2} ms, {:.0} TFLOP/s",
            s * 1e3,
            flops / s / 1e12
        );
    }

    let (gemm_peak, fp8_peak, attention_peak) = measured_peaks();
    println!("| weights | case | s/call 8 blocks | s/call 16 blocks | s/block | s/call at 48 (extrapolated) | block TFLOP/s | ratio to roofline | peak GPU GB (16 blocks) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (label, fp8) in [("bf16", false), ("fp8_e4m3fn_fast", true)] {
        let small = load(&file, (BLOCKS / 2, v23), Kind::BFloat16, GPU, fp8)?;
        // The GPU's first calls of each shape run slower (clocks, kernel selection).
        for case in &CASES {
            time_case(&small, case, context_width)?;
        }
        let times: Vec<(f64, u64)> = CASES
            .iter()
            .map(|c| time_case(&small, c, context_width))
            .collect::<Result<_>>()?;
        drop(small);
        empty_cache();
        let large = load(&file, (BLOCKS, v23), Kind::BFloat16, GPU, fp8)?;
        for (case, (t8, _)) in CASES.iter().zip(times) {
            let (t16, peak) = time_case(&large, case, context_width)?;
            let block = (t16 - t8) / (BLOCKS / 2) as f64;
            let full = t8 + (FULL_BLOCKS - BLOCKS / 2) as f64 * block;
            let tokens = case.video.iter().product();
            let (gemm, attention) = block_flops(case.batch, tokens, case.audio);
            let gemm_rate = if fp8 { fp8_peak } else { gemm_peak };
            let roofline = gemm / gemm_rate + attention / attention_peak;
            println!(
                "| {label} | {} | {t8:.3} | {t16:.3} | {block:.4} | {full:.2} | {:.0} | {:.2} | {:.1} |",
                case.name,
                (gemm + attention) / block / 1e12,
                block / roofline,
                peak as f64 / 1e9
            );
        }
        drop(large);
        empty_cache();
    }
    Ok(())
}
