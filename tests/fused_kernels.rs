//! The fused per-token ops (`runtime::fused`) against their formulas in float64, on every device
//! present: on the CPU that checks the libtorch chain they fall back to, on a CUDA GPU the
//! NVRTC-compiled kernels themselves. And the kernel source compiles for Hopper and for the
//! newest architecture this NVRTC has (GB10's sm_121 where it knows it), with no GPU needed.

mod devices;

use devices::devices;
use tch::{Device, Kind, Tensor};
use videosdgx::models::wan::dit::rope_grid;
use videosdgx::runtime::fused::{
    self, layer_norm, per_token, quantize_e4m3, residual_layer_norm, rms_norm_rope,
    rms_norm_split_rope, Norm, Residual, E4M3_MAX,
};
use videosdgx::runtime::nvrtc;

/// Unit roundoff of each storage kind, plus float32's for the reductions.
fn roundoff(kind: Kind) -> f64 {
    match kind {
        Kind::BFloat16 => 2f64.powi(-8),
        Kind::Half => 2f64.powi(-11),
        _ => 2f64.powi(-20),
    }
}

/// The absolute part of the rounding bound: near zero, half precision rounds to a fixed grid of
/// subnormals (2⁻²⁴ apart), so two roundings there can each miss by half of that step.
fn subnormal_step(kind: Kind) -> f64 {
    match kind {
        Kind::Half => 2f64.powi(-24),
        _ => 1e-9,
    }
}

/// Every `|out − reference| ≤ bound`, elementwise.
fn assert_within(out: &Tensor, reference: &Tensor, bound: &Tensor, what: &str) {
    let excess = (out.to_device(Device::Cpu).to_kind(Kind::Double) - reference).abs() - bound;
    let worst = excess.max().double_value(&[]);
    assert!(worst <= 0.0, "{what}: exceeds its bound by {worst}");
}

fn rms_rope_reference(x: &Tensor, w: &Tensor, freqs: &Tensor, heads: i64) -> (Tensor, Tensor) {
    let (b, s, width) = x.size3().unwrap();
    let x = x.to_kind(Kind::Double);
    let rms = (x.square().mean_dim(-1, true, Kind::Double) + 1e-6).rsqrt();
    let n = (&x * rms * w.to_kind(Kind::Double)).view([b, s, heads, -1, 2]);
    let rot = freqs.view_as_real().to_kind(Kind::Double).unsqueeze(0);
    let (c, sn) = (rot.select(-1, 0), rot.select(-1, 1));
    let (a, bb) = (n.select(-1, 0), n.select(-1, 1));
    let out = Tensor::stack(&[&a * &c - &bb * &sn, &a * &sn + &bb * &c], -1);
    // Rounding of the normed pair and of the result: ≤ 3ε·max(|a|, |b|).
    let size = a.abs().maximum(&bb.abs()).unsqueeze(-1) * 3.0;
    (
        out.view([b, s, width]),
        size.expand_as(&n).reshape([b, s, width]),
    )
}

/// Two layouts: rows of one vector per thread, and Wan 1.3B's 12 heads of 128 (six per thread);
/// each row a slice of a wider one.
#[test]
fn rms_norm_rope_follows_its_formula_on_every_device() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(7);
    let b = 2;
    let (t, h, w) = (2, 3, 5);
    let s = t * h * w;
    for device in devices() {
        if device.is_cuda() {
            assert!(
                fused::available(device),
                "kernels did not build on {device:?}"
            );
        }
        for (kind, (heads, head_dim)) in [Kind::Float, Kind::BFloat16, Kind::Half]
            .into_iter()
            .flat_map(|k| [(k, (3, 24)), (k, (12, 128)), (k, (40, 128))])
        {
            // The middle third of a wider row, as the key of a stacked q/k/v projection is.
            let width = heads * head_dim;
            let x = (Tensor::randn([b, s, 3 * width], (Kind::Float, device)) * 3.0)
                .to_kind(kind)
                .narrow(2, width, width);
            let gain =
                (Tensor::rand([heads * head_dim], (Kind::Float, device)) + 0.5).to_kind(kind);
            let freqs = rope_grid(t, h, w, head_dim, kind, device);
            let out = rms_norm_rope(&x, &gain, &freqs, heads, 1e-6).unwrap();
            assert_eq!(out.size(), x.size());
            assert_eq!(out.kind(), kind);
            let (reference, size) = rms_rope_reference(
                &x.to_device(Device::Cpu),
                &gain.to_device(Device::Cpu),
                &freqs.to_device(Device::Cpu),
                heads,
            );
            let bound = size * roundoff(kind) + subnormal_step(kind);
            assert_within(
                &out,
                &reference,
                &bound,
                &format!("rms_norm_rope {kind:?} {heads}x{head_dim} {device:?}"),
            );
        }
    }
}

