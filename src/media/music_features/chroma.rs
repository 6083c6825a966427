//! Chroma energy normalized statistics (CENS) as ComfyUI's WanDancer nodes compute them: the
//! tuning from peak-picked STFT pitches, a constant-Q transform of 7 octaves at 36 bins each
//! (one octave at a time from the top, halving the rate in between with a Kaiser FIR), folded
//! into 12 pitch classes, quantized, smoothed over 41 frames and L2-normalized.

use std::f64::consts::PI;

use tch::{Kind, Tensor};

use super::median;
use super::spectrum::{centered_frames, hann, stft_magnitude, tensor, values, HOP, N_FFT};

/// C1, the lowest CQT bin.
const FMIN: f64 = 32.70319566257483;
const BINS_PER_OCTAVE: i64 = 36;
const OCTAVES: i64 = 7;
/// `np.finfo(np.float32).tiny`, the normalizations' floor.
const TINY: f64 = 1.1754943508222875e-38;

/// `piptrack`'s pitches and magnitudes at the STFT's local maxima between 150 Hz and 4 kHz
/// that exceed a tenth of their frame's peak, refined by parabolic interpolation.
fn tracked_pitches(y: &Tensor, sample_rate: f64) -> Vec<(f64, f64)> {
    let s = stft_magnitude(y, N_FFT, HOP);
    let (bins, frames) = (s.size()[0] as usize, s.size()[1] as usize);
    let s = values(&s);
    let at = |k: usize, f: usize| s[k * frames + f];
    let fmax = 4000f64.min(sample_rate / 2.0);
    let bin_hz = sample_rate / N_FFT as f64;
    let mut found = Vec::new();
    for f in 0..frames {
        let floor = 0.1
            * (0..bins)
                .map(|k| at(k, f))
                .fold(f64::NEG_INFINITY, f64::max);
        let masked = |k: usize| if at(k, f) > floor { at(k, f) } else { 0.0 };
        for k in 1..bins {
            let hz = k as f64 * bin_hz;
            let is_max = if k == bins - 1 {
                masked(k) > masked(k - 1)
            } else {
                masked(k) > masked(k - 1) && masked(k) >= masked(k + 1)
            };
            if !is_max || hz < 150.0 || hz >= fmax {
                continue;
            }
            let (shift, slope) = if k == bins - 1 {
                (0.0, at(k, f) - at(k - 1, f))
            } else {
                let (prev, next) = (at(k - 1, f), at(k + 1, f));
                let (a, b) = (next + prev - 2.0 * at(k, f), (next - prev) / 2.0);
                (if b.abs() < a.abs() { -b / a } else { 0.0 }, b)
            };
            let pitch = (k as f64 + shift) * bin_hz;
            found.push((pitch, at(k, f) + 0.5 * slope * shift));
        }
    }
    found
}

/// The deviation from equal temperament (in bins of 36 per octave, a multiple of 0.01 in
/// −0.5..0.5): the most common offset of the strong half of the tracked pitches.
pub fn estimate_tuning(y: &Tensor, sample_rate: f64) -> f64 {
    if y.size()[0] < N_FFT {
        return 0.0;
    }
    let pitches: Vec<(f64, f64)> = tracked_pitches(y, sample_rate)
        .into_iter()
        .filter(|(p, _)| *p > 0.0)
        .collect();
    if pitches.is_empty() {
        return 0.0;
    }
    let threshold = median(pitches.iter().map(|(_, m)| *m).collect());
    let bins = BINS_PER_OCTAVE as f64;
    let edges: Vec<f64> = (0..=100).map(|i| i as f64 * (1.0 / 100.0) - 0.5).collect();
    let mut counts = [0usize; 100];
    for (pitch, _) in pitches.iter().filter(|(_, m)| *m >= threshold) {
        let mut residual = (bins * (pitch / (440.0 / 16.0)).log2()).rem_euclid(1.0);
        if residual >= 0.5 {
            residual -= 1.0;
        }
        let bin = edges
            .iter()
            .rposition(|&e| e <= residual)
            .unwrap_or(0)
            .min(99);
        counts[bin] += 1;
    }
    let best = (0..100).fold(0, |b, i| if counts[i] > counts[b] { i } else { b });
    edges[best]
}

/// `I₀`, the modified Bessel function of the first kind, by its power series.
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > 1e-17 * sum {
        term *= (x / (2.0 * k)).powi(2);
        sum += term;
        k += 1.0;
    }
    sum
}

