//! Audio nodes (`comfy_extras/nodes_audio.py`): load, save as FLAC/MP3/Opus, preview. The save
//! and preview nodes pass their audio on, as upstream's do.

use std::sync::Arc;

use rand::Rng;
use serde_json::json;

use super::media_save::{metadata, ui};
use crate::engine::context::{ExecContext, NodeEnv};
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::media::encode::{write_audio, AudioSpec};
use crate::media::Audio;

fn node(name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult) -> NodeDef {
    NodeDef::new(name, Style::V3, Arc::new(f))
        .display(display)
        .category("audio")
        .module("comfy_extras.nodes_audio")
}

fn input_audio(env: &NodeEnv) -> Vec<String> {
    env.paths.input_files_of(&["audio", "video"])
}

fn load_audio(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let name = i.string("audio")?;
    let path = ctx
        .env
        .paths
        .annotated_input_path(&name)
        .ok_or_else(|| NodeError::value(format!("Invalid audio file: {name}")))?;
    let decoded = crate::media::decode::read(&path, false)
        .map_err(|e| NodeError::value(format!("Cannot load audio file {name}: {e:#}")))?;
    let audio = decoded.audio.ok_or_else(|| {
        NodeError::value(format!("Cannot load audio file {name}: no audio stream"))
    })?;
    Ok(NodeOutput::one(Value::object(audio)))
}

/// Writes one AUDIO as `flac`, `mp3` or `opus` with ComfyUI's quality presets; `node` names
/// the caller in the error for a missing audio (a video without an audio track).
fn save(
    i: &Inputs,
    ctx: &ExecContext,
    node: &str,
    kind: &str,
    prefix: &str,
    format: &str,
    quality: Option<&str>,
) -> NodeResult {
    if matches!(i.get("audio"), Some(Value::Json(serde_json::Value::Null))) {
        return Err(NodeError::value(format!(
            "{node}: input audio is None (source video may have no audio track)."
        )));
    }
    let audio = i.object::<Audio>("audio")?;
    let kbps = |q: &str| {
        q.strip_suffix('k')
            .and_then(|k| k.parse::<usize>().ok())
            .map(|k| k * 1000)
    };
    let mut spec = AudioSpec {
        container: "flac",
        codecs: &["flac"],
        bit_rate: None,
        codec_options: vec![],
        sample_rate: None,
        metadata: metadata(ctx),
    };
    let ext = match format {
        "mp3" => {
            spec.container = "mp3";
            spec.codecs = &["libmp3lame"];
            match quality.and_then(kbps) {
                Some(rate) => spec.bit_rate = Some(rate),
                // V0: the best variable bit rate.
                None => spec.codec_options.push(("q".into(), "0".into())),
            }
            "mp3"
        }
        "opus" => {
            spec.container = "ogg";
            spec.codecs = &["libopus", "opus"];
            spec.bit_rate = quality.and_then(kbps).or(Some(128_000));
            spec.sample_rate = Some(48_000);
            "opus"
        }
        _ => "flac",
    };
    let root = ctx
        .env
        .paths
        .type_dir(kind)
        .expect("known type")
        .to_path_buf();
    let t = ctx.env.paths.save_target(&root, prefix, 0, 0)?;
    let mut records = Vec::new();
    for n in 0..audio.waveform.size()[0] {
        ctx.check_interrupt()?;
        // One file per batch item; audio names have no `_` after the counter (since ComfyUI's
        // SaveAudioAdvanced, June 2026).
        let stem = t.filename.replace("%batch_num%", &n.to_string());
        let file = format!("{stem}_{:05}.{ext}", t.counter + n as u64);
        let item = Audio::new(audio.waveform.narrow(0, n, 1), audio.sample_rate);
        write_audio(&t.folder.join(&file), &item, &spec)?;
        records.push(json!({"filename": file, "subfolder": t.subfolder, "type": kind}));
    }
    Ok(NodeOutput {
        values: vec![i.get("audio").cloned().expect("read above")],
        ui: Some(ui("audio", records)),
    })
}

fn save_flac(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    save(
        i,
        ctx,
        "SaveAudio",
        "output",
        &i.string("filename_prefix")?,
        "flac",
        None,
    )
}

fn save_mp3(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    save(
        i,
        ctx,
        "SaveAudioMP3",
        "output",
        &i.string("filename_prefix")?,
        "mp3",
        Some(&i.string("quality")?),
    )
}

fn save_opus(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    save(
        i,
        ctx,
        "SaveAudioOpus",
        "output",
        &i.string("filename_prefix")?,
        "opus",
        Some(&i.string("quality")?),
    )
}

