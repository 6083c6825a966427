//! Wan 2.1 T2V 1.3B diffusion-model step on the GPU at full size with random weights made here
//! (written to a safetensors file and loaded by the real loader): one CFG step = one forward
//! with cond and uncond batched as KSampler batches them (one latent, the template's two
//! prompts padded to 512 tokens), at 832×480 and 33 / 81 frames, in fp16 (what ComfyUI and the
//! server compute Wan in), bf16 (what issue 6 names) and fp8_e4m3fn_fast weights; s/step, peak
//! GPU memory, and the ratio to the roofline (the step's GEMM FLOPs at the measured bf16/FP8
//! GEMM peak plus its attention FLOPs at the measured attention peak), for each
//! setting of the fast paths (fused kernels, Hopper attention, bias-GELU GEMM) and for the
//! default on inputs that share nothing, with each setting's distance to a float32 forward of
//! the same weights.
//! Run: `cargo bench --bench wan_dit` (BENCH_DIR picks where the 2.8 GB file goes).

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};
mod common;

use common::wan_1_3b::{
    distinct_inputs, flops, measured_peaks, step_inputs, write_checkpoint, CONFIG, PROMPT_TOKENS,
};
use videosdgx::models::wan::dit::WanModel;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::accel::{allocator_stats, empty_cache, reset_peak};
use videosdgx::runtime::attention::prefer_cudnn_attention;
use videosdgx::runtime::fused::{available, set_enabled as set_fused};
use videosdgx::runtime::manager::Placement;
use videosdgx::runtime::safetensors_file::SafetensorsFile;
use videosdgx::runtime::{attention_sm90, gemm_sm90};

/// The compute dtype the server gives Wan on a GPU, as ComfyUI does
/// (`diffusion_file::diffusion_compute_dtype`).
const SERVER_DTYPE: Kind = Kind::Half;

/// `Weights::cast_linear`: the FP8 kind of the block Linears, and whether they run `_scaled_mm`.
type Fp8Cast = Option<(Kind, bool)>;

/// (label, compute dtype, FP8 cast of the block Linears): the server's fp16, the bf16 the issue
/// names, and fp8_e4m3fn_fast weights (which compute in fp16 as well).
const WEIGHTS: [(&str, Kind, Fp8Cast); 3] = [
    ("fp16", SERVER_DTYPE, None),
    ("bf16", Kind::BFloat16, None),
    (
        "fp8_e4m3fn_fast",
        SERVER_DTYPE,
        Some((Kind::Float8e4m3fn, true)),
    ),
];

/// Issue 6's figures: ComfyUI 0.3.64 on the same H100, fp16, SDPA, by frame count.
const COMFYUI_SECONDS_PER_STEP: [(i64, f64); 2] = [(33, 0.377), (81, 1.254)];

/// One setting of the fast paths. All are switched in one process, so their figures compare on
/// one machine (lent H100s differ by about ±5 %).
#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    fused_kernels: bool,
    hopper_attention: bool,
    hopper_gemm: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "libtorch ops, cuDNN SDPA",
        fused_kernels: false,
        hopper_attention: false,
        hopper_gemm: false,
    },
    Variant {
        name: "fused kernels, cuDNN SDPA",
        fused_kernels: true,
        hopper_attention: false,
        hopper_gemm: false,
    },
    Variant {
        name: "fused kernels, Hopper attention",
        fused_kernels: true,
        hopper_attention: true,
        hopper_gemm: false,
    },
    Variant {
        name: "fused kernels, Hopper attention + bias-GELU GEMM (default)",
        fused_kernels: true,
        hopper_attention: true,
        hopper_gemm: true,
    },
];
const DEFAULT: Variant = VARIANTS[3];

impl Variant {
    fn apply(&self) {
        set_fused(self.fused_kernels);
        attention_sm90::SWITCH.set_enabled(self.hopper_attention);
        gemm_sm90::SWITCH.set_enabled(self.hopper_gemm);
    }

