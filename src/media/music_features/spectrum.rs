//! Short-time spectra as librosa computes them with `center=True` and zero padding: the power
//! spectrogram, the Slaney mel filterbank, decibels, the onset-strength envelope and MFCCs.

use std::f64::consts::PI;

use tch::{Kind, Tensor};

use crate::media::mel::{hz_to_mel, mel_to_hz};

pub const N_FFT: i64 = 2048;
pub const HOP: i64 = 512;

/// A Hann window of `n` points; `periodic` is scipy's `fftbins=True`.
pub fn hann(n: i64, periodic: bool) -> Vec<f64> {
    let period = if periodic { n } else { n - 1 }.max(1) as f64;
    (0..n)
        .map(|k| 0.5 - 0.5 * (2.0 * PI * k as f64 / period).cos())
        .collect()
}

pub fn tensor(values: &[f64]) -> Tensor {
    Tensor::from_slice(values)
}

pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).expect("a CPU tensor")
}

/// The frames `[n_frames, n_fft]` of `y` padded by `n_fft / 2` zeros on each side, `hop`
/// apart.
pub fn centered_frames(y: &Tensor, n_fft: i64, hop: i64) -> Tensor {
    y.constant_pad_nd([n_fft / 2, n_fft / 2])
        .unfold(0, n_fft, hop)
}

/// The magnitudes `[n_fft/2 + 1, frames]` of the Hann-windowed STFT of `y`.
pub fn stft_magnitude(y: &Tensor, n_fft: i64, hop: i64) -> Tensor {
    let window = tensor(&hann(n_fft, true));
    (centered_frames(y, n_fft, hop) * window)
        .fft_rfft(None, 1, "backward")
        .abs()
        .transpose(0, 1)
}

/// The Slaney-normalized triangular mel filters `[n_mels, n_fft/2 + 1]` from 0 Hz to Nyquist.
pub fn mel_filterbank(sample_rate: f64, n_fft: i64, n_mels: i64) -> Tensor {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|k| k as f64 * sample_rate / n_fft as f64)
        .collect();
    let (low, high) = (hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(low + (high - low) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut weights = Vec::with_capacity((n_mels * bins) as usize);
    for m in 0..n_mels as usize {
        let (left, center, right) = (edges[m], edges[m + 1], edges[m + 2]);
        let area = 2.0 / (right - left);
        weights.extend(fft_freqs.iter().map(|&f| {
            let rising = (f - left) / (center - left);
            let falling = (right - f) / (right - center);
            rising.min(falling).max(0.0) * area
        }));
    }
    tensor(&weights).view([n_mels, bins])
}

/// The mel power spectrogram `[n_mels, frames]` of `y` (float64, `[samples]`) at
/// `sample_rate`.
pub fn mel_spectrogram(y: &Tensor, sample_rate: f64, n_mels: i64) -> Tensor {
    let power = stft_magnitude(y, N_FFT, HOP).square();
    mel_filterbank(sample_rate, N_FFT, n_mels).matmul(&power)
}

/// `10·log10(max(S, 1e-10))`, floored at the maximum minus `top_db` when given.
pub fn power_to_db(power: &Tensor, top_db: Option<f64>) -> Tensor {
    let db = power.clamp_min(1e-10).log10() * 10.0;
    match top_db {
        Some(range) => {
            let floor = db.max().double_value(&[]) - range;
            db.clamp_min(floor)
        }
        None => db,
    }
}

/// The onset strength per frame: the mean rise over mel bands from the previous frame,
/// delayed by `1 + n_fft / (2·hop)` frames as librosa centres it.
pub fn onset_envelope(mel_db: &Tensor) -> Vec<f64> {
    let frames = mel_db.size()[1];
    let rise = (mel_db.narrow(1, 1, frames - 1) - mel_db.narrow(1, 0, frames - 1)).clamp_min(0.0);
    let mean = values(&rise.mean_dim(0, false, Kind::Double));
    let delay = (1 + N_FFT / (2 * HOP)) as usize;
    let mut envelope = vec![0.0; delay];
    envelope.extend(mean);
    envelope.truncate(frames as usize);
    envelope
}

/// The first `n` orthonormal DCT-II coefficients over the mel bands: `[frames, n]`.
pub fn mfcc(mel_db: &Tensor, n: i64) -> Tensor {
    let bands = mel_db.size()[0];
    let mut basis = Vec::with_capacity((n * bands) as usize);
    for k in 0..n {
        let scale = if k == 0 { 1.0f64 } else { 2.0 }.sqrt() / (bands as f64).sqrt();
        basis.extend(
            (0..bands)
                .map(|j| scale * (PI * k as f64 * (2 * j + 1) as f64 / (2 * bands) as f64).cos()),
        );
    }
    tensor(&basis)
        .view([n, bands])
        .matmul(mel_db)
        .transpose(0, 1)
}
