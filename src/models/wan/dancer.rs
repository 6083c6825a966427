//! What Wan Dancer (`WanDancerModel` in `comfy/ldm/wan/model_wandancer.py`) adds to the I2V
//! DiT: a music encoder (a projection of the 35 music features, two pre-norm transformer
//! layers with 1-D rotations) stretched to 8 tokens per latent frame and injected after chosen
//! blocks; a second CLIP-vision projection for the reference image; and, for videos whose
//! frames stand for another rate than 30 fps (the "global" pass over a whole song), its own
//! patch embedding and head, and time positions spread by `30 / fps`.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::dit::layer_norm;
use crate::models::rope::{apply_rope, rope_axis};
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::linear::{Linear, LinearWeight};

/// ComfyUI's `audio_inject_layers`: the blocks after which the music is injected, in order.
const INJECT_AFTER: [i64; 8] = [0, 4, 8, 12, 16, 20, 24, 27];
/// Music tokens per latent frame after the interpolation.
const TOKENS_PER_FRAME: i64 = 8;
const MUSIC_HEADS: i64 = 4;
/// The frame rate the DiT's own patch embedding, head and time positions are for.
pub const NATIVE_FPS: f64 = 30.0;

/// Whether a video at `fps` takes the global patch embedding, head and time positions
/// (ComfyUI compares the rounded rate).
pub fn is_global(fps: f64) -> bool {
    (fps + 0.5) as i64 != NATIVE_FPS as i64
}

/// The time positions of `frames` latent frames at `fps` from `start`: `30 / fps` apart, the
/// last one at the video's length in 30 fps frames minus one; in `dtype` like ComfyUI's.
pub fn global_time_positions(frames: i64, fps: f64, start: f64, dtype: Kind) -> Tensor {
    let scale = NATIVE_FPS / fps;
    let positions = Tensor::arange(frames, (dtype, Device::Cpu)) * scale + start;
    let last = start + ((scale * frames as f64 + 0.5) as i64 - 1) as f64;
    let _ = positions.get(frames - 1).fill_(last);
    positions
}

/// One `MusicEncoderLayer`: self-attention with rotated queries and keys, then a GELU MLP,
/// each after a LayerNorm and added back.
struct MusicLayer {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm1: (Tensor, Tensor),
    norm2: (Tensor, Tensor),
    linear1: Linear,
    linear2: Linear,
}

/// Dense Linear layers from rows `[start, start + rows)` of a stacked weight and bias.
fn rows_of(weight: &Tensor, bias: &Tensor, start: i64, rows: i64) -> Linear {
    Linear::new(
        LinearWeight::Dense(weight.narrow(0, start, rows).contiguous()),
        Some(bias.narrow(0, start, rows).contiguous()),
    )
}

impl MusicLayer {
    fn load(w: &Weights, p: &str, dim: i64) -> Result<Self> {
        let attn = format!("{p}.self_attn");
        // The original files keep PyTorch MultiheadAttention's stacked `in_proj`, which
        // ComfyUI splits into q, k and v on load.
        let [q, k, v] = if w.has(&format!("{attn}.in_proj_weight")) {
            let weight = w.tensor(&format!("{attn}.in_proj_weight"))?;
            let bias = w.tensor(&format!("{attn}.in_proj_bias"))?;
            [0, 1, 2].map(|i| rows_of(&weight, &bias, i * dim, dim))
        } else {
            [
                w.linear(&format!("{attn}.q_proj"), (dim, dim))?,
                w.linear(&format!("{attn}.k_proj"), (dim, dim))?,
                w.linear(&format!("{attn}.v_proj"), (dim, dim))?,
            ]
        };
        let norm = |n: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                w.tensor(&format!("{p}.{n}.weight"))?,
                w.tensor(&format!("{p}.{n}.bias"))?,
            ))
        };
        let ffn = w
            .file
            .entry(&w.key(&format!("{p}.linear1.weight")))
            .map_or(1024, |e| e.shape[0] as i64);
        Ok(Self {
            q,
            k,
            v,
            out: w.linear(&format!("{attn}.out_proj"), (dim, dim))?,
            norm1: norm("norm1")?,
            norm2: norm("norm2")?,
            linear1: w.linear(&format!("{p}.linear1"), (ffn, dim))?,
            linear2: w.linear(&format!("{p}.linear2"), (dim, ffn))?,
        })
    }

    fn forward(&self, x: &Tensor, freqs: &Tensor) -> Result<Tensor> {
        let (b, s, dim) = x.size3()?;
        let heads_view = |t: Tensor| t.view([b, s, MUSIC_HEADS, dim / MUSIC_HEADS]);
        let h = layer_norm(x, Some((&self.norm1.0, &self.norm1.1)), 1e-5);
        let q = apply_rope(&heads_view(self.q.forward(&h)?), freqs).view([b, s, dim]);
        let k = apply_rope(&heads_view(self.k.forward(&h)?), freqs).view([b, s, dim]);
        let v = self.v.forward(&h)?;
        let x = x + self
            .out
            .forward(&attention(&q, &k, &v, MUSIC_HEADS, None))?;
        let h = layer_norm(&x, Some((&self.norm2.0, &self.norm2.1)), 1e-5);
        let h = self
            .linear2
            .forward(&self.linear1.forward(&h)?.gelu("none"))?;
        Ok(x + h)
    }
}

