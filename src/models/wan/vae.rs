//! The Wan VAEs: 2.1 (`comfy/ldm/wan/vae.py`: 8× spatial, 4× temporal with the first frame
//! alone, 16 latent channels) and 2.2 (`vae2_2.py`: 2×2 pixel patches in, residual groups with
//! parameter-free shortcuts, 16× spatial, 48 channels). The layer lists are read from the
//! file's keys, so widths and depth follow the checkpoint. Video streams through in chunks of
//! frames (`vae_blocks::Stream`).

use anyhow::{bail, Result};
use tch::Tensor;

use super::vae_blocks::{
    AttentionBlock, AvgDown3d, CausalConv3d, DupUp3d, Resample, ResampleMode, ResidualBlock,
    RmsNorm, Stream,
};
use crate::models::layers::{patchify_video, unpatchify_video};
use crate::models::weights::Weights;

enum Layer {
    Residual(ResidualBlock),
    Attention(AttentionBlock),
    Resample(Resample),
    Group(Group),
}

impl Layer {
    fn forward(&self, x: &Tensor, stream: &mut Stream) -> Tensor {
        match self {
            Layer::Residual(r) => r.forward(x, stream),
            Layer::Attention(a) => a.forward(x),
            Layer::Resample(r) => r.forward(x, stream),
            Layer::Group(g) => g.forward(x, stream),
        }
    }
}

/// Wan 2.2's `Down_ResidualBlock` / `Up_ResidualBlock`: residual blocks and a resample, around
/// which the input takes a parameter-free shortcut.
struct Group {
    layers: Vec<Layer>,
    shortcut: Option<Shortcut>,
}

enum Shortcut {
    Down(AvgDown3d),
    Up(DupUp3d),
}

impl Group {
    fn load(w: &Weights, name: &str, up: bool) -> Result<Self> {
        let inner = if up { "upsamples" } else { "downsamples" };
        let layers = load_layers(w, &format!("{name}.{inner}"), up)?;
        let in_dim = w
            .file
            .entry(&w.key(&format!("{name}.{inner}.0.residual.0.gamma")));
        let in_dim = in_dim.map(|e| e.shape[0] as i64).unwrap_or_default();
        let resample = layers.iter().find_map(|l| match l {
            Layer::Resample(r) => Some(r.mode()),
            _ => None,
        });
        let out = layers
            .iter()
            .rev()
            .find_map(|l| match l {
                Layer::Residual(r) => Some(r.out_channels()),
                _ => None,
            })
            .unwrap_or(in_dim);
        let temporal = matches!(
            resample,
            Some(ResampleMode::Downsample3d | ResampleMode::Upsample3d)
        );
        let (factor_t, factor_s) = (
            if temporal { 2 } else { 1 },
            if resample.is_some() { 2 } else { 1 },
        );
        let shortcut = match (up, resample) {
            (false, _) => Some(Shortcut::Down(AvgDown3d {
                out,
                factor_t,
                factor_s,
            })),
            (true, Some(_)) => Some(Shortcut::Up(DupUp3d {
                out,
                factor_t,
                factor_s,
            })),
            (true, None) => None,
        };
        Ok(Self { layers, shortcut })
    }

    fn forward(&self, x: &Tensor, stream: &mut Stream) -> Tensor {
        let mut main = x.shallow_clone();
        for layer in &self.layers {
            main = layer.forward(&main, stream);
        }
        match &self.shortcut {
            Some(Shortcut::Down(s)) => main + s.forward(x, stream),
            Some(Shortcut::Up(s)) => main + s.forward(x, stream),
            None => main,
        }
    }
}

/// The numbered layers under `name` (`encoder.downsamples`, `decoder.upsamples`, `*.middle`),
/// each told by its keys; `up` picks upsampling for the resample layers.
fn load_layers(w: &Weights, name: &str, up: bool) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    for i in 0.. {
        let n = format!("{name}.{i}");
        let group = if up { "upsamples" } else { "downsamples" };
        let layer = if w.has(&format!("{n}.{group}.0.residual.0.gamma")) {
            Layer::Group(Group::load(w, &n, up)?)
        } else if w.has(&format!("{n}.residual.0.gamma")) {
            Layer::Residual(ResidualBlock::load(w, &n)?)
        } else if w.has(&format!("{n}.to_qkv.weight")) {
            Layer::Attention(AttentionBlock::load(w, &n)?)
        } else if w.has(&format!("{n}.resample.1.weight")) {
            let temporal = w.has(&format!("{n}.time_conv.weight"));
            let mode = match (up, temporal) {
                (true, true) => ResampleMode::Upsample3d,
                (true, false) => ResampleMode::Upsample2d,
                (false, true) => ResampleMode::Downsample3d,
                (false, false) => ResampleMode::Downsample2d,
            };
            Layer::Resample(Resample::load(w, &n, mode)?)
        } else {
            break;
        };
        layers.push(layer);
    }
    if layers.is_empty() {
        bail!("Wan VAE has no layers under {name}");
    }
    Ok(layers)
}

