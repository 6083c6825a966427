//! The Hopper kernel library that `scripts/build_sm90_kernels.sh` builds (`make test` runs it
//! first): the build loads and speaks our ABI with no GPU; `runtime::attention` matches float64
//! attention at the DiTs' layouts (plain, and with a prompt's padding as one repeated key), and
//! `Linear::forward_gelu_tanh` float64 linear + GELU, on
//! every device present. On an H100 those are the library's kernels (the tests check they
//! answered), elsewhere libtorch.

mod devices;

use devices::devices;
use std::path::Path;

use tch::{Device, Kind, Tensor};
use videosdgx::runtime::attention::{attention, attention_repeated_last_key, RepeatedLastKey};
use videosdgx::runtime::linear::{Linear, LinearWeight};
use videosdgx::runtime::sm90::{Sm90Kernels, LIBRARY_NAME};
use videosdgx::runtime::{attention_sm90, gemm_sm90};

/// The build's output, or the copy `VIDEOSDGX_SM90_KERNELS` names (this test binary carried to
/// a GPU machine with the library beside it).
fn built_library() -> std::path::PathBuf {
    std::env::var_os("VIDEOSDGX_SM90_KERNELS")
        .filter(|v| v != "off")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(".venv/videosdgx")
                .join(LIBRARY_NAME)
        })
}

#[test]
fn the_built_library_loads_and_speaks_our_abi() {
    let path = built_library();
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build_sm90_kernels.sh",
        path.display()
    );
    Sm90Kernels::load(&path).unwrap();
}

fn is_hopper(device: Device) -> bool {
    videosdgx::system::device_capability(device) == Some((9, 0))
}

/// The unit roundoff of `kind`.
fn unit_roundoff(kind: Kind) -> f64 {
    if kind == Kind::BFloat16 {
        2f64.powi(-8)
    } else {
        2f64.powi(-11)
    }
}

fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: i64) -> Tensor {
    let split = |t: &Tensor| {
        let (b, n, w) = t.size3().unwrap();
        t.to_device(Device::Cpu)
            .to_kind(Kind::Double)
            .view([b, n, heads, w / heads])
            .transpose(1, 2)
    };
    let (q, k, v) = (split(q), split(k), split(v));
    let scores = q.matmul(&k.transpose(-1, -2)) / 128f64.sqrt();
    let out = scores.softmax(-1, Kind::Double).matmul(&v).transpose(1, 2);
    out.reshape([out.size()[0], out.size()[1], -1])
}

#[test]
fn attention_matches_float64_at_the_dit_layouts_on_every_device() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(3);
    let heads = 2;
    let width = heads * 128;
    // (batch, q tokens, kv tokens): token counts off the kernel's 128×192 tiles, text-length
    // keys for cross-attention.
    let mut cases = vec![(2, 300, 300), (2, 300, 77), (2, 1000, 513)];
    for device in devices() {
        let hopper = is_hopper(device);
        if hopper {
            // The kernel runs odd batch elements on a second stream: long enough launches that
            // a missing join would be read before they finish, and an odd batch.
            cases.push((3, 4096, 4096));
        }
        for kind in [Kind::BFloat16, Kind::Half] {
            for &(batch, q_len, kv_len) in &cases {
                // q from a fused [q|k|v] projection (strided views), k/v from their own.
                let fused = Tensor::randn([batch, q_len, 3 * width], (kind, device));
                let q = fused.narrow(2, 0, width);
                let kv = Tensor::randn([batch, kv_len, 2 * width], (kind, device));
                let (k, v) = (kv.narrow(2, 0, width), kv.narrow(2, width, width));
                let out = attention(&q, &k, &v, heads, None);
                let kernel_answered =
                    attention_sm90::attention(&q, &k, &v, heads, 128f64.powf(-0.5), None).is_some();
                assert_eq!(kernel_answered, hopper, "{device:?}: who ran the attention");
                assert_eq!(out.size(), [batch, q_len, width]);
                // Each output is a convex combination of v rows; the probabilities and the
                // output are rounded to `kind` once each: |error| ≤ 2u·max|v| (3u for slack of
                // the kernels' exp2 approximation).
                let u = unit_roundoff(kind);
                let bound = 3.0 * u * v.abs().max().double_value(&[]);
                let error = (out.to_device(Device::Cpu).to_kind(Kind::Double)
                    - reference(&q, &k, &v, heads))
                .abs()
                .max()
                .double_value(&[]);
                assert!(
                    error <= bound,
                    "{device:?} {kind:?} {q_len}×{kv_len}: error {error} over {bound}"
                );
            }
        }
    }
}

