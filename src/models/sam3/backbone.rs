//! SAM 3's image backbone (`comfy/ldm/sam3/sam.py`): a ViTDet trunk (14 px patches, the
//! pretraining position table tiled over the grid, windowed attention with 2-D rotary
//! positions, global attention in blocks 7, 15, 23 and 31) and the FPN necks that turn its
//! output into 4×, 2×, 1× (and for SAM 3, ½×) feature maps with sine positions.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::parts::{f32, linear, Conv, Norm};
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;

/// ComfyUI's fixed ViTDet settings.
const HEADS: i64 = 16;
const WINDOW: i64 = 24;
const GLOBAL_BLOCKS: [usize; 4] = [7, 15, 23, 31];
const ROPE_THETA: f64 = 10000.0;

struct Block {
    norm1: Norm,
    qkv: Linear,
    proj: Linear,
    norm2: Norm,
    fc1: Linear,
    fc2: Linear,
    global: bool,
}

pub struct Trunk {
    patch_embed: Conv,
    pos_embed: Tensor,
    ln_pre: Norm,
    blocks: Vec<Block>,
    /// The rotations for the patch grid of the model's input size, made once on the device.
    rotations: Rotations,
}

/// The global blocks' rotations over a `grid × grid` patch grid and the windows' rotations.
struct Rotations {
    grid: i64,
    global: (Tensor, Tensor),
    window: (Tensor, Tensor),
}

impl Rotations {
    /// `pretrain_grid` is the side of the pretraining position table: the global positions are
    /// scaled by it over `grid` (ComfyUI's `rope_scale`).
    fn new(grid: i64, head_dim: i64, pretrain_grid: f64, device: tch::Device) -> Self {
        let on_device =
            |(cos, sin): (Tensor, Tensor)| (cos.to_device(device), sin.to_device(device));
        Self {
            grid,
            global: on_device(rope_2d(grid, grid, head_dim, pretrain_grid / grid as f64)),
            window: on_device(rope_2d(WINDOW, WINDOW, head_dim, 1.0)),
        }
    }
}

/// Rotations `(cos, sin)`, each `[positions, head_dim/2]` in float32: flux's `EmbedND` over
/// (x, y) with x fastest, half of the pairs per axis, positions scaled by `scale`.
pub(super) fn rope_2d(width: i64, height: i64, head_dim: i64, scale: f64) -> (Tensor, Tensor) {
    let per_axis = head_dim / 2;
    let omega: Vec<f64> = (0..per_axis / 2)
        .map(|i| 1.0 / ROPE_THETA.powf((2 * i) as f64 / per_axis as f64))
        .collect();
    let omega = Tensor::from_slice(&omega);
    let t = Tensor::arange(width * height, (Kind::Double, tch::Device::Cpu));
    let x = t.remainder(width as f64) * scale;
    let y = t.divide_scalar_mode(width as f64, "floor") * scale;
    // Computed in float64 like ComfyUI's einsum (float32 positions times float64 frequencies).
    let angles = |p: Tensor| p.to_kind(Kind::Float).to_kind(Kind::Double).unsqueeze(1) * &omega;
    let angles = Tensor::cat(&[angles(x), angles(y)], 1);
    (
        angles.cos().to_kind(Kind::Float),
        angles.sin().to_kind(Kind::Float),
    )
}

/// The side of the pretraining position table `[1, 1 + side², C]` (its first row is the class
/// token's).
fn pretrain_grid(pos_embed: &Tensor) -> f64 {
    ((pos_embed.size()[1] - 1) as f64).sqrt()
}

/// Rotates adjacent pairs of `x` (`[B, N, heads, head_dim]`) by the per-position tables.
pub(super) fn rotate(x: &Tensor, rope: &(Tensor, Tensor)) -> Tensor {
    let size = x.size();
    let pairs = f32(x).view([size[0], size[1], size[2], size[3] / 2, 2]);
    let (a, b) = (pairs.select(4, 0), pairs.select(4, 1));
    let (cos, sin) = (rope.0.unsqueeze(1), rope.1.unsqueeze(1));
    let out0 = &cos * &a - &sin * &b;
    let out1 = &sin * &a + &cos * &b;
    Tensor::stack(&[out0, out1], 4)
        .view(size.as_slice())
        .to_kind(x.kind())
}

