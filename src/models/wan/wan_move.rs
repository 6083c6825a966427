//! WanMove's trajectory conditioning (`comfy_extras/nodes_wanmove.py`, after Wan-Move's
//! `trajectory.py`): tracks of pixel points per video frame, made along a straight or Bézier path
//! (GenerateTracks) or read from JSON, and the start frame's latent features copied along each
//! track into the latent cells it passes through in later latent frames.

use tch::{Device, Kind, Tensor};

use super::tracks::parse_tracks;

/// ComfyUI's `TRACKS` value: per video frame, each track's pixel point and whether it is seen.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracks {
    /// `[frames][tracks]` `(x, y)`, float32 as ComfyUI's `track_path` holds them.
    pub points: Vec<Vec<[f32; 2]>>,
    /// `[frames][tracks]`.
    pub visible: Vec<Vec<bool>>,
}

impl Tracks {
    /// Every point visible.
    fn all_visible(points: Vec<Vec<[f32; 2]>>) -> Self {
        let visible = points.iter().map(|f| vec![true; f.len()]).collect();
        Tracks { points, visible }
    }

    pub fn frames(&self) -> usize {
        self.points.len()
    }

    pub fn count(&self) -> usize {
        self.points.first().map_or(0, Vec::len)
    }

    /// The tracks seen in the frames a mask `[frames, H, W]` marks anywhere (ComfyUI's
    /// `(track_mask > 0).any(dim=(1, 2))`, one flag per frame for every track).
    pub fn with_mask(mut self, mask: &Tensor) -> Result<Self, String> {
        let seen = Vec::<bool>::try_from(mask.gt(0.0).flatten(1, -1).any_dim(1, false))
            .map_err(|e: tch::TchError| e.to_string())?;
        if seen.len() != self.frames() {
            return Err(format!(
                "track_mask has {} frames but the tracks have {}",
                seen.len(),
                self.frames()
            ));
        }
        for (row, &s) in self.visible.iter_mut().zip(&seen) {
            row.iter_mut().for_each(|v| *v = s);
        }
        Ok(self)
    }

    /// WanMoveConcatTrack: the tracks of both, `self`'s first.
    pub fn concat(&self, other: &Tracks) -> Result<Tracks, String> {
        if self.frames() != other.frames() {
            return Err(format!(
                "cannot join tracks of {} and {} frames",
                self.frames(),
                other.frames()
            ));
        }
        fn join<T: Clone>(a: &[Vec<T>], b: &[Vec<T>]) -> Vec<Vec<T>> {
            a.iter()
                .zip(b)
                .map(|(x, y)| [&x[..], &y[..]].concat())
                .collect()
        }
        Ok(Tracks {
            points: join(&self.points, &other.points),
            visible: join(&self.visible, &other.visible),
        })
    }

    /// The first `frames` frames.
    pub fn truncated(&self, frames: usize) -> Tracks {
        let n = frames.min(self.frames());
        Tracks {
            points: self.points[..n].to_vec(),
            visible: self.visible[..n].to_vec(),
        }
    }
}

/// WanMoveTracksFromCoords: JSON tracks of `{x, y}` points (one track or a list of them), one
/// point per frame, every point visible.
pub fn tracks_from_json(text: &str) -> Result<Tracks, String> {
    let sets = parse_tracks(text);
    let [set] = sets.as_slice() else {
        return Err("track_coords holds no list of {x, y} tracks".into());
    };
    let frames = set.first().map_or(0, Vec::len);
    if frames == 0 || set.iter().any(|t| t.len() != frames) {
        return Err("every track in track_coords needs the same number of points".into());
    }
    let points = (0..frames)
        .map(|f| set.iter().map(|t| [t[f].0 as f32, t[f].1 as f32]).collect())
        .collect();
    Ok(Tracks::all_visible(points))
}

/// GenerateTracks' timing along the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    Linear,
    EaseIn,
    EaseOut,
    EaseInOut,
    Constant,
}