    /// `model.forward` under this variant, the default restored after.
    fn forward(
        &self,
        model: &WanModel,
        x: &Tensor,
        t: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor> {
        self.apply();
        let out = model.forward(x, t, context, None);
        DEFAULT.apply();
        out
    }
}

/// Seconds per step and the peak memory under `variant`, on `inputs` (x, t, context).
fn step_seconds(
    model: &WanModel,
    (x, t, context): &(Tensor, Tensor, Tensor),
    variant: Variant,
) -> Result<(f64, u64)> {
    drop(variant.forward(model, x, t, context)?);
    tch::Cuda::synchronize(0);
    empty_cache();
    reset_peak(0);
    let reps = 4;
    let start = Instant::now();
    for _ in 0..reps {
        drop(variant.forward(model, x, t, context)?);
    }
    tch::Cuda::synchronize(0);
    let peak = allocator_stats(0).map_or(0, |s| s.peak_allocated);
    Ok((start.elapsed().as_secs_f64() / reps as f64, peak))
}

fn relative(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).norm().double_value(&[]) / b.norm().double_value(&[])
}

fn dtype_name(dtype: Kind) -> &'static str {
    if dtype == Kind::Half {
        "fp16"
    } else {
        "bf16"
    }
}

/// How far each variant's half-precision forward lies from the same weights' float32 forward
/// (‖Δ‖/‖out‖), beside how far the default forward moves when its input changes by about one
/// rounding of its dtype: the random-weight network's own sensitivity. A fast path earns its place
/// when it lies no further from float32 than the libtorch op chain. Returns the table, printed
/// after the speed table.
fn accuracy_against_float32(
    file: &SafetensorsFile,
    model: &WanModel,
    dtype: Kind,
    frames: i64,
) -> Result<String> {
    let (x, t, context) = step_inputs(frames);
    let float = |out: Tensor| out.to_kind(Kind::Float);
    let reference = {
        let weights = Weights::new(file, "", Kind::Float, Device::Cuda(0))?;
        let model = WanModel::load(&weights, CONFIG.clone())?;
        float(model.forward(&x, &t, &context, None)?)
    };
    empty_cache();
    let name = dtype_name(dtype);
    let mut table = format!(
        "\n{name} at {frames} frames against the float32 forward of the same weights:\n\
         | path | relative distance to float32 |\n| --- | --- |\n"
    );
    let mut baseline = None;
    for variant in VARIANTS {
        let out = float(variant.forward(model, &x, &t, &context)?);
        let distance = relative(&out, &reference);
        table += &format!("| {} | {distance:.2e} |\n", variant.name);
        if variant.name == DEFAULT.name {
            baseline = Some(out);
        }
    }
    let baseline = baseline.expect("DEFAULT is one of VARIANTS");
    // About one rounding of the dtype (half its unit roundoff as a standard deviation).
    let rounding = if dtype == Kind::Half {
        2f64.powi(-12)
    } else {
        2f64.powi(-9)
    };
    let jitter = x.to_kind(Kind::Float) * (x.randn_like().to_kind(Kind::Float) * rounding + 1.0);
    let perturbed = float(DEFAULT.forward(model, &jitter.to_kind(dtype), &t, &context)?);
    table += &format!(
        "| control: default path, input moved by one {name} rounding, against the default path | {:.2e} |\n",
        relative(&perturbed, &baseline)
    );
    Ok(table)
}

/// Milliseconds per call of `f`, median of 7 after a warm-up.
fn ms(mut f: impl FnMut()) -> f64 {
    f();
    tch::Cuda::synchronize(0);
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            tch::Cuda::synchronize(0);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[3]
}

