//! The Wan 2.1/2.2 diffusion transformer as ComfyUI runs it (`comfy/ldm/wan/model.py`): patch
//! embedding in float32, sinusoidal time embedding with per-block modulation, self-attention with
//! RMS-normed q/k and 3-D RoPE, cross-attention to the text (and, for I2V, CLIP-vision) tokens,
//! a tanh-GELU FFN, and the modulated head.

use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::animate::{AnimateInputs, AnimateParts};
use super::animate2::{PoseAttention, PoseCache, PoseInputs};
use super::dancer::{self, Dancer, DancerInputs};
use super::humo::{padded_audio, AudioProjection, HumoBlock, HumoInputs};
use super::infinite_talk::{speaker_positions, TalkBlock, TalkInputs, TalkStep};
use super::s2v::{Sound, SoundInputs};
use super::scail::{ScailInputs, ScailKind, ScailParts};
use crate::models::rope::{rope_axis, RopeOptions};
use crate::models::weights::Weights;
use crate::runtime::attention::{attention, attention_repeated_last_key, RepeatedLastKey};
use crate::runtime::fused::{self, residual_layer_norm, rms_norm_rope, Norm, Residual};
use crate::runtime::linear::Linear;
use crate::runtime::manager::{
    in_order, log_partial_load, resident_count, InOrder, Movable, Streamed,
};

#[derive(Clone, Debug, PartialEq)]
pub struct WanConfig {
    pub dim: i64,
    pub ffn_dim: i64,
    pub freq_dim: i64,
    pub text_dim: i64,
    pub in_dim: i64,
    pub out_dim: i64,
    pub num_heads: i64,
    pub num_layers: i64,
    pub i2v: bool,
    /// VACE models' control branch.
    pub vace: Option<VaceConfig>,
    /// Wan 2.2 Fun Control's reference-image convolution: its input channels.
    pub ref_conv_channels: Option<i64>,
    /// Fun Camera's control adapter (`control_adapter`): the camera embedding's channels.
    pub camera_channels: Option<i64>,
    /// Wan 2.2 S2V's audio, reference, motion and control inputs ([`super::s2v`]).
    pub sound: bool,
    /// HuMo's audio cross-attention and appended reference frames ([`super::humo`]).
    pub humo: bool,
    /// Wan 2.2 Animate's pose latents and face blocks ([`super::animate`]).
    pub animate: bool,
    /// Wan Animate 2's pose branch ([`super::animate2`]).
    pub animate2: bool,
    /// Wan Dancer's music encoder and global pass ([`super::dancer`]).
    pub dancer: bool,
    /// SCAIL's pose stream and reference frames ([`super::scail`]).
    pub scail: Option<ScailKind>,
}

/// A VACE model's control branch: `layers` blocks (`vace_blocks.N`) beside the main ones, fed
/// by a patch embedding of `in_dim` channels (control latents and mask).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VaceConfig {
    pub layers: i64,
    pub in_dim: i64,
}

pub(super) const PATCH: [i64; 3] = [1, 2, 2];
pub(super) const EPS: f64 = 1e-6;

impl WanConfig {
    /// From `runtime::detect`'s config for a Wan diffusion model.
    pub fn from_detected(config: &Value) -> Result<Self> {
        let int = |key: &str| {
            config[key]
                .as_i64()
                .with_context(|| format!("Wan config has no {key}"))
        };
        let model_type = config["model_type"].as_str().unwrap_or("t2v");
        if !matches!(
            model_type,
            "t2v"
                | "i2v"
                | "vace"
                | "camera"
                | "camera_2.2"
                | "s2v"
                | "humo"
                | "animate"
                | "animate2"
                | "wandancer"
                | "scail"
                | "scail2"
        ) {
            bail!("Wan model_type {model_type} is not supported yet");
        }
        if int("num_heads")? < 1 {
            bail!(
                "Wan model of width {} has no attention heads (width / 128)",
                int("dim")?
            );
        }
        Ok(Self {
            dim: int("dim")?,
            ffn_dim: int("ffn_dim")?,
            freq_dim: int("freq_dim")?,
            text_dim: int("text_dim")?,
            in_dim: int("in_dim")?,
            out_dim: int("out_dim")?,
            num_heads: int("num_heads")?,
            num_layers: int("num_layers")?,
            // ComfyUI's CameraWanModel is an I2V model for "camera" (Wan 2.1) and T2V for 2.2.
            // SCAIL's and Animate's models are I2V-shaped too (ComfyUI builds them with
            // model_type "i2v").
            i2v: matches!(
                model_type,
                "i2v" | "camera" | "animate" | "animate2" | "wandancer" | "scail" | "scail2"
            ),
            vace: if model_type == "vace" {
                Some(VaceConfig {
                    layers: int("vace_layers")?,
                    in_dim: int("vace_in_dim")?,
                })
            } else {
                None
            },
            ref_conv_channels: config["in_dim_ref_conv"].as_i64(),
            camera_channels: model_type
                .starts_with("camera")
                .then(|| config["in_dim_control_adapter"].as_i64().unwrap_or(24)),
            sound: model_type == "s2v",
            humo: model_type == "humo",
            animate: model_type == "animate",
            animate2: model_type == "animate2",
            dancer: model_type == "wandancer",
            scail: match model_type {
                "scail" => Some(ScailKind::Preview),
                "scail2" => Some(ScailKind::Masked),
                _ => None,
            },
        })
    }

    pub(super) fn head_dim(&self) -> i64 {
        self.dim / self.num_heads
    }
}

/// `x · rsqrt(mean(x²) + eps) · weight` over the last dimension.
pub fn rms_norm(x: &Tensor, weight: &Tensor) -> Tensor {
    let dim = x.size()[x.dim() - 1];
    x.rms_norm([dim], Some(weight), EPS)
}

pub fn layer_norm(x: &Tensor, affine: Option<(&Tensor, &Tensor)>, eps: f64) -> Tensor {
    let dim = x.size()[x.dim() - 1];
    let (w, b) = affine.unzip();
    x.layer_norm([dim], w, b, eps, true)
}

/// Rotations for a `t × h × w` patch grid, `[1, t·h·w, 1, head_dim/2]` complex; positions are
/// made in `dtype` like ComfyUI's `rope_encode` (exact for grids under 256 in bfloat16).
pub fn rope_grid(t: i64, h: i64, w: i64, head_dim: i64, dtype: Kind, device: Device) -> Tensor {
    rope_grid_scaled(&RopeOptions::default(), (t, h, w), head_dim, dtype, device)
}

/// [`rope_grid`] with ScaleROPE's spacing and offsets per axis.
pub fn rope_grid_scaled(
    options: &RopeOptions,
    (t, h, w): (i64, i64, i64),
    head_dim: i64,
    dtype: Kind,
    device: Device,
) -> Tensor {
    let ids = |axis: usize, len: i64| options.positions(axis, 0.0, len, dtype);
    rope_positions([&ids(0, t), &ids(1, h), &ids(2, w)], head_dim).to_device(device)
}

/// Rotations for the grid of the given time, row and column positions (each axis's positions
/// in the order `rope_encode`'s `linspace` makes them), `[1, t·h·w, 1, head_dim/2]` on the host.
pub fn rope_positions([t, h, w]: [&Tensor; 3], head_dim: i64) -> Tensor {
    let axis = 2 * (head_dim / 6);
    let dims = [head_dim - 2 * axis, axis, axis];
    let (nt, nh, nw) = (t.size()[0], h.size()[0], w.size()[0]);
    let grid = [
        t.view([nt, 1, 1]).expand([nt, nh, nw], false),
        h.view([1, nh, 1]).expand([nt, nh, nw], false),
        w.view([1, 1, nw]).expand([nt, nh, nw], false),
    ];
    let parts: Vec<Tensor> = grid
        .iter()
        .zip(dims)
        .map(|(pos, d)| rope_axis(&pos.reshape([-1]), d, 10000.0))
        .collect();
    Tensor::cat(&parts, 1).view([1, nt * nh * nw, 1, head_dim / 2])
}

/// An autoregressive session's self-attention keys and values (Causal Forcing's KV cache): per
/// block the rotated keys and plain values of the cached positions, the first `end` valid.
#[derive(Default)]
pub struct CausalCache {
    /// Whether a session runs (the AR sampler); outside one the model runs as usual.
    pub active: bool,
    /// The temporal position of the next call's first frame.
    pub start_frame: i64,
    pub end: i64,
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl CausalCache {
    /// Appends `k`, `v` `[b, s, width]` at `end` in layer `layer`; returns the layer's keys and
    /// values up to the new end.
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
        let end = self.end;
        let joined = match &self.layers[layer] {
            Some((ck, cv)) if end > 0 => {
                if ck.size()[0] != k.size()[0] {
                    bail!(
                        "the autoregressive cache holds a batch of {}, this call {} (run the AR \
                         sampler at cfg 1)",
                        ck.size()[0],
                        k.size()[0]
                    );
                }
                (
                    Tensor::cat(&[&ck.narrow(1, 0, end), k], 1),
                    Tensor::cat(&[&cv.narrow(1, 0, end), v], 1),
                )
            }
            _ => (k.shallow_clone(), v.shallow_clone()),
        };
        self.layers[layer] = Some((joined.0.shallow_clone(), joined.1.shallow_clone()));
        Ok(joined)
    }

    /// Starts a session with nothing cached.
    pub fn begin(&mut self) {
        *self = Self {
            active: true,
            ..Self::default()
        };
    }
}

