//! A linear layer that keeps its weight in the stored format and runs the fastest kernel the
//! device has for that format, as ComfyUI's mixed-precision ops do: FP8 weights through
//! `_scaled_mm` where the GPU has FP8 tensor cores (compute capability 8.9 and newer), otherwise
//! dequantized to the compute dtype on every call ("emulated"), which saves memory, not time.
//! INT8 weights multiply in int8 everywhere, as comfy-kitchen's `int8_linear` does.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::fused::quantize_e4m3;
use super::gemm_sm90;
use super::int8;
use super::lora::LoraPatch;
use super::manager::Movable;
use super::quant::{dequantize_fp8, dequantize_nvfp4, input_scale, scale_key, LayerQuant};
use super::safetensors_file::SafetensorsFile;

/// How a layer's weight is stored.
pub enum LinearWeight {
    /// Full precision, already in the compute dtype.
    Dense(Tensor),
    /// FP8 (e4m3fn or e5m2) `[out, in]` with an fp32 per-tensor scale; `input_scale` is the fixed
    /// activation scale the file gives (1 when absent, as in ComfyUI: no per-call amax).
    Fp8 {
        weight: Tensor,
        scale: Tensor,
        input_scale: Option<Tensor>,
    },
    /// NVFP4 as ComfyUI stores it (packed E2M1 pairs, swizzled e4m3 block scales, fp32 global
    /// scale), for a module of `shape` = (out, in).
    Nvfp4 {
        packed: Tensor,
        block_scale: Tensor,
        global_scale: Tensor,
        shape: (i64, i64),
    },
    /// INT8 `[out, in]` with an fp32 per-tensor or per-row (`[out, 1]`) scale, its input
    /// features rotated in groups of `convrot` if set ([`super::int8`]).
    Int8 {
        weight: Tensor,
        scale: Tensor,
        convrot: Option<i64>,
    },
}

/// The kernel a quantized layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Dequantize the weight to the input's dtype and multiply in that dtype.
    Dequantize,
    /// FP8 × FP8 `_scaled_mm` with the activation quantized per call.
    ScaledMm,
    /// INT8 × INT8 `_int_mm` with the activation quantized per row per call.
    IntMm,
}

pub struct Linear {
    pub weight: LinearWeight,
    pub bias: Option<Tensor>,
    /// ModelOpt AWQ smoothing: the input is multiplied by it first.
    pub pre_quant_scale: Option<Tensor>,
    kernel: Kernel,
}

impl Movable for Linear {
    /// The same layer (format and kernel) with every tensor on `device`.
    fn moved(&self, device: Device) -> Self {
        let m = |t: &Tensor| t.moved(device);
        let weight = match &self.weight {
            LinearWeight::Dense(w) => LinearWeight::Dense(m(w)),
            LinearWeight::Fp8 {
                weight,
                scale,
                input_scale,
            } => LinearWeight::Fp8 {
                weight: m(weight),
                scale: m(scale),
                input_scale: input_scale.moved(device),
            },
            LinearWeight::Nvfp4 {
                packed,
                block_scale,
                global_scale,
                shape,
            } => LinearWeight::Nvfp4 {
                packed: m(packed),
                block_scale: m(block_scale),
                global_scale: m(global_scale),
                shape: *shape,
            },
            LinearWeight::Int8 {
                weight,
                scale,
                convrot,
            } => LinearWeight::Int8 {
                weight: m(weight),
                scale: m(scale),
                convrot: *convrot,
            },
        };
        Self {
            weight,
            bias: self.bias.moved(device),
            pre_quant_scale: self.pre_quant_scale.moved(device),
            kernel: self.kernel,
        }
    }

    fn bytes(&self) -> u64 {
        let weight = match &self.weight {
            LinearWeight::Dense(w) => w.bytes(),
            LinearWeight::Fp8 {
                weight,
                scale,
                input_scale,
            } => weight.bytes() + scale.bytes() + input_scale.bytes(),
            LinearWeight::Nvfp4 {
                packed,
                block_scale,
                global_scale,
                ..
            } => packed.bytes() + block_scale.bytes() + global_scale.bytes(),
            LinearWeight::Int8 { weight, scale, .. } => weight.bytes() + scale.bytes(),
        };
        weight + self.bias.bytes() + self.pre_quant_scale.bytes()
    }
}

/// Whether `device` has FP8 tensor cores (ComfyUI's `supports_fp8_compute`: NVIDIA, CC ≥ 8.9).
pub fn supports_fp8_compute(device: Device) -> bool {
    matches!(crate::system::device_capability(device), Some(cc) if cc >= (8, 9))
}

