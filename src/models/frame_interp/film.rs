//! FILM (Frame Interpolation for Large Motion) as ComfyUI runs it
//! (`comfy_extras/frame_interpolation_models/film_net.py`): a 7-level image pyramid whose
//! levels share one 4-layer feature extractor, flows estimated coarse to fine in both
//! directions (the 4 coarsest levels share one estimator), both frames' pyramids warped to the
//! timestep in float32, and the 5 finest levels fused into the frame.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::models::layers::{leaky_relu, Conv2d};
use crate::models::weights::Weights;

const SLOPE: f64 = 0.2;
const PYRAMID_LEVELS: usize = 7;
/// Frames this small still have one pixel at the coarsest level.
pub const MIN_SIZE: i64 = 1 << (PYRAMID_LEVELS - 1);
const FUSION_LEVELS: usize = 5;
/// Levels of the extractor each pyramid level's features gather.
const SUB_LEVELS: usize = 4;
/// Flow estimators of their own, for the finest levels; the rest share the coarsest one.
const SPECIALIZED_LEVELS: usize = 3;

/// FILM's convolution: "same" padding, for even kernels one extra row and column at the bottom
/// and right, and an optional LeakyReLU.
struct FilmConv {
    conv: Conv2d,
    activation: bool,
}

impl FilmConv {
    fn load(w: &Weights, name: &str, activation: bool) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(w, &format!("{name}.conv"))?,
            activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = if self.conv.kernel_size() % 2 == 0 {
            self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]), 1, 0)
        } else {
            self.conv.same(x)
        };
        if self.activation {
            leaky_relu(&y, SLOPE)
        } else {
            y
        }
    }
}

fn chain(convs: &[FilmConv], x: &Tensor) -> Tensor {
    convs
        .iter()
        .fold(x.shallow_clone(), |h, conv| conv.forward(&h))
}

/// A flow estimator: 3×3 convolutions, then two 1×1 down to the 2 flow channels.
struct FlowEstimator(Vec<FilmConv>);

impl FlowEstimator {
    fn load(w: &Weights, name: &str) -> Result<Self> {
        let count = (0..)
            .take_while(|k| w.has(&format!("{name}._convs.{k}.conv.weight")))
            .count();
        let convs = (0..count)
            .map(|k| FilmConv::load(w, &format!("{name}._convs.{k}"), k + 1 < count))
            .collect::<Result<_>>()?;
        Ok(Self(convs))
    }

    fn forward(&self, a: &Tensor, b: &Tensor) -> Tensor {
        chain(&self.0, &Tensor::cat(&[a, b], 1))
    }
}

/// One frame's image pyramid and feature pyramid, computed once per frame.
pub struct FramePyramids {
    images: Vec<Tensor>,
    features: Vec<Tensor>,
}

pub struct Film {
    /// The extractor's levels, each two 3×3 convolutions.
    extractor: Vec<[FilmConv; 2]>,
    /// The estimator the coarse levels share.
    shared: FlowEstimator,
    /// Estimators of the finest levels, finest first.
    specialized: Vec<FlowEstimator>,
    /// The fusion's stages, coarsest first: a 2×2 convolution after the nearest upsampling,
    /// then two 3×3.
    fusion: Vec<[FilmConv; 3]>,
    /// The 1×1 convolution to RGB.
    output: Conv2d,
}

impl Film {
    pub fn load(w: &Weights) -> Result<Self> {
        let extractor = (0..SUB_LEVELS)
            .map(|i| -> Result<[FilmConv; 2]> {
                let name = |j| format!("extract.extract_sublevels.convs.{i}.{j}");
                Ok([
                    FilmConv::load(w, &name(0), true)?,
                    FilmConv::load(w, &name(1), true)?,
                ])
            })
            .collect::<Result<_>>()?;
        // The file lists the specialized estimators coarsest first.
        let specialized = (0..SPECIALIZED_LEVELS)
            .rev()
            .map(|j| FlowEstimator::load(w, &format!("predict_flow._predictors.{j}")))
            .collect::<Result<_>>()?;
        let fusion = (0..SUB_LEVELS)
            .map(|k| -> Result<[FilmConv; 3]> {
                let name = |j| format!("fuse.convs.{k}.{j}");
                Ok([
                    FilmConv::load(w, &name(0), false)?,
                    FilmConv::load(w, &name(1), true)?,
                    FilmConv::load(w, &name(2), true)?,
                ])
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            extractor,
            shared: FlowEstimator::load(w, "predict_flow._predictor")?,
            specialized,
            fusion,
            output: Conv2d::load(w, "fuse.output_conv")?,
        })
    }

