//! SAM3_TrackPreview's frames (`comfy_extras/nodes_sam3.py`): each tracked object painted over
//! the video in its palette colour, its index drawn at the mask's centroid in a 5×3 bitmap
//! font with a black outline, and below it the detection score in percent when under 1.

use tch::{Kind, Tensor};

use super::track_data::{unpack_masks, TrackData};

/// ComfyUI's twelve object colours (matplotlib's tab10-like palette), in 0..1.
const COLORS: [[f32; 3]; 12] = [
    [0.12, 0.47, 0.71],
    [1.0, 0.5, 0.05],
    [0.17, 0.63, 0.17],
    [0.84, 0.15, 0.16],
    [0.58, 0.4, 0.74],
    [0.55, 0.34, 0.29],
    [0.89, 0.47, 0.76],
    [0.5, 0.5, 0.5],
    [0.74, 0.74, 0.13],
    [0.09, 0.75, 0.81],
    [0.94, 0.76, 0.06],
    [0.42, 0.68, 0.84],
];

/// The digits 0–9, five rows of three pixels, a row's bits left to right.
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b001, 0b001, 0b001],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// An RGB frame `[H, W, 3]` held as floats, row-major.
struct Canvas {
    pixels: Vec<f32>,
    height: i64,
    width: i64,
}

impl Canvas {
    fn glyph(digit: usize, scale: i64, y: i64, x: i64) -> bool {
        (0..5 * scale).contains(&y)
            && (0..3 * scale).contains(&x)
            && DIGITS[digit][(y / scale) as usize] & (0b100 >> (x / scale)) != 0
    }

    /// The glyph grown by one pixel (a 3×3 max filter over its one-pixel border), at the
    /// outline's own coordinates.
    fn outline(digit: usize, scale: i64, y: i64, x: i64) -> bool {
        (-1..=1).any(|dy| (-1..=1).any(|dx| Self::glyph(digit, scale, y - 1 + dy, x - 1 + dx)))
    }

    fn paint(&mut self, y: i64, x: i64, color: [f32; 3]) {
        if (0..self.height).contains(&y) && (0..self.width).contains(&x) {
            let at = ((y * self.width + x) * 3) as usize;
            self.pixels[at..at + 3].copy_from_slice(&color);
        }
    }

    /// `_draw_number_gpu`: the number centred on (cx, cy), each digit's black outline first,
    /// then its fill.
    fn number(&mut self, number: u64, cx: i64, cy: i64, color: [f32; 3], scale: i64) {
        let digits: Vec<usize> = number
            .to_string()
            .bytes()
            .map(|b| (b - b'0') as usize)
            .collect();
        let (glyph_h, glyph_w) = (5 * scale, 3 * scale);
        let total_w = digits.len() as i64 * (glyph_w + scale) - scale;
        let (x0, y0) = (cx - total_w.div_euclid(2), cy - glyph_h.div_euclid(2));
        for (i, &d) in digits.iter().enumerate() {
            let dx = x0 + i as i64 * (glyph_w + scale);
            for y in 0..glyph_h + 2 {
                for x in 0..glyph_w + 2 {
                    if Self::outline(d, scale, y, x) {
                        self.paint(y0 - 1 + y, dx - 1 + x, [0.0; 3]);
                    }
                }
            }
            for y in 0..glyph_h {
                for x in 0..glyph_w {
                    if Self::glyph(d, scale, y, x) {
                        self.paint(y0 + y, dx + x, color);
                    }
                }
            }
        }
    }
}

