//! FP8 and NVFP4 linear layers: ComfyUI's two execution paths reproduced on a fixture written by
//! PyPI torch (tests/python/linear_fixtures.py), and every path within its format's error bound
//! of the full-precision layer, on the CPU and (when present) on a CUDA GPU. INT8 layers (plain
//! and ConvRot) against comfy-kitchen's own quantization and `int8_linear`
//! (tests/python/int8_fixtures.py).

mod devices;

use devices::devices;
use std::collections::BTreeMap;

mod reference;

use serde_json::Value;
use tch::{Device, Kind, Tensor};
use videosdgx::runtime::linear::{Kernel, Linear, LinearWeight};
use videosdgx::runtime::quant::quantized_layers;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

struct Fixture {
    _dir: tempfile::TempDir,
    file: SafetensorsFile,
    reference: Value,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let reference = reference::run_into("linear_fixtures.py", dir.path());
    let file = SafetensorsFile::open(&dir.path().join("linear.safetensors")).unwrap();
    Fixture {
        _dir: dir,
        file,
        reference: serde_json::from_slice(&reference).unwrap(),
    }
}

impl Fixture {
    fn layer(&self, name: &str, shape: (i64, i64), device: Device) -> Linear {
        let layers = quantized_layers(&self.file, "").unwrap();
        Linear::load(&self.file, &layers, name, shape, Kind::BFloat16, device).unwrap()
    }

    fn tensor(&self, name: &str, device: Device) -> Tensor {
        self.file.tensor(name, device).unwrap().to_kind(Kind::Float)
    }

    fn expected(&self, key: &str) -> Vec<f32> {
        self.reference[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1)).unwrap()
}

/// Asserts `|ŷ − y| ≤ |x̂ − x|·|ŵ|ᵀ + |x|·E_wᵀ + 2⁻⁸(|x|·|w|ᵀ + |b|)`: the activation and
/// weight errors the format allows (`x_err`, `w_err`, elementwise bounds) plus the bfloat16
/// output rounding; `y` is the exact layer in float32. A worst-case bound, so it only catches
/// gross errors (the nibble-swap check below); the exact comparisons with ComfyUI's paths catch
/// subtle ones.
fn assert_within_bound(
    out: &Tensor,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    x_err: &Tensor,
    w_err: &Tensor,
) {
    let exact = x.linear(w, Some(b));
    let bound = x_err.matmul(&(w.abs() + w_err).tr())
        + x.abs().matmul(&w_err.tr())
        + (x.abs().matmul(&w.abs().tr()) + b.abs()) * 2f64.powi(-8);
    let err = (out.to_kind(Kind::Float) - &exact).abs();
    let excess = (&err - &bound).max().double_value(&[]);
    assert!(
        excess <= 0.0,
        "error exceeds the format bound by {excess} (max error {}, max bound {})",
        err.max().double_value(&[]),
        bound.max().double_value(&[])
    );
}

/// The GPU accumulates in another order than the CPU (float32 sums of K products differ by at
/// most K·2⁻²⁴·Σ|x||w|) and may fuse the bias where the CPU rounds the product to bfloat16 first
/// (one 2⁻⁸ rounding of |y| + |b| per side); nothing else may differ.
fn assert_close_to_cpu(out: &Tensor, expected: &Tensor, x: &Tensor, w: &Tensor, b: &Tensor) {
    let (a, e) = (out.to_kind(Kind::Float), expected.to_kind(Kind::Float));
    let k = x.size()[x.dim() - 1] as f64;
    let magnitude = a.abs().maximum(&e.abs()) + b.abs();
    let tolerance =
        magnitude * 2f64.powi(-7) + x.abs().matmul(&w.abs().tr()) * (k * 2f64.powi(-24));
    let excess = ((a - e).abs() - tolerance).max().double_value(&[]);
    assert!(
        excess <= 0.0,
        "GPU and CPU differ beyond rounding: {excess}"
    );
}

/// FP8 e4m3 round-to-nearest: relative 2⁻⁴ for normals, half the subnormal spacing (2⁻¹⁰)
/// times the scale below them; plus one bfloat16 rounding where the value is materialized.
fn fp8_error(t: &Tensor, scale: f64) -> Tensor {
    t.abs() * (2f64.powi(-4) + 2f64.powi(-8)) + scale * 2f64.powi(-10)
}