/// One music injector (`WanT2VCrossAttention`): each run of video tokens attends to its one
/// music token, so the softmax is 1 and the output is that token's value projection; its
/// query, key and norms never change the result and are not read.
struct Injector {
    after_block: i64,
    v: Linear,
    o: Linear,
}

/// The Wan Dancer parts of a Wan model.
pub(super) struct Dancer {
    pub global_patch: (Tensor, Tensor),
    pub global_head: Linear,
    pub global_head_modulation: Tensor,
    projection: Linear,
    encoder: Vec<MusicLayer>,
    injectors: Vec<Injector>,
}

impl Dancer {
    pub(super) fn load(w: &Weights, dim: i64, head_out: i64) -> Result<Self> {
        let (music_dim, features) = w
            .file
            .entry(&w.key("music_projection.weight"))
            .map_or((256, 35), |e| (e.shape[0] as i64, e.shape[1] as i64));
        let mut injectors = Vec::new();
        while w.has(&format!(
            "music_injector.injector.{}.v.weight",
            injectors.len()
        )) {
            let i = injectors.len();
            let Some(&after_block) = INJECT_AFTER.get(i) else {
                bail!("more music injectors than ComfyUI's {}", INJECT_AFTER.len());
            };
            let p = format!("music_injector.injector.{i}");
            injectors.push(Injector {
                after_block,
                v: w.linear(&format!("{p}.v"), (dim, dim))?,
                o: w.linear(&format!("{p}.o"), (dim, dim))?,
            });
        }
        Ok(Self {
            global_patch: (
                w.tensor_as("patch_embedding_global.weight", Kind::Float)?,
                w.tensor_as("patch_embedding_global.bias", Kind::Float)?,
            ),
            global_head: w.linear("head_global.head", (head_out, dim))?,
            global_head_modulation: w.tensor("head_global.modulation")?,
            projection: w.linear("music_projection", (music_dim, features))?,
            encoder: (0..2)
                .map(|i| MusicLayer::load(w, &format!("music_encoder.{i}"), music_dim))
                .collect::<Result<_>>()?,
            injectors,
        })
    }

    /// The music features `[b, feature frames, 35]` as `[b, 8·frames, dim]` tokens for a
    /// video of `frames` latent frames: encoded, then stretched bilinearly over time and
    /// width.
    pub(super) fn music_tokens(&self, features: &Tensor, frames: i64, dim: i64) -> Result<Tensor> {
        let x = self.projection.forward(features)?;
        let (_, len, width) = x.size3()?;
        let positions = Tensor::arange(len, (x.kind(), Device::Cpu));
        let freqs = rope_axis(&positions, width / MUSIC_HEADS, 10000.0)
            .view([1, len, 1, -1])
            .to_device(x.device());
        let x = self
            .encoder
            .iter()
            .try_fold(x, |x, layer| layer.forward(&x, &freqs))?;
        let size = [frames * TOKENS_PER_FRAME, dim];
        Ok(x.unsqueeze(1)
            .upsample_bilinear2d(size, false, None, None)
            .squeeze_dim(1))
    }

    /// `AudioInjector_WAN` after block `block`: the first `video_tokens` tokens of `x`, in runs
    /// of one per music token, each get its token's projected value times `scale`.
    pub(super) fn inject(
        &self,
        block: i64,
        x: Tensor,
        music: &Tensor,
        video_tokens: i64,
        scale: f64,
    ) -> Result<Tensor> {
        let Some(injector) = self.injectors.iter().find(|i| i.after_block == block) else {
            return Ok(x);
        };
        let (b, tokens, dim) = x.size3()?;
        let runs = music.size()[1];
        if video_tokens % runs != 0 {
            bail!("{video_tokens} video tokens do not split into {runs} runs, one per music token");
        }
        let value = injector.o.forward(&injector.v.forward(music)?)? * scale;
        let added = value
            .unsqueeze(2)
            .expand([b, runs, video_tokens / runs, dim], false)
            .reshape([b, video_tokens, dim]);
        let video = x.narrow(1, 0, video_tokens) + added.to_kind(x.kind());
        let rest = x.narrow(1, video_tokens, tokens - video_tokens);
        Ok(Tensor::cat(&[video, rest], 1))
    }
}

/// What a Wan Dancer forward takes besides the I2V inputs.
#[derive(Default)]
pub struct DancerInputs<'a> {
    /// The music features `[b, feature frames, 35]`.
    pub music: Option<&'a Tensor>,
    /// The reference image's CLIP-vision hidden states `[b, 257, 1280]`.
    pub clip_reference: Option<&'a Tensor>,
    /// The rate the video's frames stand for (30 when absent).
    pub fps: Option<f64>,
    /// The music injection's scale (1 when absent).
    pub scale: Option<f64>,
}
