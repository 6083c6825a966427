//! ComfyUI's INT8 weights (`int8_tensorwise`, comfy-kitchen's `TensorWiseINT8Layout`): int8
//! values with a per-tensor or per-output-row fp32 scale, optionally "ConvRot"-rotated (each
//! group of input features multiplied by a normalized regular Hadamard matrix before
//! quantization, which spreads outliers). Such a layer multiplies as comfy-kitchen's
//! `int8_linear` does on every device: the input rotated the same way, quantized per row to
//! int8, one int8 GEMM with int32 accumulation, then both scales.

use std::sync::Mutex;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// Hadamard matrices already built, by size, dtype and device: every ConvRot layer call
/// rotates its input with one.
static HADAMARDS: Mutex<Vec<(i64, Kind, Device, Tensor)>> = Mutex::new(Vec::new());

/// The normalized regular Hadamard matrix of `size` (a power of 4): Kronecker powers of the
/// 4×4 regular Hadamard over √size.
pub fn hadamard(size: i64, kind: Kind, device: Device) -> Result<Tensor> {
    let mut built = HADAMARDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((.., h)) = built
        .iter()
        .find(|(s, k, d, _)| (*s, *k, *d) == (size, kind, device))
    {
        return Ok(h.shallow_clone());
    }
    let h = build_hadamard(size, kind, device)?;
    built.push((size, kind, device, h.shallow_clone()));
    Ok(h)
}

fn build_hadamard(size: i64, kind: Kind, device: Device) -> Result<Tensor> {
    let mut n = size;
    while n > 1 && n % 4 == 0 {
        n /= 4;
    }
    if size < 4 || n != 1 {
        bail!("a ConvRot group must be a power of 4 (at least 4), not {size}");
    }
    let h4 = Tensor::from_slice(&[
        1f32, 1., 1., -1., 1., 1., -1., 1., 1., -1., 1., 1., -1., 1., 1., 1.,
    ])
    .view([4, 4]);
    let mut h = h4.shallow_clone();
    while h.size()[0] < size {
        h = h.kron(&h4);
    }
    Ok((h / (size as f64).sqrt()).to_kind(kind).to_device(device))
}

/// `x` with each group of `group` features along its last dimension multiplied by the
/// Hadamard matrix (`x_g · H`), in `x`'s dtype.
pub fn rotate(x: &Tensor, group: i64) -> Result<Tensor> {
    let shape = x.size();
    let features = *shape.last().unwrap_or(&0);
    if features % group != 0 {
        bail!("ConvRot group size {group} does not divide {features} features");
    }
    let h = hadamard(group, x.kind(), x.device())?;
    Ok(x.reshape([-1, features / group, group])
        .matmul(&h)
        .reshape(shape))
}

/// Row-wise int8 quantization: per row `absmax / 127` (float32, at least 1e-30), the values
/// divided by it in `x`'s dtype, rounded half to even and clamped. Returns (int8, `[.., 1]`
/// float32 scales).
pub fn quantize_rows(x: &Tensor) -> (Tensor, Tensor) {
    let scale =
        (x.abs().amax([-1i64].as_slice(), true).to_kind(Kind::Float) / 127.0).clamp_min(1e-30);
    let q = quantize_with(x, &scale);
    (q, scale)
}

/// `x / scale` (the scale in `x`'s dtype, zeros replaced by the dtype's smallest normal),
/// rounded and clamped to int8.
fn quantize_with(x: &Tensor, scale: &Tensor) -> Tensor {
    let s = scale.to_kind(x.kind());
    let tiny = Tensor::full_like(&s, smallest_normal(x.kind()));
    let s = tiny.where_self(&s.eq(0.0), &s);
    (x / s).round().clamp(-128.0, 127.0).to_kind(Kind::Int8)
}

fn smallest_normal(kind: Kind) -> f64 {
    match kind {
        Kind::Half => 6.103_515_625e-5,
        Kind::BFloat16 => 1.175_494_350_822_287_5e-38,
        Kind::Double => f64::MIN_POSITIVE,
        _ => f32::MIN_POSITIVE as f64,
    }
}

/// The weight as full precision in `dtype`: `q · scale`, rotated back for ConvRot.
pub fn dequantize(q: &Tensor, scale: &Tensor, convrot: Option<i64>, dtype: Kind) -> Result<Tensor> {
    let w = q.to_kind(Kind::Float) * scale_for(scale, q.size()[0]);
    let w = match convrot {
        Some(group) => rotate_weight(&w, group)?,
        None => w,
    };
    Ok(w.to_kind(dtype))
}