/// The layers of one attention, as the checkpoint names them.
pub(super) struct AttentionLayers {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
}

impl AttentionLayers {
    pub(super) fn load(w: &Weights, p: &str, dim: i64) -> Result<Self> {
        Ok(Self {
            q: w.linear(&format!("{p}.q"), (dim, dim))?,
            k: w.linear(&format!("{p}.k"), (dim, dim))?,
            v: w.linear(&format!("{p}.v"), (dim, dim))?,
            o: w.linear(&format!("{p}.o"), (dim, dim))?,
            norm_q: w.tensor(&format!("{p}.norm_q.weight"))?,
            norm_k: w.tensor(&format!("{p}.norm_k.weight"))?,
        })
    }

    /// `WanT2VCrossAttention`: `x` attending to all of `context`, q and k RMS-normed.
    pub(super) fn cross(&self, x: &Tensor, context: &Tensor, heads: i64) -> Result<Tensor> {
        let q = fused::rms_norm(&self.q.forward(x)?, &self.norm_q, EPS)?;
        let k = fused::rms_norm(&self.k.forward(context)?, &self.norm_k, EPS)?;
        let v = self.v.forward(context)?;
        self.o.forward(&attention(&q, &k, &v, heads, None))
    }
}

impl Movable for AttentionLayers {
    fn moved(&self, device: Device) -> Self {
        Self {
            q: self.q.moved(device),
            k: self.k.moved(device),
            v: self.v.moved(device),
            o: self.o.moved(device),
            norm_q: self.norm_q.moved(device),
            norm_k: self.norm_k.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        let linears = [&self.q, &self.k, &self.v, &self.o];
        linears.iter().map(|l| l.bytes()).sum::<u64>() + self.norm_q.bytes() + self.norm_k.bytes()
    }
}

/// Self-attention's query, key and value projections of one input: one GEMM over their stacked
/// weights where the layers allow it (`Linear::concat`), three otherwise.
enum QkvProjection {
    Stacked(Linear),
    Separate([Linear; 3]),
}

impl QkvProjection {
    fn new(q: Linear, k: Linear, v: Linear) -> Self {
        match Linear::concat(&[&q, &k, &v]) {
            Some(stacked) => Self::Stacked(stacked),
            None => Self::Separate([q, k, v]),
        }
    }

    /// q, k and v of `x`; stacked, they are column slices of one output.
    fn forward(&self, x: &Tensor) -> Result<[Tensor; 3]> {
        match self {
            Self::Stacked(layer) => {
                let out = layer.forward(x)?;
                let width = out.size()[2] / 3;
                Ok([0, 1, 2].map(|i| out.narrow(2, i * width, width)))
            }
            Self::Separate([q, k, v]) => Ok([q.forward(x)?, k.forward(x)?, v.forward(x)?]),
        }
    }
}

impl Movable for QkvProjection {
    fn moved(&self, device: Device) -> Self {
        match self {
            Self::Stacked(layer) => Self::Stacked(layer.moved(device)),
            Self::Separate(layers) => Self::Separate(layers.each_ref().map(|l| l.moved(device))),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Self::Stacked(layer) => layer.bytes(),
            Self::Separate(layers) => layers.iter().map(Movable::bytes).sum(),
        }
    }
}

/// Which rotated pair a self-attention hands back besides its output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Nothing,
    /// InfiniteTalk's speaker routing reads the queries and keys.
    QueriesKeys,
    /// Wan Animate 2's pose branch feeds its keys and values to the video's blocks.
    KeysValues,
}

struct SelfAttention {
    qkv: QkvProjection,
    o: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
}

impl SelfAttention {
    fn load(w: &Weights, p: &str, dim: i64) -> Result<Self> {
        let AttentionLayers {
            q,
            k,
            v,
            o,
            norm_q,
            norm_k,
        } = AttentionLayers::load(w, p, dim)?;
        Ok(Self {
            qkv: QkvProjection::new(q, k, v),
            o,
            norm_q,
            norm_k,
        })
    }

    /// The attention's output, and the rotated pair `keep` asks for. With a causal cache
    /// (`cache`, this block's index) the keys and values join the cached ones, which the
    /// queries attend to as well; with `pose` (Wan Animate 2) each frame also attends to its
    /// pose frame.
    fn forward(
        &self,
        x: &Tensor,
        freqs: &Tensor,
        heads: i64,
        keep: Keep,
        cache: Option<(&mut CausalCache, usize)>,
        pose: Option<&PoseAttention>,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let [q, k, v] = self.qkv.forward(x)?;
        let q = rms_norm_rope(&q, &self.norm_q, freqs, heads, EPS)?;
        let k = rms_norm_rope(&k, &self.norm_k, freqs, heads, EPS)?;
        let out = match (cache, pose) {
            (Some((cache, layer)), _) => {
                let (keys, values) = cache.append(layer, &k, &v)?;
                attention(&q, &keys, &values, heads, None)
            }
            (None, Some(pose)) => pose.attend(&q, &k, &v, heads)?,
            (None, None) => attention(&q, &k, &v, heads, None),
        };
        let kept = match keep {
            Keep::Nothing => None,
            Keep::QueriesKeys => Some((q, k)),
            Keep::KeysValues => Some((k, v)),
        };
        Ok((self.o.forward(&out)?, kept))
    }

    /// The rotated keys and values of `x` alone (Wan Animate 2's cached pose branch).
    fn keys_values(&self, x: &Tensor, freqs: &Tensor, heads: i64) -> Result<(Tensor, Tensor)> {
        let [_, k, v] = self.qkv.forward(x)?;
        Ok((rms_norm_rope(&k, &self.norm_k, freqs, heads, EPS)?, v))
    }
}