/// Where one block's time goes at 81 frames, CFG batch 2 (the server's fp16), op by op.
fn breakdown() -> Result<()> {
    use videosdgx::models::rope::apply_rope;
    use videosdgx::models::wan::dit::{layer_norm, rms_norm, rope_grid};
    use videosdgx::runtime::attention::{attention, attention_repeated_last_key, RepeatedLastKey};
    use videosdgx::runtime::fused::{self, residual_layer_norm, rms_norm_rope, Norm, Residual};
    use videosdgx::runtime::linear::{Linear, LinearWeight};
    let device = Device::Cuda(0);
    let opts = (SERVER_DTYPE, device);
    let (b, l, d, f, heads) = (2i64, 32760i64, 1536i64, 8960i64, 12i64);
    let x = Tensor::randn([b, l, d], opts);
    let ctx = Tensor::randn([b, 512, d], opts);
    // The template's longer prompt, and one row standing for its padding.
    let rows = PROMPT_TOKENS[1] + 1;
    let kept = ctx.narrow(1, 0, rows);
    let padding = RepeatedLastKey::new(rows, 512 - rows + 1, device);
    let lin = |o: i64, i: i64| {
        Linear::new(
            LinearWeight::Dense(Tensor::randn([o, i], opts) * 0.02),
            Some(Tensor::zeros([o], opts)),
        )
    };
    let (q, qkv, ffn_in, ffn_out) = (lin(d, d), lin(3 * d, d), lin(f, d), lin(d, f));
    let hidden = Tensor::randn([b, l, f], opts);
    let gain = Tensor::ones([d], opts);
    let e = Tensor::randn([b, 1, d], opts);
    // A gate as the block gets it: one of six rows unbound from `[b, 1, 6, d]`.
    let gate = Tensor::randn([b, 1, 6, d], opts).select(2, 2);
    let freqs = rope_grid(21, 30, 52, d / heads, SERVER_DTYPE, device);
    let split = x.view([b, l, heads, d / heads]);
    let y = Tensor::randn([b, l, d], opts);
    let bias = Tensor::zeros([d], opts);
    let modulate = Norm::Modulate {
        shift: &e,
        scale: &e,
    };
    let affine = Norm::Affine {
        weight: &gain,
        bias: &bias,
    };
    let residual = |gate| Residual { y: &y, gate };
    let fused = |r, norm| drop(residual_layer_norm(&x, r, norm, 1e-6).unwrap());
    let rows = [
        (
            "linear d->d (x3 per block: self o + cross q,o)",
            3.0,
            ms(|| drop(q.forward(&x).unwrap())),
        ),
        (
            "self attention's q/k/v stacked as one d->3d",
            1.0,
            ms(|| drop(qkv.forward(&x).unwrap())),
        ),
        (
            "ffn in d->f + out f->d",
            1.0,
            ms(|| drop(ffn_out.forward(&ffn_in.forward(&x).unwrap()).unwrap())),
        ),
        ("gelu tanh [b,l,f]", 1.0, ms(|| drop(hidden.gelu("tanh")))),
        (
            "  fused: ffn in with bias + GELU in one GEMM (Hopper) + out",
            1.0,
            ms(|| {
                drop(
                    ffn_out
                        .forward(&ffn_in.forward_gelu_tanh(&x).unwrap())
                        .unwrap(),
                )
            }),
        ),
        (
            "self attention (runtime::attention)",
            1.0,
            ms(|| drop(attention(&x, &x, &x, heads, None))),
        ),
        (
            "  variant: self attention, SDPA (Hopper kernel off)",
            1.0,
            ms(|| {
                attention_sm90::SWITCH.set_enabled(false);
                drop(attention(&x, &x, &x, heads, None));
                attention_sm90::SWITCH.set_enabled(true);
            }),
        ),
        (
            "cross attention to 512 tokens",
            1.0,
            ms(|| drop(attention(&x, &ctx, &ctx, heads, None))),
        ),
        (
            "  variant: cross attention to the longer prompt's rows + one counted for its padding",
            1.0,
            ms(|| {
                drop(attention_repeated_last_key(
                    &x, &kept, &kept, heads, &padding,
                ))
            }),
        ),
        ("rms_norm (x2: q, k)", 2.0, ms(|| drop(rms_norm(&x, &gain)))),
        (
            "  fused: rms_norm (x1: cross attention q)",
            1.0,
            ms(|| drop(fused::rms_norm(&x, &gain, 1e-6).unwrap())),
        ),
        (
            "rope in float32 (x2: q, k)",
            2.0,
            ms(|| drop(apply_rope(&split, &freqs))),
        ),
        (
            "  fused: rms_norm + rope (x2: q, k)",
            2.0,
            ms(|| drop(rms_norm_rope(&x, &gain, &freqs, heads, 1e-6).unwrap())),
        ),
        (
            "  fused: the FFN's gated residual + the next norm1 + modulate",
            1.0,
            ms(|| fused(residual(Some(&gate)), modulate)),
        ),
        (
            "  fused: attention's gated residual + affine norm3",
            1.0,
            ms(|| fused(residual(Some(&gate)), affine)),
        ),
        (
            "  fused: cross attention's residual + norm2 + modulate",
            1.0,
            ms(|| fused(residual(None), modulate)),
        ),
        (
            "layer_norm (x3)",
            3.0,
            ms(|| drop(layer_norm(&x, None, 1e-6))),
        ),
        (
            "modulate addcmul (x2: shift/scale after the two LayerNorms)",
            2.0,
            ms(|| drop(e.addcmul(&x, &(&e + 1.0)))),
        ),
        (
            "gated residual addcmul (x2)",
            2.0,
            ms(|| drop(x.addcmul(&x, &gate))),
        ),
        (
            "residual add (x1: cross attention)",
            1.0,
            ms(|| drop(&x + &y)),
        ),
    ];
    println!("\nOne block at 81 frames, CFG batch 2, fp16 (x30 blocks per step):");
    println!("| op | ms per call | calls per block | ms per step (x30) |");
    println!("| --- | --- | --- | --- |");
    let mut total = 0.0;
    for (name, calls, t) in rows {
        if !name.starts_with("  ") {
            total += t * calls * 30.0;
        }
        println!("| {name} | {t:.3} | {calls} | {:.1} |", t * calls * 30.0);
    }
    println!("| sum (rows without the fused and variant rows) | | | {total:.1} |");
    Ok(())
}

