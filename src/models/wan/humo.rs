//! What HuMo (`HumoWanModel` in `comfy/ldm/wan/model.py`) adds to the Wan DiT: Whisper
//! features of each latent frame's audio window projected into 16 audio tokens per frame, an
//! audio cross-attention in every block after the cross-attention (each latent frame's tokens to
//! its frame's audio tokens), and the reference image's latent appended as frames after the
//! video, rotated as if they followed it in time.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::dit::{layer_norm, EPS};
use crate::models::weights::Weights;
use crate::runtime::attention::attention;
use crate::runtime::fused;
use crate::runtime::linear::Linear;
use crate::runtime::manager::Movable;

/// Audio tokens per latent frame (`audio_token_num`).
const TOKENS: i64 = 16;
/// `AudioProjModel`'s LayerNorm keeps torch's default epsilon.
const PROJ_EPS: f64 = 1e-5;

/// What a HuMo forward takes besides the latent and text (each batched, normalized).
#[derive(Default)]
pub struct HumoInputs<'a> {
    /// Whisper features per latent frame, `[b, frames, 8, 5, 1280]`.
    pub audio: Option<&'a Tensor>,
    /// The reference latent in the model's input channels, `[b, in_dim, frames, h, w]`.
    pub reference: Option<&'a Tensor>,
}

/// `AudioProjModel`: a frame's window of features to its audio tokens.
pub struct AudioProjection {
    first: Linear,
    second: Linear,
    third: Linear,
    norm: (Tensor, Tensor),
}

impl AudioProjection {
    pub fn load(w: &Weights) -> Result<Self> {
        let layer = |n: &str| format!("audio_proj.audio_proj_glob_{n}.layer");
        let shape = |name: &str| -> Result<(i64, i64)> {
            let entry = w.file.entry(&w.key(&format!("{name}.weight")));
            match entry.map(|e| e.shape.clone()).as_deref() {
                Some([out, inp]) => Ok((*out as i64, *inp as i64)),
                _ => bail!("HuMo's {name} is missing"),
            }
        };
        let linear = |n: &str| -> Result<Linear> { w.linear(&layer(n), shape(&layer(n))?) };
        Ok(Self {
            first: linear("1")?,
            second: linear("2")?,
            third: linear("3")?,
            norm: (
                w.tensor(&format!("{}.weight", layer("norm")))?,
                w.tensor(&format!("{}.bias", layer("norm")))?,
            ),
        })
    }

    /// `[b, frames, window, layers, width]` → `[b, frames · 16, audio_dim]`, frame by frame.
    pub fn forward(&self, audio: &Tensor) -> Result<Tensor> {
        let s = audio.size();
        let (b, frames) = (s[0], s[1]);
        let x = audio.reshape([b * frames, -1]);
        let x = self.first.forward(&x)?.relu();
        let x = self.second.forward(&x)?.relu();
        let tokens = self.third.forward(&x)?.view([b * frames, TOKENS, -1]);
        let tokens = layer_norm(&tokens, Some((&self.norm.0, &self.norm.1)), PROJ_EPS);
        Ok(tokens.reshape([b, frames * TOKENS, -1]))
    }
}

/// One block's `audio_cross_attn_wrapper`: a LayerNorm and `WanT2VCrossAttentionGather`.
pub struct HumoBlock {
    norm: (Tensor, Tensor),
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
}

impl HumoBlock {
    /// The block's audio layers, if the file has them (HuMo models).
    pub fn load(w: &Weights, p: &str, dim: i64) -> Result<Option<Self>> {
        let p = format!("{p}.audio_cross_attn_wrapper");
        if !w.has(&format!("{p}.norm1_audio.weight")) {
            return Ok(None);
        }
        let a = format!("{p}.audio_cross_attn");
        let audio_dim = w
            .file
            .entry(&w.key(&format!("{a}.k.weight")))
            .map_or(1536, |e| e.shape[1] as i64);
        Ok(Some(Self {
            norm: (
                w.tensor(&format!("{p}.norm1_audio.weight"))?,
                w.tensor(&format!("{p}.norm1_audio.bias"))?,
            ),
            q: w.linear(&format!("{a}.q"), (dim, dim))?,
            k: w.linear(&format!("{a}.k"), (dim, audio_dim))?,
            v: w.linear(&format!("{a}.v"), (dim, audio_dim))?,
            o: w.linear(&format!("{a}.o"), (dim, dim))?,
            norm_q: w.tensor(&format!("{a}.norm_q.weight"))?,
            norm_k: w.tensor(&format!("{a}.norm_k.weight"))?,
        }))
    }

