//! The layers of the LTX video VAE (`causal_video_autoencoder.py`), run over a whole clip at
//! once: ComfyUI streams the same layers in chunks of frames, which gives these results.
//! Widths come from the weights' shapes.

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use super::vae_config::Padding;
use crate::models::layers::timestep_embedding;
use crate::models::weights::Weights;

/// A stride-1 3-D convolution whose time padding repeats the edge frames: the first `k − 1`
/// in front (causal), or `(k − 1)/2` of the first and the last on either side.
pub struct CausalConv3d {
    weight: Tensor,
    bias: Tensor,
    padding: Padding,
}

impl CausalConv3d {
    /// `name.conv.weight` / `name.conv.bias`.
    pub fn load(w: &Weights, name: &str, padding: Padding) -> Result<Self> {
        let load = |part: &str| {
            w.tensor(&format!("{name}.conv.{part}"))
                .with_context(|| format!("LTX VAE layer {name}"))
        };
        Ok(Self {
            weight: load("weight")?,
            bias: load("bias")?,
            padding,
        })
    }

    pub fn out_channels(&self) -> i64 {
        self.weight.size()[0]
    }

    pub fn forward(&self, x: &Tensor, causal: bool) -> Tensor {
        let size = self.weight.size();
        let (kt, pad_h, pad_w) = (size[2], size[3] / 2, size[4] / 2);
        let frames = x.size()[2];
        let edge = |at: i64, n: i64| x.narrow(2, at, 1).repeat([1, 1, n, 1, 1]);
        let x = if causal {
            Tensor::cat(&[edge(0, kt - 1), x.shallow_clone()], 2)
        } else {
            let n = (kt - 1) / 2;
            Tensor::cat(&[edge(0, n), x.shallow_clone(), edge(frames - 1, n)], 2)
        };
        let (x, pad) = match self.padding {
            Padding::Zeros => (x, [0, pad_h, pad_w]),
            Padding::Reflect => (
                x.reflection_pad3d([pad_w, pad_w, pad_h, pad_h, 0, 0]),
                [0, 0, 0],
            ),
        };
        x.conv3d(&self.weight, Some(&self.bias), [1, 1, 1], pad, [1, 1, 1], 1)
    }
}

/// The video VAE's PixelNorm epsilon (the audio VAE's is 1e-6).
pub const PIXEL_NORM_EPS: f64 = 1e-8;

/// PixelNorm: each position divided by the RMS of its channels.
pub fn pixel_norm(x: &Tensor, eps: f64) -> Tensor {
    x / (x.square().mean_dim(1, true, None) + eps).sqrt()
}

/// PixArt-α's timestep embedder (`time_embedder.timestep_embedder.linear_{1,2}`): 256 cos/sin
/// features of `t`, Linear, SiLU, Linear; `[B, out]`.
pub struct TimeEmbedder {
    linear_1: (Tensor, Tensor),
    linear_2: (Tensor, Tensor),
}

impl TimeEmbedder {
    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        let pair = |n: &str| -> Result<(Tensor, Tensor)> {
            let base = format!("{name}.timestep_embedder.{n}");
            Ok((
                w.tensor(&format!("{base}.weight"))
                    .with_context(|| format!("LTX VAE layer {base}"))?,
                w.tensor(&format!("{base}.bias"))?,
            ))
        };
        Ok(Self {
            linear_1: pair("linear_1")?,
            linear_2: pair("linear_2")?,
        })
    }

    pub fn forward(&self, t: &Tensor, kind: Kind) -> Tensor {
        let features = timestep_embedding(t, 256).to_kind(kind);
        let h = features
            .linear(&self.linear_1.0, Some(&self.linear_1.1))
            .silu();
        h.linear(&self.linear_2.0, Some(&self.linear_2.1))
    }
}

/// `x·(1 + scale) + shift` with per-channel `[B, C]` rows broadcast over `[B, C, T, H, W]`.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Tensor {
    let as_5d = |t: &Tensor| t.unsqueeze(-1).unsqueeze(-1).unsqueeze(-1);
    x * (as_5d(scale) + 1.0) + as_5d(shift)
}

/// `ResnetBlock3D` with PixelNorm, at one width.
pub struct ResnetBlock {
    conv1: CausalConv3d,
    conv2: CausalConv3d,
    /// `scale_shift_table` `[4, C]` of timestep-conditioned blocks.
    scale_shift: Option<Tensor>,
}

impl ResnetBlock {
    pub fn load(w: &Weights, name: &str, padding: Padding, timestep: bool) -> Result<Self> {
        let conv = |n: &str| CausalConv3d::load(w, &format!("{name}.{n}"), padding);
        let scale_shift = if timestep {
            Some(w.tensor(&format!("{name}.scale_shift_table"))?)
        } else {
            None
        };
        Ok(Self {
            conv1: conv("conv1")?,
            conv2: conv("conv2")?,
            scale_shift,
        })
    }

    /// `time`: the block's `[B, 4C]` timestep embedding when conditioned.
    pub fn forward(&self, x: &Tensor, causal: bool, time: Option<&Tensor>) -> Tensor {
        let ada = match (&self.scale_shift, time) {
            (Some(table), Some(t)) => {
                let c = table.size()[1];
                Some((t.view([-1, 4, c]) + table.unsqueeze(0)).unbind(1))
            }
            _ => None,
        };
        let mut h = pixel_norm(x, PIXEL_NORM_EPS);
        if let Some(ada) = &ada {
            h = modulate(&h, &ada[0], &ada[1]);
        }
        let h = self.conv1.forward(&h.silu(), causal);
        let mut h = pixel_norm(&h, PIXEL_NORM_EPS);
        if let Some(ada) = &ada {
            h = modulate(&h, &ada[2], &ada[3]);
        }
        let h = self.conv2.forward(&h.silu(), causal);
        h + x
    }
}