#[test]
fn fp8_layers_reproduce_comfyui_emulated_and_scaled_mm_outputs() {
    let _guard = tch::no_grad_guard();
    let f = fixture();
    let x = f.tensor("input.x96", Device::Cpu).to_kind(Kind::BFloat16);
    let cases = [
        ("fp8", Kernel::Dequantize, "fp8/emulated"),
        ("fp8", Kernel::ScaledMm, "fp8/scaled_mm"),
        ("fp8_in", Kernel::ScaledMm, "fp8_in/scaled_mm"),
    ];
    for (layer, kernel, key) in cases {
        let linear = f.layer(layer, (48, 96), Device::Cpu).with_kernel(kernel);
        let out = linear.forward(&x).unwrap();
        assert_eq!(out.size(), [2, 19, 48]);
        assert_eq!(out.kind(), Kind::BFloat16);
        assert_eq!(values(&out), f.expected(key), "{key}");
    }
}

#[test]
fn nvfp4_layer_reproduces_comfyui_emulated_output() {
    let _guard = tch::no_grad_guard();
    let f = fixture();
    let x = f.tensor("input.x90", Device::Cpu).to_kind(Kind::BFloat16);
    let linear = f.layer("nvfp4", (50, 90), Device::Cpu);
    assert_eq!(linear.kernel(), Kernel::Dequantize);
    let out = linear.forward(&x).unwrap();
    assert_eq!(out.size(), [2, 19, 50]);
    assert_eq!(values(&out), f.expected("nvfp4/emulated"));
}

#[test]
fn fp8_layers_stay_within_the_e4m3_bound_on_every_device() {
    let _guard = tch::no_grad_guard();
    let f = fixture();
    for device in devices() {
        let x = f.tensor("input.x96", device);
        let w = f.tensor("reference.fp8.weight", device);
        let b = f.tensor("reference.fp8.bias", device);
        let weight_scale = f.tensor("fp8.weight_scale", device).double_value(&[]);
        let input_scale = f.tensor("fp8_in.input_scale", device).double_value(&[]);
        let w_err = fp8_error(&w, weight_scale);
        let exact_x = x.zeros_like();
        for (layer, kernel, x_err) in [
            ("fp8", Kernel::Dequantize, exact_x),
            ("fp8", Kernel::ScaledMm, fp8_error(&x, 1.0)),
            ("fp8_in", Kernel::ScaledMm, fp8_error(&x, input_scale)),
        ] {
            let linear = f.layer(layer, (48, 96), device).with_kernel(kernel);
            let out = linear.forward(&x.to_kind(Kind::BFloat16)).unwrap();
            assert_within_bound(&out, &x, &w, &b, &x_err, &w_err);
            if device != Device::Cpu {
                let cpu = f.layer(layer, (48, 96), Device::Cpu).with_kernel(kernel);
                let expected = cpu.forward(&x.to_kind(Kind::BFloat16).to_device(Device::Cpu));
                let cpu_args = [&x, &w, &b].map(|t| t.to_device(Device::Cpu));
                let [xc, wc, bc] = &cpu_args;
                assert_close_to_cpu(&out.to_device(Device::Cpu), &expected.unwrap(), xc, wc, bc);
            }
        }
    }
}

/// Per element, NVFP4 rounds to the E2M1 grid scaled by global·block scale, whose widest gap
/// (4 → 6) is 2: at most 1·global·block away (clamping at 6 after the e4m3 block-scale rounding
/// stays inside that too), plus the bfloat16 rounding of the dequantized weight.
fn nvfp4_error(linear: &Linear, w: &Tensor) -> Tensor {
    let LinearWeight::Nvfp4 {
        packed,
        block_scale,
        global_scale,
        shape,
    } = &linear.weight
    else {
        panic!("not an nvfp4 layer");
    };
    // Every code 2 (E2M1 value 1.0): dequantizing gives global·block per element.
    let ones = packed.full_like(0x22);
    let step = videosdgx::runtime::quant::dequantize_nvfp4(
        &ones,
        block_scale,
        global_scale,
        *shape,
        Kind::Float,
    )
    .unwrap();
    step + w.abs() * 2f64.powi(-8)
}

