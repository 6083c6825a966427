//! Audio editing nodes (`comfy_extras/nodes_audio.py`): EmptyAudio, TrimAudioDuration,
//! SplitAudioChannels, JoinAudioChannels, AudioConcat, AudioMerge and AudioAdjustVolume. Two
//! inputs of different rates meet at the higher one, resampled as torchaudio does.

use std::sync::Arc;

use tch::{Kind, Tensor};

use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::media::sinc_resample::resample;
use crate::media::Audio;
use crate::pyjson::int_number;

fn audio(waveform: Tensor, sample_rate: u32) -> Value {
    Value::object(Audio::new(waveform, sample_rate))
}

fn one(waveform: Tensor, sample_rate: u32) -> NodeResult {
    Ok(NodeOutput::one(audio(waveform, sample_rate)))
}

/// `match_audio_sample_rates`: the lower-rate waveform resampled to the higher rate.
fn matched(a: &Audio, b: &Audio) -> (Tensor, Tensor, u32) {
    let (ra, rb) = (a.sample_rate, b.sample_rate);
    let (wa, wb) = (a.waveform.shallow_clone(), b.waveform.shallow_clone());
    match ra.cmp(&rb) {
        std::cmp::Ordering::Greater => (wa, resample(&wb, rb as i64, ra as i64), ra),
        std::cmp::Ordering::Less => (resample(&wa, ra as i64, rb as i64), wb, rb),
        std::cmp::Ordering::Equal => (wa, wb, ra),
    }
}

fn samples(w: &Tensor) -> i64 {
    w.size()[w.dim() - 1]
}

fn channels(w: &Tensor) -> i64 {
    w.size()[1]
}

fn empty_audio(i: &Inputs, _: &ExecContext) -> NodeResult {
    let rate = i.int("sample_rate")?;
    let n = (i.float("duration")? * rate as f64).round_ties_even() as i64;
    let waveform = Tensor::f_zeros([1, i.int("channels")?, n], (Kind::Float, tch::Device::Cpu))
        .map_err(|_| NodeError::runtime(format!("cannot hold {n} samples of audio")))?;
    one(waveform, rate as u32)
}

/// `TrimAudioDuration`: `duration` seconds from `start_index` (negative counts from the end),
/// clamped to the audio.
fn trim(i: &Inputs, _: &ExecContext) -> NodeResult {
    let a = i.object::<Audio>("audio")?;
    let (w, rate) = (&a.waveform, a.sample_rate as f64);
    let length = samples(w);
    if length == 0 {
        return Ok(NodeOutput::one(audio(w.shallow_clone(), a.sample_rate)));
    }
    let offset = (i.float("start_index")? * rate).round_ties_even() as i64;
    let start = if offset < 0 { length + offset } else { offset }.clamp(0, length);
    let end = (start + (i.float("duration")? * rate).round_ties_even() as i64).clamp(0, length);
    if start >= end {
        return Err(NodeError::value(
            "TrimAudioDuration: Start time must be less than end time and be within the audio length.",
        ));
    }
    one(w.narrow(-1, start, end - start), a.sample_rate)
}

fn split_channels(i: &Inputs, _: &ExecContext) -> NodeResult {
    let a = i.object::<Audio>("audio")?;
    let w = &a.waveform;
    if channels(w) != 2 {
        return Err(NodeError::value(format!(
            "AudioSplit: Input audio must be stereo (2 channels), got {} channel(s).",
            channels(w)
        )));
    }
    Ok(NodeOutput::values(vec![
        audio(w.narrow(1, 0, 1), a.sample_rate),
        audio(w.narrow(1, 1, 1), a.sample_rate),
    ]))
}

