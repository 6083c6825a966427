//! The Wan 2.1 T2V 1.3B checkpoint the GPU benches make: random weights in ComfyUI's layout.

use std::path::Path;

use anyhow::Result;
use tch::{Device, Kind, Tensor};
use videosdgx::models::wan::dit::WanConfig;

pub const CONFIG: WanConfig = WanConfig {
    dim: 1536,
    ffn_dim: 8960,
    freq_dim: 256,
    text_dim: 4096,
    in_dim: 16,
    out_dim: 16,
    num_heads: 12,
    num_layers: 30,
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

/// Every tensor of a Wan T2V checkpoint with its shape (ComfyUI's key names).
pub fn layout(c: &WanConfig) -> Vec<(String, Vec<i64>)> {
    let d = c.dim;
    let mut keys = vec![
        (
            "patch_embedding.weight".to_string(),
            vec![d, c.in_dim, 1, 2, 2],
        ),
        ("patch_embedding.bias".into(), vec![d]),
        ("text_embedding.0.weight".into(), vec![d, c.text_dim]),
        ("text_embedding.0.bias".into(), vec![d]),
        ("text_embedding.2.weight".into(), vec![d, d]),
        ("text_embedding.2.bias".into(), vec![d]),
        ("time_embedding.0.weight".into(), vec![d, c.freq_dim]),
        ("time_embedding.0.bias".into(), vec![d]),
        ("time_embedding.2.weight".into(), vec![d, d]),
        ("time_embedding.2.bias".into(), vec![d]),
        ("time_projection.1.weight".into(), vec![6 * d, d]),
        ("time_projection.1.bias".into(), vec![6 * d]),
        ("head.head.weight".into(), vec![c.out_dim * 4, d]),
        ("head.head.bias".into(), vec![c.out_dim * 4]),
        ("head.modulation".into(), vec![1, 2, d]),
    ];
    for n in 0..c.num_layers {
        keys.extend(block_layout(&format!("blocks.{n}"), c));
    }
    keys
}

/// The tensors of one block under `b` (a text-only block: no CLIP-vision keys).
pub fn block_layout(b: &str, c: &WanConfig) -> Vec<(String, Vec<i64>)> {
    let (d, f) = (c.dim, c.ffn_dim);
    let mut keys = Vec::new();
    for attn in ["self_attn", "cross_attn"] {
        for p in ["q", "k", "v", "o"] {
            keys.push((format!("{b}.{attn}.{p}.weight"), vec![d, d]));
            keys.push((format!("{b}.{attn}.{p}.bias"), vec![d]));
        }
        keys.push((format!("{b}.{attn}.norm_q.weight"), vec![d]));
        keys.push((format!("{b}.{attn}.norm_k.weight"), vec![d]));
    }
    keys.push((format!("{b}.norm3.weight"), vec![d]));
    keys.push((format!("{b}.norm3.bias"), vec![d]));
    keys.push((format!("{b}.ffn.0.weight"), vec![f, d]));
    keys.push((format!("{b}.ffn.0.bias"), vec![f]));
    keys.push((format!("{b}.ffn.2.weight"), vec![d, f]));
    keys.push((format!("{b}.ffn.2.bias"), vec![d]));
    keys.push((format!("{b}.modulation"), vec![1, 6, d]));
    keys
}

pub fn write_checkpoint(path: &Path) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = layout(&CONFIG)
        .into_iter()
        .map(|(name, shape)| {
            let t = if name.contains("norm") && name.ends_with(".weight") {
                Tensor::ones(shape.as_slice(), (Kind::Float, Device::Cpu))
            } else {
                Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)) * 0.02
            };
            (name, t.to_kind(Kind::BFloat16))
        })
        .collect();
    Tensor::write_safetensors(&tensors, path)?;
    Ok(())
}

/// Token counts of the `text_to_video_wan` template's positive and negative prompts, estimated
/// from their lengths (18 English words; 137 Chinese characters): UMT5-XXL's output is these
/// rows, then zeros up to 512.
pub const PROMPT_TOKENS: [i64; 2] = [20, 110];

