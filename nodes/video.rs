//! Video nodes (`comfy_extras/nodes_video.py`, animated image savers of `nodes_images.py`).

use std::sync::Arc;

use ffmpeg_next::format::Pixel;
use serde_json::{json, Value as Json};

use super::media_save::{animated_ui, metadata, target, with_progress};
use crate::engine::context::{ExecContext, NodeEnv};
use crate::engine::node::{InputDef, Inputs, NodeDef, NodeError, NodeOutput, NodeResult, Style};
use crate::engine::registry::Registry;
use crate::engine::value::Value;
use crate::media::encode::{write_video, ColorSpace, VideoSpec};
use crate::media::{Audio, Video};

fn node(
    name: &str,
    display: &str,
    category: &str,
    f: fn(&Inputs, &ExecContext) -> NodeResult,
) -> NodeDef {
    NodeDef::builtin(name, Style::V3, display, category, f).module("comfy_extras.nodes_video")
}

fn with_hidden(d: NodeDef) -> NodeDef {
    d.input(InputDef::hidden("prompt", "PROMPT"))
        .input(InputDef::hidden("extra_pnginfo", "EXTRA_PNGINFO"))
}

fn create_video(i: &Inputs, _: &ExecContext) -> NodeResult {
    let images = i.tensor("images")?;
    let audio = i.get("audio").and_then(|v| match v {
        Value::Object(o) => o.clone().downcast::<Audio>().ok(),
        _ => None,
    });
    let bit_depth = match i.get("bit_depth") {
        Some(_) => i.int("bit_depth")? as u32,
        None => 8,
    };
    let mut video = Video::new(images.shallow_clone(), i.float("fps")?, audio);
    video.bit_depth = bit_depth;
    Ok(NodeOutput::one(Value::object(video)))
}

fn components(i: &Inputs, _: &ExecContext) -> NodeResult {
    let video = i.object::<Video>("video")?;
    let audio = match &video.audio {
        Some(a) => Value::Object(a.clone()),
        None => Value::Json(Json::Null),
    };
    let color_space = match &video.color_space {
        Some(name) => Value::Str(name.clone()),
        None => Value::Json(Json::Null),
    };
    Ok(NodeOutput::values(vec![
        Value::tensor(video.frames.shallow_clone()),
        audio,
        Value::Float(video.fps),
        Value::Int(video.bit_depth.into()),
        color_space,
    ]))
}

/// `VideoInput.as_trimmed`: the frames whose time lies in `start_time .. start_time +
/// duration` (a negative start counts from the end; duration 0 runs to the end), and the audio
/// from the same start for the same duration.
fn slice(i: &Inputs, _: &ExecContext) -> NodeResult {
    let video = i.object::<Video>("video")?;
    let (start, duration) = (i.float("start_time")?, i.float("duration")?);
    let frames = video.frames.size()[0];
    let fps = video.fps.max(f64::MIN_POSITIVE);
    let total = frames as f64 / fps;
    let begin = if start < 0.0 {
        (total + start).max(0.0)
    } else {
        start
    };
    let available = (total - begin).max(0.0);
    if i.boolean("strict_duration")? && available < duration {
        return Err(NodeError::value(format!(
            "Failed to slice video:\nSource duration: {total}\nStart time: {start}\nTarget \
             duration: {duration}"
        )));
    }
    // Frame k shows at k / fps; a hair of slack for times that are whole frames.
    const SLACK: f64 = 1e-9;
    let first = ((begin * fps) - SLACK).ceil().max(0.0) as i64;
    let end = if duration > 0.0 {
        (((begin + duration) * fps) - SLACK)
            .ceil()
            .clamp(0.0, frames as f64) as i64
    } else {
        frames
    };
    let (first, end) = (first.min(frames), end.max(first.min(frames)));
    let kept = video.frames.narrow(0, first, end - first);
    let audio = video.audio.as_ref().map(|audio| {
        let rate = f64::from(audio.sample_rate);
        let samples = audio.waveform.size()[2];
        let skip = ((begin * rate) as i64).min(samples);
        let take = if duration > 0.0 {
            ((duration * rate) as i64).min(samples - skip)
        } else {
            samples - skip
        };
        Arc::new(Audio::new(
            audio.waveform.narrow(2, skip, take),
            audio.sample_rate,
        ))
    });
    Ok(NodeOutput::one(Value::object(
        Video::new(kept, video.fps, audio).with_format(video.bit_depth, video.color_space.clone()),
    )))
}

