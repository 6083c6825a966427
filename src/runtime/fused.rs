//! Fused per-token ops for the diffusion transformers: on a CUDA device, one kernel of
//! `fused_kernels.cu` (compiled at first use by NVRTC) where libtorch would run four to six;
//! elsewhere, or when the kernels cannot be built, the same chain of libtorch ops. Both give the
//! same numbers up to reduction order (the GPU bench checks it on every run).
//!
//! `VIDEOSDGX_FUSED_KERNELS=0` turns the kernels off (for comparisons).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::cuda_driver::{driver, CuFunction};
use super::nvrtc;
use crate::models::rope::apply_rope;

pub const SOURCE: &str = include_str!("fused_kernels.cu");

/// Every kernel `SOURCE` defines, by element suffix.
pub const KERNELS: [&str; 4] = [
    "rms_norm_rope",
    "layer_norm_modulate",
    "gated_residual",
    "quantize_e4m3",
];
const SUFFIXES: [(Kind, &str); 3] = [
    (Kind::BFloat16, "bf16"),
    (Kind::Half, "f16"),
    (Kind::Float, "f32"),
];
/// Elements per thread; a block holds one row of at most 1024 threads.
const PER_THREAD: i64 = 8;
const MAX_WIDTH: i64 = 1024 * PER_THREAD;

fn switch() -> &'static AtomicBool {
    static ON: OnceLock<AtomicBool> = OnceLock::new();
    ON.get_or_init(|| {
        AtomicBool::new(std::env::var("VIDEOSDGX_FUSED_KERNELS").map_or(true, |v| v != "0"))
    })
}

/// Whether CUDA tensors go through the fused kernels.
pub fn enabled() -> bool {
    switch().load(Ordering::Relaxed)
}

pub fn set_enabled(on: bool) {
    switch().store(on, Ordering::Relaxed);
}

/// The compiled kernels of one device, by name with suffix.
struct Module(HashMap<String, CuFunction>);

// SAFETY: CUfunction handles are plain driver handles, valid from any thread of the process.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

/// The kernels for `device`, compiled once per device; `None` (after one warning) where they
/// cannot be, so callers fall back to libtorch.
fn module(index: usize) -> Option<Arc<Module>> {
    static MODULES: OnceLock<Mutex<HashMap<usize, Option<Arc<Module>>>>> = OnceLock::new();
    let mut modules = MODULES.get_or_init(Default::default).lock().ok()?;
    modules
        .entry(index)
        .or_insert_with(|| match build(index) {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                log::warn!("fused kernels unavailable on cuda:{index}, using libtorch ops: {e:#}");
                None
            }
        })
        .clone()
}

/// Whether the fused kernels run on `device` (compiling them on first use).
pub fn available(device: Device) -> bool {
    kernel_for(device, Kind::Float, KERNELS[0]).is_some()
}

/// Every entry name of `SOURCE`.
pub fn entry_names() -> Vec<String> {
    KERNELS
        .iter()
        .flat_map(|k| SUFFIXES.iter().map(move |(_, s)| format!("{k}_{s}")))
        .collect()
}

fn build(index: usize) -> Result<Module> {
    let driver = driver().context("no CUDA driver")?;
    let cc = crate::system::compute_capability(index).context("no compute capability")?;
    let ptx = nvrtc::compile_ptx(SOURCE, "fused_kernels.cu", nvrtc::architecture_for(cc)?)?;
    let names = entry_names();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let functions = driver.load_functions(index, &ptx, &name_refs)?;
    Ok(Module(names.into_iter().zip(functions).collect()))
}

/// A kernel argument as the launch passes it: a device pointer, an int or a float.
#[derive(Clone, Copy)]
enum Arg {
    Ptr(u64),
    Int(i32),
    Float(f32),
}

/// The CUDA device and kernel of `name` for tensors of `kind`, when the fused path applies.
fn kernel_for(device: Device, kind: Kind, name: &str) -> Option<(usize, CuFunction)> {
    let Device::Cuda(index) = device else {
        return None;
    };
    if !enabled() {
        return None;
    }
    let suffix = SUFFIXES.iter().find(|(k, _)| *k == kind)?.1;
    let module = module(index)?;
    module
        .0
        .get(&format!("{name}_{suffix}"))
        .map(|f| (index, *f))
}

