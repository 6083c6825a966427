//! wav2vec 2.0 as ComfyUI's audio encoders run it (`comfy/audio_encoders/wav2vec2.py`, the
//! layout transformers' `Wav2Vec2Model` shares): a strided convolution stack over 16 kHz
//! audio (one frame per 20 ms), a projection, a grouped convolutional position embedding and a
//! transformer whose every layer's input is kept (Wan S2V and InfiniteTalk weigh them).
//! ComfyUI knows two shapes by their width: "large" (1024, layer-normed convolutions with
//! biases, pre-norm layers, normalized input) and "base" (768, a group norm after the first
//! convolution only, post-norm layers, raw input).

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::wan::dit::layer_norm;
use super::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;

const EPS: f64 = 1e-5;
/// (kernel, stride) of the feature extractor's convolutions (512 channels and a position kernel
/// of 128 in ComfyUI's files; read from the weights, so smaller test models load too).
const CONVS: [(i64, i64); 7] = [(10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)];
const POSITION_GROUPS: i64 = 16;

/// The two shapes ComfyUI's `load_audio_encoder_from_sd` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wav2Vec2Kind {
    Large,
    Base,
}

impl Wav2Vec2Kind {
    /// By the width of `encoder.layer_norm`.
    pub fn from_width(width: i64) -> Result<Self> {
        match width {
            1024 => Ok(Self::Large),
            768 => Ok(Self::Base),
            other => bail!("unsupported wav2vec2 width {other} (ComfyUI knows 1024 and 768)"),
        }
    }

    fn heads(self) -> i64 {
        match self {
            Self::Large => 16,
            Self::Base => 12,
        }
    }
}

type Norm = (Tensor, Tensor);

fn norm(w: &Weights, name: &str) -> Result<Norm> {
    Ok((
        w.tensor(&format!("{name}.weight"))?,
        w.tensor(&format!("{name}.bias"))?,
    ))
}

fn ln(x: &Tensor, (w, b): &Norm) -> Tensor {
    layer_norm(x, Some((w, b)), EPS)
}

struct ConvLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    /// A LayerNorm over channels (large), or the first layer's GroupNorm (base).
    norm: Option<Norm>,
    stride: i64,
}

struct EncoderLayer {
    norm: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    up: Linear,
    down: Linear,
    final_norm: Norm,
}

pub struct Wav2Vec2 {
    kind: Wav2Vec2Kind,
    convs: Vec<ConvLayer>,
    projection_norm: Norm,
    projection: Linear,
    position_weight: Tensor,
    position_bias: Tensor,
    layers: Vec<EncoderLayer>,
    final_norm: Norm,
}

/// What the encoder gives: the last state and the input of every layer plus the last state
/// (`encoded_audio`, `encoded_audio_all_layers`), each `[B, frames, width]`.
pub struct Wav2Vec2Output {
    pub last: Tensor,
    pub all_layers: Vec<Tensor>,
}

/// `weight_norm(dim=2)`: `g · v / ‖v‖`, the norm over all but the kernel axis.
fn weight_norm(g: &Tensor, v: &Tensor) -> Tensor {
    g * v / v.norm_scalaropt_dim(2, [0i64, 1].as_slice(), true)
}

impl EncoderLayer {
    fn load(w: &Weights, p: &str, width: i64) -> Result<Self> {
        let linear = |n: &str, shape| w.linear(&format!("{p}.{n}"), shape);
        let square = (width, width);
        let inner = w
            .file
            .entry(&w.key(&format!("{p}.feed_forward.intermediate_dense.weight")))
            .map_or(width * 4, |e| e.shape[0] as i64);
        Ok(Self {
            norm: norm(w, &format!("{p}.layer_norm"))?,
            q: linear("attention.q_proj", square)?,
            k: linear("attention.k_proj", square)?,
            v: linear("attention.v_proj", square)?,
            out: linear("attention.out_proj", square)?,
            up: linear("feed_forward.intermediate_dense", (inner, width))?,
            down: linear("feed_forward.output_dense", (width, inner))?,
            final_norm: norm(w, &format!("{p}.final_layer_norm"))?,
        })
    }

    fn attend(&self, x: &Tensor, heads: i64) -> Result<Tensor> {
        let (q, k, v) = (self.q.forward(x)?, self.k.forward(x)?, self.v.forward(x)?);
        self.out.forward(&attention(&q, &k, &v, heads, None))
    }

    fn feed_forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.up.forward(x)?.gelu("none"))
    }

    /// Pre-norm (large) or post-norm (base) layer.
    fn forward(&self, x: &Tensor, heads: i64, stable: bool) -> Result<Tensor> {
        if stable {
            let x = x + self.attend(&ln(x, &self.norm), heads)?;
            let h = self.feed_forward(&ln(&x, &self.final_norm))?;
            Ok(x + h)
        } else {
            let x = ln(&(x + self.attend(x, heads)?), &self.norm);
            let h = self.feed_forward(&x)?;
            Ok(ln(&(x + h), &self.final_norm))
        }
    }
}

