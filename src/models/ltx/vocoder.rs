//! LTX-2's vocoder (`comfy/ldm/lightricks/vocoders/vocoder.py`: `Vocoder` with HiFi-GAN's
//! `ResBlock1`): the stereo mel spectrogram's two channels stacked, a convolution, then per
//! upsampling stage LeakyReLU(0.1), a transposed convolution and the mean of the stage's
//! multi-kernel residual blocks; LeakyReLU(0.01), a last convolution and tanh. LTX-2.3's
//! BigVGAN vocoder with bandwidth extension is refused.

use anyhow::{bail, Result};
use serde_json::Value;
use tch::Tensor;

use crate::models::weights::Weights;

const SLOPE: f64 = 0.1;
/// `nn.LeakyReLU()`'s default, before the last convolution.
const FINAL_SLOPE: f64 = 0.01;

#[derive(Clone, Debug, PartialEq)]
pub struct VocoderConfig {
    upsample_rates: Vec<i64>,
    upsample_kernels: Vec<i64>,
    resblock_kernels: Vec<i64>,
    resblock_dilations: Vec<Vec<i64>>,
    initial_channels: i64,
    stereo: bool,
    final_bias: bool,
    final_tanh: bool,
    final_activation: bool,
    /// The output rate the file states, else the mel rate times the upsampling.
    pub output_sample_rate: Option<i64>,
}

impl VocoderConfig {
    /// The checkpoint's `config.vocoder`, over ComfyUI's defaults.
    pub fn from_metadata(c: &Value) -> Result<Self> {
        if c.get("bwe").is_some() {
            bail!("this vocoder has bandwidth extension (LTX-2.3), which is not supported yet");
        }
        let resblock = c.get("resblock").and_then(Value::as_str).unwrap_or("1");
        if resblock != "1" {
            bail!("vocoders with resblock {resblock} are not supported yet (HiFi-GAN's 1 is)");
        }
        let ints = |key: &str, default: &[i64]| -> Vec<i64> {
            c.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_else(|| default.to_vec())
        };
        let flag =
            |key: &str, default: bool| c.get(key).and_then(Value::as_bool).unwrap_or(default);
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
            upsample_rates: ints("upsample_rates", &[5, 4, 2, 2, 2]),
            upsample_kernels: ints("upsample_kernel_sizes", &[16, 16, 8, 4, 4]),
            resblock_kernels: ints("resblock_kernel_sizes", &[3, 7, 11]),
            resblock_dilations,
            initial_channels: c
                .get("upsample_initial_channel")
                .and_then(Value::as_i64)
                .unwrap_or(1024),
            stereo: flag("stereo", true),
            final_bias: flag("use_bias_at_final", true),
            final_tanh: flag("use_tanh_at_final", true),
            final_activation: flag("apply_final_activation", true),
            output_sample_rate: c.get("output_sample_rate").and_then(Value::as_i64),
        };
        if config.upsample_rates.len() != config.upsample_kernels.len()
            || config.resblock_kernels.len() != config.resblock_dilations.len()
            || config.resblock_dilations.iter().any(|d| d.len() != 3)
        {
            bail!("the vocoder config's kernel lists do not match");
        }
        Ok(config)
    }

    /// Output samples per mel frame.
    pub fn upsample_factor(&self) -> i64 {
        self.upsample_rates.iter().product()
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

struct ResBlock {
    first: Vec<Conv1d>,
    second: Vec<Conv1d>,
}

impl ResBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for (c1, c2) in self.first.iter().zip(&self.second) {
            let h = c1.forward(&leaky(&x, SLOPE));
            x = c2.forward(&leaky(&h, SLOPE)) + x;
        }
        x
    }
}

fn leaky(x: &Tensor, slope: f64) -> Tensor {
    x.maximum(&(x * slope))
}

pub struct Vocoder {
    config: VocoderConfig,
    conv_pre: Conv1d,
    /// Transposed convolutions: weight `[in, out, k]`, bias.
    ups: Vec<(Tensor, Tensor)>,
    resblocks: Vec<ResBlock>,
    conv_post: Conv1d,
}

impl Vocoder {
    /// The vocoder under `w`'s prefix (`vocoder.`).
    pub fn load(w: &Weights, config: VocoderConfig) -> Result<Self> {
        let ups = (0..config.upsample_rates.len())
            .map(|i| {
                Ok((
                    w.tensor(&format!("ups.{i}.weight"))?,
                    w.tensor(&format!("ups.{i}.bias"))?,
                ))
            })
            .collect::<Result<_>>()?;
        let per_stage = config.resblock_kernels.len();
        let resblocks = (0..config.upsample_rates.len() * per_stage)
            .map(|n| {
                let dilations = &config.resblock_dilations[n % per_stage];
                let convs = |set: &str, dilated: bool| {
                    (0..3)
                        .map(|j| {
                            let d = if dilated { dilations[j] } else { 1 };
                            Conv1d::load(w, &format!("resblocks.{n}.{set}.{j}"), d)
                        })
                        .collect::<Result<Vec<_>>>()
                };
                Ok(ResBlock {
                    first: convs("convs1", true)?,
                    second: convs("convs2", false)?,
                })
            })
            .collect::<Result<_>>()?;
        let conv_post = Conv1d::load(w, "conv_post", 1)?;
        if conv_post.bias.is_some() != config.final_bias {
            bail!("the vocoder's last convolution and its config disagree about a bias");
        }
        Ok(Self {
            conv_pre: Conv1d::load(w, "conv_pre", 1)?,
            ups,
            resblocks,
            conv_post,
            config,
        })
    }

    /// The waveform `[b, 2, samples]` (or `[b, 1, …]` mono) of a mel spectrogram
    /// `[b, 2, frames, mel_bins]` (`[b, 1, …]` mono).
    pub fn forward(&self, mel: &Tensor) -> Tensor {
        let c = &self.config;
        let x = mel.transpose(2, 3);
        let x = if c.stereo {
            x.flatten(1, 2)
        } else {
            x.squeeze_dim(1)
        };
        let mut x = self.conv_pre.forward(&x);
        let per_stage = c.resblock_kernels.len();
        for (i, (weight, bias)) in self.ups.iter().enumerate() {
            let (u, k) = (c.upsample_rates[i], c.upsample_kernels[i]);
            x = leaky(&x, SLOPE).conv_transpose1d(
                weight,
                Some(bias),
                [u],
                [(k - u) / 2],
                [0],
                1,
                [1],
            );
            let blocks = &self.resblocks[i * per_stage..(i + 1) * per_stage];
            let sum = blocks
                .iter()
                .map(|b| b.forward(&x))
                .reduce(|a, b| a + b)
                .expect("every stage has residual blocks");
            x = sum / per_stage as f64;
        }
        let x = self.conv_post.forward(&leaky(&x, FINAL_SLOPE));
        match (c.final_activation, c.final_tanh) {
            (false, _) => x,
            (true, true) => x.tanh(),
            (true, false) => x.clamp(-1.0, 1.0),
        }
    }
}