/// LTX's split rotation: heads of 2·half elements, element i turned with i + half, an angle per
/// token, head and i; with a row sliced out of a wider one, LTX-2's video (32×128) and audio
/// (32×64) widths and a small one.
#[test]
fn rms_norm_split_rope_follows_its_formula_on_every_device() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(11);
    let (b, s) = (2, 30);
    for device in devices() {
        for (kind, (heads, half)) in [Kind::Float, Kind::BFloat16, Kind::Half]
            .into_iter()
            .flat_map(|k| [(k, (2, 8)), (k, (32, 64)), (k, (32, 32))])
        {
            let width = heads * 2 * half;
            let x = (Tensor::randn([b, s, 2 * width], (Kind::Float, device)) * 3.0)
                .to_kind(kind)
                .narrow(2, width, width);
            let gain = (Tensor::rand([width], (Kind::Float, device)) + 0.5).to_kind(kind);
            let angle = Tensor::rand([1, s, heads, half], (Kind::Float, device)) * 6.3;
            let (cos, sin) = (angle.cos(), angle.sin());
            let out = rms_norm_split_rope(&x, &gain, (&cos, &sin), 1e-5).unwrap();
            assert_eq!((out.size(), out.kind()), (x.size(), kind));

            let cpu = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
            let xd = cpu(&x);
            let rms = (xd.square().mean_dim(-1, true, Kind::Double) + 1e-5).rsqrt();
            let n = (&xd * rms * cpu(&gain)).view([b, s, heads, 2, half]);
            let (c, sn) = (cpu(&cos), cpu(&sin));
            let (first, second) = (n.select(3, 0), n.select(3, 1));
            let reference = Tensor::stack(
                &[&first * &c - &second * &sn, &second * &c + &first * &sn],
                3,
            )
            .view([b, s, width]);
            // Rounding of the normed pair and of the result: ≤ 3ε·max(|a|, |b|).
            let size = (first.abs().maximum(&second.abs()) * 3.0)
                .unsqueeze(3)
                .expand([b, s, heads, 2, half], false)
                .reshape([b, s, width]);
            let bound = size * roundoff(kind) + subnormal_step(kind);
            assert_within(
                &out,
                &reference,
                &bound,
                &format!("rms_norm_split_rope {kind:?} {heads}x{half} {device:?}"),
            );
        }
    }
}