impl Wav2Vec2 {
    /// Weights with or without transformers' `wav2vec2.` prefix (already in `w`'s prefix).
    pub fn load(w: &Weights) -> Result<Self> {
        let width = w.tensor("encoder.layer_norm.bias")?.size()[0];
        let kind = Wav2Vec2Kind::from_width(width)?;
        let channels = w
            .file
            .entry(&w.key("feature_extractor.conv_layers.0.conv.weight"))
            .map_or(512, |e| e.shape[0] as i64);
        let convs = CONVS
            .iter()
            .enumerate()
            .map(|(i, &(_, stride))| {
                let p = format!("feature_extractor.conv_layers.{i}");
                let bias_key = format!("{p}.conv.bias");
                let normed = kind == Wav2Vec2Kind::Large || i == 0;
                Ok(ConvLayer {
                    weight: w.tensor(&format!("{p}.conv.weight"))?,
                    bias: w.has(&bias_key).then(|| w.tensor(&bias_key)).transpose()?,
                    norm: normed
                        .then(|| norm(w, &format!("{p}.layer_norm")))
                        .transpose()?,
                    stride,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let position = "encoder.pos_conv_embed.conv";
        let (g, v) = if w.has(&format!("{position}.weight_g")) {
            ("weight_g", "weight_v")
        } else {
            (
                "parametrizations.weight.original0",
                "parametrizations.weight.original1",
            )
        };
        let position_weight = weight_norm(
            &w.tensor(&format!("{position}.{g}"))?,
            &w.tensor(&format!("{position}.{v}"))?,
        );
        let mut layers = Vec::new();
        while w.has(&format!(
            "encoder.layers.{}.layer_norm.weight",
            layers.len()
        )) {
            let p = format!("encoder.layers.{}", layers.len());
            layers.push(EncoderLayer::load(w, &p, width)?);
        }
        Ok(Self {
            kind,
            convs,
            projection_norm: norm(w, "feature_projection.layer_norm")?,
            projection: w.linear("feature_projection.projection", (width, channels))?,
            position_weight,
            position_bias: w.tensor(&format!("{position}.bias"))?,
            layers,
            final_norm: norm(w, "encoder.layer_norm")?,
        })
    }

    pub fn kind(&self) -> Wav2Vec2Kind {
        self.kind
    }

    /// `[B, frames, channels]` features of mono audio `[B, samples]`.
    fn features(&self, audio: &Tensor) -> Tensor {
        let mut x = audio.unsqueeze(1);
        for (i, conv) in self.convs.iter().enumerate() {
            x = x.conv1d(&conv.weight, conv.bias.as_ref(), [conv.stride], [0], [1], 1);
            x = match (&conv.norm, self.kind) {
                (Some(n), Wav2Vec2Kind::Large) => ln(&x.transpose(1, 2), n).transpose(1, 2),
                (Some((w, b)), Wav2Vec2Kind::Base) if i == 0 => {
                    x.group_norm(w.size()[0], Some(w), Some(b), EPS, true)
                }
                _ => x,
            }
            .gelu("none");
        }
        x.transpose(1, 2)
    }

    /// The convolutional position embedding of `[B, frames, width]` states (padded by half
    /// the even kernel, the extra last frame dropped).
    fn positions(&self, x: &Tensor) -> Tensor {
        let frames = x.size()[1];
        let kernel = self.position_weight.size()[2];
        x.transpose(1, 2)
            .conv1d(
                &self.position_weight,
                Some(&self.position_bias),
                [1],
                [kernel / 2],
                [1],
                POSITION_GROUPS,
            )
            .narrow(2, 0, frames)
            .gelu("none")
            .transpose(1, 2)
    }

    /// Audio `[B, channels, samples]` at 16 kHz, float32: channels averaged, and for "large"
    /// normalized over the whole batch (ComfyUI's mean and unbiased variance, not
    /// transformers' per-utterance ones).
    pub fn forward(&self, audio: &Tensor) -> Result<Wav2Vec2Output> {
        let mut x = audio.mean_dim(1, false, Kind::Float);
        if self.kind == Wav2Vec2Kind::Large {
            x = (&x - x.mean(Kind::Float)) / (x.var(true) + 1e-7).sqrt();
        }
        let x = self
            .projection
            .forward(&ln(&self.features(&x), &self.projection_norm))?;
        let stable = self.kind == Wav2Vec2Kind::Large;
        let mut x = &x + self.positions(&x);
        if !stable {
            x = ln(&x, &self.final_norm);
        }
        let mut all_layers = Vec::with_capacity(self.layers.len() + 1);
        for layer in &self.layers {
            all_layers.push(x.shallow_clone());
            x = layer.forward(&x, self.kind.heads(), stable)?;
        }
        if stable {
            x = ln(&x, &self.final_norm);
        }
        all_layers.push(x.shallow_clone());
        Ok(Wav2Vec2Output {
            last: x,
            all_layers,
        })
    }
}