/// Each object's mask area and centroid row and column (floored), from masks `[K, H, W]`.
fn centroids(masks: &Tensor) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let (_, height, width) = masks.size3().expect("[K, H, W] masks");
    let masks = masks.to_kind(Kind::Int64);
    let sum = |t: &Tensor| -> Vec<i64> {
        Vec::try_from(t.sum_dim_intlist([1, 2].as_slice(), false, Kind::Int64)).expect("int64 sums")
    };
    let area = sum(&masks);
    let rows = Tensor::arange(height, (Kind::Int64, masks.device())).view([1, height, 1]);
    let cols = Tensor::arange(width, (Kind::Int64, masks.device())).view([1, 1, width]);
    let centre = |weighted: Vec<i64>| -> Vec<i64> {
        weighted
            .iter()
            .zip(&area)
            .map(|(s, a)| s.div_euclid((*a).max(1)))
            .collect()
    };
    let (cy, cx) = (centre(sum(&(&masks * rows))), centre(sum(&(&masks * cols))));
    (area, cy, cx)
}

/// `frame` `[H, W, 3]` with the objects' masks `[K, H, W]` (bool) blended in their colours and
/// labelled with their index and (under 1) score.
fn paint_tracks(frame: &Tensor, masks: &Tensor, scores: &[f64], opacity: f64) -> Tensor {
    let (objects, height, width) = masks.size3().expect("[K, H, W] masks");
    let palette: Vec<f32> = (0..objects as usize)
        .flat_map(|k| COLORS[k % COLORS.len()])
        .collect();
    let palette = Tensor::from_slice(&palette).view([objects, 3]);
    let covered = masks.any_dim(0, false).unsqueeze(-1);
    let owner = masks.to_kind(Kind::Uint8).argmax(0, false);
    let overlay = palette
        .index_select(0, &owner.flatten(0, 1))
        .view([height, width, 3]);
    let blended = frame.where_self(
        &covered.logical_not(),
        &(frame * (1.0 - opacity) + overlay * opacity),
    );
    let (area, cy, cx) = centroids(masks);
    let mut canvas = Canvas {
        pixels: Vec::try_from(blended.contiguous().view([-1])).expect("float32 pixels"),
        height,
        width,
    };
    let label_scale = 3.max(height / 240);
    for k in (0..objects as usize).filter(|&k| area[k] > 1) {
        let color = COLORS[k % COLORS.len()];
        let cap = ((area[k] as f32).sqrt() / 15.0).max(1.0) as i64;
        let scale = label_scale.min(cap);
        canvas.number(k as u64, cx[k], cy[k], color, scale);
        if let Some(&score) = scores.get(k).filter(|&&s| s < 1.0) {
            let y = cy[k] + 5 * scale + 3;
            canvas.number(
                (score * 100.0) as u64,
                cx[k],
                y,
                color,
                1.max(scale * 2 / 3),
            );
        }
    }
    Tensor::from_slice(&canvas.pixels).view([height, width, 3])
}

/// The preview's frames `[N, H, W, 3]` (float32, 0..1): `images` (if given; black past their
/// end) or black at the tracks' size, with the tracks painted at `opacity`.
pub fn render(track: &TrackData, images: Option<&Tensor>, opacity: f64) -> Tensor {
    let (height, width) = images.map_or(track.orig_size, |im| (im.size()[1], im.size()[2]));
    let packed = track.packed.as_ref().filter(|_| track.objects() > 0);
    let frames = track.packed.as_ref().map_or(track.frames, |p| p.size()[0]);
    let out: Vec<Tensor> = (0..frames)
        .map(|t| {
            let frame = match images {
                Some(im) if t < im.size()[0] => im.get(t).narrow(2, 0, 3).to_kind(Kind::Float),
                _ => Tensor::zeros([height, width, 3], (Kind::Float, tch::Device::Cpu)),
            };
            let Some(packed) = packed else {
                return frame.clamp(0.0, 1.0);
            };
            let masks = unpack_masks(&packed.get(t).to_device(tch::Device::Cpu))
                .to_kind(Kind::Float)
                .unsqueeze(0)
                .upsample_nearest2d([height, width], None, None)
                .get(0)
                .gt(0.5);
            paint_tracks(&frame, &masks, &track.scores, opacity).clamp(0.0, 1.0)
        })
        .collect();
    Tensor::stack(&out, 0)
}