/// `JoinAudioChannels`: two mono tracks as left and right, cut to the shorter.
fn join_channels(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (left, right) = (
        i.object::<Audio>("audio_left")?,
        i.object::<Audio>("audio_right")?,
    );
    if channels(&left.waveform) != 1 || channels(&right.waveform) != 1 {
        return Err(NodeError::value(
            "AudioJoin: Both input audios must be mono.",
        ));
    }
    let (l, r, rate) = matched(left, right);
    let n = samples(&l).min(samples(&r));
    let joined = Tensor::f_cat(&[l.narrow(-1, 0, n), r.narrow(-1, 0, n)], 1)
        .map_err(|_| NodeError::runtime("the two channels' batches differ"))?;
    one(joined, rate)
}

/// Mono made stereo by duplicating its channel, as AudioConcat does.
fn stereo(w: Tensor) -> Tensor {
    if channels(&w) == 1 {
        w.repeat([1, 2, 1])
    } else {
        w
    }
}

fn concat(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (a, b) = (i.object::<Audio>("audio1")?, i.object::<Audio>("audio2")?);
    let (wa, wb, rate) = matched(a, b);
    let (wa, wb) = (stereo(wa), stereo(wb));
    if wa.size()[..2] != wb.size()[..2] {
        return Err(NodeError::runtime(format!(
            "cannot join audio of shapes {:?} and {:?}",
            wa.size(),
            wb.size()
        )));
    }
    let joined = if i.string("direction")? == "before" {
        Tensor::cat(&[wb, wa], 2)
    } else {
        Tensor::cat(&[wa, wb], 2)
    };
    one(joined, rate)
}

/// `AudioMerge`: the second track cut or zero-padded to the first's length and combined;
/// the result scaled back into −1…1 if it leaves it.
fn merge(i: &Inputs, _: &ExecContext) -> NodeResult {
    let (a, b) = (i.object::<Audio>("audio1")?, i.object::<Audio>("audio2")?);
    let (wa, wb, rate) = matched(a, b);
    let (na, nb) = (samples(&wa), samples(&wb));
    if na == 0 || nb == 0 {
        return one(wa, rate);
    }
    let wb = if nb >= na {
        wb.narrow(-1, 0, na)
    } else {
        wb.constant_pad_nd([0, na - nb])
    };
    let broadcast = wa.size()[..2]
        .iter()
        .zip(&wb.size()[..2])
        .all(|(x, y)| x == y || *x == 1 || *y == 1);
    if !broadcast {
        return Err(NodeError::runtime(format!(
            "cannot merge audio of shapes {:?} and {:?}",
            wa.size(),
            wb.size()
        )));
    }
    let merged = match i.string("merge_method")?.as_str() {
        "subtract" => &wa - &wb,
        "multiply" => &wa * &wb,
        "mean" => (&wa + &wb) / 2.0,
        _ => &wa + &wb,
    };
    let peak = merged.abs().max().double_value(&[]);
    let merged = if peak > 1.0 {
        &merged / merged.abs().max()
    } else {
        merged
    };
    one(merged, rate)
}

