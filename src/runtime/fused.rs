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
use crate::models::ltx::av_rope::rotate_split;
use crate::models::rope::apply_rope;

pub const SOURCE: &str = include_str!("fused_kernels.cu");

/// Every kernel `SOURCE` defines, by element suffix.
pub const KERNELS: [&str; 12] = [
    "rms_norm_rope",
    "rms_norm_split_rope",
    "rms_norm",
    "layer_norm_modulate",
    "rms_norm_modulate",
    "residual_layer_norm_modulate",
    "residual_layer_norm_affine",
    "gated_residual_layer_norm_modulate",
    "gated_residual_layer_norm_affine",
    "quantize_e4m3",
    "channel_rms_norm",
    "channel_rms_norm_silu",
];
const SUFFIXES: [(Kind, &str); 3] = [
    (Kind::BFloat16, "bf16"),
    (Kind::Half, "f16"),
    (Kind::Float, "f32"),
];
/// Elements per 16-byte vector, the unit every kernel loads and stores.
const VECTOR: i64 = 8;
/// Vectors per thread in the row kernels (`VECTORS` in `SOURCE`); a block holds one row of at
/// most 1024 threads.
const VECTORS_PER_THREAD: i64 = 6;
const MAX_WIDTH: i64 = 1024 * VECTORS_PER_THREAD * VECTOR;

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

/// `blocks` blocks of `threads` threads.
fn launch(
    index: usize,
    function: CuFunction,
    blocks: i64,
    threads: i64,
    args: &[Arg],
) -> Result<()> {
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
    let Ok(grid) = u32::try_from(blocks) else {
        bail!("{blocks} blocks are too many for one launch");
    };
    if grid == 0 {
        return Ok(());
    }
    // SAFETY: the callers pass pointers of 16-byte aligned tensors of the kernel's element type,
    // contiguous or with the row stride they pass along, and the sizes those tensors have; the
    // values live until the launch returns.
    unsafe { driver.launch(index, function, grid, threads as u32, &mut params) }
}

/// Whether rows of `width` fit the kernels' layout: whole 16-byte vectors of 8 elements, one
/// row per block.
fn fits_rows(width: i64) -> bool {
    width % VECTOR == 0 && width <= MAX_WIDTH
}

/// The threads of a row kernel's block for rows of `width`: whole warps, enough for
/// `VECTORS_PER_THREAD` vectors each.
fn row_threads(width: i64) -> i64 {
    let vectors = width / VECTOR;
    let threads = (vectors + VECTORS_PER_THREAD - 1) / VECTORS_PER_THREAD;
    (threads + 31) / 32 * 32
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
    let rope_fits = freqs.numel() as i64 == s * half_head
        && freqs.kind() == Kind::ComplexFloat
        && half_head % 4 == 0;
    if rope_fits {
        let rot = freqs.view_as_real().contiguous();
        let extra = [int(half_head)?, int(s)?, Arg::Float(eps as f32)];
        if let Some(out) = rms_norm_kernel("rms_norm_rope", x, weight, &[&rot], &extra)? {
            return Ok(out);
        }
    }
    let normed = x.rms_norm([width], Some(weight), eps);
    Ok(apply_rope(&normed.reshape([b, s, heads, width / heads]), freqs).view([b, s, width]))
}

/// LTX's query/key normalisation and rotation: `rms_norm(x, weight)` over the row of `x`
/// `[b, s, width]`, rounded to `x`'s kind, then in each head of `2·half` elements element `i`
/// turned with `i + half` by the angle whose `cos`, `sin` `[1, s, heads, half]` (float32) give
/// for the token, in float32 (`rotate_split`).
pub fn rms_norm_split_rope(
    x: &Tensor,
    weight: &Tensor,
    (cos, sin): (&Tensor, &Tensor),
    eps: f64,
) -> Result<Tensor> {
    let (_, s, width) = x.size3()?;
    if let [1, tokens, heads, half] = cos.size()[..] {
        let fits = tokens == s
            && heads * half * 2 == width
            && half % VECTOR == 0
            && cos.kind() == Kind::Float
            && cos.is_contiguous()
            && sin.is_contiguous();
        if fits {
            let extra = [int(half)?, int(heads)?, int(s)?, Arg::Float(eps as f32)];
            let tables = [cos, sin];
            if let Some(out) = rms_norm_kernel("rms_norm_split_rope", x, weight, &tables, &extra)? {
                return Ok(out);
            }
        }
    }
    Ok(rotate_split(
        &x.rms_norm([width], Some(weight), eps),
        cos,
        sin,
    ))
}

