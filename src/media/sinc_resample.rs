//! Band-limited resampling as torchaudio's `functional.resample` computes it with its defaults
//! (Hann-windowed sinc, 6 zero crossings, roll-off 0.99), which ComfyUI's audio encoders use to
//! bring audio to 16 kHz: one strided convolution of the padded waveform with a bank of
//! `new / gcd` phase filters.

use tch::{Kind, Tensor};

const ZERO_CROSSINGS: f64 = 6.0;
const ROLLOFF: f64 = 0.99;

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The phase filters `[new, 1, 2·width + orig]` and their half-width `width`, for rates
/// already divided by their gcd, computed in `kind` (the waveform's, as torchaudio does).
fn kernels(orig: i64, new: i64, kind: Kind) -> (Tensor, i64) {
    let base = orig.min(new) as f64 * ROLLOFF;
    let width = (ZERO_CROSSINGS * orig as f64 / base).ceil() as i64;
    let options = (kind, tch::Device::Cpu);
    let offsets =
        Tensor::arange_start(-width, width + orig, options).view([1, 1, -1]) / orig as f64;
    let phases = Tensor::arange_start_step(0, -new, -1, options).view([-1, 1, 1]) / new as f64;
    let t = ((phases + offsets) * base).clamp(-ZERO_CROSSINGS, ZERO_CROSSINGS);
    let window = (&t * std::f64::consts::PI / ZERO_CROSSINGS / 2.0)
        .cos()
        .pow_tensor_scalar(2);
    let t = t * std::f64::consts::PI;
    let sinc = t.ones_like().where_self(&t.eq(0.0), &(t.sin() / &t));
    (sinc * (window * (base / orig as f64)), width)
}

/// `waveform` `[…, samples]` (floating point) from `from` Hz to `to` Hz.
pub fn resample(waveform: &Tensor, from: i64, to: i64) -> Tensor {
    if from == to {
        return waveform.shallow_clone();
    }
    let g = gcd(from, to);
    let (orig, new) = (from / g, to / g);
    let (kernels, width) = kernels(orig, new, waveform.kind());
    let shape = waveform.size();
    let length = shape[shape.len() - 1];
    let flat = waveform.reshape([-1, length]);
    let padded = flat.constant_pad_nd([width, width + orig]).unsqueeze(1);
    let kernels = kernels.to_device(waveform.device());
    let phased = padded.conv1d(&kernels, None::<&Tensor>, [orig], [0], [1], 1);
    let rows = phased.size()[0];
    let out = phased.transpose(1, 2).reshape([rows, -1]);
    let target = (new as f64 * length as f64 / orig as f64).ceil() as i64;
    let mut out_shape = shape[..shape.len() - 1].to_vec();
    out_shape.push(target);
    out.narrow(1, 0, target).reshape(out_shape.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_rate_is_unchanged_and_lengths_follow_the_ratio() {
        let wave = Tensor::randn([2, 1, 441], (Kind::Float, tch::Device::Cpu));
        assert!(resample(&wave, 16000, 16000).equal(&wave));
        assert_eq!(resample(&wave, 44100, 16000).size(), [2, 1, 160]);
        assert_eq!(resample(&wave, 8000, 16000).size(), [2, 1, 882]);
    }

    /// A 440 Hz tone keeps its shape through 44.1 → 16 kHz away from the edges.
    #[test]
    fn a_tone_below_the_new_nyquist_survives() {
        let n = 4410;
        let tone = |rate: f64, samples: i64| {
            (Tensor::arange(samples, (Kind::Double, tch::Device::Cpu))
                * (2.0 * std::f64::consts::PI * 440.0 / rate))
                .sin()
                .to_kind(Kind::Float)
        };
        let out = resample(&tone(44100.0, n), 44100, 16000);
        let want = tone(16000.0, 1600);
        let error = (out.narrow(0, 100, 1400) - want.narrow(0, 100, 1400))
            .abs()
            .max()
            .double_value(&[]);
        assert!(error < 2e-3, "{error}");
    }
}