impl Movable for SelfAttention {
    fn moved(&self, device: Device) -> Self {
        Self {
            qkv: self.qkv.moved(device),
            o: self.o.moved(device),
            norm_q: self.norm_q.moved(device),
            norm_k: self.norm_k.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.qkv.bytes() + self.o.bytes() + self.norm_q.bytes() + self.norm_k.bytes()
    }
}

struct CrossAttention {
    inner: AttentionLayers,
    /// I2V: keys/values of the CLIP-vision tokens (k_img, v_img, norm_k_img).
    image: Option<(Linear, Linear, Tensor)>,
}

impl CrossAttention {
    fn load(w: &Weights, p: &str, dim: i64, i2v: bool) -> Result<Self> {
        let image = if i2v {
            Some((
                w.linear(&format!("{p}.k_img"), (dim, dim))?,
                w.linear(&format!("{p}.v_img"), (dim, dim))?,
                w.tensor(&format!("{p}.norm_k_img.weight"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            inner: AttentionLayers::load(w, p, dim)?,
            image,
        })
    }

    fn forward(&self, x: &Tensor, step: &StepInputs) -> Result<Tensor> {
        let (a, context, image_tokens, heads) =
            (&self.inner, step.context, step.image_tokens, step.heads);
        let text = context.narrow(1, image_tokens, context.size()[1] - image_tokens);
        let q = fused::rms_norm(&a.q.forward(x)?, &a.norm_q, EPS)?;
        let k = fused::rms_norm(&a.k.forward(&text)?, &a.norm_k, EPS)?;
        let v = a.v.forward(&text)?;
        let mut out = attention_repeated_last_key(&q, &k, &v, heads, &step.text_padding);
        if let Some((k_img, v_img, norm_k_img)) = &self.image {
            // Without CLIP-vision tokens ComfyUI's split (`context_img_len` None) gives the
            // image keys the whole text, padding included.
            let image = if image_tokens > 0 {
                context.narrow(1, 0, image_tokens)
            } else {
                text.shallow_clone()
            };
            let k = fused::rms_norm(&k_img.forward(&image)?, norm_k_img, EPS)?;
            let v = v_img.forward(&image)?;
            out += if image_tokens > 0 {
                attention(&q, &k, &v, heads, None)
            } else {
                attention_repeated_last_key(&q, &k, &v, heads, &step.text_padding)
            };
        }
        a.o.forward(&out)
    }
}

impl Movable for CrossAttention {
    fn moved(&self, device: Device) -> Self {
        Self {
            inner: self.inner.moved(device),
            image: self.image.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.inner.bytes() + self.image.bytes()
    }
}

struct Block {
    self_attn: SelfAttention,
    cross_attn: CrossAttention,
    norm3: (Tensor, Tensor),
    ffn_in: Linear,
    ffn_out: Linear,
    modulation: Tensor,
    /// HuMo's audio cross-attention after the cross-attention.
    humo: Option<HumoBlock>,
}

impl Block {
    /// The block under `p`; `i2v`: its cross-attention also reads CLIP-vision tokens.
    fn load(w: &Weights, p: &str, c: &WanConfig, i2v: bool) -> Result<Self> {
        Ok(Self {
            self_attn: SelfAttention::load(w, &format!("{p}.self_attn"), c.dim)?,
            cross_attn: CrossAttention::load(w, &format!("{p}.cross_attn"), c.dim, i2v)?,
            norm3: (
                w.tensor(&format!("{p}.norm3.weight"))?,
                w.tensor(&format!("{p}.norm3.bias"))?,
            ),
            ffn_in: w.linear(&format!("{p}.ffn.0"), (c.ffn_dim, c.dim))?,
            ffn_out: w.linear(&format!("{p}.ffn.2"), (c.dim, c.ffn_dim))?,
            modulation: w.tensor(&format!("{p}.modulation"))?,
            humo: HumoBlock::load(w, p, c.dim)?,
        })
    }

    /// `e0`: `[b, rows, 6, dim]` time projections. The block's last gated residual is left
    /// pending in the stream it returns. A stream of fewer items than `e0` holds the first of
    /// identical copies (see [`input_copies`]): the self-attention half runs on those items
    /// once, and the stream is repeated to the full batch before the cross-attention.
    ///
    /// `talk`: InfiniteTalk's audio cross-attention for this block, added after the
    /// cross-attention (ComfyUI's `attn2_patch`).
    fn forward(
        &self,
        stream: Stream,
        e0: &Tensor,
        freqs: &Tensor,
        step: &StepInputs,
        talk: Option<(&TalkBlock, &TalkStep)>,
        cache: Option<(&mut CausalCache, usize)>,
    ) -> Result<Stream> {
        let extras = BlockExtras {
            talk,
            cache,
            ..BlockExtras::default()
        };
        Ok(self.forward_with(stream, e0, freqs, step, extras)?.0)
    }

    /// The input's self-attention keys and values (Wan Animate 2's cached pose branch): the
    /// block's modulated norm of `x` and the key and value projections.
    fn keys_values(
        &self,
        x: &Tensor,
        e0: &Tensor,
        freqs: &Tensor,
        heads: i64,
    ) -> Result<(Tensor, Tensor)> {
        let e = (self.modulation.to_kind(e0.kind()).unsqueeze(0) + e0).unbind(2);
        let normed = fused::layer_norm(
            x,
            Norm::Modulate {
                shift: &e[0],
                scale: &e[1],
            },
            EPS,
        )?;
        self.self_attn.keys_values(&normed, freqs, heads)
    }

    /// [`forward`](Self::forward) with every addition a block can take; also returns the
    /// self-attention's rotated keys and values when `extras.keep_kv`.
    fn forward_with(
        &self,
        stream: Stream,
        e0: &Tensor,
        freqs: &Tensor,
        step: &StepInputs,
        extras: BlockExtras,
    ) -> Result<(Stream, Option<(Tensor, Tensor)>)> {
        let BlockExtras {
            talk,
            cache,
            pose,
            keep_kv,
        } = extras;
        let e = (self.modulation.to_kind(e0.kind()).unsqueeze(0) + e0).unbind(2);
        let (batch, items) = (e0.size()[0], stream.x.size()[0]);
        // The self-attention half's shift, scale and gate, for the stream's items.
        let [shift, scale, gate] = [0, 1, 2].map(|i| e[i].narrow(0, 0, items));
        let modulate = |shift, scale| Norm::Modulate { shift, scale };
        let (x, normed) = stream.normed(modulate(&shift, &scale))?;
        let masks = talk.and_then(|(_, t)| t.speaker_masks);
        let keep = if keep_kv {
            Keep::KeysValues
        } else if masks.is_some() {
            Keep::QueriesKeys
        } else {
            Keep::Nothing
        };
        let (y, kept) = self
            .self_attn
            .forward(&normed, freqs, step.heads, keep, cache, pose)?;
        let (qk, kv) = if keep_kv { (None, kept) } else { (kept, None) };
        // Two speakers: who each token listens to, from this block's queries and keys.
        let positions = match (qk, masks, talk) {
            (Some((q, k)), Some(masks), Some((_, t))) => {
                let video = t.grid.0 * t.grid.1;
                let p = speaker_positions(&q, &k, masks, step.heads, video);
                Some(p.repeat([batch / items, 1]))
            }
            _ => None,
        };
        let (weight, bias) = (&self.norm3.0, &self.norm3.1);
        let (x, normed) = residual_layer_norm(
            &x,
            Residual {
                y: &y,
                gate: Some(&gate),
            },
            Norm::Affine { weight, bias },
            EPS,
        )?;
        let (x, normed) = if items < batch {
            let copies = [batch / items, 1, 1];
            (x.repeat(copies), normed.repeat(copies))
        } else {
            (x, normed)
        };
        let mut y = self.cross_attn.forward(&normed, step)?;
        let x = match talk {
            Some((block, t)) => {
                let x = x + y;
                let audio = block.forward(&x, t.audio, t.grid, step.heads, positions.as_ref())?;
                y = audio * t.scale;
                x
            }
            None => match (&self.humo, step.humo_audio) {
                (Some(humo), Some(audio)) => {
                    let x = x + y;
                    y = humo.forward(&x, audio, step.heads)?;
                    x
                }
                _ => x,
            },
        };
        let (x, normed) = residual_layer_norm(
            &x,
            Residual { y: &y, gate: None },
            modulate(&e[3], &e[4]),
            EPS,
        )?;
        let y = self
            .ffn_out
            .forward(&self.ffn_in.forward_gelu_tanh(&normed)?)?;
        let stream = Stream {
            x,
            pending: Some((y, e[5].shallow_clone())),
        };
        Ok((stream, kv))
    }
}

/// Wan Animate 2's pose branch during one forward: its stream (absent when every block input
/// comes from the cache) and what its blocks share.
struct PoseBranch<'a> {
    stream: Option<Stream>,
    e0: Tensor,
    freqs: Tensor,
    context: Tensor,
    image_tokens: i64,
    padding: RepeatedLastKey,
    cache: Option<std::sync::MutexGuard<'a, PoseCache>>,
    strength: f64,
    batch: i64,
    heads: i64,
}

impl PoseBranch<'_> {
    /// Block `i`'s pose keys and values (values scaled by the pose strength), moving the
    /// branch's stream past the block or reading its input from the cache.
    fn advance(&mut self, block: &Block, i: usize) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.stream.take() {
            None => {
                let cache = self
                    .cache
                    .as_deref_mut()
                    .context("the pose cache is empty")?;
                let dtype = self.e0.kind();
                let x = cache.take(i, self.e0.device(), dtype, self.batch)?;
                block.keys_values(&x, &self.e0, &self.freqs, self.heads)?
            }
            Some(stream) => {
                let stream = match self.cache.as_deref_mut() {
                    Some(cache) => {
                        let x = stream.resolved();
                        cache.put(i, &x)?;
                        Stream { x, pending: None }
                    }
                    None => stream,
                };
                let step = StepInputs {
                    context: &self.context,
                    image_tokens: self.image_tokens,
                    text_padding: self.padding.clone(),
                    heads: self.heads,
                    humo_audio: None,
                };
                let extras = BlockExtras {
                    keep_kv: true,
                    ..BlockExtras::default()
                };
                let (next, kv) =
                    block.forward_with(stream, &self.e0, &self.freqs, &step, extras)?;
                self.stream = Some(next);
                kv.context("the block kept its keys and values")?
            }
        };
        let v = if self.strength == 1.0 {
            v
        } else {
            v * self.strength
        };
        Ok((k, v))
    }
}

/// What a block can take besides its inputs (see [`Block::forward_with`]).
#[derive(Default)]
struct BlockExtras<'a> {
    talk: Option<(&'a TalkBlock, &'a TalkStep<'a>)>,
    cache: Option<(&'a mut CausalCache, usize)>,
    pose: Option<&'a PoseAttention>,
    keep_kv: bool,
}

impl Movable for Block {
    fn moved(&self, device: Device) -> Self {
        Self {
            self_attn: self.self_attn.moved(device),
            cross_attn: self.cross_attn.moved(device),
            norm3: self.norm3.moved(device),
            ffn_in: self.ffn_in.moved(device),
            ffn_out: self.ffn_out.moved(device),
            modulation: self.modulation.moved(device),
            humo: self.humo.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.self_attn.bytes()
            + self.cross_attn.bytes()
            + self.norm3.bytes()
            + self.ffn_in.bytes()
            + self.ffn_out.bytes()
            + self.modulation.bytes()
            + self.humo.bytes()
    }
}

/// The residual stream between blocks: `x` and the gated FFN output `(y, gate)` the previous
/// block has not added yet, so that the add runs in one pass with the next block's norm.
struct Stream {
    x: Tensor,
    pending: Option<(Tensor, Tensor)>,
}

impl Stream {
    /// The stream with its pending residual added.
    fn resolved(self) -> Tensor {
        match &self.pending {
            Some((y, gate)) => Residual {
                y,
                gate: Some(gate),
            }
            .chain(&self.x),
            None => self.x,
        }
    }

    /// The stream with its pending residual added, and `norm` of it.
    fn normed(self, norm: Norm) -> Result<(Tensor, Tensor)> {
        match &self.pending {
            Some((y, gate)) => {
                let residual = Residual {
                    y,
                    gate: Some(gate),
                };
                residual_layer_norm(&self.x, residual, norm, EPS)
            }
            None => {
                let normed = fused::layer_norm(&self.x, norm, EPS)?;
                Ok((self.x, normed))
            }
        }
    }
}

/// What every block of one forward shares.
struct StepInputs<'a> {
    /// The embedded CLIP-vision tokens (I2V), then the text's kept rows.
    context: &'a Tensor,
    image_tokens: i64,
    /// How many text rows the last kept one stands for ([`kept_text_rows`]).
    text_padding: RepeatedLastKey,
    heads: i64,
    /// HuMo's audio tokens, `[b, frames · 16, audio_dim]`.
    humo_audio: Option<&'a Tensor>,
}

/// The CLIP-vision projection of I2V models (`img_emb`).
struct ImageEmbedding {
    norm_in: (Tensor, Tensor),
    lin1: Linear,
    lin2: Linear,
    norm_out: (Tensor, Tensor),
    positions: Option<Tensor>,
}

impl ImageEmbedding {
    /// The `MLPProj` under `p` (`img_emb`, or Wan Dancer's `img_emb_refimage`).
    fn load(w: &Weights, p: &str, c: &WanConfig) -> Result<Self> {
        let pair = |n: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                w.tensor(&format!("{p}.proj.{n}.weight"))?,
                w.tensor(&format!("{p}.proj.{n}.bias"))?,
            ))
        };
        // 1280 for CLIP-H; read from the file so other towers (and tiny tests) fit.
        let clip_dim = w
            .file
            .entry(&w.key(&format!("{p}.proj.0.weight")))
            .map_or(1280, |e| e.shape[0] as i64);
        let positions = format!("{p}.emb_pos");
        Ok(Self {
            norm_in: pair("0")?,
            lin1: w.linear(&format!("{p}.proj.1"), (clip_dim, clip_dim))?,
            lin2: w.linear(&format!("{p}.proj.3"), (c.dim, clip_dim))?,
            norm_out: pair("4")?,
            positions: w.optional(&positions)?,
        })
    }