impl Timing {
    pub const NAMES: [&'static str; 5] =
        ["linear", "ease_in", "ease_out", "ease_in_out", "constant"];

    pub fn from_name(name: &str) -> Option<Self> {
        let all = [
            Timing::Linear,
            Timing::EaseIn,
            Timing::EaseOut,
            Timing::EaseInOut,
            Timing::Constant,
        ];
        Self::NAMES.iter().position(|n| *n == name).map(|i| all[i])
    }

    /// The path parameter per frame for `t` in 0…1.
    fn apply(self, t: &Tensor) -> Tensor {
        match self {
            Timing::Constant => t.zeros_like(),
            Timing::Linear => t.shallow_clone(),
            Timing::EaseIn => t.pow_tensor_scalar(2),
            Timing::EaseOut => one_minus(&one_minus(t).pow_tensor_scalar(2)),
            Timing::EaseInOut => t * t * (t * -2.0 + 3.0),
        }
    }
}

/// `1 − t`, exactly as ComfyUI's `1 - t`.
fn one_minus(t: &Tensor) -> Tensor {
    -t + 1.0
}

/// GenerateTracks' settings: points in 0…1 of the frame, the spread as a share of the mean edge.
#[derive(Clone, Debug)]
pub struct PathSpec {
    pub width: i64,
    pub height: i64,
    pub start: (f64, f64),
    pub mid: (f64, f64),
    pub end: (f64, f64),
    pub frames: i64,
    pub tracks: i64,
    pub spread: f64,
    pub bezier: bool,
    pub timing: Timing,
}

/// GenerateTracks: `tracks` parallel tracks along a straight (or quadratic Bézier, through the
/// mid point as control) path, spaced `spread` apart across the direction of motion. Positions
/// and tangents are float32 tensors and the offsets double precision, as in ComfyUI, so the
/// points match its to the last bit.
pub fn generate_tracks(spec: &PathSpec) -> Tracks {
    let (w, h) = (spec.width as f64, spec.height as f64);
    let px = |(x, y): (f64, f64)| (x * w, y * h);
    let ((sx, sy), (mx, my), (ex, ey)) = (px(spec.start), px(spec.mid), px(spec.end));
    let spread = spec.spread * (w + h) / 2.0;
    let t = Tensor::linspace(0.0, 1.0, spec.frames, (Kind::Float, Device::Cpu));
    let u = spec.timing.apply(&t);
    let (x, y, tx, ty) = if spec.bezier {
        let v = one_minus(&u);
        let curve = |s: f64, m: f64, e: f64| {
            v.pow_tensor_scalar(2) * s + &v * 2.0 * &u * m + u.pow_tensor_scalar(2) * e
        };
        let tangent = |s: f64, m: f64, e: f64| &v * 2.0 * (m - s) + &u * 2.0 * (e - m);
        (
            curve(sx, mx, ex),
            curve(sy, my, ey),
            tangent(sx, mx, ex),
            tangent(sy, my, ey),
        )
    } else {
        (
            &u * (ex - sx) + sx,
            &u * (ey - sy) + sy,
            t.full_like(ex - sx),
            t.full_like(ey - sy),
        )
    };
    let values = |t: &Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double)).expect("float tensor");
    let (x, y, tx, ty) = (values(&x), values(&y), values(&tx), values(&ty));
    let points = (0..spec.frames as usize)
        .map(|f| {
            let length = (tx[f] * tx[f] + ty[f] * ty[f]).sqrt();
            let (px, py) = if length > 0.0 {
                (-ty[f] / length, tx[f] / length)
            } else {
                (1.0, 0.0)
            };
            (0..spec.tracks)
                .map(|k| {
                    let offset = (k as f64 - (spec.tracks - 1) as f64 / 2.0) * spread;
                    [(x[f] + px * offset) as f32, (y[f] + py * offset) as f32]
                })
                .collect()
        })
        .collect();
    Tracks::all_visible(points)
}

