//! ATI's trajectory conditioning for WanTrackToVideo (`comfy_extras/nodes_wan.py`): tracks of
//! pixel points given as JSON, resampled from ATI's 121 points to the video's frames, and the
//! start frame's latent features carried along each track into later latent frames
//! (`patch_motion`), with a mask of how much each latent cell follows a track.

use serde_json::Value;
use tch::{Device, Kind, Tensor};

/// Points per track ATI's tracks are padded or cut to.
const TRACK_POINTS: i64 = 121;

/// One batch item's tracks: per track its `(x, y)` pixel points.
pub type TrackSet = Vec<Vec<(f64, f64)>>;

/// `parse_json_tracks` and the nesting WanTrackToVideo then resolves: one track (a list of
/// `{x, y}` points), a list of tracks, or a list of such lists (one per batch item), with single
/// quotes read as double ones. Empty when the text is not such JSON or holds no track.
pub fn parse_tracks(text: &str) -> Vec<TrackSet> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text.replace('\'', "\"")) else {
        return Vec::new();
    };
    let point = |p: &Value| Some((p.get("x")?.as_f64()?, p.get("y")?.as_f64()?));
    let track = |t: &Value| -> Option<Vec<(f64, f64)>> {
        t.as_array()?.iter().map(point).collect::<Option<Vec<_>>>()
    };
    let set = |s: &Value| -> Option<TrackSet> { s.as_array()?.iter().map(track).collect() };
    let first = items.first();
    let parsed = if first.is_some_and(|f| f.get("x").is_some()) {
        track(&Value::Array(items.clone())).map(|t| vec![vec![t]])
    } else if first
        .and_then(|f| f.get(0))
        .is_some_and(|p| p.get("x").is_some())
    {
        set(&Value::Array(items.clone())).map(|s| vec![s])
    } else {
        items.iter().map(set).collect()
    };
    parsed.unwrap_or_default()
}