#[test]
fn nvfp4_layer_stays_within_the_e2m1_bound_and_a_nibble_swap_breaks_it() {
    let _guard = tch::no_grad_guard();
    let f = fixture();
    for device in devices() {
        let x = f.tensor("input.x90", device);
        let w = f.tensor("reference.nvfp4.weight", device);
        let b = f.tensor("reference.nvfp4.bias", device);
        let linear = f.layer("nvfp4", (50, 90), device);
        let w_err = nvfp4_error(&linear, &w);
        let out = linear.forward(&x.to_kind(Kind::BFloat16)).unwrap();
        assert_within_bound(&out, &x, &w, &b, &x.zeros_like(), &w_err);

        // Low nibble first is the classic misreading; the bound must catch it.
        let LinearWeight::Nvfp4 {
            packed,
            block_scale,
            global_scale,
            shape,
        } = linear.weight
        else {
            unreachable!()
        };
        let p = packed.to_kind(Kind::Int64);
        let swapped = (p.remainder(16) * 16 + p.floor_divide_scalar(16)).to_kind(Kind::Uint8);
        let wrong = Linear::new(
            LinearWeight::Nvfp4 {
                packed: swapped,
                block_scale,
                global_scale,
                shape,
            },
            Some(b.to_kind(Kind::BFloat16)),
        );
        let out = wrong.forward(&x.to_kind(Kind::BFloat16)).unwrap();
        let result = std::panic::catch_unwind(|| {
            assert_within_bound(&out, &x, &w, &b, &x.zeros_like(), &w_err)
        });
        assert!(result.is_err(), "a nibble swap went unnoticed");
    }
}