impl Block {
    fn attention(&self, x: &Tensor, rope: &(Tensor, Tensor)) -> Result<Tensor> {
        let (b, n, c) = x.size3()?;
        let qkv = self.qkv.forward(x)?.view([b, n, 3, HEADS, c / HEADS]);
        let q = rotate(&qkv.select(2, 0), rope).view([b, n, c]);
        let k = rotate(&qkv.select(2, 1), rope).view([b, n, c]);
        let v = qkv.select(2, 2).reshape([b, n, c]);
        self.proj.forward(&attention(&q, &k, &v, HEADS, None))
    }

    /// `x` is `[B, H, W, C]`.
    fn forward(
        &self,
        x: &Tensor,
        global: &(Tensor, Tensor),
        window: &(Tensor, Tensor),
    ) -> Result<Tensor> {
        let (b, h, w, c) = x.size4()?;
        let y = self.norm1.layer(x);
        let y = if self.global {
            self.attention(&y.view([b, h * w, c]), global)?
                .view([b, h, w, c])
        } else {
            let (ph, pw) = (
                (WINDOW - h % WINDOW) % WINDOW,
                (WINDOW - w % WINDOW) % WINDOW,
            );
            let padded = y.constant_pad_nd([0, 0, 0, pw, 0, ph]);
            let (hp, wp) = (h + ph, w + pw);
            let windows = padded
                .view([b, hp / WINDOW, WINDOW, wp / WINDOW, WINDOW, c])
                .permute([0, 1, 3, 2, 4, 5])
                .reshape([-1, WINDOW * WINDOW, c]);
            self.attention(&windows, window)?
                .view([b, hp / WINDOW, wp / WINDOW, WINDOW, WINDOW, c])
                .permute([0, 1, 3, 2, 4, 5])
                .reshape([b, hp, wp, c])
                .narrow(1, 0, h)
                .narrow(2, 0, w)
        };
        let x = x + y;
        let hidden = self.fc1.forward(&self.norm2.layer(&x))?.gelu("none");
        Ok(&x + self.fc2.forward(&hidden)?)
    }
}

impl Trunk {
    /// The trunk under `prefix`, its rotations made for `image_size`-pixel inputs.
    pub fn load(w: &Weights, prefix: &str, image_size: i64) -> Result<Self> {
        let mut blocks = Vec::new();
        while w.has(&format!("{prefix}blocks.{}.norm1.weight", blocks.len())) {
            let p = format!("{prefix}blocks.{}", blocks.len());
            blocks.push(Block {
                norm1: Norm::load(w, &format!("{p}.norm1"))?,
                qkv: linear(w, &format!("{p}.attn.qkv"))?,
                proj: linear(w, &format!("{p}.attn.proj"))?,
                norm2: Norm::load(w, &format!("{p}.norm2"))?,
                fc1: linear(w, &format!("{p}.mlp.fc1"))?,
                fc2: linear(w, &format!("{p}.mlp.fc2"))?,
                global: GLOBAL_BLOCKS.contains(&blocks.len()),
            });
        }
        anyhow::ensure!(!blocks.is_empty(), "SAM 3 backbone without blocks");
        let patch_embed = Conv::load(w, &format!("{prefix}patch_embed.proj"))?;
        let pos_embed = w.tensor(&format!("{prefix}pos_embed"))?;
        let grid = image_size / patch_embed.kernel();
        let head_dim = pos_embed.size()[2] / HEADS;
        let rotations = Rotations::new(grid, head_dim, pretrain_grid(&pos_embed), w.device);
        Ok(Self {
            patch_embed,
            pos_embed,
            ln_pre: Norm::load(w, &format!("{prefix}ln_pre"))?,
            blocks,
            rotations,
        })
    }

    /// The pretraining positions (without the class token) tiled over a `grid × grid` patch grid.
    fn positions(&self, grid: i64) -> Tensor {
        let spatial = self.pos_embed.narrow(1, 1, self.pos_embed.size()[1] - 1);
        let old = pretrain_grid(&self.pos_embed) as i64;
        let tiles = grid / old + 1;
        spatial
            .reshape([1, old, old, -1])
            .permute([0, 3, 1, 2])
            .tile([1, 1, tiles, tiles])
            .narrow(2, 0, grid)
            .narrow(3, 0, grid)
            .permute([0, 2, 3, 1])
            .reshape([1, grid * grid, -1])
    }

