//! `gelu_tanh(x·Wᵀ + b)` in one Hopper GEMM whose epilogue adds the bias and applies the GELU
//! (`gemm_sm90.cu`, in the library `sm90.rs` loads): the first half of the DiTs' MLPs without
//! the separate GELU pass over the 4×-wide hidden state. The activation is computed in float32
//! on the accumulator and rounded once, where libtorch rounds the GEMM's output and then the
//! GELU's. Dense bf16/fp16 layers with a bias on compute capability 9.0; `None` elsewhere, and
//! the caller runs libtorch's `linear` and `gelu`.

use std::ffi::c_void;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::sm90::{library, KernelSwitch, Sm90Kernels};

/// `GemmArgs` of gemm_sm90.cu: row-major x [m, k], w [n, k], out [m, n], bias [n].
#[repr(C)]
pub struct GemmArgs {
    x: *const c_void,
    w: *const c_void,
    bias: *const c_void,
    out: *mut c_void,
    m: i64,
    n: i64,
    k: i64,
    stream: *mut c_void,
}

/// Whether the kernel runs: off after a failed launch, or while a bench compares it with
/// libtorch (`SWITCH.set_enabled`, `SWITCH.in_use`).
pub static SWITCH: KernelSwitch = KernelSwitch::new();

/// Whether `x [.., k]`, `weight [n, k]` and `bias [n]` fit the kernel: one half-precision kind
/// on one device, contiguous, 16-byte aligned starts and rows (its TMA loads and stores need
/// them), sizes within 32 bits.
pub fn layout_fits(x: &Tensor, weight: &Tensor, bias: &Tensor) -> bool {
    let kind = x.kind();
    let (Ok((n, k)), Ok(bias_len)) = (weight.size2(), bias.size1()) else {
        return false;
    };
    let rows = x
        .size()
        .split_last()
        .map(|(last, rest)| (*last, rest.iter().product::<i64>()));
    let fits_i32 = |v: i64| v > 0 && i32::try_from(v).is_ok();
    let aligned = |t: &Tensor| t.is_contiguous() && (t.data_ptr() as usize).is_multiple_of(16);
    matches!(kind, Kind::BFloat16 | Kind::Half)
        && rows.is_some_and(|(width, m)| width == k && fits_i32(m))
        && bias_len == n
        && fits_i32(n)
        && fits_i32(k)
        && n % 8 == 0
        && k % 8 == 0
        && [x, weight, bias]
            .iter()
            .all(|t| t.kind() == kind && t.device() == x.device() && aligned(t))
}

/// `gelu_tanh(x·weightᵀ + bias)` over the last dimension of `x`; `None` where the kernel does
/// not apply, so the caller runs libtorch.
pub fn linear_gelu_tanh(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Option<Tensor> {
    if !SWITCH.usable(x.device()) || !layout_fits(x, weight, bias) {
        return None;
    }
    let lib = library()?;
    match launch(lib, x, weight, bias) {
        Ok(out) => out,
        Err(e) => {
            SWITCH.failed();
            log::error!(
                "linear + GELU: the Hopper kernel failed ({e:#}); using cuBLAS from now on"
            );
            None
        }
    }
}

/// What `vdgx_sm90_linear_gelu_tanh` returns for a problem CUTLASS cannot take: this call falls
/// back, later ones still try.
const UNSUPPORTED: i32 = -1;

fn launch(lib: &Sm90Kernels, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    let (n, k) = weight.size2()?;
    let mut shape = x.size();
    let m = x.numel() as i64 / k;
    *shape.last_mut().expect("x has a last dimension") = n;
    let out = Tensor::empty(&shape, (x.kind(), x.device()));
    let args = GemmArgs {
        x: x.data_ptr(),
        w: weight.data_ptr(),
        bias: bias.data_ptr(),
        out: out.data_ptr(),
        m,
        n,
        k,
        // The legacy default stream, libtorch's current one (as in attention_sm90.rs).
        stream: std::ptr::null_mut(),
    };
    let dtype = if x.kind() == Kind::BFloat16 { 0 } else { 1 };
    // SAFETY: `layout_fits` checked the kinds, shapes, contiguity and alignment the kernel
    // reads; the tensors live until the call returns, and the launch is ordered on the stream
    // that produced them and that later reads `out`.
    match unsafe { (lib.linear_gelu_tanh)(dtype, &args) } {
        0 => Ok(Some(out)),
        UNSUPPORTED => {
            log::debug!("linear + GELU: CUTLASS cannot take {m}×{k}→{n}; cuBLAS runs it");
            Ok(None)
        }
        rc => bail!("cudaError {rc}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn zeros(shape: &[i64], kind: Kind) -> Tensor {
        Tensor::zeros(shape, (kind, Device::Cpu))
    }

    #[test]
    fn the_kernel_takes_contiguous_aligned_half_precision_layers() {
        let bf16 = Kind::BFloat16;
        let (x, w, b) = (
            zeros(&[2, 5, 64], bf16),
            zeros(&[32, 64], bf16),
            zeros(&[32], bf16),
        );
        assert!(layout_fits(&x, &w, &b));
        assert!(layout_fits(
            &x.to_kind(Kind::Half),
            &w.to_kind(Kind::Half),
            &b.to_kind(Kind::Half)
        ));

        let float = |t: &Tensor| t.to_kind(Kind::Float);
        assert!(!layout_fits(&float(&x), &float(&w), &float(&b)), "fp32");
        assert!(!layout_fits(&x, &w.to_kind(Kind::Half), &b), "mixed kinds");
        assert!(!layout_fits(&x, &zeros(&[32, 48], bf16), &b), "k differs");
        assert!(!layout_fits(&x, &w, &zeros(&[31], bf16)), "bias length");
        let odd = zeros(&[2, 5, 60], bf16);
        assert!(
            !layout_fits(&odd, &zeros(&[32, 60], bf16), &b),
            "rows of 60 are not 16-byte multiples"
        );
        assert!(!layout_fits(&x.transpose(0, 1), &w, &b), "x not contiguous");
        let shifted = zeros(&[641], bf16).narrow(0, 1, 640).view([2, 5, 64]);
        assert!(!layout_fits(&shifted, &w, &b), "start off 16 bytes");
        assert!(!layout_fits(&zeros(&[0, 64], bf16), &w, &b), "no rows");
    }
}
