//! ComfyUI's AUDIO_ENCODER value (`comfy/audio_encoders/audio_encoders.py`): a wav2vec2 file,
//! loaded through the `ModelManager` when encoding; audio is resampled to the model's 16 kHz
//! first, as ComfyUI does with torchaudio.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::loading::{component, load_component, LoadTarget, Precision};
use super::wav2vec2::Wav2Vec2;
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

    fn loaded(&self) -> Result<Arc<Loaded<Wav2Vec2>>> {
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
        load_component(&self.manager, &target, None, Wav2Vec2::load)
    }

    /// AudioEncoderEncode: `waveform` `[B, C, samples]` at `sample_rate`.
    pub fn encode(&self, waveform: &Tensor, sample_rate: i64) -> Result<AudioEncoderOutput> {
        let model = self.loaded()?;
        let audio = resample(
            &waveform.to_kind(Kind::Float),
            sample_rate,
            MODEL_SAMPLE_RATE,
        );
        let out = model.forward(&audio.to_device(self.manager.device()))?;
        let host = |t: &Tensor| {
            Arc::new(SharedTensor::new(
                t.to_kind(Kind::Float).to_device(Device::Cpu),
            ))
        };
        Ok(AudioEncoderOutput {
            encoded_audio: host(&out.last),
            all_layers: out.all_layers.iter().map(host).collect(),
            audio_samples: audio.size()[2],
        })
    }
}