/// SaveVideo: the container (`format`), the codec chosen under it (or, in prompts from before
/// the codec moved there, the top-level `codec`), and that codec's re-encode options.
fn save_video(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let video = i.object::<Video>("video")?;
    let format = i.string("format")?;
    let codec_key = if i.get("format.codec").is_some() {
        "format.codec"
    } else {
        "codec"
    };
    let codec = match i.get(codec_key) {
        Some(_) => i.string(codec_key)?,
        None => "auto".into(),
    };
    let encoding = |name: &str| format!("{codec_key}.encoding.{name}");
    let reencode = matches!(
        i.get(&format!("{codec_key}.encoding")),
        Some(Value::Str(mode)) if mode == "re-encode"
    );
    let (extension, container) = match format.as_str() {
        "auto" | "mp4" => ("mp4", "mp4"),
        "mkv" => ("mkv", "matroska"),
        "webm" => ("webm", "webm"),
        other => {
            return Err(NodeError::value(format!(
                "'{other}' is not a valid VideoContainer"
            )))
        }
    };
    let av1 = match codec.as_str() {
        "auto" => container == "webm",
        "h264" => false,
        "av1" => true,
        other => {
            return Err(NodeError::value(format!(
                "'{other}' is not a valid VideoCodec"
            )))
        }
    };
    if container == "webm" && !av1 {
        return Err(NodeError::value("WebM output requires the AV1 codec"));
    }
    let requested = if reencode {
        Some(i.string(&encoding("color_space"))?).filter(|c| c != "auto")
    } else {
        None
    };
    // Unspecified: the video's own colors (sRGB for videos made from images).
    let color_name = requested
        .or_else(|| video.color_space.clone())
        .unwrap_or_else(|| crate::media::SRGB.into());
    let color = ColorSpace::parse(&color_name)
        .ok_or_else(|| NodeError::value(format!("Unsupported video color space: {color_name}")))?;
    let ten_bit = video.bit_depth >= 10 || color.is_hdr();
    let mut codec_options = vec![];
    if reencode {
        let crf = i.float(&encoding("crf"))?;
        codec_options.push(if av1 && crf == 0.0 {
            ("svtav1-params".to_string(), "lossless=1".to_string())
        } else {
            ("crf".to_string(), crate::pyjson::float_repr(crf))
        });
    }
    let muxer_options = if container == "mp4" {
        vec![("movflags".into(), "use_metadata_tags+faststart".into())]
    } else {
        vec![]
    };
    let spec = VideoSpec {
        container,
        codecs: if av1 {
            &["libsvtav1", "libaom-av1"]
        } else {
            &["libx264", "h264"]
        },
        pixel: if ten_bit {
            Pixel::YUV420P10LE
        } else {
            Pixel::YUV420P
        },
        codec_options,
        muxer_options,
        metadata: metadata(ctx),
        compression: None,
        bit_rate: None,
        even_size: true,
        color: Some(color),
        sixteen_bit_source: ten_bit,
    };
    let (w, h) = video.dimensions();
    let (path, record) = target(
        ctx,
        "output",
        &i.string("filename_prefix")?,
        extension,
        w,
        h,
    )?;
    let audio = video.audio.as_deref().map(|a| audio_for(a, video));
    with_progress(ctx, |p| {
        write_video(&path, &video.frames, video.fps, audio.as_ref(), &spec, p)
    })?;
    Ok(NodeOutput {
        values: vec![i.get("video").cloned().expect("checked above")],
        ui: Some(animated_ui(record)),
    })
}

/// The first audio of the batch, cut to the video's length (`ceil(rate / fps · frames)`
/// samples, with the frame rate in thousandths).
fn audio_for(audio: &Audio, video: &Video) -> Audio {
    let fps = (video.fps * 1000.0).round() / 1000.0;
    let frames = video.frames.size()[0] as f64;
    let samples = audio.waveform.size()[2];
    let keep = ((f64::from(audio.sample_rate) / fps * frames).ceil() as i64).min(samples);
    Audio::new(
        audio.waveform.narrow(0, 0, 1).narrow(2, 0, keep),
        audio.sample_rate,
    )
}

