//! The LTX video VAE (`VideoVAE` in ComfyUI's `causal_video_autoencoder.py`) in the layout of
//! LTX-Video 0.9.5 and LTX-2. Pixels are folded into 4×4 patches, a causal encoder compresses
//! 8× in time and 32× in space to 128 channels normalized by the file's per-channel
//! statistics; the decoder mirrors it, non-causal in time, optionally conditioned on a
//! timestep.

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use super::vae_blocks::{
    modulate, pixel_norm, CausalConv3d, DepthToSpace, ResGroup, SpaceToDepth, TimeEmbedder,
    PIXEL_NORM_EPS,
};
use super::vae_config::{Block, Padding, VaeConfig};
use crate::models::layers::{patchify_video, unpatchify_video};
use crate::models::weights::Weights;
use crate::sampling::noise::seeded_randn;

enum Layer {
    Res(ResGroup),
    Down(SpaceToDepth),
    Up(DepthToSpace),
}

impl Layer {
    /// The block at `name` (`encoder.down_blocks.N` / `decoder.up_blocks.N`).
    fn load(
        w: &Weights,
        name: &str,
        block: Block,
        padding: Padding,
        timestep: bool,
    ) -> Result<Self> {
        Ok(match block {
            Block::Res => Layer::Res(ResGroup::load(w, name, padding, timestep)?),
            Block::SpaceToDepth { stride } => {
                Layer::Down(SpaceToDepth::load(w, name, stride, padding)?)
            }
            Block::DepthToSpace { stride, residual } => {
                Layer::Up(DepthToSpace::load(w, name, stride, residual, padding)?)
            }
        })
    }

    fn forward(&self, x: &Tensor, causal: bool, timestep: Option<&Tensor>) -> Tensor {
        match self {
            Layer::Res(r) => r.forward(x, causal, timestep),
            Layer::Down(d) => d.forward(x),
            Layer::Up(u) => u.forward(x, causal),
        }
    }
}

fn load_layers(
    w: &Weights,
    side: &str,
    blocks: &[Block],
    padding: Padding,
    timestep: bool,
) -> Result<Vec<Layer>> {
    let name = if side == "encoder" {
        "down_blocks"
    } else {
        "up_blocks"
    };
    blocks
        .iter()
        .enumerate()
        .map(|(i, block)| Layer::load(w, &format!("{side}.{name}.{i}"), *block, padding, timestep))
        .collect()
}

/// The decoder's timestep conditioning: `last_time_embedder` and `last_scale_shift_table`
/// around the output norm, and the multiplier applied to the timestep first.
struct DecodeTimestep {
    multiplier: f64,
    embedder: TimeEmbedder,
    scale_shift: Tensor,
}

pub struct LtxVideoVae {
    encoder_in: CausalConv3d,
    encoder: Vec<Layer>,
    encoder_out: CausalConv3d,
    decoder_in: CausalConv3d,
    decoder: Vec<Layer>,
    decoder_out: CausalConv3d,
    timestep: Option<DecodeTimestep>,
    mean: Tensor,
    std: Tensor,
    pub config: VaeConfig,
    pub latent_channels: i64,
}

impl LtxVideoVae {
    pub fn load(w: &Weights, config: VaeConfig) -> Result<Self> {
        let conv = |name: &str, padding| CausalConv3d::load(w, name, padding);
        let (enc_pad, dec_pad) = (config.encoder_padding, config.decoder_padding);
        let conditioned = config.timestep_conditioning;
        let timestep = if conditioned {
            Some(DecodeTimestep {
                multiplier: w
                    .tensor_as("decoder.timestep_scale_multiplier", Kind::Double)
                    .context("the LTX VAE decoder's timestep multiplier")?
                    .double_value(&[]),
                embedder: TimeEmbedder::load(w, "decoder.last_time_embedder")?,
                scale_shift: w.tensor("decoder.last_scale_shift_table")?,
            })
        } else {
            None
        };
        let mean = w.tensor("per_channel_statistics.mean-of-means")?;
        Ok(Self {
            encoder_in: conv("encoder.conv_in", enc_pad)?,
            encoder: load_layers(w, "encoder", &config.encoder_blocks, enc_pad, false)?,
            encoder_out: conv("encoder.conv_out", enc_pad)?,
            decoder_in: conv("decoder.conv_in", dec_pad)?,
            decoder: load_layers(w, "decoder", &config.decoder_blocks, dec_pad, conditioned)?,
            decoder_out: conv("decoder.conv_out", dec_pad)?,
            timestep,
            latent_channels: mean.size()[0],
            std: w.tensor("per_channel_statistics.std-of-means")?,
            mean,
            config,
        })
    }

    fn stat(t: &Tensor) -> Tensor {
        t.view([1, -1, 1, 1, 1])
    }

    /// `[B, 3, T, H, W]` in −1..1 → normalized latent means `[B, 128, 1 + (T−1)/8, H/32, W/32]`;
    /// frames past the last 8k + 1 are dropped, as ComfyUI does.
    pub fn encode(&self, video: &Tensor) -> Tensor {
        let ratio = self.config.temporal_ratio();
        let frames = video.size()[2];
        let keep = (1 + (frames - 1) / ratio * ratio).max(1);
        let x = patchify_video(&video.narrow(2, 0, keep), self.config.patch_size);
        let mut x = self.encoder_in.forward(&x, true);
        for layer in &self.encoder {
            x = layer.forward(&x, true, None);
        }
        let moments = self
            .encoder_out
            .forward(&pixel_norm(&x, PIXEL_NORM_EPS).silu(), true);
        let means = moments.narrow(1, 0, self.latent_channels);
        (means - Self::stat(&self.mean)) / Self::stat(&self.std)
    }

    /// Normalized latent `[B, 128, T, h, w]` → video `[B, 3, 1 + 8(T−1), 32h, 32w]` in about
    /// −1..1. Timestep-conditioned decoders first mix `noise·s + latent·(1 − s)` in and are told
    /// the decode timestep, as ComfyUI does; ComfyUI draws that noise unseeded, we draw it from
    /// seed 0 so a decode repeats.
    pub fn decode(&self, latent: &Tensor) -> Tensor {
        let causal = self.config.causal_decoder;
        let latent = match &self.timestep {
            None => latent.shallow_clone(),
            Some(_) => {
                let s = self.config.decode_noise_scale;
                let noise = seeded_randn(0, &latent.size(), latent.kind(), latent.device());
                noise * s + latent * (1.0 - s)
            }
        };
        let x = latent * Self::stat(&self.std) + Self::stat(&self.mean);
        let mut x = self.decoder_in.forward(&x, causal);
        let timestep = self.timestep.as_ref().map(|t| {
            Tensor::from_slice(&[self.config.decode_timestep * t.multiplier])
                .to_kind(Kind::Float)
                .to_device(x.device())
        });
        for layer in &self.decoder {
            x = layer.forward(&x, causal, timestep.as_ref());
        }
        let mut x = pixel_norm(&x, PIXEL_NORM_EPS);
        if let (Some(t), Some(scaled)) = (&self.timestep, &timestep) {
            let c = t.scale_shift.size()[1];
            let embedded = t.embedder.forward(scaled, x.kind()).view([-1, 2, c]);
            let ada = (embedded + t.scale_shift.unsqueeze(0)).unbind(1);
            x = modulate(&x, &ada[0], &ada[1]);
        }
        let x = self.decoder_out.forward(&x.silu(), causal);
        unpatchify_video(&x, self.config.patch_size)
    }
}