/// `rms_norm(x, weight)` over the last dimension of `x` `[b, s, width]`: Wan's cross-attention
/// query and key normalisation.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let extra = [Arg::Float(eps as f32)];
    if let Some(out) = rms_norm_kernel("rms_norm", x, weight, &[], &extra)? {
        return Ok(out);
    }
    Ok(x.rms_norm([x.size3()?.2], Some(weight), eps))
}

/// Runs `name` (`rms_norm`, or a rotating one with its float32 `tables`) over the rows of `x`
/// `[b, s, width]`, read in place where they are evenly spaced, with the kernel's last arguments
/// `extra`. `None` where it cannot run: the caller runs libtorch's chain.
fn rms_norm_kernel(
    name: &str,
    x: &Tensor,
    weight: &Tensor,
    tables: &[&Tensor],
    extra: &[Arg],
) -> Result<Option<Tensor>> {
    let (b, s, width) = x.size3()?;
    let Some((index, f)) = kernel_for(x.device(), x.kind(), name).filter(|_| fits_rows(width))
    else {
        return Ok(None);
    };
    let (x, stride) = match evenly_spaced_rows(x) {
        Some(stride) => (x.shallow_clone(), stride),
        None => (x.contiguous(), width),
    };
    let weight = weight.to_kind(x.kind()).contiguous();
    let mut inputs = vec![&x, &weight];
    inputs.extend(tables);
    if !aligned(&inputs) || stride % VECTOR != 0 {
        return Ok(None);
    }
    let out = Tensor::empty([b, s, width], (x.kind(), x.device()));
    let mut args = vec![ptr(&x), int(stride)?, ptr(&weight)];
    args.extend(tables.iter().map(|t| ptr(t)));
    args.extend([ptr(&out), int(width)?]);
    args.extend_from_slice(extra);
    launch(index, f, b * s, row_threads(width), &args)?;
    Ok(Some(out))
}

/// The distance in elements between consecutive rows of `x` `[b, s, width]` whose rows are
/// contiguous and evenly spaced (a contiguous tensor, or a column slice of one such as the
/// query of a fused q/k/v projection); `None` otherwise.
fn evenly_spaced_rows(x: &Tensor) -> Option<i64> {
    let (size, stride) = (x.size(), x.stride());
    let row = if size[1] == 1 { stride[0] } else { stride[1] };
    let rows_even = size[0] == 1 || stride[0] == row * size[1];
    (stride[2] == 1 && row >= size[2] && rows_even).then_some(row)
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

/// A LayerNorm over the last dimension, modulated or with its own weight and bias.
#[derive(Clone, Copy)]
pub enum Norm<'a> {
    /// `shift + layer_norm(r) · (scale + 1)`, the modulated norm in front of every attention
    /// and FFN; `shift`, `scale`: `[b, rows, dim]`, spread over the tokens by [`per_token`].
    Modulate {
        shift: &'a Tensor,
        scale: &'a Tensor,
    },
    /// `layer_norm(r) · weight + bias`, `weight` and `bias` of `[dim]`.
    Affine {
        weight: &'a Tensor,
        bias: &'a Tensor,
    },
    /// LTX's `rms_norm(r) · (scale + 1) + shift`, the product rounded; `shift`, `scale` as for
    /// `Modulate`.
    RmsModulate {
        shift: &'a Tensor,
        scale: &'a Tensor,
    },
}

impl Norm<'_> {
    fn tensors(&self) -> [&Tensor; 2] {
        match *self {
            Norm::Modulate { shift, scale } | Norm::RmsModulate { shift, scale } => [shift, scale],
            Norm::Affine { weight, bias } => [weight, bias],
        }
    }

    /// libtorch's chain, where the kernel does not run.
    fn chain(&self, r: &Tensor, eps: f64) -> Tensor {
        let (tokens, width) = (r.size()[1], r.size()[2]);
        match *self {
            Norm::Modulate { shift, scale } => {
                let normed = r.layer_norm([width], None::<&Tensor>, None::<&Tensor>, eps, true);
                per_token(shift, tokens).addcmul(&normed, &(per_token(scale, tokens) + 1.0))
            }
            Norm::Affine { weight, bias } => {
                r.layer_norm([width], Some(weight), Some(bias), eps, true)
            }
            Norm::RmsModulate { shift, scale } => {
                let normed = r.rms_norm([width], None::<&Tensor>, eps);
                normed * (per_token(scale, tokens) + 1.0) + per_token(shift, tokens)
            }
        }
    }
}