fn save_webm(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let images = i.tensor("images")?;
    let size = images.size();
    let (path, record) = target(
        ctx,
        "output",
        &i.string("filename_prefix")?,
        "webm",
        size[2],
        size[1],
    )?;
    let codec = i.string("codec")?;
    let alpha = size.last() == Some(&4) && codec == "vp9";
    let crf = i.float("crf")?;
    let (codecs, pixel): (&'static [&'static str], Pixel) = match codec.as_str() {
        "vp9" => (
            &["libvpx-vp9"],
            if alpha {
                Pixel::YUVA420P
            } else {
                Pixel::YUV420P
            },
        ),
        _ => (&["libsvtav1", "libaom-av1"], Pixel::YUV420P10LE),
    };
    let mut options = vec![("crf".to_string(), format!("{}", crf as i64))];
    if codec == "av1" {
        options.push(("preset".into(), "6".into()));
    }
    let spec = VideoSpec {
        container: "webm",
        codecs,
        pixel,
        codec_options: options,
        muxer_options: vec![],
        metadata: metadata(ctx),
        compression: None,
        bit_rate: Some(0),
        even_size: true,
        color: None,
        sixteen_bit_source: false,
    };
    let fps = i.float("fps")?;
    with_progress(ctx, |p| write_video(&path, images, fps, None, &spec, p))?;
    Ok(NodeOutput {
        values: vec![Value::tensor(images.shallow_clone())],
        ui: Some(animated_ui(record)),
    })
}

fn save_animated(i: &Inputs, ctx: &ExecContext, webp: bool) -> NodeResult {
    let images = i.tensor("images")?;
    let size = images.size();
    let ext = if webp { "webp" } else { "png" };
    let (path, record) = target(
        ctx,
        "output",
        &i.string("filename_prefix")?,
        ext,
        size[2],
        size[1],
    )?;
    let alpha = size.last() == Some(&4);
    let spec = if webp {
        let method = match i.string("method")?.as_str() {
            "fastest" => 0,
            "slowest" => 6,
            _ => 4,
        };
        VideoSpec {
            container: "webp",
            codecs: &["libwebp_anim"],
            pixel: if alpha {
                Pixel::YUVA420P
            } else {
                Pixel::YUV420P
            },
            codec_options: vec![
                (
                    "lossless".into(),
                    (i.boolean("lossless")? as i32).to_string(),
                ),
                ("quality".into(), i.int("quality")?.to_string()),
            ],
            muxer_options: vec![("loop".into(), "0".into())],
            metadata: vec![],
            compression: Some(method),
            bit_rate: None,
            even_size: true,
            color: None,
            sixteen_bit_source: false,
        }
    } else {
        VideoSpec {
            container: "apng",
            codecs: &["apng"],
            pixel: if alpha { Pixel::RGBA } else { Pixel::RGB24 },
            codec_options: vec![],
            muxer_options: vec![("plays".into(), "0".into())],
            metadata: vec![],
            compression: Some(i.int("compress_level")? as usize),
            bit_rate: None,
            even_size: false,
            color: None,
            sixteen_bit_source: false,
        }
    };
    let fps = i.float("fps")?;
    with_progress(ctx, |p| write_video(&path, images, fps, None, &spec, p))?;
    Ok(NodeOutput {
        values: vec![Value::tensor(images.shallow_clone())],
        ui: Some(animated_ui(record)),
    })
}

fn input_videos(env: &NodeEnv) -> Vec<String> {
    env.paths.input_files_of(&["video"])
}

fn load_video(i: &Inputs, ctx: &ExecContext) -> NodeResult {
    let name = i.string("file")?;
    let path = ctx
        .env
        .paths
        .annotated_input_path(&name)
        .ok_or_else(|| NodeError::value(format!("Invalid video file: {name}")))?;
    let decoded = crate::media::decode::read(&path, true)
        .map_err(|e| NodeError::value(format!("Cannot load video file {name}: {e:#}")))?;
    let Some((frames, fps)) = decoded.frames else {
        return Err(NodeError::value(format!(
            "Cannot load video file {name}: no video stream"
        )));
    };
    let audio = decoded.audio.map(Arc::new);
    Ok(NodeOutput::one(Value::object(
        Video::new(frames, fps, audio).with_format(decoded.bit_depth, decoded.color_space),
    )))
}

