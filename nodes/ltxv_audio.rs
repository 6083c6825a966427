//! LTX-2's audio nodes (`comfy_extras/nodes_lt_audio.py`): LTXVAudioVAELoader reads the audio
//! VAE and vocoder of an LTX-2 checkpoint, LTXVEmptyLatentAudio makes the silent latent as long
//! as a clip, LTXVAudioVAEEncode turns AUDIO into a latent and LTXVAudioVAEDecode a latent (an
//! AV latent's audio part) into AUDIO.

use std::sync::Arc;

use serde_json::json;
use tch::{Device, Kind, Tensor};

use super::loaders::{files, model_file};
use crate::engine::context::ExecContext;
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::media::Audio;
use crate::models::ltx::audio_vae::LtxAudioVae;
use crate::sampling::model::Latent;

fn audio_vae_loader(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let path = model_file(ctx, "checkpoints", &i.string("ckpt_name")?)?;
    let vae = LtxAudioVae::open(ctx.env.models.clone(), &path)?;
    Ok(NodeOutput::one(Value::object(Arc::new(vae))))
}

fn empty_latent_audio(i: &Inputs, _: &ExecContext) -> NodeResult {
    let vae = i.object::<Arc<LtxAudioVae>>("audio_vae")?;
    let frames = vae.latent_frames(i.int("frames_number")?, i.float("frame_rate")?);
    let samples = Tensor::zeros(
        [
            i.int("batch_size")?,
            vae.config.z_channels,
            frames,
            vae.latent_bins(),
        ],
        (Kind::Float, Device::Cpu),
    );
    Ok(NodeOutput::one(Value::object(Latent::new(samples))))
}

fn audio_vae_encode(i: &Inputs, _: &ExecContext) -> NodeResult {
    let audio = i.object::<Audio>("audio")?;
    let vae = i.object::<Arc<LtxAudioVae>>("audio_vae")?;
    let samples = vae.encode(&audio.waveform, i64::from(audio.sample_rate))?;
    Ok(NodeOutput::one(Value::object(Latent::new(samples))))
}

fn audio_vae_decode(i: &Inputs, _: &ExecContext) -> NodeResult {
    let latent = i.object::<Latent>("samples")?;
    let vae = i.object::<Arc<LtxAudioVae>>("audio_vae")?;
    // An AV latent decodes its last part, the audio.
    let samples = match &latent.nested {
        Some(nested) => nested
            .parts
            .last()
            .expect("a nested latent has parts")
            .shallow_clone(),
        None => latent.samples.shallow_clone(),
    };
    if samples.dim() != 4 {
        return Err(NodeError::value(
            "LTXVAudioVAEDecode takes an audio latent [b, 8, frames, 16]",
        ));
    }
    let waveform = vae.decode(&samples)?;
    let rate = vae.output_sample_rate() as u32;
    Ok(NodeOutput::one(Value::object(Audio::new(waveform, rate))))
}

pub fn register(r: &mut Registry) {
    let node = |name: &str, display: &str, category: &str, f| {
        NodeDef::builtin(name, Style::V3, name, category, f)
            .module("comfy_extras.nodes_lt_audio")
            .display(display)
    };
    let audio_vae = |tooltip: &str| {
        InputDef::new("audio_vae", "VAE")
            .opt("display_name", json!("Audio VAE"))
            .tooltip(tooltip)
    };
    r.add(
        node(
            "LTXVAudioVAELoader",
            "Load LTXV Audio VAE",
            "model/loaders",
            audio_vae_loader,
        )
        .input(
            InputDef::combo_dynamic("ckpt_name", files("checkpoints"))
                .tooltip("Audio VAE checkpoint to load."),
        )
        .named_output("VAE", "Audio VAE"),
    );
    r.add(
        node(
            "LTXVEmptyLatentAudio",
            "LTXV Empty Latent Audio",
            "model/latent/ltxv",
            empty_latent_audio,
        )
        .input(
            InputDef::int("frames_number")
                .tooltip("Number of frames.")
                .default(97)
                .min(1)
                .max(1000)
                .step(1)
                .opt("display", json!("number")),
        )
        .input(
            InputDef::new("frame_rate", "FLOAT,INT")
                .tooltip("Number of frames per second.")
                .opt("default", json!(25.0))
                .opt("widgetType", json!("FLOAT"))
                .opt("min", json!(1.0))
                .opt("max", json!(1000.0))
                .opt("step", json!(0.01))
                .opt("display", json!("number")),
        )
        .input(
            InputDef::int("batch_size")
                .tooltip("The number of latent audio samples in the batch.")
                .default(1)
                .min(1)
                .max(4096)
                .opt("display", json!("number")),
        )
        .input(audio_vae("The Audio VAE model to get configuration from."))
        .named_output("LATENT", "Latent"),
    );
    r.add(
        node(
            "LTXVAudioVAEEncode",
            "LTXV Audio VAE Encode",
            "model/latent/ltxv",
            audio_vae_encode,
        )
        .input(InputDef::new("audio", "AUDIO").tooltip("The audio to be encoded."))
        .input(audio_vae("The Audio VAE model to use for encoding."))
        .named_output("LATENT", "Audio Latent"),
    );
    r.add(
        node(
            "LTXVAudioVAEDecode",
            "LTXV Audio VAE Decode",
            "model/latent/ltxv",
            audio_vae_decode,
        )
        .input(InputDef::new("samples", "LATENT").tooltip("The latent to be decoded."))
        .input(audio_vae(
            "The Audio VAE model used for decoding the latent.",
        ))
        .named_output("AUDIO", "Audio"),
    );
}