/// SaveAudioAdvanced: the format is a DynamicCombo whose mp3 and opus options bring a quality.
fn save_advanced(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let quality = match i.get("format.quality") {
        Some(_) => Some(i.string("format.quality")?),
        None => None,
    };
    save(
        i,
        ctx,
        "SaveAudioAdvanced",
        "output",
        &i.string("filename_prefix")?,
        &i.string("format")?,
        quality.as_deref(),
    )
}

fn preview(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstupvxyz";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| LETTERS[rng.gen_range(0..LETTERS.len())] as char)
        .collect();
    save(
        i,
        ctx,
        "PreviewAudio",
        "temp",
        &format!("ComfyUI_temp_{suffix}"),
        "flac",
        None,
    )
}

pub fn register(r: &mut Registry) {
    let hidden = |d: NodeDef| {
        d.input(InputDef::hidden("prompt", "PROMPT"))
            .input(InputDef::hidden("extra_pnginfo", "EXTRA_PNGINFO"))
    };
    let saver = |name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult| {
        hidden(
            node(name, display, f)
                .input(InputDef::new("audio", "AUDIO"))
                .input(InputDef::string("filename_prefix").default("audio/ComfyUI")),
        )
        .deprecated()
    };
    let mp3_quality = || InputDef::combo("quality", &["V0", "128k", "320k"]).default("V0");
    let opus_quality =
        || InputDef::combo("quality", &["64k", "96k", "128k", "192k", "320k"]).default("128k");
    r.add(
        saver("SaveAudio", "Save Audio (FLAC) (DEPRECATED)", save_flac)
            .aliases(&["export flac"])
            .essentials("Audio")
            .output_node()
            .named_output("AUDIO", "audio"),
    );
    r.add(
        saver("SaveAudioMP3", "Save Audio (MP3) (DEPRECATED)", save_mp3)
            .aliases(&["export mp3"])
            .essentials("Audio")
            .input(mp3_quality())
            .output_node()
            .named_output("AUDIO", "audio"),
    );
    r.add(
        saver("SaveAudioOpus", "Save Audio (Opus) (DEPRECATED)", save_opus)
            .aliases(&["export opus"])
            .input(opus_quality())
            .output_node()
            .named_output("AUDIO", "audio"),
    );
    r.add(
        hidden(
            node("SaveAudioAdvanced", "Save Audio (Advanced)", save_advanced)
                .description("Saves the input audio to your ComfyUI output directory.")
                .aliases(&[
                    "save audio",
                    "export audio",
                    "output audio",
                    "write audio",
                    "flac",
                    "mp3",
                    "opus",
                ])
                .input(InputDef::new("audio", "AUDIO").tooltip("The audio to save."))
                .input(
                    InputDef::string("filename_prefix")
                        .tooltip(
                            "The prefix for the file to save. May include formatting tokens such as %date:yyyy-MM-dd%.",
                        )
                        .default("audio/ComfyUI"),
                )
                .input(
                    InputDef::dynamic_combo(
                        "format",
                        vec![
                            ("flac", vec![]),
                            ("mp3", vec![mp3_quality()]),
                            ("opus", vec![opus_quality()]),
                        ],
                    )
                    .tooltip("The file format in which to save the audio."),
                ),
        )
        .output_node()
        .named_output("AUDIO", "audio"),
    );
    r.add(
        hidden(
            node("PreviewAudio", "Preview Audio", preview)
                .description("Preview the audio without saving it to the ComfyUI output directory.")
                .aliases(&["play audio"])
                .input(InputDef::new("audio", "AUDIO")),
        )
        .output_node()
        .named_output("AUDIO", "audio"),
    );
    r.add(
        node("RecordAudio", "Record Audio", load_audio)
            .aliases(&["microphone input", "audio capture", "voice input"])
            .input(InputDef::new("audio", "AUDIO_RECORD"))
            .output("AUDIO"),
    );
    r.add(
        node("LoadAudio", "Load Audio", load_audio)
            .essentials("Audio")
            .aliases(&["import audio", "open audio", "audio file"])
            .input(
                InputDef::combo_dynamic("audio", Arc::new(input_audio))
                    .opt("audio_upload", json!(true)),
            )
            .output("AUDIO")
            .is_changed(Arc::new(|i: &Inputs, env: &NodeEnv| {
                super::media_files::file_fingerprint(i, env, "audio")
            }))
            .validator(
                Some(&["audio"]),
                Arc::new(|i: &Inputs, env: &NodeEnv| {
                    super::media_files::file_exists(i, env, "audio", "audio")
                }),
            ),
    );
}