    fn forward(&self, clip: &Tensor) -> Result<Tensor> {
        let clip = match &self.positions {
            Some(pos) => {
                let n = pos.size()[1].min(clip.size()[1]);
                clip.narrow(1, 0, n) + pos.narrow(1, 0, n).to_kind(clip.kind())
            }
            None => clip.shallow_clone(),
        };
        let (w0, b0) = (&self.norm_in.0, &self.norm_in.1);
        let h = self
            .lin1
            .forward(&layer_norm(&clip, Some((w0, b0)), 1e-5))?;
        let h = self.lin2.forward(&h.gelu("none"))?;
        let (w4, b4) = (&self.norm_out.0, &self.norm_out.1);
        Ok(layer_norm(&h, Some((w4, b4)), 1e-5))
    }
}

/// One block of a VACE model's control branch (`VaceWanAttentionBlock`): a text-only block
/// over the control stream `c`. The first adds its `before_proj` of `c` to the patch-embedded
/// latent; each gives `after_proj(c)` as its hint to the main stream.
struct VaceBlock {
    before: Option<Linear>,
    block: Block,
    after: Linear,
}

impl VaceBlock {
    fn load(w: &Weights, n: i64, c: &WanConfig) -> Result<Self> {
        let p = format!("vace_blocks.{n}");
        let before = if n == 0 {
            Some(w.linear(&format!("{p}.before_proj"), (c.dim, c.dim))?)
        } else {
            None
        };
        Ok(Self {
            before,
            block: Block::load(w, &p, c, false)?,
            after: w.linear(&format!("{p}.after_proj"), (c.dim, c.dim))?,
        })
    }

    /// `(hint, c)` after this block; `latent`: the patch-embedded latent tokens.
    fn forward(
        &self,
        c: &Tensor,
        latent: &Tensor,
        e0: &Tensor,
        freqs: &Tensor,
        step: &StepInputs,
    ) -> Result<(Tensor, Tensor)> {
        let c = match &self.before {
            Some(before) => before.forward(c)? + latent,
            None => c.shallow_clone(),
        };
        let stream = Stream {
            x: c,
            pending: None,
        };
        let c = self
            .block
            .forward(stream, e0, freqs, step, None, None)?
            .resolved();
        Ok((self.after.forward(&c)?, c))
    }
}

impl Movable for VaceBlock {
    fn moved(&self, device: Device) -> Self {
        Self {
            before: self.before.moved(device),
            block: self.block.moved(device),
            after: self.after.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.before.bytes() + self.block.bytes() + self.after.bytes()
    }
}

/// A VACE model's control branch: its patch embedding (float32, like the latent's) and blocks.
struct Vace {
    patch: (Tensor, Tensor),
    blocks: Vec<Streamed<VaceBlock>>,
    /// VACE block `n` follows main block `n · stride` (ComfyUI's `vace_layers_mapping`).
    stride: i64,
}

/// The VACE branch during one forward: its blocks in order, and each control's stream.
struct ControlBranch<'a> {
    blocks: InOrder<'a, VaceBlock>,
    stride: i64,
    streams: Vec<Tensor>,
    strengths: &'a [f64],
    /// The patch-embedded latent, which the first VACE block adds to each control.
    latent: Tensor,
}

impl ControlBranch<'_> {
    /// After main block `i`: where a VACE block follows it, every control's stream goes
    /// through it and its hint, times the control's strength, joins the main stream.
    fn after_block(
        &mut self,
        i: i64,
        stream: Stream,
        e0: &Tensor,
        freqs: &Tensor,
        step: &StepInputs,
    ) -> Result<Stream> {
        if i % self.stride != 0 {
            return Ok(stream);
        }
        let Some(block) = self.blocks.next() else {
            return Ok(stream);
        };
        let mut x = stream.resolved();
        for (c, strength) in self.streams.iter_mut().zip(self.strengths) {
            let (hint, next) = block.forward(c, &self.latent, e0, freqs, step)?;
            x += hint * *strength;
            *c = next;
        }
        Ok(Stream { x, pending: None })
    }
}

/// Fun Camera's `control_adapter` (ComfyUI's `WanCamAdapter`): each frame of the camera
/// embedding pixel-unshuffled by 8, a convolution whose stride is its kernel (the patch), then
/// residual blocks of two 3×3 convolutions with a ReLU between; its output joins the patch
/// embedding.
struct CameraAdapter {
    conv: (Tensor, Tensor),
    residual: Vec<[(Tensor, Tensor); 2]>,
}

impl CameraAdapter {
    fn load(w: &Weights) -> Result<Self> {
        let pair = |name: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                w.tensor(&format!("control_adapter.{name}.weight"))?,
                w.tensor(&format!("control_adapter.{name}.bias"))?,
            ))
        };
        let blocks = (0..)
            .take_while(|n| w.has(&format!("control_adapter.residual_blocks.{n}.conv1.weight")))
            .map(|n| {
                let block = format!("residual_blocks.{n}");
                Ok([
                    pair(&format!("{block}.conv1"))?,
                    pair(&format!("{block}.conv2"))?,
                ])
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            conv: pair("conv")?,
            residual: blocks,
        })
    }

    /// Tokens `[b, f·h·w, dim]` of the camera embedding `[b, channels, f, H, W]`.
    fn forward(&self, camera: &Tensor, dtype: Kind) -> Result<Tensor> {
        let (b, c, f, h, w) = camera.size5()?;
        let frames = camera
            .to_kind(dtype)
            .permute([0, 2, 1, 3, 4])
            .reshape([b * f, c, h, w])
            .pixel_unshuffle(8);
        let (weight, bias) = &self.conv;
        let stride = [PATCH[1], PATCH[2]];
        let mut x = frames.conv2d(weight, Some(bias), stride, [0, 0], [1, 1], 1);
        for [(w1, b1), (w2, b2)] in &self.residual {
            let y = x.conv2d(w1, Some(b1), [1, 1], [1, 1], [1, 1], 1).relu();
            x = y.conv2d(w2, Some(b2), [1, 1], [1, 1], [1, 1], 1) + x;
        }
        let (_, dim, hh, ww) = x.size4()?;
        Ok(x.view([b, f, dim, hh, ww])
            .permute([0, 2, 1, 3, 4])
            .flatten(2, -1)
            .transpose(1, 2))
    }
}

/// What a forward takes besides the latent, timestep and text.
#[derive(Default)]
pub struct Conditions<'a> {
    /// I2V: CLIP-vision hidden states `[b, 257, 1280]`.
    pub clip: Option<&'a Tensor>,
    /// VACE: control latents with their masks, `[b, n, vace_in_dim, t, h, w]`, and each of the
    /// `n` controls' strength.
    pub vace: Option<(&'a Tensor, &'a [f64])>,
    /// Wan 2.2 Fun Control: the reference image's latent `[b, channels, h, w]`.
    pub reference: Option<&'a Tensor>,
    /// Blocks that pass their input through (SkipLayerGuidanceDiT's extra call).
    pub skip_blocks: &'a [i64],
    /// Fun Camera: the camera's Plücker embedding `[b, 24, t, H, W]` (WanCameraEmbedding).
    pub camera: Option<&'a Tensor>,
    /// Wan 2.2 S2V: audio features, reference image, motion frames and control video.
    pub sound: SoundInputs<'a>,
    /// InfiniteTalk: the patch's audio cross-attention blocks and this call's audio tokens.
    pub talk: Option<TalkInputs<'a>>,
    /// Bernini's in-context latents `[b, channels, t, h, w]` (normalized, each its own size):
    /// their tokens follow the video's, each stream rotated on its own grid and by its index.
    pub context_latents: &'a [Tensor],
    /// ScaleROPE's spacing and offsets of the patch positions.
    pub rope: RopeOptions,
    /// HuMo: Whisper features per latent frame and the reference latent.
    pub humo: HumoInputs<'a>,
    /// Causal Forcing: the autoregressive session's cache (used while it is active).
    pub causal: Option<&'a Mutex<CausalCache>>,
    /// Wan Animate 2: the pose branch's inputs (absent outside its window).
    pub pose: Option<PoseInputs<'a>>,
    /// Wan Animate 2: the reference frame's value scale (1 when absent).
    pub reference_strength: Option<f64>,
    /// Whether the call is one context window of a longer video (Wan Animate 2 fills its pose
    /// cache before the first window, as ComfyUI does).
    pub windowed: bool,
    /// Wan Dancer: the music, the reference image's CLIP vision and the video's frame rate.
    pub dancer: DancerInputs<'a>,
    /// SCAIL: the reference frames, the pose video and SCAIL-2's identity masks.
    pub scail: ScailInputs<'a>,
    /// Wan 2.2 Animate: the pose latents and the driving face.
    pub animate: AnimateInputs<'a>,
}