/// The norm alone (Wan's cross-attention query and key), on a slice of wider rows and on
/// contiguous ones, one and six vectors per thread, one warp and four (Wan 14B).
#[test]
fn rms_norm_follows_its_formula_on_every_device() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(12);
    for device in devices() {
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            for (width, sliced) in [(40, true), (1536, true), (1536, false), (5120, true)] {
                let wide =
                    (Tensor::randn([2, 9, 2 * width], (Kind::Float, device)) * 3.0).to_kind(kind);
                let x = match sliced {
                    true => wide.narrow(2, 0, width),
                    false => wide.narrow(2, 0, width).contiguous(),
                };
                let gain = (Tensor::rand([width], (Kind::Float, device)) + 0.5).to_kind(kind);
                let out = fused::rms_norm(&x, &gain, 1e-6).unwrap();
                assert_eq!((out.size(), out.kind()), (x.size(), kind));
                let xd = x.to_device(Device::Cpu).to_kind(Kind::Double);
                let rms = (xd.square().mean_dim(-1, true, Kind::Double) + 1e-6).rsqrt();
                let reference = xd * rms * gain.to_device(Device::Cpu).to_kind(Kind::Double);
                // libtorch rounds the normalised row and its product with the gain: ≤ 2 ε.
                let bound = reference.abs() * (2.0 * roundoff(kind)) + subnormal_step(kind);
                let what = format!("rms_norm {kind:?} width {width} sliced {sliced} {device:?}");
                assert_within(&out, &reference, &bound, &what);
            }
        }
    }
}

/// `layer_norm(r)` over the last dimension in float64, without affine.
fn normalized(r: &Tensor) -> Tensor {
    let mean = r.mean_dim(-1, true, Kind::Double);
    let var = (r - &mean).square().mean_dim(-1, true, Kind::Double);
    (r - mean) * (var + 1e-6).rsqrt()
}

/// `x / rms(x)` over the last dimension in float64.
fn rms_normalized(r: &Tensor) -> Tensor {
    r * (r.square().mean_dim(-1, true, Kind::Double) + 1e-6).rsqrt()
}

/// Wan's modulated LayerNorm and LTX's modulated RMS norm (`rms`, whose product is rounded too).
#[test]
fn layer_norm_modulate_follows_its_formula_for_every_row_layout() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(8);
    let (b, tokens) = (2, 21);
    for device in devices() {
        for (kind, rms) in [Kind::Float, Kind::BFloat16, Kind::Half]
            .into_iter()
            .flat_map(|k| [(k, false), (k, true)])
        {
            // One row for all tokens, one per frame of 7, and 4 rows over 21 tokens (⌈21/4⌉ each);
            // rows of one vector per thread, and of several per thread over two warps.
            for (width, rows) in [(40, 1), (40, 3), (40, 4), (40, tokens), (1576, 3)] {
                let x = (Tensor::randn([b, tokens, width], (Kind::Float, device)) * 2.0 + 0.5)
                    .to_kind(kind);
                let shift = Tensor::randn([b, rows, width], (Kind::Float, device)).to_kind(kind);
                let scale =
                    (Tensor::randn([b, rows, width], (Kind::Float, device)) * 0.3).to_kind(kind);
                let norm = match rms {
                    false => Norm::Modulate {
                        shift: &shift,
                        scale: &scale,
                    },
                    true => Norm::RmsModulate {
                        shift: &shift,
                        scale: &scale,
                    },
                };
                let out = layer_norm(&x, norm, 1e-6).unwrap();
                assert_eq!(out.size(), x.size());
                let cpu =
                    |t: &Tensor| per_token(&t.to_device(Device::Cpu).to_kind(Kind::Double), tokens);
                let xd = x.to_device(Device::Cpu).to_kind(Kind::Double);
                let n = if rms {
                    rms_normalized(&xd)
                } else {
                    normalized(&xd)
                };
                let s1 = cpu(&scale) + 1.0;
                let reference = cpu(&shift) + &n * &s1;
                // Roundings of the norm, of scale + 1 (and of their product) and of the sum.
                let roundings = if rms { 3.0 } else { 2.0 };
                let bound =
                    ((&n * &s1).abs() * roundings + reference.abs()) * roundoff(kind) + 1e-6;
                assert_within(
                    &out,
                    &reference,
                    &bound,
                    &format!(
                        "modulated norm (rms {rms}) {kind:?} width {width} rows {rows} {device:?}"
                    ),
                );
            }
        }
    }
}

