//! RIFE's IFNet with five blocks (4.25, 4.26 and their lite and heavy variants) as ComfyUI runs it
//! (`comfy_extras/frame_interpolation_models/ifnet.py`): one scale list (16, 8, 4, 2, 1) for
//! every version, flows refined coarse to fine, the frames and their head features warped in
//! float32 by bilinear sampling, and the two warped frames blended by the sigmoid mask.

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use crate::models::layers::{leaky_relu, Conv2d};
use crate::models::weights::Weights;
use crate::runtime::safetensors_file::SafetensorsFile;

const SLOPE: f64 = 0.2;
const SCALES: [f64; 5] = [16.0, 8.0, 4.0, 2.0, 1.0];
/// Frames are reflect-padded to a multiple of this (the coarsest block's downsampling).
pub const PAD_ALIGN: i64 = 64;

/// Where the file keeps the network and how wide it is.
#[derive(Clone, Debug, PartialEq)]
pub struct RifeConfig {
    /// `module.` / `flownet.` in front of every key in checkpoints saved from training.
    pub prefix: String,
    /// Practical-RIFE's own `blockN.` names rather than ComfyUI's `blocks.N.`.
    own_block_names: bool,
}

impl RifeConfig {
    /// The layout of a RIFE file, or `None` when the file is not one.
    pub fn detect(file: &SafetensorsFile) -> Result<Option<Self>> {
        let Some(prefix) = ["", "module.", "flownet.", "module.flownet."]
            .into_iter()
            .find(|p| file.contains(&format!("{p}encode.cnn3.weight")))
        else {
            return Ok(None);
        };
        let config = Self {
            prefix: prefix.into(),
            own_block_names: file.contains(&format!("{prefix}block0.conv0.0.0.weight")),
        };
        let found = (0..5)
            .filter(|&i| file.contains(&format!("{prefix}{}.conv0.1.0.weight", config.block(i))))
            .count();
        if found != 5 {
            bail!("Unsupported RIFE model: expected 5 blocks, found {found}");
        }
        Ok(Some(config))
    }

    fn block(&self, i: usize) -> String {
        if self.own_block_names {
            format!("block{i}")
        } else {
            format!("blocks.{i}")
        }
    }
}

/// ConvTranspose2d with kernel 4, stride 2, padding 1: twice the input's size.
struct UpConv {
    weight: Tensor,
    bias: Tensor,
}

impl UpConv {
    fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{name}.weight"))?,
            bias: w.tensor(&format!("{name}.bias"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv_transpose2d(
            &self.weight,
            Some(&self.bias),
            [2, 2],
            [1, 1],
            [0, 0],
            1,
            [1, 1],
        )
    }
}

struct Head {
    convs: [Conv2d; 3],
    up: UpConv,
}

impl Head {
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = leaky_relu(&self.convs[0].forward(x, 2, 1), SLOPE);
        let x = leaky_relu(&self.convs[1].same(&x), SLOPE);
        let x = leaky_relu(&self.convs[2].same(&x), SLOPE);
        self.up.forward(&x)
    }
}

struct Block {
    down: [Conv2d; 2],
    /// Residual convolutions with their per-channel gains.
    residual: Vec<(Conv2d, Tensor)>,
    up: UpConv,
}

/// Bilinear resize by `factor` (`F.interpolate(scale_factor=…)` without align_corners).
fn resize(x: &Tensor, factor: f64) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    let size = [
        (h as f64 * factor).floor() as i64,
        (w as f64 * factor).floor() as i64,
    ];
    x.upsample_bilinear2d(size, false, factor, factor)
}

impl Block {
    /// The flow update (4 channels: to frame 0, to frame 1), the mask logit and the features the
    /// next block takes, at the input's size; the block itself runs `scale` times smaller.
    fn forward(&self, x: &Tensor, flow: Option<&Tensor>, scale: f64) -> (Tensor, Tensor, Tensor) {
        let mut x = resize(x, 1.0 / scale);
        if let Some(flow) = flow {
            x = Tensor::cat(&[x, resize(flow, 1.0 / scale) / scale], 1);
        }
        let x = leaky_relu(&self.down[0].forward(&x, 2, 1), SLOPE);
        let mut feat = leaky_relu(&self.down[1].forward(&x, 2, 1), SLOPE);
        for (conv, beta) in &self.residual {
            feat = leaky_relu(&feat.addcmul(&conv.same(&feat), beta), SLOPE);
        }
        let out = resize(&self.up.forward(&feat).pixel_shuffle(2), scale);
        (
            out.narrow(1, 0, 4) * scale,
            out.narrow(1, 4, 1),
            out.narrow(1, 5, out.size()[1] - 5),
        )
    }
}

pub struct Rife {
    head: Head,
    blocks: Vec<Block>,
}

