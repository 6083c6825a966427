//! Which frames each context window covers (ComfyUI's `create_windows_*` in
//! `comfy/context_windows.py`, after AnimateDiff's context schedules).

use anyhow::{bail, Result};

/// A context schedule, by ComfyUI's option name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    StaticStandard,
    UniformStandard,
    UniformLooped,
    Batched,
}

impl Schedule {
    /// The options in ComfyUI's order.
    pub const NAMES: [&'static str; 4] = [
        "standard_static",
        "standard_uniform",
        "looped_uniform",
        "batched",
    ];

    pub fn parse(name: &str) -> Result<Schedule> {
        Ok(match name {
            "standard_static" => Schedule::StaticStandard,
            "standard_uniform" => Schedule::UniformStandard,
            "looped_uniform" => Schedule::UniformLooped,
            "batched" => Schedule::Batched,
            other => bail!("Unknown context_schedule '{other}'."),
        })
    }
}

/// The schedule's settings (in latent frames).
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub schedule: Schedule,
    pub length: i64,
    pub overlap: i64,
    pub stride: i64,
    pub closed_loop: bool,
}

impl Layout {
    /// The windows over `frames` frames at sampling step `step` (the uniform schedules shift
    /// with the step).
    pub fn windows(&self, frames: i64, step: usize) -> Result<Vec<Vec<i64>>> {
        let whole = || vec![(0..frames).collect::<Vec<i64>>()];
        let fits = match self.schedule {
            Schedule::UniformLooped => frames < self.length,
            _ => frames <= self.length,
        };
        if fits {
            return Ok(whole());
        }
        if self.schedule != Schedule::Batched && self.overlap >= self.length {
            bail!(
                "context_overlap ({}) must be smaller than context_length ({}).",
                self.overlap,
                self.length
            );
        }
        Ok(match self.schedule {
            Schedule::StaticStandard => self.static_standard(frames),
            Schedule::Batched => (0..frames)
                .step_by(self.length as usize)
                .map(|start| (start..(start + self.length).min(frames)).collect())
                .collect(),
            Schedule::UniformLooped => self.uniform(frames, step, self.closed_loop),
            Schedule::UniformStandard => {
                unrolled(self.uniform(frames, step, false), frames, self.length)
            }
        })
    }

    /// The same windows at every step, the last one moved back to end on the last frame.
    fn static_standard(&self, frames: i64) -> Vec<Vec<i64>> {
        let mut windows = Vec::new();
        for start in (0..frames).step_by((self.length - self.overlap) as usize) {
            let end = start + self.length;
            if end >= frames {
                let start = start - (end - frames);
                windows.push((start..start + self.length).collect());
                break;
            }
            windows.push((start..end).collect());
        }
        windows
    }

    /// Windows at the step's offset, wrapping past the last frame, at strides 1, 2, 4… up to
    /// `stride` levels.
    fn uniform(&self, frames: i64, step: usize, closed_loop: bool) -> Vec<Vec<i64>> {
        let levels =
            ((frames as f64 / self.length as f64).log2().ceil() as i64 + 1).min(self.stride);
        let halving = ordered_halving(step as u64);
        let pad = (frames as f64 * halving).round_ties_even() as i64;
        let mut windows = Vec::new();
        for level in 0..levels {
            let step_size = 1i64 << level;
            let start = (halving * step_size as f64) as i64 + pad;
            let stop = frames + pad - if closed_loop { 0 } else { self.overlap };
            let delta = self.length * step_size - self.overlap;
            let mut j = start;
            while j < stop {
                windows.push(
                    (j..j + self.length * step_size)
                        .step_by(step_size as usize)
                        .map(|e| e % frames)
                        .collect(),
                );
                j += delta;
            }
        }
        windows
    }
}

/// `standard_uniform`'s fix-up of looped windows: a window that wraps is moved to end on the
/// last frame (with a window from the wrapped frame added after it when the next one lacks
/// that frame), and repeated windows are dropped.
fn unrolled(mut windows: Vec<Vec<i64>>, frames: i64, length: i64) -> Vec<Vec<i64>> {
    let mut repeated = Vec::new();
    let mut i = 0;
    while i < windows.len() {
        if let Some(at) = rolls_over(&windows[i], frames) {
            let wrapped = windows[i][at];
            shift_to_end(&mut windows[i], frames);
            let next = (i + 1) % windows.len();
            if !windows[next].contains(&wrapped) {
                windows.insert(i + 1, (wrapped..wrapped + length).collect());
            }
        }
        if windows[..i].contains(&windows[i]) {
            repeated.push(i);
        }
        i += 1;
    }
    for i in repeated.into_iter().rev() {
        windows.remove(i);
    }
    windows
}