/// One block of ⌈width/8⌉ threads (whole warps) per row.
fn launch(index: usize, function: CuFunction, rows: i64, width: i64, args: &[Arg]) -> Result<()> {
    let driver = driver().context("no CUDA driver")?;
    let mut values: Vec<u64> = args
        .iter()
        .map(|a| match a {
            Arg::Ptr(p) => *p,
            Arg::Int(i) => *i as u32 as u64,
            Arg::Float(f) => f.to_bits() as u64,
        })
        .collect();
    // Each parameter is read from the start of its 8-byte slot; the machine is little-endian,
    // so an int or float sits in the low bytes where the kernel reads it.
    let mut params: Vec<*mut c_void> = values
        .iter_mut()
        .map(|v| (v as *mut u64).cast::<c_void>())
        .collect();
    let Ok(grid) = u32::try_from(rows) else {
        bail!("{rows} rows are too many for one launch");
    };
    if grid == 0 {
        return Ok(());
    }
    let threads = (width / PER_THREAD + 31) / 32 * 32;
    // SAFETY: the callers pass pointers of contiguous, 16-byte aligned tensors of the kernel's
    // element type and the sizes those tensors have; the values live until the launch returns.
    unsafe { driver.launch(index, function, grid, threads as u32, &mut params) }
}

/// Whether rows of `width` fit the kernels' layout: whole 16-byte vectors of 8 elements, one
/// row per block.
fn fits_rows(width: i64) -> bool {
    width % PER_THREAD == 0 && width <= MAX_WIDTH
}

/// Whether every tensor starts on a 16-byte boundary (views with offsets may not).
fn aligned(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| (t.data_ptr() as usize).is_multiple_of(16))
}

fn ptr(t: &Tensor) -> Arg {
    Arg::Ptr(t.data_ptr() as u64)
}

fn int(v: i64) -> Result<Arg> {
    Ok(Arg::Int(i32::try_from(v).context("size over 2³¹")?))
}

/// `apply_rope(rms_norm(x, weight).view([b, s, heads, d]), freqs)` reshaped back to `x`'s
/// `[b, s, heads·d]`: Wan's query/key normalisation and rotation. `freqs` is
/// `[1, s, 1, d/2]` complex (`rope_grid`).
pub fn rms_norm_rope(
    x: &Tensor,
    weight: &Tensor,
    freqs: &Tensor,
    heads: i64,
    eps: f64,
) -> Result<Tensor> {
    let (b, s, width) = x.size3()?;
    let half_head = width / heads / 2;
    let layout_fits = freqs.numel() as i64 == s * half_head
        && freqs.kind() == Kind::ComplexFloat
        && half_head % 4 == 0
        && fits_rows(width);
    if let Some((index, f)) =
        kernel_for(x.device(), x.kind(), "rms_norm_rope").filter(|_| layout_fits)
    {
        let rot = freqs.view_as_real().contiguous();
        let x = x.contiguous();
        let weight = weight.to_kind(x.kind()).contiguous();
        if aligned(&[&x, &weight, &rot]) {
            let out = x.empty_like();
            launch(
                index,
                f,
                b * s,
                width,
                &[
                    ptr(&x),
                    ptr(&weight),
                    ptr(&rot),
                    ptr(&out),
                    int(width)?,
                    int(half_head)?,
                    int(s)?,
                    Arg::Float(eps as f32),
                ],
            )?;
            return Ok(out);
        }
    }
    let normed = x.rms_norm([width], Some(weight), eps);
    Ok(apply_rope(&normed.view([b, s, heads, width / heads]), freqs).view([b, s, width]))
}

/// `e` `[b, rows, dim]` per token of a `tokens`-long sequence: each row covers
/// ⌈tokens/rows⌉ consecutive tokens (Wan 2.2's per-frame modulation; one row broadcasts).
pub fn per_token(e: &Tensor, tokens: i64) -> Tensor {
    let rows = e.size()[1];
    if rows == 1 || rows == tokens {
        return e.shallow_clone();
    }
    e.repeat_interleave_self_int(tokens_per_row(tokens, rows), 1, None)
        .narrow(1, 0, tokens)
}

fn tokens_per_row(tokens: i64, rows: i64) -> i64 {
    (tokens + rows - 1) / rows
}

/// Runs kernel `name` over the `b·tokens` rows of `x` `[b, tokens, width]` with two more inputs
/// (token rows or `rows` modulation rows), the sizes and `extra` arguments, as the per-row kernels
/// of `SOURCE` take them. `None` where it cannot run (off CUDA, switched off, misaligned views):
/// the caller runs libtorch's chain.
fn per_row_kernel(
    name: &str,
    x: &Tensor,
    inputs: [&Tensor; 2],
    rows: i64,
    extra: &[Arg],
) -> Result<Option<Tensor>> {
    let (b, tokens, width) = x.size3()?;
    let Some((index, f)) = kernel_for(x.device(), x.kind(), name) else {
        return Ok(None);
    };
    let (x, p, q) = (
        x.contiguous(),
        inputs[0].contiguous(),
        inputs[1].contiguous(),
    );
    if !aligned(&[&x, &p, &q]) {
        return Ok(None);
    }
    let out = x.empty_like();
    let mut args = vec![
        ptr(&x),
        ptr(&p),
        ptr(&q),
        ptr(&out),
        int(width)?,
        int(tokens)?,
        int(rows)?,
        int(tokens_per_row(tokens, rows))?,
    ];
    args.extend_from_slice(extra);
    launch(index, f, b * tokens, width, &args)?;
    Ok(Some(out))
}