/// One CFG step's DiT inputs on cuda:0 as KSampler makes them: cond and uncond on one latent at
/// 832×480 and `frames`, t = 900, and the two prompts' UMT5 outputs (random rows, padded with
/// zeros to 512 as ComfyUI pads them).
pub fn step_inputs(frames: i64) -> (Tensor, Tensor, Tensor) {
    let (x, t, context) = distinct_inputs(frames);
    for (item, tokens) in PROMPT_TOKENS.into_iter().enumerate() {
        let _ = context
            .get(item as i64)
            .narrow(0, tokens, 512 - tokens)
            .zero_();
    }
    (x.narrow(0, 0, 1).repeat([2, 1, 1, 1, 1]), t, context)
}

/// [`step_inputs`] with nothing shared: two random latents and 512 random text rows each, so
/// neither the shared start of the stream nor the padding can be skipped.
pub fn distinct_inputs(frames: i64) -> (Tensor, Tensor, Tensor) {
    let device = Device::Cuda(0);
    tch::manual_seed(frames);
    let latent_frames = (frames - 1) / 4 + 1;
    let x = Tensor::randn([2, 16, latent_frames, 60, 104], (Kind::BFloat16, device));
    let context = Tensor::randn([2, 512, 4096], (Kind::BFloat16, device));
    let t = Tensor::from_slice(&[900.0f32, 900.0]).to_device(device);
    (x, t, context)
}

/// (GEMM, attention) FLOPs of one forward of `batch` samples with `tokens` video tokens and
/// `text` context tokens.
pub fn flops(c: &WanConfig, batch: i64, tokens: i64, text: i64) -> (f64, f64) {
    let (l, d, f, t) = (tokens as f64, c.dim as f64, c.ffn_dim as f64, text as f64);
    let gemm = 2.0 * (4.0 * l * d * d + 2.0 * l * d * d + 2.0 * t * d * d + 2.0 * l * d * f);
    let attention = 4.0 * l * l * d + 4.0 * l * t * d;
    let layers = c.num_layers as f64 * batch as f64;
    (gemm * layers, attention * layers)
}

