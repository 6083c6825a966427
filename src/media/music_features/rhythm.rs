//! Tempo, onset peaks and beats from an onset-strength envelope, as ComfyUI's WanDancer nodes
//! compute them (their librosa-derived autocorrelation tempogram, peak picker and
//! dynamic-programming beat tracker).

use super::median;
use super::spectrum::{hann, tensor, values, HOP};

/// The tempo (BPM) ComfyUI returns when the envelope is too short to tell.
pub const DEFAULT_BPM: f64 = 120.0;
const MAX_TEMPO: f64 = 320.0;
/// The autocorrelation window, in seconds.
const AC_SECONDS: f64 = 8.0;

/// numpy's `linear_ramp` padding by `pad` on both sides, ramping from 0 to the edge values.
fn ramp_padded(envelope: &[f64], pad: usize) -> Vec<f64> {
    let (first, last) = (envelope[0], envelope[envelope.len() - 1]);
    let step = |edge: f64, i: usize| edge * i as f64 / pad as f64;
    let mut out: Vec<f64> = (0..pad).map(|i| step(first, i)).collect();
    out.extend_from_slice(envelope);
    out.extend((0..pad).map(|j| step(last, pad - 1 - j)));
    out
}

/// The tempo whose autocorrelation (averaged over 8 s windows, each normalized to its peak)
/// is strongest under a log-normal prior around `start_bpm` (one octave wide), below
/// 320 BPM.
pub fn tempo(envelope: &[f64], sample_rate: f64, start_bpm: f64) -> f64 {
    let n = envelope.len();
    if n < 20 {
        return DEFAULT_BPM;
    }
    let win = ((AC_SECONDS * sample_rate / HOP as f64).round_ties_even() as usize).min(n);
    let padded = tensor(&ramp_padded(envelope, win / 2));
    let frames =
        padded.unfold(0, win as i64, 1).narrow(0, 0, n as i64) * tensor(&hann(win as i64, true));
    // Zero-padded to at least 2·win − 1, the FFT gives the linear autocorrelation.
    let size = (2 * win - 1).next_power_of_two() as i64;
    let spectrum = frames.fft_rfft(size, 1, "backward").abs().square();
    let ac = spectrum
        .fft_irfft(size, 1, "backward")
        .narrow(1, 0, win as i64);
    let peak = ac.abs().amax([1i64].as_slice(), true);
    let ac = ac.where_self(&peak.eq(0.0), &(&ac / peak.clamp_min(f64::MIN_POSITIVE)));
    let mean = values(&ac.mean_dim(0, false, tch::Kind::Double));
    let bpm = |lag: usize| 60.0 * sample_rate / (HOP as f64 * lag as f64);
    let first_allowed = (1..win).find(|&lag| bpm(lag) < MAX_TEMPO).unwrap_or(0);
    let mut best = (f64::NEG_INFINITY, 1);
    for (lag, &strength) in mean.iter().enumerate().skip(1) {
        let prior = if lag < first_allowed {
            f64::NEG_INFINITY
        } else {
            -0.5 * (bpm(lag).log2() - start_bpm.log2()).powi(2)
        };
        let score = (1e6 * strength.max(0.0)).ln_1p() + prior;
        if score > best.0 {
            best = (score, lag);
        }
    }
    bpm(best.1)
}

/// Frame counts of ComfyUI's peak-picking windows (in seconds) at this frame rate.
fn frames_of(seconds: f64, sample_rate: f64) -> usize {
    (seconds * sample_rate / HOP as f64) as usize
}

/// Onset peaks: frames that are the maximum of the 30 ms before them and above the 100 ms
/// mean around them by 0.07 (of the min-max normalized envelope), at least 30 ms apart.
pub fn onset_peaks(envelope: &[f64], sample_rate: f64) -> Vec<usize> {
    let n = envelope.len();
    let low = envelope.iter().copied().fold(f64::INFINITY, f64::min);
    let shifted: Vec<f64> = envelope.iter().map(|v| v - low).collect();
    let high = shifted.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let env: Vec<f64> = if high > 0.0 {
        shifted.iter().map(|v| v / high).collect()
    } else {
        shifted
    };
    let (pre_max, post_max) = (frames_of(0.03, sample_rate), 1);
    let (pre_avg, post_avg) = (
        frames_of(0.10, sample_rate),
        frames_of(0.10, sample_rate) + 1,
    );
    let wait = frames_of(0.03, sample_rate);
    let max_of = |s: &[f64]| s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean_of = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let delta = 0.07;
    let mut peaks = Vec::new();
    let first = env[0] >= max_of(&env[..post_max.min(n)])
        && env[0] >= mean_of(&env[..post_avg.min(n)]) + delta;
    let mut i = if first {
        peaks.push(0);
        wait + 1
    } else {
        1
    };
    while i < n {
        let around = &env[i.saturating_sub(pre_max)..(i + post_max).min(n)];
        let is_peak = env[i] == max_of(around)
            && env[i] >= mean_of(&env[i.saturating_sub(pre_avg)..(i + post_avg).min(n)]) + delta;
        if is_peak {
            peaks.push(i);
            i += wait + 1;
        } else {
            i += 1;
        }
    }
    peaks
}

