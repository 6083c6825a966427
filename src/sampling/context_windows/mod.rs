//! Context windows (ComfyUI's `IndexListContextHandler` in `comfy/context_windows.py`): when
//! a latent has more frames than the model should see at once, every model call runs on
//! overlapping windows of frames (conditioning sliced to match) and the windows' outputs are
//! blended back into one; FreeNoise repeats the first window's noise, shuffled, further on.

pub mod fuse;
pub mod schedules;

use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use self::fuse::{relative_bias, Fuse};
use self::schedules::Layout;
use super::model::{CondEntry, Conditioning, CONTEXT_WINDOW_KEY, HOST_EXTRAS};
use crate::engine::value::SharedTensor;

/// The extra of Wan Animate 2's pose video latents: one frame fewer than the latent (which
/// starts with the reference image's frame), so a window takes the frames after its first.
const POSE_LATENTS_KEY: &str = "pose_video_latent";
const FACE_PIXELS_KEY: &str = "face_video_pixels";

/// A context-window handler's settings (ContextWindowsManual's inputs) and the sampling step
/// it is at.
pub struct ContextWindows {
    pub layout: Layout,
    pub fuse: Fuse,
    /// The latent dimension the windows cut (2: frames of `[b, c, t, h, w]`).
    pub dim: i64,
    pub freenoise: bool,
    /// Window positions whose conditioning is the full conditioning's same position (the I2V
    /// start image in every window).
    pub cond_retain: Vec<i64>,
    /// Window positions whose latent is the full latent's same position.
    pub latent_retain: Vec<i64>,
    /// With several conditioning entries, each window takes the one of its region.
    pub split_conds: bool,
    /// A window not starting at frame 0 is run with the frame before it in front (dropped
    /// from its output), so causal models see where it starts from.
    pub causal_fix: bool,
    step: Mutex<StepState>,
}

#[derive(Default)]
struct StepState {
    sigmas: Vec<f64>,
    step: usize,
}

/// One window: its frames, and the frame before them when the causal fix applies.
struct Window {
    indices: Vec<i64>,
    anchor: Option<i64>,
}

impl Window {
    /// The frames the model sees: the anchor, then the window's.
    fn gathered(&self) -> Vec<i64> {
        self.anchor
            .into_iter()
            .chain(self.indices.iter().copied())
            .collect()
    }

    /// `full`'s window along `dim`, with the `retain` positions set to `full`'s same positions
    /// (ComfyUI's `get_tensor`).
    fn take(&self, full: &Tensor, dim: i64, retain: &[i64]) -> Tensor {
        let window = select(full, dim, &self.gathered());
        let (have, whole) = (window.size()[dim as usize], full.size()[dim as usize]);
        for &r in retain {
            let (at, from) = if r < 0 { (r + have, r + whole) } else { (r, r) };
            if (0..have).contains(&at) && (0..whole).contains(&from) {
                window.narrow(dim, at, 1).copy_(&full.narrow(dim, from, 1));
            }
        }
        window
    }

    /// `slice_cond(temporal_offset=1)`'s frames of a conditioning that has none for the
    /// reference slot: the window's frames past its first (the anchor standing in for it), one
    /// earlier.
    fn after_reference_slot(&self) -> Vec<i64> {
        let skip = usize::from(self.anchor.is_none());
        self.indices[skip.min(self.indices.len())..]
            .iter()
            .map(|i| i - 1)
            .filter(|i| *i >= 0)
            .collect()
    }

    /// Where the window's centre lies, as a fraction of `frames`.
    fn center_ratio(&self, frames: i64) -> f64 {
        let (first, last) = (self.indices[0], self.indices[self.indices.len() - 1]);
        (first + last) as f64 / (2 * frames) as f64
    }
}

fn select(t: &Tensor, dim: i64, indices: &[i64]) -> Tensor {
    t.index_select(dim, &Tensor::from_slice(indices).to_device(t.device()))
}

/// A `"0, 2"` index list (ContextWindowsManual's retain inputs); empty for "".
pub fn parse_indices(text: &str) -> Result<Vec<i64>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| {
            let part = part.trim();
            part.parse::<i64>()
                .map_err(|_| anyhow::anyhow!("invalid literal for int() with base 10: '{part}'"))
        })
        .collect()
}

