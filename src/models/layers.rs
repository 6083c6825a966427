//! Layers the convolutional networks share (the KL autoencoder, the SDXL UNet): 2-D
//! convolutions and affine norms read from `<name>.weight` / `<name>.bias`, and LDM's
//! sinusoidal timestep features (FLUX uses them too).

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::wan::dit::layer_norm;
use super::weights::Weights;
use crate::runtime::manager::Movable;

const GROUPS: i64 = 32;

pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
}

impl Conv2d {
    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{name}.weight"))?,
            bias: w.tensor(&format!("{name}.bias"))?,
        })
    }

    /// With `stride` and the given padding on every side.
    pub fn forward(&self, x: &Tensor, stride: i64, padding: i64) -> Tensor {
        x.conv2d(
            &self.weight,
            Some(&self.bias),
            [stride, stride],
            [padding, padding],
            [1, 1],
            1,
        )
    }

    /// The kernel's height.
    pub fn kernel_size(&self) -> i64 {
        self.weight.size()[2]
    }

    /// Stride 1, padded to keep the size.
    pub fn same(&self, x: &Tensor) -> Tensor {
        self.forward(x, 1, self.weight.size()[2] / 2)
    }
}

/// LeakyReLU with `slope` below 1 (tch's `leaky_relu` has no slope argument): the larger of `x`
/// and `slope·x`, the same products torch computes.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    x.maximum(&(x * slope))
}

/// [`leaky_relu`] written over a tensor no one else holds (a convolution's output), as torch's
/// `LeakyReLU(inplace=True)` leaves no second full-size result: one temporary, for `slope·x`.
pub fn leaky_relu_owned(x: Tensor, slope: f64) -> Tensor {
    let scaled = &x * slope;
    x.maximum_out(&x, &scaled)
}

/// Reflect-pads the bottom and right edges of `[B, C, H, W]` up to a multiple of `multiple`
/// (ComfyUI's `pad_to_patch_size` with `padding_mode="reflect"`).
pub fn pad_reflect_to_multiple(x: &Tensor, multiple: i64) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    let (ph, pw) = (
        (multiple - h % multiple) % multiple,
        (multiple - w % multiple) % multiple,
    );
    if ph == 0 && pw == 0 {
        return x.shallow_clone();
    }
    x.reflection_pad2d([0, pw, 0, ph])
}

/// An affine norm's weight and bias, applied as GroupNorm(32) or LayerNorm.
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{name}.weight"))?,
            bias: w.tensor(&format!("{name}.bias"))?,
        })
    }

    pub fn group(&self, x: &Tensor, eps: f64) -> Tensor {
        self.groups(x, GROUPS, eps)
    }

    /// GroupNorm with `groups` groups.
    pub fn groups(&self, x: &Tensor, groups: i64, eps: f64) -> Tensor {
        x.group_norm(groups, Some(&self.weight), Some(&self.bias), eps, true)
    }

    pub fn layer(&self, x: &Tensor, eps: f64) -> Tensor {
        layer_norm(x, Some((&self.weight, &self.bias)), eps)
    }
}

/// LDM's `timestep_embedding`: cos then sin features of `t` (`[b]`), `[b, dim]` in float32.
pub fn timestep_embedding(t: &Tensor, dim: i64) -> Tensor {
    let half = dim / 2;
    let freqs =
        (Tensor::arange(half, (Kind::Float, t.device())) * -(10000f64.ln()) / half as f64).exp();
    let angles = t.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    Tensor::cat(&[angles.cos(), angles.sin()], 1)
}

/// Video pixels folded into `p × p` patches: `b c f (h q) (w r) -> b (c r q) f h w` (the
/// channel order of the Wan 2.2 and LTX VAEs).
pub fn patchify_video(x: &Tensor, p: i64) -> Tensor {
    if p == 1 {
        return x.shallow_clone();
    }
    let [b, c, f, h, w] = x.size()[..] else {
        unreachable!("video is [B, C, T, H, W]")
    };
    x.view([b, c, f, h / p, p, w / p, p].as_slice())
        .permute([0, 1, 6, 4, 2, 3, 5].as_slice())
        .reshape([b, c * p * p, f, h / p, w / p])
}

/// `b (c r q) f h w -> b c f (h q) (w r)`.
pub fn unpatchify_video(x: &Tensor, p: i64) -> Tensor {
    if p == 1 {
        return x.shallow_clone();
    }
    let [b, cp, f, h, w] = x.size()[..] else {
        unreachable!("video is [B, C, T, H, W]")
    };
    let c = cp / (p * p);
    x.view([b, c, p, p, f, h, w].as_slice())
        .permute([0, 1, 4, 5, 3, 6, 2].as_slice())
        .reshape([b, c, f, h * p, w * p])
}

/// `Movable` for the layers that are a weight and a bias.
macro_rules! movable_weight_and_bias {
    ($($layer:ty),*) => {$(
        impl Movable for $layer {
            fn moved(&self, device: Device) -> Self {
                Self {
                    weight: self.weight.moved(device),
                    bias: self.bias.moved(device),
                }
            }

            fn bytes(&self) -> u64 {
                self.weight.bytes() + self.bias.bytes()
            }
        }
    )*};
}

movable_weight_and_bias!(Conv2d, Norm);