impl Rife {
    pub fn load(w: &Weights, config: &RifeConfig) -> Result<Self> {
        let conv = |name: String| Conv2d::load(w, &name);
        let head = Head {
            convs: [
                conv("encode.cnn0".into())?,
                conv("encode.cnn1".into())?,
                conv("encode.cnn2".into())?,
            ],
            up: UpConv::load(w, "encode.cnn3")?,
        };
        let blocks = (0..5)
            .map(|i| -> Result<Block> {
                let b = config.block(i);
                Ok(Block {
                    down: [
                        conv(format!("{b}.conv0.0.0"))?,
                        conv(format!("{b}.conv0.1.0"))?,
                    ],
                    residual: (0..8)
                        .map(|j| -> Result<(Conv2d, Tensor)> {
                            let r = format!("{b}.convblock.{j}");
                            Ok((conv(format!("{r}.conv"))?, w.tensor(&format!("{r}.beta"))?))
                        })
                        .collect::<Result<_>>()
                        .with_context(|| format!("RIFE {b}"))?,
                    up: UpConv::load(w, &format!("{b}.lastconv.0"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { head, blocks })
    }

    /// The head features of one frame `[1, 3, H, W]`, computed once per frame and shared by the
    /// pairs it belongs to.
    pub fn features(&self, frame: &Tensor) -> Tensor {
        self.head.forward(frame)
    }

    /// The frames between `img0` and `img1` (`[1, 3, H, W]`, H and W multiples of
    /// [`PAD_ALIGN`]) at `timesteps` `[B, 1, H, W]`: `[B, 3, H, W]`.
    pub fn forward(
        &self,
        (img0, f0): (&Tensor, &Tensor),
        (img1, f1): (&Tensor, &Tensor),
        timesteps: &Tensor,
    ) -> Tensor {
        let b = timesteps.size()[0];
        let grid = WarpGrid::new(img0.size()[2], img0.size()[3], img0.device());
        let expand = |t: &Tensor| t.expand([b, -1, -1, -1], false);
        let (img0, img1, f0, f1) = (expand(img0), expand(img1), expand(f0), expand(f1));
        let first = Tensor::cat(&[&img0, &img1, &f0, &f1, timesteps], 1);
        let (mut flow, mut mask, mut feat) = self.blocks[0].forward(&first, None, SCALES[0]);
        let mut warped = (grid.warp(&img0, &flow, 0), grid.warp(&img1, &flow, 2));
        for (block, &scale) in self.blocks.iter().zip(&SCALES).skip(1) {
            let x = Tensor::cat(
                &[
                    &warped.0,
                    &warped.1,
                    &grid.warp(&f0, &flow, 0),
                    &grid.warp(&f1, &flow, 2),
                    timesteps,
                    &mask,
                    &feat,
                ],
                1,
            );
            let (delta, m, f) = block.forward(&x, Some(&flow), scale);
            flow += delta;
            (mask, feat) = (m, f);
            warped = (grid.warp(&img0, &flow, 0), grid.warp(&img1, &flow, 2));
        }
        warped.1.lerp_tensor(&warped.0, &mask.sigmoid())
    }
}

/// The sampling grid of backward warping at one size, in float32 as ComfyUI keeps it.
struct WarpGrid {
    /// `[1, 2, H, W]`: x then y, −1…1 across the frame.
    base: Tensor,
    /// Pixels per unit of grid coordinate, x then y, as 0-dim tensors on the device.
    divisor: [Tensor; 2],
}

impl WarpGrid {
    fn new(h: i64, w: i64, device: tch::Device) -> Self {
        let options = (Kind::Float, device);
        let xs = Tensor::linspace(-1.0, 1.0, w, options)
            .view([1, w])
            .expand([h, w], false);
        let ys = Tensor::linspace(-1.0, 1.0, h, options)
            .view([h, 1])
            .expand([h, w], false);
        Self {
            base: Tensor::stack(&[xs, ys], 0).unsqueeze(0),
            divisor: [w, h].map(|n| Tensor::full([], (n as f64 - 1.0) / 2.0, options)),
        }
    }

    /// `image` sampled where `flow`'s channels `channel`, `channel + 1` (in pixels) point,
    /// bilinear with the border repeated, back in the image's dtype.
    fn warp(&self, image: &Tensor, flow: &Tensor, channel: i64) -> Tensor {
        // The division happens in the flow's dtype, as ComfyUI divides by a 0-dim tensor.
        let normalized = Tensor::cat(
            &[
                flow.narrow(1, channel, 1) / &self.divisor[0],
                flow.narrow(1, channel + 1, 1) / &self.divisor[1],
            ],
            1,
        )
        .to_kind(Kind::Float);
        let b = image.size()[0];
        let grid = (self.base.expand([b, -1, -1, -1], false) + normalized).permute([0, 2, 3, 1]);
        image
            .to_kind(Kind::Float)
            .grid_sampler(&grid, 0, 1, true)
            .to_kind(image.kind())
    }
}
