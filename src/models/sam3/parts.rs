//! The small modules SAM 3's networks are built of, read from `<name>.*` weights: Linears whose
//! shape comes from the file, MLPs, affine norms, convolutions and multi-head attention over
//! split or fused (`in_proj`) projections.

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::models::layers;
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::{Linear, LinearWeight};

/// The Linear `<name>`, its (out, in) read from the stored weight.
pub fn linear(w: &Weights, name: &str) -> Result<Linear> {
    let key = w.key(&format!("{name}.weight"));
    let entry = w
        .file
        .entry(&key)
        .with_context(|| format!("missing tensor {key:?}"))?;
    let shape = (entry.shape[0] as i64, entry.shape[1] as i64);
    w.linear(name, shape)
}

/// A Linear from tensors already in the compute dtype (one third of a fused projection).
fn dense(weight: Tensor, bias: Tensor) -> Linear {
    Linear::new(LinearWeight::Dense(weight), Some(bias))
}

/// Which of several names the file uses for one module (original release or converted).
pub fn present(w: &Weights, names: [String; 2], suffix: &str) -> Result<String> {
    let found = names.iter().find(|n| w.has(&format!("{n}{suffix}")));
    found
        .cloned()
        .with_context(|| format!("none of {names:?} is in the file"))
}

/// PyTorch's default eps, which every SAM 3 norm keeps.
const EPS: f64 = 1e-5;

/// An affine LayerNorm or GroupNorm at PyTorch's default eps.
pub struct Norm(layers::Norm);

impl Norm {
    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self(layers::Norm::load(w, name)?))
    }

    /// Over the last dimension.
    pub fn layer(&self, x: &Tensor) -> Tensor {
        self.0.layer(x, EPS)
    }

    /// Over the channels of `[B, C, H, W]` (SAM's LayerNorm2d).
    pub fn channels(&self, x: &Tensor) -> Tensor {
        self.layer(&x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
    }

    pub fn group(&self, x: &Tensor, groups: i64) -> Tensor {
        self.0.groups(x, groups, EPS)
    }
}

/// ReLU between Linear layers `<name>.layers.N` (SAM's MLP).
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        let mut layers = Vec::new();
        while w.has(&format!("{name}.layers.{}.weight", layers.len())) {
            layers.push(linear(w, &format!("{name}.layers.{}", layers.len()))?);
        }
        anyhow::ensure!(!layers.is_empty(), "missing MLP {name}");
        Ok(Self { layers })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let last = self.layers.len() - 1;
        let mut x = x.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i < last {
                x = x.relu();
            }
        }
        Ok(x)
    }
}

/// A 2-D convolution (or a stride-2, kernel-2 transposed one) with an optional bias.
pub struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Conv {
    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        let bias = format!("{name}.bias");
        Ok(Self {
            weight: w.tensor(&format!("{name}.weight"))?,
            bias: w.optional(&bias)?,
        })
    }

    pub fn forward(&self, x: &Tensor, stride: i64, padding: i64) -> Tensor {
        x.conv2d(
            &self.weight,
            self.bias.as_ref(),
            [stride, stride],
            [padding, padding],
            [1, 1],
            1,
        )
    }

    /// The kernel's side.
    pub fn kernel(&self) -> i64 {
        self.weight.size()[2]
    }

    /// Stride equal to the kernel, no padding (patch embedding, SAM's mask downscaling).
    pub fn patches(&self, x: &Tensor) -> Tensor {
        self.forward(x, self.kernel(), 0)
    }

    /// Padded to keep the size.
    pub fn same(&self, x: &Tensor) -> Tensor {
        self.forward(x, 1, self.weight.size()[2] / 2)
    }

    /// ConvTranspose2d with kernel 2 and stride 2: doubles the size.
    pub fn up2(&self, x: &Tensor) -> Tensor {
        x.conv_transpose2d(
            &self.weight,
            self.bias.as_ref(),
            [2, 2],
            [0, 0],
            [0, 0],
            1,
            [1, 1],
        )
    }
}

/// Multi-head attention with its q/k/v/out projections; the detector's files keep q, k, v as
/// one `in_proj` (nn.MultiheadAttention), which is split as ComfyUI splits it.
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: i64,
}

impl Attention {
    pub fn load(w: &Weights, name: &str, heads: i64) -> Result<Self> {
        let fused = format!("{name}.in_proj_weight");
        let (q, k, v) = if w.has(&fused) {
            let weights = w.tensor(&fused)?.chunk(3, 0);
            let biases = w.tensor(&format!("{name}.in_proj_bias"))?.chunk(3, 0);
            let part = |i: usize| dense(weights[i].contiguous(), biases[i].contiguous());
            (part(0), part(1), part(2))
        } else {
            (
                linear(w, &format!("{name}.q_proj"))?,
                linear(w, &format!("{name}.k_proj"))?,
                linear(w, &format!("{name}.v_proj"))?,
            )
        };
        Ok(Self {
            q,
            k,
            v,
            out: linear(w, &format!("{name}.out_proj"))?,
            heads,
        })
    }

    /// Queries from `q`, keys from `k`, values from `v` (`[B, N, C]` each); `mask` is additive
    /// or boolean (true attends) and broadcasts to `[B, heads, Nq, Nk]`.
    pub fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (q, k, v) = (self.q.forward(q)?, self.k.forward(k)?, self.v.forward(v)?);
        self.out.forward(&attention(&q, &k, &v, self.heads, mask))
    }

    /// Self-attention of `x` on itself.
    pub fn own(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x, x, x, None)
    }
}

/// A `[B, T]` keep-mask (nonzero attends) as SDPA's boolean `[B, 1, 1, T]`.
pub fn key_mask(mask: &Tensor) -> Tensor {
    mask.ne(0).unsqueeze(1).unsqueeze(1)
}

/// The tensor in float32 (positions and rotations are computed in float32, as ComfyUI does).
pub fn f32(x: &Tensor) -> Tensor {
    x.to_kind(Kind::Float)
}