impl ContextWindows {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        layout: Layout,
        fuse: Fuse,
        dim: i64,
        freenoise: bool,
        cond_retain: Vec<i64>,
        latent_retain: Vec<i64>,
        split_conds: bool,
        causal_fix: bool,
    ) -> Self {
        ContextWindows {
            layout,
            fuse,
            dim,
            freenoise,
            cond_retain,
            latent_retain,
            split_conds,
            causal_fix,
            step: Mutex::new(StepState::default()),
        }
    }

    /// Whether `x` has more frames than one window (ComfyUI's `should_use_context`).
    pub fn applies(&self, x: &Tensor) -> bool {
        x.dim() as i64 > self.dim && x.size()[self.dim as usize] > self.layout.length
    }

    /// Starts a sampling run over `sigmas` (its `sample_sigmas`, which steps are found in).
    pub fn begin(&self, sigmas: &[f64]) {
        let mut state = self.step.lock().unwrap_or_else(|e| e.into_inner());
        state.sigmas = sigmas.to_vec();
    }

    /// The step `sigma` belongs to: the first matching sigma of the run (`torch.isclose`,
    /// rtol 1e-4); a sub-step of a multi-step sampler keeps the last step.
    fn step_at(&self, sigma: f64) -> usize {
        let mut state = self.step.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = state
            .sigmas
            .iter()
            .position(|s| (s - sigma).abs() <= 1e-8 + 1e-4 * sigma.abs())
        {
            state.step = i;
        }
        state.step
    }

    /// FreeNoise (ComfyUI's `apply_freenoise`): past the first window, each stretch of
    /// `length − overlap` frames takes the noise of the stretch one window earlier, in an
    /// order drawn from a CPU generator seeded with `seed`.
    pub fn freenoise(&self, noise: &Tensor, seed: u64) -> Tensor {
        let noise = noise.copy();
        let (length, overlap) = (self.layout.length, self.layout.overlap);
        let delta = length - overlap;
        if delta <= 0 || noise.dim() as i64 <= self.dim {
            return noise;
        }
        let frames = noise.size()[self.dim as usize];
        let mut moves = Vec::new();
        let mut start = 0;
        while start < frames - length {
            let place = start + length;
            let count = delta.min(frames - place);
            if count <= 0 {
                break;
            }
            moves.push((start, place, count));
            start += delta;
        }
        let counts: Vec<i64> = moves.iter().map(|m| m.2).collect();
        let orders = super::noise::seeded_permutations(seed, &counts);
        for ((start, place, count), order) in moves.into_iter().zip(orders) {
            let order: Vec<i64> = Vec::<i64>::try_from(order + start).expect("int64 order");
            let moved = select(&noise, self.dim, &order);
            noise.narrow(self.dim, place, count).copy_(&moved);
        }
        noise
    }

    /// Each conditioning's estimate for `x` at `sigma`, window by window through `run`
    /// (ComfyUI's `calc_cond_batch` on each window), blended.
    pub fn execute(
        &self,
        conds: &[&Conditioning],
        x: &Tensor,
        sigma: f64,
        mut run: impl FnMut(&[&Conditioning], &Tensor) -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let dim = self.dim;
        let frames = x.size()[dim as usize];
        let windows = self.layout.windows(frames, self.step_at(sigma))?;
        let mut count_shape = vec![1i64; x.dim()];
        count_shape[dim as usize] = frames;
        let count_options = (Kind::Float, x.device());
        let mut totals: Vec<Tensor> = conds.iter().map(|_| x.zeros_like()).collect();
        let mut counts: Vec<Tensor> = conds
            .iter()
            .map(|_| Tensor::zeros(count_shape.as_slice(), count_options))
            .collect();
        let mut biases = vec![vec![0.0f64; frames as usize]; conds.len()];
        for indices in windows {
            let anchor =
                Some(indices[0] - 1).filter(|a| self.causal_fix && (0..frames).contains(a));
            let window = Window { indices, anchor };
            let sub_x = window.take(x, dim, &self.latent_retain);
            let sub_conds: Vec<Conditioning> = conds
                .iter()
                .map(|c| self.windowed(c, &window, frames))
                .collect();
            let refs: Vec<&Conditioning> = sub_conds.iter().collect();
            let outs = run(&refs, &sub_x)?;
            if outs.len() != conds.len() {
                bail!(
                    "a context window gave {} results for {} conditionings",
                    outs.len(),
                    conds.len()
                );
            }
            // The window's frames and their weights along `dim`, shared by every conditioning.
            let index = Tensor::from_slice(&window.indices).to_device(x.device());
            let weights = (self.fuse != Fuse::Relative).then(|| {
                let mut shape = vec![1i64; x.dim()];
                shape[dim as usize] = -1;
                self.fuse
                    .weights(&window.indices, frames, self.layout.overlap)
                    .to_device(x.device())
                    .view(shape.as_slice())
            });
            for (i, out) in outs.into_iter().enumerate() {
                let out = match window.anchor {
                    Some(_) => out.narrow(dim, 1, out.size()[dim as usize] - 1),
                    None => out,
                };
                match &weights {
                    None => blend_relative(&totals[i], &out, &window.indices, dim, &mut biases[i]),
                    Some(weights) => {
                        let _ = totals[i].index_add_(dim, &index, &(&out * weights));
                        let _ = counts[i].index_add_(dim, &index, weights);
                    }
                }
            }
        }
        if self.fuse == Fuse::Relative {
            return Ok(totals);
        }
        Ok(totals.iter().zip(&counts).map(|(t, c)| t / c).collect())
    }

    /// A conditioning for one window: its entries' frame-wise extras sliced to the window
    /// and marked as a window's (ComfyUI's `get_resized_cond`).
    fn windowed(&self, cond: &Conditioning, window: &Window, frames: i64) -> Conditioning {
        let entries: Vec<&CondEntry> = if self.split_conds && cond.0.len() > 1 {
            let n = cond.0.len();
            let region = ((window.center_ratio(frames) * n as f64) as usize).min(n - 1);
            vec![&cond.0[region]]
        } else {
            cond.0.iter().collect()
        };
        let marker = Arc::new(SharedTensor::new(Tensor::from_slice(&[1i64])));
        let windowed = entries.into_iter().map(|entry| {
            let mut e = entry.clone();
            for (key, value) in &entry.extra {
                if HOST_EXTRAS.contains(&key.as_str()) {
                    continue;
                }
                if let Some(sliced) = self.sliced_extra(key, value, window, frames) {
                    e.extra
                        .insert(key.clone(), Arc::new(SharedTensor::new(sliced)));
                }
            }
            e.extra.insert(CONTEXT_WINDOW_KEY.into(), marker.clone());
            e
        });
        Conditioning(windowed.collect())
    }

    /// An extra's window, where it runs along the frames: at the windows' dimension (VACE's
    /// controls one further in, the audio embedding at 1), its size the latent's; `None`
    /// keeps it whole.
    fn sliced_extra(&self, key: &str, t: &Tensor, window: &Window, frames: i64) -> Option<Tensor> {
        let matching = |dim: i64, retain: &[i64]| {
            let fits = t.dim() as i64 > dim && t.size()[dim as usize] == frames;
            fits.then(|| window.take(t, dim, retain))
        };
        match key {
            // WAN_Animate2's and WAN22_Animate's pose latents: `slice_cond(temporal_offset=1)`.
            POSE_LATENTS_KEY => {
                if t.dim() <= 2 || t.size()[2] != frames - 1 {
                    return None;
                }
                let indices = window.after_reference_slot();
                (!indices.is_empty()).then(|| select(t, 2, &indices))
            }
            // WAN22_Animate's face pixels: `slice_cond(temporal_scale=4, temporal_offset=1)`,
            // the four video frames of each latent frame past the reference slot.
            FACE_PIXELS_KEY => {
                if t.dim() <= 2 {
                    return None;
                }
                let size = t.size()[2];
                let indices: Vec<i64> = window
                    .after_reference_slot()
                    .iter()
                    .flat_map(|i| (0..4).map(move |k| i * 4 + k))
                    .filter(|&i| i < size)
                    .collect();
                (!indices.is_empty()).then(|| select(t, 2, &indices))
            }
            "vace_frames" | "vace_mask" => matching(3, &self.cond_retain),
            "audio_embed" => matching(1, &[]),
            _ => matching(self.dim, &self.cond_retain),
        }
    }
}