/// `W · Hᵀ` per group of input features (comfy-kitchen's `_rotate_weight`); the regular
/// Hadamard matrix is symmetric and orthogonal, so this both rotates and rotates back.
pub(crate) fn rotate_weight(w: &Tensor, group: i64) -> Result<Tensor> {
    let (out, features) = w.size2()?;
    if features % group != 0 {
        bail!("ConvRot group size {group} does not divide {features} features");
    }
    let h = hadamard(group, w.kind(), w.device())?;
    Ok(w.reshape([out, features / group, group])
        .matmul(&h.tr())
        .reshape([out, features]))
}

/// A scalar or per-row scale shaped to broadcast over `[rows, …]`.
fn scale_for(scale: &Tensor, rows: i64) -> Tensor {
    let s = scale.to_kind(Kind::Float);
    if s.numel() == 1 {
        s.reshape([1, 1])
    } else {
        s.reshape([rows, 1])
    }
}

/// A weight quantized the way comfy-kitchen quantizes ConvRot weights (and Wan Animate 2's
/// int8 pose cache): rotated, then row-wise int8.
pub fn quantize_convrot(w: &Tensor, group: i64) -> Result<(Tensor, Tensor)> {
    Ok(quantize_rows(&rotate(w, group)?))
}

fn round_up(n: i64, to: i64) -> i64 {
    (n + to - 1) / to * to
}

/// `x · Wᵀ + b` for an int8 weight `q` `[n, k]` with `scale` (scalar or `[n, 1]`), as
/// comfy-kitchen's `int8_linear`: the activation rotated (ConvRot) and quantized per row,
/// `_int_mm` in int32, scaled by both scales in float32, cast to `x`'s dtype, then the bias.
pub fn linear(
    x: &Tensor,
    q: &Tensor,
    scale: &Tensor,
    convrot: Option<i64>,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let dtype = x.kind();
    let (n, k) = q.size2()?;
    let shape = x.size();
    let x = match convrot {
        Some(group) => rotate(x, group)?,
        None => x.shallow_clone(),
    };
    let x2 = x.reshape([-1, k]);
    let (x8, x_scale) = quantize_rows(&x2);
    let m = x8.size()[0];
    // `_int_mm`'s constraints: on CUDA at least 32 rows in multiples of 32; K and N in
    // multiples of 8. Zero padding leaves the products unchanged.
    let rows = if x8.device().is_cuda() {
        round_up(m.max(32), 32)
    } else {
        m
    };
    let (kp, np) = (round_up(k, 8), round_up(n, 8));
    let a = if (rows, kp) == (m, k) {
        x8
    } else {
        x8.constant_pad_nd([0, kp - k, 0, rows - m])
    };
    let b = if (kp, np) == (k, n) {
        q.shallow_clone()
    } else {
        q.constant_pad_nd([0, kp - k, 0, np - n])
    };
    // The weight's transpose as a view: cuBLASLt's int8 GEMM takes it column-major as is.
    let acc = a.internal_int_mm(&b.tr()).narrow(0, 0, m).narrow(1, 0, n);
    let w_scale = scale.to_kind(Kind::Float).reshape([1, -1]);
    let out = (acc.to_kind(Kind::Float) * (x_scale * w_scale)).to_kind(dtype);
    let out = match bias {
        Some(b) => out + b.to_kind(dtype).reshape([1, -1]),
        None => out,
    };
    let mut out_shape = shape;
    *out_shape.last_mut().expect("x has a last dimension") = n;
    Ok(out.reshape(out_shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hadamard_matrix_is_orthogonal_and_symmetric() {
        let h = hadamard(16, Kind::Double, Device::Cpu).unwrap();
        let eye = Tensor::eye(16, (Kind::Double, Device::Cpu));
        assert!(h.matmul(&h.tr()).allclose(&eye, 1e-12, 1e-12, false));
        assert!(h.equal(&h.tr()));
        assert!(hadamard(8, Kind::Float, Device::Cpu).is_err());
    }

    #[test]
    fn a_convrot_weight_dequantizes_near_the_original() {
        tch::manual_seed(1);
        let w = Tensor::randn([8, 32], (Kind::Float, Device::Cpu));
        let (q, s) = quantize_convrot(&w, 16).unwrap();
        let back = dequantize(&q, &s, Some(16), Kind::Float).unwrap();
        let step = s.max().double_value(&[]);
        assert!((back - &w).abs().max().double_value(&[]) < step * 4.0 * 0.5 + 1e-6);
    }
}
