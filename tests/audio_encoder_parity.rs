//! The audio encoders' path against PyPI references (tests/python/wav2vec2_reference.py),
//! float32 on the CPU: torchaudio's resampling to 16 kHz (down from 44.1 and 22.05 kHz, up from
//! 8 kHz), and transformers' Wav2Vec2Model in both shapes ComfyUI knows ("large" behind
//! transformers' `wav2vec2.` prefix, "base" with the old weight-norm names), every layer's
//! input and the last state, on audio prepared as ComfyUI prepares it.

mod reference;

use tch::{Device, Kind};
use videosdgx::media::sinc_resample::resample;
use videosdgx::models::loading::component;
use videosdgx::models::wav2vec2::{Wav2Vec2, Wav2Vec2Kind};
use videosdgx::models::weights::Weights;
use videosdgx::models::whisper::Whisper;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn resampling_and_wav2vec2_match_torchaudio_and_transformers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("wav2vec2_reference.py");
    let io = SafetensorsFile::open(&dir.path().join("wav2vec2_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let audio = get("audio_44k");
    for (name, ours) in [
        ("resampled_44k", resample(&audio, 44100, 16000)),
        (
            "resampled_22k",
            resample(&audio.narrow(2, 0, 22050), 22050, 16000),
        ),
        (
            "resampled_8k",
            resample(&get("audio_16k").narrow(2, 0, 8000), 8000, 16000),
        ),
    ] {
        let err = reference::max_abs_diff(&ours, &get(name));
        assert!(err <= 1e-6, "{name}: max abs error {err}");
    }
    for (tag, kind, input) in [
        ("large", Wav2Vec2Kind::Large, get("resampled_44k")),
        ("base", Wav2Vec2Kind::Base, get("audio_16k")),
    ] {
        let path = dir.path().join(format!("wav2vec2_{tag}.safetensors"));
        let file = SafetensorsFile::open(&path).unwrap();
        let found = component(&file, "audio_encoder").unwrap();
        assert_eq!(found.architecture, format!("wav2vec2_{tag}"));
        let weights = Weights::new(&file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
        let model = Wav2Vec2::load(&weights).unwrap();
        assert_eq!(model.kind(), kind);
        let out = model.forward(&input).unwrap();
        assert_eq!(out.all_layers.len(), 3, "{tag}");
        let mut expected = vec![("last".to_string(), &out.last)];
        for (i, layer) in out.all_layers.iter().enumerate() {
            expected.push((format!("layer_{i}"), layer));
        }
        for (name, ours) in expected {
            let err = reference::max_abs_diff(ours, &get(&format!("{tag}_{name}")));
            assert!(err <= 1e-4, "{tag} {name}: max abs error {err}");
        }
    }
}

/// Whisper large-v3's encoder (HuMo's audio encoder) at width 128 against transformers'
/// `WhisperEncoder`, on the log-mel features ComfyUI makes with torchaudio: the features, every
/// layer's input and the last state.
#[test]
fn whisper_log_mel_and_encoder_match_torchaudio_and_transformers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("whisper_reference.py");
    let io = SafetensorsFile::open(&dir.path().join("whisper_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let file = SafetensorsFile::open(&dir.path().join("whisper.safetensors")).unwrap();
    let found = component(&file, "audio_encoder").unwrap();
    assert_eq!(found.architecture, "whisper3");
    let weights = Weights::new(&file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
    let model = Whisper::load(&weights).unwrap();
    let mel = model.log_mel(&get("audio"));
    let err = reference::max_abs_diff(&mel, &get("mel"));
    assert!(err <= 1e-5, "log-mel: max abs error {err}");
    let out = model.forward(&get("audio")).unwrap();
    assert_eq!(out.all_layers.len(), 3);
    let mut expected = vec![("last".to_string(), &out.last)];
    for (i, layer) in out.all_layers.iter().take(2).enumerate() {
        expected.push((format!("layer_{i}"), layer));
    }
    for (name, ours) in expected {
        let err = reference::max_abs_diff(ours, &get(&name));
        assert!(err <= 1e-4, "{name}: max abs error {err}");
    }
    assert_eq!(reference::max_abs_diff(&out.all_layers[2], &out.last), 0.0);
}