/// `relative` fusing: each frame's running average, weighted by the frame's bias in each
/// window so far.
fn blend_relative(total: &Tensor, out: &Tensor, indices: &[i64], dim: i64, biases: &mut [f64]) {
    let (first, last) = (indices[0], indices[indices.len() - 1]);
    for (pos, &idx) in indices.iter().enumerate() {
        let bias = relative_bias(idx, first, last);
        let sum = biases[idx as usize];
        let (previous, new) = (sum / (sum + bias), bias / (sum + bias));
        let mut slot = total.narrow(dim, idx, 1);
        let blended = &slot * previous + out.narrow(dim, pos as i64, 1) * new;
        slot.copy_(&blended);
        biases[idx as usize] = sum + bias;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use tch::Device;

    use super::schedules::Schedule;
    use super::*;

    fn handler(fuse: Fuse, length: i64, overlap: i64, cond_retain: Vec<i64>) -> ContextWindows {
        let layout = Layout {
            schedule: Schedule::StaticStandard,
            length,
            overlap,
            stride: 1,
            closed_loop: false,
        };
        ContextWindows::new(layout, fuse, 2, false, cond_retain, vec![], false, true)
    }

    /// `[1, 1, frames, 1, 1]` holding each frame's number.
    fn numbered(frames: i64) -> Tensor {
        Tensor::arange(frames, (Kind::Float, Device::Cpu)).view([1, 1, frames, 1, 1])
    }

    fn frames_of(t: &Tensor) -> Vec<f32> {
        Vec::try_from(t.flatten(0, -1)).unwrap()
    }

    fn conditioning(extras: &[(&str, Tensor)]) -> Conditioning {
        let mut entry = CondEntry::new(Tensor::zeros([1, 2, 4], (Kind::Float, Device::Cpu)));
        for (k, v) in extras {
            entry = entry.with_extra(k, v.shallow_clone());
        }
        Conditioning(vec![entry])
    }

    #[test]
    fn windows_of_an_identity_model_give_back_the_input() {
        let x = numbered(10);
        let cond = conditioning(&[]);
        for fuse in [
            Fuse::Pyramid,
            Fuse::Flat,
            Fuse::OverlapLinear,
            Fuse::Relative,
        ] {
            let out = handler(fuse, 4, 1, vec![])
                .execute(&[&cond], &x, 1.0, |_, sub_x| Ok(vec![sub_x * 2.0]))
                .unwrap();
            assert_eq!(frames_of(&out[0]), frames_of(&(&x * 2.0)), "{fuse:?}");
        }
    }

    #[test]
    fn pyramid_weights_blend_the_overlap_after_the_anchor_is_dropped() {
        // Windows 0..4 and 2..6; the second runs with frame 1 in front (5 frames). The model
        // answers each frame's position in its window: frames 2 and 3 are 2 and 3 in the first
        // window (weights 2, 1) and 1 and 2 in the second, after the anchor (weights 1, 2).
        let seen = RefCell::new(Vec::new());
        let cond = conditioning(&[]);
        let out = handler(Fuse::Pyramid, 4, 2, vec![])
            .execute(&[&cond], &numbered(6), 1.0, |_, sub_x| {
                seen.borrow_mut().push(frames_of(sub_x));
                Ok(vec![numbered(sub_x.size()[2])])
            })
            .unwrap();
        assert_eq!(
            *seen.borrow(),
            [vec![0.0, 1.0, 2.0, 3.0], vec![1.0, 2.0, 3.0, 4.0, 5.0]]
        );
        let expected = [0.0, 1.0, 5.0 / 3.0, 7.0 / 3.0, 3.0, 4.0];
        for (got, want) in frames_of(&out[0]).iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn relative_fusing_keeps_a_running_average_weighted_by_bias() {
        let cond = conditioning(&[]);
        let out = handler(Fuse::Relative, 4, 2, vec![])
            .execute(&[&cond], &numbered(6), 1.0, |_, sub_x| {
                Ok(vec![numbered(sub_x.size()[2])])
            })
            .unwrap();
        // Frame 2: position 2 in window 0..=3 (bias 1 − 0.5/1.505), then position 1 in 2..=5
        // after the anchor (bias 1 − 1.5/1.505, at the 0.01 floor): their weighted average.
        let (b1, b2) = (relative_bias(2, 0, 3), relative_bias(2, 2, 5));
        let want = (2.0 * b1 + 1.0 * b2) / (b1 + b2);
        assert!((frames_of(&out[0])[2] as f64 - want).abs() < 1e-6);
    }

    #[test]
    fn frame_wise_extras_are_sliced_and_the_pose_latents_one_frame_later() {
        // The latent: a reference frame then 9 video frames; the pose video has the 9.
        let concat = numbered(10).repeat([1, 16, 1, 1, 1]);
        let pose = numbered(9) + 100.0;
        let clip = Tensor::ones([1, 257, 8], (Kind::Float, Device::Cpu));
        let cond = conditioning(&[
            ("concat_latent_image", concat),
            ("pose_video_latent", pose),
            ("clip_vision_output", clip),
            ("pose_strength", Tensor::from_slice(&[0.5f32])),
        ]);
        let seen = RefCell::new(Vec::new());
        handler(Fuse::Pyramid, 4, 1, vec![0])
            .execute(&[&cond], &numbered(10), 1.0, |c, sub_x| {
                let e = &c[0].0[0];
                assert!(e.extra(CONTEXT_WINDOW_KEY).is_some());
                assert_eq!(e.extra("clip_vision_output").unwrap().size(), [1, 257, 8]);
                assert_eq!(e.extra("pose_strength").unwrap().size(), [1]);
                let concat = e.extra("concat_latent_image").unwrap().select(1, 0);
                let pose = e.extra("pose_video_latent").unwrap();
                seen.borrow_mut()
                    .push((frames_of(sub_x), frames_of(&concat), frames_of(pose)));
                Ok(vec![sub_x.shallow_clone()])
            })
            .unwrap();
        let seen = seen.into_inner();
        // Window 0..4: no anchor, the pose frames of latent frames 1..4.
        assert_eq!(seen[0].0, [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(seen[0].1, [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(seen[0].2, [100.0, 101.0, 102.0]);
        // Window 3..7 with anchor 2: the concat's first position retains frame 0 (the start
        // image); the pose latents cover latent frames 3..7.
        assert_eq!(seen[1].0, [2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(seen[1].1, [0.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(seen[1].2, [102.0, 103.0, 104.0, 105.0]);
    }

    #[test]
    fn wan_animate_faces_are_sliced_four_frames_per_latent_frame_past_the_reference() {
        // A reference frame then 9 latent frames; 33 face frames (4 per latent frame, cut short).
        let faces = Tensor::arange(33, (Kind::Float, Device::Cpu)).view([1, 1, 33, 1, 1]);
        let cond = conditioning(&[("face_video_pixels", faces)]);
        let seen = RefCell::new(Vec::new());
        handler(Fuse::Pyramid, 4, 1, vec![])
            .execute(&[&cond], &numbered(10), 1.0, |c, sub_x| {
                let faces = c[0].0[0].extra("face_video_pixels").unwrap();
                seen.borrow_mut().push(frames_of(faces));
                Ok(vec![sub_x.shallow_clone()])
            })
            .unwrap();
        let seen = seen.into_inner();
        // Window 0..4: latent frames 1..4 are faces 0..12.
        assert_eq!(seen[0], (0..12).map(|f| f as f32).collect::<Vec<_>>());
        // Window 3..7 (anchor 2): like the pose latents, latent frames 3..7 read pose frames
        // 2..6, here faces 8..24.
        assert_eq!(seen[1], (8..24).map(|f| f as f32).collect::<Vec<_>>());
        // The last window reaches past the 33 faces and keeps those that exist.
        assert_eq!(seen.last().unwrap().last(), Some(&32.0));
    }

    #[test]
    fn split_conds_gives_each_window_the_entry_of_its_region() {
        let mut cond = conditioning(&[]);
        cond.0.push(CondEntry::new(Tensor::ones(
            [1, 2, 4],
            (Kind::Float, Device::Cpu),
        )));
        let mut h = handler(Fuse::Flat, 4, 0, vec![]);
        h.split_conds = true;
        let picked = RefCell::new(Vec::new());
        h.execute(&[&cond], &numbered(8), 1.0, |c, sub_x| {
            assert_eq!(c[0].0.len(), 1);
            picked
                .borrow_mut()
                .push(c[0].0[0].context.double_value(&[0, 0, 0]));
            Ok(vec![sub_x.shallow_clone()])
        })
        .unwrap();
        assert_eq!(picked.into_inner(), [0.0, 1.0]);
    }

    #[test]
    fn retain_lists_read_comma_separated_integers() {
        assert_eq!(parse_indices("").unwrap(), Vec::<i64>::new());
        assert_eq!(parse_indices("0, 2,5").unwrap(), [0, 2, 5]);
        assert!(parse_indices("0, x").is_err());
    }
}