/// The residual add and the LayerNorm after it, in every combination: the sum against its
/// formula, then the norm against its formula applied to the sum the op returned (which is
/// rounded to the storage kind before it is normalised, as in libtorch's chain). Three widths:
/// one vector per thread, and several per thread over two warps (Wan 1.3B) and four (14B).
#[test]
fn residual_layer_norm_follows_its_formula_for_every_combination() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(9);
    let (b, tokens) = (2, 21);
    for device in devices() {
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            for (width, rows, gated, modulated) in [
                (40, 1, true, true),
                (40, 3, true, false),
                (40, 4, false, true),
                (40, tokens, true, true),
                (40, 1, false, false),
                (1576, 3, true, true),
                (1576, 1, false, false),
                (5120, 3, true, true),
            ] {
                let make = |shape: &[i64], scale: f64| {
                    (Tensor::randn(shape, (Kind::Float, device)) * scale).to_kind(kind)
                };
                let (x, y) = (
                    make(&[b, tokens, width], 2.0),
                    make(&[b, tokens, width], 1.0),
                );
                let gate = make(&[b, rows, width], 1.0);
                let (p, q) = if modulated {
                    (make(&[b, rows, width], 1.0), make(&[b, rows, width], 0.3))
                } else {
                    (make(&[width], 1.0), make(&[width], 1.0))
                };
                let residual = Residual {
                    y: &y,
                    gate: gated.then_some(&gate),
                };
                let norm = if modulated {
                    Norm::Modulate {
                        shift: &p,
                        scale: &q,
                    }
                } else {
                    Norm::Affine {
                        weight: &p,
                        bias: &q,
                    }
                };
                let (r, h) = residual_layer_norm(&x, residual, norm, 1e-6).unwrap();
                assert_eq!((r.size(), h.size()), (x.size(), x.size()));
                assert_eq!((r.kind(), h.kind()), (kind, kind));
                let what = format!(
                    "{kind:?} width {width} rows {rows} gated {gated} modulated {modulated} \
                     {device:?}"
                );
                let cpu = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
                let added = match gated {
                    true => cpu(&y) * per_token(&cpu(&gate), tokens),
                    false => cpu(&y),
                };
                let sum = cpu(&x) + &added;
                // One rounding of the sum to the storage kind (the float32 product's is below it).
                let bound = sum.abs() * roundoff(kind)
                    + added.abs() * 2f64.powi(-23)
                    + subnormal_step(kind);
                assert_within(&r, &sum, &bound, &format!("residual, {what}"));

                let n = normalized(&cpu(&r));
                let u = roundoff(kind);
                let (reference, bound) = if modulated {
                    let s1 = per_token(&cpu(&q), tokens) + 1.0;
                    let reference = per_token(&cpu(&p), tokens) + &n * &s1;
                    // Roundings of the norm, of scale + 1 and of the sum.
                    let bound = ((&n * &s1).abs() * 2.0 + reference.abs()) * u + 1e-6;
                    (reference, bound)
                } else {
                    let scaled = &n * cpu(&p);
                    let reference = &scaled + cpu(&q);
                    // One rounding of the result; float32 arithmetic below it.
                    let bound = (scaled.abs() + reference.abs()) * u + 1e-6;
                    (reference, bound)
                };
                assert_within(&h, &reference, &bound, &format!("norm, {what}"));
            }
        }
    }
}

