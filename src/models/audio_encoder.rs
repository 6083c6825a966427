//! ComfyUI's AUDIO_ENCODER value (`comfy/audio_encoders/audio_encoders.py`): a wav2vec2 or
//! Whisper large-v3 file,
//! loaded through the `ModelManager` when encoding; audio is resampled to the model's 16 kHz
//! first, as ComfyUI does with torchaudio.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::loading::{component, load_component, LoadTarget, Precision};
use super::wav2vec2::Wav2Vec2;
use super::whisper::Whisper;
use crate::engine::value::SharedTensor;
use crate::media::sinc_resample::resample;
use crate::runtime::manager::{Loaded, ModelManager};
use crate::runtime::safetensors_file::SafetensorsFile;

/// The rate ComfyUI's audio encoders take.
pub const MODEL_SAMPLE_RATE: i64 = 16000;

/// ComfyUI's AUDIO_ENCODER_OUTPUT: the last state, every layer's input and the last state, and
/// the resampled audio's length, on the host in float32.
pub struct AudioEncoderOutput {
    pub encoded_audio: Arc<SharedTensor>,
    pub all_layers: Vec<Arc<SharedTensor>>,
    pub audio_samples: i64,
}

/// The encoders ComfyUI's `load_audio_encoder_from_sd` knows.
enum Network {
    Wav2Vec2(Wav2Vec2),
    Whisper(Whisper),
}

pub struct AudioEncoder {
    manager: Arc<ModelManager>,
    path: PathBuf,
    prefix: String,
}

impl AudioEncoder {
    /// AudioEncoderLoader: the file must hold a wav2vec2 encoder.
    pub fn open(manager: Arc<ModelManager>, path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let found = component(&file, "audio_encoder")?;
        Ok(Self {
            manager,
            path: path.to_path_buf(),
            prefix: found.prefix,
        })
    }

    fn loaded(&self) -> Result<Arc<Loaded<Network>>> {
        let device = self.manager.device();
        let target = LoadTarget {
            kind: "audio_encoder",
            path: &self.path,
            prefix: &self.prefix,
            device,
            // ComfyUI holds the encoder in its text-encoder dtype and runs it in the float32
            // of the waveform.
            precision: Precision::encoder(device, Kind::Half),
        };
        load_component(&self.manager, &target, None, |w| {
            Ok(if w.has("feature_extractor.conv_layers.0.conv.weight") {
                Network::Wav2Vec2(Wav2Vec2::load(w)?)
            } else {
                Network::Whisper(Whisper::load(w)?)
            })
        })
    }

    /// AudioEncoderEncode: `waveform` `[B, C, samples]` at `sample_rate`.
    pub fn encode(&self, waveform: &Tensor, sample_rate: i64) -> Result<AudioEncoderOutput> {
        let model = self.loaded()?;
        let audio = resample(
            &waveform.to_kind(Kind::Float),
            sample_rate,
            MODEL_SAMPLE_RATE,
        );
        let audio = audio.to_device(self.manager.device());
        let (last, all_layers) = match &**model {
            Network::Wav2Vec2(net) => {
                let out = net.forward(&audio)?;
                (out.last, out.all_layers)
            }
            Network::Whisper(net) => {
                let out = net.forward(&audio)?;
                (out.last, out.all_layers)
            }
        };
        let host = |t: &Tensor| {
            Arc::new(SharedTensor::new(
                t.to_kind(Kind::Float).to_device(Device::Cpu),
            ))
        };
        Ok(AudioEncoderOutput {
            encoded_audio: host(&last),
            all_layers: all_layers.iter().map(host).collect(),
            audio_samples: audio.size()[2],
        })
    }
}
