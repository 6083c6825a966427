//! LTX's rotary positions (`comfy/ldm/lightricks/model.py`: `_precompute_freqs_cis`,
//! `symmetric_patchifier.py`): each token's span in pixels or seconds, as a fraction of the
//! axis' largest position mapped to [-1, 1], times `π/2 · θ^linspace(0, 1, n)`; frequencies
//! ordered frequency-major, axis-minor, left-padded with the identity to half the width; and
//! the "split" rotation, where dimension i of a head turns with dimension i + head_dim/2.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::runtime::fused;

/// The VAE's (time, height, width) pixels per latent cell.
pub const VIDEO_SCALE: [i64; 3] = [8, 32, 32];
/// Mel frames per audio latent frame, and the mel hop in seconds (160 samples at 16 kHz).
const AUDIO_SCALE: i64 = 4;
const HOP_LENGTH: f64 = 160.0;
const SAMPLE_RATE: f64 = 16000.0;

/// Cos and sin per token, head and rotated pair: float32 `[1, tokens, heads, head_dim/2]`.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Tables for `positions` `[axes, tokens, 2]` (each token's start and end) over a width of
    /// `dim` split into `heads` heads, at the span's middle or start, made on `positions`'
    /// device.
    pub fn new(positions: &Tensor, max_pos: &[f64], geometry: RopeGeometry) -> Self {
        let RopeGeometry {
            dim,
            heads,
            theta,
            double_precision,
            middle,
        } = geometry;
        let axes = max_pos.len() as i64;
        let at = if middle {
            (positions.select(2, 0) + positions.select(2, 1)) / 2.0
        } else {
            positions.select(2, 0)
        };
        let fractions: Vec<Tensor> = max_pos
            .iter()
            .enumerate()
            .map(|(axis, max)| at.get(axis as i64) / *max)
            .collect();
        let fractions = Tensor::stack(&fractions, -1); // [tokens, axes]
        let freqs = frequency_grid(theta, dim / (2 * axes), double_precision, at.device());
        let angles = (fractions.unsqueeze(-1) * 2.0 - 1.0) * freqs; // [tokens, axes, n]
        let angles = angles.transpose(-1, -2).flatten(1, 2);
        let tokens = angles.size()[0];
        let pad = dim / 2 - angles.size()[1];
        let padded = |values: Tensor, fill: f64| {
            let padding = Tensor::full([tokens, pad], fill, (Kind::Float, at.device()));
            Tensor::cat(&[padding, values], 1).view([1, tokens, heads, -1])
        };
        Self {
            cos: padded(angles.cos(), 1.0),
            sin: padded(angles.sin(), 0.0),
        }
    }

    /// `x` `[b, tokens, heads·head_dim]` RMS-normed by `weight` (rounded to `x`'s kind), then
    /// rotated: one kernel on a CUDA device, libtorch's ops elsewhere.
    pub fn norm_and_apply(&self, x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
        fused::rms_norm_split_rope(x, weight, (&self.cos, &self.sin), eps)
    }
}

/// Rotates `x` `[b, tokens, heads·head_dim]` by `cos`, `sin` `[1, tokens, heads, head_dim/2]`
/// in float32 (like diffusers and ComfyUI's kernel), dimension i of a head with i + head_dim/2;
/// returned in `x`'s dtype.
pub fn rotate_split(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let (b, tokens, width) = x.size3().expect("x is [b, tokens, width]");
    let heads = cos.size()[2];
    let halves = x
        .to_kind(Kind::Float)
        .view([b, tokens, heads, 2, width / heads / 2]);
    let (first, second) = (halves.select(3, 0), halves.select(3, 1));
    let rotated = Tensor::cat(
        &[&first * cos - &second * sin, &second * cos + &first * sin],
        3,
    );
    rotated.view([b, tokens, width]).to_kind(x.kind())
}

/// How a set of positions becomes rotations.
#[derive(Clone, Copy)]
pub struct RopeGeometry {
    pub dim: i64,
    pub heads: i64,
    pub theta: f64,
    pub double_precision: bool,
    pub middle: bool,
}

/// `π/2 · θ^linspace(0, 1, n)` in float32, computed in float64 where asked (ComfyUI's
/// `generate_freq_grid_np`) or float32 (`generate_freq_grid_pytorch`).
fn frequency_grid(theta: f64, n: i64, double_precision: bool, device: Device) -> Tensor {
    let kind = if double_precision {
        Kind::Double
    } else {
        Kind::Float
    };
    let exponents = Tensor::linspace(0.0, 1.0, n, (kind, Device::Cpu));
    let grid = Tensor::from(theta).to_kind(kind).pow(&exponents) * (std::f64::consts::PI / 2.0);
    grid.to_kind(Kind::Float).to_device(device)
}