/// SaveVideo's codec choice among `codecs`; H.264 and AV1 each offer a re-encode with a crf and
/// a color space.
fn codec_input(codecs: &[&str]) -> InputDef {
    let color_space = || {
        InputDef::combo("color_space", &["auto", "sRGB", "HDR", "HDR PQ"])
            .opt("display_name", json!("color space"))
            .tooltip("Auto uses sRGB for videos created from images and preserves recognized colors on loaded videos. sRGB writes SDR BT.709/sRGB. HDR writes 10-bit BT.2020/HLG; HDR PQ writes BT.2020/PQ. Other input pixels must already use the selected color space.")
            .default("auto")
    };
    let encoding = |name: &str, crf: f64, max: f64| {
        let crf = InputDef::float("crf")
            .tooltip("Lower values produce higher quality and larger files.")
            .default_float(crf)
            .min_float(0.0)
            .max_float(max)
            .step_float(1.0);
        InputDef::dynamic_combo(
            "encoding",
            vec![("auto", vec![]), ("re-encode", vec![crf, color_space()])],
        )
        .opt("display_name", json!("encoding mode"))
        .optional()
        .tooltip(&format!(
            "Automatic preserves compatible {name} streams. Re-encode applies custom encoding options."
        ))
    };
    let options = codecs
        .iter()
        .map(|codec| match *codec {
            "h264" => ("h264", vec![encoding("H.264", 23.0, 51.0)]),
            "av1" => ("av1", vec![encoding("AV1", 30.0, 63.0)]),
            other => (other, vec![]),
        })
        .collect();
    InputDef::dynamic_combo("codec", options).tooltip(
        "The output video codec. Auto preserves a compatible source stream. H.264 and AV1 re-encoding support SDR, HDR (HLG), and HDR PQ.",
    )
}

