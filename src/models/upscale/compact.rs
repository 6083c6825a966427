//! Real-ESRGAN's compact network (SRVGGNetCompact, e.g. `realesr-animevideov3`) as spandrel 0.4
//! runs it (`architectures/Compact`): convolutions with PReLU, a pixel shuffle, and the
//! nearest-upsampled input added back.

use anyhow::{bail, Result};
use tch::Tensor;

use super::highest_index;
use crate::models::layers::Conv2d;
use crate::models::weights::Weights;
use crate::runtime::safetensors_file::SafetensorsFile;

#[derive(Clone, Debug, PartialEq)]
pub struct CompactConfig {
    /// Convolutions, each but the last followed by a PReLU.
    convs: usize,
    pub scale: i64,
}

impl CompactConfig {
    /// The network in a file of `body.N` keys, or `None` when it is not one.
    pub fn detect(file: &SafetensorsFile) -> Result<Option<Self>> {
        if !(file.contains("body.0.weight") && file.contains("body.1.weight")) {
            return Ok(None);
        }
        let last = highest_index(file, "body.").unwrap_or(0);
        let in_channels = file.entry("body.0.weight").map_or(0, |e| e.shape[1]);
        let Some(shuffled) = file.entry(&format!("body.{last}.bias")).map(|e| e.shape[0]) else {
            bail!("a compact upscale model without body.{last}.bias");
        };
        let Some((scale, _)) = scale_and_channels(shuffled, in_channels) else {
            bail!("a compact upscale model whose last layer has {shuffled} channels");
        };
        Ok(Some(Self {
            convs: last / 2 + 1,
            scale: scale as i64,
        }))
    }
}

/// spandrel's `get_scale_and_output_channels`: `shuffled = scale² · channels`, trying the input's
/// channels, then 3, 4 and 1.
fn scale_and_channels(shuffled: usize, in_channels: usize) -> Option<(usize, usize)> {
    [in_channels, 3, 4, 1].into_iter().find_map(|c| {
        if c == 0 || !shuffled.is_multiple_of(c) {
            return None;
        }
        let square = shuffled / c;
        let root = (square as f64).sqrt() as usize;
        (root * root == square).then_some((root, c))
    })
}

pub struct Compact {
    scale: i64,
    convs: Vec<Conv2d>,
    /// PReLU slopes, one per channel, after every convolution but the last.
    slopes: Vec<Tensor>,
}

impl Compact {
    pub fn load(w: &Weights, config: &CompactConfig) -> Result<Self> {
        let convs = (0..config.convs)
            .map(|i| Conv2d::load(w, &format!("body.{}", 2 * i)))
            .collect::<Result<_>>()?;
        let slopes = (0..config.convs - 1)
            .map(|i| w.tensor(&format!("body.{}.weight", 2 * i + 1)))
            .collect::<Result<_>>()?;
        Ok(Self {
            scale: config.scale,
            convs,
            slopes,
        })
    }

    /// Pixels `[1, C, H, W]` in 0…1 to `[1, C, H·scale, W·scale]`, unclamped.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut out = x.shallow_clone();
        for (i, conv) in self.convs.iter().enumerate() {
            out = conv.same(&out);
            if let Some(slope) = self.slopes.get(i) {
                out = out.prelu(slope);
            }
        }
        let (h, w) = (x.size()[2], x.size()[3]);
        let base = x.upsample_nearest2d([h * self.scale, w * self.scale], None, None);
        out.pixel_shuffle(self.scale) + base
    }
}
