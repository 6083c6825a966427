//! Audio encoders (`comfy_extras/nodes_audio_encoder.py`): AudioEncoderLoader and
//! AudioEncoderEncode, the wav2vec2 features Wan's sound-driven models take.

use std::sync::Arc;

use super::loaders::{files, model_file};
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::media::Audio;
use crate::models::audio_encoder::AudioEncoder;

fn audio_encoder_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "audio_encoders", &i.string("audio_encoder_name")?)?;
    let encoder = AudioEncoder::open(ctx.env.models.clone(), &path)?;
    Ok(NodeOutput::one(Value::object(Arc::new(encoder))))
}

fn audio_encoder_encode(i: &Inputs, _: &ExecContext) -> NodeResult {
    let encoder = i.object::<Arc<AudioEncoder>>("audio_encoder")?;
    let audio = i.object::<Audio>("audio")?;
    let out = encoder.encode(&audio.waveform, audio.sample_rate as i64)?;
    Ok(NodeOutput::one(Value::object(out)))
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, display: &str, category: &str, f| {
        NodeDef::builtin(name, Style::V3, display, category, f)
            .module("comfy_extras.nodes_audio_encoder")
    };
    r.add(
        node(
            "AudioEncoderLoader",
            "Load Audio Encoder",
            "model/loaders",
            audio_encoder_loader,
        )
        .input(InputDef::combo_dynamic(
            "audio_encoder_name",
            files("audio_encoders"),
        ))
        .output("AUDIO_ENCODER"),
    );
    r.add(
        node(
            "AudioEncoderEncode",
            "AudioEncoderEncode",
            "model/conditioning",
            audio_encoder_encode,
        )
        .input(InputDef::new("audio_encoder", "AUDIO_ENCODER"))
        .input(InputDef::new("audio", "AUDIO"))
        .output("AUDIO_ENCODER_OUTPUT"),
    );
}
