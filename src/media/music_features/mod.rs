//! The music features Wan Dancer is conditioned on (ComfyUI's `WanDancerEncodeAudio`, its DSP
//! derived from librosa): per frame of 512 samples at 15.36 kHz (30 frames a second), the
//! onset strength, 20 MFCCs, 12 chroma CENS values, an onset-peak flag and a beat flag.

mod chroma;
mod rhythm;
mod spectrum;

use tch::{Kind, Tensor};

use crate::media::sinc_resample::resample;
use spectrum::{mel_spectrogram, mfcc, onset_envelope, power_to_db, tensor, HOP};

/// The feature frame rate: one frame per hop at `BASE_FPS · HOP` Hz.
pub const BASE_FPS: i64 = 30;
/// The rate ComfyUI passes to the spectral features (which run on 15.36 kHz samples: the
/// reference pipeline's analysis parameters at its training rate).
const ANALYSIS_RATE: f64 = 22050.0;
pub const FEATURES: i64 = 35;

/// The tempo the beat tracker starts from: the onset tempo of the audio at its own rate
/// (120 BPM for less than ten hops of audio).
fn start_tempo(y: &Tensor, sample_rate: f64) -> f64 {
    if y.size()[0] < HOP * 10 {
        return rhythm::DEFAULT_BPM;
    }
    let mel_db = power_to_db(&mel_spectrogram(y, sample_rate, 128), None);
    rhythm::tempo(&onset_envelope(&mel_db), sample_rate, rhythm::DEFAULT_BPM)
}

/// numpy's median (the mean of the middle two of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn flags(frames: usize, at: &[usize]) -> Tensor {
    let mut v = vec![0.0; frames];
    for &i in at {
        v[i] = 1.0;
    }
    tensor(&v).view([-1, 1])
}

/// The features `[frames, 35]` (float32) of mono audio `samples` (`[n]`, float32) at
/// `sample_rate` Hz.
pub fn dancer_features(samples: &Tensor, sample_rate: i64) -> anyhow::Result<Tensor> {
    let samples = samples.to_kind(Kind::Float);
    let start = start_tempo(&samples.to_kind(Kind::Double), sample_rate as f64);
    let y = resample(&samples, sample_rate, BASE_FPS * HOP).to_kind(Kind::Double);
    let mel_db = power_to_db(&mel_spectrogram(&y, ANALYSIS_RATE, 128), Some(80.0));
    let envelope = onset_envelope(&mel_db);
    let frames = envelope.len();
    let chroma = chroma::chroma_cens(&y, ANALYSIS_RATE);
    if chroma.size()[0] != frames as i64 {
        anyhow::bail!(
            "the chroma has {} frames and the onset envelope {frames}",
            chroma.size()[0]
        );
    }
    let peaks = rhythm::onset_peaks(&envelope, ANALYSIS_RATE);
    let bpm = rhythm::tempo(&envelope, ANALYSIS_RATE, start);
    let beats = rhythm::beats(&envelope, bpm, ANALYSIS_RATE);
    let columns = [
        tensor(&envelope).view([-1, 1]),
        mfcc(&mel_db, 20),
        chroma,
        flags(frames, &peaks),
        flags(frames, &beats),
    ];
    Ok(Tensor::cat(&columns, 1).to_kind(Kind::Float))
}

/// The frame rate the video's frames stand for: 30 divided by how many feature frames each
/// video frame covers, rounded.
pub fn video_fps(feature_frames: i64, video_frames: i64) -> f64 {
    let stride = (feature_frames as f64 / video_frames as f64 + 0.5) as i64;
    BASE_FPS as f64 / stride as f64
}