pub struct WanModel {
    pub config: WanConfig,
    pub dtype: Kind,
    patch_weight: Tensor,
    patch_bias: Tensor,
    text_in: Linear,
    text_out: Linear,
    time_in: Linear,
    time_out: Linear,
    time_projection: Linear,
    /// Under `--lowvram` the blocks that do not fit are streamed from pinned host memory.
    blocks: Vec<Streamed<Block>>,
    head: Linear,
    head_modulation: Tensor,
    image_embedding: Option<ImageEmbedding>,
    vace: Option<Vace>,
    /// Fun Control's `ref_conv`: a Conv2d over the reference latent whose stride is its kernel.
    ref_conv: Option<(Tensor, Tensor)>,
    camera: Option<CameraAdapter>,
    sound: Option<Sound>,
    humo_projection: Option<AudioProjection>,
    /// Wan Dancer's music parts, global patch embedding and head, and the reference image's
    /// CLIP-vision projection.
    dancer: Option<(Dancer, ImageEmbedding)>,
    scail: Option<ScailParts>,
    animate: Option<AnimateParts>,
    /// The rotations of the last patch grid, kept on the device: `rope_grid` builds them on the
    /// host, and copying them over for every step would wait for the previous step to finish.
    rope: Mutex<Vec<(RopeKey, Tensor)>>,
}

/// What the rotations depend on besides the model: the patch grid, the device, ScaleROPE's
/// options and, for Wan Dancer's global pass, the frame rate (its bits).
type RopeKey = ((i64, i64, i64), Device, RopeOptions, Option<u64>);

/// `[cos(t·f), sin(t·f)]` with `f = 10000^(−i/half)`, in float32 (ComfyUI's
/// `sinusoidal_embedding_1d`).
fn sinusoidal(dim: i64, t: &Tensor) -> Tensor {
    let half = dim / 2;
    let position = t.to_kind(Kind::Float).flatten(0, -1);
    let exponents = Tensor::arange(half, (Kind::Float, t.device())) / half as f64;
    // A scalar base: a base tensor made on the host would be a copy that waits for the GPU.
    let freqs = Tensor::pow_scalar(10000f64, &(-exponents));
    let angles = position.outer(&freqs);
    Tensor::cat(&[angles.cos(), angles.sin()], 1)
}

impl WanModel {
    /// Loads the weights under `prefix` of `file`'s component (ComfyUI keeps the patch
    /// embedding in float32; everything else in `dtype` unless stored quantized).
    pub fn load(w: &Weights, config: WanConfig) -> Result<Self> {
        let c = &config;
        let mut placer = w.placement.placer();
        let blocks: Vec<Streamed<Block>> = (0..c.num_layers)
            .map(|n| Ok(placer.place(Block::load(w, &format!("blocks.{n}"), c, c.i2v)?)))
            .collect::<Result<_>>()?;
        let vace = match c.vace {
            Some(v) => Some(Vace {
                patch: (
                    w.tensor_as("vace_patch_embedding.weight", Kind::Float)?,
                    w.tensor_as("vace_patch_embedding.bias", Kind::Float)?,
                ),
                blocks: (0..v.layers)
                    .map(|n| Ok(placer.place(VaceBlock::load(w, n, c)?)))
                    .collect::<Result<_>>()?,
                stride: (c.num_layers / v.layers.max(1)).max(1),
            }),
            None => None,
        };
        let camera = match c.camera_channels {
            Some(_) => Some(CameraAdapter::load(w)?),
            None => None,
        };
        let sound = if c.sound {
            Some(Sound::load(w, c.dim)?)
        } else {
            None
        };
        let ref_conv = match c.ref_conv_channels {
            Some(_) => Some((w.tensor("ref_conv.weight")?, w.tensor("ref_conv.bias")?)),
            None => None,
        };

        let head_out = c.out_dim * PATCH.iter().product::<i64>();
        let model = Self {
            dtype: w.dtype,
            patch_weight: w.tensor_as("patch_embedding.weight", Kind::Float)?,
            patch_bias: w.tensor_as("patch_embedding.bias", Kind::Float)?,
            text_in: w.linear("text_embedding.0", (c.dim, c.text_dim))?,
            text_out: w.linear("text_embedding.2", (c.dim, c.dim))?,
            time_in: w.linear("time_embedding.0", (c.dim, c.freq_dim))?,
            time_out: w.linear("time_embedding.2", (c.dim, c.dim))?,
            time_projection: w.linear("time_projection.1", (c.dim * 6, c.dim))?,
            blocks,
            head: w.linear("head.head", (head_out, c.dim))?,
            head_modulation: w.tensor("head.modulation")?,
            image_embedding: if c.i2v {
                Some(ImageEmbedding::load(w, "img_emb", c)?)
            } else {
                None
            },
            vace,
            ref_conv,
            camera,
            sound,
            humo_projection: if c.humo {
                Some(AudioProjection::load(w)?)
            } else {
                None
            },
            dancer: if c.dancer {
                Some((
                    Dancer::load(w, c.dim, head_out)?,
                    ImageEmbedding::load(w, "img_emb_refimage", c)?,
                ))
            } else {
                None
            },
            scail: match c.scail {
                Some(kind) => Some(ScailParts::load(w, kind)?),
                None => None,
            },
            animate: if c.animate {
                Some(AnimateParts::load(w, c.dim)?)
            } else {
                None
            },
            config,
            rope: Mutex::new(Vec::new()),
        };
        let blocks = (model.resident_blocks(), model.blocks.len());
        log_partial_load("Wan DiT", blocks, "blocks", w.device);
        Ok(model)
    }

    /// `rope_grid` for a `t × h × w` patch grid, made once per grid size (the last few grids are
    /// kept: Wan Animate 2's pose branch has its own).
    pub(super) fn rotations(
        &self,
        grid: (i64, i64, i64),
        device: Device,
        options: &RopeOptions,
    ) -> Tensor {
        self.rotations_at(grid, device, options, None)
    }

