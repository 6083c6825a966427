//! Rotary position embeddings as ComfyUI's `comfy/ldm/flux/math.py` makes and applies them
//! (Wan and FLUX share them): one rotation table per position axis, pairs rotated in float32.

use tch::{Device, Kind, Tensor};

/// The rotation of one axis as unit complex numbers `e^(i·pos·θ^(−2k/d))`, `[positions, d/2]`,
/// with frequencies computed in float64 and kept in float32 like ComfyUI's `rope`.
pub fn rope_axis(positions: &Tensor, dim: i64, theta: f64) -> Tensor {
    let half = dim / 2;
    let scale = Tensor::linspace(
        0.0,
        (dim - 2) as f64 / dim as f64,
        half,
        (Kind::Double, Device::Cpu),
    );
    let omega = (scale * theta.ln()).exp().reciprocal();
    let angles = positions
        .to_kind(Kind::Float)
        .to_kind(Kind::Double)
        .unsqueeze(-1)
        * omega;
    Tensor::complex(
        &angles.cos().to_kind(Kind::Float),
        &angles.sin().to_kind(Kind::Float),
    )
}

/// ComfyUI's `apply_rope1` on `[b, s, n, d]`: each (even, odd) pair rotated, in float32 — as
/// one complex multiplication (`x₀cos − x₁sin`, `x₀sin + x₁cos`), which touches memory half as
/// often as the real-matrix form.
pub fn apply_rope(x: &Tensor, freqs: &Tensor) -> Tensor {
    let shape = x.size();
    let pairs = x
        .to_kind(Kind::Float)
        .reshape([shape[0], shape[1], shape[2], -1, 2])
        .view_as_complex();
    (pairs * freqs)
        .view_as_real()
        .reshape(shape.as_slice())
        .to_kind(x.kind())
}