    /// The pyramids of one frame `[1, 3, H, W]`.
    pub fn pyramids(&self, frame: &Tensor) -> FramePyramids {
        let mut images = vec![frame.shallow_clone()];
        for _ in 1..PYRAMID_LEVELS {
            let coarser =
                images
                    .last()
                    .unwrap()
                    .avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None);
            images.push(coarser);
        }
        // Each level runs the extractor's first few layers, pooling between them; level i's
        // features are its own first layer's with the deeper layers of the finer levels that
        // land on its size.
        let sub: Vec<Vec<Tensor>> = images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let layers = (PYRAMID_LEVELS - i).min(SUB_LEVELS);
                let mut head = image.shallow_clone();
                let mut out = Vec::with_capacity(layers);
                for (l, convs) in self.extractor.iter().take(layers).enumerate() {
                    if l > 0 {
                        head = head.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None);
                    }
                    head = chain(convs, &head);
                    out.push(head.shallow_clone());
                }
                out
            })
            .collect();
        let features = (0..PYRAMID_LEVELS)
            .map(|i| {
                let parts: Vec<&Tensor> =
                    (0..SUB_LEVELS.min(i + 1)).map(|j| &sub[i - j][j]).collect();
                Tensor::cat(&parts, 1)
            })
            .collect();
        FramePyramids { images, features }
    }

    /// The flow pyramid from frame `a` to frame `b`, finest level first: at each level the coarser
    /// flow, upsampled, plus a residual estimated against `b`'s features warped by it. (ComfyUI
    /// rebuilds the pyramid from the residuals afterwards with the same operations in the same
    /// order, which gives these tensors again.)
    fn flows(&self, a: &[Tensor], b: &[Tensor], grids: &[WarpGrid]) -> Vec<Tensor> {
        let coarsest = PYRAMID_LEVELS - 1;
        let mut pyramid = vec![self.shared.forward(&a[coarsest], &b[coarsest])];
        for level in (0..coarsest).rev() {
            let estimator = self.specialized.get(level).unwrap_or(&self.shared);
            let v = upsample_flow(pyramid.last().unwrap(), &a[level]);
            let residual = estimator.forward(&a[level], &grids[level].warp(&b[level], &v));
            pyramid.push(v + residual);
        }
        pyramid.reverse();
        pyramid
    }

    /// The frames between frame 0 and frame 1 at each of `timesteps` (`[T]`, in the frames'
    /// dtype): `[T, 3, H, W]`.
    pub fn forward(&self, p0: &FramePyramids, p1: &FramePyramids, timesteps: &Tensor) -> Tensor {
        let grids: Vec<WarpGrid> = p0.features.iter().map(WarpGrid::new).collect();
        let forward_flows = self.flows(&p0.features, &p1.features, &grids);
        let backward_flows = self.flows(&p1.features, &p0.features, &grids);
        let to_warp = |p: &FramePyramids| -> Vec<Tensor> {
            (0..FUSION_LEVELS)
                .map(|i| Tensor::cat(&[&p.images[i], &p.features[i]], 1))
                .collect()
        };
        let (warp0, warp1) = (to_warp(p0), to_warp(p1));
        let frames: Vec<Tensor> = (0..timesteps.size()[0])
            .map(|i| {
                let t = timesteps.get(i);
                let aligned: Vec<Tensor> = (0..FUSION_LEVELS)
                    .map(|i| {
                        let backward = &backward_flows[i] * &t;
                        let forward = &forward_flows[i] * (1 - &t);
                        Tensor::cat(
                            &[
                                grids[i].warp(&warp0[i], &backward),
                                grids[i].warp(&warp1[i], &forward),
                                backward,
                                forward,
                            ],
                            1,
                        )
                    })
                    .collect();
                self.fuse(&aligned)
            })
            .collect();
        Tensor::cat(&frames, 0)
    }

    fn fuse(&self, aligned: &[Tensor]) -> Tensor {
        let mut net = aligned[FUSION_LEVELS - 1].shallow_clone();
        for (stage, level) in self.fusion.iter().zip((0..SUB_LEVELS).rev()) {
            let size = aligned[level].size();
            let up = net.upsample_nearest2d([size[2], size[3]], None, None);
            let up = stage[0].forward(&up);
            net = stage[2].forward(&stage[1].forward(&Tensor::cat(&[&aligned[level], &up], 1)));
        }
        self.output.same(&net)
    }
}

/// The coarser flow `v` at `like`'s size, its vectors doubled.
fn upsample_flow(v: &Tensor, like: &Tensor) -> Tensor {
    let size = like.size();
    v.upsample_bilinear2d([size[2], size[3]], false, None, None) * 2
}

/// FILM's backward warp at one pyramid level: pixel centres in −1…1, bilinear with the border
/// repeated, in float32 as ComfyUI computes it.
struct WarpGrid {
    xs: Tensor,
    ys: Tensor,
    size: (i64, i64),
}

impl WarpGrid {
    fn new(like: &Tensor) -> Self {
        let (h, w) = (like.size()[2], like.size()[3]);
        let axis = |n: i64, device: Device| {
            let edge = 1.0 - 1.0 / n as f64;
            Tensor::linspace(-edge, edge, n, (Kind::Float, device))
        };
        Self {
            xs: axis(w, like.device()).view([1, 1, w]),
            ys: axis(h, like.device()).view([1, h, 1]),
            size: (h, w),
        }
    }

    fn warp(&self, image: &Tensor, flow: &Tensor) -> Tensor {
        let (h, w) = self.size;
        let dx = flow.select(1, 0).to_kind(Kind::Float) / (w as f64 * 0.5);
        let dy = flow.select(1, 1).to_kind(Kind::Float) / (h as f64 * 0.5);
        let grid = Tensor::stack(&[&self.xs + dx, &self.ys + dy], 3);
        image
            .to_kind(Kind::Float)
            .grid_sampler(&grid, 0, 1, false)
            .to_kind(image.kind())
    }
}
