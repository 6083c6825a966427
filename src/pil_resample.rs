//! Pillow's Lanczos resize on 8-bit images, reproduced to the byte: ComfyUI scales with
//! `PIL.Image.resize(..., LANCZOS)` wherever a node offers "lanczos", so the same workflow
//! gives the same pixels on both servers. Pillow's `Resample.c` computes each axis's
//! coefficients in double precision, turns them into 22-bit fixed point, and runs the
//! horizontal pass before the vertical one, rounding to 8 bits between them. RGBA is resized
//! premultiplied by its alpha, as `Image.resize` converts it to `RGBa` first.

use anyhow::{bail, Result};

/// Fixed-point fraction bits of Pillow's 8-bit resampling (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;
const LANCZOS_SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos(x: f64) -> f64 {
    if (-LANCZOS_SUPPORT..LANCZOS_SUPPORT).contains(&x) {
        sinc(x) * sinc(x / LANCZOS_SUPPORT)
    } else {
        0.0
    }
}

/// One axis's taps: for each output index, the first source index and its fixed-point weights.
struct AxisTaps {
    first: Vec<usize>,
    weights: Vec<Vec<i64>>,
}

fn axis_taps(in_size: usize, out_size: usize) -> AxisTaps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = LANCZOS_SUPPORT * filter_scale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // Pillow truncates toward zero here (a C cast), then clamps.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let raw: Vec<f64> = (xmin..xmax)
            .map(|x| lanczos((x as f64 - center + 0.5) / filter_scale))
            .collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|w| {
                let w = if total != 0.0 { w / total } else { *w };
                let scaled = w * (1u64 << PRECISION_BITS) as f64;
                // Pillow rounds half away from zero by a cast after adding ±0.5.
                (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i64
            })
            .collect();
        first.push(xmin);
        weights.push(fixed);
    }
    AxisTaps { first, weights }
}

fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resamples `src` (`count` lines of `len` samples, `stride` apart, `step` apart within a
/// line) along the line into `dst`, laid out alike with the output length.
fn resample_lines(src: &[u8], dims: Dims, taps: &AxisTaps, dst: &mut [u8], out: Dims) {
    let half = 1i64 << (PRECISION_BITS - 1);
    for line in 0..dims.count {
        for (o, (start, weights)) in taps.first.iter().zip(&taps.weights).enumerate() {
            for band in 0..dims.bands {
                let mut sum = half;
                for (k, w) in weights.iter().enumerate() {
                    sum += src[line * dims.stride + (start + k) * dims.step + band] as i64 * w;
                }
                dst[line * out.stride + o * out.step + band] = clip8(sum);
            }
        }
    }
}

/// How one pass walks an interleaved `[h, w, bands]` buffer.
#[derive(Clone, Copy)]
struct Dims {
    count: usize,
    stride: usize,
    step: usize,
    bands: usize,
}

/// Resizes an interleaved `[h, w, channels]` 8-bit image as Pillow's LANCZOS does.
pub fn resize_lanczos(
    pixels: &[u8],
    (w, h, channels): (usize, usize, usize),
    (nw, nh): (usize, usize),
) -> Result<Vec<u8>> {
    if pixels.len() != w * h * channels {
        bail!("image buffer size mismatch");
    }
    if !matches!(channels, 1 | 3 | 4) {
        bail!("lanczos supports 1, 3 or 4 channels, not {channels}");
    }
    if nw == 0 || nh == 0 || w == 0 || h == 0 {
        bail!("cannot resize {w}×{h} to {nw}×{nh}");
    }
    if (nw, nh) == (w, h) {
        return Ok(pixels.to_vec());
    }
    let premultiplied = channels == 4;
    let mut image = pixels.to_vec();
    if premultiplied {
        premultiply(&mut image);
    }
    let c = channels;
    if nw != w {
        let mut wide = vec![0u8; h * nw * c];
        let src = Dims {
            count: h,
            stride: w * c,
            step: c,
            bands: c,
        };
        let dst = Dims {
            count: h,
            stride: nw * c,
            step: c,
            bands: c,
        };
        resample_lines(&image, src, &axis_taps(w, nw), &mut wide, dst);
        image = wide;
    }
    if nh != h {
        let mut tall = vec![0u8; nh * nw * c];
        // Columns are the lines now: each of the nw·c samples of a row walks down the rows.
        let src = Dims {
            count: nw,
            stride: c,
            step: nw * c,
            bands: c,
        };
        resample_lines(&image, src, &axis_taps(h, nh), &mut tall, src);
        image = tall;
    }
    if premultiplied {
        unpremultiply(&mut image);
    }
    Ok(image)
}

/// Pillow's `RGBA` → `RGBa`: each colour times alpha / 255, rounded by `MULDIV255`.
fn premultiply(rgba: &mut [u8]) {
    for px in rgba.chunks_exact_mut(4) {
        let alpha = px[3] as u32;
        for v in &mut px[..3] {
            let t = *v as u32 * alpha + 128;
            *v = ((t + (t >> 8)) >> 8) as u8;
        }
    }
}

/// Pillow's `RGBa` → `RGBA`: opaque and transparent pixels stay, others divide by alpha.
fn unpremultiply(rgba: &mut [u8]) {
    for px in rgba.chunks_exact_mut(4) {
        let alpha = px[3] as u32;
        if alpha == 0 || alpha == 255 {
            continue;
        }
        for v in &mut px[..3] {
            *v = ((255 * *v as u32) / alpha).min(255) as u8;
        }
    }
}