    /// The audio cross-attention's output for the stream `x` `[b, tokens, dim]` (all its
    /// frames, the reference's included) and the audio tokens `[b, frames · 16, audio_dim]`.
    pub fn forward(&self, x: &Tensor, audio: &Tensor, heads: i64) -> Result<Tensor> {
        let (b, tokens, dim) = x.size3()?;
        let frames = audio.size()[1] / TOKENS;
        if frames == 0 || tokens % frames != 0 {
            bail!(
                "HuMo's audio covers {frames} latent frames, which do not divide {tokens} tokens"
            );
        }
        let normed = layer_norm(x, Some((&self.norm.0, &self.norm.1)), EPS);
        let q = fused::rms_norm(&self.q.forward(&normed)?, &self.norm_q, EPS)?;
        let audio = audio.to_kind(x.kind());
        let k = fused::rms_norm(&self.k.forward(&audio)?, &self.norm_k, EPS)?;
        let v = self.v.forward(&audio)?;
        let per_frame = |t: &Tensor, n: i64| t.reshape([b * frames, n, dim]);
        let out = attention(
            &per_frame(&q, tokens / frames),
            &per_frame(&k, TOKENS),
            &per_frame(&v, TOKENS),
            heads,
            None,
        );
        self.o.forward(&out.reshape([b, tokens, dim]))
    }
}

impl Movable for HumoBlock {
    fn moved(&self, device: tch::Device) -> Self {
        Self {
            norm: self.norm.moved(device),
            q: self.q.moved(device),
            k: self.k.moved(device),
            v: self.v.moved(device),
            o: self.o.moved(device),
            norm_q: self.norm_q.moved(device),
            norm_k: self.norm_k.moved(device),
        }
    }

    fn bytes(&self) -> u64 {
        self.norm.bytes()
            + [&self.q, &self.k, &self.v, &self.o]
                .iter()
                .map(|l| l.bytes())
                .sum::<u64>()
            + self.norm_q.bytes()
            + self.norm_k.bytes()
    }
}

/// The audio features with zero frames for the reference's, as `forward_orig` pads them.
pub fn padded_audio(audio: &Tensor, reference_frames: i64) -> Tensor {
    if reference_frames == 0 {
        return audio.shallow_clone();
    }
    let mut shape = audio.size();
    shape[1] = reference_frames;
    let zeros = Tensor::zeros(shape.as_slice(), (audio.kind(), audio.device()));
    Tensor::cat(&[audio, &zeros], 1)
}

/// `WAN21_HuMo`'s concat channels for the 17B model (36 inputs): a zero mask, then what the
/// Wan VAE gives for black frames, frame by frame (`zero_vae_values*`), `[b, 20, t, h, w]`.
pub fn concat_latent(b: i64, t: i64, h: i64, w: i64, device: tch::Device) -> Tensor {
    const FIRST: [f32; 16] = [
        0.8660, -0.4326, -0.0017, -0.4884, -0.5283, 0.9207, -0.9896, 0.4433, -0.5543, -0.0113,
        0.5753, -0.6000, -0.8346, -0.3497, -0.1926, -0.6938,
    ];
    const SECOND: [f32; 16] = [
        1.0869, -1.2370, 0.0206, -0.4357, -0.6411, 2.0307, -1.5972, 1.2659, -0.8595, -0.4654,
        0.9638, -1.6330, -1.4310, -0.1098, -0.3856, -1.4583,
    ];
    const REST: [f32; 16] = [
        0.8642, -1.8583, 0.1577, 0.1350, -0.3641, 2.5863, -1.9670, 1.6065, -1.0475, -0.8678,
        1.1734, -1.8138, -1.5933, -0.7721, -0.3289, -1.3745,
    ];
    let column = |values: &[f32; 16], frames: i64| {
        Tensor::from_slice(values)
            .view([1, 16, 1, 1, 1])
            .expand([b, 16, frames, h, w], false)
    };
    let mut frames = vec![column(&FIRST, 1.min(t))];
    if t > 1 {
        frames.push(column(&SECOND, 1));
    }
    if t > 2 {
        frames.push(column(&REST, t - 2));
    }
    let values = Tensor::cat(&frames, 2).narrow(2, 0, t);
    let mask = Tensor::zeros([b, 4, t, h, w], (Kind::Float, tch::Device::Cpu));
    Tensor::cat(&[mask, values], 1).to_device(device)
}

/// `WAN21_HuMo`'s reference latent for the 17B model: the normalized reference latent behind
/// zeros for the noise and ones for the mask, `[b, 36, frames, h, w]`.
pub fn full_reference(reference: &Tensor) -> Tensor {
    let zeros = reference.zeros_like();
    let s = reference.size();
    let ones = Tensor::ones(
        [s[0], 4, s[2], s[3], s[4]],
        (reference.kind(), reference.device()),
    );
    Tensor::cat(&[&zeros, &ones, reference], 1)
}