impl Linear {
    pub fn new(weight: LinearWeight, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            pre_quant_scale: None,
            kernel: Kernel::Dequantize,
        }
    }

    /// A full-precision weight cast to FP8 with scale 1 (UNETLoader's `weight_dtype`
    /// `fp8_e4m3fn`/`fp8_e5m2`); `fast` (`fp8_e4m3fn_fast`) multiplies in FP8 where the device can.
    pub fn cast_to_fp8(weight: &Tensor, bias: Option<Tensor>, kind: Kind, fast: bool) -> Self {
        let scale = Tensor::ones([], (Kind::Float, weight.device()));
        let fp8 = LinearWeight::Fp8 {
            weight: weight.to_kind(kind),
            scale,
            input_scale: None,
        };
        let device = weight.device();
        let kernel = if fast && kind == Kind::Float8e4m3fn && supports_fp8_compute(device) {
            Kernel::ScaledMm
        } else {
            Kernel::Dequantize
        };
        Self::new(fp8, bias).with_kernel(kernel)
    }

    /// Layer `layer` of `file` (the module path without `.weight`) on `device`, kept in its stored
    /// format; full-precision weights and biases are cast to `dtype`. `shape` is the module's
    /// (out, in), which NVFP4 needs to cut its padding.
    pub fn load(
        file: &SafetensorsFile,
        layers: &BTreeMap<String, LayerQuant>,
        layer: &str,
        shape: (i64, i64),
        dtype: Kind,
        device: Device,
    ) -> Result<Self> {
        let tensor = |key: &str| file.tensor(key, device);
        let scale = |name: &str| -> Result<Tensor> {
            let key = scale_key(file, layer, name)
                .with_context(|| format!("{}: {layer} has no {name}", file.path.display()))?;
            Ok(tensor(&key)?.to_kind(Kind::Float))
        };
        let quant = layers.get(layer);
        let weight = tensor(&format!("{layer}.weight"))?;
        let (weight, kernel) = match quant.map(|q| q.format.as_str()) {
            None => (
                LinearWeight::Dense(weight.to_kind(dtype)),
                Kernel::Dequantize,
            ),
            Some(format @ ("float8_e4m3fn" | "float8_e5m2")) => {
                let native = format == "float8_e4m3fn"
                    && !quant.is_some_and(|q| q.full_precision_matrix_mult)
                    && supports_fp8_compute(device);
                let fp8 = LinearWeight::Fp8 {
                    weight,
                    scale: scale("weight_scale")?,
                    input_scale: input_scale(file, layer)?.map(|s| s.to_device(device)),
                };
                let kernel = if native {
                    Kernel::ScaledMm
                } else {
                    Kernel::Dequantize
                };
                (fp8, kernel)
            }
            Some("nvfp4") => (
                LinearWeight::Nvfp4 {
                    packed: weight,
                    block_scale: tensor(
                        &scale_key(file, layer, "weight_scale")
                            .with_context(|| format!("{layer} has no weight_scale"))?,
                    )?,
                    global_scale: scale("weight_scale_2")?,
                    shape,
                },
                Kernel::Dequantize,
            ),
            Some("int8_tensorwise") => (
                LinearWeight::Int8 {
                    weight,
                    scale: scale("weight_scale")?,
                    convrot: quant.and_then(LayerQuant::convrot_group),
                },
                Kernel::IntMm,
            ),
            Some(other) => bail!(
                "{}: {layer} is stored as {other}, which this build cannot run yet",
                file.path.display()
            ),
        };
        let bias_key = format!("{layer}.bias");
        let bias = if file.contains(&bias_key) {
            Some(tensor(&bias_key)?.to_kind(dtype))
        } else {
            None
        };
        let pre_key = format!("{layer}.pre_quant_scale");
        let mut linear = Self::new(weight, bias).with_kernel(kernel);
        if file.contains(&pre_key) {
            linear.pre_quant_scale = Some(tensor(&pre_key)?.to_kind(dtype));
        }
        let (out, inp) = linear.shape();
        if (out, inp) != shape {
            bail!(
                "{}: {layer} is [{out}, {inp}], expected [{}, {}]",
                file.path.display(),
                shape.0,
                shape.1
            );
        }
        Ok(linear)
    }

    /// One layer giving the outputs of `parts` side by side, their weights stacked along the
    /// output dimension, so that projections of one input run as one GEMM (and an FP8 input is
    /// quantized once). Dense layers of one dtype, or FP8 layers of one format and scale; all
    /// with a bias or none; no AWQ smoothing. `None` where the parts cannot be stacked.
    pub fn concat(parts: &[&Linear]) -> Option<Linear> {
        let first = parts.first()?;
        let compatible = parts.iter().all(|p| {
            p.kernel == first.kernel
                && p.pre_quant_scale.is_none()
                && p.bias.as_ref().map(Tensor::kind) == first.bias.as_ref().map(Tensor::kind)
        });
        if !compatible {
            return None;
        }
        let stacked = |tensors: Vec<&Tensor>| {
            let kind = tensors[0].kind();
            tensors
                .iter()
                .all(|t| t.kind() == kind && t.device() == tensors[0].device())
                .then(|| Tensor::cat(&tensors, 0))
        };
        let weight = match &first.weight {
            LinearWeight::Dense(_) => {
                let weights = parts.iter().map(|p| match &p.weight {
                    LinearWeight::Dense(w) => Some(w),
                    _ => None,
                });
                LinearWeight::Dense(stacked(weights.collect::<Option<_>>()?)?)
            }
            LinearWeight::Fp8 {
                scale, input_scale, ..
            } => {
                let same = |a: &Tensor, b: &Tensor| a.size() == b.size() && a.equal(b);
                let weights = parts.iter().map(|p| match &p.weight {
                    LinearWeight::Fp8 {
                        weight,
                        scale: s,
                        input_scale: i,
                    } if same(s, scale)
                        && match (i, input_scale) {
                            (None, None) => true,
                            (Some(i), Some(first)) => same(i, first),
                            _ => false,
                        } =>
                    {
                        Some(weight)
                    }
                    _ => None,
                });
                LinearWeight::Fp8 {
                    weight: stacked(weights.collect::<Option<_>>()?)?,
                    scale: scale.shallow_clone(),
                    input_scale: input_scale.as_ref().map(Tensor::shallow_clone),
                }
            }
            LinearWeight::Int8 { scale, convrot, .. } => {
                // Per-row scales stack with their rows; a per-tensor scale must be shared.
                let per_row = scale.numel() > 1;
                let mut weights = Vec::new();
                let mut scales = Vec::new();
                for p in parts {
                    match &p.weight {
                        LinearWeight::Int8 {
                            weight,
                            scale: s,
                            convrot: c,
                        } if c == convrot
                            && (s.numel() > 1) == per_row
                            && (per_row || s.equal(scale)) =>
                        {
                            weights.push(weight);
                            scales.push(s.reshape([-1, 1]));
                        }
                        _ => return None,
                    }
                }
                LinearWeight::Int8 {
                    weight: stacked(weights)?,
                    scale: if per_row {
                        Tensor::cat(&scales, 0)
                    } else {
                        scale.shallow_clone()
                    },
                    convrot: *convrot,
                }
            }
            LinearWeight::Nvfp4 { .. } => return None,
        };
        let bias = match &first.bias {
            Some(_) => Some(stacked(
                parts.iter().filter_map(|p| p.bias.as_ref()).collect(),
            )?),
            None => None,
        };
        Some(Linear {
            weight,
            bias,
            pre_quant_scale: None,
            kernel: first.kernel,
        })
    }

    /// Forces a kernel (tests check both on any device; FP8 `_scaled_mm` also runs on CPU).
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// (out, in) of the module.
    pub fn shape(&self) -> (i64, i64) {
        match &self.weight {
            LinearWeight::Dense(w)
            | LinearWeight::Fp8 { weight: w, .. }
            | LinearWeight::Int8 { weight: w, .. } => {
                let s = w.size();
                (s[0], s[1])
            }
            LinearWeight::Nvfp4 { shape, .. } => *shape,
        }
    }

    /// The weight in `dtype` as the emulated path multiplies it.
    pub fn dequantized(&self, dtype: Kind) -> Result<Tensor> {
        Ok(match &self.weight {
            LinearWeight::Dense(w) => w.to_kind(dtype),
            LinearWeight::Fp8 { weight, scale, .. } => dequantize_fp8(weight, scale, dtype),
            LinearWeight::Nvfp4 {
                packed,
                block_scale,
                global_scale,
                shape,
            } => dequantize_nvfp4(packed, block_scale, global_scale, *shape, dtype)?,
            LinearWeight::Int8 {
                weight,
                scale,
                convrot,
            } => int8::dequantize(weight, scale, *convrot, dtype)?,
        })
    }

    /// The layer with LoRA patches merged (each `(patch, strength)` in float32, in order). A
    /// quantized weight is dequantized and the merged layer stays full precision in `dtype`:
    /// ComfyUI instead requantizes FP8 targets with stochastic rounding, which loses what the
    /// patch added below the FP8 step; keeping it exact costs the memory of a bf16 layer.
    pub fn with_lora(&self, patches: &[(&LoraPatch, f64)], dtype: Kind) -> Result<Linear> {
        let mut weight = match &self.weight {
            LinearWeight::Dense(w) => w.shallow_clone(),
            _ => self.dequantized(dtype)?,
        };
        for (patch, strength) in patches {
            weight = patch.apply(&weight, *strength)?;
        }
        Ok(Linear {
            weight: LinearWeight::Dense(weight.to_kind(dtype)),
            bias: self.bias.as_ref().map(Tensor::shallow_clone),
            pre_quant_scale: self.pre_quant_scale.as_ref().map(Tensor::shallow_clone),
            kernel: Kernel::Dequantize,
        })
    }

    /// `x · Wᵀ + b` over the last dimension of `x`, in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let scaled;
        let x = match &self.pre_quant_scale {
            Some(s) => {
                scaled = x * s.to_kind(x.kind());
                &scaled
            }
            None => x,
        };
        let dtype = x.kind();
        let bias = self.bias.as_ref().map(|b| b.to_kind(dtype));
        // Only for the FP8 kernel: a tuple pattern here would evaluate `scaled_mm` for every
        // layer and throw its product away.
        if self.kernel == Kernel::ScaledMm {
            if let Some(out) = self.scaled_mm(x, bias.as_ref())? {
                return Ok(out);
            }
        }
        if let (
            Kernel::IntMm,
            LinearWeight::Int8 {
                weight,
                scale,
                convrot,
            },
        ) = (self.kernel, &self.weight)
        {
            return int8::linear(x, weight, scale, *convrot, bias.as_ref());
        }
        let weight = self.dequantized(dtype)?;
        Ok(x.linear(&weight, bias.as_ref()))
    }

    /// `gelu_tanh(x · Wᵀ + b)`, the first half of a DiT's MLP: on Hopper one GEMM with the bias
    /// and the activation in its epilogue (`gemm_sm90`; dense half-precision layers with a bias),
    /// elsewhere `forward` then libtorch's GELU.
    pub fn forward_gelu_tanh(&self, x: &Tensor) -> Result<Tensor> {
        if let (LinearWeight::Dense(weight), Some(bias), None) =
            (&self.weight, &self.bias, &self.pre_quant_scale)
        {
            if let Some(out) = gemm_sm90::linear_gelu_tanh(x, weight, bias) {
                return Ok(out);
            }
        }
        Ok(self.forward(x)?.gelu("tanh"))
    }

    /// ComfyUI's FP8 path: the activation scaled by 1/input_scale, clamped to the FP8 range and
    /// cast; one tensor-wise `_scaled_mm` with the bias fused. `None` where the shapes or kinds
    /// do not allow it (K or N not multiples of 16, an e5m2 weight), so the caller dequantizes.
    fn scaled_mm(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
        let LinearWeight::Fp8 {
            weight,
            scale,
            input_scale,
        } = &self.weight
        else {
            return Ok(None);
        };
        let (n, k) = self.shape();
        let kind = weight.kind();
        if kind != Kind::Float8e4m3fn || n % 16 != 0 || k % 16 != 0 {
            return Ok(None);
        }
        let dtype = x.kind();
        let shape = x.size();
        let x2 = x.reshape([-1, k]);
        let x2 = match input_scale {
            Some(s) => x2 * s.reciprocal().to_kind(dtype),
            None => x2,
        };
        let x8 = quantize_e4m3(&x2)?;
        let scale_a = match input_scale {
            Some(s) => s.shallow_clone(),
            None => Tensor::ones([], (Kind::Float, x.device())),
        };
        let fuse_bias = matches!(dtype, Kind::BFloat16 | Kind::Half);
        let out = x8.internal_scaled_mm(
            &weight.tr(),
            &scale_a,
            scale,
            if fuse_bias { bias } else { None },
            None::<&Tensor>,
            dtype,
            false,
        );
        let out = match (fuse_bias, bias) {
            (false, Some(b)) => out + b,
            _ => out,
        };
        let mut out_shape = shape;
        *out_shape.last_mut().expect("x has a last dimension") = n;
        Ok(Some(out.reshape(out_shape)))
    }
}