/// The envelope (divided by its sample standard deviation) smoothed by a Gaussian of
/// ±`period` frames: the score of a beat at each frame.
fn local_scores(envelope: &[f64], period: f64) -> Vec<f64> {
    let n = envelope.len();
    let sd = {
        let mean = envelope.iter().sum::<f64>() / n as f64;
        (envelope.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    };
    let normed: Vec<f64> = envelope
        .iter()
        .map(|v| if sd > 0.0 { v / sd } else { *v })
        .collect();
    let half = period as i64;
    let window: Vec<f64> = (-half..=half)
        .map(|r| (-0.5 * (r as f64 * 32.0 / period).powi(2)).exp())
        .collect();
    (0..n as i64)
        .map(|i| {
            window
                .iter()
                .enumerate()
                .filter_map(|(k, w)| {
                    let j = i + half - k as i64;
                    (0..n as i64).contains(&j).then(|| normed[j as usize] * w)
                })
                .sum()
        })
        .collect()
}

/// Beats by dynamic programming: each frame's best predecessor half to two periods back,
/// penalized by the log-ratio of their distance to the period (`tightness` 100); the chain
/// back from the last strong local maximum of the cumulative score, trimmed of the weak
/// frames at both ends.
pub fn beats(envelope: &[f64], bpm: f64, sample_rate: f64) -> Vec<usize> {
    const TIGHTNESS: f64 = 100.0;
    let n = envelope.len();
    let period = (sample_rate / HOP as f64 * 60.0 / bpm).round_ties_even();
    if period <= 0.0 || n < 2 {
        return Vec::new();
    }
    let score = local_scores(envelope, period);
    let threshold = 0.01 * score.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let fpb = period as i64;
    let mut cumulative = vec![0.0; n];
    let mut backlink = vec![-1i64; n];
    cumulative[0] = score[0];
    let mut first_beat = true;
    for i in 1..n {
        let (mut best, mut location) = (f64::NEG_INFINITY, -1i64);
        let start = i as i64 - (fpb as f64 / 2.0).round_ties_even() as i64;
        let end = i as i64 - 2 * fpb - 1;
        let mut loc = start;
        while loc > end && loc >= 0 {
            let distance = ((i as i64 - loc) as f64).ln() - (fpb as f64).ln();
            let s = cumulative[loc as usize] - TIGHTNESS * distance * distance;
            if s > best {
                (best, location) = (s, loc);
            }
            loc -= 1;
        }
        cumulative[i] = score[i] + if location >= 0 { best } else { 0.0 };
        if !(first_beat && score[i] < threshold) {
            backlink[i] = location;
            first_beat = false;
        }
    }
    let is_max = |i: usize| match i {
        0 => false,
        _ if i == n - 1 => cumulative[i] > cumulative[i - 1],
        _ => cumulative[i] > cumulative[i - 1] && cumulative[i] >= cumulative[i + 1],
    };
    let maxima: Vec<usize> = (0..n).filter(|&i| is_max(i)).collect();
    let tail = if maxima.is_empty() {
        Some(n - 1)
    } else {
        let strong = 0.5 * median(maxima.iter().map(|&i| cumulative[i]).collect());
        maxima
            .iter()
            .rev()
            .copied()
            .find(|&i| cumulative[i] >= strong)
    };
    let mut is_beat = vec![false; n];
    let mut at = tail.map_or(-1, |t| t as i64);
    while at >= 0 && !is_beat[at as usize] {
        is_beat[at as usize] = true;
        at = backlink[at as usize];
    }
    trim_weak_ends(&mut is_beat, &score);
    (0..n).filter(|&i| is_beat[i]).collect()
}

/// Clears the beats among the leading and trailing frames whose score is at most half the
/// RMS of the beats' scores smoothed by a 5-point Hann window (ComfyUI keeps the full
/// convolution from its third value on).
fn trim_weak_ends(is_beat: &mut [bool], score: &[f64]) {
    let beat_scores: Vec<f64> = (0..score.len())
        .filter(|&i| is_beat[i])
        .map(|i| score[i])
        .collect();
    if beat_scores.is_empty() {
        return;
    }
    let w = [0.0, 0.5, 1.0, 0.5, 0.0];
    let full: Vec<f64> = (0..beat_scores.len() + 4)
        .map(|k| {
            (0..5)
                .filter(|&j| k >= j && k - j < beat_scores.len())
                .map(|j| w[j] * beat_scores[k - j])
                .sum()
        })
        .collect();
    let kept = &full[2..full.len().min(score.len() + 2)];
    let threshold = 0.5 * (kept.iter().map(|v| v * v).sum::<f64>() / kept.len() as f64).sqrt();
    for i in 0..score.len() {
        if score[i] > threshold {
            break;
        }
        is_beat[i] = false;
    }
    for i in (0..score.len()).rev() {
        if score[i] > threshold {
            break;
        }
        is_beat[i] = false;
    }
}