pub fn register(r: &mut Registry) {
    let prefix = |default: &str| InputDef::string("filename_prefix").default(default);
    let fps = |default: f64| {
        InputDef::float("fps")
            .default_float(default)
            .min_float(0.01)
            .max_float(1000.0)
            .step_float(0.01)
    };
    r.add(with_hidden(
        node("SaveWEBM", "Save WEBM", "video", save_webm)
            .experimental()
            .aliases(&["export webm"])
            .input(InputDef::new("images", "IMAGE").tooltip("RGBA images are saved with their alpha channel as transparency (vp9 codec only)."))
            .input(prefix("ComfyUI"))
            .input(InputDef::combo("codec", &["vp9", "av1"]))
            .input(fps(24.0))
            .input(InputDef::float("crf").default_float(32.0).min(0).max_float(63.0).step(1).tooltip(
                "Higher crf means lower quality with a smaller file size, lower crf means higher quality higher filesize.",
            ))
            .named_output("IMAGE", "images")
            .output_node(),
    ));
    r.add(with_hidden(
        node("SaveVideo", "Save Video", "video", save_video)
            .aliases(&["export video"])
            .essentials("Basics")
            .description("Saves the input videos to your ComfyUI output directory.")
            .input(InputDef::new("video", "VIDEO").tooltip("The video to save."))
            .input(prefix("video/ComfyUI").tooltip(
                "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
            ))
            .input(
                InputDef::dynamic_combo(
                    "format",
                    vec![
                        ("auto", vec![codec_input(&["auto", "h264", "av1"])]),
                        ("mp4", vec![codec_input(&["auto", "h264", "av1"])]),
                        ("mkv", vec![codec_input(&["auto", "h264", "av1"])]),
                        ("webm", vec![codec_input(&["auto", "av1"])]),
                    ],
                )
                .tooltip("The output container. Auto preserves the source container when possible; MP4, MKV, and WebM select a specific container."),
            )
            // Prompts from before the codec moved under the format still name it here.
            .input(
                codec_input(&["auto", "h264", "av1"])
                    .optional()
                    .opt("hidden", json!(true)),
            )
            .named_output("VIDEO", "video")
            .output_tooltip("The input video, unchanged.")
            .output_node(),
    ));
    r.add(
        node("CreateVideo", "Create Video", "video", create_video)
            .aliases(&["images to video"])
            .essentials("Video Tools")
            .description("Create a video from images.")
            .input(InputDef::new("images", "IMAGE").tooltip("The images to create a video from."))
            .input(
                InputDef::float("fps")
                    .default_float(30.0)
                    .min_float(1.0)
                    .max_float(120.0)
                    .step_float(1.0),
            )
            .input(
                InputDef::new("audio", "AUDIO")
                    .optional()
                    .tooltip("The audio to add to the video."),
            )
            .input(
                InputDef::int("bit_depth")
                    .optional()
                    .tooltip(
                        "Bit depth of the created video. 10-bit keeps smoother gradients with less \
                         banding, but some players and downstream nodes may not support it.",
                    )
                    .default(8)
                    .min(8)
                    .max(10)
                    .step(2)
                    .opt("display", json!("number")),
            )
            .output("VIDEO"),
    );
    r.add(
        node(
            "GetVideoComponents",
            "Get Video Components",
            "video",
            components,
        )
        .aliases(&["extract frames", "split video", "video to images", "demux"])
        .description("Extracts video frames, audio, frame rate, bit depth, and color space.")
        .input(InputDef::new("video", "VIDEO").tooltip("The video to extract components from."))
        .named_output("IMAGE", "images")
        .named_output("AUDIO", "audio")
        .named_output("FLOAT", "fps")
        .named_output("INT", "bit_depth")
        .named_output("COMBO", "color_space"),
    );
    r.add(
        node("LoadVideo", "Load Video", "video", load_video)
            .essentials("Basics")
            .aliases(&["import video", "open video", "video file"])
            .input(
                InputDef::combo_dynamic("file", Arc::new(input_videos))
                    .opt("video_upload", json!(true)),
            )
            .output("VIDEO")
            .is_changed(Arc::new(|i: &Inputs, env: &NodeEnv| {
                super::media_files::file_fingerprint(i, env, "file")
            }))
            .validator(
                Some(&["file"]),
                Arc::new(|i: &Inputs, env: &NodeEnv| {
                    super::media_files::file_exists(i, env, "file", "video")
                }),
            ),
    );
    r.add(
        node("Video Slice", "Trim Video", "video", slice)
            .aliases(&[
                "trim video duration",
                "skip first frames",
                "frame load cap",
                "start time",
            ])
            .essentials("Video Tools")
            .input(InputDef::new("video", "VIDEO"))
            .input(
                InputDef::float("start_time")
                    .tooltip("Start time in seconds")
                    .default_float(0.0)
                    .min_float(-1e5)
                    .max_float(1e5)
                    .step_float(0.001),
            )
            .input(
                InputDef::float("duration")
                    .tooltip("Duration in seconds, or 0 for unlimited duration")
                    .default_float(0.0)
                    .min_float(0.0)
                    .step_float(0.001),
            )
            .input(
                InputDef::boolean("strict_duration")
                    .tooltip(
                        "If True, when the specified duration is not possible, an error will be \
                         raised.",
                    )
                    .default(false),
            )
            .output("VIDEO"),
    );
    let animated = |name: &str, display: &str, f: fn(&Inputs, &ExecContext) -> NodeResult| {
        with_hidden(
            NodeDef::new(name, Style::V3, Arc::new(f))
                .display(display)
                .category("image")
                .module("comfy_extras.nodes_images")
                .input(InputDef::new("images", "IMAGE"))
                .input(prefix("ComfyUI"))
                .input(fps(6.0)),
        )
    };
    r.add(
        animated("SaveAnimatedWEBP", "Save Animated WEBP", |i, c| {
            save_animated(i, c, true)
        })
        .input(InputDef::boolean("lossless").default(true))
        .input(InputDef::int("quality").default(80).min(0).max(100))
        .input(InputDef::combo(
            "method",
            &["default", "fastest", "slowest"],
        ))
        .named_output("IMAGE", "images")
        .output_node(),
    );
    r.add(
        animated("SaveAnimatedPNG", "Save Animated PNG", |i, c| {
            save_animated(i, c, false)
        })
        .input(
            InputDef::int("compress_level")
                .advanced()
                .default(4)
                .min(0)
                .max(9),
        )
        .named_output("IMAGE", "images")
        .output_node(),
    );
}