    /// [`rotations`](Self::rotations), with Wan Dancer's time positions for a video whose
    /// frames stand for `global_fps`.
    fn rotations_at(
        &self,
        grid: (i64, i64, i64),
        device: Device,
        options: &RopeOptions,
        global_fps: Option<f64>,
    ) -> Tensor {
        let key = (grid, device, *options, global_fps.map(f64::to_bits));
        let mut cached = self.rope.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, freqs)) = cached.iter().find(|(k, _)| *k == key) {
            return freqs.shallow_clone();
        }
        let head_dim = self.config.head_dim();
        let freqs = match global_fps {
            Some(fps) => {
                let (t, h, w) = grid;
                let time = dancer::global_time_positions(t, fps, options.shift[0], self.dtype);
                let rows = options.positions(1, 0.0, h, self.dtype);
                let columns = options.positions(2, 0.0, w, self.dtype);
                rope_positions([&time, &rows, &columns], head_dim).to_device(device)
            }
            None => rope_grid_scaled(options, grid, head_dim, self.dtype, device),
        };
        if cached.len() >= 4 {
            drop(cached.remove(0));
        }
        cached.push((key, freqs.shallow_clone()));
        freqs
    }

    /// The text (kept rows) through the text embedding, with the CLIP-vision tokens in front:
    /// the tokens every cross-attention reads, how many are image tokens, and the padding's
    /// stand-in row.
    fn embed_context(
        &self,
        context: &Tensor,
        clip: Option<&Tensor>,
        clip_reference: Option<&Tensor>,
    ) -> Result<(Tensor, i64, RepeatedLastKey)> {
        let (text_rows, kept) = (context.size()[1], kept_text_rows(context));
        let text = context.narrow(1, 0, kept).to_kind(self.dtype);
        let mut context = self
            .text_out
            .forward(&self.text_in.forward_gelu_tanh(&text)?)?;
        let mut image_tokens = 0;
        if let Some(clip) = clip {
            if let Some(embedding) = &self.image_embedding {
                let projected = embedding.forward(&clip.to_kind(self.dtype))?;
                context = Tensor::cat(&[&projected, &context], 1);
            }
            image_tokens = clip.size()[clip.dim() - 2];
        }
        // Wan Dancer's reference image goes in front of the first frame's.
        if let (Some(reference), Some((_, embedding))) = (clip_reference, &self.dancer) {
            let projected = embedding.forward(&reference.to_kind(self.dtype))?;
            context = Tensor::cat(&[&projected, &context], 1);
            image_tokens += reference.size()[reference.dim() - 2];
        }
        let padding = RepeatedLastKey::new(kept, text_rows - kept + 1, context.device());
        Ok((context, image_tokens, padding))
    }

    /// The time projections `[b, rows, 6, dim]` and embedding `[b, rows, dim]` of `timestep`.
    fn time_inputs(&self, timestep: &Tensor, b: i64) -> Result<(Tensor, Tensor)> {
        let c = &self.config;
        let e = sinusoidal(c.freq_dim, timestep).to_kind(self.dtype);
        let e = self.time_out.forward(&self.time_in.forward(&e)?.silu())?;
        let e = e.reshape([b, -1, c.dim]);
        let e0 = self
            .time_projection
            .forward(&e.silu())?
            .unflatten(2, [6, c.dim]);
        Ok((e0, e))
    }

    /// Wan Animate 2's pose branch for a video of `(pt, ph, pw)` patches and batch `b`, with the
    /// video's text and CLIP vision as defaults.
    fn pose_branch<'a>(
        &self,
        pose: &'a PoseInputs,
        (pt, ph, pw): (i64, i64, i64),
        b: i64,
        (context, clip): (&Tensor, Option<&Tensor>),
        windowed: bool,
    ) -> Result<PoseBranch<'a>> {
        let latents = pose.latents;
        let frames = latents.size()[2];
        if frames != pt - 1 {
            bail!(
                "the pose branch has {frames} latent frames, expected {} (the video's frames minus the reference slot)",
                pt - 1
            );
        }
        let device = latents.device();
        let latents = pad_to_patch(&latents.to_kind(self.dtype));
        let ones = latents.narrow(1, 0, 4).ones_like();
        let input = Tensor::cat(&[&latents, &ones, &latents], 1);
        let patch = (&self.patch_weight, &self.patch_bias);
        // Pose frame j sits at time j + 1, beside the video in its own strip of columns.
        let options = RopeOptions {
            scale: [1.0; 3],
            shift: [1.0, 0.0, pw as f64],
        };
        let freqs = self.rotations((frames, ph, pw), device, &options);
        let (e0, _) = self.time_inputs(&Tensor::ones([b], (Kind::Float, device)), b)?;
        let text = pose.context.unwrap_or(context).to_kind(self.dtype);
        let (context, image_tokens, padding) =
            self.embed_context(&text, pose.clip.or(clip), None)?;
        let mut cache = pose
            .cache
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(cache) = cache.as_deref_mut() {
            cache.select(pose.latents, self.blocks.len());
        }
        let cached = cache.as_deref_mut().is_some_and(PoseCache::filled);
        let mut branch = PoseBranch {
            stream: (!cached).then(|| Stream {
                x: self
                    .embed_patches(&input, patch)
                    .expect("the pose latents embed"),
                pending: None,
            }),
            e0,
            freqs,
            context,
            image_tokens,
            padding,
            cache,
            strength: pose.strength,
            batch: b,
            heads: self.config.num_heads,
        };
        // Under context windows the cache is filled before the first window, so that every
        // window reads the stored inputs.
        if branch.cache.is_some() && !cached && windowed {
            for (i, block) in in_order(&self.blocks).enumerate() {
                drop(branch.advance(&block, i)?);
            }
            branch.stream = None;
        }
        Ok(branch)
    }

    /// The patch embedding's weight and bias.
    pub(super) fn patch(&self) -> (&Tensor, &Tensor) {
        (&self.patch_weight, &self.patch_bias)
    }

    /// The video's tokens (`[b, T·h·w, dim]` of a `(T, h, w)` patch grid) behind Fun Control's
    /// reference frame, if any, and their rotations (at a causal block's place in the video, or
    /// at Wan Dancer's global time positions `global_fps`); also how many reference tokens lead.
    fn plain_sequence(
        &self,
        video: Tensor,
        (pt, ph, pw): (i64, i64, i64),
        conditions: &Conditions,
        items: i64,
        (causal, global_fps): (Option<&CausalCache>, Option<f64>),
    ) -> Result<(Tensor, Tensor, i64)> {
        // A reference image goes in front as one more frame (rotated as frame 0) and is cut
        // off before the unpatchify; models without `ref_conv` ignore it, as in ComfyUI.
        let reference = conditions.reference.filter(|_| self.ref_conv.is_some());
        let (tokens, reference_tokens) = match reference {
            Some(reference) => {
                let r = self.embed_reference(&reference.narrow(0, 0, items))?;
                let n = r.size()[1];
                if n != ph * pw {
                    bail!("the reference latent's {n} tokens do not fill a {ph}×{pw} frame");
                }
                (Tensor::cat(&[&r, &video], 1), n)
            }
            None => (video, 0),
        };
        let frames = pt + i64::from(reference_tokens > 0);
        let mut rope = conditions.rope;
        if let Some(cache) = causal {
            rope.shift[0] += cache.start_frame as f64;
        }
        let freqs = self.rotations_at((frames, ph, pw), tokens.device(), &rope, global_fps);
        Ok((tokens, freqs, reference_tokens))
    }

    /// The patch embedding, a float32 Conv3d whose stride is its kernel (`weight`, `bias`), as
    /// one GEMM over the flattened patches: `[b, t·h·w, dim]` in token order, in the model's
    /// dtype.
    pub(super) fn embed_patches(
        &self,
        x: &Tensor,
        (weight, bias): (&Tensor, &Tensor),
    ) -> Result<Tensor> {
        let (b, c, t, h, w) = x.size5()?;
        let [pt, ph, pw] = PATCH;
        let patches = x
            .to_kind(Kind::Float)
            .view(&[b, c, t / pt, pt, h / ph, ph, w / pw, pw][..])
            .permute([0, 2, 4, 6, 1, 3, 5, 7])
            .reshape([b, -1, c * pt * ph * pw]);
        let weight = weight.view([self.config.dim, -1]);
        Ok(patches.linear(&weight, Some(bias)).to_kind(self.dtype))
    }

    /// Fun Control's reference tokens: `ref_conv` of the reference latent `[b, channels, h, w]`,
    /// `[b, (h/2)·(w/2), dim]`.
    fn embed_reference(&self, reference: &Tensor) -> Result<Tensor> {
        let (weight, bias) = self
            .ref_conv
            .as_ref()
            .context("this Wan model has no reference-image input (ref_conv)")?;
        let out = reference.to_kind(self.dtype).conv2d(
            weight,
            Some(bias),
            [PATCH[1], PATCH[2]],
            [0, 0],
            [1, 1],
            1,
        );
        Ok(out.flatten(2, -1).transpose(1, 2))
    }

    /// The VACE control streams, one `[b, tokens, dim]` per control of `context`
    /// `[b, n, vace_in_dim, t, h, w]` (in the model's dtype, embedded in float32).
    fn embed_controls(&self, vace: &Vace, context: &Tensor) -> Result<Vec<Tensor>> {
        let context = context.to_kind(self.dtype);
        let patch = (&vace.patch.0, &vace.patch.1);
        (0..context.size()[1])
            .map(|j| self.embed_patches(&context.select(1, j), patch))
            .collect()
    }

    /// S2V's sequence: the video tokens, then the reference image's (rotated as one frame at
    /// time max(30, frames + 9)) and the motion frames' tokens, each with its marker; and the
    /// timestep rows ComfyUI spreads over them (the video's per frame, twice over when motion
    /// is given, 0 for the reference and motion rows).
    fn with_sound_tokens(
        &self,
        sound: &Sound,
        (pt, tokens, freqs): (i64, Tensor, Tensor),
        timestep: &Tensor,
        inputs: &SoundInputs,
        items: i64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let device = tokens.device();
        let head_dim = self.config.head_dim();
        let b = timestep.size()[0];
        let mut rows = if timestep.dim() == 1 {
            timestep.unsqueeze(1).repeat([1, pt])
        } else {
            timestep.shallow_clone()
        };
        let options = (rows.kind(), rows.device());
        let zeros = |n: i64| Tensor::zeros([b, n], options);
        let (mut tokens, mut freqs) = (vec![tokens], vec![freqs]);
        if let Some(reference) = inputs.reference {
            let reference = reference.narrow(0, 0, items).to_kind(self.dtype);
            let (f, h, w) = (
                reference.size()[2],
                reference.size()[3] / 2,
                reference.size()[4] / 2,
            );
            // The patch convolution drops an odd last row or column.
            let reference = reference.narrow(3, 0, h * 2).narrow(4, 0, w * 2);
            let patch = (&self.patch_weight, &self.patch_bias);
            tokens.push(self.embed_patches(&reference, patch)? + sound.marker(1, self.dtype));
            let ids = |start: f64, n: i64| {
                Tensor::linspace(start, start + (n - 1) as f64, n, (self.dtype, Device::Cpu))
            };
            let start = (pt + 9).max(30) as f64;
            let positions = [&ids(start, f), &ids(0.0, h), &ids(0.0, w)];
            freqs.push(rope_positions(positions, head_dim).to_device(device));
            rows = Tensor::cat(&[rows, zeros(f)], 1);
        }
        if let Some(motion) = inputs.motion {
            let motion = motion.narrow(0, 0, items).to_kind(self.dtype);
            let (motion_tokens, rotations) = sound.motion_tokens(&motion, head_dim)?;
            tokens.push(motion_tokens);
            freqs.push(rotations.to_device(device));
            rows = Tensor::cat(&[rows.repeat_interleave_self_int(2, 1, None), zeros(3)], 1);
        }
        Ok((Tensor::cat(&tokens, 1), Tensor::cat(&freqs, 1), rows))
    }

    /// Bernini's in-context streams after the sequence: each latent patch-embedded like the
    /// video's and rotated on its own grid, composed with a rotation by its stream index
    /// (1, 2, …) over the whole head, so the streams stay apart from the video (index 0).
    fn with_context_latents(
        &self,
        tokens: Tensor,
        freqs: Tensor,
        latents: &[Tensor],
        items: i64,
        rope: &RopeOptions,
    ) -> Result<(Tensor, Tensor)> {
        let head_dim = self.config.head_dim();
        let patch = (&self.patch_weight, &self.patch_bias);
        let (mut all_tokens, mut all_freqs) = (vec![tokens], vec![freqs]);
        for (i, latent) in latents.iter().enumerate() {
            let latent = pad_to_patch(&latent.narrow(0, 0, items).to_kind(self.dtype));
            all_tokens.push(self.embed_patches(&latent, patch)?);
            let (_, _, t, h, w) = latent.size5()?;
            let grid = (t, h / PATCH[1], w / PATCH[2]);
            let grid = rope_grid_scaled(rope, grid, head_dim, self.dtype, Device::Cpu);
            let source = Tensor::from_slice(&[(i + 1) as f32]);
            let rotation = rope_axis(&source, head_dim, 10000.0).view([1, 1, 1, -1]);
            all_freqs.push((grid * rotation).to_device(latent.device()));
        }
        Ok((Tensor::cat(&all_tokens, 1), Tensor::cat(&all_freqs, 1)))
    }

    /// HuMo's reference frames after the sequence: patch-embedded like the video and rotated
    /// from time `frames` on (after the video's frames, ScaleROPE aside, as ComfyUI's
    /// `forward_orig` encodes them); also returns how many latent frames they add.
    fn with_humo_reference(
        &self,
        tokens: Tensor,
        freqs: Tensor,
        reference: &Tensor,
        frames: i64,
        items: i64,
    ) -> Result<(Tensor, Tensor, i64)> {
        let reference = pad_to_patch(&reference.narrow(0, 0, items).to_kind(self.dtype));
        let patch = (&self.patch_weight, &self.patch_bias);
        let reference_tokens = self.embed_patches(&reference, patch)?;
        let (_, _, t, h, w) = reference.size5()?;
        let plain = RopeOptions::default();
        let ids =
            |axis: usize, start: i64, n: i64| plain.positions(axis, start as f64, n, self.dtype);
        let positions = [
            &ids(0, frames, t),
            &ids(1, 0, h / PATCH[1]),
            &ids(2, 0, w / PATCH[2]),
        ];
        let rotations =
            rope_positions(positions, self.config.head_dim()).to_device(tokens.device());
        Ok((
            Tensor::cat(&[tokens, reference_tokens], 1),
            Tensor::cat(&[freqs, rotations], 1),
            t,
        ))
    }

    /// How many blocks stay on the compute device (the rest are streamed under `--lowvram`).
    pub fn resident_blocks(&self) -> usize {
        resident_count(&self.blocks)
    }

    /// The model output for latents `x` `[b, in_dim, t, h, w]` at `timestep` (`[b]`, or
    /// `[b, t]` per latent frame for Wan 2.2), text `context` `[b, tokens, text_dim]` and, for
    /// I2V, CLIP-vision hidden states `[b, 257, 1280]`. Computed in the model's dtype.
    pub fn forward(
        &self,
        x: &Tensor,
        timestep: &Tensor,
        context: &Tensor,
        clip: Option<&Tensor>,
    ) -> Result<Tensor> {
        let conditions = Conditions {
            clip,
            ..Conditions::default()
        };
        self.forward_with(x, timestep, context, &conditions)
    }

    /// [`forward`](Self::forward) with every input a Wan model class takes (VACE controls, a
    /// Fun Control reference image).
    pub fn forward_with(
        &self,
        x: &Tensor,
        timestep: &Tensor,
        context: &Tensor,
        conditions: &Conditions,
    ) -> Result<Tensor> {
        let c = &self.config;
        let raw_context = context;
        let (b, _, t, h, w) = x.size5()?;
        let x = pad_to_patch(&x.to_kind(self.dtype));
        let (pt, ph, pw) = (
            x.size()[2] / PATCH[0],
            x.size()[3] / PATCH[1],
            x.size()[4] / PATCH[2],
        );
        // With CFG the batch is cond and uncond on one latent: until block 0's cross-attention
        // their stream is the same, so it is computed once (unless block 0 is skipped, which
        // would leave the stream at half the batch).
        let mut causal = conditions
            .causal
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()))
            .filter(|c| c.active);
        let copies = if conditions.skip_blocks.contains(&0)
            || causal.is_some()
            || (c.animate2 && conditions.pose.is_some())
        {
            1
        } else {
            let sound = &conditions.sound;
            let mut others = vec![
                conditions.camera,
                conditions.reference,
                sound.reference,
                sound.motion,
                sound.control,
            ];
            others.extend(conditions.context_latents.iter().map(Some));
            others.push(conditions.humo.reference);
            let scail = &conditions.scail;
            others.extend([
                scail.reference,
                scail.pose,
                scail.reference_mask,
                scail.pose_mask,
                conditions.animate.pose,
            ]);
            input_copies(&x, timestep, &others)
        };
        let items = b / copies;
        // Wan Dancer's global pass (a video whose frames stand for another rate than 30 fps)
        // has its own patch embedding, time positions and head.
        let fps = conditions.dancer.fps.unwrap_or(dancer::NATIVE_FPS);
        let global = match &self.dancer {
            Some((parts, _)) if dancer::is_global(fps) => Some(parts),
            _ => None,
        };
        let patch = match global {
            Some(parts) => (&parts.global_patch.0, &parts.global_patch.1),
            None => (&self.patch_weight, &self.patch_bias),
        };
        let mut latent_tokens = self.embed_patches(&x.narrow(0, 0, items), patch)?;
        if let (Some(parts), Some(pose)) = (&self.animate, conditions.animate.pose) {
            let pose = pad_to_patch(&pose.narrow(0, 0, items).to_kind(self.dtype));
            let (weight, bias) = &parts.pose_patch;
            let pose_tokens = self.embed_patches(&pose, (weight, bias))?;
            latent_tokens = AnimateParts::add_pose(&latent_tokens, &pose_tokens, ph * pw)?;
        }
        if let (Some(adapter), Some(camera)) = (&self.camera, conditions.camera) {
            latent_tokens += adapter.forward(&camera.narrow(0, 0, items), self.dtype)?;
        }
        if let Some(sound) = &self.sound {
            if let Some(control) = conditions.sound.control {
                let control = control.narrow(0, 0, items).to_kind(self.dtype);
                latent_tokens += sound.control_tokens(&control);
            }
            latent_tokens += sound.marker(0, self.dtype);
        }
        let (tokens, freqs, reference_tokens) = match &self.scail {
            Some(parts) => parts.sequence(
                self,
                latent_tokens.shallow_clone(),
                ((pt, ph, pw), (h, w)),
                &conditions.scail,
                (items, &conditions.rope),
            )?,
            None => self.plain_sequence(
                latent_tokens.shallow_clone(),
                (pt, ph, pw),
                conditions,
                items,
                (causal.as_deref(), global.map(|_| fps)),
            )?,
        };
        let (tokens, freqs) = if conditions.context_latents.is_empty() {
            (tokens, freqs)
        } else {
            let latents = conditions.context_latents;
            self.with_context_latents(tokens, freqs, latents, items, &conditions.rope)?
        };
        let humo_reference = conditions.humo.reference.filter(|_| self.config.humo);
        let (tokens, freqs, reference_frames) = match humo_reference {
            Some(reference) => self.with_humo_reference(tokens, freqs, reference, pt, items)?,
            None => (tokens, freqs, 0),
        };
        let (tokens, freqs, timestep) = match &self.sound {
            Some(sound) => self.with_sound_tokens(
                sound,
                (pt, tokens, freqs),
                timestep,
                &conditions.sound,
                items,
            )?,
            None => (tokens, freqs, timestep.shallow_clone()),
        };
        let video_tokens = pt * ph * pw;
        let audio = match (&self.sound, conditions.sound.audio) {
            (Some(sound), Some(features)) => {
                let features = features.to_kind(self.dtype);
                Some(sound.audio_tokens(&features, pt, video_tokens)?)
            }
            _ => None,
        };
        let music = match (&self.dancer, conditions.dancer.music) {
            (Some((parts, _)), Some(features)) => {
                Some(parts.music_tokens(&features.to_kind(self.dtype), pt, c.dim)?)
            }
            _ => None,
        };

        let faces = match (&self.animate, conditions.animate.faces) {
            (Some(parts), Some(faces)) => Some(parts.face_tokens(faces, pt, self.dtype)?),
            _ => None,
        };
        let (e0, e) = self.time_inputs(&timestep, b)?;
        let (context, image_tokens, text_padding) =
            self.embed_context(context, conditions.clip, conditions.dancer.clip_reference)?;
        let humo_audio = match (&self.humo_projection, conditions.humo.audio) {
            (Some(projection), Some(audio)) => {
                let audio = padded_audio(&audio.to_kind(self.dtype), reference_frames);
                Some(projection.forward(&audio)?)
            }
            _ => None,
        };
        let step = StepInputs {
            context: &context,
            image_tokens,
            text_padding,
            heads: c.num_heads,
            humo_audio: humo_audio.as_ref(),
        };
        let pose_inputs = conditions.pose.as_ref().filter(|_| c.animate2);
        let mut pose = match pose_inputs {
            Some(p) => Some(self.pose_branch(
                p,
                (pt, ph, pw),
                b,
                (raw_context, conditions.clip),
                conditions.windowed,
            )?),
            None => None,
        };
        let reference_strength = conditions.reference_strength.unwrap_or(1.0);
        let controls = match (&self.vace, conditions.vace) {
            (Some(vace), Some((context, strengths))) => {
                let streams = self.embed_controls(vace, context)?;
                if streams.len() != strengths.len() {
                    bail!(
                        "{} VACE controls but {} strengths",
                        streams.len(),
                        strengths.len()
                    );
                }
                Some((vace, streams, strengths))
            }
            // Models without VACE blocks ignore controls, as ComfyUI's do.
            _ => None,
        };
        let mut stream = Stream {
            x: tokens,
            pending: None,
        };
        let mut branch = controls.map(|(vace, streams, strengths)| ControlBranch {
            blocks: in_order(&vace.blocks),
            stride: vace.stride,
            streams,
            strengths,
            latent: latent_tokens.repeat([copies, 1, 1]),
        });
        let talk = conditions.talk.as_ref().map(|t| TalkStep {
            audio: t.audio,
            scale: t.scale,
            speaker_masks: t.speaker_masks,
            grid: (pt, ph * pw),
        });
        if let Some(t) = &talk {
            let frames = t.audio.size()[0];
            if frames != pt {
                bail!("InfiniteTalk's audio covers {frames} latent frames, the video {pt}");
            }
        }
        let mut talk_blocks = conditions.talk.as_ref().map(|t| in_order(t.blocks));
        for (i, block) in in_order(&self.blocks).enumerate() {
            let talk_block = talk_blocks.as_mut().and_then(Iterator::next);
            let talk = talk_block.as_deref().zip(talk.as_ref());
            let pose_kv = match pose.as_mut() {
                Some(branch) => Some(branch.advance(&block, i)?),
                None => None,
            };
            if !conditions.skip_blocks.contains(&(i as i64)) {
                let cache = causal.as_deref_mut().map(|c| (c, i));
                let attention = c.animate2.then(|| PoseAttention {
                    kv: pose_kv,
                    hw: ph * pw,
                    frames: pt,
                    reference_strength,
                });
                let extras = BlockExtras {
                    talk,
                    cache,
                    pose: attention.as_ref(),
                    keep_kv: false,
                };
                stream = block.forward_with(stream, &e0, &freqs, &step, extras)?.0;
            }
            if let Some(branch) = branch.as_mut() {
                stream = branch.after_block(i as i64, stream, &e0, &freqs, &step)?;
            }
            if let (Some(sound), Some(audio)) = (&self.sound, &audio) {
                if sound.injects_after(i as i64) {
                    let x = sound.inject(i as i64, stream.resolved(), audio, c.num_heads)?;
                    stream = Stream { x, pending: None };
                }
            }
            if let (Some((parts, _)), Some(music)) = (&self.dancer, &music) {
                let scale = conditions.dancer.scale.unwrap_or(1.0);
                let x = parts.inject(i as i64, stream.resolved(), music, video_tokens, scale)?;
                stream = Stream { x, pending: None };
            }
            if let (Some(parts), Some(faces)) = (&self.animate, &faces) {
                if let Some(n) = parts.face_after(i) {
                    let x = parts.add_face(n, &stream.resolved(), faces, c.num_heads)?;
                    stream = Stream { x, pending: None };
                }
            }
        }

        if let Some(cache) = causal.as_deref_mut() {
            cache.end += video_tokens;
        }
        let (head, modulation) = match global {
            Some(parts) => (&parts.global_head, &parts.global_head_modulation),
            None => (&self.head, &self.head_modulation),
        };
        let m = (modulation.to_kind(e.kind()).unsqueeze(0) + e.unsqueeze(2)).unbind(2);
        let (_, normed) = stream.normed(Norm::Modulate {
            shift: &m[0],
            scale: &m[1],
        })?;
        let x = head.forward(&normed)?;
        let x = x.narrow(1, reference_tokens, video_tokens);
        let out = unpatchify(&x, (pt, ph, pw), c.out_dim);
        Ok(out.narrow(2, 0, t).narrow(3, 0, h).narrow(4, 0, w))
    }
}

