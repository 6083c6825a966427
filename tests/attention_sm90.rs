//! The Hopper attention library that `scripts/build_sm90_attention.sh` builds (`make test` runs
//! it first): the build loads and speaks our ABI with no GPU, and `runtime::attention` matches
//! float64 attention at the DiTs' layouts on every device present. On an H100 that is the
//! library's kernel (the test checks it answered), elsewhere libtorch's SDPA.

mod devices;

use devices::devices;
use std::path::Path;

use tch::{Device, Kind, Tensor};
use videosdgx::runtime::attention::attention;
use videosdgx::runtime::attention_sm90::{self, Sm90Attention, LIBRARY_NAME};

/// The build's output, or the copy `VIDEOSDGX_SM90_ATTENTION` names (this test binary carried to
/// a GPU machine with the library beside it).
fn built_library() -> std::path::PathBuf {
    std::env::var_os("VIDEOSDGX_SM90_ATTENTION")
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
        "{} is missing: run scripts/build_sm90_attention.sh",
        path.display()
    );
    Sm90Attention::load(&path).unwrap();
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
        let hopper = videosdgx::system::device_capability(device) == Some((9, 0));
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
                    attention_sm90::attention(&q, &k, &v, heads, 128f64.powf(-0.5)).is_some();
                assert_eq!(kernel_answered, hopper, "{device:?}: who ran the attention");
                assert_eq!(out.size(), [batch, q_len, width]);
                // Each output is a convex combination of v rows; the probabilities and the
                // output are rounded to `kind` once each: |error| ≤ 2u·max|v| (3u for slack of
                // the kernels' exp2 approximation).
                let u = if kind == Kind::BFloat16 {
                    2f64.powi(-8)
                } else {
                    2f64.powi(-11)
                };
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
