//! How overlapping context windows' outputs are blended (ComfyUI's `ContextFuseMethods`).

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// A fuse method, by ComfyUI's option name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fuse {
    Pyramid,
    /// Pyramid-like weights, but each frame's running average is updated window by window.
    Relative,
    Flat,
    OverlapLinear,
}

impl Fuse {
    /// The options in ComfyUI's order (`LIST_STATIC`).
    pub const NAMES: [&'static str; 4] = ["pyramid", "relative", "flat", "overlap-linear"];

    pub fn parse(name: &str) -> Result<Fuse> {
        Ok(match name {
            "pyramid" => Fuse::Pyramid,
            "relative" => Fuse::Relative,
            "flat" => Fuse::Flat,
            "overlap-linear" => Fuse::OverlapLinear,
            other => bail!("Unknown fuse_method '{other}'."),
        })
    }

    /// The weight of each of a window's frames, `[len(indices)]` float32 on the CPU, for the
    /// weighted-average methods (not `Relative`).
    pub fn weights(self, indices: &[i64], frames: i64, overlap: i64) -> Tensor {
        let length = indices.len() as i64;
        match self {
            Fuse::Flat => Tensor::ones([length], (Kind::Float, Device::Cpu)),
            Fuse::Pyramid | Fuse::Relative => Tensor::from_slice(&pyramid(length)),
            Fuse::OverlapLinear => overlap_linear(indices, frames, overlap),
        }
    }
}

/// 1, 2, … up to the middle and back down: `[1, 2, 2, 1]`, `[1, 2, 3, 2, 1]`.
fn pyramid(length: i64) -> Vec<f32> {
    (0..length)
        .map(|i| (i + 1).min(length - i).min((length + 1) / 2) as f32)
        .collect()
}

/// Ones, ramping from ~0 over the overlap on the sides shared with another window (Kijai's
/// WanVideoWrapper blend): not on the first window's left, nor the last one's right.
fn overlap_linear(indices: &[i64], frames: i64, overlap: i64) -> Tensor {
    let length = indices.len() as i64;
    let weights = Tensor::ones([length], (Kind::Float, Device::Cpu));
    let overlap = overlap.min(length);
    if overlap == 0 {
        return weights;
    }
    let ramp = |from: f64, to: f64| Tensor::linspace(from, to, overlap, (Kind::Float, Device::Cpu));
    if indices.iter().min().is_some_and(|&first| first > 0) {
        weights.narrow(0, 0, overlap).copy_(&ramp(1e-37, 1.0));
    }
    if indices.iter().max().is_some_and(|&last| last < frames - 1) {
        weights
            .narrow(0, length - overlap, overlap)
            .copy_(&ramp(1.0, 1e-37));
    }
    weights
}

/// `Relative`'s influence of frame `index` in a window spanning `first..=last`: 1 at the
/// middle, falling towards the edges, at least 0.01.
pub fn relative_bias(index: i64, first: i64, last: i64) -> f64 {
    let middle = (first + last) as f64 / 2.0;
    let half_span = ((last - first) as f64 + 1e-2) / 2.0;
    (1.0 - (index as f64 - middle).abs() / half_span).max(1e-2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::try_from(t).unwrap()
    }

    #[test]
    fn pyramid_weights_rise_to_the_middle() {
        assert_eq!(pyramid(4), [1.0, 2.0, 2.0, 1.0]);
        assert_eq!(pyramid(5), [1.0, 2.0, 3.0, 2.0, 1.0]);
        assert_eq!(pyramid(1), [1.0]);
    }

    #[test]
    fn overlap_linear_ramps_only_shared_sides() {
        let first = Fuse::OverlapLinear.weights(&[0, 1, 2, 3], 10, 2);
        assert_eq!(values(&first), [1.0, 1.0, 1.0, 1e-37]);
        let middle = Fuse::OverlapLinear.weights(&[3, 4, 5, 6, 7], 10, 3);
        assert_eq!(values(&middle), [1e-37, 0.5, 1.0, 0.5, 1e-37]);
        let last = Fuse::OverlapLinear.weights(&[6, 7, 8, 9], 10, 2);
        assert_eq!(values(&last), [1e-37, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn relative_bias_peaks_in_the_middle() {
        assert!((relative_bias(5, 3, 7) - 1.0).abs() < 1e-12);
        assert!((relative_bias(4, 3, 7) - (1.0 - 1.0 / 2.005)).abs() < 1e-12);
        // The edges fall to 1 − 2/2.005, below the floor.
        assert_eq!(relative_bias(3, 3, 7), 1e-2);
        assert_eq!(relative_bias(0, 0, 0), 1.0);
    }
}