/// ComfyUI pads each UMT5 prompt to 512 tokens with zeroed rows, so a text ends in a run of
/// equal rows, whose keys and values in every cross-attention are equal too. Returns how many
/// leading rows of `context` (`[b, tokens, text_dim]`) to keep so that in every batch item the
/// last kept row equals all rows after it; the attention counts its key once per row it stands
/// for. One comparison on the device, read once per forward.
fn kept_text_rows(context: &Tensor) -> i64 {
    let rows = context.size()[1];
    if rows < 2 {
        return rows;
    }
    let last = context.narrow(1, rows - 1, 1);
    let differs = context.ne_tensor(&last).any_dim(2, false);
    // 1 + the index of the last row that differs from the final one: where the final run starts.
    let positions = Tensor::arange_start(1, rows + 1, (Kind::Int64, context.device()));
    let run_start = (differs.to_kind(Kind::Int64) * positions).max();
    (run_start.int64_value(&[]) + 1).min(rows)
}

/// How many identical copies of its first `b / copies` items the batch of latents `x`, their
/// timesteps and the `others` that enter the stream before block 0 (a camera embedding, a
/// reference latent) is: 2 when cond and uncond share them all (CFG), else 1. One comparison
/// per tensor on the device, read once per forward.
fn input_copies(x: &Tensor, timestep: &Tensor, others: &[Option<&Tensor>]) -> i64 {
    let b = x.size()[0];
    let halves_equal = |t: &Tensor| {
        t.size().first() == Some(&b) && t.narrow(0, 0, b / 2).equal(&t.narrow(0, b / 2, b / 2))
    };
    let shared = halves_equal(x)
        && halves_equal(timestep)
        && others.iter().flatten().all(|t| halves_equal(t));
    if b >= 2 && b % 2 == 0 && shared {
        2
    } else {
        1
    }
}