#[test]
fn kernels_follow_the_device_and_the_file() {
    let f = fixture();
    // No FP8 tensor cores on the CPU: ComfyUI emulates there.
    assert_eq!(
        f.layer("fp8", (48, 96), Device::Cpu).kernel(),
        Kernel::Dequantize
    );
    if tch::Cuda::is_available() {
        let cc = videosdgx::system::compute_capability(0).unwrap();
        let expected = if cc >= (8, 9) {
            Kernel::ScaledMm
        } else {
            Kernel::Dequantize
        };
        assert_eq!(f.layer("fp8", (48, 96), Device::Cuda(0)).kernel(), expected);
    }
    let mut layers = quantized_layers(&f.file, "").unwrap();
    layers.get_mut("fp8").unwrap().full_precision_matrix_mult = true;
    let full = Linear::load(
        &f.file,
        &layers,
        "fp8",
        (48, 96),
        Kind::BFloat16,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(full.kernel(), Kernel::Dequantize);
    let err = Linear::load(
        &f.file,
        &BTreeMap::new(),
        "reference.fp8",
        (96, 48),
        Kind::Float,
        Device::Cpu,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("expected [96, 48]"), "{err}");
}

#[test]
fn a_dense_layer_and_a_cast_to_fp8_match_plain_matmuls() {
    let _guard = tch::no_grad_guard();
    let f = fixture();
    let x = f.tensor("input.x96", Device::Cpu).to_kind(Kind::Double);
    let w = f.tensor("reference.fp8.weight", Device::Cpu);
    let b = f.tensor("reference.fp8.bias", Device::Cpu);
    let dense = Linear::load(
        &f.file,
        &BTreeMap::new(),
        "reference.fp8",
        (48, 96),
        Kind::Double,
        Device::Cpu,
    )
    .unwrap();
    let expected = x.matmul(&w.to_kind(Kind::Double).tr()) + b.to_kind(Kind::Double);
    let diff = (dense.forward(&x).unwrap() - &expected).abs().max();
    assert_eq!(diff.double_value(&[]), 0.0);

    // UNETLoader's fp8_e4m3fn: scale 1, so the weight is the plain e4m3 rounding of w.
    let cast = Linear::cast_to_fp8(&w, Some(b.shallow_clone()), Kind::Float8e4m3fn, true);
    assert_eq!(
        cast.kernel(),
        Kernel::Dequantize,
        "no FP8 compute on the CPU"
    );
    let rounded = w.to_kind(Kind::Float8e4m3fn).to_kind(Kind::Float);
    let out = cast.forward(&x.to_kind(Kind::Float)).unwrap();
    let expected = x.to_kind(Kind::Float).linear(&rounded, Some(&b));
    let diff = (out - expected).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn a_lora_on_an_fp8_layer_merges_into_the_dequantized_weight() {
    let _guard = tch::no_grad_guard();
    let f = fixture();
    let linear = f.layer("fp8", (48, 96), Device::Cpu);
    tch::manual_seed(5);
    let up = Tensor::randn([48, 4], (Kind::Float, Device::Cpu));
    let down = Tensor::randn([4, 96], (Kind::Float, Device::Cpu));
    let expected_diff = up.mm(&down) * (0.7 * 2.0 / 4.0);
    let patch = videosdgx::runtime::lora::LoraPatch::LowRank {
        up,
        down,
        alpha: Some(2.0),
        reshape: None,
    };
    let merged = linear.with_lora(&[(&patch, 0.7)], Kind::Float).unwrap();
    let base = linear.dequantized(Kind::Float).unwrap();
    let expected = base + expected_diff;
    let got = merged.dequantized(Kind::Float).unwrap();
    let diff = (got - expected).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "{diff}");
    assert!(merged.bias.is_some());
}

/// `Linear::concat` (Wan's q/k/v as one GEMM): the stacked layer's output is its parts' outputs
/// side by side, dense or FP8 of one scale, kernel kept; parts that cannot share one GEMM (FP8
/// scales that differ, a bias on some parts only) are refused.
#[test]
fn stacked_layers_give_their_parts_outputs_side_by_side() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(11);
    let opts = (Kind::Double, Device::Cpu);
    let x = Tensor::randn([2, 5, 16], opts);
    let dense = |out: i64, bias: bool| {
        let b = bias.then(|| Tensor::randn([out], opts));
        Linear::new(LinearWeight::Dense(Tensor::randn([out, 16], opts)), b)
    };
    let side_by_side = |parts: &[&Linear], x: &Tensor| {
        Tensor::cat(
            &parts
                .iter()
                .map(|p| p.forward(x).unwrap())
                .collect::<Vec<_>>(),
            2,
        )
    };
    let (q, k, v) = (dense(8, true), dense(8, true), dense(4, true));
    let stacked = Linear::concat(&[&q, &k, &v]).expect("dense layers stack");
    assert_eq!(stacked.shape(), (20, 16));
    let diff = (stacked.forward(&x).unwrap() - side_by_side(&[&q, &k, &v], &x))
        .abs()
        .max();
    assert!(diff.double_value(&[]) < 1e-12);

    let x = x.to_kind(Kind::Float);
    let fp8 = |scale: f64| {
        // 16 outputs: `_scaled_mm` takes each part alone too (it wants multiples of 16).
        let w = Tensor::randn([16, 16], (Kind::Float, Device::Cpu));
        let layer = Linear::cast_to_fp8(&w, None, Kind::Float8e4m3fn, true);
        let LinearWeight::Fp8 { weight, .. } = layer.weight else {
            unreachable!("cast_to_fp8 makes an FP8 layer")
        };
        let scale = Tensor::from(scale as f32);
        let weight = LinearWeight::Fp8 {
            weight,
            scale,
            input_scale: None,
        };
        Linear::new(weight, None).with_kernel(Kernel::ScaledMm)
    };
    let (a, b) = (fp8(0.5), fp8(0.5));
    let stacked = Linear::concat(&[&a, &b]).expect("FP8 layers of one scale stack");
    assert_eq!(stacked.kernel(), Kernel::ScaledMm);
    let diff = (stacked.forward(&x).unwrap() - side_by_side(&[&a, &b], &x))
        .abs()
        .max();
    assert!(diff.double_value(&[]) < 1e-5, "{diff}");

    assert!(
        Linear::concat(&[&a, &fp8(0.25)]).is_none(),
        "FP8 scales differ"
    );
    assert!(
        Linear::concat(&[&q, &dense(8, false)]).is_none(),
        "a bias on one part only"
    );
    assert!(Linear::concat(&[&q, &a]).is_none(), "dense and FP8");
}

/// INT8 (`int8_tensorwise`) layers written by comfy-kitchen (tests/python/int8_fixtures.py).
struct Int8Fixture {
    _dir: tempfile::TempDir,
    file: SafetensorsFile,
    act: Tensor,
    reference: Value,
}