fn adjust_volume(i: &Inputs, _: &ExecContext) -> NodeResult {
    let a = i.object::<Audio>("audio")?;
    let volume = i.int("volume")?;
    if volume == 0 {
        return Ok(NodeOutput::one(audio(
            a.waveform.shallow_clone(),
            a.sample_rate,
        )));
    }
    let gain = 10f64.powf(volume as f64 / 20.0);
    one(&**a.waveform * gain, a.sample_rate)
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult| {
        NodeDef::new(name, Style::V3, Arc::new(f))
            .display(display)
            .category("audio")
            .module("comfy_extras.nodes_audio")
    };
    let sound = |name: &str| InputDef::new(name, "AUDIO");
    r.add(
        node("TrimAudioDuration", "Trim Audio Duration", trim)
            .aliases(&["cut audio", "audio clip", "shorten audio"])
            .description("Trim audio tensor into chosen time range.")
            .input(sound("audio"))
            .input(
                InputDef::float("start_index")
                    .tooltip(
                        "Start time in seconds, can be negative to count from the end (supports \
                         sub-seconds).",
                    )
                    .default_float(0.0)
                    .min(int_number(-0xffff_ffff_ffff_ffff))
                    .max(int_number(0xffff_ffff_ffff_ffff))
                    .step_float(0.01),
            )
            .input(
                InputDef::float("duration")
                    .tooltip("Duration in seconds")
                    .default_float(60.0)
                    .min_float(0.0)
                    .step_float(0.01),
            )
            .output("AUDIO"),
    );
    r.add(
        node("SplitAudioChannels", "Split Audio Channels", split_channels)
            .aliases(&["stereo to mono"])
            .description("Separates the audio into left and right channels.")
            .input(sound("audio"))
            .named_output("AUDIO", "left")
            .named_output("AUDIO", "right"),
    );
    r.add(
        node("JoinAudioChannels", "Join Audio Channels", join_channels)
            .description("Joins left and right mono audio channels into a stereo audio.")
            .input(sound("audio_left"))
            .input(sound("audio_right"))
            .named_output("AUDIO", "audio"),
    );
    r.add(
        node("AudioConcat", "Concatenate Audio", concat)
            .aliases(&["join audio", "combine audio", "append audio"])
            .description("Concatenates the audio1 to audio2 in the specified direction.")
            .input(sound("audio1"))
            .input(sound("audio2"))
            .input(
                InputDef::combo("direction", &["after", "before"])
                    .tooltip("Whether to append audio2 after or before audio1.")
                    .default("after"),
            )
            .output("AUDIO"),
    );
    r.add(
        node("AudioMerge", "Merge Audio", merge)
            .aliases(&["mix audio", "overlay audio", "layer audio"])
            .description("Combine two audio tracks by overlaying their waveforms.")
            .input(sound("audio1"))
            .input(sound("audio2"))
            .input(
                InputDef::combo("merge_method", &["add", "mean", "subtract", "multiply"])
                    .tooltip("The method used to combine the audio waveforms."),
            )
            .output("AUDIO"),
    );
    r.add(
        node("AudioAdjustVolume", "Adjust Audio Volume", adjust_volume)
            .aliases(&["audio gain", "loudness", "audio level"])
            .description("Adjust the volume of the audio by a specified amount in decibels (dB).")
            .input(sound("audio"))
            .input(
                InputDef::int("volume")
                    .tooltip(
                        "Volume adjustment in decibels (dB). 0 = no change, +6 = double, -6 = \
                         half, etc",
                    )
                    .default(1)
                    .min(-100)
                    .max(100),
            )
            .output("AUDIO"),
    );
    r.add(
        node("EmptyAudio", "Empty Audio", empty_audio)
            .aliases(&["blank audio"])
            .input(
                InputDef::float("duration")
                    .tooltip("Duration of the empty audio clip in seconds")
                    .default_float(60.0)
                    .min_float(0.0)
                    .max(int_number(0xffff_ffff_ffff_ffff))
                    .step_float(0.01),
            )
            .input(
                InputDef::int("sample_rate")
                    .tooltip("Sample rate of the empty audio clip.")
                    .advanced()
                    .default(44100)
                    .min(1)
                    .max(192000),
            )
            .input(
                InputDef::int("channels")
                    .tooltip("Number of audio channels (1 for mono, 2 for stereo).")
                    .advanced()
                    .default(2)
                    .min(1)
                    .max(2),
            )
            .output("AUDIO"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_rates_are_resampled_to_the_higher() {
        let a = Audio::new(
            Tensor::ones([1, 1, 16000], (Kind::Float, tch::Device::Cpu)),
            16000,
        );
        let b = Audio::new(
            Tensor::ones([1, 2, 441], (Kind::Float, tch::Device::Cpu)),
            44100,
        );
        let (wa, wb, rate) = matched(&a, &b);
        assert_eq!((samples(&wa), samples(&wb), rate), (44100, 441, 44100));
    }
}
