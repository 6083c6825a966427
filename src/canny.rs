//! Canny edge detection as ComfyUI's Canny node runs it (`kornia.filters.canny` of kornia
//! 0.9, default 5×5 σ = 1 blur): grey by 0.299/0.587/0.114, Gaussian blur with reflected
//! borders, the unnormalised Sobel gradient with replicated borders, non-maximum suppression
//! along the gradient rounded to 45° (ties kept towards the left/upper neighbour), strict
//! thresholds, and hysteresis over the 8 neighbours until nothing changes. Each step is the
//! libtorch op kornia calls, so the edges are the same.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

const BLUR_SIZE: i64 = 5;
const BLUR_SIGMA: f64 = 1.0;
const EPS: f64 = 1e-6;
/// The neighbour each of the 8 directions (then the pixel itself) looks at, as (dy, dx).
const WINDOW: [(i64, i64); 9] = [
    (0, 1),
    (1, 1),
    (1, 0),
    (1, -1),
    (0, -1),
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, 0),
];

/// Edges (0 or 1) of `images` `[B, 3, H, W]` (or one channel) in float32.
pub fn canny(images: &Tensor, low: f64, high: f64) -> Result<Tensor> {
    ensure!(
        low <= high,
        "Invalid input thresholds. low_threshold should be smaller than or equal to the \
         high_threshold. Got: {low}>{high}"
    );
    ensure!(
        low > 0.0,
        "Invalid low threshold. Should be positive. Got: {low}"
    );
    let images = images.to_kind(Kind::Float);
    let grey = if images.size()[1] == 3 {
        grayscale(&images)
    } else {
        images
    };
    let (gx, gy) = sobel(&blur(&grey));
    let magnitude = suppressed_magnitude(&gx, &gy);
    let weak = magnitude.gt(low).to_kind(Kind::Float);
    let strong = magnitude.gt(high).to_kind(Kind::Float);
    Ok(hysteresis(&weak, &strong))
}

/// kornia's `rgb_to_grayscale`: `r·0.299`, then `addcmul` of g and b.
fn grayscale(images: &Tensor) -> Tensor {
    let weight = |w: f64| {
        Tensor::from_slice(&[w as f32])
            .to_device(images.device())
            .squeeze()
    };
    let [r, g, b] = [0, 1, 2].map(|c| images.select(1, c));
    let out = r * weight(0.299);
    let out = out.addcmul(&g, &weight(0.587));
    out.addcmul(&b, &weight(0.114)).unsqueeze(1)
}

/// The normalised 1-D Gaussian kornia builds (`exp(−x² / 2σ²)` over `x = −2 … 2`).
fn gaussian(device: tch::Device) -> Tensor {
    let x = Tensor::arange(BLUR_SIZE, (Kind::Float, device)) - (BLUR_SIZE / 2) as f64;
    let distance = x.pow_tensor_scalar(2.0);
    let distance = &distance - distance.min();
    let denominator =
        Tensor::from_slice(&[(2.0 * BLUR_SIGMA * BLUR_SIGMA) as f32]).to_device(device);
    let gauss = (-(distance / denominator)).exp();
    &gauss / gauss.sum(Kind::Float)
}

/// `filter2d_separable` with reflected borders: the row pass, then the column pass.
fn blur(grey: &Tensor) -> Tensor {
    let kernel = gaussian(grey.device());
    let r = BLUR_SIZE / 2;
    let rows = grey.pad([r, r, 0, 0], "reflect", None).conv2d(
        &kernel.view([1, 1, 1, BLUR_SIZE]),
        None::<Tensor>,
        1,
        0,
        1,
        1,
    );
    rows.pad([0, 0, r, r], "reflect", None).conv2d(
        &kernel.view([1, 1, BLUR_SIZE, 1]),
        None::<Tensor>,
        1,
        0,
        1,
        1,
    )
}

/// `spatial_gradient(normalized=False)`: the 3×3 Sobel pair over replicated borders.
fn sobel(blurred: &Tensor) -> (Tensor, Tensor) {
    let kernel = Tensor::from_slice(&[
        -1.0f32, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0, // x
        -1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0, // y
    ])
    .view([2, 1, 3, 3])
    .to_device(blurred.device());
    let out =
        blurred
            .pad([1, 1, 1, 1], "replicate", None)
            .conv2d(&kernel, None::<Tensor>, 1, 0, 1, 1);
    (out.narrow(1, 0, 1), out.narrow(1, 1, 1))
}

/// The gradient magnitude where it is a maximum along the gradient direction, else 0.
fn suppressed_magnitude(gx: &Tensor, gy: &Tensor) -> Tensor {
    let (h, w) = (gx.size()[2], gx.size()[3]);
    let zero_pad = |t: &Tensor| t.constant_pad_nd([1, 1, 1, 1]);
    let (px, py) = (zero_pad(gx), zero_pad(gy));
    let padded = (&px * &px + &py * &py + EPS).sqrt();
    let angle = gy.atan2(gx).nan_to_num(None, None, None);
    let angle_45 = (angle * (4.0 / std::f64::consts::PI)).round();
    let window = Tensor::stack(
        &WINDOW.map(|(dy, dx)| padded.narrow(2, 1 + dy, h).narrow(3, 1 + dx, w)),
        2,
    );
    let magnitude = window.select(2, 8);
    let positive = angle_45.remainder(8).to_kind(Kind::Int64);
    let negative = (&angle_45 + 4.0).remainder(8).to_kind(Kind::Int64);
    let neighbours = window.gather(2, &Tensor::stack(&[&positive, &negative], 2), false);
    let beats = |neighbour: &Tensor, direction: &Tensor| {
        let accepts_tie = direction.eq(0).logical_or(&direction.eq(2));
        magnitude
            .gt_tensor(neighbour)
            .logical_or(&accepts_tie.logical_and(&magnitude.eq_tensor(neighbour)))
    };
    let is_max = beats(&neighbours.select(2, 0), &positive)
        .logical_and(&beats(&neighbours.select(2, 1), &negative))
        .logical_and(&magnitude.gt_tensor(&padded.narrow(2, 0, 1).narrow(3, 0, 1)));
    magnitude * is_max
}

/// Weak pixels joined to strong ones through any of their 8 neighbours, one ring per round
/// until nothing changes (kornia's loop), as 0/1.
fn hysteresis(weak: &Tensor, strong: &Tensor) -> Tensor {
    let mut strong = strong.shallow_clone();
    loop {
        let reached = strong.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false);
        let grown = strong.maximum(&(weak * reached));
        if grown.equal(&strong) {
            return strong;
        }
        strong = grown;
    }
}