fn int8_fixture() -> Int8Fixture {
    let dir = tempfile::tempdir().unwrap();
    let reference = reference::run_into("int8_fixtures.py", dir.path());
    let file = SafetensorsFile::open(&dir.path().join("int8.safetensors")).unwrap();
    let act = SafetensorsFile::open(&dir.path().join("int8_act.safetensors"))
        .unwrap()
        .tensor("input.act", Device::Cpu)
        .unwrap();
    Int8Fixture {
        _dir: dir,
        file,
        act,
        reference: serde_json::from_slice(&reference).unwrap(),
    }
}

impl Int8Fixture {
    fn layer(&self, name: &str, dtype: Kind) -> Linear {
        let layers = quantized_layers(&self.file, "").unwrap();
        Linear::load(&self.file, &layers, name, (40, 64), dtype, Device::Cpu).unwrap()
    }

    fn expected(&self, key: &str) -> Tensor {
        let v: Vec<f32> = self.reference[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        Tensor::from_slice(&v)
    }
}

#[test]
fn int8_layers_reproduce_comfy_kitchens_int8_linear() {
    let f = int8_fixture();
    let x = f.file.tensor("input.x", Device::Cpu).unwrap();
    for (suffix, dtype) in [("f32", Kind::Float), ("bf16", Kind::BFloat16)] {
        for name in ["rows", "convrot", "convrot_params", "tensorwise"] {
            let layer = f.layer(name, dtype);
            assert_eq!(layer.kernel(), Kernel::IntMm);
            let out = layer.forward(&x.to_kind(dtype)).unwrap();
            assert_eq!(out.kind(), dtype);
            let expected = f.expected(&format!("{name}/{suffix}"));
            let diff = (out.to_kind(Kind::Float).flatten(0, -1) - &expected)
                .abs()
                .max()
                .double_value(&[]);
            // The same int8 products, float32 scaling and rounding: equal.
            assert_eq!(diff, 0.0, "{name} {suffix}");
        }
    }
}

#[test]
fn int8_weights_dequantize_as_comfy_kitchen_does_and_near_the_original() {
    let f = int8_fixture();
    let original = f.file.tensor("reference.weight", Device::Cpu).unwrap();
    for name in ["rows", "convrot"] {
        let w = f.layer(name, Kind::Float).dequantized(Kind::Float).unwrap();
        let expected = f.expected(&format!("{name}/dequantized")).view([40, 64]);
        assert!(w.allclose(&expected, 1e-6, 1e-6, false), "{name}");
        // Within a few int8 steps of the weight it came from.
        let scale = f
            .file
            .tensor(&format!("{name}.weight_scale"), Device::Cpu)
            .unwrap();
        let err = (&w - &original).abs().max().double_value(&[]);
        assert!(err <= 2.0 * scale.max().double_value(&[]), "{name}: {err}");
    }
    // A per-tensor scale dequantizes too.
    let w = f
        .layer("tensorwise", Kind::Float)
        .dequantized(Kind::Float)
        .unwrap();
    assert!((w - original).abs().max().double_value(&[]) < 0.2);
}

#[test]
fn convrot_int8_storage_round_trips_as_comfy_kitchens() {
    use videosdgx::runtime::int8;
    let f = int8_fixture();
    let (q, s) = int8::quantize_convrot(&f.act, 16).unwrap();
    let back = int8::dequantize(&q, &s, Some(16), Kind::Float).unwrap();
    let expected = f.expected("act/roundtrip").view([6, 64]);
    assert!(back.allclose(&expected, 1e-6, 1e-6, false));
}

#[test]
fn stacked_int8_layers_keep_their_row_scales() {
    let f = int8_fixture();
    let x = f.file.tensor("input.x", Device::Cpu).unwrap();
    let a = f.layer("convrot", Kind::Float);
    let b = f.layer("convrot", Kind::Float);
    let stacked = Linear::concat(&[&a, &b]).unwrap();
    // The activation is quantized once for both, exactly as each does alone.
    let out = stacked.forward(&x).unwrap();
    let parts = Tensor::cat(&[a.forward(&x).unwrap(), b.forward(&x).unwrap()], 2);
    assert!(out.allclose(&parts, 1e-6, 1e-6, false));
    // A rotated and a plain layer do not stack.
    assert!(Linear::concat(&[&a, &f.layer("rows", Kind::Float)]).is_none());
    assert!(matches!(stacked.weight, LinearWeight::Int8 { .. }));
}