/// `process_tracks`: a set's tracks as `[length, n, 4]` float32 rows `(t, x, y, visible)`, the
/// pixel points centred and scaled by half the short edge, `t` and visibility in −1…1, ATI's
/// 120 steps after the first resampled to `length − 1` (`repeat_interleave` by
/// `(length − 1)/g`, then every `120/g`-th from the second, g their gcd).
fn processed(set: &TrackSet, (width, height): (i64, i64), length: i64) -> Tensor {
    let n = set.len() as i64;
    let mut values = Vec::with_capacity((n * TRACK_POINTS * 3) as usize);
    for track in set {
        for i in 0..TRACK_POINTS as usize {
            let (x, y, visible) = track.get(i).map_or((0.0, 0.0, 0.0), |&(x, y)| (x, y, 1.0));
            values.extend([x as f32, y as f32, visible]);
        }
    }
    let tracks = Tensor::from_slice(&values)
        .view([n, TRACK_POINTS, 1, 3])
        .permute([1, 0, 2, 3]);
    let (xy, visible) = (tracks.narrow(3, 0, 2), tracks.narrow(3, 2, 1));
    let centre = Tensor::from_slice(&[width as f32, height as f32]) / 2.0;
    let xy = (xy - centre) / width.min(height) as f64 * 2.0;
    let visible = visible * 2.0 - 1.0;
    let steps = Tensor::linspace(-1.0, 1.0, TRACK_POINTS, (Kind::Float, Device::Cpu))
        .view([-1, 1, 1, 1])
        .expand_as(&visible);
    let rows = Tensor::cat(&[steps, xy, visible], -1).view([TRACK_POINTS, -1, 4]);
    let frames = length - 1;
    let g = gcd(TRACK_POINTS - 1, frames);
    let (a, b) = ((TRACK_POINTS - 1) / g, frames / g);
    let rest = rows
        .narrow(0, 1, TRACK_POINTS - 1)
        .repeat_interleave_self_int(b, 0, None)
        .slice(0, 1, None, a);
    Tensor::cat(&[rows.narrow(0, 0, 1), rest], 0)
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `_patch_motion_single`: the latent `video` `[C, T, H, W]` (normalized) with the start
/// frame's features, sampled at each track's first point, spread to the cells near the track's
/// (visibility-weighted) position in each later latent frame — `exp(−d²·temperature)`, the
/// `topk` nearest tracks per cell — and the remaining weight left to the video's own
/// features. Returns `(weights [T, H, W] with the first frame 1, features [C, T, H, W])`.
fn patch_motion(tracks: &Tensor, video: &Tensor, temperature: f64, topk: i64) -> (Tensor, Tensor) {
    let [c, t, h, w] = video.size()[..] else {
        unreachable!("the video latent is [C, T, H, W]")
    };
    let n = tracks.size()[1];
    let (xy, visible) = (tracks.narrow(2, 1, 2), tracks.narrow(2, 3, 1));
    let side = h.min(w) as f64;
    let (xs, ys) = (w as f64 / side, h as f64 / side);
    let scale = Tensor::from_slice(&[xs as f32, ys as f32]);
    let normalized = (&xy / scale).clamp(-1.0, 1.0);
    let visible = visible.clamp(0.0, 1.0);
    let cpu = (Kind::Float, Device::Cpu);
    let axes = [
        Tensor::linspace(-ys, ys, h, cpu),
        Tensor::linspace(-xs, xs, w, cpu),
    ];
    let mesh = Tensor::meshgrid_indexing(&axes, "ij");
    let grid = Tensor::stack(&[&mesh[1], &mesh[0]], -1);
    let later = t - 1;
    let (xy, visible) = (xy.narrow(0, 1, 4 * later), visible.narrow(0, 1, 4 * later));
    let seen = visible
        .view([later, 4, n, 1])
        .sum_dim_intlist(1, false, None);
    let aligned = (&xy * &visible)
        .view([later, 4, n, 2])
        .sum_dim_intlist(1, false, None)
        / (&seen + 1e-5);
    let distance = (aligned.view([later, 1, 1, n, 2]) - grid.view([1, h, w, 1, 2]))
        .pow_tensor_scalar(2.0)
        .sum_dim_intlist(-1, false, None);
    let weight = (-(distance * temperature)).exp() * seen.clamp(0.0, 1.0).view([later, 1, 1, n]);
    let (top_weight, top_index) = weight.topk(topk.min(n), -1, true, true);
    let start = video.select(1, 0).unsqueeze(0);
    let points = normalized
        .narrow(0, 0, 1)
        .unsqueeze(0)
        .to_kind(video.kind());
    let features = start
        .grid_sampler(&points, 0, 0, false)
        .view([c, n])
        .transpose(0, 1);
    let picked = features.index_select(0, &top_index.flatten(0, -1)).view([
        later,
        h,
        w,
        top_index.size()[3],
        c,
    ]);
    let carried = (picked * top_weight.unsqueeze(-1))
        .sum_dim_intlist(-2, false, None)
        .permute([3, 0, 1, 2]);
    let spread = top_weight.sum_dim_intlist(-1, false, None);
    let mixed = carried + video.narrow(1, 1, later) * (1.0 - spread.clamp(0.0, 1.0));
    let features = Tensor::cat(&[video.narrow(1, 0, 1), mixed], 1);
    let weights = Tensor::cat(&[spread.ones_like().narrow(0, 0, 1), spread], 0);
    (weights, features)
}

/// WanTrackToVideo's conditioning for `videos` `[B, C, T, H, W]` (the normalized latents of the
/// start images' videos) and each batch item's tracks (resized to the batch as ComfyUI's
/// `resize_list_to_batch_size` does): the concat mask `[B, 4, T, H, W]` (1 where the video is
/// free, 0 where it follows the start frame or a track) and the moved features.
pub fn track_conditioning(
    sets: &[TrackSet],
    videos: &Tensor,
    (width, height, length): (i64, i64, i64),
    temperature: f64,
    topk: i64,
) -> (Tensor, Tensor) {
    let batch = videos.size()[0];
    let (mut masks, mut features) = (Vec::new(), Vec::new());
    for (b, set) in batch_indices(sets.len(), batch as usize)
        .into_iter()
        .map(|i| &sets[i])
        .enumerate()
    {
        let tracks = processed(set, (width, height), length);
        let (weights, moved) = patch_motion(&tracks, &videos.get(b as i64), temperature, topk);
        masks.push(1.0 - weights.unsqueeze(0).expand([4, -1, -1, -1], false));
        features.push(moved);
    }
    (Tensor::stack(&masks, 0), Tensor::stack(&features, 0))
}

/// ComfyUI's `resize_to_batch_size` / `resize_list_to_batch_size` index choice: `have` items
/// spread over `want`.
pub fn batch_indices(have: usize, want: usize) -> Vec<usize> {
    if have == want || have == 0 {
        return (0..have).collect();
    }
    if want <= 1 {
        return (0..want.min(have)).collect();
    }
    let last = have - 1;
    if want < have {
        let scale = last as f64 / (want - 1) as f64;
        (0..want)
            .map(|i| (crate::upscale::py_round(i as f64 * scale) as usize).min(last))
            .collect()
    } else {
        let scale = have as f64 / want as f64;
        (0..want)
            .map(|i| (((i as f64 + 0.5) * scale).floor() as usize).min(last))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_parse_in_every_nesting_comfyui_takes() {
        let one = parse_tracks("[{'x': 1, 'y': 2}, {'x': 3, 'y': 4}]");
        assert_eq!(one, vec![vec![vec![(1.0, 2.0), (3.0, 4.0)]]]);
        let two = parse_tracks(r#"[[{"x": 1, "y": 2}], [{"x": 5, "y": 6}]]"#);
        assert_eq!(two, vec![vec![vec![(1.0, 2.0)], vec![(5.0, 6.0)]]]);
        let batches = parse_tracks(r#"[[[{"x": 1, "y": 2}]], [[{"x": 7, "y": 8}]]]"#);
        assert_eq!(batches.len(), 2);
        assert!(parse_tracks("[]").is_empty());
        assert!(parse_tracks("not json").is_empty());
    }

    /// 121 points over 81 frames: g = 40, each of the 120 steps repeated 2 times and every 3rd
    /// taken from the second, so frame k ≥ 1 holds step ⌊(3k − 2) / 2⌋ + 1.
    #[test]
    fn processed_tracks_resample_atis_121_points_to_the_frames() {
        let track: Vec<(f64, f64)> = (0..121).map(|i| (i as f64, 100.0)).collect();
        let rows = processed(&vec![track], (200, 100), 81);
        assert_eq!(rows.size(), [81, 1, 4]);
        for k in [0i64, 1, 2, 40, 80] {
            let step = if k == 0 { 0 } else { (3 * k - 2) / 2 + 1 };
            let x = rows.double_value(&[k, 0, 1]);
            let want = (step as f64 - 100.0) / 100.0 * 2.0;
            assert!(
                (x - want).abs() < 1e-6,
                "frame {k}: x {x}, want step {step}"
            );
            let t = rows.double_value(&[k, 0, 0]);
            assert!(
                (t - (-1.0 + step as f64 / 60.0)).abs() < 1e-5,
                "frame {k}: t {t}"
            );
            assert_eq!(rows.double_value(&[k, 0, 3]), 1.0, "visible");
        }
        // y = 100 is the bottom edge of a 100 px frame: (100 − 50) / 100 · 2.
        assert!((rows.double_value(&[5, 0, 2]) - 1.0).abs() < 1e-6);
    }

    /// A still, visible track at a cell's centre moves the start frame's feature there into
    /// every later frame at full weight; cells far from it keep the video's own features.
    #[test]
    fn a_still_track_carries_the_start_features_to_its_cell() {
        let (c, t, h, w) = (3, 3, 8, 8);
        let video = Tensor::randn([c, t, h, w], (Kind::Float, Device::Cpu));
        // The normalized position of cell (row 2, column 5) on the grid above.
        let (x, y) = (-1.0 + 2.0 * 5.0 / 7.0, -1.0 + 2.0 * 2.0 / 7.0);
        let rows: Vec<f32> = (0..4 * (t - 1) + 1)
            .flat_map(|_| [0.0, x as f32, y as f32, 1.0])
            .collect();
        let tracks = Tensor::from_slice(&rows).view([-1, 1, 4]);
        let (weights, moved) = patch_motion(&tracks, &video, 220.0, 2);
        assert_eq!(weights.size(), [t, h, w]);
        assert!((weights.double_value(&[1, 2, 5]) - 1.0).abs() < 1e-3);
        assert!(weights.double_value(&[1, 7, 0]) < 1e-6);
        let start = video
            .select(1, 0)
            .unsqueeze(0)
            .grid_sampler(
                &Tensor::from_slice(&[x as f32, y as f32]).view([1, 1, 1, 2]),
                0,
                0,
                false,
            )
            .view([c]);
        for ch in 0..c {
            let got = moved.double_value(&[ch, 2, 2, 5]);
            assert!(
                (got - start.double_value(&[ch])).abs() < 1e-3,
                "channel {ch}"
            );
            let far = moved.double_value(&[ch, 2, 7, 0]);
            assert!((far - video.double_value(&[ch, 2, 7, 0])).abs() < 1e-5);
        }
        assert!(
            moved.narrow(1, 0, 1).equal(&video.narrow(1, 0, 1)),
            "frame 0 unchanged"
        );
    }

    #[test]
    fn batch_indices_follow_comfyuis_resize() {
        assert_eq!(batch_indices(1, 3), [0, 0, 0]);
        assert_eq!(batch_indices(2, 4), [0, 0, 1, 1]);
        assert_eq!(batch_indices(3, 2), [0, 2]);
        assert_eq!(batch_indices(5, 1), [0]);
        assert_eq!(batch_indices(2, 2), [0, 1]);
    }
}
