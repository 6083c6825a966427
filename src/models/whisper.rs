//! Whisper large-v3's encoder as ComfyUI's audio encoders run it
//! (`comfy/audio_encoders/whisper.py`, transformers' `WhisperEncoder` layout; HuMo reads its
//! layers): 30 s of 16 kHz audio (the channels' mean, cut or zero-padded) as a log-mel
//! spectrogram (torchaudio's `MelSpectrogram`: a 400-point Hann STFT every 160 samples, Slaney
//! mels up to 8 kHz), two GELU convolutions (the second halving the frames), learned positions
//! and pre-norm layers, whose every input is kept.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::wan::dit::layer_norm;
use super::weights::Weights;
use crate::media::mel;
use crate::runtime::attention::attention;
use crate::runtime::linear::Linear;

const SAMPLE_RATE: i64 = 16000;
const SAMPLES: i64 = 30 * SAMPLE_RATE;
const N_FFT: i64 = 400;
const HOP: i64 = 160;
const F_MAX: f64 = 8000.0;
const EPS: f64 = 1e-5;
/// Width of one attention head (large-v3: 1280 wide, 20 heads).
const HEAD_DIM: i64 = 64;

type Norm = (Tensor, Tensor);
type Conv = (Tensor, Tensor);

struct Layer {
    attn_norm: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ffn_norm: Norm,
    fc1: Linear,
    fc2: Linear,
}

pub struct Whisper {
    conv1: Conv,
    conv2: Conv,
    positions: Tensor,
    layers: Vec<Layer>,
    final_norm: Norm,
    /// Slaney mel filters `[N_FFT / 2 + 1, mels]`.
    mel_filters: Tensor,
}

/// The last state and every layer's input plus the last state, each `[B, 1500, width]`.
pub struct WhisperOutput {
    pub last: Tensor,
    pub all_layers: Vec<Tensor>,
}

fn norm(w: &Weights, name: &str) -> Result<Norm> {
    Ok((
        w.tensor(&format!("{name}.weight"))?,
        w.tensor(&format!("{name}.bias"))?,
    ))
}

fn ln(x: &Tensor, (w, b): &Norm) -> Tensor {
    layer_norm(x, Some((w, b)), EPS)
}

impl Layer {
    fn load(w: &Weights, p: &str, width: i64) -> Result<Self> {
        let linear = |n: &str, shape| w.linear(&format!("{p}.{n}"), shape);
        let square = (width, width);
        let inner = w
            .file
            .entry(&w.key(&format!("{p}.fc1.weight")))
            .map_or(width * 4, |e| e.shape[0] as i64);
        Ok(Self {
            attn_norm: norm(w, &format!("{p}.self_attn_layer_norm"))?,
            q: linear("self_attn.q_proj", square)?,
            k: linear("self_attn.k_proj", square)?,
            v: linear("self_attn.v_proj", square)?,
            out: linear("self_attn.out_proj", square)?,
            ffn_norm: norm(w, &format!("{p}.final_layer_norm"))?,
            fc1: linear("fc1", (inner, width))?,
            fc2: linear("fc2", (width, inner))?,
        })
    }

    fn forward(&self, x: &Tensor, heads: i64) -> Result<Tensor> {
        let h = ln(x, &self.attn_norm);
        let (q, k, v) = (
            self.q.forward(&h)?,
            self.k.forward(&h)?,
            self.v.forward(&h)?,
        );
        let x = x + self.out.forward(&attention(&q, &k, &v, heads, None))?;
        let h = self.fc1.forward(&ln(&x, &self.ffn_norm))?.gelu("none");
        Ok(&x + self.fc2.forward(&h)?)
    }
}

impl Whisper {
    /// The encoder under `encoder.` (or transformers' `model.encoder.`) of `w`'s prefix.
    pub fn load(w: &Weights) -> Result<Self> {
        let root = if w.has("model.encoder.conv1.weight") {
            "model.encoder"
        } else {
            "encoder"
        };
        let conv = |name: &str| -> Result<Conv> {
            Ok((
                w.tensor(&format!("{root}.{name}.weight"))?,
                w.tensor(&format!("{root}.{name}.bias"))?,
            ))
        };
        let conv1 = conv("conv1")?;
        let (width, mels) = (conv1.0.size()[0], conv1.0.size()[1]);
        let layers = (0..)
            .take_while(|n| w.has(&format!("{root}.layers.{n}.fc1.weight")))
            .map(|n| Layer::load(w, &format!("{root}.layers.{n}"), width))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv1,
            conv2: conv("conv2")?,
            positions: w.tensor(&format!("{root}.embed_positions.weight"))?,
            layers,
            final_norm: norm(w, &format!("{root}.layer_norm"))?,
            mel_filters: mel::slaney_filters(SAMPLE_RATE, N_FFT, F_MAX, mels).to_device(w.device),
        })
    }

    /// `WhisperFeatureExtractor`: `[B, channels, samples]` at 16 kHz → `[B, mels, 3000]`.
    pub fn log_mel(&self, audio: &Tensor) -> Tensor {
        let mono = audio.to_kind(Kind::Float).mean_dim(1, false, Kind::Float);
        let n = mono.size()[1];
        let mono = if n >= SAMPLES {
            mono.narrow(1, 0, SAMPLES)
        } else {
            mono.constant_pad_nd([0, SAMPLES - n])
        };
        let power = mel::stft_magnitude(&mono, N_FFT, HOP).square();
        let mel = mel::apply_filters(&power, &self.mel_filters);
        let frames = mel.size()[2];
        let log = mel.narrow(2, 0, frames - 1).clamp_min(1e-10).log10();
        // One floor for the whole batch, as ComfyUI takes the maximum over everything.
        let floor = log.max() - 8.0;
        (log.maximum(&floor) + 4.0) / 4.0
    }

    /// The encoder over `audio` `[B, channels, samples]` at 16 kHz, in the weights' dtype.
    pub fn forward(&self, audio: &Tensor) -> Result<WhisperOutput> {
        let dtype = self.positions.kind();
        let mel = self.log_mel(audio).to_kind(dtype);
        let (w1, b1) = &self.conv1;
        let (w2, b2) = &self.conv2;
        let x = mel.conv1d(w1, Some(b1), [1], [1], [1], 1).gelu("none");
        let x = x.conv1d(w2, Some(b2), [2], [1], [1], 1).gelu("none");
        let x = x.transpose(1, 2);
        let tokens = x.size()[1];
        let mut x = x + self.positions.narrow(0, 0, tokens);
        let heads = self.positions.size()[1] / HEAD_DIM;
        let mut all_layers = Vec::with_capacity(self.layers.len() + 1);
        for layer in &self.layers {
            all_layers.push(x.shallow_clone());
            x = layer.forward(&x, heads)?;
        }
        let last = ln(&x, &self.final_norm);
        all_layers.push(last.shallow_clone());
        Ok(WhisperOutput { last, all_layers })
    }
}
