//! The SDXL UNet as ComfyUI runs it (`comfy/ldm/modules/diffusionmodules/openaimodel.py`,
//! `attention.py`): time and ADM (pooled text + size) embeddings, ResNet blocks, spatial
//! transformers with linear projections (self-attention, cross-attention to the text, GEGLU),
//! strided-conv downsampling and nearest ×2 upsampling with skip connections. The block layout
//! is read from the keys, so base and refiner share the code.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::models::layers::{timestep_embedding, Conv2d as Conv, Norm};
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;

const HEAD_CHANNELS: i64 = 64;

fn linear(w: &Weights, name: &str) -> Result<Linear> {
    let e = w
        .file
        .entry(&w.key(&format!("{name}.weight")))
        .ok_or_else(|| anyhow::anyhow!("missing {name}.weight"))?;
    w.linear(name, (e.shape[0] as i64, e.shape[1] as i64))
}

struct ResBlock {
    in_norm: Norm,
    in_conv: Conv,
    emb: Linear,
    out_norm: Norm,
    out_conv: Conv,
    skip: Option<Conv>,
}

impl ResBlock {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        let skip = format!("{p}.skip_connection");
        Ok(Self {
            in_norm: Norm::load(w, &format!("{p}.in_layers.0"))?,
            in_conv: Conv::load(w, &format!("{p}.in_layers.2"))?,
            emb: linear(w, &format!("{p}.emb_layers.1"))?,
            out_norm: Norm::load(w, &format!("{p}.out_layers.0"))?,
            out_conv: Conv::load(w, &format!("{p}.out_layers.3"))?,
            skip: if w.has(&format!("{skip}.weight")) {
                Some(Conv::load(w, &skip)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.in_conv.same(&self.in_norm.group(x, 1e-5).silu());
        let h = h + self.emb.forward(&emb.silu())?.unsqueeze(-1).unsqueeze(-1);
        let h = self.out_conv.same(&self.out_norm.group(&h, 1e-5).silu());
        Ok(match &self.skip {
            Some(s) => s.same(x) + h,
            None => x + h,
        })
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl Attention {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        Ok(Self {
            q: linear(w, &format!("{p}.to_q"))?,
            k: linear(w, &format!("{p}.to_k"))?,
            v: linear(w, &format!("{p}.to_v"))?,
            out: linear(w, &format!("{p}.to_out.0"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor, heads: i64) -> Result<Tensor> {
        let a = attention(
            &self.q.forward(x)?,
            &self.k.forward(context)?,
            &self.v.forward(context)?,
            heads,
            None,
        );
        self.out.forward(&a)
    }
}

struct TransformerBlock {
    norm1: Norm,
    attn1: Attention,
    norm2: Norm,
    attn2: Attention,
    norm3: Norm,
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        Ok(Self {
            norm1: Norm::load(w, &format!("{p}.norm1"))?,
            attn1: Attention::load(w, &format!("{p}.attn1"))?,
            norm2: Norm::load(w, &format!("{p}.norm2"))?,
            attn2: Attention::load(w, &format!("{p}.attn2"))?,
            norm3: Norm::load(w, &format!("{p}.norm3"))?,
            ff_in: linear(w, &format!("{p}.ff.net.0.proj"))?,
            ff_out: linear(w, &format!("{p}.ff.net.2"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor, heads: i64) -> Result<Tensor> {
        let n = self.norm1.layer(x, 1e-5);
        let x = x + self.attn1.forward(&n, &n, heads)?;
        let x = &x
            + self
                .attn2
                .forward(&self.norm2.layer(&x, 1e-5), context, heads)?;
        let h = self
            .ff_in
            .forward(&self.norm3.layer(&x, 1e-5))?
            .chunk(2, -1);
        let h = &h[0] * h[1].gelu("none");
        Ok(&x + self.ff_out.forward(&h)?)
    }
}

struct SpatialTransformer {
    norm: Norm,
    proj_in: Linear,
    blocks: Vec<TransformerBlock>,
    proj_out: Linear,
}

impl SpatialTransformer {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        let mut blocks = Vec::new();
        while w.has(&format!(
            "{p}.transformer_blocks.{}.norm1.weight",
            blocks.len()
        )) {
            let b = format!("{p}.transformer_blocks.{}", blocks.len());
            blocks.push(TransformerBlock::load(w, &b)?);
        }
        Ok(Self {
            norm: Norm::load(w, &format!("{p}.norm"))?,
            proj_in: linear(w, &format!("{p}.proj_in"))?,
            blocks,
            proj_out: linear(w, &format!("{p}.proj_out"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.size4()?;
        let tokens = self
            .norm
            .group(x, 1e-6)
            .permute([0, 2, 3, 1])
            .reshape([b, h * w, c]);
        let mut t = self.proj_in.forward(&tokens)?;
        let heads = t.size()[2] / HEAD_CHANNELS;
        for block in &self.blocks {
            t = block.forward(&t, context, heads)?;
        }
        let t = self.proj_out.forward(&t)?;
        Ok(x + t.reshape([b, h, w, c]).permute([0, 3, 1, 2]))
    }
}

/// One layer of a `TimestepEmbedSequential`.
enum Layer {
    Res(ResBlock),
    Transformer(SpatialTransformer),
    Down(Conv),
    Up(Conv),
    ConvIn(Conv),
}

impl Layer {
    fn load(w: &Weights, p: &str) -> Result<Option<Self>> {
        let has = |k: &str| w.has(&format!("{p}.{k}"));
        Ok(Some(if has("in_layers.0.weight") {
            Layer::Res(ResBlock::load(w, p)?)
        } else if has("proj_in.weight") {
            Layer::Transformer(SpatialTransformer::load(w, p)?)
        } else if has("op.weight") {
            Layer::Down(Conv::load(w, &format!("{p}.op"))?)
        } else if has("conv.weight") {
            Layer::Up(Conv::load(w, &format!("{p}.conv"))?)
        } else if has("weight") {
            Layer::ConvIn(Conv::load(w, p)?)
        } else {
            return Ok(None);
        }))
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, context: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Layer::Res(r) => r.forward(x, emb)?,
            Layer::Transformer(t) => t.forward(x, context)?,
            Layer::Down(c) => c.forward(x, 2, 1),
            Layer::Up(c) => {
                let (h, w) = (x.size()[2], x.size()[3]);
                c.same(&x.upsample_nearest2d([h * 2, w * 2], None, None))
            }
            Layer::ConvIn(c) => c.same(x),
        })
    }
}

type Block = Vec<Layer>;

fn load_blocks(w: &Weights, prefix: &str) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    loop {
        let p = format!("{prefix}.{}", blocks.len());
        let mut block = Vec::new();
        while let Some(layer) = Layer::load(w, &format!("{p}.{}", block.len()))? {
            block.push(layer);
        }
        if block.is_empty() {
            return Ok(blocks);
        }
        blocks.push(block);
    }
}

fn run(block: &Block, x: &Tensor, emb: &Tensor, context: &Tensor) -> Result<Tensor> {
    let mut h = x.shallow_clone();
    for layer in block {
        h = layer.forward(&h, emb, context)?;
    }
    Ok(h)
}

pub struct Unet {
    time_in: Linear,
    time_out: Linear,
    label_in: Option<Linear>,
    label_out: Option<Linear>,
    input_blocks: Vec<Block>,
    middle: Block,
    output_blocks: Vec<Block>,
    out_norm: Norm,
    out_conv: Conv,
    model_channels: i64,
    dtype: Kind,
}

impl Unet {
    pub fn load(w: &Weights) -> Result<Self> {
        let input_blocks = load_blocks(w, "input_blocks")?;
        let output_blocks = load_blocks(w, "output_blocks")?;
        if input_blocks.is_empty() || input_blocks.len() != output_blocks.len() {
            bail!(
                "a UNet with {} input and {} output blocks",
                input_blocks.len(),
                output_blocks.len()
            );
        }
        let middle = (0..3)
            .map(|i| Layer::load(w, &format!("middle_block.{i}")))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let time_in = linear(w, "time_embed.0")?;
        let (label_in, label_out) = if w.has("label_emb.0.0.weight") {
            (
                Some(linear(w, "label_emb.0.0")?),
                Some(linear(w, "label_emb.0.2")?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            model_channels: time_in.shape().1,
            time_in,
            time_out: linear(w, "time_embed.2")?,
            label_in,
            label_out,
            input_blocks,
            middle,
            output_blocks,
            out_norm: Norm::load(w, "out.0")?,
            out_conv: Conv::load(w, "out.2")?,
            dtype: w.dtype,
        })
    }

    /// The noise prediction for `x` `[b, 4, h, w]` at `timestep` `[b]` (DDPM step index),
    /// text states `context` `[b, n, 2048]` and the ADM vector `y` `[b, 2816]` (SDXL).
    pub fn forward(
        &self,
        x: &Tensor,
        timestep: &Tensor,
        context: &Tensor,
        y: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t = timestep_embedding(timestep, self.model_channels).to_kind(self.dtype);
        let mut emb = self.time_out.forward(&self.time_in.forward(&t)?.silu())?;
        if let (Some(l_in), Some(l_out)) = (&self.label_in, &self.label_out) {
            let y = y.ok_or_else(|| anyhow::anyhow!("this UNet needs the ADM vector y"))?;
            emb += l_out.forward(&l_in.forward(&y.to_kind(self.dtype))?.silu())?;
        }
        let context = context.to_kind(self.dtype);
        let mut h = x.to_kind(self.dtype);
        let mut skips = Vec::with_capacity(self.input_blocks.len());
        for block in &self.input_blocks {
            h = run(block, &h, &emb, &context)?;
            skips.push(h.shallow_clone());
        }
        h = run(&self.middle, &h, &emb, &context)?;
        for block in &self.output_blocks {
            let skip = skips.pop().expect("one skip per input block");
            h = run(block, &Tensor::cat(&[h, skip], 1), &emb, &context)?;
        }
        Ok(self.out_conv.same(&self.out_norm.group(&h, 1e-5).silu()))
    }
}