/// The video tokens' spans in pixels `[3, f·h·w, 2]` (float32): pixel frames, rows and
/// columns, for a latent of `f × h × w` cells; `causal`: the first latent frame covers one pixel
/// frame (`latent_to_pixel_coords` with `causal_fix`). LTXVAddGuide's keyframes are these too.
pub fn pixel_spans((f, h, w): (i64, i64, i64), causal: bool) -> Tensor {
    let long = (Kind::Int64, Device::Cpu);
    let grid = Tensor::meshgrid_indexing(
        &[
            Tensor::arange(f, long),
            Tensor::arange(h, long),
            Tensor::arange(w, long),
        ],
        "ij",
    );
    let axes: Vec<Tensor> = grid
        .iter()
        .zip(VIDEO_SCALE)
        .enumerate()
        .map(|(axis, (cells, scale))| {
            let start = cells.reshape([-1]) * scale;
            let end = &start + scale;
            let span = Tensor::stack(&[start, end], 1);
            let span = if axis == 0 && causal {
                (span + 1 - scale).clamp_min(0)
            } else {
                span
            };
            span.to_kind(Kind::Float)
        })
        .collect();
    Tensor::stack(&axes, 0)
}

/// Pixel spans `[3, n, 2]` with their time in seconds at `frame_rate`, as the RoPE reads them.
pub fn in_seconds(spans: &Tensor, frame_rate: f64) -> Tensor {
    let time = spans.narrow(0, 0, 1) * (1.0 / frame_rate);
    Tensor::cat(&[time, spans.narrow(0, 1, 2)], 0)
}

/// The audio tokens' spans in seconds `[1, frames, 2]` (the causal mel-frame shift of
/// `AudioPatchifier`).
pub fn audio_positions(frames: i64) -> Tensor {
    let seconds = |first: i64| {
        let mel = Tensor::arange_start(first, frames + first, (Kind::Float, Device::Cpu))
            * AUDIO_SCALE as f64;
        (mel + (1 - AUDIO_SCALE) as f64).clamp_min(0.0) * HOP_LENGTH / SAMPLE_RATE
    };
    Tensor::stack(&[seconds(0), seconds(1)], 1).unsqueeze(0)
}

/// The spans `[1, frames, 2]` of an ID-LoRA reference clip (LTXVReferenceAudio): the clip's own
/// spans moved back so that it ends one latent frame before time 0.
pub fn reference_audio_positions(frames: i64) -> Tensor {
    let spans = audio_positions(frames);
    let end = spans.double_value(&[0, frames - 1, 1]);
    let frame_seconds = (AUDIO_SCALE as f64) * HOP_LENGTH / SAMPLE_RATE;
    spans - (end + frame_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_video_time_starts_with_one_pixel_frame() {
        let p = in_seconds(&pixel_spans((2, 1, 1), true), 8.0);
        let time: Vec<f32> = p.get(0).reshape([-1]).try_into().unwrap();
        // Frame 0 covers pixel frame 0 only, frame 1 pixel frames 1..9, at 8 fps.
        assert_eq!(time, [0.0, 0.125, 0.125, 1.125]);
        let audio: Vec<f32> = audio_positions(2).reshape([-1]).try_into().unwrap();
        assert_eq!(audio, [0.0, 0.01, 0.01, 0.05]);
        // A 2-frame reference ends at 0.05 s, so it moves back by 0.09 s.
        let reference: Vec<f32> = reference_audio_positions(2)
            .reshape([-1])
            .try_into()
            .unwrap();
        for (got, want) in reference.iter().zip([-0.09f32, -0.08, -0.08, -0.04]) {
            assert!((got - want).abs() < 1e-6, "{reference:?}");
        }
    }

    #[test]
    fn split_rotation_pairs_the_two_halves_of_a_head() {
        // One axis, one head of width 4: two frequencies; position 0.5 of max 1 is angle 0.
        let positions = Tensor::from_slice(&[0.5f32, 0.5, 1.0, 1.0]).view([1, 2, 2]);
        let geometry = RopeGeometry {
            dim: 4,
            heads: 1,
            theta: 10000.0,
            double_precision: true,
            middle: true,
        };
        let rope = Rope::new(&positions, &[1.0], geometry);
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 1.0, 0.0, 0.0, 0.0]).view([1, 2, 4]);
        let out = rotate_split(&x, &rope.cos, &rope.sin);
        let first: Vec<f32> = out.get(0).get(0).try_into().unwrap();
        assert_eq!(first, [1.0, 2.0, 3.0, 4.0]);
        // At fraction 1 the first frequency (π/2) turns dimension 0 towards dimension 2.
        let second: Vec<f32> = out.get(0).get(1).try_into().unwrap();
        assert!((second[0] - 0.0).abs() < 1e-6 && (second[2] - 1.0).abs() < 1e-6);
    }
}
