//! ComfyUI's `common_upscale`: resize `[B, C, H, W]` samples, optionally centre-cropping
//! to the target aspect ratio first.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// Python's `round()`: halves go to the even neighbour.
pub fn py_round(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

pub fn common_upscale(
    samples: &Tensor,
    width: i64,
    height: i64,
    method: &str,
    crop: &str,
) -> Result<Tensor> {
    let size = samples.size();
    if size.len() > 4 {
        // Video latents `[B, C, T…, H, W]`: every frame resized as an image, as ComfyUI folds
        // the frames into the batch.
        let (b, c) = (size[0], size[1]);
        let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
        let frames = samples
            .reshape([b, c, -1, h, w])
            .movedim(2, 1)
            .reshape([-1, c, h, w]);
        let out = common_upscale(&frames, width, height, method, crop)?;
        let mut shape = size[..size.len() - 2].to_vec();
        shape.extend([height, width]);
        return Ok(out
            .reshape([b, -1, c, height, width])
            .movedim(2, 1)
            .reshape(shape.as_slice()));
    }
    let (old_h, old_w) = (size[size.len() - 2], size[size.len() - 1]);
    let cropped = if crop == "center" {
        let old_aspect = old_w as f64 / old_h as f64;
        let new_aspect = width as f64 / height as f64;
        let (mut x, mut y) = (0, 0);
        if old_aspect > new_aspect {
            x = py_round((old_w as f64 - old_w as f64 * (new_aspect / old_aspect)) / 2.0);
        } else if old_aspect < new_aspect {
            y = py_round((old_h as f64 - old_h as f64 * (old_aspect / new_aspect)) / 2.0);
        }
        samples
            .narrow(-2, y, old_h - y * 2)
            .narrow(-1, x, old_w - x * 2)
    } else {
        samples.shallow_clone()
    };
    let out = match method {
        "nearest-exact" => cropped.internal_upsample_nearest_exact2d([height, width], None, None),
        "bilinear" => cropped.upsample_bilinear2d([height, width], false, None, None),
        "bicubic" => cropped.upsample_bicubic2d([height, width], false, None, None),
        "area" => cropped.adaptive_avg_pool2d([height, width]),
        "lanczos" => lanczos(&cropped, width, height)?,
        other => bail!("unknown upscale method: {other}"),
    };
    Ok(out)
}

/// Pillow's Lanczos on 8-bit images, as ComfyUI does it (through `uint8` and back).
fn lanczos(samples: &Tensor, width: i64, height: i64) -> Result<Tensor> {
    let size = samples.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let mut frames = Vec::new();
    for i in 0..b {
        let hwc = samples.get(i).permute([1, 2, 0]);
        let (bytes, _, _, _) = crate::imageio::to_u8(&hwc)?;
        let resized = crate::pil_resample::resize_lanczos(
            &bytes,
            (w as usize, h as usize, c as usize),
            (width as usize, height as usize),
        )?;
        let t = Tensor::from_slice(&resized)
            .view([height, width, c])
            .permute([2, 0, 1])
            .to_kind(Kind::Float)
            / 255.0;
        frames.push(t);
    }
    Ok(Tensor::stack(&frames, 0).to_device(samples.device()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(py_round(2.5), 2);
        assert_eq!(py_round(3.5), 4);
        assert_eq!(py_round(-2.5), -2);
        assert_eq!(py_round(2.6), 3);
    }

    #[test]
    fn center_crop_keeps_aspect() {
        let s = Tensor::arange(2 * 4 * 8, (Kind::Float, tch::Device::Cpu)).view([1, 2, 4, 8]);
        let out = common_upscale(&s, 4, 4, "nearest-exact", "center").unwrap();
        assert_eq!(out.size(), vec![1, 2, 4, 4]);
        // The centre 4×4 of a 4×8 image starts at column 2.
        assert_eq!(out.double_value(&[0, 0, 0, 0]), 2.0);
    }
}
