//! ESRGAN's RRDBNet as spandrel 0.4 runs it (`architectures/ESRGAN`), which ComfyUI's
//! UpscaleModelLoader uses: ESRGAN's own layout (`model.N…`), Real-ESRGAN's (`conv_first`,
//! `body.N.rdbK…`) and BSRGAN's (`RRDB_trunk…`), ESRGAN+'s extra 1×1 convolutions, and the
//! pixel-unshuffled inputs of Real-ESRGAN's ×2 and ×1 models.

use anyhow::{Context, Result};
use tch::Tensor;

use super::highest_index;
use crate::models::layers::{self, pad_reflect_to_multiple, Conv2d};
use crate::models::weights::Weights;
use crate::runtime::safetensors_file::SafetensorsFile;

const SLOPE: f64 = 0.2;
/// Each dense block's output and each RRDB's are scaled by this before their residual.
const RESIDUAL_SCALE: f64 = 0.2;

/// Where the file keeps each layer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// ESRGAN's flattened `nn.Sequential`: `model.0`, `model.1.sub.N.RDBK.convM.0`, …
    Sequential,
    /// Real-ESRGAN / BasicSR: `conv_first`, `body.N.rdbK.convM`, `conv_body`, `conv_upK`.
    BasicSr,
    /// BSRGAN / RealSR: `conv_first`, `RRDB_trunk.N.RDBK.convM`, `trunk_conv`, `upconvK`.
    Bsrgan,
}

/// What the key names and shapes say about the network.
#[derive(Clone, Debug, PartialEq)]
pub struct EsrganConfig {
    layout: Layout,
    blocks: usize,
    /// The ×2 nearest upsamplings, each followed by a convolution.
    upsamplings: usize,
    /// ESRGAN+: a 1×1 convolution added inside every dense block.
    plus: bool,
    /// Real-ESRGAN's pixel-unshuffle of the input (2 or 4), which the network's upsamplings
    /// undo first.
    pub shuffle: Option<i64>,
}

impl EsrganConfig {
    /// The layout of an ESRGAN file, or `None` when the file is not one (spandrel's keys).
    pub fn detect(file: &SafetensorsFile) -> Result<Option<Self>> {
        let has = |k: &str| file.contains(k);
        let layout = if has("model.0.weight")
            && (has("model.1.sub.0.RDB1.conv1.0.weight")
                || has("model.1.sub.0.RDB1.conv1x1.weight"))
        {
            Layout::Sequential
        } else if has("conv_first.weight")
            && has("body.0.rdb1.conv1.weight")
            && has("conv_body.weight")
            && has("conv_last.weight")
        {
            Layout::BasicSr
        } else if has("conv_first.weight")
            && has("RRDB_trunk.0.RDB1.conv1.weight")
            && has("trunk_conv.weight")
            && has("conv_last.weight")
        {
            Layout::Bsrgan
        } else {
            return Ok(None);
        };
        let (block_prefix, up_prefix) = match layout {
            Layout::Sequential => ("model.1.sub.", "model."),
            Layout::BasicSr => ("body.", "conv_up"),
            Layout::Bsrgan => ("RRDB_trunk.", "upconv"),
        };
        let blocks =
            highest_index(file, block_prefix).context("an ESRGAN file without RRDB blocks")?;
        let upsamplings = match layout {
            // The flattened model: first conv, the trunk, 3 layers per upsampling, then the two
            // HR convolutions with their activation between.
            Layout::Sequential => {
                let layers = highest_index(file, up_prefix).unwrap_or(0) + 1;
                layers.saturating_sub(5) / 3
            }
            _ => highest_index(file, up_prefix).unwrap_or(0),
        };
        let mut config = Self {
            layout,
            // Sequential's trunk convolution sits at index `blocks`, after the RRDBs.
            blocks: if layout == Layout::Sequential {
                blocks
            } else {
                blocks + 1
            },
            upsamplings,
            plus: has("model.1.sub.0.RDB1.conv1x1.weight"),
            shuffle: None,
        };
        let in_channels = file
            .entry(&config.key(Part::First, "weight"))
            .context("the first convolution")?
            .shape[1] as i64;
        let out_channels = file
            .entry(&config.key(Part::Last, "weight"))
            .with_context(|| format!("{} not found", config.key(Part::Last, "weight")))?
            .shape[0] as i64;
        config.shuffle = [2, 4]
            .into_iter()
            .find(|f| in_channels == out_channels * f * f);
        Ok(Some(config))
    }

    /// The output's size over the input's.
    pub fn scale(&self) -> i64 {
        (1i64 << self.upsamplings) / self.shuffle.unwrap_or(1)
    }

