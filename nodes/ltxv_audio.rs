//! LTX-2's audio nodes (`comfy_extras/nodes_lt_audio.py`): LTXVAudioVAELoader reads the audio
//! VAE and vocoder of an LTX-2 checkpoint, LTXVEmptyLatentAudio makes the silent latent as long
//! as a clip, LTXVAudioVAEEncode turns AUDIO into a latent and LTXVAudioVAEDecode a latent (an
//! AV latent's audio part) into AUDIO; LTXVReferenceAudio (`nodes_lt.py`) gives the ID-LoRA its
//! reference voice.

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
use crate::sampling::model::{Conditioning, Latent, Model, REF_AUDIO};
use crate::sampling::post_cfg::{PostCfg, ReferenceIdentity};

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

/// LTXVReferenceAudio (`comfy_extras/nodes_lt.py`): the reference clip's latent as tokens on
/// both conditionings, and the identity guidance on the model.
fn reference_audio(i: &Inputs, _: &ExecContext) -> NodeResult {
    let audio = i.object::<Audio>("reference_audio")?;
    let vae = i.object::<Arc<LtxAudioVae>>("audio_vae")?;
    let latent = vae.encode(&audio.waveform, i64::from(audio.sample_rate))?;
    let (b, c, t, f) = latent.size4().map_err(anyhow::Error::from)?;
    let tokens = latent.permute([0, 2, 1, 3]).reshape([b, t, c * f]);
    let with_reference = |name: &str| -> Result<Value, NodeError> {
        let cond = i.object::<Conditioning>(name)?;
        let entries = cond
            .0
            .iter()
            .map(|e| e.clone().with_extra(REF_AUDIO, tokens.shallow_clone()))
            .collect();
        Ok(Value::object(Conditioning(entries)))
    };
    let mut model = i.object::<Model>("model")?.clone();
    let sampling = &model.sampling;
    let identity = ReferenceIdentity {
        scale: i.float("identity_guidance_scale")?,
        sigma_start: sampling.percent_to_sigma(i.float("start_percent")?),
        sigma_end: sampling.percent_to_sigma(i.float("end_percent")?),
    };
    model.post_cfg.push(PostCfg::ReferenceIdentity(identity));
    Ok(NodeOutput::values(vec![
        Value::object(model),
        with_reference("positive")?,
        with_reference("negative")?,
    ]))
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
    let percent = |name: &str, default: f64, tooltip: &str| {
        InputDef::float(name)
            .tooltip(tooltip)
            .advanced()
            .default_float(default)
            .min_float(0.0)
            .max_float(1.0)
            .step(0.001)
    };
    r.add(
        node(
            "LTXVReferenceAudio",
            "LTXV Reference Audio (ID-LoRA)",
            "model/conditioning/ltxv",
            reference_audio,
        )
        .module("comfy_extras.nodes_lt")
        .description(
            "Set reference audio for ID-LoRA speaker identity transfer. Encodes a reference audio \
             clip into the conditioning and optionally patches the model with identity guidance \
             (extra forward pass without reference, amplifying the speaker identity effect).",
        )
        .input(InputDef::new("model", "MODEL"))
        .input(InputDef::new("positive", "CONDITIONING"))
        .input(InputDef::new("negative", "CONDITIONING"))
        .input(InputDef::new("reference_audio", "AUDIO").tooltip(
            "Reference audio clip whose speaker identity to transfer. ~5 seconds recommended \
             (training duration). Shorter or longer clips may degrade voice identity transfer.",
        ))
        .input(audio_vae("LTXV Audio VAE for encoding."))
        .input(
            InputDef::float("identity_guidance_scale")
                .tooltip(
                    "Strength of identity guidance. Runs an extra forward pass without reference \
                     each step to amplify speaker identity. Set to 0 to disable (no extra pass).",
                )
                .default_float(3.0)
                .min_float(0.0)
                .max_float(100.0)
                .step(0.01)
                .opt("round", json!(0.01)),
        )
        .input(percent(
            "start_percent",
            0.0,
            "Start of the sigma range where identity guidance is active.",
        ))
        .input(percent(
            "end_percent",
            1.0,
            "End of the sigma range where identity guidance is active.",
        ))
        .output("MODEL")
        .named_output("CONDITIONING", "positive")
        .named_output("CONDITIONING", "negative"),
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
