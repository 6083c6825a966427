//! The image filters of `comfy_extras/nodes_post_processing.py`, as tensor math on IMAGE
//! batches `[B, H, W, C]`: blending in six modes, Gaussian blur and unsharp-style sharpening,
//! with upstream's kernel (a Gaussian over `linspace(-1, 1)`, so sigma is relative to the
//! radius) and reflect padding.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::upscale::common_upscale;

/// ImageBlend's modes.
pub const BLEND_MODES: [&str; 6] = [
    "normal",
    "multiply",
    "screen",
    "overlay",
    "soft_light",
    "difference",
];

/// `node_helpers.image_alpha_fix`: `source` cut or padded (alpha 1) to `destination`'s channels.
fn alpha_fixed(destination: &Tensor, source: &Tensor) -> Tensor {
    let (want, have) = (
        *destination.size().last().expect("an image"),
        *source.size().last().expect("an image"),
    );
    if want < have {
        source.narrow(-1, 0, want)
    } else if want > have {
        let alpha = source.narrow(-1, 0, 1).ones_like();
        Tensor::cat(&[source.shallow_clone(), alpha], -1)
    } else {
        source.shallow_clone()
    }
}

/// The blend of `a` (below) and `b` (above) before mixing by the factor.
fn blended(a: &Tensor, b: &Tensor, mode: &str) -> Result<Tensor> {
    Ok(match mode {
        "normal" => b.shallow_clone(),
        "multiply" => a * b,
        "screen" => 1.0 - (1.0 - a) * (1.0 - b),
        "overlay" => (a * b * 2.0).where_self(&a.le(0.5), &(1.0 - (1.0 - a) * (1.0 - b) * 2.0)),
        "soft_light" => {
            // W3C's soft light: D(a) is a cubic below 1/4, sqrt above.
            let d = (((a * 16.0 - 12.0) * a + 4.0) * a).where_self(&a.le(0.25), &a.sqrt());
            let darken: Tensor = a - (1.0 - b * 2.0) * a * (1.0 - a);
            let lighten: Tensor = a + (b * 2.0 - 1.0) * (d - a);
            darken.where_self(&b.le(0.5), &lighten)
        }
        "difference" => a - b,
        other => bail!("Unsupported blend mode: {other}"),
    })
}

/// ImageBlend: `image2` (resized bicubically with a centre crop to `image1` when their shapes
/// differ) blended onto `image1` in `mode`, mixed by `factor`, clamped to 0..1.
pub fn blend(image1: &Tensor, image2: &Tensor, factor: f64, mode: &str) -> Result<Tensor> {
    let mut image2 = alpha_fixed(image1, image2);
    if image1.size() != image2.size() {
        let size = image1.size();
        let resized = common_upscale(
            &image2.permute([0, 3, 1, 2]),
            size[2],
            size[1],
            "bicubic",
            "center",
        )?;
        image2 = resized.permute([0, 2, 3, 1]);
    }
    let top = blended(image1, &image2, mode)?;
    Ok((image1 * (1.0 - factor) + top * factor).clamp(0.0, 1.0))
}

/// Upstream's `gaussian_kernel`: `exp(−d² / 2σ²)` over a `size`×`size` grid spanning −1..1,
/// normalised to sum 1.
fn gaussian_kernel(size: i64, sigma: f64) -> Tensor {
    let line = Tensor::linspace(-1.0, 1.0, size, (Kind::Float, tch::Device::Cpu));
    let grid = Tensor::meshgrid_indexing(&[&line, &line], "ij");
    let (x, y) = (&grid[0], &grid[1]);
    let d = (x * x + y * y).sqrt();
    let g = (-(&d * &d) / (2.0 * sigma * sigma)).exp();
    &g / g.sum(Kind::Float)
}

/// The image convolved per channel with `kernel` `[k, k]`, reflect-padded by `radius` (then
/// zero-padded and cropped, as upstream's call does, which leaves the same pixels).
fn convolved(image: &Tensor, kernel: &Tensor, radius: i64) -> Tensor {
    let channels = *image.size().last().expect("an image");
    let k = kernel.size()[0];
    let weight = kernel
        .to_kind(image.kind())
        .repeat([channels, 1, 1])
        .unsqueeze(1);
    let padded = image
        .permute([0, 3, 1, 2])
        .reflection_pad2d([radius, radius, radius, radius]);
    let out = padded.conv2d(
        &weight,
        None::<Tensor>,
        [1, 1],
        [k / 2, k / 2],
        [1, 1],
        channels,
    );
    let size = out.size();
    out.narrow(2, radius, size[2] - 2 * radius)
        .narrow(3, radius, size[3] - 2 * radius)
        .permute([0, 2, 3, 1])
}

/// ImageBlur.
pub fn blur(image: &Tensor, radius: i64, sigma: f64) -> Tensor {
    if radius == 0 {
        return image.shallow_clone();
    }
    convolved(image, &gaussian_kernel(radius * 2 + 1, sigma), radius)
}

/// ImageSharpen: the negated, scaled Gaussian with its centre raised so the kernel sums to 1.
pub fn sharpen(image: &Tensor, radius: i64, sigma: f64, alpha: f64) -> Tensor {
    if radius == 0 {
        return image.shallow_clone();
    }
    let size = radius * 2 + 1;
    let kernel = gaussian_kernel(size, sigma) * -(alpha * 10.0);
    let center = size / 2;
    let raised = kernel.get(center).get(center) - kernel.sum(Kind::Float) + 1.0;
    kernel.get(center).get(center).copy_(&raised);
    convolved(image, &kernel, radius).clamp(0.0, 1.0)
}
