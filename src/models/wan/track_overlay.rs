//! WanMoveVisualizeTracks' overlay (`draw_tracks_on_video` in `comfy_extras/nodes_wanmove.py`):
//! each visible track's point as a disc, and its last frames as a tail that thins and fades
//! towards the past, blended over the video in 8-bit steps as ComfyUI does.
//!
//! The tail's bars are PIL's wide lines exactly (a 2-pixel bar `width` tall per step). The discs
//! are pixels within `√(r² + r)` of the point; PIL's ellipse rasteriser differs from that by a
//! pixel here and there along the rim.

use tch::{Device, Kind, Tensor};

use super::wan_move::Tracks;

/// ComfyUI's track colours, by track index modulo 5.
const COLOURS: [[u8; 3]; 5] = [
    [102, 153, 255],
    [0, 255, 255],
    [255, 255, 0],
    [255, 102, 204],
    [0, 255, 0],
];

/// How the tracks are drawn (WanMoveVisualizeTracks' inputs).
#[derive(Clone, Copy, Debug)]
pub struct OverlayStyle {
    /// Frames of history in each tail (`line_resolution`).
    pub tail: usize,
    pub circle_radius: i64,
    pub opacity: f64,
    pub line_width: i64,
}

/// An RGBA layer drawn by overwriting pixels, as PIL's `ImageDraw` does on an RGBA image.
struct Layer {
    width: i64,
    height: i64,
    pixels: Vec<[u8; 4]>,
}

impl Layer {
    fn new(width: i64, height: i64) -> Self {
        Layer {
            width,
            height,
            pixels: vec![[0; 4]; (width * height) as usize],
        }
    }

    fn set(&mut self, x: i64, y: i64, ink: [u8; 4]) {
        if (0..self.width).contains(&x) && (0..self.height).contains(&y) {
            self.pixels[(y * self.width + x) as usize] = ink;
        }
    }

    fn disc(&mut self, (cx, cy): (i64, i64), r: i64, ink: [u8; 4]) {
        for y in cy - r..=cy + r {
            for x in cx - r..=cx + r {
                let (dx, dy) = (x - cx, y - cy);
                if dx * dx + dy * dy <= r * r + r {
                    self.set(x, y, ink);
                }
            }
        }
    }

    /// PIL's `line([(x, y), (x + 1, y)], width)`: columns `x` and `x + 1`, rows from
    /// `y − ⌊(width − 1)/2⌋` to `y + ⌈(width − 1)/2⌉`.
    fn bar(&mut self, (x, y): (i64, i64), width: i64, ink: [u8; 4]) {
        for row in y - (width - 1) / 2..=y + width / 2 {
            self.set(x, row, ink);
            self.set(x + 1, row, ink);
        }
    }

    /// `_draw_gradient_polyline_on_overlay`: from the newest point back, one bar per pixel of
    /// path, its alpha and width falling linearly with the distance travelled.
    fn fading_tail(&mut self, points: &[(i64, i64)], width: i64, colour: [u8; 3], opacity: f64) {
        let points: Vec<(i64, i64)> = points.iter().rev().copied().collect();
        let lengths: Vec<f64> = points
            .windows(2)
            .map(|p| {
                let (dx, dy) = (p[1].0 - p[0].0, p[1].1 - p[0].1);
                ((dx * dx + dy * dy) as f64).powf(0.5)
            })
            .collect();
        let total: f64 = lengths.iter().sum();
        if total == 0.0 {
            return;
        }
        let mut travelled = 0.0;
        for (segment, &length) in points.windows(2).zip(&lengths) {
            let ((x0, y0), (x1, y1)) = (segment[0], segment[1]);
            let steps = (length as i64).max(1);
            for i in 0..steps {
                let ratio = (travelled + (i as f64 / steps as f64) * length) / total;
                let alpha = (255.0 * (1.0 - ratio) * opacity) as u8;
                let along =
                    |a: i64, b: i64| (a as f64 + ((b - a) * i) as f64 / steps as f64) as i64;
                let bar_width = ((width as f64 * (1.0 - ratio)) as i64).max(1);
                let [r, g, b] = colour;
                self.bar((along(x0, x1), along(y0, y1)), bar_width, [r, g, b, alpha]);
            }
            travelled += length;
        }
    }

    /// `layer · α + frame · (1 − α)` per pixel, in double precision as numpy computes it.
    fn blend_onto(&self, frame: &mut [[f64; 3]]) {
        for (out, px) in frame.iter_mut().zip(&self.pixels) {
            let a = px[3] as f64 / 255.0;
            for c in 0..3 {
                out[c] = px[c] as f64 * a + out[c] * (1.0 - a);
            }
        }
    }
}