    /// Images `[B, 3, S, S]` → features `[B, C, S/14, S/14]`.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let x = self.patch_embed.patches(images);
        let (b, c, hp, wp) = x.size4()?;
        let x = x.permute([0, 2, 3, 1]).reshape([b, hp * wp, c]) + self.positions(hp);
        let mut x = self.ln_pre.layer(&x.view([b, hp, wp, c]));
        let other_size;
        let rotations = if hp == self.rotations.grid {
            &self.rotations
        } else {
            let pretrain = pretrain_grid(&self.pos_embed);
            other_size = Rotations::new(hp, c / HEADS, pretrain, x.device());
            &other_size
        };
        for block in &self.blocks {
            x = block.forward(&x, &rotations.global, &rotations.window)?;
        }
        Ok(x.permute([0, 3, 1, 2]))
    }
}

/// One FPN level: up 4× (two transposed convolutions with a GELU between), up 2×, as is, or
/// down 2× (max pooling); then a 1×1 and a 3×3 convolution.
struct Level {
    up: Vec<Conv>,
    pool: bool,
    conv_1x1: Conv,
    conv_3x3: Conv,
}

impl Level {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for (i, up) in self.up.iter().enumerate() {
            if i > 0 {
                x = x.gelu("none");
            }
            x = up.up2(&x);
        }
        if self.pool {
            x = x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        }
        self.conv_3x3.same(&self.conv_1x1.forward(&x, 1, 0))
    }
}

/// An FPN neck: the levels at 4×, 2×, 1× (and ½× when the file has a fourth).
pub struct Neck {
    levels: Vec<Level>,
}

impl Neck {
    pub fn load(w: &Weights, prefix: &str) -> Result<Self> {
        let mut levels = Vec::new();
        while w.has(&format!("{prefix}{}.conv_1x1.weight", levels.len())) {
            let p = format!("{prefix}{}", levels.len());
            let up = match levels.len() {
                0 => vec![
                    Conv::load(w, &format!("{p}.dconv_2x2_0"))?,
                    Conv::load(w, &format!("{p}.dconv_2x2_1"))?,
                ],
                1 => vec![Conv::load(w, &format!("{p}.dconv_2x2"))?],
                _ => Vec::new(),
            };
            levels.push(Level {
                up,
                pool: levels.len() == 3,
                conv_1x1: Conv::load(w, &format!("{p}.conv_1x1"))?,
                conv_3x3: Conv::load(w, &format!("{p}.conv_3x3"))?,
            });
        }
        anyhow::ensure!(
            levels.len() >= 3,
            "SAM 3 neck {prefix} has {} levels",
            levels.len()
        );
        Ok(Self { levels })
    }

    pub fn forward(&self, trunk: &Tensor) -> Vec<Tensor> {
        self.levels.iter().map(|l| l.forward(trunk)).collect()
    }
}

/// DETR's sine features of `vals` (`[N]`, float32): `features` values per entry, sines of the
/// even and cosines of the odd ones, frequencies shared pairwise.
pub fn sine_features(vals: &Tensor, features: i64) -> Tensor {
    let device = vals.device();
    let exponents = Tensor::arange(features, (Kind::Float, device)).divide_scalar_mode(2, "floor")
        * 2.0
        / features as f64;
    let freqs = Tensor::from(10000f32).to_device(device).pow(&exponents);
    let raw = vals.unsqueeze(-1) * (2.0 * std::f64::consts::PI) / freqs;
    let even = raw.slice(-1, 0, features, 2).sin();
    let odd = raw.slice(-1, 1, features, 2).cos();
    let mut shape = vals.size();
    shape.push(features);
    Tensor::stack(&[even, odd], -1).view(shape.as_slice())
}

/// DETR's normalized sine positions for a `[B, C, H, W]` map (y features, then x), in its dtype.
pub fn sine_position(features: &Tensor) -> Tensor {
    let size = features.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let device = features.device();
    let half = c / 2;
    let axis = |n: i64| {
        let vals = Tensor::arange(n, (Kind::Float, device)) / (n as f64 - 1.0 + 1e-6);
        sine_features(&vals, half)
    };
    let y = axis(h).unsqueeze(1).expand([h, w, half], false);
    let x = axis(w).unsqueeze(0).expand([h, w, half], false);
    Tensor::cat(&[y, x], 2)
        .permute([2, 0, 1])
        .unsqueeze(0)
        .expand([b, c, h, w], false)
        .to_kind(features.kind())
}
