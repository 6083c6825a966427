//! SAM 3.1's memory parts (`comfy/ldm/sam3/tracker.py`): the memory encoder that fuses a
//! frame's features with its (multiplexed) object masks, and the decoupled memory attention
//! through which the next frame's features read the stored memories and object pointers.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::backbone::{rope_2d, rotate};
use super::parts::{linear, Conv, Norm};
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;

/// The memory attention's heads and the patch grid its rotations cover.
const HEADS: i64 = 8;
const GRID: i64 = 72;
/// The size the mask downsampler resizes masks to.
pub const MASK_SIZE: i64 = 1152;

/// A ConvNeXt block (`CXBlock`): depthwise 7×7, LayerNorm, MLP ×4 with GELU, scaled by γ.
struct ConvNextBlock {
    depthwise: Tensor,
    depthwise_bias: Tensor,
    norm: Norm,
    up: Linear,
    down: Linear,
    gamma: Tensor,
}

impl ConvNextBlock {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        Ok(Self {
            depthwise: w.tensor(&format!("{p}.dwconv.weight"))?,
            depthwise_bias: w.tensor(&format!("{p}.dwconv.bias"))?,
            norm: Norm::load(w, &format!("{p}.norm"))?,
            up: linear(w, &format!("{p}.pwconv1"))?,
            down: linear(w, &format!("{p}.pwconv2"))?,
            gamma: w.tensor(&format!("{p}.gamma"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let channels = x.size()[1];
        let y = x
            .conv2d(
                &self.depthwise,
                Some(&self.depthwise_bias),
                [1, 1],
                [3, 3],
                [1, 1],
                channels,
            )
            .permute([0, 2, 3, 1]);
        let y = self
            .down
            .forward(&self.up.forward(&self.norm.layer(&y))?.gelu("none"))?;
        Ok(x + (y * &self.gamma).permute([0, 3, 1, 2]))
    }
}

/// `MemoryBackbone`: masks downsampled 16× (four stride-2 3×3 convolutions with LayerNorm2d
/// and GELU, then a 1×1), added to the projected frame features, through two ConvNeXt blocks.
pub struct MemoryEncoder {
    down: Vec<(Conv, Norm)>,
    down_out: Conv,
    pixel_projection: Conv,
    fuser: Vec<ConvNextBlock>,
}

impl MemoryEncoder {
    pub fn load(w: &Weights, p: &str) -> Result<Self> {
        let e = format!("{p}.mask_downsampler.encoder");
        let mut down = Vec::new();
        while w.has(&format!("{e}.{}.weight", 3 * down.len() + 1)) {
            let i = 3 * down.len();
            down.push((
                Conv::load(w, &format!("{e}.{i}"))?,
                Norm::load(w, &format!("{e}.{}", i + 1))?,
            ));
        }
        let mut fuser = Vec::new();
        while w.has(&format!("{p}.fuser.layers.{}.gamma", fuser.len())) {
            fuser.push(ConvNextBlock::load(
                w,
                &format!("{p}.fuser.layers.{}", fuser.len()),
            )?);
        }
        Ok(Self {
            down_out: Conv::load(w, &format!("{e}.{}", 3 * down.len()))?,
            down,
            pixel_projection: Conv::load(w, &format!("{p}.pix_feat_proj"))?,
            fuser,
        })
    }

    /// The memory features `[B, C, h, w]` for frame features
    /// `[1, C, h, w]` and mask inputs `[B, channels, H, W]` (already scaled, no sigmoid).
    pub fn forward(&self, pixels: &Tensor, masks: &Tensor) -> Result<Tensor> {
        let size = masks.size();
        let mut m = masks.to_kind(pixels.kind());
        if size[2] != MASK_SIZE || size[3] != MASK_SIZE {
            m = m.internal_upsample_bilinear2d_aa([MASK_SIZE, MASK_SIZE], false, None, None);
        }
        for (conv, norm) in &self.down {
            m = norm.channels(&conv.forward(&m, 2, 1)).gelu("none");
        }
        let m = self.down_out.forward(&m, 1, 0);
        let (h, w) = (pixels.size()[2], pixels.size()[3]);
        let m = if m.size()[2] != h || m.size()[3] != w {
            m.upsample_bilinear2d([h, w], false, None, None)
        } else {
            m
        };
        let mut x = self.pixel_projection.forward(pixels, 1, 0) + m;
        for block in &self.fuser {
            x = block.forward(&x)?;
        }
        Ok(x)
    }
}

/// One decoupled layer: self-attention with rotations, then cross-attention whose queries add
/// the frame's raw features' projection and whose keys add the memories' raw image features'
/// projection, then the MLP.
struct MemoryLayer {
    self_qkv: [Linear; 3],
    self_out: Linear,
    cross_qkv: [Linear; 3],
    cross_out: Linear,
    image_q: Linear,
    image_k: Linear,
    mlp: [Linear; 2],
    norms: [Norm; 3],
}

impl MemoryLayer {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        let l = |n: &str| linear(w, &format!("{p}.{n}"));
        let norm = |i: usize| Norm::load(w, &format!("{p}.norm{i}"));
        Ok(Self {
            self_qkv: [
                l("self_attn_q_proj")?,
                l("self_attn_k_proj")?,
                l("self_attn_v_proj")?,
            ],
            self_out: l("self_attn_out_proj")?,
            cross_qkv: [
                l("cross_attn_q_proj")?,
                l("cross_attn_k_proj")?,
                l("cross_attn_v_proj")?,
            ],
            cross_out: l("cross_attn_out_proj")?,
            image_q: l("image_cross_attn_q_proj")?,
            image_k: l("image_cross_attn_k_proj")?,
            mlp: [l("linear1")?, l("linear2")?],
            norms: [norm(1)?, norm(2)?, norm(3)?],
        })
    }
}

/// The memory a frame attends to: memory tokens `[B, N, C]`, the memories' raw image features
/// and their positions (padded to `N` behind the pointer tokens), and how many trailing
/// tokens are object pointers (not rotated).
pub struct Memory {
    pub tokens: Tensor,
    pub image: Tensor,
    pub image_pos: Tensor,
    pub pointers: i64,
}

/// `DecoupledMemoryEncoder`: four decoupled layers and a final LayerNorm.
pub struct MemoryAttention {
    layers: Vec<MemoryLayer>,
    norm: Norm,
    /// `(cos, sin)` `[72·72, head_dim/2]` on the device.
    rope: (Tensor, Tensor),
}

impl MemoryAttention {
    pub fn load(w: &Weights, p: &str) -> Result<Self> {
        let mut layers = Vec::new();
        while w.has(&format!("{p}.layers.{}.norm1.weight", layers.len())) {
            layers.push(MemoryLayer::load(
                w,
                &format!("{p}.layers.{}", layers.len()),
            )?);
        }
        let dim = w.tensor(&format!("{p}.norm.weight"))?.size()[0];
        let (cos, sin) = rope_2d(GRID, GRID, dim / HEADS, 1.0);
        Ok(Self {
            layers,
            norm: Norm::load(w, &format!("{p}.norm"))?,
            rope: (cos.to_device(w.device), sin.to_device(w.device)),
        })
    }

    /// Rotates `x` `[B, N, C]` per head; the first `rotated` tokens by the grid's rotations
    /// repeated frame after frame, the rest (object pointers) left as they are.
    fn rotated(&self, x: &Tensor, rotated: i64) -> Tensor {
        let (b, n, c) = (x.size()[0], x.size()[1], x.size()[2]);
        if rotated == 0 {
            return x.shallow_clone();
        }
        let per_frame = self.rope.0.size()[0];
        let repeats = (rotated + per_frame - 1) / per_frame;
        let table = |t: &Tensor| t.repeat([repeats, 1]).narrow(0, 0, rotated);
        let rope = (table(&self.rope.0), table(&self.rope.1));
        let head = x.narrow(1, 0, rotated).view([b, rotated, HEADS, c / HEADS]);
        let head = rotate(&head, &rope).view([b, rotated, c]);
        if rotated == n {
            head
        } else {
            Tensor::cat(&[head, x.narrow(1, rotated, n - rotated)], 1)
        }
    }

    /// The frame's features `[B, HW, C]` (with positions `[B, HW, C]`) after attending to
    /// `memory`.
    pub fn forward(&self, x: &Tensor, pos: &Tensor, memory: &Memory) -> Result<Tensor> {
        let image = x;
        let mut out = x + pos * 0.1;
        let n = memory.tokens.size()[1];
        let spatial = n - memory.pointers;
        for l in &self.layers {
            let normed = l.norms[0].layer(&out);
            let q = self.rotated(&l.self_qkv[0].forward(&normed)?, normed.size()[1]);
            let k = self.rotated(&l.self_qkv[1].forward(&normed)?, normed.size()[1]);
            let v = l.self_qkv[2].forward(&normed)?;
            out = &out + l.self_out.forward(&attention(&q, &k, &v, HEADS, None))?;

            let normed = l.norms[1].layer(&out);
            let q = l.image_q.forward(image)? + l.cross_qkv[0].forward(&normed)?;
            let k = l.image_k.forward(&memory.image)?
                + l.cross_qkv[1].forward(&memory.tokens)?
                + &memory.image_pos;
            let v = l.cross_qkv[2].forward(&memory.tokens)?;
            let q = self.rotated(&q, q.size()[1]);
            let k = self.rotated(&k, spatial);
            out = &out + l.cross_out.forward(&attention(&q, &k, &v, HEADS, None))?;

            let hidden = l.mlp[0].forward(&l.norms[2].layer(&out))?.gelu("none");
            out = &out + l.mlp[1].forward(&hidden)?;
        }
        Ok(self.norm.layer(&out))
    }
}

/// `get_1d_sine_pe`: sines then cosines of `positions` `[N]` over `dim / 2` frequencies.
pub fn sine_1d(positions: &Tensor, dim: i64) -> Tensor {
    let half = dim / 2;
    let device = positions.device();
    let steps = Tensor::arange(half, (Kind::Float, device)).divide_scalar_mode(2, "floor") * 2.0
        / half as f64;
    let freqs = Tensor::from(10000f32).to_device(device).pow(&steps);
    let angles = positions.to_kind(Kind::Float).unsqueeze(-1) / freqs;
    Tensor::cat(&[angles.sin(), angles.cos()], -1)
}
