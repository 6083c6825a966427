//! The SDXL (and SD 2) UNet as ComfyUI runs it (`comfy/ldm/modules/diffusionmodules/
//! openaimodel.py`, `attention.py`): time and ADM embeddings, ResNet blocks, spatial
//! transformers with linear projections (self-attention, cross-attention to the text, GEGLU),
//! strided-conv downsampling and nearest upsampling to the next skip's size, with skip
//! connections. The block layout is read from the keys, so SDXL base and refiner and Lotus-D
//! share the code.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::models::layers::{timestep_embedding, Conv2d as Conv, Norm};
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;
use crate::runtime::manager::{in_order, log_partial_load, Movable, Placer, Streamed};
use crate::sampling::model::repeat_to_batch;

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

impl Movable for ResBlock {
    fn moved(&self, device: Device) -> Self {
        Self {
            in_norm: self.in_norm.moved(device),
            in_conv: self.in_conv.moved(device),
            emb: self.emb.moved(device),
            out_norm: self.out_norm.moved(device),
            out_conv: self.out_conv.moved(device),
            skip: self.skip.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.in_norm.bytes()
            + self.in_conv.bytes()
            + self.emb.bytes()
            + self.out_norm.bytes()
            + self.out_conv.bytes()
            + self.skip.bytes()
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

impl Movable for Attention {
    fn moved(&self, device: Device) -> Self {
        Self {
            q: self.q.moved(device),
            k: self.k.moved(device),
            v: self.v.moved(device),
            out: self.out.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        [&self.q, &self.k, &self.v, &self.out]
            .iter()
            .map(|l| l.bytes())
            .sum()
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

impl Movable for TransformerBlock {
    fn moved(&self, device: Device) -> Self {
        Self {
            norm1: self.norm1.moved(device),
            attn1: self.attn1.moved(device),
            norm2: self.norm2.moved(device),
            attn2: self.attn2.moved(device),
            norm3: self.norm3.moved(device),
            ff_in: self.ff_in.moved(device),
            ff_out: self.ff_out.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.norm1.bytes()
            + self.attn1.bytes()
            + self.norm2.bytes()
            + self.attn2.bytes()
            + self.norm3.bytes()
            + self.ff_in.bytes()
            + self.ff_out.bytes()
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

impl Movable for SpatialTransformer {
    fn moved(&self, device: Device) -> Self {
        Self {
            norm: self.norm.moved(device),
            proj_in: self.proj_in.moved(device),
            blocks: self.blocks.iter().map(|b| b.moved(device)).collect(),
            proj_out: self.proj_out.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.norm.bytes()
            + self.proj_in.bytes()
            + self.blocks.iter().map(Movable::bytes).sum::<u64>()
            + self.proj_out.bytes()
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

    /// `up_to`: the size an upsampling layer doubles to, the next skip's where there is one
    /// (ComfyUI's `output_shape`), so odd sizes that the strided convolutions rounded up line up.
    fn forward(
        &self,
        x: &Tensor,
        emb: &Tensor,
        context: &Tensor,
        up_to: Option<(i64, i64)>,
    ) -> Result<Tensor> {
        Ok(match self {
            Layer::Res(r) => r.forward(x, emb)?,
            Layer::Transformer(t) => t.forward(x, context)?,
            Layer::Down(c) => c.forward(x, 2, 1),
            Layer::Up(c) => {
                let (h, w) = up_to.unwrap_or((x.size()[2] * 2, x.size()[3] * 2));
                c.same(&x.upsample_nearest2d([h, w], None, None))
            }
            Layer::ConvIn(c) => c.same(x),
        })
    }
}

impl Movable for Layer {
    fn moved(&self, device: Device) -> Self {
        match self {
            Layer::Res(r) => Layer::Res(r.moved(device)),
            Layer::Transformer(t) => Layer::Transformer(t.moved(device)),
            Layer::Down(c) => Layer::Down(c.moved(device)),
            Layer::Up(c) => Layer::Up(c.moved(device)),
            Layer::ConvIn(c) => Layer::ConvIn(c.moved(device)),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Layer::Res(r) => r.bytes(),
            Layer::Transformer(t) => t.bytes(),
            Layer::Down(c) | Layer::Up(c) | Layer::ConvIn(c) => c.bytes(),
        }
    }
}

/// Layers of one `TimestepEmbedSequential`; under `--lowvram` those that do not fit are
/// streamed from pinned host memory.
type Block = Vec<Streamed<Layer>>;

/// The blocks under `prefix`, placed in the order the forward uses them.
fn load_blocks(w: &Weights, prefix: &str, placer: &mut Placer) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    loop {
        let p = format!("{prefix}.{}", blocks.len());
        let mut block = Vec::new();
        while let Some(layer) = Layer::load(w, &format!("{p}.{}", block.len()))? {
            block.push(placer.place(layer));
        }
        if block.is_empty() {
            return Ok(blocks);
        }
        blocks.push(block);
    }
}

fn run(
    block: &Block,
    x: &Tensor,
    emb: &Tensor,
    context: &Tensor,
    up_to: Option<(i64, i64)>,
) -> Result<Tensor> {
    let mut h = x.shallow_clone();
    for layer in in_order(block) {
        h = layer.forward(&h, emb, context, up_to)?;
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
        let mut placer = w.placement.placer();
        let input_blocks = load_blocks(w, "input_blocks", &mut placer)?;
        let middle = (0..3)
            .map(|i| Layer::load(w, &format!("middle_block.{i}")))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .map(|layer| placer.place(layer))
            .collect();
        let output_blocks = load_blocks(w, "output_blocks", &mut placer)?;
        if input_blocks.is_empty() || input_blocks.len() != output_blocks.len() {
            bail!(
                "a UNet with {} input and {} output blocks",
                input_blocks.len(),
                output_blocks.len()
            );
        }
        let time_in = linear(w, "time_embed.0")?;
        let (label_in, label_out) = if w.has("label_emb.0.0.weight") {
            (
                Some(linear(w, "label_emb.0.0")?),
                Some(linear(w, "label_emb.0.2")?),
            )
        } else {
            (None, None)
        };
        let unet = Self {
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
        };
        log_partial_load("UNet", unet.resident_layers(), "layers", w.device);
        Ok(unet)
    }

    /// (layers on the compute device, all layers); the rest are streamed (`--lowvram`).
    pub fn resident_layers(&self) -> (usize, usize) {
        let layers = || {
            self.input_blocks
                .iter()
                .chain([&self.middle])
                .chain(&self.output_blocks)
                .flatten()
        };
        (
            layers().filter(|l| l.is_resident()).count(),
            layers().count(),
        )
    }

    /// The prediction for `x` `[b, 4, h, w]` at `timestep` `[b]` (DDPM step index), text states
    /// `context` `[b or 1, n, c]` and the ADM vector `y` `[b, adm]` (SDXL's 2816, Lotus's 4).
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
        // One prompt for the whole batch, as ComfyUI's CONDCrossAttn repeats it.
        let context = repeat_to_batch(context, x.size()[0]).to_kind(self.dtype);
        let mut h = x.to_kind(self.dtype);
        let mut skips = Vec::with_capacity(self.input_blocks.len());
        for block in &self.input_blocks {
            h = run(block, &h, &emb, &context, None)?;
            skips.push(h.shallow_clone());
        }
        h = run(&self.middle, &h, &emb, &context, None)?;
        for block in &self.output_blocks {
            let skip = skips.pop().expect("one skip per input block");
            let up_to = skips.last().map(|s| (s.size()[2], s.size()[3]));
            h = run(block, &Tensor::cat(&[h, skip], 1), &emb, &context, up_to)?;
        }
        Ok(self.out_conv.same(&self.out_norm.group(&h, 1e-5).silu()))
    }
}