/// What is added to the residual stream before its norm: `y`, times `gate` `[b, rows, dim]`
/// (spread over the tokens by [`per_token`]) where there is one.
#[derive(Clone, Copy)]
pub struct Residual<'a> {
    pub y: &'a Tensor,
    pub gate: Option<&'a Tensor>,
}

impl Residual<'_> {
    /// libtorch's chain: `x + y` or `addcmul(x, y, gate)`.
    pub fn chain(&self, x: &Tensor) -> Tensor {
        match self.gate {
            Some(gate) => x.addcmul(self.y, &per_token(gate, x.size()[1])),
            None => x + self.y,
        }
    }
}

/// Runs the row kernel `residual_layer_norm` instantiates for `residual` and `norm` over `x`
/// `[b, tokens, dim]`: `(x + residual, its norm)`, the first `None` without a residual. `None`
/// where it cannot run (off CUDA, switched off, a layout or combination the kernels do not
/// take): the caller runs libtorch's chain.
fn residual_layer_norm_kernel(
    x: &Tensor,
    residual: Option<Residual>,
    norm: Norm,
    eps: f64,
) -> Result<Option<(Option<Tensor>, Tensor)>> {
    let (b, tokens, width) = x.size3()?;
    let [p, q] = norm.tensors();
    let (name, rows) = match (norm, residual.map(|r| r.gate)) {
        (Norm::Modulate { .. }, None) => ("layer_norm_modulate", p.size()[1]),
        (Norm::Modulate { .. }, Some(None)) => ("residual_layer_norm_modulate", p.size()[1]),
        (Norm::Modulate { .. }, Some(Some(g))) => {
            ("gated_residual_layer_norm_modulate", g.size()[1])
        }
        // An affine norm alone has no kernel of its own: libtorch's is one op.
        (Norm::Affine { .. }, None) => return Ok(None),
        (Norm::Affine { .. }, Some(None)) => ("residual_layer_norm_affine", 1),
        (Norm::Affine { .. }, Some(Some(g))) => ("gated_residual_layer_norm_affine", g.size()[1]),
        (Norm::RmsModulate { .. }, None) => ("rms_norm_modulate", p.size()[1]),
        (Norm::RmsModulate { .. }, Some(_)) => return Ok(None),
    };
    let per_row = |e: &Tensor| e.size() == [b, rows, width] && e.kind() == x.kind();
    let per_channel = |e: &Tensor| e.size() == [width] && e.kind() == x.kind();
    let layout_fits = fits_rows(width)
        && rows <= tokens
        && match norm {
            Norm::Modulate { .. } | Norm::RmsModulate { .. } => per_row(p) && per_row(q),
            Norm::Affine { .. } => per_channel(p) && per_channel(q),
        }
        && residual.is_none_or(|r| {
            r.y.size() == x.size() && r.y.kind() == x.kind() && r.gate.is_none_or(per_row)
        });
    if !layout_fits {
        return Ok(None);
    }
    let Some((index, f)) = kernel_for(x.device(), x.kind(), name) else {
        return Ok(None);
    };
    let x = x.contiguous();
    let y = residual.map(|r| r.y.contiguous());
    let gate = residual.and_then(|r| r.gate).map(Tensor::contiguous);
    let (p, q) = (p.contiguous(), q.contiguous());
    let mut inputs = vec![&x, &p, &q];
    inputs.extend(y.iter().chain(&gate));
    if !aligned(&inputs) {
        return Ok(None);
    }
    let out_x = y.as_ref().map(|_| x.empty_like());
    let out_h = x.empty_like();
    let null = Arg::Ptr(0);
    let args = [
        ptr(&x),
        y.as_ref().map_or(null, ptr),
        gate.as_ref().map_or(null, ptr),
        ptr(&p),
        ptr(&q),
        out_x.as_ref().map_or(null, ptr),
        ptr(&out_h),
        int(width)?,
        int(tokens)?,
        int(rows)?,
        int(tokens_per_row(tokens, rows))?,
        Arg::Float(eps as f32),
    ];
    launch(index, f, b * tokens, row_threads(width), &args)?;
    Ok(Some((out_x, out_h)))
}

