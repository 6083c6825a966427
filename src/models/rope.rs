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

/// ScaleROPE's `rope_options`: for each axis (time, rows, columns) the spacing of the patch
/// positions and their offset. The default leaves the positions 0, 1, 2, …
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeOptions {
    pub scale: [f64; 3],
    pub shift: [f64; 3],
}

impl Default for RopeOptions {
    fn default() -> Self {
        Self {
            scale: [1.0; 3],
            shift: [0.0; 3],
        }
    }
}

impl RopeOptions {
    /// The positions of `n` patches along `axis` (0 time, 1 rows, 2 columns) from `start`, as
    /// `rope_encode` makes them: `linspace(start + shift, start + shift + (n − 1)·scale, n)` in
    /// `kind`, on the host.
    pub fn positions(&self, axis: usize, start: f64, n: i64, kind: Kind) -> Tensor {
        let first = start + self.shift[axis];
        let last = first + (n - 1) as f64 * self.scale[axis];
        Tensor::linspace(first, last, n, (kind, Device::Cpu))
    }
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
