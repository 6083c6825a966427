//! LTX-2's vocoders (`comfy/ldm/lightricks/vocoders/vocoder.py`). A generator takes the stereo
//! mel spectrogram's two channels stacked through a convolution, then per upsampling stage a
//! transposed convolution and the mean of the stage's multi-kernel residual blocks, then a last
//! convolution:
//! - LTX-2's HiFi-GAN (`resblock` "1"): LeakyReLU(0.1) before each stage and inside the blocks,
//!   LeakyReLU(0.01) before the last convolution, tanh after it.
//! - LTX-2.3's BigVGAN v2 (`resblock` "AMP1"): Snake or SnakeBeta activations, each run at twice
//!   the rate between Kaiser-sinc filters, and no final activation.
//!
//! LTX-2.3 adds bandwidth extension (`VocoderWithBWE`): the base generator's 16 kHz waveform,
//! its causal log-mel spectrogram (the checkpoint's DFT and mel bases) through a second
//! generator, plus the waveform resampled ×3 by a Hann-windowed sinc; clamped to ±1.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::models::weights::Weights;

const SLOPE: f64 = 0.1;
/// `nn.LeakyReLU()`'s default, before the last convolution.
const FINAL_SLOPE: f64 = 0.01;
/// The anti-aliased activations' rate change and filter length (BigVGAN's `Activation1d`).
const ALIAS_RATIO: i64 = 2;
const ALIAS_KERNEL: i64 = 12;
const SNAKE_EPS: f64 = 1e-9;
/// The bandwidth extension's resampler (torchaudio's `resample` defaults).
const RESAMPLE_ROLLOFF: f64 = 0.99;
const RESAMPLE_ZEROS: f64 = 6.0;