/// `norm(x)` with no residual before it (the first Wan block's norm1, LTX's modulated norms).
pub fn layer_norm(x: &Tensor, norm: Norm, eps: f64) -> Result<Tensor> {
    match residual_layer_norm_kernel(x, None, norm, eps)? {
        Some((_, normed)) => Ok(normed),
        None => Ok(norm.chain(x, eps)),
    }
}

/// `r = x + y` (or `x + y · gate`, `addcmul`) and `norm(r)`: a residual add and the LayerNorm
/// that follows it in one pass over the rows. `x`, `y`: `[b, tokens, dim]`.
pub fn residual_layer_norm(
    x: &Tensor,
    residual: Residual,
    norm: Norm,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    if let Some((Some(r), normed)) = residual_layer_norm_kernel(x, Some(residual), norm, eps)? {
        return Ok((r, normed));
    }
    let r = residual.chain(x);
    let normed = norm.chain(&r, eps);
    Ok((r, normed))
}

/// Threads per block of the channel norm, 8 positions each.
const CHANNEL_NORM_THREADS: i64 = 256;

/// The Wan VAE's RMS norm over the channels (dim 1) of `x` `[b, c, …]`:
/// `F.normalize(x, dim=1) · √c · gamma`, `gamma` of c values shaped to broadcast over `x`'s
/// trailing dimensions, then SiLU with `silu`. On CUDA one pass of a kernel, elsewhere (or for
/// layouts it does not take, or after a failed launch) libtorch's chain, rounded at the same
/// points.
pub fn channel_rms_norm(x: &Tensor, gamma: &Tensor, silu: bool) -> Tensor {
    match channel_rms_norm_kernel(x, gamma, silu) {
        Ok(Some(out)) => return out,
        Ok(None) => {}
        Err(e) => log::warn!("channel RMS norm kernel: {e:#}; using libtorch ops"),
    }
    // The norm reduces in float32 internally whatever the dtype, so no upcast copy.
    let norm = x
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    let normed = x / norm * (gamma * (x.size()[1] as f64).sqrt());
    if silu {
        normed.silu()
    } else {
        normed
    }
}

/// [`channel_rms_norm`] by its kernel; `None` where it cannot run (off CUDA, switched off, a
/// layout it does not take).
fn channel_rms_norm_kernel(x: &Tensor, gamma: &Tensor, silu: bool) -> Result<Option<Tensor>> {
    let size = x.size();
    let (batch, channels) = (size[0], size[1]);
    let positions = size[2..].iter().product::<i64>();
    let name = if silu {
        "channel_rms_norm_silu"
    } else {
        "channel_rms_norm"
    };
    let fits = positions % VECTOR == 0
        && gamma.numel() as i64 == channels
        && gamma.kind() == x.kind()
        && gamma.device() == x.device();
    let Some((index, f)) = kernel_for(x.device(), x.kind(), name).filter(|_| fits) else {
        return Ok(None);
    };
    let x = x.contiguous();
    if !aligned(&[&x]) {
        return Ok(None);
    }
    let gamma = gamma.contiguous();
    let out = x.empty_like();
    let per_item = (positions / VECTOR + CHANNEL_NORM_THREADS - 1) / CHANNEL_NORM_THREADS;
    let args = [
        ptr(&x),
        ptr(&gamma),
        ptr(&out),
        int(channels)?,
        int(positions)?,
        int(per_item)?,
        Arg::Float((channels as f64).sqrt() as f32),
    ];
    launch(index, f, batch * per_item, CHANNEL_NORM_THREADS, &args)?;
    Ok(Some(out))
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
    let fits = n % VECTOR == 0 && n <= i32::MAX as i64;
    if fits && super::linear::supports_fp8_compute(device) {
        if let Some((index, f)) = kernel_for(device, x.kind(), "quantize_e4m3") {
            let x = x.contiguous();
            if aligned(&[&x]) {
                let out = Tensor::empty(x.size(), (Kind::Float8e4m3fn, device));
                let blocks = (n + QUANTIZE_CHUNK - 1) / QUANTIZE_CHUNK;
                let args = [ptr(&x), ptr(&out), int(n)?];
                launch(index, f, blocks, QUANTIZE_CHUNK / VECTOR, &args)?;
                return Ok(out);
            }
        }
    }
    // Row-major, as the kernel's output: `_scaled_mm` takes no other layout, and an elementwise
    // op keeps a strided input's strides.
    Ok(x.contiguous()
        .clamp(-E4M3_MAX, E4M3_MAX)
        .to_kind(Kind::Float8e4m3fn))
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
