//! Hopper flash attention: FlashInfer's FA3-style sm_90 prefill kernel (`attention_sm90.cu`, in
//! the library `sm90.rs` loads). It takes the unmasked, head-dim-128, bf16/fp16 attention of the
//! video DiTs on compute capability 9.0, optionally with a float32 bias per key. Everything else
//! stays on libtorch's SDPA: other GPUs (GB10 included), masks, other head dims, or no library.

use std::ffi::c_void;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::sm90::{library, KernelSwitch, Sm90Kernels};

const HEAD_DIM: i64 = 128;

/// `AttentionArgs` of attention_sm90.cu: `[batch, tokens, heads, 128]` tensors by strides in
/// elements (batch, token, head).
#[repr(C)]
pub struct AttentionArgs {
    q: *const c_void,
    k: *const c_void,
    v: *const c_void,
    o: *mut c_void,
    batch: i64,
    q_len: i64,
    kv_len: i64,
    heads: i64,
    q_strides: [i64; 3],
    k_strides: [i64; 3],
    v_strides: [i64; 3],
    o_strides: [i64; 3],
    key_bias: *const f32,
    scale: f32,
    stream: *mut c_void,
}

/// Whether the kernel runs: off after a failed launch, or while a bench compares it with
/// SDPA (`SWITCH.set_enabled`, `SWITCH.in_use`).
pub static SWITCH: KernelSwitch = KernelSwitch::new();

/// Whether `[batch, tokens, heads·128]` q/k/v fit the kernel: one half-precision kind,
/// contiguous head dims, and 16-byte aligned starts and strides (its TMA loads need both).
pub fn layout_fits(q: &Tensor, k: &Tensor, v: &Tensor, heads: i64) -> bool {
    let kind = q.kind();
    let tensors = [q, k, v];
    let Some(sizes) = tensors
        .iter()
        .map(|t| t.size3().ok())
        .collect::<Option<Vec<_>>>()
    else {
        return false;
    };
    let (batch, q_len, width) = sizes[0];
    let fits_i32 = |n: i64| n > 0 && i32::try_from(n).is_ok();
    let aligned = |t: &Tensor| {
        let strides = t.stride();
        strides[2] == 1
            && strides[0] % 8 == 0
            && strides[1] % 8 == 0
            && (t.data_ptr() as usize).is_multiple_of(16)
    };
    matches!(kind, Kind::BFloat16 | Kind::Half)
        && heads > 0
        && width == heads * HEAD_DIM
        && fits_i32(q_len)
        && fits_i32(sizes[1].1)
        && sizes[1] == sizes[2]
        && sizes[1].0 == batch
        && sizes[1].2 == width
        && tensors.iter().all(|t| t.kind() == kind && aligned(t))
}

/// `softmax(q·kᵀ·scale + key_bias)·v` per head on `[batch, tokens, heads·128]` tensors, as
/// `[batch, q_tokens, heads·128]`; `key_bias`, if any, is float32 `[kv_tokens]`, added to every
/// query's score of each key. `None` where the kernel does not apply, so the caller runs SDPA.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: i64,
    scale: f64,
    key_bias: Option<&Tensor>,
) -> Option<Tensor> {
    let device = q.device();
    let bias_fits = |b: &Tensor| {
        b.device() == device
            && b.kind() == Kind::Float
            && b.size() == [k.size()[1]]
            && b.is_contiguous()
    };
    if !SWITCH.usable(device)
        || k.device() != device
        || v.device() != device
        || !layout_fits(q, k, v, heads)
        || !key_bias.is_none_or(bias_fits)
    {
        return None;
    }
    let lib = library()?;
    match launch(lib, q, k, v, heads, scale, key_bias) {
        Ok(out) => Some(out),
        Err(e) => {
            SWITCH.failed();
            log::error!("attention: the Hopper kernel failed ({e:#}); using cuDNN from now on");
            None
        }
    }
}

fn launch(
    lib: &Sm90Kernels,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: i64,
    scale: f64,
    key_bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (batch, q_len, width) = q.size3()?;
    let out = Tensor::empty([batch, q_len, width], (q.kind(), q.device()));
    let strides = |t: &Tensor| {
        let s = t.stride();
        [s[0], s[1], HEAD_DIM]
    };
    let args = AttentionArgs {
        q: q.data_ptr(),
        k: k.data_ptr(),
        v: v.data_ptr(),
        o: out.data_ptr(),
        batch,
        q_len,
        kv_len: k.size()[1],
        heads,
        q_strides: strides(q),
        k_strides: strides(k),
        v_strides: strides(v),
        o_strides: strides(&out),
        key_bias: key_bias.map_or(std::ptr::null(), |b| b.data_ptr() as *const f32),
        scale: scale as f32,
        // The legacy default stream: libtorch's current stream, as we never set another (the
        // NVRTC kernels in fused.rs launch there too).
        stream: std::ptr::null_mut(),
    };
    let dtype = if q.kind() == Kind::BFloat16 { 0 } else { 1 };
    // SAFETY: `layout_fits` checked the shapes, strides and alignment the kernel reads; the
    // tensors live until the call returns, and the launch is ordered on the stream that
    // produced them and that later reads `out`.
    let rc = unsafe { (lib.attention)(dtype, &args) };
    if rc != 0 {
        bail!("cudaError {rc}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn qkv(kind: Kind, tokens: i64, width: i64) -> Tensor {
        Tensor::zeros([2, tokens, 3, width], (kind, Device::Cpu))
    }

    #[test]
    fn the_kernel_takes_half_precision_head_dim_128_with_aligned_strides() {
        // Views into a fused [q|k|v] projection, as the DiTs make them.
        let fused = qkv(Kind::BFloat16, 10, 256).reshape([2, 10, 768]);
        let parts = fused.split(256, 2);
        assert!(layout_fits(&parts[0], &parts[1], &parts[2], 2));
        let half = Tensor::zeros([2, 10, 256], (Kind::Half, Device::Cpu));
        let text = Tensor::zeros([2, 7, 256], (Kind::Half, Device::Cpu));
        assert!(layout_fits(&half, &text, &text, 2), "kv may be shorter");

        assert!(!layout_fits(&half, &text, &text, 4), "head dim 64");
        let float = Tensor::zeros([2, 10, 256], (Kind::Float, Device::Cpu));
        assert!(!layout_fits(&float, &float, &float, 2), "fp32");
        assert!(
            !layout_fits(&half, &half.to_kind(Kind::BFloat16), &half, 2),
            "mixed kinds"
        );
        let other_batch = Tensor::zeros([1, 7, 256], (Kind::Half, Device::Cpu));
        assert!(!layout_fits(&half, &other_batch, &other_batch, 2));
        let k_only = Tensor::zeros([2, 8, 256], (Kind::Half, Device::Cpu));
        assert!(
            !layout_fits(&half, &k_only, &text, 2),
            "k and v lengths differ"
        );
        let shifted = Tensor::zeros([5121], (Kind::Half, Device::Cpu))
            .narrow(0, 1, 5120)
            .view([2, 10, 256]);
        assert!(
            !layout_fits(&shifted, &half, &half, 2),
            "start off 16 bytes"
        );
        let padded = Tensor::zeros([2, 10, 260], (Kind::Half, Device::Cpu)).narrow(2, 0, 256);
        assert!(
            !layout_fits(&padded, &half, &half, 2),
            "token stride off 16 bytes"
        );
        let transposed = Tensor::zeros([2, 256, 10], (Kind::Half, Device::Cpu)).transpose(1, 2);
        assert!(
            !layout_fits(&transposed, &half, &half, 2),
            "head dim not contiguous"
        );
    }
}