/// Bit for bit what clamp + cast gives: saturation at ±448 (and for ±∞), round to nearest even
/// (ties included: 0.5·2⁻⁶ steps), subnormals, zero signs.
/// The Wan VAE's channel norm on video activations and on the attention block's frames, with
/// and without SiLU; one layout (30 positions) the kernel leaves to libtorch.
#[test]
fn channel_rms_norm_follows_its_formula_on_every_device() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(11);
    let shapes: [&[i64]; 3] = [&[2, 96, 3, 4, 8], &[3, 16, 4, 6], &[1, 24, 2, 5, 3]];
    for device in devices() {
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            for shape in shapes {
                let channels = shape[1];
                let x = Tensor::randn(shape, (kind, device)) * 3.0;
                let mut gamma_shape = vec![channels];
                gamma_shape.resize(shape.len() - 1, 1);
                let gamma =
                    (Tensor::rand(gamma_shape.as_slice(), (kind, device)) + 0.5).to_kind(kind);
                let xd = x.to_device(Device::Cpu).to_kind(Kind::Double);
                let gd = gamma.to_device(Device::Cpu).to_kind(Kind::Double);
                let norm = xd.square().sum_dim_intlist(1, true, Kind::Double).sqrt();
                let y = &xd / norm * (gd * (channels as f64).sqrt());
                // Five roundings of the chain (norm, quotient, γ·√c, product, SiLU), each
                // relative to at most |y|; SiLU is 1.1-Lipschitz and |silu(y)| ≤ |y|.
                let bound = y.abs() * (6.0 * roundoff(kind)) + subnormal_step(kind);
                for silu in [false, true] {
                    let out = fused::channel_rms_norm(&x, &gamma, silu);
                    assert_eq!(out.size(), shape);
                    let reference = if silu { y.silu() } else { y.shallow_clone() };
                    let what = format!("{device:?} {kind:?} {shape:?} silu {silu}");
                    assert_within(&out, &reference, &bound, &what);
                }
            }
        }
    }
}

#[test]
fn quantize_e4m3_equals_clamp_and_cast_bit_for_bit() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(10);
    let special = Tensor::from_slice(&[
        0f32,
        -0.0,
        448.0,
        -448.0,
        460.0,
        -1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0 + 1.0 / 16.0,
        1.0 + 3.0 / 16.0,
        2f32.powi(-9),
        3.0 * 2f32.powi(-10),
        2f32.powi(-12),
        -2.5 * 2f32.powi(-9),
        17.0,
        18.0,
    ]);
    for device in devices() {
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            let x = Tensor::cat(
                &[
                    special.to_device(device),
                    Tensor::randn([4096], (Kind::Float, device)) * 100.0,
                ],
                0,
            )
            .to_kind(kind)
            .view([2, -1, 8]);
            let fused = quantize_e4m3(&x).unwrap();
            let chain = x.clamp(-E4M3_MAX, E4M3_MAX).to_kind(Kind::Float8e4m3fn);
            let bits = |t: &Tensor| t.view_dtype(Kind::Uint8).to_device(Device::Cpu);
            assert_eq!(fused.size(), x.size());
            assert!(
                bits(&fused).equal(&bits(&chain)),
                "quantize_e4m3 {kind:?} on {device:?} differs from clamp + cast"
            );
            // `_scaled_mm` takes row-major operands only: a strided input comes back row-major.
            let strided = x.transpose(0, 2);
            let out = quantize_e4m3(&strided).unwrap();
            assert!(out.is_contiguous(), "{kind:?} on {device:?}");
            assert!(bits(&out).equal(&bits(&chain.transpose(0, 2).contiguous())));
        }
    }
}

#[test]
fn the_kernels_compile_for_hopper_and_the_newest_architecture_without_a_gpu() {
    let newest = nvrtc::architecture_for((12, 1)).unwrap();
    assert!(
        newest >= 120,
        "this NVRTC cannot target Blackwell: {newest}"
    );
    assert_eq!(nvrtc::architecture_for((9, 0)).unwrap(), 90);
    for arch in [90, newest] {
        let ptx = nvrtc::compile_ptx(fused::SOURCE, "fused_kernels.cu", arch).unwrap();
        let ptx = String::from_utf8_lossy(&ptx);
        for name in fused::entry_names() {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{name} missing for compute_{arch}"
            );
        }
    }
    let broken = nvrtc::compile_ptx(
        "extern \"C\" __global__ void k() { undefined(); }",
        "broken.cu",
        90,
    );
    assert!(broken.unwrap_err().to_string().contains("undefined"));
}