/// Pads height and width up to multiples of the patch size, wrapping around like ComfyUI's
/// `pad_to_patch_size` (Wan's time patch is 1).
pub(super) fn pad_to_patch(x: &Tensor) -> Tensor {
    let size = x.size();
    let pad_h = (PATCH[1] - size[3] % PATCH[1]) % PATCH[1];
    let pad_w = (PATCH[2] - size[4] % PATCH[2]) % PATCH[2];
    if pad_h == 0 && pad_w == 0 {
        return x.shallow_clone();
    }
    x.pad([0, pad_w, 0, pad_h, 0, 0], "circular", None)
}

/// `[b, f·h·w, pt·ph·pw·c]` → `[b, c, f·pt, h·ph, w·pw]`.
fn unpatchify(x: &Tensor, (f, h, w): (i64, i64, i64), c: i64) -> Tensor {
    let b = x.size()[0];
    let [pt, ph, pw] = PATCH;
    x.narrow(1, 0, f * h * w)
        .view(&[b, f, h, w, pt, ph, pw, c][..])
        .permute([0, 7, 1, 4, 2, 5, 3, 6])
        .reshape([b, c, f * pt, h * ph, w * pw])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_prompts_keep_their_rows_up_to_the_longest_one_and_one_more() {
        let text = Tensor::randn([2, 12, 4], (Kind::Float, Device::Cpu));
        let _ = text.narrow(1, 5, 7).zero_();
        assert_eq!(kept_text_rows(&text), 6);
        let _ = text.get(1).narrow(0, 5, 3).fill_(1.0);
        assert_eq!(kept_text_rows(&text), 9, "the longer prompt sets the cut");
        let _ = text.get(0).narrow(0, 10, 1).fill_(2.0);
        assert_eq!(kept_text_rows(&text), 12, "no run at the end: all rows");
        let blank = Tensor::zeros([1, 512, 4], (Kind::Float, Device::Cpu));
        assert_eq!(kept_text_rows(&blank), 1, "an empty prompt is one key");
        let nan = Tensor::full([1, 3, 4], f64::NAN, (Kind::Float, Device::Cpu));
        assert_eq!(kept_text_rows(&nan), 3, "NaN rows are never equal");
    }

    #[test]
    fn a_cfg_batch_of_one_latent_and_timestep_is_two_copies() {
        let x = Tensor::randn([1, 16, 2, 4, 4], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[900.0f32, 900.0]);
        let pair = x.repeat([2, 1, 1, 1, 1]);
        assert_eq!(input_copies(&pair, &t, &[]), 2);
        assert_eq!(input_copies(&x, &t.narrow(0, 0, 1), &[]), 1, "batch of one");
        let other_t = Tensor::from_slice(&[900.0f32, 800.0]);
        assert_eq!(input_copies(&pair, &other_t, &[]), 1, "timesteps differ");
        let two = Tensor::randn([2, 16, 2, 4, 4], (Kind::Float, Device::Cpu));
        assert_eq!(input_copies(&two, &t, &[]), 1, "latents differ");
        let camera = Tensor::randn([2, 24, 2, 16, 16], (Kind::Float, Device::Cpu));
        assert_eq!(
            input_copies(&pair, &t, &[Some(&camera), None]),
            1,
            "the camera embeddings differ"
        );
        let per_frame = Tensor::from_slice(&[0.0f32, 500.0, 0.0, 500.0]).view([2, 2]);
        assert_eq!(
            input_copies(&pair, &per_frame, &[]),
            2,
            "Wan 2.2's per-frame timesteps"
        );
    }
}