#[test]
fn a_repeated_last_key_matches_float64_with_its_copies_on_every_device() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(4);
    let heads = 2;
    let width = heads * 128;
    // (q tokens, kept keys, copies of the last): a Wan prompt of 30 tokens padded to 512, a
    // key count off the kernel's 192-key tile, and one longer than a tile.
    let cases = [(300, 31, 482), (1000, 7, 3), (300, 250, 263)];
    for device in devices() {
        for kind in [Kind::BFloat16, Kind::Half] {
            for &(q_len, keys, copies) in &cases {
                let q = Tensor::randn([2, q_len, width], (kind, device));
                let k = Tensor::randn([2, keys, width], (kind, device));
                let v = Tensor::randn([2, keys, width], (kind, device));
                let repeated = RepeatedLastKey::new(keys, copies, device);
                let out = attention_repeated_last_key(&q, &k, &v, heads, &repeated);
                let bias = Tensor::zeros([keys], (Kind::Float, device));
                let _ = bias.narrow(0, keys - 1, 1).fill_((copies as f64).ln());
                let scale = 128f64.powf(-0.5);
                let kernel_answered =
                    attention_sm90::attention(&q, &k, &v, heads, scale, Some(&bias)).is_some();
                assert_eq!(kernel_answered, is_hopper(device), "{device:?}: who ran it");
                let repeat = |t: &Tensor| {
                    let last = t.narrow(1, keys - 1, 1).repeat([1, copies - 1, 1]);
                    Tensor::cat(&[t, &last], 1)
                };
                let expected = reference(&q, &repeat(&k), &repeat(&v), heads);
                // As for plain attention: a convex combination of v rows, the probabilities and
                // the output rounded once each.
                let bound = 3.0 * unit_roundoff(kind) * v.abs().max().double_value(&[]);
                let error = (out.to_device(Device::Cpu).to_kind(Kind::Double) - expected)
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(
                    error <= bound,
                    "{device:?} {kind:?} {q_len}×{keys}+{copies}: error {error} over {bound}"
                );
            }
        }
    }
}

/// gelu_tanh as PyPI torch defines it (0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))).
fn gelu_tanh(x: &Tensor) -> Tensor {
    let inner = (x + x.pow_tensor_scalar(3) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    x * 0.5 * (inner.tanh() + 1.0)
}

#[test]
fn linear_gelu_matches_float64_on_every_device() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(5);
    // (rows, in, out): rows and outputs off the kernel's 128-row and 128/256-column tiles, a
    // reduction on each side of its schedule switch (2048), rows of a [batch, tokens, in] input.
    let cases = [(300, 1536, 1000), (130, 2560, 264), (1000, 200, 328)];
    for device in devices() {
        for kind in [Kind::BFloat16, Kind::Half] {
            for &(rows, inputs, outputs) in &cases {
                let x = Tensor::randn([2, rows / 2, inputs], (kind, device));
                let weight =
                    Tensor::randn([outputs, inputs], (kind, device)) / (inputs as f64).sqrt();
                let bias = Tensor::randn([outputs], (kind, device)) * 0.1;
                let layer = Linear::new(
                    LinearWeight::Dense(weight.shallow_clone()),
                    Some(bias.shallow_clone()),
                );
                let out = layer.forward_gelu_tanh(&x).unwrap();
                let kernel_answered = gemm_sm90::linear_gelu_tanh(&x, &weight, &bias).is_some();
                assert_eq!(
                    kernel_answered,
                    is_hopper(device),
                    "{device:?}: who ran the GEMM"
                );
                assert_eq!(out.size(), [2, rows / 2, outputs]);
                let double = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
                let pre = double(&x).matmul(&double(&weight).tr()) + double(&bias);
                let exact = gelu_tanh(&pre);
                // libtorch rounds the GEMM's output to `kind` (≤ u·|pre|, after the float32
                // accumulation's error, statistically ≤ √k·2⁻²⁴·Σ|x·w|), then the GELU's
                // (≤ u·|gelu|), and |gelu'| ≤ 1.13. The fused kernel rounds once; both must stay
                // within the two roundings.
                let u = unit_roundoff(kind);
                let magnitudes = double(&x).abs().matmul(&double(&weight).abs().tr());
                let accumulation = magnitudes * ((inputs as f64).sqrt() * 2f64.powi(-24));
                let bound = (pre.abs() * u + accumulation) * 1.13 + exact.abs() * u;
                let excess = ((double(&out) - &exact).abs() - bound)
                    .max()
                    .double_value(&[]);
                assert!(
                    excess <= 0.0,
                    "{device:?} {kind:?} {rows}×{inputs}→{outputs}: {excess} past the bound"
                );
            }
        }
    }
}