    fn key(&self, part: Part, param: &str) -> String {
        let upconv_index = |k: usize| 3 * k;
        let hr = 3 * self.upsamplings + 2;
        let name = match (self.layout, part) {
            (Layout::Sequential, Part::First) => "model.0".to_string(),
            (Layout::Sequential, Part::Dense { block, rdb, conv }) => {
                format!("model.1.sub.{block}.RDB{rdb}.conv{conv}.0")
            }
            (Layout::Sequential, Part::Plus { block, rdb }) => {
                format!("model.1.sub.{block}.RDB{rdb}.conv1x1")
            }
            (Layout::Sequential, Part::Trunk) => format!("model.1.sub.{}", self.blocks),
            (Layout::Sequential, Part::Up(k)) => format!("model.{}", upconv_index(k)),
            (Layout::Sequential, Part::Hr) => format!("model.{hr}"),
            (Layout::Sequential, Part::Last) => format!("model.{}", hr + 2),
            (Layout::BasicSr, Part::Dense { block, rdb, conv }) => {
                format!("body.{block}.rdb{rdb}.conv{conv}")
            }
            (Layout::Bsrgan, Part::Dense { block, rdb, conv }) => {
                format!("RRDB_trunk.{block}.RDB{rdb}.conv{conv}")
            }
            (_, Part::First) => "conv_first".into(),
            (_, Part::Last) => "conv_last".into(),
            (Layout::BasicSr, Part::Trunk) => "conv_body".into(),
            (Layout::Bsrgan, Part::Trunk) => "trunk_conv".into(),
            (Layout::BasicSr, Part::Up(k)) => format!("conv_up{k}"),
            (Layout::Bsrgan, Part::Up(k)) => format!("upconv{k}"),
            (Layout::BasicSr, Part::Hr) => "conv_hr".into(),
            (Layout::Bsrgan, Part::Hr) => "HRconv".into(),
            (_, Part::Plus { .. }) => unreachable!("only ESRGAN+'s own layout has 1×1 convs"),
        };
        format!("{name}.{param}")
    }
}

#[derive(Clone, Copy)]
enum Part {
    First,
    Dense {
        block: usize,
        rdb: usize,
        conv: usize,
    },
    Plus {
        block: usize,
        rdb: usize,
    },
    Trunk,
    Up(usize),
    Hr,
    Last,
}

struct DenseBlock {
    convs: Vec<Conv2d>,
    plus: Option<Tensor>,
}

impl DenseBlock {
    /// Five convolutions, each seeing the input and every earlier output.
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut features = vec![x.shallow_clone()];
        for (i, conv) in self.convs.iter().enumerate() {
            let mut out = conv.same(&Tensor::cat(&features, 1));
            if i < 4 {
                out = leaky_relu(out);
            }
            if let Some(w) = &self.plus {
                // ESRGAN+: conv2 gets the 1×1 projection of the input, conv4 conv2's output.
                if i == 1 {
                    out += x.conv2d(w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
                } else if i == 3 {
                    out += &features[2];
                }
            }
            if i == 4 {
                return out * RESIDUAL_SCALE + x;
            }
            features.push(out);
        }
        unreachable!("a dense block has five convolutions")
    }
}

pub struct Esrgan {
    config: EsrganConfig,
    first: Conv2d,
    blocks: Vec<[DenseBlock; 3]>,
    trunk: Conv2d,
    ups: Vec<Conv2d>,
    hr: Conv2d,
    last: Conv2d,
}

impl Esrgan {
    pub fn load(w: &Weights, config: &EsrganConfig) -> Result<Self> {
        let conv = |part: Part| -> Result<Conv2d> {
            let name = config.key(part, "weight");
            Conv2d::load(w, name.trim_end_matches(".weight"))
        };
        let blocks = (0..config.blocks)
            .map(|block| -> Result<[DenseBlock; 3]> {
                let dense = |rdb: usize| -> Result<DenseBlock> {
                    Ok(DenseBlock {
                        convs: (1..=5)
                            .map(|c| {
                                conv(Part::Dense {
                                    block,
                                    rdb,
                                    conv: c,
                                })
                            })
                            .collect::<Result<_>>()?,
                        plus: if config.plus {
                            Some(w.tensor(&config.key(Part::Plus { block, rdb }, "weight"))?)
                        } else {
                            None
                        },
                    })
                };
                Ok([dense(1)?, dense(2)?, dense(3)?])
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            config: config.clone(),
            first: conv(Part::First)?,
            blocks,
            trunk: conv(Part::Trunk)?,
            ups: (1..=config.upsamplings)
                .map(|k| conv(Part::Up(k)))
                .collect::<Result<_>>()?,
            hr: conv(Part::Hr)?,
            last: conv(Part::Last)?,
        })
    }

    /// Pixels `[1, C, H, W]` in 0…1 to `[1, C, H·scale, W·scale]`, unclamped.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        let x = match self.config.shuffle {
            Some(f) => pad_reflect_to_multiple(x, f).pixel_unshuffle(f),
            None => x.shallow_clone(),
        };
        let features = self.first.same(&x);
        let mut trunk = features.shallow_clone();
        for rrdb in &self.blocks {
            let out = rrdb
                .iter()
                .fold(trunk.shallow_clone(), |t, block| block.forward(&t));
            trunk = out * RESIDUAL_SCALE + &trunk;
        }
        let mut out = features + self.trunk.same(&trunk);
        for up in &self.ups {
            let size = out.size();
            let upsampled = out.upsample_nearest2d([size[2] * 2, size[3] * 2], None, None);
            // Freed before the activation: at ×4 each of these is 64 channels of the output.
            let convolved = up.same(&upsampled);
            drop(upsampled);
            out = leaky_relu(convolved);
        }
        let hr = self.hr.same(&out);
        drop(out);
        let out = self.last.same(&leaky_relu(hr));
        let scale = self.config.scale();
        out.narrow(2, 0, h * scale).narrow(3, 0, w * scale)
    }
}

fn leaky_relu(x: Tensor) -> Tensor {
    layers::leaky_relu_owned(x, SLOPE)
}