/// Every tensor of the Wan 2.1 VAE (`wan_2.1_vae.safetensors`: base 96, ×[1, 2, 4, 4], 16
/// latent channels) with its shape.
pub fn vae_layout() -> Vec<(String, Vec<i64>)> {
    let mut keys = Vec::new();
    let conv = |keys: &mut Vec<(String, Vec<i64>)>, name: &str, shape: Vec<i64>| {
        keys.push((format!("{name}.bias"), vec![shape[0]]));
        keys.push((format!("{name}.weight"), shape));
    };
    let residual = |keys: &mut Vec<(String, Vec<i64>)>, name: &str, i: i64, o: i64| {
        keys.push((format!("{name}.residual.0.gamma"), vec![i, 1, 1, 1]));
        conv(keys, &format!("{name}.residual.2"), vec![o, i, 3, 3, 3]);
        keys.push((format!("{name}.residual.3.gamma"), vec![o, 1, 1, 1]));
        conv(keys, &format!("{name}.residual.6"), vec![o, o, 3, 3, 3]);
        if i != o {
            conv(keys, &format!("{name}.shortcut"), vec![o, i, 1, 1, 1]);
        }
    };
    let middle = |keys: &mut Vec<(String, Vec<i64>)>, side: &str| {
        residual(keys, &format!("{side}.middle.0"), 384, 384);
        keys.push((format!("{side}.middle.1.norm.gamma"), vec![384, 1, 1]));
        conv(
            keys,
            &format!("{side}.middle.1.to_qkv"),
            vec![1152, 384, 1, 1],
        );
        conv(keys, &format!("{side}.middle.1.proj"), vec![384, 384, 1, 1]);
        residual(keys, &format!("{side}.middle.2"), 384, 384);
    };
    conv(&mut keys, "encoder.conv1", vec![96, 3, 3, 3, 3]);
    let mut n = 0;
    for (level, (i, o)) in [(96, 96), (96, 192), (192, 384), (384, 384)]
        .into_iter()
        .enumerate()
    {
        residual(&mut keys, &format!("encoder.downsamples.{n}"), i, o);
        residual(&mut keys, &format!("encoder.downsamples.{}", n + 1), o, o);
        n += 2;
        if level < 3 {
            conv(
                &mut keys,
                &format!("encoder.downsamples.{n}.resample.1"),
                vec![o, o, 3, 3],
            );
            if level > 0 {
                conv(
                    &mut keys,
                    &format!("encoder.downsamples.{n}.time_conv"),
                    vec![o, o, 3, 1, 1],
                );
            }
            n += 1;
        }
    }
    middle(&mut keys, "encoder");
    keys.push(("encoder.head.0.gamma".into(), vec![384, 1, 1, 1]));
    conv(&mut keys, "encoder.head.2", vec![32, 384, 3, 3, 3]);
    conv(&mut keys, "conv1", vec![32, 32, 1, 1, 1]);
    conv(&mut keys, "conv2", vec![16, 16, 1, 1, 1]);
    conv(&mut keys, "decoder.conv1", vec![384, 16, 3, 3, 3]);
    middle(&mut keys, "decoder");
    let mut n = 0;
    for (level, (i, o)) in [(384, 384), (192, 384), (192, 192), (96, 96)]
        .into_iter()
        .enumerate()
    {
        residual(&mut keys, &format!("decoder.upsamples.{n}"), i, o);
        residual(&mut keys, &format!("decoder.upsamples.{}", n + 1), o, o);
        residual(&mut keys, &format!("decoder.upsamples.{}", n + 2), o, o);
        n += 3;
        if level < 3 {
            conv(
                &mut keys,
                &format!("decoder.upsamples.{n}.resample.1"),
                vec![o / 2, o, 3, 3],
            );
            if level < 2 {
                conv(
                    &mut keys,
                    &format!("decoder.upsamples.{n}.time_conv"),
                    vec![o * 2, o, 3, 1, 1],
                );
            }
            n += 1;
        }
    }
    keys.push(("decoder.head.0.gamma".into(), vec![96, 1, 1, 1]));
    conv(&mut keys, "decoder.head.2", vec![3, 96, 3, 3, 3]);
    keys
}

/// Random weights for `layout` written as bf16 safetensors (norm gains 1, the rest N(0, σ)
/// with σ = 1/√fan-in so activations keep their scale).
pub fn write_random(layout: &[(String, Vec<i64>)], path: &Path) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = layout
        .iter()
        .map(|(name, shape)| {
            let opts = (Kind::Float, Device::Cpu);
            let t = if name.ends_with("gamma")
                || (name.contains("norm") && name.ends_with(".weight"))
            {
                Tensor::ones(shape.as_slice(), opts)
            } else if name.ends_with("bias") || shape.len() == 1 {
                Tensor::zeros(shape.as_slice(), opts)
            } else {
                let fan_in: i64 = shape[1..].iter().product();
                Tensor::randn(shape.as_slice(), opts) / (fan_in as f64).sqrt()
            };
            (name.clone(), t.to_kind(Kind::BFloat16))
        })
        .collect();
    Tensor::write_safetensors(&tensors, path)?;
    Ok(())
}

/// Peak FLOP/s of bf16 GEMM, FP8 GEMM (our Linear with its fused activation quantization) and
/// attention (the Hopper kernel, `benches/device/attention_sm90.py`), the best each reached on
/// the H100 (benches/RESULTS.md); `GEMM_BF16_TFLOPS`, `GEMM_FP8_TFLOPS`, `ATTENTION_TFLOPS`
/// override them for another GPU.
pub fn measured_peaks() -> (f64, f64, f64) {
    let peak = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
            * 1e12
    };
    (
        peak("GEMM_BF16_TFLOPS", 799.0),
        peak("GEMM_FP8_TFLOPS", 1253.0),
        peak("ATTENTION_TFLOPS", 689.0),
    )
}
