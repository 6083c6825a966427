//! LTX-2's audio VAE as LTXVAudioVAELoader reads it from an LTX-2 checkpoint
//! (`comfy/ldm/lightricks/vae/audio_vae.py`, `causal_audio_autoencoder.py`): the latent
//! `[b, 8, frames, 16]` un-normalized by per-channel statistics over (channel, bin) pairs, a
//! 2-D decoder causal along time (PixelNorm, residual blocks, ×2 nearest upsampling whose first
//! time row is dropped) to a stereo log-mel spectrogram of `4·frames − 3` frames and 64 bins,
//! and the vocoder to a waveform; the encoder takes the log-mel spectrogram of a waveform back to
//! a latent. It runs in float32, as ComfyUI's does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::vae_blocks::pixel_norm;
use super::vocoder::{Vocoder, VocoderConfig};
use crate::media::mel;
use crate::media::sinc_resample::resample;
use crate::models::loading::{load_component, LoadTarget, Precision};
use crate::models::weights::Weights;
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;
use crate::upscale::py_round;

/// Mel frames per latent frame, and mel bins per latent bin.
const DOWNSAMPLE: i64 = 4;
const PIXEL_NORM_EPS: f64 = 1e-6;
const AUDIO_PREFIX: &str = "audio_vae.";
const VOCODER_PREFIX: &str = "vocoder.";
/// The rate ComfyUI's VAE wrapper resamples audio to before any audio VAE encodes it.
const WRAPPER_SAMPLE_RATE: i64 = 44100;
/// The wrapper's crop: whole blocks of its downscale ratio, 4096 samples.
const ENCODE_BLOCK: i64 = 4096;

/// One half of the autoencoder (`encoder` or `decoder` of the config): its levels, blocks per
/// level and its audio side's channels (the encoder's input, the decoder's output); the widths
/// come from the weights.
#[derive(Clone, Debug, PartialEq)]
struct CoderConfig {
    ch_mult: Vec<i64>,
    num_res_blocks: i64,
    z_channels: i64,
    audio_channels: i64,
}

