//! The LDM `AutoencoderKL` of SD/SDXL (4 latent channels) and FLUX (16, no quant convs), as
//! ComfyUI runs it (`comfy/ldm/modules/diffusionmodules/model.py`): ResNet blocks with
//! GroupNorm(32)/SiLU, one single-head attention block in the middle, strided-conv downsampling
//! (padded right and bottom), nearest ×2 upsampling; encoding keeps the Gaussian's mean.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::layers::{Conv2d as Conv, Norm};
use super::weights::Weights;

const EPS: f64 = 1e-6;

struct ResBlock {
    norm1: Norm,
    conv1: Conv,
    norm2: Norm,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl ResBlock {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        let shortcut = format!("{p}.nin_shortcut");
        Ok(Self {
            norm1: Norm::load(w, &format!("{p}.norm1"))?,
            conv1: Conv::load(w, &format!("{p}.conv1"))?,
            norm2: Norm::load(w, &format!("{p}.norm2"))?,
            conv2: Conv::load(w, &format!("{p}.conv2"))?,
            shortcut: if w.has(&format!("{shortcut}.weight")) {
                Some(Conv::load(w, &shortcut)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.conv1.same(&self.norm1.group(x, EPS).silu());
        let h = self.conv2.same(&self.norm2.group(&h, EPS).silu());
        match &self.shortcut {
            Some(s) => s.same(x) + h,
            None => x + h,
        }
    }
}

struct AttnBlock {
    norm: Norm,
    q: Conv,
    k: Conv,
    v: Conv,
    proj: Conv,
}

impl AttnBlock {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        let conv = |n: &str| Conv::load(w, &format!("{p}.{n}"));
        Ok(Self {
            norm: Norm::load(w, &format!("{p}.norm"))?,
            q: conv("q")?,
            k: conv("k")?,
            v: conv("v")?,
            proj: conv("proj_out")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("[b, c, h, w]");
        let n = self.norm.group(x, EPS);
        let tokens = |t: Tensor| t.view([b, 1, c, h * w]).transpose(2, 3);
        let out = Tensor::scaled_dot_product_attention(
            &tokens(self.q.same(&n)),
            &tokens(self.k.same(&n)),
            &tokens(self.v.same(&n)),
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let out = out.transpose(2, 3).reshape([b, c, h, w]);
        x + self.proj.same(&out)
    }
}

struct Middle {
    block_1: ResBlock,
    attn: AttnBlock,
    block_2: ResBlock,
}

impl Middle {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        Ok(Self {
            block_1: ResBlock::load(w, &format!("{p}.mid.block_1"))?,
            attn: AttnBlock::load(w, &format!("{p}.mid.attn_1"))?,
            block_2: ResBlock::load(w, &format!("{p}.mid.block_2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.block_2
            .forward(&self.attn.forward(&self.block_1.forward(x)))
    }
}

/// One resolution level: its ResNet blocks, then the resampling conv (all but one level).
struct Level {
    blocks: Vec<ResBlock>,
    resample: Option<Conv>,
}

impl Level {
    fn load(w: &Weights, p: &str, resample: &str) -> Result<Self> {
        let mut blocks = Vec::new();
        while w.has(&format!("{p}.block.{}.conv1.weight", blocks.len())) {
            blocks.push(ResBlock::load(w, &format!("{p}.block.{}", blocks.len()))?);
        }
        let conv = format!("{p}.{resample}.conv");
        Ok(Self {
            blocks,
            resample: if w.has(&format!("{conv}.weight")) {
                Some(Conv::load(w, &conv)?)
            } else {
                None
            },
        })
    }
}

struct Coder {
    conv_in: Conv,
    levels: Vec<Level>,
    mid: Middle,
    norm_out: Norm,
    conv_out: Conv,
}

impl Coder {
    fn load(w: &Weights, p: &str, level: &str, resample: &str) -> Result<Self> {
        let mut levels = Vec::new();
        while w.has(&format!(
            "{p}.{level}.{}.block.0.conv1.weight",
            levels.len()
        )) {
            levels.push(Level::load(
                w,
                &format!("{p}.{level}.{}", levels.len()),
                resample,
            )?);
        }
        if levels.is_empty() {
            bail!("a KL autoencoder {p} without resolution levels");
        }
        Ok(Self {
            conv_in: Conv::load(w, &format!("{p}.conv_in"))?,
            levels,
            mid: Middle::load(w, p)?,
            norm_out: Norm::load(w, &format!("{p}.norm_out"))?,
            conv_out: Conv::load(w, &format!("{p}.conv_out"))?,
        })
    }

    fn head(&self, x: &Tensor) -> Tensor {
        self.conv_out.same(&self.norm_out.group(x, EPS).silu())
    }
}

pub struct KlVae {
    encoder: Coder,
    decoder: Coder,
    quant_conv: Option<Conv>,
    post_quant_conv: Option<Conv>,
    dtype: Kind,
}

impl KlVae {
    pub fn load(w: &Weights) -> Result<Self> {
        let optional = |name: &str| -> Result<Option<Conv>> {
            if w.has(&format!("{name}.weight")) {
                Ok(Some(Conv::load(w, name)?))
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            encoder: Coder::load(w, "encoder", "down", "downsample")?,
            decoder: Coder::load(w, "decoder", "up", "upsample")?,
            quant_conv: optional("quant_conv")?,
            post_quant_conv: optional("post_quant_conv")?,
            dtype: w.dtype,
        })
    }

    /// Pixels `[b, 3, H, W]` in −1..1 → the latent Gaussian's mean `[b, z, H/8, W/8]`.
    pub fn encode(&self, x: &Tensor) -> Tensor {
        let e = &self.encoder;
        let mut h = e.conv_in.same(&x.to_kind(self.dtype));
        for level in &e.levels {
            for block in &level.blocks {
                h = block.forward(&h);
            }
            if let Some(down) = &level.resample {
                h = down.forward(&h.constant_pad_nd([0, 1, 0, 1]), 2, 0);
            }
        }
        let mut moments = e.head(&e.mid.forward(&h));
        if let Some(q) = &self.quant_conv {
            moments = q.same(&moments);
        }
        let z = moments.size()[1] / 2;
        moments.narrow(1, 0, z)
    }

    /// Latents `[b, z, h, w]` → pixels `[b, 3, 8h, 8w]` (unclamped).
    pub fn decode(&self, z: &Tensor) -> Tensor {
        let d = &self.decoder;
        let mut h = z.to_kind(self.dtype);
        if let Some(q) = &self.post_quant_conv {
            h = q.same(&h);
        }
        let mut h = d.mid.forward(&d.conv_in.same(&h));
        for level in d.levels.iter().rev() {
            for block in &level.blocks {
                h = block.forward(&h);
            }
            if let Some(up) = &level.resample {
                let (height, width) = (h.size()[2], h.size()[3]);
                h = up.same(&h.upsample_nearest2d([height * 2, width * 2], None, None));
            }
        }
        d.head(&h)
    }
}