/// scipy's `firwin(321, 0.48, window=('kaiser', 6.5))`: the half-band low-pass ComfyUI
/// halves the rate with.
fn half_band_filter() -> Vec<f64> {
    const TAPS: usize = 321;
    let center = (TAPS - 1) as f64 / 2.0;
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            (PI * x).sin() / (PI * x)
        }
    };
    let h: Vec<f64> = (0..TAPS)
        .map(|n| {
            let m = n as f64 - center;
            let window = bessel_i0(6.5 * (1.0 - (m / center).powi(2)).sqrt()) / bessel_i0(6.5);
            0.48 * sinc(0.48 * m) * window
        })
        .collect();
    let total: f64 = h.iter().sum();
    h.into_iter().map(|v| v / total).collect()
}

/// `y` at half its rate (scipy's `resample_poly(y, 1, 2)` through the half-band filter,
/// `ceil(len / 2)` samples), scaled by √2 and rounded to float32 as ComfyUI keeps it.
fn halved(y: &Tensor, filter: &Tensor) -> Tensor {
    let taps = filter.size()[0];
    let out = y
        .view([1, 1, -1])
        .constant_pad_nd([taps / 2, taps / 2])
        .conv1d(&filter.view([1, 1, -1]), None::<&Tensor>, [2], [0], [1], 1)
        .view([-1]);
    (out / 0.5f64.sqrt())
        .to_kind(Kind::Float)
        .to_kind(Kind::Double)
}

/// One octave's wavelet filters in the frequency domain `[filters, n_fft/2 + 1]` at rate
/// `rate`: Hann-windowed complex exponentials of `lengths`, L1-normalized, centered in the
/// next power-of-two length, scaled by length over FFT size, with each row's smallest
/// entries (1 % of its L1 mass) dropped.
fn octave_basis(freqs: &[f64], lengths: &[f64], rate: f64) -> (Tensor, i64) {
    let longest = lengths.iter().copied().fold(0.0, f64::max);
    let n_fft = 2f64.powf(longest.log2().ceil()) as i64;
    let mut re = vec![0.0; freqs.len() * n_fft as usize];
    let mut im = re.clone();
    for (k, (&freq, &length)) in freqs.iter().zip(lengths).enumerate() {
        let (start, end) = (
            (-length / 2.0).floor() as i64,
            (length / 2.0).floor() as i64,
        );
        let n = end - start;
        let window = hann(n, true);
        let wave: Vec<(f64, f64)> = (start..end)
            .zip(&window)
            .map(|(t, w)| {
                let phase = t as f64 * 2.0 * PI * freq / rate;
                // ComfyUI builds each wavelet in complex64.
                let (c, s) = (phase.cos() as f32 as f64, phase.sin() as f32 as f64);
                (c * w, s * w)
            })
            .collect();
        let l1: f64 = wave.iter().map(|(c, s)| c.hypot(*s)).sum::<f64>().max(TINY);
        let pad = ((n_fft - n) / 2) as usize;
        let row = k * n_fft as usize + pad;
        for (j, (c, s)) in wave.into_iter().enumerate() {
            re[row + j] = c / l1 * length / n_fft as f64;
            im[row + j] = s / l1 * length / n_fft as f64;
        }
    }
    let shape = [freqs.len() as i64, n_fft];
    let basis = Tensor::complex(&tensor(&re).view(shape), &tensor(&im).view(shape));
    let spectrum = basis
        .fft_fft(None, 1, "backward")
        .narrow(1, 0, n_fft / 2 + 1);
    let mags = spectrum.abs();
    let norms = mags.sum_dim_intlist([1i64].as_slice(), true, Kind::Double);
    let (sorted, _) = mags.sort(1, false);
    let cumulative = (&sorted / norms).cumsum(1, Kind::Double);
    let below = cumulative
        .lt(0.01)
        .sum_dim_intlist([1i64].as_slice(), true, Kind::Int64);
    let keep = mags.ge_tensor(&sorted.gather(1, &below, false));
    (spectrum * keep, n_fft)
}