/// `UNetMidBlock3D`: `res_blocks.N`, with their shared timestep embedder when conditioned.
pub struct ResGroup {
    blocks: Vec<ResnetBlock>,
    time_embedder: Option<TimeEmbedder>,
}

impl ResGroup {
    pub fn load(w: &Weights, name: &str, padding: Padding, timestep: bool) -> Result<Self> {
        let mut blocks = Vec::new();
        while w.has(&format!(
            "{name}.res_blocks.{}.conv1.conv.weight",
            blocks.len()
        )) {
            let n = format!("{name}.res_blocks.{}", blocks.len());
            blocks.push(ResnetBlock::load(w, &n, padding, timestep)?);
        }
        anyhow::ensure!(
            !blocks.is_empty(),
            "LTX VAE: no residual blocks under {name}"
        );
        let time_embedder = if timestep {
            Some(TimeEmbedder::load(w, &format!("{name}.time_embedder"))?)
        } else {
            None
        };
        Ok(Self {
            blocks,
            time_embedder,
        })
    }

    /// `timestep`: the decoder's scaled timestep `[1]`, when conditioned.
    pub fn forward(&self, x: &Tensor, causal: bool, timestep: Option<&Tensor>) -> Tensor {
        let time = match (&self.time_embedder, timestep) {
            (Some(e), Some(t)) => Some(e.forward(t, x.kind())),
            _ => None,
        };
        let mut x = x.shallow_clone();
        for block in &self.blocks {
            x = block.forward(&x, causal, time.as_ref());
        }
        x
    }
}

/// `b c (d p1) (h p2) (w p3) -> b (c p1 p2 p3) d h w`.
fn space_to_depth(x: &Tensor, [p1, p2, p3]: [i64; 3]) -> Tensor {
    let [b, c, d, h, w] = x.size()[..] else {
        unreachable!("video is [B, C, T, H, W]")
    };
    x.view([b, c, d / p1, p1, h / p2, p2, w / p3, p3].as_slice())
        .permute([0, 1, 3, 5, 7, 2, 4, 6].as_slice())
        .reshape([b, c * p1 * p2 * p3, d / p1, h / p2, w / p3])
}

/// `b (c p1 p2 p3) d h w -> b c (d p1) (h p2) (w p3)`.
fn depth_to_space(x: &Tensor, [p1, p2, p3]: [i64; 3]) -> Tensor {
    let [b, cp, d, h, w] = x.size()[..] else {
        unreachable!("video is [B, C, T, H, W]")
    };
    let c = cp / (p1 * p2 * p3);
    x.view([b, c, p1, p2, p3, d, h, w].as_slice())
        .permute([0, 1, 5, 2, 6, 3, 7, 4].as_slice())
        .reshape([b, c, d * p1, h * p2, w * p3])
}

/// `SpaceToDepthDownsample`: a causal convolution folded down by `stride`, plus the input
/// folded the same way and averaged over channel groups. Time strides first repeat the first
/// frame, so 1 + 2k frames become 1 + k.
pub struct SpaceToDepth {
    conv: CausalConv3d,
    stride: [i64; 3],
}

impl SpaceToDepth {
    pub fn load(w: &Weights, name: &str, stride: [i64; 3], padding: Padding) -> Result<Self> {
        Ok(Self {
            conv: CausalConv3d::load(w, &format!("{name}.conv"), padding)?,
            stride,
        })
    }

    pub fn out_channels(&self) -> i64 {
        self.conv.out_channels() * self.stride.iter().product::<i64>()
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = if self.stride[0] == 2 {
            Tensor::cat(&[x.narrow(2, 0, 1), x.shallow_clone()], 2)
        } else {
            x.shallow_clone()
        };
        let folded = space_to_depth(&x, self.stride);
        let s = folded.size();
        let group = s[1] / self.out_channels();
        let skip = folded
            .view([s[0], s[1] / group, group, s[2], s[3], s[4]].as_slice())
            .mean_dim(2, false, None);
        space_to_depth(&self.conv.forward(&x, true), self.stride) + skip
    }
}

/// `DepthToSpaceUpsample`: a convolution unfolded by `stride` (the first frame of a time
/// stride dropped, so 1 + k frames become 1 + 2k), plus with `residual` the input unfolded and
/// tiled over channels.
pub struct DepthToSpace {
    conv: CausalConv3d,
    stride: [i64; 3],
    residual: bool,
}

impl DepthToSpace {
    pub fn load(
        w: &Weights,
        name: &str,
        stride: [i64; 3],
        residual: bool,
        padding: Padding,
    ) -> Result<Self> {
        Ok(Self {
            conv: CausalConv3d::load(w, &format!("{name}.conv"), padding)?,
            stride,
            residual,
        })
    }

    pub fn out_channels(&self) -> i64 {
        self.conv.out_channels() / self.stride.iter().product::<i64>()
    }

    pub fn forward(&self, x: &Tensor, causal: bool) -> Tensor {
        let drop_first = |t: Tensor| {
            if self.stride[0] == 2 {
                let frames = t.size()[2];
                t.narrow(2, 1, frames - 1)
            } else {
                t
            }
        };
        let y = drop_first(depth_to_space(&self.conv.forward(x, causal), self.stride));
        if !self.residual {
            return y;
        }
        let unfolded = depth_to_space(x, self.stride);
        let repeats = self.out_channels() / unfolded.size()[1];
        y + drop_first(unfolded.repeat([1, repeats, 1, 1, 1]))
    }
}