impl CoderConfig {
    /// LTX-2's layout (pixel norms, causal along time, no attention) or an error naming what
    /// differs.
    fn parse(section: &Value, audio_key: &str) -> Result<Self> {
        let int =
            |key: &str, default: i64| section.get(key).and_then(Value::as_i64).unwrap_or(default);
        let text = |key: &str, default: &'static str| {
            section
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        if text("norm_type", "group") != "pixel" {
            bail!("audio VAEs with group norms are not supported yet (LTX-2's pixel norm is)");
        }
        if text("causality_axis", "width") != "height" {
            bail!("audio VAEs causal along another axis than time are not supported yet");
        }
        let attention = section
            .get("attn_resolutions")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
            || section
                .get("mid_block_add_attention")
                .and_then(Value::as_bool)
                .unwrap_or(true);
        if attention {
            bail!("audio VAEs with attention blocks are not supported yet");
        }
        Ok(Self {
            ch_mult: section
                .get("ch_mult")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_else(|| vec![1, 2, 4, 8]),
            num_res_blocks: int("num_res_blocks", 2),
            z_channels: int("z_channels", 8),
            audio_channels: int(audio_key, 2),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AudioVaeConfig {
    encoder: CoderConfig,
    decoder: CoderConfig,
    pub z_channels: i64,
    pub mel_bins: i64,
    pub sample_rate: i64,
    pub hop_length: i64,
    n_fft: i64,
    vocoder: VocoderConfig,
}

impl AudioVaeConfig {
    /// From the checkpoint's `config` metadata: `audio_vae` (its `encoder` and `decoder`, either
    /// falling back as `CausalAudioAutoencoder` does: to `ddconfig`, the decoder to the
    /// encoder's) and `vocoder`.
    fn from_metadata(config: &Value) -> Result<Self> {
        let audio = config
            .get("audio_vae")
            .context("the config has no audio_vae section")?;
        let vocoder = config
            .get("vocoder")
            .context("the config has no vocoder section")?;
        let params = &audio["model"]["params"];
        let encoder = params
            .get("encoder")
            .or_else(|| params.get("ddconfig"))
            .context("the audio VAE config has no encoder")?;
        let decoder = params.get("decoder").unwrap_or(encoder);
        let stft = &audio["preprocessing"]["stft"];
        let stft_int =
            |key: &str, default: i64| stft.get(key).and_then(Value::as_i64).unwrap_or(default);
        let decoder_config = CoderConfig::parse(decoder, "out_ch")?;
        Ok(Self {
            encoder: CoderConfig::parse(encoder, "in_channels")?,
            z_channels: decoder_config.z_channels,
            decoder: decoder_config,
            mel_bins: encoder
                .get("mel_bins")
                .and_then(Value::as_i64)
                .unwrap_or(64),
            sample_rate: params
                .get("sampling_rate")
                .or_else(|| audio.get("sampling_rate"))
                .and_then(Value::as_i64)
                .unwrap_or(16000),
            hop_length: stft_int("hop_length", 160),
            n_fft: stft_int("filter_length", 1024),
            vocoder: VocoderConfig::from_metadata(vocoder)?,
        })
    }
}

/// A convolution padded causally along time (rows: all `k − 1` above) and evenly across bins.
struct CausalConv {
    weight: Tensor,
    bias: Tensor,
}

impl CausalConv {
    fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{name}.conv.weight"))?,
            bias: w.tensor(&format!("{name}.conv.bias"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (kh, kw) = (self.weight.size()[2], self.weight.size()[3]);
        let pad_w = kw - 1;
        let padded = x.constant_pad_nd([pad_w / 2, pad_w - pad_w / 2, kh - 1, 0]);
        padded.conv2d(&self.weight, Some(&self.bias), [1, 1], [0, 0], [1, 1], 1)
    }
}

struct ResBlock {
    conv1: CausalConv,
    conv2: CausalConv,
    shortcut: Option<CausalConv>,
}

impl ResBlock {
    fn load(w: &Weights, name: &str) -> Result<Self> {
        let shortcut = format!("{name}.nin_shortcut");
        Ok(Self {
            conv1: CausalConv::load(w, &format!("{name}.conv1"))?,
            conv2: CausalConv::load(w, &format!("{name}.conv2"))?,
            shortcut: if w.has(&format!("{shortcut}.conv.weight")) {
                Some(CausalConv::load(w, &shortcut)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.conv1.forward(&pixel_norm(x, PIXEL_NORM_EPS).silu());
        let h = self.conv2.forward(&pixel_norm(&h, PIXEL_NORM_EPS).silu());
        match &self.shortcut {
            Some(s) => s.forward(x) + h,
            None => x + h,
        }
    }
}

struct Level {
    blocks: Vec<ResBlock>,
    upsample: Option<CausalConv>,
}

struct Decoder {
    conv_in: CausalConv,
    mid: [ResBlock; 2],
    /// By level, the lowest resolution last (run in reverse).
    levels: Vec<Level>,
    conv_out: CausalConv,
}

impl Decoder {
    fn load(w: &Weights, c: &AudioVaeConfig) -> Result<Self> {
        let levels = (0..c.decoder.ch_mult.len())
            .map(|i| {
                let blocks = (0..=c.decoder.num_res_blocks)
                    .map(|j| ResBlock::load(w, &format!("decoder.up.{i}.block.{j}")))
                    .collect::<Result<_>>()?;
                let upsample = if i == 0 {
                    None
                } else {
                    Some(CausalConv::load(
                        w,
                        &format!("decoder.up.{i}.upsample.conv"),
                    )?)
                };
                Ok(Level { blocks, upsample })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            conv_in: CausalConv::load(w, "decoder.conv_in")?,
            mid: [
                ResBlock::load(w, "decoder.mid.block_1")?,
                ResBlock::load(w, "decoder.mid.block_2")?,
            ],
            levels,
            conv_out: CausalConv::load(w, "decoder.conv_out")?,
        })
    }

    /// The spectrogram of an un-normalized latent `[b, z, frames, bins]`, cut or zero-padded to
    /// `[b, out_ch, 4·frames − 3, mel_bins]`.
    fn forward(&self, z: &Tensor, c: &AudioVaeConfig) -> Tensor {
        let frames = z.size()[2];
        let mut h = self.conv_in.forward(z);
        for block in &self.mid {
            h = block.forward(&h);
        }
        for level in self.levels.iter().rev() {
            for block in &level.blocks {
                h = block.forward(&h);
            }
            if let Some(conv) = &level.upsample {
                let (rows, cols) = (h.size()[2], h.size()[3]);
                let up = h.upsample_nearest2d([rows * 2, cols * 2], None, None);
                // The causal convolution's first row only saw padding: dropped, 2n − 1 rows.
                h = conv.forward(&up).narrow(2, 1, rows * 2 - 1);
            }
        }
        let out = self
            .conv_out
            .forward(&pixel_norm(&h, PIXEL_NORM_EPS).silu());
        let target = ((frames * DOWNSAMPLE) - (DOWNSAMPLE - 1)).max(1);
        let out = out.narrow(1, 0, c.decoder.audio_channels);
        let fit = |x: Tensor, dim: i64, want: i64| {
            let have = x.size()[dim as usize];
            if have >= want {
                return x.narrow(dim, 0, want);
            }
            let mut pad = [0i64; 4];
            pad[if dim == 3 { 1 } else { 3 }] = want - have;
            x.constant_pad_nd(pad)
        };
        fit(fit(out, 2, target), 3, c.mel_bins)
    }
}

struct DownLevel {
    blocks: Vec<ResBlock>,
    /// The stride-2 convolution's weight and bias; every level but the last has one.
    downsample: Option<(Tensor, Tensor)>,
}

/// The time-causal encoder: levels of residual blocks, each but the last halving time and bins
/// with a stride-2 convolution padded two rows above and one column right.
struct Encoder {
    conv_in: CausalConv,
    /// By level, the highest resolution first.
    levels: Vec<DownLevel>,
    mid: [ResBlock; 2],
    conv_out: CausalConv,
}

impl Encoder {
    fn load(w: &Weights, c: &CoderConfig) -> Result<Self> {
        let last = c.ch_mult.len() - 1;
        let levels = (0..=last)
            .map(|i| {
                let blocks = (0..c.num_res_blocks)
                    .map(|j| ResBlock::load(w, &format!("encoder.down.{i}.block.{j}")))
                    .collect::<Result<_>>()?;
                let down = format!("encoder.down.{i}.downsample.conv");
                let downsample = if i == last {
                    None
                } else {
                    Some((
                        w.tensor(&format!("{down}.weight"))?,
                        w.tensor(&format!("{down}.bias"))?,
                    ))
                };
                Ok(DownLevel { blocks, downsample })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            conv_in: CausalConv::load(w, "encoder.conv_in")?,
            levels,
            mid: [
                ResBlock::load(w, "encoder.mid.block_1")?,
                ResBlock::load(w, "encoder.mid.block_2")?,
            ],
            conv_out: CausalConv::load(w, "encoder.conv_out")?,
        })
    }

    /// The posterior's mode (its mean: the first half of the output channels) of a log-mel
    /// spectrogram `[b, channels, frames, bins]`.
    fn forward(&self, mel: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(mel);
        for level in &self.levels {
            for block in &level.blocks {
                h = block.forward(&h);
            }
            if let Some((weight, bias)) = &level.downsample {
                h = h.constant_pad_nd([0, 1, 2, 0]).conv2d(
                    weight,
                    Some(bias),
                    [2, 2],
                    [0, 0],
                    [1, 1],
                    1,
                );
            }
        }
        for block in &self.mid {
            h = block.forward(&h);
        }
        let out = self
            .conv_out
            .forward(&pixel_norm(&h, PIXEL_NORM_EPS).silu());
        let channels = out.size()[1];
        out.narrow(1, 0, channels / 2)
    }
}

struct Network {
    /// Absent from checkpoints that only decode; encoding them is an error.
    encoder: Option<Encoder>,
    decoder: Decoder,
    vocoder: Vocoder,
    /// Per (channel, bin) `[1, z, 1, bins]`.
    mean: Tensor,
    std: Tensor,
}

/// The AUDIO VAE LTXVAudioVAELoader returns, loaded through the manager when it runs.
pub struct LtxAudioVae {
    manager: Arc<ModelManager>,
    path: PathBuf,
    pub config: AudioVaeConfig,
}

impl LtxAudioVae {
    pub fn open(manager: Arc<ModelManager>, path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let vocoder = ["vocoder.", "vocoder.vocoder."]
            .iter()
            .any(|p| file.contains(&format!("{p}resblocks.0.convs1.0.weight")));
        if !vocoder {
            bail!("{} holds no LTX audio VAE and vocoder", path.display());
        }
        let config: Value = serde_json::from_str(
            file.metadata()
                .get("config")
                .with_context(|| format!("{} has no config metadata", path.display()))?,
        )
        .context("the checkpoint's config metadata is not JSON")?;
        Ok(Self {
            manager,
            path: path.to_path_buf(),
            config: AudioVaeConfig::from_metadata(&config)?,
        })
    }

    /// Latent bins per frame.
    pub fn latent_bins(&self) -> i64 {
        self.config.mel_bins / DOWNSAMPLE
    }

    /// `num_of_latents_from_frames`: the audio latent frames lasting as long as `frames` video
    /// frames at `frame_rate`, rounded half to even.
    pub fn latent_frames(&self, frames: i64, frame_rate: f64) -> i64 {
        let per_second =
            self.config.sample_rate as f64 / self.config.hop_length as f64 / DOWNSAMPLE as f64;
        py_round(frames as f64 / frame_rate * per_second)
    }

    /// The waveform's sample rate.
    pub fn output_sample_rate(&self) -> i64 {
        let c = &self.config;
        c.vocoder.output_sample_rate(c.sample_rate, c.hop_length)
    }

    fn loaded(&self) -> Result<Arc<Loaded<Network>>> {
        let target = LoadTarget {
            kind: "ltx_audio_vae",
            path: &self.path,
            prefix: "",
            device: self.manager.device(),
            precision: Precision {
                compute: Kind::Float,
                linears: Kind::Float,
            },
        };
        let config = self.config.clone();
        load_component(&self.manager, &target, None, move |w| {
            let audio = Weights::new(w.file, AUDIO_PREFIX, Kind::Float, w.device)?;
            let vocoder = Weights::new(w.file, VOCODER_PREFIX, Kind::Float, w.device)?;
            let stat = |name: &str| -> Result<Tensor> {
                let t = audio.tensor(&format!("per_channel_statistics.{name}"))?;
                Ok(t.view([1, config.z_channels, 1, -1]))
            };
            let encoder = if audio.has("encoder.conv_in.conv.weight") {
                Some(Encoder::load(&audio, &config.encoder)?)
            } else {
                None
            };
            Ok(Network {
                encoder,
                decoder: Decoder::load(&audio, &config)?,
                vocoder: Vocoder::load(&vocoder, config.vocoder.clone())?,
                mean: stat("mean-of-means")?,
                std: stat("std-of-means")?,
            })
        })
    }

    /// LTXVAudioVAEEncode: the normalized latent `[b, z, frames, bins]` (float32 on the CPU) of
    /// a waveform `[b, channels, samples]` at `sample_rate` Hz. As ComfyUI does, the waveform
    /// goes to 44.1 kHz first (the rate ComfyUI's VAE wrapper assumes for every audio VAE
    /// without its own), is centre-cropped to whole 4096-sample blocks, given the encoder's
    /// channels (a mono track repeated, extra channels dropped), then resampled to the VAE's
    /// rate and turned into a log-mel spectrogram.
    pub fn encode(&self, waveform: &Tensor, sample_rate: i64) -> Result<Tensor> {
        let n = self.loaded()?;
        let encoder = n
            .encoder
            .as_ref()
            .with_context(|| format!("{} holds no audio VAE encoder", self.path.display()))?;
        let c = &self.config;
        let device = self.manager.device();
        let wave = resample(
            &waveform.to_device(device).to_kind(Kind::Float),
            sample_rate,
            WRAPPER_SAMPLE_RATE,
        );
        let samples = wave.size()[2];
        let kept = samples / ENCODE_BLOCK * ENCODE_BLOCK;
        if kept == 0 {
            bail!(
                "the audio is too short to encode: {samples} samples at 44.1 kHz, at least \
                 {ENCODE_BLOCK} needed"
            );
        }
        let wave = wave.narrow(2, (samples % ENCODE_BLOCK) / 2, kept);
        let (have, want) = (wave.size()[1], c.encoder.audio_channels);
        let wave = if have == 1 {
            wave.expand([-1, want, -1], false)
        } else if have >= want {
            wave.narrow(1, 0, want)
        } else {
            bail!("the audio VAE encodes {want} channels, the audio has {have}");
        };
        let wave = resample(&wave, WRAPPER_SAMPLE_RATE, c.sample_rate);
        let filters = mel::slaney_filters(
            c.sample_rate,
            c.n_fft,
            c.sample_rate as f64 / 2.0,
            c.mel_bins,
        )
        .to_device(device);
        let spec = mel::stft_magnitude(&wave, c.n_fft, c.hop_length);
        let log_mel = mel::apply_filters(&spec, &filters)
            .clamp_min(1e-5)
            .log()
            .transpose(2, 3);
        let latent = encoder.forward(&log_mel);
        Ok(((latent - &n.mean) / &n.std).to_device(Device::Cpu))
    }

    /// LTXVAudioVAEDecode: the waveform `[b, 2, samples]` (float32 on the CPU) of a normalized
    /// latent `[b, 8, frames, 16]`.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        let n = self.loaded()?;
        let device = self.manager.device();
        let z = latent.to_device(device).to_kind(Kind::Float) * &n.std + &n.mean;
        let mel = n.decoder.forward(&z, &self.config);
        Ok(n.vocoder.forward(&mel).to_device(Device::Cpu))
    }
}