/// conv in → layers → RMS norm, SiLU, conv out; one side of the VAE.
struct Coder {
    conv_in: CausalConv3d,
    layers: Vec<Layer>,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Coder {
    fn load(w: &Weights, side: &str) -> Result<Self> {
        let blocks = if side == "encoder" {
            "downsamples"
        } else {
            "upsamples"
        };
        let mut layers = Vec::new();
        let middle = load_layers(w, &format!("{side}.middle"), false)?;
        let sampling = load_layers(w, &format!("{side}.{blocks}"), side == "decoder")?;
        // The encoder downsamples before its middle blocks; the decoder upsamples after.
        if side == "encoder" {
            layers.extend(sampling);
            layers.extend(middle);
        } else {
            layers.extend(middle);
            layers.extend(sampling);
        }
        Ok(Self {
            conv_in: CausalConv3d::load(w, &format!("{side}.conv1"))?,
            layers,
            norm_out: RmsNorm::load(w, &format!("{side}.head.0"))?,
            conv_out: CausalConv3d::load(w, &format!("{side}.head.2"))?,
        })
    }

    /// One chunk through; `None` when a temporal downsampling holds every frame back.
    fn forward(&self, x: &Tensor, stream: &mut Stream) -> Option<Tensor> {
        stream.begin();
        let mut x = self.conv_in.forward_stream(x, stream);
        for layer in &self.layers {
            x = layer.forward(&x, stream);
            if x.size()[2] == 0 {
                return None;
            }
        }
        let x = self.norm_out.forward_silu(&x);
        Some(self.conv_out.forward_stream(&x, stream))
    }
}

pub struct WanVae {
    encoder: Coder,
    decoder: Coder,
    /// `conv1`: encoder output → (mean, log-variance); `conv2`: latent → decoder input.
    quant: CausalConv3d,
    post_quant: CausalConv3d,
    pub z_dim: i64,
    /// Pixels per side of the patches folded into channels before encoding (2.2: 2; 2.1: 1).
    patch: i64,
}

/// Video frames per encoder chunk after the first frame (Wan's reference chunking).
const ENCODE_CHUNK: i64 = 4;
/// Latent frames per decoder chunk after the first (ComfyUI's chunking).
const DECODE_CHUNK: i64 = 2;

impl WanVae {
    pub fn load(w: &Weights) -> Result<Self> {
        let post_quant = CausalConv3d::load(w, "conv2")?;
        let in_channels = w
            .file
            .entry(&w.key("encoder.conv1.weight"))
            .map_or(3, |e| e.shape[1] as i64);
        Ok(Self {
            patch: ((in_channels / 3) as f64).sqrt().round() as i64,
            encoder: Coder::load(w, "encoder")?,
            decoder: Coder::load(w, "decoder")?,
            quant: CausalConv3d::load(w, "conv1")?,
            z_dim: post_quant.out_channels(),
            post_quant,
        })
    }

    /// Pixels per latent cell along each spatial side.
    pub fn spatial_ratio(&self) -> i64 {
        8 * self.patch
    }

    /// `[B, 3, T, H, W]` in −1..1 → latent means `[B, z, 1 + (T−1)/4, H/r, W/r]`; frames past
    /// the last 4k+1 are dropped, as in ComfyUI.
    pub fn encode(&self, video: &Tensor) -> Tensor {
        let t = video.size()[2];
        let t = 1 + ((t - 1) / 4) * 4;
        let video = patchify_video(&video.narrow(2, 0, t), self.patch);
        let mut stream = Stream::default();
        let mut outs = Vec::new();
        for (from, len) in chunks(t, ENCODE_CHUNK) {
            if let Some(out) = self
                .encoder
                .forward(&video.narrow(2, from, len), &mut stream)
            {
                outs.push(out);
            }
        }
        let moments = self.quant.forward(&Tensor::cat(&outs, 2));
        moments.narrow(1, 0, self.z_dim)
    }

    /// Latent `[B, z, T, h, w]` → video `[B, 3, 1 + 4(T−1), h·r, w·r]` in about −1..1.
    pub fn decode(&self, latent: &Tensor) -> Tensor {
        let x = self.post_quant.forward(latent);
        let mut stream = Stream::default();
        let outs: Vec<Tensor> = chunks(x.size()[2], DECODE_CHUNK)
            .into_iter()
            .filter_map(|(from, len)| self.decoder.forward(&x.narrow(2, from, len), &mut stream))
            .collect();
        unpatchify_video(&Tensor::cat(&outs, 2), self.patch)
    }
}

/// `(start, length)` of the first frame alone, then runs of `size`.
fn chunks(total: i64, size: i64) -> Vec<(i64, i64)> {
    let mut out = vec![(0, total.min(1))];
    let mut at = 1;
    while at < total {
        let len = size.min(total - at);
        out.push((at, len));
        at += len;
    }
    out
}