/// `--lowvram` with nothing resident: every block is copied from pinned host memory on each
/// forward. Checks the output equals the resident model's, then times a step.
fn streamed_blocks(file: &SafetensorsFile) -> Result<()> {
    let device = Device::Cuda(0);
    let load = |resident_bytes| {
        let mut weights = Weights::new(file, "", SERVER_DTYPE, device)?;
        weights.placement = Placement {
            device,
            resident_bytes,
        };
        WanModel::load(&weights, CONFIG.clone())
    };
    let (x, t, context) = step_inputs(33);
    let resident = load(u64::MAX)?;
    let expected = resident.forward(&x, &t, &context, None)?;
    drop(resident);
    empty_cache();
    let model = load(0)?;
    let same = model.forward(&x, &t, &context, None)?.equal(&expected);
    ensure!(
        same,
        "the streamed model's output differs from the resident one's"
    );
    println!("\nfp16, all 30 blocks streamed (`--lowvram`), output equal to the resident model's:");
    println!("| frames | s/step | peak GPU GB |");
    println!("| --- | --- | --- |");
    for frames in [33i64, 81] {
        let (seconds, peak_bytes) = step_seconds(&model, &step_inputs(frames), DEFAULT)?;
        println!(
            "| {frames} | {seconds:.3} | {:.1} |",
            peak_bytes as f64 / 1e9
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    // Warnings and errors on stderr: a kernel that fails falls back to libtorch, and says so.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    ensure!(tch::Cuda::is_available(), "this bench needs a CUDA GPU");
    let _guard = tch::no_grad_guard();
    prefer_cudnn_attention()?;
    ensure!(
        available(Device::Cuda(0)),
        "the fused kernels did not build"
    );
    let (bf16_peak, fp8_peak, attention_peak) = measured_peaks();
    let hopper_attention = attention_sm90::SWITCH.in_use(Device::Cuda(0));
    let hopper_gemm = gemm_sm90::SWITCH.in_use(Device::Cuda(0));
    println!(
        "Hopper attention kernel: {}",
        if hopper_attention {
            "loaded (its rows run it)"
        } else {
            "not available here (its rows run SDPA)"
        }
    );
    println!(
        "Hopper bias-GELU GEMM: {}",
        if hopper_gemm {
            "loaded (its rows run it)"
        } else {
            "not available here (its rows run cuBLAS + GELU)"
        }
    );
    let dir =
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let path = Path::new(&dir).join("wan_1_3b_bench.safetensors");
    let start = Instant::now();
    write_checkpoint(&path)?;
    println!(
        "random 1.3B checkpoint written in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let file = SafetensorsFile::open(&path)?;
    println!(
        "| weights | frames | tokens | path | s/step (CFG, batch 2) | peak GPU GB | roofline s | ratio | ComfyUI 0.3.64 fp16 s/step | speed-up |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut accuracy = String::new();
    for (name, dtype, cast) in WEIGHTS {
        let mut weights = Weights::new(&file, "", dtype, Device::Cuda(0))?;
        weights.cast_linear = cast;
        let start = Instant::now();
        let model = WanModel::load(&weights, CONFIG.clone())?;
        tch::Cuda::synchronize(0);
        println!(
            "<!-- {name} loaded in {:.2} s -->",
            start.elapsed().as_secs_f64()
        );
        let gemm_peak = if cast.is_some() { fp8_peak } else { bf16_peak };
        // Every fast-path setting on the server's own precision; the default elsewhere.
        let variants: &[Variant] = if dtype == SERVER_DTYPE && cast.is_none() {
            &VARIANTS
        } else {
            &[DEFAULT]
        };
        for frames in [33i64, 81] {
            let tokens = ((frames - 1) / 4 + 1) * 30 * 52;
            let (gemm, attention) = flops(&CONFIG, 2, tokens, 512);
            let roofline = gemm / gemm_peak + attention / attention_peak;
            let comfyui = COMFYUI_SECONDS_PER_STEP
                .iter()
                .find(|(f, _)| *f == frames)
                .map(|(_, s)| *s);
            let (inputs, distinct) = (step_inputs(frames), distinct_inputs(frames));
            // Every path on the template's inputs, then the default on inputs sharing nothing:
            // what the shared stream start and the padding as one key save.
            let runs = variants
                .iter()
                .map(|v| (*v, v.name.to_string(), &inputs))
                .chain([(
                    DEFAULT,
                    format!("{}, inputs sharing nothing", DEFAULT.name),
                    &distinct,
                )]);
            for (variant, label, inputs) in runs {
                let (seconds, peak_bytes) = step_seconds(&model, inputs, variant)?;
                let (comfyui, speedup) = match (cast, comfyui) {
                    (None, Some(c)) => (format!("{c}"), format!("{:.2}×", c / seconds)),
                    _ => ("–".into(), "–".into()),
                };
                println!(
                    "| {name} | {frames} | {tokens} | {label} | {seconds:.3} | {:.1} | {roofline:.3} | {:.2} | {comfyui} | {speedup} |",
                    peak_bytes as f64 / 1e9,
                    seconds / roofline
                );
            }
        }
        if cast.is_none() {
            accuracy += &accuracy_against_float32(&file, &model, dtype, 33)?;
        }
        drop(model);
        empty_cache();
    }
    println!("{accuracy}");
    ensure!(
        gemm_sm90::SWITCH.in_use(Device::Cuda(0)) == hopper_gemm
            && attention_sm90::SWITCH.in_use(Device::Cuda(0)) == hopper_attention,
        "a Hopper kernel failed on the way, and libtorch ran its rows (see the log)"
    );
    streamed_blocks(&file)?;
    std::fs::remove_file(&path)?;
    breakdown()
}
