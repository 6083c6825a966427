//! Image files ↔ IMAGE/MASK tensors, the way ComfyUI's PIL code converts them.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageReader};
use serde_json::Value as Json;
use tch::{Kind, Tensor};

use crate::pyjson;

/// A decoded file, EXIF orientation applied.
pub fn open(path: &Path) -> Result<DynamicImage> {
    let reader = ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()?;
    let mut decoder = reader
        .into_decoder()
        .with_context(|| format!("cannot identify image file {}", path.display()))?;
    let orientation = decoder.orientation()?;
    let mut img = DynamicImage::from_decoder(decoder)
        .with_context(|| format!("cannot decode {}", path.display()))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Frames `[N, H, W, C]` decoded from `path` turned as the file's EXIF orientation says (what
/// `open` applies); unchanged when the file has none or its header cannot be read.
pub fn oriented_like_file(path: &Path, frames: Tensor) -> Tensor {
    use image::metadata::Orientation as O;
    let orientation = ImageReader::open(path)
        .ok()
        .and_then(|r| r.with_guessed_format().ok())
        .and_then(|r| r.into_decoder().ok())
        .and_then(|mut d| d.orientation().ok())
        .unwrap_or(O::NoTransforms);
    // rot90 with k = −1 turns clockwise in the (H, W) plane.
    let clockwise = |t: &Tensor, quarter_turns: i64| t.rot90(-quarter_turns, [1, 2]);
    match orientation {
        O::NoTransforms => frames,
        O::Rotate90 => clockwise(&frames, 1),
        O::Rotate180 => clockwise(&frames, 2),
        O::Rotate270 => clockwise(&frames, 3),
        O::FlipHorizontal => frames.flip([2]),
        O::FlipVertical => frames.flip([1]),
        O::Rotate90FlipH => clockwise(&frames, 1).flip([2]),
        O::Rotate270FlipH => clockwise(&frames, 3).flip([2]),
    }
}

/// `[H, W, C]` u8 samples as a `[1, H, W, C]` float tensor in 0..1.
fn to_tensor(samples: &[u8], w: u32, h: u32, c: i64) -> Tensor {
    Tensor::from_slice(samples)
        .view([1, h as i64, w as i64, c])
        .to_kind(Kind::Float)
        / 255.0
}

/// ComfyUI's `LoadImage`: RGB image `[1,H,W,3]` and mask `[1,H,W]` = 1 − alpha (zeros 64×64 without alpha).
pub fn image_and_mask(img: &DynamicImage) -> (Tensor, Tensor) {
    let (w, h) = (img.width(), img.height());
    let rgb = img.to_rgb8();
    let image = to_tensor(rgb.as_raw(), w, h, 3);
    let mask = if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        let alpha: Vec<u8> = rgba.pixels().map(|p| p.0[3]).collect();
        1.0 - to_tensor(&alpha, w, h, 1).squeeze_dim(-1)
    } else {
        Tensor::zeros([1, 64, 64], (Kind::Float, tch::Device::Cpu))
    };
    (image, mask)
}

/// One `[H, W, C]` image as 8-bit samples: `uint8(clip(255·x, 0, 255))`, truncating.
pub fn to_u8(image: &Tensor) -> Result<(Vec<u8>, u32, u32, usize)> {
    let image = if image.dim() == 2 {
        image.unsqueeze(-1)
    } else {
        image.shallow_clone()
    };
    let size = image.size();
    let [h, w, c] = size[..] else {
        return Err(anyhow!(
            "expected an image of shape [H, W, C], got {size:?}"
        ));
    };
    let bytes = (image.to_device(tch::Device::Cpu).to_kind(Kind::Float) * 255.0)
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .contiguous();
    let mut out = vec![0u8; (h * w * c) as usize];
    let n = out.len();
    bytes.copy_data(&mut out, n);
    Ok((out, w as u32, h as u32, c as usize))
}

/// Writes a PNG with ComfyUI's text chunks (`prompt`, then each `extra_pnginfo` key).
pub fn save_png(path: &Path, image: &Tensor, text: &[(String, String)], fast: bool) -> Result<()> {
    let (samples, w, h, c) = to_u8(image)?;
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), w, h);
    enc.set_color(match c {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        4 => png::ColorType::Rgba,
        _ => png::ColorType::Rgb,
    });
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(if fast {
        png::Compression::Fast
    } else {
        png::Compression::Default
    });
    for (key, value) in text {
        enc.add_text_chunk(key.clone(), value.clone())?;
    }
    let mut writer = enc.write_header()?;
    writer.write_image_data(&samples)?;
    writer.finish()?;
    Ok(())
}

/// The PNG text chunks ComfyUI embeds: `prompt` and the `extra_pnginfo` entries.
pub fn metadata_chunks(
    prompt: Option<&Json>,
    extra_pnginfo: Option<&Json>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(p) = prompt {
        out.push(("prompt".to_string(), pyjson::dumps(p)));
    }
    if let Some(Json::Object(extra)) = extra_pnginfo {
        for (k, v) in extra {
            out.push((k.clone(), pyjson::dumps(v)));
        }
    }
    out
}

/// A preview JPEG (quality 95) of an `[H, W, 3]` image, shrunk bilinearly to fit `max_side`.
pub fn preview_jpeg(rgb: &Tensor, max_side: u32) -> Result<Vec<u8>> {
    let (samples, w, h, c) = to_u8(rgb)?;
    if c != 3 {
        return Err(anyhow!("previews need 3 channels, got {c}"));
    }
    let mut img = image::RgbImage::from_raw(w, h, samples)
        .ok_or_else(|| anyhow!("preview buffer size mismatch"))?;
    if w.max(h) > max_side {
        let scale = max_side as f64 / w.max(h) as f64;
        let (nw, nh) = (
            ((w as f64 * scale) as u32).max(1),
            ((h as f64 * scale) as u32).max(1),
        );
        img = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95).encode_image(&img)?;
    Ok(out.into_inner())
}
