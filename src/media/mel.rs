//! torchaudio's `MelSpectrogram` with Slaney mels, as the audio models ComfyUI runs build it
//! (Whisper's features, LTX-2's audio VAE input): a centred, reflect-padded Hann STFT and
//! `melscale_fbanks(…, norm="slaney", mel_scale="slaney")`, in float32; and the Slaney scale
//! itself, which librosa's (the music features') shares.

use tch::{Device, Kind, Tensor};

/// Hz to Slaney mels (linear below 1 kHz, logarithmic above), as torchaudio and librosa compute
/// them.
pub fn hz_to_mel(hz: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let min_log_mel = min_log_hz / f_sp;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / (6.4f64.ln() / 27.0)
    } else {
        hz / f_sp
    }
}

pub fn mel_to_hz(mel: f64) -> f64 {
    let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
    let min_log_mel = min_log_hz / f_sp;
    if mel >= min_log_mel {
        min_log_hz * ((6.4f64.ln() / 27.0) * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// `melscale_fbanks(n_fft / 2 + 1, 0, f_max, mels, sample_rate, norm="slaney",
/// mel_scale="slaney")`: `[n_fft / 2 + 1, mels]` on the CPU.
pub fn slaney_filters(sample_rate: i64, n_fft: i64, f_max: f64, mels: i64) -> Tensor {
    let float = (Kind::Float, Device::Cpu);
    let n_freqs = n_fft / 2 + 1;
    let all_freqs = Tensor::linspace(0.0, (sample_rate / 2) as f64, n_freqs, float);
    let m_pts = Tensor::linspace(hz_to_mel(0.0), hz_to_mel(f_max), mels + 2, float);
    // mel_to_hz on the float32 points, as torchaudio computes it.
    let (f_sp, logstep) = (200.0 / 3.0, 6.4f64.ln() / 27.0);
    let log_part = ((&m_pts - 15.0) * logstep).exp() * 1000.0;
    let f_pts = log_part.where_self(&m_pts.ge(15.0), &(&m_pts * f_sp));
    let f_diff = f_pts.narrow(0, 1, mels + 1) - f_pts.narrow(0, 0, mels + 1);
    let slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1);
    let down = -slopes.narrow(1, 0, mels) / f_diff.narrow(0, 0, mels);
    let up = slopes.narrow(1, 2, mels) / f_diff.narrow(0, 1, mels);
    let fb = down.minimum(&up).clamp_min(0.0);
    let enorm: Tensor = 2.0 / (f_pts.narrow(0, 2, mels) - f_pts.narrow(0, 0, mels));
    fb * enorm.unsqueeze(0)
}

/// `Spectrogram(n_fft, hop_length=hop, power=1)`'s magnitudes of `signal` `[…, samples]`
/// (float32): `[…, n_fft / 2 + 1, 1 + samples / hop]`.
pub fn stft_magnitude(signal: &Tensor, n_fft: i64, hop: i64) -> Tensor {
    let shape = signal.size();
    let (lead, samples) = shape.split_at(shape.len() - 1);
    let flat = signal.to_kind(Kind::Float).reshape([-1, 1, samples[0]]);
    let window = Tensor::hann_window(n_fft, (Kind::Float, signal.device()));
    // torch.stft's `center`: reflect-padded by half a window on both sides (done here, as
    // tch cannot leave `align_to_window` unset, which `center` requires).
    let half = n_fft / 2;
    let padded = flat.reflection_pad1d([half, half]).squeeze_dim(1);
    let spec = padded
        .stft(n_fft, hop, n_fft, Some(&window), false, true, true, false)
        .abs();
    let out: Vec<i64> = lead
        .iter()
        .copied()
        .chain(spec.size()[1..].to_vec())
        .collect();
    spec.reshape(out)
}

/// Applies `filters` (`slaney_filters`) to a spectrogram `[…, freqs, frames]`: `[…, mels,
/// frames]`, as torchaudio's `MelScale` does.
pub fn apply_filters(spec: &Tensor, filters: &Tensor) -> Tensor {
    spec.transpose(-1, -2).matmul(filters).transpose(-1, -2)
}