/// The CQT magnitudes `[n_bins, frames]` of `y` at `sample_rate`, its bins `tuning` (in bins)
/// above C1.
fn constant_q(y: &Tensor, sample_rate: f64, tuning: f64) -> Tensor {
    let n_bins = OCTAVES * BINS_PER_OCTAVE;
    let fmin = FMIN * 2f64.powf(tuning / BINS_PER_OCTAVE as f64);
    let freqs: Vec<f64> = (0..n_bins)
        .map(|k| fmin * 2f64.powf(k as f64 / BINS_PER_OCTAVE as f64))
        .collect();
    let logs: Vec<f64> = freqs.iter().map(|f| f.log2()).collect();
    let last = logs.len() - 1;
    let alpha: Vec<f64> = (0..logs.len())
        .map(|k| {
            let bpo = match k {
                0 => 1.0 / (logs[1] - logs[0]),
                _ if k == last => 1.0 / (logs[last] - logs[last - 1]),
                _ => 2.0 / (logs[k + 1] - logs[k - 1]),
            };
            let r = 2f64.powf(2.0 / bpo);
            (r - 1.0) / (r + 1.0)
        })
        .collect();
    let lengths_at = |rate: f64, k: usize| rate / (alpha[k] * freqs[k]);
    let filter = tensor(&half_band_filter());
    let (mut y, mut rate, mut hop) = (
        y.to_kind(Kind::Float).to_kind(Kind::Double),
        sample_rate,
        HOP,
    );
    let mut octaves = Vec::new();
    for octave in 0..OCTAVES {
        let end = (n_bins - octave * BINS_PER_OCTAVE) as usize;
        let range = end - BINS_PER_OCTAVE as usize..end;
        let lengths: Vec<f64> = range.clone().map(|k| lengths_at(rate, k)).collect();
        let (basis, n_fft) = octave_basis(&freqs[range], &lengths, rate);
        let basis = basis * (sample_rate / rate).sqrt();
        let stft = centered_frames(&y, n_fft, hop).fft_rfft(None, 1, "backward");
        octaves.push(basis.matmul(&stft.transpose(0, 1)));
        if hop % 2 == 0 {
            hop /= 2;
            rate /= 2.0;
            y = halved(&y, &filter);
        }
    }
    let frames = octaves.iter().map(|o| o.size()[1]).min().unwrap_or(0);
    let stacked: Vec<Tensor> = octaves
        .iter()
        .rev()
        .map(|o| o.narrow(1, 0, frames))
        .collect();
    let scale: Vec<f64> = (0..n_bins as usize)
        .map(|k| lengths_at(sample_rate, k).sqrt().recip())
        .collect();
    Tensor::cat(&stacked, 0).abs() * tensor(&scale).view([-1, 1])
}

/// The 12 × 252 map of CQT bins to pitch classes (three bins each, centred on the class).
fn chroma_map() -> Tensor {
    let n_bins = OCTAVES * BINS_PER_OCTAVE;
    let merge = BINS_PER_OCTAVE / 12;
    let mut map = vec![0.0; (12 * n_bins) as usize];
    for bin in 0..n_bins {
        let class = ((bin + merge / 2) % BINS_PER_OCTAVE) / merge;
        map[(class * n_bins + bin) as usize] = 1.0;
    }
    tensor(&map).view([12, n_bins])
}

/// Chroma CENS `[frames, 12]` of `y` (float64 `[samples]`) taken at `sample_rate`.
pub fn chroma_cens(y: &Tensor, sample_rate: f64) -> Tensor {
    let tuning = estimate_tuning(y, sample_rate);
    let chroma = chroma_map().matmul(&constant_q(y, sample_rate, tuning));
    let l1 = chroma
        .abs()
        .sum_dim_intlist([0i64].as_slice(), true, Kind::Double)
        .clamp_min(TINY);
    let chroma = chroma / l1;
    let quantized = [0.4, 0.2, 0.1, 0.05]
        .iter()
        .map(|step| chroma.gt(*step).to_kind(Kind::Double) * 0.25)
        .reduce(|a, b| a + b)
        .expect("four steps");
    let window = hann(43, false);
    let total: f64 = window.iter().sum();
    let window = (tensor(&window) / total).view([1, 1, -1]);
    let smoothed = quantized
        .unsqueeze(1)
        .conv1d(&window, None::<&Tensor>, [1], [21], [1], 1)
        .squeeze_dim(1);
    let l2 = smoothed
        .square()
        .sum_dim_intlist([0i64].as_slice(), true, Kind::Double)
        .sqrt()
        .clamp_min(TINY);
    (smoothed / l2).transpose(0, 1)
}
