"""The music features of ComfyUI's WanDancerEncodeAudio (comfy_extras/nodes_wandancer.py),
written out over numpy, scipy and torchaudio: ComfyUI re-derives them from librosa with its own
choices (the spectral features of 15.36 kHz samples computed as if at 22.05 kHz, a Kaiser FIR
from scipy for the CQT's octave halving, its own beat-tracker trimming), so this follows
ComfyUI's steps rather than librosa's calls; its scipy primitives (get_window, firwin,
resample_poly, rfft, dct, convolve, ndimage.convolve, np.histogram, linear-ramp padding) are the
reference for ours.

The clips: two seconds of drums and chords at 44.1 kHz stereo (128 BPM kicks, hats off the
beat, a chord a beat), and the same piece at 16 kHz mono, slower and detuned by a third of a
semitone.

Usage: DIR -> writes DIR/music_features.safetensors: for each clip NAME, NAME_audio
[1, channels, samples], NAME_rate, NAME_features [frames, 35], NAME_start_bpm, NAME_bpm and
NAME_tuning."""
import sys
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal
import torch
import torchaudio
from safetensors.torch import save_file

N_FFT, HOP = 2048, 512
ANALYSIS_RATE = 22050
BASE_FPS = 30


def frames_of(y, n_fft, hop):
    """Zero-padded centered frames [n_fft, frames]."""
    padded = np.pad(y, n_fft // 2)
    return np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop].T


def hz_to_mel(hz):
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-300) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), mel * 200.0 / 3)


