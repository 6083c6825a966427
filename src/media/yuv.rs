//! Planar YUV frames to float RGB in 0..1, as upstream's decode gets them (PyAV on FFmpeg 8:
//! `to_ndarray(format="gbrpf32le")`): chroma upsampled bilinearly from where the stream sites
//! it, then the stream's matrix and range, in float. Debian's older swscale computes this
//! conversion differently (and breaks on some formats), so it is done here.

use ffmpeg_next as ff;
use tch::{Device, Kind, Tensor};

/// `Kr`, `Kb` of the frame's matrix; BT.601 when untagged, as swscale assumes.
fn luma_weights(space: ff::color::Space) -> (f64, f64) {
    use ff::color::Space as S;
    match space {
        S::BT709 => (0.2126, 0.0722),
        S::BT2020NCL | S::BT2020CL => (0.2627, 0.0593),
        S::SMPTE240M => (0.212, 0.087),
        S::FCC => (0.30, 0.11),
        _ => (0.299, 0.114),
    }
}

/// Where chroma sample 0 sits, in luma samples from luma sample 0: (horizontal, vertical).
/// Untagged streams are MPEG-2's `left`.
fn chroma_siting(location: ff::ffi::AVChromaLocation) -> (f64, f64) {
    use ff::ffi::AVChromaLocation as L;
    match location {
        L::AVCHROMA_LOC_CENTER => (0.5, 0.5),
        L::AVCHROMA_LOC_TOPLEFT => (0.0, 0.0),
        L::AVCHROMA_LOC_TOP => (0.5, 0.0),
        L::AVCHROMA_LOC_BOTTOMLEFT => (0.0, 1.0),
        L::AVCHROMA_LOC_BOTTOM => (0.5, 1.0),
        _ => (0.0, 0.5),
    }
}

/// One plane's samples `[rows, cols]` as floats (8-bit, or little-endian words above 8 bits).
fn plane(frame: &ff::frame::Video, index: usize, rows: usize, cols: usize, wide: bool) -> Tensor {
    let stride = frame.stride(index);
    let data = frame.data(index);
    let mut values = Vec::with_capacity(rows * cols);
    for y in 0..rows {
        let row = &data[y * stride..];
        if wide {
            values.extend(
                row[..cols * 2]
                    .chunks_exact(2)
                    .map(|b| f32::from(u16::from_le_bytes([b[0], b[1]]))),
            );
        } else {
            values.extend(row[..cols].iter().map(|&b| f32::from(b)));
        }
    }
    Tensor::from_slice(&values).view([rows as i64, cols as i64])
}

/// Chroma `[ch, cw]` resampled bilinearly to `[h, w]`: luma sample x reads chroma position
/// `(x − offset) / subsampling`, clamped to the plane.
fn upsample(
    chroma: &Tensor,
    (h, w): (i64, i64),
    (sub_y, sub_x): (i64, i64),
    (off_x, off_y): (f64, f64),
) -> Tensor {
    let axis = |n: i64, sub: i64, offset: f64, len: i64| {
        if sub == 1 {
            let index = Tensor::arange(n, (Kind::Int64, Device::Cpu));
            return (
                index.shallow_clone(),
                index,
                Tensor::zeros([n], (Kind::Float, Device::Cpu)),
            );
        }
        let pos = ((Tensor::arange(n, (Kind::Double, Device::Cpu)) - offset) / sub as f64)
            .clamp(0.0, (len - 1) as f64);
        let low = pos.floor();
        let frac = (&pos - &low).to_kind(Kind::Float);
        let low = low.to_kind(Kind::Int64);
        let high = (&low + 1).clamp_max(len - 1);
        (low, high, frac)
    };
    let size = chroma.size();
    let (y0, y1, fy) = axis(h, sub_y, off_y, size[0]);
    let (x0, x1, fx) = axis(w, sub_x, off_x, size[1]);
    let rows = |index: &Tensor| chroma.index_select(0, index);
    let across = |t: Tensor| {
        let left = t.index_select(1, &x0);
        let right = t.index_select(1, &x1);
        &left + (right - &left) * fx.unsqueeze(0)
    };
    let top = across(rows(&y0));
    let bottom = across(rows(&y1));
    &top + (bottom - &top) * fy.unsqueeze(1)
}

/// RGB `[H, W, 3]` and, for YUVA formats, alpha `[H, W, 1]`; none for formats that are not
/// planar YUV (those go through swscale).
pub fn to_float_rgb(frame: &ff::frame::Video) -> Option<(Tensor, Option<Tensor>)> {
    let d = super::decode::pixel_descriptor(frame.format())?;
    let flags = d.flags;
    let planar = flags & ff::ffi::AV_PIX_FMT_FLAG_PLANAR as u64 != 0;
    let rgb = flags & ff::ffi::AV_PIX_FMT_FLAG_RGB as u64 != 0;
    let big_endian = flags & ff::ffi::AV_PIX_FMT_FLAG_BE as u64 != 0;
    let has_alpha = flags & ff::ffi::AV_PIX_FMT_FLAG_ALPHA as u64 != 0;
    let depth = d.comp[0].depth;
    let components = d.nb_components as usize;
    // Planar YUV(A) with one component per plane: yuv420p, yuv422p10le, yuva420p, …
    let one_per_plane = (0..components).all(|c| d.comp[c].plane as usize == c);
    if !planar || rgb || (depth > 8 && big_endian) || components < 3 || !one_per_plane || depth > 16
    {
        return None;
    }
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (sub_x, sub_y) = (1usize << d.log2_chroma_w, 1usize << d.log2_chroma_h);
    let (cw, ch) = (w.div_ceil(sub_x), h.div_ceil(sub_y));
    let wide = depth > 8;
    let luma = plane(frame, 0, h, w, wide);
    let (u, v) = (plane(frame, 1, ch, cw, wide), plane(frame, 2, ch, cw, wide));
    let siting = chroma_siting(unsafe { (*frame.as_ptr()).chroma_location });
    let size = (h as i64, w as i64);
    let subsampling = (sub_y as i64, sub_x as i64);
    let u = upsample(&u, size, subsampling, siting);
    let v = upsample(&v, size, subsampling, siting);
    let scale = f64::from(1 << (depth - 8));
    let max = f64::from((1 << depth) - 1);
    let full = frame.color_range() == ff::color::Range::JPEG
        || matches!(
            frame.format(),
            ff::format::Pixel::YUVJ420P | ff::format::Pixel::YUVJ422P | ff::format::Pixel::YUVJ444P
        );
    let (y, u, v) = if full {
        let mid = f64::from(1 << (depth - 1));
        (luma / max, (u - mid) / max, (v - mid) / max)
    } else {
        (
            (luma - 16.0 * scale) / (219.0 * scale),
            (u - 128.0 * scale) / (224.0 * scale),
            (v - 128.0 * scale) / (224.0 * scale),
        )
    };
    let (kr, kb) = luma_weights(frame.color_space());
    let kg = 1.0 - kr - kb;
    let r = &y + &v * (2.0 * (1.0 - kr));
    let b = &y + &u * (2.0 * (1.0 - kb));
    let g = (&y - &r * kr - &b * kb) / kg;
    let rgb = Tensor::stack(&[r, g, b], -1).clamp(0.0, 1.0);
    let alpha =
        (has_alpha && components == 4).then(|| (plane(frame, 3, h, w, wide) / max).unsqueeze(-1));
    Some((rgb, alpha))
}