/// The video `[N, H, W, 3]` (0…1) with the tracks drawn over it, one output frame per track
/// frame. Fewer images than track frames are repeated as a whole (a still image gets every
/// frame), as ComfyUI does.
pub fn draw_tracks(
    images: &Tensor,
    tracks: &Tracks,
    style: OverlayStyle,
) -> Result<Tensor, String> {
    let s = images.size();
    let (n, height, width) = (s[0] as usize, s[1], s[2]);
    let frames = tracks.frames();
    let repeats = if n == frames { 1 } else { frames / n };
    if repeats == 0 {
        return Err(format!("{n} images but only {frames} track frames"));
    }
    let bytes = (images.narrow(3, 0, 3).to_kind(Kind::Float) * 255.0)
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .contiguous();
    let bytes = Vec::<u8>::try_from(bytes.view([-1])).map_err(|e: tch::TchError| e.to_string())?;
    let plane = (height * width * 3) as usize;
    let points = |t: usize, k: usize| {
        let [x, y] = tracks.points[t][k];
        (x as i64, y as i64)
    };
    let alpha = (255.0 * style.opacity) as u8;
    let mut out = Vec::with_capacity(plane * n * repeats);
    for t in 0..n * repeats {
        let image = &bytes[(t % n) * plane..][..plane];
        let mut frame: Vec<[f64; 3]> = image
            .chunks(3)
            .map(|p| [p[0] as f64, p[1] as f64, p[2] as f64])
            .collect();
        let mut discs = Layer::new(width, height);
        let mut tails = Vec::new();
        for k in 0..tracks.count() {
            if !tracks.visible[t][k] {
                continue;
            }
            let [r, g, b] = COLOURS[k % COLOURS.len()];
            discs.disc(points(t, k), style.circle_radius, [r, g, b, alpha]);
            let history: Vec<(i64, i64)> = (t.saturating_sub(style.tail)..=t)
                .map(|f| points(f, k))
                .collect();
            if history.len() > 1 {
                tails.push((history, COLOURS[k % COLOURS.len()]));
            }
        }
        discs.blend_onto(&mut frame);
        if !tails.is_empty() {
            let mut layer = Layer::new(width, height);
            for (history, colour) in &tails {
                layer.fading_tail(history, style.line_width, *colour, style.opacity);
            }
            layer.blend_onto(&mut frame);
        }
        out.extend(frame.iter().flat_map(|p| p.map(|v| v as u8 as f32 / 255.0)));
    }
    Ok(Tensor::from_slice(&out)
        .view([(n * repeats) as i64, height, width, 3])
        .to_device(Device::Cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style() -> OverlayStyle {
        OverlayStyle {
            tail: 24,
            circle_radius: 2,
            opacity: 0.5,
            line_width: 3,
        }
    }

    /// One track moving right 4 pixels a frame over a grey still, drawn at α = 127/255: the
    /// disc alone, and the disc under the newest bar of the tail, blend in double precision and
    /// round down once; pixels away from the track keep the image.
    #[test]
    fn a_moving_track_draws_a_disc_and_a_fading_tail_over_the_video() {
        let grey = Tensor::full([1, 16, 32, 3], 0.5, (Kind::Float, Device::Cpu));
        let points = (0..3).map(|f| vec![[4.0 + 4.0 * f as f32, 8.0]]).collect();
        let tracks = Tracks {
            points,
            visible: vec![vec![true]; 3],
        };
        let video = draw_tracks(&grey, &tracks, style()).unwrap();
        assert_eq!(video.size(), [3, 16, 32, 3]);
        let px = |t: i64, y: i64, x: i64| -> [f64; 3] {
            [0, 1, 2].map(|c| video.double_value(&[t, y, x, c]) * 255.0)
        };
        let a = 127.0 / 255.0;
        let colour = [102.0, 153.0, 255.0];
        let disc = colour.map(|c| c * a + 127.0 * (1.0 - a));
        // The stored bytes, and the byte a blended value rounds down to.
        let got = |t, y, x| px(t, y, x).map(f64::round);
        let rounded = |v: [f64; 3]| v.map(f64::floor);
        assert_eq!(got(0, 8, 4), rounded(disc), "frame 0 has no tail yet");
        assert_eq!(got(2, 10, 12), rounded(disc), "below the bars");
        let under_bar = [0, 1, 2].map(|c| colour[c] * a + disc[c] * (1.0 - a));
        assert_eq!(got(2, 7, 13), rounded(under_bar));
        assert_eq!(got(2, 0, 20), [127.0; 3]);
        assert_eq!(got(1, 15, 0), [127.0; 3]);
        assert_ne!(got(2, 8, 8), [127.0; 3], "the tail passes (8, 8)");
    }

    #[test]
    fn a_still_image_is_repeated_for_every_track_frame() {
        let grey = Tensor::full([1, 8, 8, 3], 0.25, (Kind::Float, Device::Cpu));
        let tracks = Tracks {
            points: vec![vec![[100.0, 100.0]]; 4],
            visible: vec![vec![true]; 4],
        };
        let video = draw_tracks(&grey, &tracks, style()).unwrap();
        assert_eq!(video.size(), [4, 8, 8, 3]);
        // Off-frame tracks draw nothing: 0.25 · 255 = 63.75 → 63.
        assert_eq!(video.max().double_value(&[]), (63.0f32 / 255.0) as f64);
    }
}