def mel_spectrogram(y, sr, n_mels=128):
    window = scipy.signal.get_window("hann", N_FFT, fftbins=True)[:, None]
    power = np.abs(scipy.fft.rfft(window * frames_of(y, N_FFT, HOP), axis=0)) ** 2
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / sr)
    rising = (freqs[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    falling = (edges[2:, None] - freqs[None, :]) / np.diff(edges)[1:, None]
    basis = np.maximum(0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return basis @ power


def onset_envelope(mel_db):
    rise = np.maximum(0.0, np.diff(mel_db, axis=1)).mean(axis=0)
    return np.concatenate([np.zeros(1 + N_FFT // (2 * HOP)), rise])[: mel_db.shape[1]]


def tempo(envelope, sr, start_bpm=120.0):
    if len(envelope) < 20:
        return 120.0
    win = min(int(np.round(8.0 * sr / HOP)), len(envelope))
    padded = np.pad(envelope, win // 2, mode="linear_ramp", end_values=0)
    windows = np.lib.stride_tricks.sliding_window_view(padded, win)[: len(envelope)]
    windows = windows * scipy.signal.get_window("hann", win, fftbins=True)
    # The autocorrelation of each window, straight from its definition.
    ac = np.stack([np.correlate(w, w, mode="full")[win - 1:] for w in windows])
    peak = np.abs(ac).max(axis=1, keepdims=True)
    ac = np.where(peak > 0, ac / np.where(peak > 0, peak, 1), ac)
    strength = np.maximum(ac.mean(axis=0), 0)
    lags = np.arange(1, win)
    bpms = 60.0 * sr / (HOP * lags)
    prior = -0.5 * (np.log2(bpms) - np.log2(start_bpm)) ** 2
    prior[bpms >= 320.0] = -np.inf
    return bpms[np.argmax(np.log1p(1e6 * strength[1:]) + prior)]


def onset_peaks(envelope, sr):
    env = envelope - envelope.min()
    if env.max() > 0:
        env = env / env.max()
    pre_max, post_max = int(0.03 * sr / HOP), 1
    pre_avg, post_avg = int(0.10 * sr / HOP), int(0.10 * sr / HOP) + 1
    wait = int(0.03 * sr / HOP)
    peaks, n = [], 0
    first = env[0] >= env[:post_max].max() and env[0] >= env[:post_avg].mean() + 0.07
    if first:
        peaks.append(0)
        n = wait + 1
    else:
        n = 1
    while n < len(env):
        if env[n] == env[max(0, n - pre_max):n + post_max].max() and \
                env[n] >= env[max(0, n - pre_avg):n + post_avg].mean() + 0.07:
            peaks.append(n)
            n += wait + 1
        else:
            n += 1
    return peaks


def beats(envelope, bpm, sr, tightness=100.0):
    period = np.round(sr / HOP * 60.0 / bpm)
    normed = envelope / np.std(envelope, ddof=1)
    offsets = np.arange(-period, period + 1)
    score = scipy.signal.convolve(normed, np.exp(-0.5 * (offsets * 32.0 / period) ** 2), mode="same")
    n, fpb = len(score), int(period)
    cumulative, backlink = np.zeros(n), np.full(n, -1)
    cumulative[0] = score[0]
    started = False
    for i in range(1, n):
        candidates = [loc for loc in range(i - int(np.round(fpb / 2.0)), i - 2 * fpb - 1, -1) if loc >= 0]
        best, where = -np.inf, -1
        for loc in candidates:
            s = cumulative[loc] - tightness * (np.log(i - loc) - np.log(fpb)) ** 2
            if s > best:
                best, where = s, loc
        cumulative[i] = score[i] + (best if where >= 0 else 0.0)
        if started or score[i] >= 0.01 * score.max():
            backlink[i] = where
            started = True
    maxima = [i for i in range(1, n) if cumulative[i] > cumulative[i - 1]
              and (i == n - 1 or cumulative[i] >= cumulative[i + 1])]
    strong = [i for i in maxima if cumulative[i] >= 0.5 * np.median(cumulative[maxima])]
    chain, at = [], strong[-1]
    while at >= 0 and at not in chain:
        chain.append(at)
        at = backlink[at]
    chain.sort()
    smooth = np.convolve(score[chain], np.hanning(5))[2:n + 2]
    threshold = 0.5 * np.sqrt(np.mean(smooth ** 2))
    weak = np.flatnonzero(score > threshold)
    return [b for b in chain if weak[0] <= b <= weak[-1]]


def estimate_tuning(y, sr):
    window = scipy.signal.get_window("hann", N_FFT, fftbins=True)[:, None]
    S = np.abs(scipy.fft.rfft(window * frames_of(y, N_FFT, HOP), axis=0))
    freqs = np.arange(S.shape[0]) * sr / N_FFT
    masked = S * (S > 0.1 * S.max(axis=0, keepdims=True))
    is_max = np.zeros_like(S, dtype=bool)
    is_max[1:-1] = (masked[1:-1] > masked[:-2]) & (masked[1:-1] >= masked[2:])
    is_max[-1] = masked[-1] > masked[-2]
    is_max &= ((freqs >= 150.0) & (freqs < min(4000.0, sr / 2)))[:, None]
    a = S[2:] + S[:-2] - 2 * S[1:-1]
    b = (S[2:] - S[:-2]) / 2
    shift = np.zeros_like(S)
    shift[1:-1] = np.where(np.abs(b) < np.abs(a), -b / np.where(a == 0, 1, a), 0)
    k, f = np.nonzero(is_max)
    pitches = (k + shift[k, f]) * sr / N_FFT
    mags = S[k, f] + 0.5 * np.gradient(S, axis=0)[k, f] * shift[k, f]
    strong = pitches[mags >= np.median(mags)]
    residual = np.mod(36 * np.log2(strong / 27.5), 1.0)
    residual[residual >= 0.5] -= 1.0
    counts, edges = np.histogram(residual, np.linspace(-0.5, 0.5, 101))
    return edges[np.argmax(counts)]


def halved(y):
    h = scipy.signal.firwin(321, 0.48, window=("kaiser", 6.5))
    out = scipy.signal.resample_poly(y.astype(np.float32), 1, 2, window=h)[: (len(y) + 1) // 2]
    return (out / np.sqrt(0.5)).astype(np.float32)


def constant_q(y, sr, tuning, bins_per_octave=36, octaves=7):
    n_bins = bins_per_octave * octaves
    freqs = 32.70319566257483 * 2.0 ** (tuning / bins_per_octave) * 2.0 ** (np.arange(n_bins) / bins_per_octave)
    log = np.log2(freqs)
    bpo = np.empty(n_bins)
    bpo[0], bpo[-1] = 1 / (log[1] - log[0]), 1 / (log[-1] - log[-2])
    bpo[1:-1] = 2 / (log[2:] - log[:-2])
    alpha = (2 ** (2 / bpo) - 1) / (2 ** (2 / bpo) + 1)
    rate, hop, y = float(sr), HOP, y.astype(np.float32)
    rows = []
    for octave in range(octaves):
        sl = slice(n_bins - (octave + 1) * bins_per_octave, n_bins - octave * bins_per_octave)
        lengths = rate / (alpha[sl] * freqs[sl])
        n_fft = int(2 ** np.ceil(np.log2(lengths.max())))
        basis = np.zeros((bins_per_octave, n_fft), dtype=np.complex64)
        for j, (freq, length) in enumerate(zip(freqs[sl], lengths)):
            t = np.arange(np.floor(-length / 2), np.floor(length / 2))
            wave = np.exp(2j * np.pi * freq * t / rate).astype(np.complex64)
            wave = wave * scipy.signal.get_window("hann", len(t), fftbins=True)
            wave = wave / np.abs(wave).sum()
            start = (n_fft - len(t)) // 2
            basis[j, start:start + len(t)] = wave * length / n_fft
        spectrum = np.fft.fft(basis, axis=1)[:, : n_fft // 2 + 1]
        mags = np.abs(spectrum)
        ordered = np.sort(mags, axis=1)
        cut = np.argmax(np.cumsum(ordered / mags.sum(axis=1, keepdims=True), axis=1) >= 0.01, axis=1)
        spectrum = np.where(mags >= ordered[np.arange(len(cut)), cut][:, None], spectrum, 0)
        stft = np.fft.rfft(frames_of(y, n_fft, hop), axis=0)
        rows.append(np.sqrt(sr / rate) * spectrum @ stft)
        hop, rate, y = hop // 2, rate / 2, halved(y)
    frames = min(r.shape[1] for r in rows)
    cqt = np.concatenate([r[:, :frames] for r in reversed(rows)])
    return np.abs(cqt) / np.sqrt(sr / (alpha * freqs))[:, None]


def chroma_cens(y, sr):
    cqt = constant_q(y, sr, estimate_tuning(y, sr))
    bins = np.arange(cqt.shape[0])
    fold = np.zeros((12, cqt.shape[0]))
    fold[((bins + 1) % 36) // 3, bins] = 1.0
    chroma = fold @ cqt
    chroma = chroma / np.maximum(np.abs(chroma).sum(axis=0), np.finfo(np.float32).tiny)
    quantized = sum(0.25 * (chroma > step) for step in (0.4, 0.2, 0.1, 0.05))
    window = scipy.signal.get_window("hann", 43, fftbins=False)
    smooth = scipy.ndimage.convolve(quantized, (window / window.sum())[None, :], mode="constant")
    return (smooth / np.maximum(np.linalg.norm(smooth, axis=0), np.finfo(np.float32).tiny)).T


def features(audio, rate):
    mono = audio[0].mean(dim=0)
    y0 = mono.numpy().astype(np.float64)
    start = tempo(onset_envelope(10 * np.log10(np.maximum(1e-10, mel_spectrogram(y0, rate)))), rate)
    y = torchaudio.functional.resample(mono, rate, BASE_FPS * HOP).numpy().astype(np.float64)
    mel_db = 10 * np.log10(np.maximum(1e-10, mel_spectrogram(y, ANALYSIS_RATE)))
    mel_db = np.maximum(mel_db, mel_db.max() - 80.0)
    envelope = onset_envelope(mel_db)
    mfcc = scipy.fft.dct(mel_db, axis=0, type=2, norm="ortho")[:20].T
    chroma = chroma_cens(y, ANALYSIS_RATE)
    bpm = tempo(envelope, ANALYSIS_RATE, start)
    flags = np.zeros((len(envelope), 2))
    flags[onset_peaks(envelope, ANALYSIS_RATE), 0] = 1.0
    flags[beats(envelope, bpm, ANALYSIS_RATE), 1] = 1.0
    table = np.concatenate([envelope[:, None], mfcc, chroma, flags], axis=1)
    return table, start, bpm, estimate_tuning(y, ANALYSIS_RATE)


def song(rate, seconds, bpm, detune, channels, seed):
    """Kicks on the beat, hats between, a triad a beat (from a C major progression)."""
    g = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    out = np.zeros_like(t)
    beat = 60.0 / bpm
    chords = [(60, 64, 67), (57, 60, 64), (65, 69, 72), (67, 71, 74)]
    for i in range(int(seconds / beat) + 1):
        onset = i * beat
        local = t - onset
        on = (local >= 0) & (local < beat)
        decay = np.exp(-local[on] * 30.0)
        out[on] += 0.6 * decay * np.sin(2 * np.pi * 60.0 * local[on])
        for note in chords[i % 4]:
            hz = 440.0 * 2 ** ((note - 69 + detune) / 12)
            out[on] += 0.12 * np.exp(-local[on] * 3.0) * np.sin(2 * np.pi * hz * local[on])
        hat = (local >= beat / 2) & (local < beat / 2 + 0.03)
        out[hat] += 0.2 * g.standard_normal(hat.sum())
    out += 0.002 * g.standard_normal(len(t))
    return torch.from_numpy(np.stack([out * (1 - 0.1 * c) for c in range(channels)])).float().unsqueeze(0)


def main():
    out = {}
    for name, rate, seconds, bpm, detune, channels in [("drums", 44100, 2.0, 128.0, 0.0, 2),
                                                        ("slow", 16000, 3.0, 92.0, 0.33, 1)]:
        audio = song(rate, seconds, bpm, detune, channels, seed=len(name))
        table, start, tempo_bpm, tuning = features(audio, rate)
        out[f"{name}_audio"] = audio
        out[f"{name}_rate"] = torch.tensor([rate], dtype=torch.int64)
        out[f"{name}_features"] = torch.from_numpy(table)
        out[f"{name}_start_bpm"] = torch.tensor([start], dtype=torch.float64)
        out[f"{name}_bpm"] = torch.tensor([tempo_bpm], dtype=torch.float64)
        out[f"{name}_tuning"] = torch.tensor([tuning], dtype=torch.float64)
    save_file(out, Path(sys.argv[1]) / "music_features.safetensors")


if __name__ == "__main__":
    main()