/// `shift + layer_norm(x) · (scale + 1)` with an affine-free LayerNorm over the last dimension:
/// the modulated norm in front of every attention and FFN. `shift`, `scale`: `[b, rows, dim]`,
/// spread over the tokens by [`per_token`].
pub fn layer_norm_modulate(x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f64) -> Result<Tensor> {
    let (b, tokens, width) = x.size3()?;
    let rows = shift.size()[1];
    let fits = |e: &Tensor| e.size() == [b, rows, width] && e.kind() == x.kind();
    let layout_fits = fits(shift) && fits(scale) && rows <= tokens && fits_rows(width);
    if layout_fits {
        let eps = Arg::Float(eps as f32);
        if let Some(out) = per_row_kernel("layer_norm_modulate", x, [shift, scale], rows, &[eps])? {
            return Ok(out);
        }
    }
    let normed = x.layer_norm([width], None::<&Tensor>, None::<&Tensor>, eps, true);
    Ok(per_token(shift, tokens).addcmul(&normed, &(per_token(scale, tokens) + 1.0)))
}

/// `x + y · gate` (`addcmul`), the gated residual: `x`, `y` `[b, tokens, dim]`; `gate`
/// `[b, rows, dim]` spread over the tokens by [`per_token`].
pub fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let (b, tokens, width) = x.size3()?;
    let rows = gate.size()[1];
    let layout_fits = y.size() == x.size()
        && y.kind() == x.kind()
        && gate.size() == [b, rows, width]
        && gate.kind() == x.kind()
        && rows <= tokens
        && fits_rows(width);
    if layout_fits {
        if let Some(out) = per_row_kernel("gated_residual", x, [y, gate], rows, &[])? {
            return Ok(out);
        }
    }
    Ok(x.addcmul(y, &per_token(gate, tokens)))
}

/// The largest finite e4m3fn value: activations are clamped to it before the cast, which
/// would otherwise turn them into NaN.
pub const E4M3_MAX: f64 = 448.0;

/// Elements per block of the flat quantize kernel (256 threads of 8).
const QUANTIZE_CHUNK: i64 = 2048;

/// `x.clamp(−448, 448)` cast to float8_e4m3fn (ComfyUI's activation quantization for FP8
/// matmuls), in one pass on GPUs with FP8 conversions (compute capability ≥ 8.9).
pub fn quantize_e4m3(x: &Tensor) -> Result<Tensor> {
    let n = x.numel() as i64;
    let device = x.device();
    let fits = n % PER_THREAD == 0 && n <= i32::MAX as i64;
    if fits && super::linear::supports_fp8_compute(device) {
        if let Some((index, f)) = kernel_for(device, x.kind(), "quantize_e4m3") {
            let x = x.contiguous();
            if aligned(&[&x]) {
                let out = Tensor::empty(x.size(), (Kind::Float8e4m3fn, device));
                let blocks = (n + QUANTIZE_CHUNK - 1) / QUANTIZE_CHUNK;
                let args = [ptr(&x), ptr(&out), int(n)?];
                launch(index, f, blocks, QUANTIZE_CHUNK, &args)?;
                return Ok(out);
            }
        }
    }
    Ok(x.clamp(-E4M3_MAX, E4M3_MAX).to_kind(Kind::Float8e4m3fn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_token_spreads_rows_over_consecutive_tokens() {
        let e = Tensor::from_slice(&[1f32, 2., 3.]).view([1, 3, 1]);
        let spread = |tokens| Vec::<f32>::try_from(per_token(&e, tokens).flatten(0, -1)).unwrap();
        assert_eq!(spread(6), [1., 1., 2., 2., 3., 3.]);
        // Not a multiple: ⌈7/3⌉ = 3 tokens a row, the last row short.
        assert_eq!(spread(7), [1., 1., 1., 2., 2., 2., 3.]);
        assert_eq!(spread(3), [1., 2., 3.]);
        assert_eq!(tokens_per_row(7, 3), 3);
    }
}