/// Where a window's frame numbers drop (it wrapped past the last frame).
fn rolls_over(window: &[i64], frames: i64) -> Option<usize> {
    let mut previous = -1;
    for (i, v) in window.iter().enumerate() {
        let v = v % frames;
        if v < previous {
            return Some(i);
        }
        previous = v;
    }
    None
}

/// The window moved to start at frame 0 (keeping its spacing) and then to end on the last frame.
fn shift_to_end(window: &mut [i64], frames: i64) {
    let first = window[0];
    for v in window.iter_mut() {
        *v = (*v - first + frames) % frames;
    }
    let delta = frames - window[window.len() - 1] - 1;
    for v in window.iter_mut() {
        *v += delta;
    }
}

/// `val`'s 64 bits reversed, as a fraction of 2⁶⁴: 0, ½, ¼, ¾, ⅛… for steps 0, 1, 2, 3, 4…
pub fn ordered_halving(val: u64) -> f64 {
    val.reverse_bits() as f64 / 18446744073709551616.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(schedule: Schedule, length: i64, overlap: i64, stride: i64) -> Layout {
        Layout {
            schedule,
            length,
            overlap,
            stride,
            closed_loop: false,
        }
    }

    fn ranges(spans: &[(i64, i64)]) -> Vec<Vec<i64>> {
        spans.iter().map(|&(a, b)| (a..b).collect()).collect()
    }

    #[test]
    fn ordered_halving_visits_binary_fractions() {
        let values: Vec<f64> = (0..6).map(ordered_halving).collect();
        assert_eq!(values, [0.0, 0.5, 0.25, 0.75, 0.125, 0.625]);
    }

    #[test]
    fn static_windows_step_by_length_less_overlap_and_end_on_the_last_frame() {
        let l = layout(Schedule::StaticStandard, 4, 1, 1);
        assert_eq!(
            l.windows(10, 0).unwrap(),
            ranges(&[(0, 4), (3, 7), (6, 10)])
        );
        assert_eq!(
            l.windows(11, 5).unwrap(),
            ranges(&[(0, 4), (3, 7), (6, 10), (7, 11)])
        );
        assert_eq!(l.windows(4, 0).unwrap(), ranges(&[(0, 4)]));
        // The Animate 2 template: 21 latent frames, 8 of overlap, on 22 frames.
        let t = layout(Schedule::StaticStandard, 21, 8, 1);
        assert_eq!(t.windows(22, 0).unwrap(), ranges(&[(0, 21), (1, 22)]));
    }

    #[test]
    fn batched_windows_cut_without_overlap() {
        let l = layout(Schedule::Batched, 4, 3, 1);
        assert_eq!(
            l.windows(10, 0).unwrap(),
            ranges(&[(0, 4), (4, 8), (8, 10)])
        );
    }

    #[test]
    fn looped_windows_wrap_and_shift_with_the_step() {
        let l = layout(Schedule::UniformLooped, 4, 1, 1);
        // Step 0: starts 0, 3, 6 (stop 10 − 1); the last wraps to frame 0.
        assert_eq!(
            l.windows(10, 0).unwrap(),
            vec![vec![0, 1, 2, 3], vec![3, 4, 5, 6], vec![6, 7, 8, 9]]
        );
        // Step 1: offset round(10 · ½) = 5, starts 5, 8, 11.
        assert_eq!(
            l.windows(10, 1).unwrap(),
            vec![vec![5, 6, 7, 8], vec![8, 9, 0, 1], vec![1, 2, 3, 4]]
        );
        // Stride 2 adds windows of every other frame: levels min(2, ceil(log2(10/4)) + 1).
        let strided = layout(Schedule::UniformLooped, 4, 1, 2)
            .windows(10, 0)
            .unwrap();
        assert_eq!(strided.len(), 3 + 2);
        assert_eq!(strided[3], vec![0, 2, 4, 6]);
        assert_eq!(strided[4], vec![7, 9, 1, 3]);
    }

    #[test]
    fn uniform_standard_windows_move_wrapped_ones_to_the_end() {
        let l = layout(Schedule::UniformStandard, 4, 1, 1);
        // Step 1's [8, 9, 0, 1] wraps: it becomes [6..10] and [0..4] is added after it, then
        // [1..5] follows.
        assert_eq!(
            l.windows(10, 1).unwrap(),
            ranges(&[(5, 9), (6, 10), (0, 4), (1, 5)])
        );
        assert_eq!(
            l.windows(10, 0).unwrap(),
            ranges(&[(0, 4), (3, 7), (6, 10)])
        );
    }

    #[test]
    fn overlap_at_least_the_length_is_an_error() {
        let err = layout(Schedule::StaticStandard, 4, 4, 1)
            .windows(10, 0)
            .unwrap_err();
        assert!(err.to_string().contains("context_overlap"), "{err}");
    }
}
