//! Audio nodes (`comfy_extras/nodes_audio.py`): load, save as FLAC/MP3/Opus, preview.

use std::sync::Arc;

use rand::Rng;
use serde_json::json;

use super::media_save::{metadata, target, ui};
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

/// Writes one AUDIO as `flac`, `mp3` or `opus` with ComfyUI's quality presets.
fn save(
    i: &Inputs,
    ctx: &ExecContext,
    kind: &str,
    prefix: &str,
    format: &str,
    quality: Option<&str>,
) -> NodeResult {
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
    let (path, record) = target(ctx, kind, prefix, ext, 0, 0)?;
    write_audio(&path, audio, &spec)?;
    Ok(NodeOutput {
        values: vec![],
        ui: Some(ui("audio", vec![record])),
    })
}

fn save_flac(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    save(
        i,
        ctx,
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
        "output",
        &i.string("filename_prefix")?,
        "opus",
        Some(&i.string("quality")?),
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
    };
    r.add(
        saver("SaveAudio", "Save Audio (FLAC)", save_flac)
            .aliases(&["export flac"])
            .output_node(),
    );
    r.add(
        saver("SaveAudioMP3", "Save Audio (MP3)", save_mp3)
            .aliases(&["export mp3"])
            .input(InputDef::combo("quality", &["V0", "128k", "320k"]).default("V0"))
            .output_node(),
    );
    r.add(
        saver("SaveAudioOpus", "Save Audio (Opus)", save_opus)
            .aliases(&["export opus"])
            .input(
                InputDef::combo("quality", &["64k", "96k", "128k", "192k", "320k"]).default("128k"),
            )
            .output_node(),
    );
    r.add(
        hidden(
            node("PreviewAudio", "Preview Audio", preview)
                .aliases(&["play audio"])
                .input(InputDef::new("audio", "AUDIO")),
        )
        .output_node(),
    );
    r.add(
        node("RecordAudio", "Record Audio", load_audio)
            .aliases(&["microphone input", "audio capture", "voice input"])
            .input(InputDef::new("audio", "AUDIO_RECORD"))
            .output("AUDIO"),
    );
    r.add(
        node("LoadAudio", "Load Audio", load_audio)
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
