//! Video and audio as ComfyUI's VIDEO and AUDIO types, and their files (through FFmpeg).

pub mod decode;
pub mod encode;
pub mod mel;
pub mod music_features;
pub mod round_trip;
pub mod sinc_resample;
mod yuv;

use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::engine::value::SharedTensor;

/// The color space of videos made from images.
pub const SRGB: &str = "sRGB";

/// ComfyUI's AUDIO: `waveform` `[B, C, T]` float in −1..1 and its sample rate.
pub struct Audio {
    pub waveform: Arc<SharedTensor>,
    pub sample_rate: u32,
}

impl Audio {
    pub fn new(waveform: Tensor, sample_rate: u32) -> Self {
        Audio {
            waveform: Arc::new(SharedTensor::new(waveform.to_kind(Kind::Float))),
            sample_rate,
        }
    }

    /// The first batch item as one `Vec<f32>` per channel.
    pub fn channels(&self) -> Vec<Vec<f32>> {
        let w = self.waveform.to_device(tch::Device::Cpu);
        let w = if w.dim() == 3 { w.get(0) } else { w };
        (0..w.size()[0])
            .map(|c| {
                let ch = w.get(c).contiguous();
                let mut out = vec![0f32; ch.numel()];
                let n = out.len();
                ch.copy_data(&mut out, n);
                out
            })
            .collect()
    }

    pub fn seconds(&self) -> f64 {
        let size = self.waveform.size();
        *size.last().unwrap_or(&0) as f64 / self.sample_rate.max(1) as f64
    }
}

/// ComfyUI's VIDEO: frames `[N, H, W, C]` in 0..1, a frame rate and optional audio.
pub struct Video {
    pub frames: Arc<SharedTensor>,
    pub fps: f64,
    pub audio: Option<Arc<Audio>>,
    /// The depth SaveVideo encodes at (CreateVideo's choice; a loaded file's own).
    pub bit_depth: u32,
    /// `sRGB`, `HDR` (HLG) or `HDR PQ`; none for a loaded file whose transfer is unknown.
    pub color_space: Option<String>,
}

impl Video {
    /// A video made from images: 8-bit sRGB, as upstream's `VideoFromComponents`.
    pub fn new(frames: Tensor, fps: f64, audio: Option<Arc<Audio>>) -> Self {
        Video {
            frames: Arc::new(SharedTensor::new(frames)),
            fps,
            audio,
            bit_depth: 8,
            color_space: Some(SRGB.into()),
        }
    }

    pub fn with_format(mut self, bit_depth: u32, color_space: Option<String>) -> Self {
        self.bit_depth = bit_depth;
        self.color_space = color_space;
        self
    }

    /// `(width, height)` of the frames.
    pub fn dimensions(&self) -> (i64, i64) {
        let s = self.frames.size();
        (s[2], s[1])
    }
}