#[derive(Clone, Copy, Debug, PartialEq)]
enum ResBlockKind {
    HifiGan,
    /// BigVGAN's AMP blocks; SnakeBeta scales by its own `beta`, Snake by `alpha`.
    Amp {
        snake_beta: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
struct GeneratorConfig {
    resblock: ResBlockKind,
    upsample_rates: Vec<i64>,
    upsample_kernels: Vec<i64>,
    resblock_kernels: Vec<i64>,
    resblock_dilations: Vec<Vec<i64>>,
    stereo: bool,
    final_bias: bool,
    final_tanh: bool,
    final_activation: bool,
}

impl GeneratorConfig {
    /// A `Vocoder` config over ComfyUI's defaults.
    fn from_metadata(c: &Value) -> Result<Self> {
        let ints = |key: &str, default: &[i64]| -> Vec<i64> {
            c.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_else(|| default.to_vec())
        };
        let flag =
            |key: &str, default: bool| c.get(key).and_then(Value::as_bool).unwrap_or(default);
        let resblock = match c.get("resblock").and_then(Value::as_str).unwrap_or("1") {
            "1" => ResBlockKind::HifiGan,
            "AMP1" => ResBlockKind::Amp {
                snake_beta: c.get("activation").and_then(Value::as_str) == Some("snakebeta"),
            },
            other => bail!("vocoders with resblock {other} are not supported yet (1 and AMP1 are)"),
        };
        let resblock_dilations = match c.get("resblock_dilation_sizes").and_then(Value::as_array) {
            Some(rows) => rows
                .iter()
                .map(|r| {
                    r.as_array()
                        .map(|a| a.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default()
                })
                .collect(),
            None => vec![vec![1, 3, 5]; 3],
        };
        let config = Self {
            resblock,
            upsample_rates: ints("upsample_rates", &[5, 4, 2, 2, 2]),
            upsample_kernels: ints("upsample_kernel_sizes", &[16, 16, 8, 4, 4]),
            resblock_kernels: ints("resblock_kernel_sizes", &[3, 7, 11]),
            resblock_dilations,
            stereo: flag("stereo", true),
            final_bias: flag("use_bias_at_final", true),
            final_tanh: flag("use_tanh_at_final", true),
            final_activation: flag("apply_final_activation", true),
        };
        if config.upsample_rates.len() != config.upsample_kernels.len()
            || config.resblock_kernels.len() != config.resblock_dilations.len()
            || config.resblock_dilations.iter().any(|d| d.len() != 3)
        {
            bail!("the vocoder config's kernel lists do not match");
        }
        Ok(config)
    }

    fn upsample_factor(&self) -> i64 {
        self.upsample_rates.iter().product()
    }
}

/// `VocoderWithBWE`'s `bwe` section beyond its generator.
#[derive(Clone, Debug, PartialEq)]
struct BweConfig {
    generator: GeneratorConfig,
    input_rate: i64,
    output_rate: i64,
    hop_length: i64,
    n_fft: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VocoderConfig {
    base: GeneratorConfig,
    bwe: Option<BweConfig>,
    /// The output rate the file states, else the mel rate times the upsampling.
    output_sample_rate: Option<i64>,
}

impl VocoderConfig {
    /// The checkpoint's `config.vocoder`: a generator's config, or `vocoder` and `bwe` sections.
    pub fn from_metadata(c: &Value) -> Result<Self> {
        let Some(bwe) = c.get("bwe") else {
            return Ok(Self {
                base: GeneratorConfig::from_metadata(c)?,
                bwe: None,
                output_sample_rate: c.get("output_sample_rate").and_then(Value::as_i64),
            });
        };
        let int = |key: &str| {
            bwe.get(key)
                .and_then(Value::as_i64)
                .with_context(|| format!("the vocoder's bwe section has no {key}"))
        };
        let mut generator = GeneratorConfig::from_metadata(bwe)?;
        // ComfyUI adds the resampled waveform to the raw output.
        generator.final_activation = false;
        let bwe = BweConfig {
            generator,
            input_rate: int("input_sampling_rate")?,
            output_rate: int("output_sampling_rate")?,
            hop_length: int("hop_length")?,
            n_fft: int("n_fft")?,
        };
        if bwe.output_rate % bwe.input_rate != 0 {
            bail!(
                "bandwidth extension from {} Hz to {} Hz is not a whole ratio",
                bwe.input_rate,
                bwe.output_rate
            );
        }
        Ok(Self {
            base: GeneratorConfig::from_metadata(
                c.get("vocoder")
                    .context("the vocoder config has no vocoder section")?,
            )?,
            output_sample_rate: Some(bwe.output_rate),
            bwe: Some(bwe),
        })
    }

    /// The waveform's sample rate for mel frames `hop_length` samples apart at `sample_rate`.
    pub fn output_sample_rate(&self, sample_rate: i64, hop_length: i64) -> i64 {
        self.output_sample_rate
            .unwrap_or(sample_rate * self.base.upsample_factor() / hop_length)
    }
}

struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    dilation: i64,
}

impl Conv1d {
    fn load(w: &Weights, name: &str, dilation: i64) -> Result<Self> {
        let bias = format!("{name}.bias");
        Ok(Self {
            weight: w.tensor(&format!("{name}.weight"))?,
            bias: w.optional(&bias)?,
            dilation,
        })
    }

    /// Stride 1, padded to keep the length.
    fn forward(&self, x: &Tensor) -> Tensor {
        let k = self.weight.size()[2];
        let padding = (k * self.dilation - self.dilation) / 2;
        x.conv1d(
            &self.weight,
            self.bias.as_ref(),
            [1],
            [padding],
            [self.dilation],
            1,
        )
    }
}

fn leaky(x: &Tensor, slope: f64) -> Tensor {
    x.maximum(&(x * slope))
}

/// A per-channel filter `[1, 1, k]` applied to every channel of `x` `[b, c, t]`.
fn depthwise(filter: &Tensor, channels: i64) -> Tensor {
    filter.expand([channels, 1, -1], false)
}

/// `UpSample1d`: `x` padded by `pad` repeated edge samples, upsampled by `ratio` through
/// `filter` (transposed, times `ratio`), `cut` samples dropped from each end.
fn upsample(x: &Tensor, filter: &Tensor, ratio: i64, pad: i64, cut: (i64, i64)) -> Tensor {
    let channels = x.size()[1];
    let y = x.pad([pad, pad], "replicate", None).conv_transpose1d(
        &depthwise(filter, channels),
        None::<&Tensor>,
        [ratio],
        [0],
        [0],
        channels,
        [1],
    ) * ratio as f64;
    let len = y.size()[2];
    y.narrow(2, cut.0, len - cut.0 - cut.1)
}

/// BigVGAN's `kaiser_sinc_filter1d` `[1, 1, k]` for an even `k`, in float32 as torch builds it.
fn kaiser_sinc(cutoff: f64, half_width: f64, k: i64) -> Tensor {
    let half = k / 2;
    let delta_f = 4.0 * half_width;
    let a = 2.285 * (half - 1) as f64 * std::f64::consts::PI * delta_f + 7.95;
    let beta = if a > 50.0 {
        0.1102 * (a - 8.7)
    } else if a >= 21.0 {
        0.5842 * (a - 21.0).powf(0.4) + 0.07886 * (a - 21.0)
    } else {
        0.0
    };
    let options = (Kind::Float, Device::Cpu);
    let window = Tensor::kaiser_window_beta(k, false, beta, options);
    let time = Tensor::arange_start(-half, half, options) + 0.5;
    let filter = window * 2.0 * cutoff * (time * 2.0 * cutoff).sinc();
    (&filter / filter.sum(Kind::Float)).view([1, 1, k])
}

/// A filter buffer from the checkpoint when it holds one (ComfyUI loads it over its own), else
/// the Kaiser-sinc filter it would build, on the weights' device.
fn alias_filter(w: &Weights, name: &str) -> Result<Tensor> {
    let ratio = ALIAS_RATIO as f64;
    Ok(w.optional(name)?
        .unwrap_or_else(|| kaiser_sinc(0.5 / ratio, 0.6 / ratio, ALIAS_KERNEL).to_device(w.device)))
}

/// Snake `x + sin²(αx)/(α + ε)`, or SnakeBeta with `β` in the denominator; both stored as logs.
struct Snake {
    alpha: Tensor,
    amplitude: Tensor,
}

impl Snake {
    fn load(w: &Weights, name: &str, snake_beta: bool) -> Result<Self> {
        let log = |part: &str| -> Result<Tensor> {
            Ok(w.tensor(&format!("{name}.{part}"))?.exp().view([1, -1, 1]))
        };
        let alpha = log("alpha")?;
        Ok(Self {
            amplitude: if snake_beta {
                log("beta")?
            } else {
                alpha.shallow_clone()
            },
            alpha,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x + (&self.amplitude + SNAKE_EPS).reciprocal() * (x * &self.alpha).sin().square()
    }
}

/// `Activation1d`: the activation at twice the rate, between Kaiser-sinc filters.
struct AntiAliased {
    act: Snake,
    up: Tensor,
    down: Tensor,
}

impl AntiAliased {
    fn load(w: &Weights, name: &str, snake_beta: bool) -> Result<Self> {
        Ok(Self {
            act: Snake::load(w, &format!("{name}.act"), snake_beta)?,
            up: alias_filter(w, &format!("{name}.upsample.filter"))?,
            down: alias_filter(w, &format!("{name}.downsample.lowpass.filter"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (r, k) = (ALIAS_RATIO, ALIAS_KERNEL);
        let pad = k / r - 1;
        let cut = (pad * r + (k - r) / 2, pad * r + (k - r + 1) / 2);
        let y = self.act.forward(&upsample(x, &self.up, r, pad, cut));
        let channels = y.size()[1];
        y.pad([k / 2 - 1, k / 2], "replicate", None).conv1d(
            &depthwise(&self.down, channels),
            None::<&Tensor>,
            [r],
            [0],
            [1],
            channels,
        )
    }
}

/// One activation per convolution: LeakyReLU for HiFi-GAN, anti-aliased Snake for AMP.
enum Activation {
    Leaky,
    Snake(AntiAliased),
}

impl Activation {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Self::Leaky => leaky(x, SLOPE),
            Self::Snake(act) => act.forward(x),
        }
    }
}

struct ResBlock {
    first: Vec<(Activation, Conv1d)>,
    second: Vec<(Activation, Conv1d)>,
}

impl ResBlock {
    fn load(w: &Weights, name: &str, dilations: &[i64], kind: ResBlockKind) -> Result<Self> {
        let layers = |set: usize| {
            (0..3)
                .map(|j| {
                    let act =
                        match kind {
                            ResBlockKind::HifiGan => Activation::Leaky,
                            ResBlockKind::Amp { snake_beta } => Activation::Snake(
                                AntiAliased::load(w, &format!("{name}.acts{set}.{j}"), snake_beta)?,
                            ),
                        };
                    let d = if set == 1 { dilations[j] } else { 1 };
                    Ok((act, Conv1d::load(w, &format!("{name}.convs{set}.{j}"), d)?))
                })
                .collect::<Result<Vec<_>>>()
        };
        Ok(Self {
            first: layers(1)?,
            second: layers(2)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for ((a1, c1), (a2, c2)) in self.first.iter().zip(&self.second) {
            let h = c1.forward(&a1.forward(&x));
            x = c2.forward(&a2.forward(&h)) + x;
        }
        x
    }
}

/// One mel-to-waveform generator (ComfyUI's `Vocoder`).
struct Generator {
    config: GeneratorConfig,
    conv_pre: Conv1d,
    /// Transposed convolutions: weight `[in, out, k]`, bias.
    ups: Vec<(Tensor, Tensor)>,
    resblocks: Vec<ResBlock>,
    /// Before the last convolution: LeakyReLU(0.01) for HiFi-GAN.
    act_post: Option<AntiAliased>,
    conv_post: Conv1d,
}

impl Generator {
    fn load(w: &Weights, prefix: &str, config: GeneratorConfig) -> Result<Self> {
        let ups = (0..config.upsample_rates.len())
            .map(|i| {
                Ok((
                    w.tensor(&format!("{prefix}ups.{i}.weight"))?,
                    w.tensor(&format!("{prefix}ups.{i}.bias"))?,
                ))
            })
            .collect::<Result<_>>()?;
        let per_stage = config.resblock_kernels.len();
        let resblocks = (0..config.upsample_rates.len() * per_stage)
            .map(|n| {
                let dilations = &config.resblock_dilations[n % per_stage];
                ResBlock::load(
                    w,
                    &format!("{prefix}resblocks.{n}"),
                    dilations,
                    config.resblock,
                )
            })
            .collect::<Result<_>>()?;
        let act_post = match config.resblock {
            ResBlockKind::HifiGan => None,
            ResBlockKind::Amp { snake_beta } => Some(AntiAliased::load(
                w,
                &format!("{prefix}act_post"),
                snake_beta,
            )?),
        };
        let conv_post = Conv1d::load(w, &format!("{prefix}conv_post"), 1)?;
        if conv_post.bias.is_some() != config.final_bias {
            bail!("the vocoder's last convolution and its config disagree about a bias");
        }
        Ok(Self {
            conv_pre: Conv1d::load(w, &format!("{prefix}conv_pre"), 1)?,
            ups,
            resblocks,
            act_post,
            conv_post,
            config,
        })
    }

    /// The waveform `[b, 2, samples]` (or `[b, 1, …]` mono) of a mel spectrogram
    /// `[b, 2, bins, frames]` (`[b, 1, …]` mono).
    fn forward(&self, mel: &Tensor) -> Tensor {
        let c = &self.config;
        let x = if c.stereo {
            mel.flatten(1, 2)
        } else {
            mel.squeeze_dim(1)
        };
        let mut x = self.conv_pre.forward(&x);
        let per_stage = c.resblock_kernels.len();
        for (i, (weight, bias)) in self.ups.iter().enumerate() {
            let (u, k) = (c.upsample_rates[i], c.upsample_kernels[i]);
            if c.resblock == ResBlockKind::HifiGan {
                x = leaky(&x, SLOPE);
            }
            x = x.conv_transpose1d(weight, Some(bias), [u], [(k - u) / 2], [0], 1, [1]);
            let blocks = &self.resblocks[i * per_stage..(i + 1) * per_stage];
            let sum = blocks
                .iter()
                .map(|b| b.forward(&x))
                .reduce(|a, b| a + b)
                .expect("every stage has residual blocks");
            x = sum / per_stage as f64;
        }
        let x = match &self.act_post {
            Some(act) => act.forward(&x),
            None => leaky(&x, FINAL_SLOPE),
        };
        let x = self.conv_post.forward(&x);
        match (c.final_activation, c.final_tanh) {
            (false, _) => x,
            (true, true) => x.tanh(),
            (true, false) => x.clamp(-1.0, 1.0),
        }
    }
}

/// LTX-2.3's bandwidth extension.
struct BandwidthExtension {
    config: BweConfig,
    generator: Generator,
    /// The causal STFT's DFT rows times the Hann window `[2·freqs, 1, n_fft]` (real, then
    /// imaginary), and the mel filterbank `[mels, freqs]`: the checkpoint's, as trained.
    stft_basis: Tensor,
    mel_basis: Tensor,
    /// The ×ratio resampler's Hann-windowed sinc `[1, 1, k]`.
    resampler: Tensor,
}

impl BandwidthExtension {
    fn load(w: &Weights, config: BweConfig) -> Result<Self> {
        let ratio = config.output_rate / config.input_rate;
        Ok(Self {
            generator: Generator::load(w, "bwe_generator.", config.generator.clone())?,
            stft_basis: w.tensor("mel_stft.stft_fn.forward_basis")?,
            mel_basis: w.tensor("mel_stft.mel_basis")?,
            resampler: hann_sinc(ratio).to_device(w.device),
            config,
        })
    }

    /// The extended waveform `[b, c, samples · ratio]` of `x` `[b, c, samples]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let c = &self.config;
        let (b, channels, samples) = x.size3().expect("a waveform is [b, c, t]");
        let x = match samples % c.hop_length {
            0 => x.shallow_clone(),
            rest => x.constant_pad_nd([0, c.hop_length - rest]),
        };
        // The causal log-mel spectrogram of each channel.
        let flat = x
            .reshape([b * channels, 1, -1])
            .constant_pad_nd([c.n_fft - c.hop_length, 0]);
        let spec = flat.conv1d(
            &self.stft_basis,
            None::<&Tensor>,
            [c.hop_length],
            [0],
            [1],
            1,
        );
        let freqs = spec.size()[1] / 2;
        let (real, imag) = (spec.narrow(1, 0, freqs), spec.narrow(1, freqs, freqs));
        let magnitude = (real.square() + imag.square()).sqrt();
        let mel = self.mel_basis.matmul(&magnitude).clamp_min(1e-5).log();
        let mel = mel.view([b, channels, mel.size()[1], -1]);
        let residual = self.generator.forward(&mel);

        let ratio = c.output_rate / c.input_rate;
        let width = (RESAMPLE_ZEROS / RESAMPLE_ROLLOFF).ceil() as i64;
        let kernel = 2 * width * ratio + 1;
        let skip = upsample(
            &x,
            &self.resampler,
            ratio,
            width,
            (2 * width * ratio, kernel - ratio),
        );
        (residual + skip)
            .clamp(-1.0, 1.0)
            .narrow(2, 0, samples * ratio)
    }
}

/// torchaudio's `resample` kernel for ×`ratio` (rolloff 0.99, 6 zero crossings, Hann window),
/// in float32 as ComfyUI builds it.
fn hann_sinc(ratio: i64) -> Tensor {
    let width = (RESAMPLE_ZEROS / RESAMPLE_ROLLOFF).ceil() as i64;
    let kernel = 2 * width * ratio + 1;
    let options = (Kind::Float, Device::Cpu);
    let t = (Tensor::arange(kernel, options) / ratio as f64 - width as f64) * RESAMPLE_ROLLOFF;
    let window =
        (t.clamp(-RESAMPLE_ZEROS, RESAMPLE_ZEROS) * std::f64::consts::PI / RESAMPLE_ZEROS / 2.0)
            .cos()
            .square();
    (t.sinc() * window * RESAMPLE_ROLLOFF / ratio as f64).view([1, 1, kernel])
}

pub struct Vocoder {
    base: Generator,
    bwe: Option<BandwidthExtension>,
}

impl Vocoder {
    /// The vocoder under `w`'s prefix (`vocoder.`).
    pub fn load(w: &Weights, config: VocoderConfig) -> Result<Self> {
        let Some(bwe) = config.bwe else {
            return Ok(Self {
                base: Generator::load(w, "", config.base)?,
                bwe: None,
            });
        };
        Ok(Self {
            base: Generator::load(w, "vocoder.", config.base)?,
            bwe: Some(BandwidthExtension::load(w, bwe)?),
        })
    }

    /// The waveform `[b, 2, samples]` (or `[b, 1, …]` mono) of a mel spectrogram
    /// `[b, 2, frames, mel_bins]` (`[b, 1, …]` mono).
    pub fn forward(&self, mel: &Tensor) -> Tensor {
        let x = self.base.forward(&mel.transpose(2, 3));
        match &self.bwe {
            Some(bwe) => bwe.forward(&x),
            None => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BigVGAN's filters, as torch builds them for `Activation1d` (ratio 2, 12 taps).
    #[test]
    fn kaiser_sinc_filter_is_symmetric_unit_gain_and_low_pass() {
        let f = kaiser_sinc(0.25, 0.3, 12).view([-1]);
        assert!((f.sum(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-6);
        assert!(f.allclose(&f.flip([0]), 1e-7, 1e-7, false));
        // The alternating sum is the gain at Nyquist.
        let signs = Tensor::from_slice(&[1.0f32, -1.0]).repeat([6]);
        assert!((f * signs).sum(Kind::Double).double_value(&[]).abs() < 0.05);
    }
}