/// A track's latent cell `(row, column)` per latent frame (every 4th video frame), `None` where
/// its point is hidden or outside the `width × height` frame (`create_pos_embeddings` with the
/// "sample" strategy and 8-pixel cells).
pub fn latent_cells(tracks: &Tracks, (width, height): (i64, i64)) -> Vec<Vec<Option<(i64, i64)>>> {
    let frames = tracks.frames();
    (0..tracks.count())
        .map(|n| {
            (0..frames)
                .step_by(4)
                .map(|f| {
                    let [x, y] = tracks.points[f][n];
                    let inside = x >= 0.0 && y >= 0.0 && x < width as f32 && y < height as f32;
                    (tracks.visible[f][n] && inside)
                        .then(|| ((y / 8.0).floor() as i64, (x / 8.0).floor() as i64))
                })
                .collect()
        })
        .collect()
}

/// `replace_feature`: in a latent `[1, C, T, H, W]`, each track's cell in latent frame `t ≥ 1`
/// moves `strength` of the way to the track's cell in frame 0. Where tracks meet in one cell,
/// the last track's value stays (ComfyUI shuffles the tracks with the unseeded global generator
/// first, so there an arbitrary one stays). A track hidden in frame 0 reads the last row's last
/// cell, which is where ComfyUI's index −1 points.
pub fn carry_features(latent: &Tensor, cells: &[Vec<Option<(i64, i64)>>], strength: f64) -> Tensor {
    let s = latent.size();
    let (t, h, w) = (s[2], s[3], s[4]);
    let flat = latent.reshape([s[1], t * h * w]);
    let mut targets: Vec<(i64, i64)> = Vec::new();
    for track in cells {
        let (sr, sc) = track[0].unwrap_or((h - 1, w - 1));
        for (frame, cell) in track.iter().enumerate().skip(1) {
            if let Some((r, c)) = *cell {
                let target = (frame as i64 * h + r) * w + c;
                targets.retain(|&(dst, _)| dst != target);
                targets.push((target, sr * w + sc));
            }
        }
    }
    if targets.is_empty() {
        return latent.shallow_clone();
    }
    let (dst, src): (Vec<i64>, Vec<i64>) = targets.into_iter().unzip();
    let dst = Tensor::from_slice(&dst);
    let source = flat.index_select(1, &Tensor::from_slice(&src));
    let before = flat.index_select(1, &dst);
    let moved = &before + (source - &before) * strength;
    flat.index_copy(1, &dst, &moved).reshape(s.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bezier: bool, timing: Timing) -> PathSpec {
        PathSpec {
            width: 64,
            height: 32,
            start: (0.25, 0.5),
            mid: (0.5, 0.0),
            end: (0.75, 0.5),
            frames: 5,
            tracks: 3,
            spread: 0.0625,
            bezier,
            timing,
        }
    }

    /// A straight path left to right: the middle track runs from (16, 16) to (48, 16) in even
    /// steps, and the others 3 pixels below and above it (¹⁄₁₆ of the mean edge 48).
    #[test]
    fn straight_tracks_run_parallel_across_the_motion() {
        let tracks = generate_tracks(&spec(false, Timing::Linear));
        assert_eq!((tracks.frames(), tracks.count()), (5, 3));
        for (f, frame) in tracks.points.iter().enumerate() {
            let x = 16.0 + 8.0 * f as f32;
            assert_eq!(frame, &vec![[x, 13.0], [x, 16.0], [x, 19.0]], "frame {f}");
        }
        let still = generate_tracks(&spec(false, Timing::Constant));
        assert!(still.points.iter().all(|f| f[1] == [16.0, 16.0]));
    }

    /// The Bézier path passes through (32, 8) at its middle, (¼·16 + ½·32 + ¼·48,
    /// ¼·16 + ½·0 + ¼·16), where it runs level, so the side tracks are straight above and below.
    #[test]
    fn bezier_tracks_bend_through_the_control_point() {
        let tracks = generate_tracks(&spec(true, Timing::Linear));
        assert_eq!(
            tracks.points[2],
            vec![[32.0, 5.0], [32.0, 8.0], [32.0, 11.0]]
        );
        assert_eq!(tracks.points[4][1], [48.0, 16.0]);
        let eased = generate_tracks(&spec(false, Timing::EaseInOut));
        // t = ¼ → 3t² − 2t³ = 5/32 of the way.
        assert_eq!(eased.points[1][1], [16.0 + 32.0 * 5.0 / 32.0, 16.0]);
    }

    #[test]
    fn cells_are_sampled_every_fourth_frame_and_hidden_outside_the_frame() {
        let points = (0..9)
            .map(|f| vec![[f as f32 * 7.0 + 3.0, 9.5], [-1.0, 0.0]])
            .collect();
        let mut tracks = Tracks::all_visible(points);
        tracks.visible[4][0] = false;
        let cells = latent_cells(&tracks, (64, 32));
        assert_eq!(cells[0], vec![Some((1, 0)), None, Some((1, 7))]);
        assert_eq!(cells[1], vec![None, None, None]);
        let cells = latent_cells(&tracks, (40, 32));
        assert_eq!(cells[0][2], None, "x = 59 lies outside a 40-pixel frame");
    }

    /// Frame 0's cell moves into the later cells by `strength`; the last of two tracks that
    /// meet in a cell wins; a track hidden in frame 0 takes the last cell.
    #[test]
    fn features_follow_the_tracks_from_the_first_frame() {
        let latent =
            Tensor::arange(2 * 3 * 2 * 2, (Kind::Float, Device::Cpu)).view([1, 2, 3, 2, 2]);
        let cells = vec![
            vec![Some((0, 0)), Some((1, 1)), Some((0, 1))],
            vec![Some((1, 0)), None, Some((0, 1))],
            vec![None, Some((1, 0)), None],
        ];
        let out = carry_features(&latent, &cells, 0.5);
        let at = |t: &Tensor, c: i64, f: i64, r: i64, col: i64| t.double_value(&[0, c, f, r, col]);
        for c in 0..2 {
            let half = |f, r, col, from_r, from_c| {
                (at(&latent, c, f, r, col) + at(&latent, c, 0, from_r, from_c)) / 2.0
            };
            assert_eq!(at(&out, c, 1, 1, 1), half(1, 1, 1, 0, 0));
            assert_eq!(
                at(&out, c, 2, 0, 1),
                half(2, 0, 1, 1, 0),
                "the second track wins"
            );
            assert_eq!(at(&out, c, 1, 1, 0), half(1, 1, 0, 1, 1), "index −1");
            assert_eq!(at(&out, c, 0, 0, 0), at(&latent, c, 0, 0, 0));
            assert_eq!(at(&out, c, 2, 1, 1), at(&latent, c, 2, 1, 1));
        }
    }

    #[test]
    fn json_tracks_become_frames_of_points() {
        let tracks = tracks_from_json(
            "[[{'x': 1, 'y': 2}, {'x': 3, 'y': 4}], [{'x': 5, 'y': 6}, {'x': 7.5, 'y': 8}]]",
        )
        .unwrap();
        assert_eq!(
            tracks.points,
            vec![vec![[1.0, 2.0], [5.0, 6.0]], vec![[3.0, 4.0], [7.5, 8.0]]]
        );
        assert!(tracks_from_json("[]").is_err());
        let joined = tracks.concat(&tracks).unwrap();
        assert_eq!(joined.count(), 4);
        let mask = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.3]).view([2, 1, 2]);
        let masked = tracks.with_mask(&mask).unwrap();
        assert_eq!(masked.visible, vec![vec![false, false], vec![true, true]]);
    }
}
