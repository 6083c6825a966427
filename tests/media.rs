//! Video and audio through the real server: SaveVideo mp4 (H.264, with AAC audio), LoadVideo
//! round trip, animated WEBP/PNG, audio savers, `/view` ranges, and clean errors on bad files.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ffprobe, Server};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(120);

fn stream<'a>(streams: &'a [Value], kind: &str) -> &'a Value {
    streams
        .iter()
        .find(|s| s["codec_type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} stream in {streams:?}"))
}

/// A 2 s stereo 440 Hz sine as 16-bit PCM WAV, written without our own encoder.
fn write_sine_wav(path: &Path, rate: u32, seconds: f64) {
    let n = (rate as f64 * seconds) as usize;
    let mut data = Vec::with_capacity(n * 4);
    for i in 0..n {
        let v =
            ((i as f64 / rate as f64 * 440.0 * std::f64::consts::TAU).sin() * 0.5 * 32767.0) as i16;
        data.extend_from_slice(&v.to_le_bytes());
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 4).to_le_bytes());
    wav.extend_from_slice(&4u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).unwrap();
}

fn run_ok(s: &Server, prompt: &Value) -> Value {
    let id = s.queue(prompt, None);
    let entry = s.wait_history(&id, T);
    assert_eq!(
        entry["status"]["status_str"], "success",
        "{}",
        entry["status"]
    );
    entry
}

#[test]
fn save_video_writes_playable_h264_with_audio() {
    let s = Server::start(&[]);
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 48, "color": 0x2080c0}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 24.0}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/plain", "format": "auto", "format.codec": "auto"}},
    });
    let entry = run_ok(&s, &prompt);
    assert_eq!(
        entry["outputs"]["3"],
        json!({"images": [{"filename": "plain_00001_.mp4", "subfolder": "video", "type": "output"}], "animated": [true]})
    );
    let file = s.output_dir().join("video/plain_00001_.mp4");
    let streams = ffprobe(&file);
    let v = stream(&streams, "video");
    assert_eq!(
        (v["codec_name"].as_str(), v["pix_fmt"].as_str()),
        (Some("h264"), Some("yuv420p"))
    );
    assert_eq!(
        (v["width"].as_i64(), v["height"].as_i64()),
        (Some(96), Some(64))
    );
    assert_eq!(v["nb_read_frames"], "48");
    assert_eq!(v["r_frame_rate"], "24/1");

    // With a generated sine muxed in: both streams, audio ≈ 2 s.
    write_sine_wav(&s.dir.join("input/sine.wav"), 44_100, 2.0);
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 48, "color": 0x2080c0}},
        "4": {"class_type": "LoadAudio", "inputs": {"audio": "sine.wav"}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 24.0, "audio": ["4", 0]}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/sound", "format": "mp4", "format.codec": "h264"}},
    });
    run_ok(&s, &prompt);
    let file = s.output_dir().join("video/sound_00001_.mp4");
    let streams = ffprobe(&file);
    assert_eq!(stream(&streams, "video")["nb_read_frames"], "48");
    let a = stream(&streams, "audio");
    assert_eq!(a["codec_name"], "aac");
    let duration: f64 = a["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 2.0).abs() < 0.1, "audio lasts {duration} s");

    // Browsers seek with Range requests.
    let whole = s.get("/view?filename=sound_00001_.mp4&subfolder=video&type=output");
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    let part = s.request(
        "GET",
        "/view?filename=sound_00001_.mp4&subfolder=video",
        &[("Range", "bytes=100-199")],
        None,
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole.body[100..200]);
}

fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let mse: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.as_raw().len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

#[test]
fn load_video_returns_the_frames_that_were_saved() {
    let s = Server::start(&[]);
    let gradient = image::RgbImage::from_fn(128, 96, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 2) as u8, 128])
    });
    gradient.save(s.dir.join("input/gradient.png")).unwrap();
    let save = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "gradient.png"}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 48}},
        "3": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": 24.0}},
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "grad", "format": "auto", "format.codec": "auto"}},
    });
    run_ok(&s, &save);
    std::fs::copy(
        s.output_dir().join("grad_00001_.mp4"),
        s.dir.join("input/grad.mp4"),
    )
    .unwrap();
    let info = s.get("/object_info/LoadVideo").json();
    assert!(info["LoadVideo"]["input"]["required"]["file"][1]["options"]
        .as_array()
        .unwrap()
        .contains(&json!("grad.mp4")));

    let load = json!({
        "1": {"class_type": "LoadVideo", "inputs": {"file": "grad.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "frame"}},
    });
    let entry = run_ok(&s, &load);
    let frames = entry["outputs"]["3"]["images"].as_array().unwrap();
    assert_eq!(frames.len(), 48);
    for f in frames {
        let img = image::open(s.output_dir().join(f["filename"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let p = psnr(&gradient, &img);
        assert!(p >= 35.0, "{}: PSNR {p:.1} dB", f["filename"]);
    }
}

#[test]
fn animated_images_and_audio_files() {
    let s = Server::start(&[]);
    write_sine_wav(&s.dir.join("input/tone.wav"), 48_000, 1.0);
    let prompt = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 12, "color": 0xff8000}},
        // libwebp merges identical frames (as it does under ComfyUI's PIL), so the WEBP gets noise.
        "10": {"class_type": "StubImage", "inputs": {"content": "NOISE", "height": 24, "width": 32, "batch_size": 12}},
        "2": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["10", 0], "filename_prefix": "anim", "fps": 6.0, "lossless": true, "quality": 80, "method": "default"}},
        "3": {"class_type": "SaveAnimatedPNG", "inputs": {"images": ["1", 0], "filename_prefix": "anim", "fps": 6.0, "compress_level": 4}},
        "4": {"class_type": "LoadAudio", "inputs": {"audio": "tone.wav"}},
        "5": {"class_type": "SaveAudio", "inputs": {"audio": ["4", 0], "filename_prefix": "audio/tone"}},
        "6": {"class_type": "SaveAudioMP3", "inputs": {"audio": ["4", 0], "filename_prefix": "audio/tone", "quality": "128k"}},
        "7": {"class_type": "SaveAudioOpus", "inputs": {"audio": ["4", 0], "filename_prefix": "audio/tone", "quality": "64k"}},
        "8": {"class_type": "PreviewAudio", "inputs": {"audio": ["4", 0]}},
        "9": {"class_type": "SaveWEBM", "inputs": {"images": ["1", 0], "filename_prefix": "clip", "codec": "vp9", "fps": 12.0, "crf": 32.0}},
    });
    let entry = run_ok(&s, &prompt);
    let out = &entry["outputs"];
    assert_eq!(out["2"]["animated"], json!([true]));

    use image::AnimationDecoder;
    let webp = std::fs::File::open(
        s.output_dir()
            .join(out["2"]["images"][0]["filename"].as_str().unwrap()),
    )
    .unwrap();
    let frames = image::codecs::webp::WebPDecoder::new(std::io::BufReader::new(webp))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 12);
    let apng = std::fs::File::open(
        s.output_dir()
            .join(out["3"]["images"][0]["filename"].as_str().unwrap()),
    )
    .unwrap();
    let frames = image::codecs::png::PngDecoder::new(std::io::BufReader::new(apng))
        .unwrap()
        .apng()
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 12);
    assert_eq!(frames[0].buffer().get_pixel(0, 0).0, [255, 128, 0, 255]);

    for (node, codec) in [("5", "flac"), ("6", "mp3"), ("7", "opus"), ("8", "flac")] {
        let rec = &out[node]["audio"][0];
        let dir = if rec["type"] == "temp" {
            s.dir.join("temp")
        } else {
            s.output_dir()
        };
        let streams = ffprobe(
            &dir.join(rec["subfolder"].as_str().unwrap())
                .join(rec["filename"].as_str().unwrap()),
        );
        let a = stream(&streams, "audio");
        assert_eq!(a["codec_name"], codec, "node {node}");
        let d: f64 = a["duration"].as_str().map_or(1.0, |d| d.parse().unwrap());
        assert!((d - 1.0).abs() < 0.1, "node {node} lasts {d}");
    }
    let webm = ffprobe(&s.output_dir().join("clip_00001_.webm"));
    assert_eq!(stream(&webm, "video")["codec_name"], "vp9");
    assert_eq!(stream(&webm, "video")["nb_read_frames"], "12");
}

#[test]
fn bad_media_files_give_errors_naming_them() {
    let s = Server::start(&[]);
    std::fs::write(
        s.dir.join("input/broken.mp4"),
        b"this is not a video at all",
    )
    .unwrap();
    let prompt = json!({
        "1": {"class_type": "LoadVideo", "inputs": {"file": "broken.mp4"}},
        "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "x", "format": "auto", "format.codec": "auto"}},
    });
    let mut ws = s.ws("c");
    let id = s.queue(&prompt, Some("c"));
    let msgs = ws.until_done(&id, T);
    let err = msgs
        .iter()
        .find(|m| m["type"] == "execution_error")
        .expect("execution_error");
    assert_eq!(err["data"]["node_type"], "LoadVideo");
    assert!(
        err["data"]["exception_message"]
            .as_str()
            .unwrap()
            .contains("broken.mp4"),
        "{err}"
    );

    let missing = json!({
        "1": {"class_type": "LoadVideo", "inputs": {"file": "nothere.mp4"}},
        "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "x", "format": "auto", "format.codec": "auto"}},
    });
    let r = s.post_json("/prompt", &json!({"prompt": missing}));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["node_errors"]["1"]["errors"][0]["details"],
        "file - Invalid video file: nothere.mp4"
    );

    // An audio file given to LoadVideo has no video stream: a clear error, not a crash.
    write_sine_wav(&s.dir.join("input/only_audio.wav"), 8000, 0.5);
    std::fs::copy(
        s.dir.join("input/only_audio.wav"),
        s.dir.join("input/only_audio.mp4"),
    )
    .unwrap();
    let prompt = json!({
        "1": {"class_type": "LoadVideo", "inputs": {"file": "only_audio.mp4"}},
        "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "y", "format": "auto", "format.codec": "auto"}},
    });
    let id = s.queue(&prompt, Some("c"));
    let msgs = ws.until_done(&id, T);
    let err = msgs
        .iter()
        .find(|m| m["type"] == "execution_error")
        .expect("execution_error");
    assert!(
        err["data"]["exception_message"]
            .as_str()
            .unwrap()
            .contains("only_audio.mp4"),
        "{err}"
    );
    assert_eq!(s.get("/system_stats").status, 200);
}

/// The saved FLAC of `node`'s first record: (channels, sample rate, seconds, the packets'
/// durations in samples over the rate).
fn saved_flac(s: &Server, out: &Value, node: &str) -> (i64, String, f64) {
    let rec = &out[node]["audio"][0];
    let path = s
        .output_dir()
        .join(rec["subfolder"].as_str().unwrap())
        .join(rec["filename"].as_str().unwrap());
    let streams = ffprobe(&path);
    let a = stream(&streams, "audio");
    let packets = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a"])
        .args(["-show_entries", "packet=duration", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    let samples: f64 = String::from_utf8_lossy(&packets.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .sum();
    let rate = a["sample_rate"].as_str().unwrap();
    let seconds = samples / rate.parse::<f64>().unwrap();
    (a["channels"].as_i64().unwrap(), rate.to_string(), seconds)
}

/// The audio editing nodes through the server on a 2 s stereo tone at 48 kHz: trimmed from the
/// end, joined after 0.5 s of 16 kHz mono silence (made stereo, resampled to 48 kHz), split and
/// rejoined, merged with itself, turned down; an empty trim is ComfyUI's error.
#[test]
fn audio_editing_nodes_trim_join_split_merge_and_resample() {
    let s = Server::start(&[]);
    write_sine_wav(&s.dir.join("input/tone.wav"), 48_000, 2.0);
    let save = |id: &str, from: &str| json!({"class_type": "SaveAudio", "inputs": {"audio": [from, 0], "filename_prefix": format!("audio/{id}")}});
    let prompt = json!({
        "1": {"class_type": "LoadAudio", "inputs": {"audio": "tone.wav"}},
        "2": {"class_type": "TrimAudioDuration", "inputs": {"audio": ["1", 0], "start_index": -0.5, "duration": 10.0}},
        "3": {"class_type": "EmptyAudio", "inputs": {"duration": 0.5, "sample_rate": 16000, "channels": 1}},
        "4": {"class_type": "AudioConcat", "inputs": {"audio1": ["1", 0], "audio2": ["3", 0], "direction": "before"}},
        "5": {"class_type": "SplitAudioChannels", "inputs": {"audio": ["1", 0]}},
        "6": {"class_type": "JoinAudioChannels", "inputs": {"audio_left": ["5", 1], "audio_right": ["5", 0]}},
        "7": {"class_type": "AudioMerge", "inputs": {"audio1": ["1", 0], "audio2": ["2", 0], "merge_method": "add"}},
        "8": {"class_type": "AudioAdjustVolume", "inputs": {"audio": ["7", 0], "volume": -6}},
        "12": save("trim", "2"), "14": save("concat", "4"), "16": save("join", "6"),
        "18": save("merge", "8"), "15": save("left", "5"),
    });
    let out = run_ok(&s, &prompt)["outputs"].clone();
    let near = |(c, r, d): (i64, String, f64), want: (i64, &str, f64)| {
        assert_eq!((c, r.as_str()), (want.0, want.1));
        assert!((d - want.2).abs() < 0.01, "{d} s, want {}", want.2);
    };
    near(saved_flac(&s, &out, "12"), (2, "48000", 0.5));
    near(saved_flac(&s, &out, "14"), (2, "48000", 2.5));
    near(saved_flac(&s, &out, "15"), (1, "48000", 2.0));
    near(saved_flac(&s, &out, "16"), (2, "48000", 2.0));
    near(saved_flac(&s, &out, "18"), (2, "48000", 2.0));

    let bad = json!({
        "1": {"class_type": "LoadAudio", "inputs": {"audio": "tone.wav"}},
        "2": {"class_type": "TrimAudioDuration", "inputs": {"audio": ["1", 0], "start_index": 5.0, "duration": 1.0}},
        "3": save("bad", "2"),
    });
    let error = s.run_failing(&bad, T);
    assert_eq!(error["exception_type"], "ValueError");
    assert!(error["exception_message"]
        .as_str()
        .unwrap()
        .starts_with("TrimAudioDuration: Start time must be less than end time"));
}

/// LoadImageOutput reads back an image the server saved, by the frontend's ` [output]` name; its
/// choices come from the frontend, so `/object_info` lists none.
#[test]
fn load_image_output_reads_a_saved_image() {
    let s = Server::start(&[]);
    let info = s.get("/object_info/LoadImageOutput").json();
    let spec = &info["LoadImageOutput"]["input"]["required"]["image"];
    assert_eq!(spec[0], "COMBO");
    assert_eq!(spec[1]["remote"]["route"], "/internal/files/output");
    let save = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 16, "batch_size": 1, "color": 0x00ff00}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "first"}},
    });
    run_ok(&s, &save);
    let load = json!({
        "1": {"class_type": "LoadImageOutput", "inputs": {"image": "first_00001_.png [output]"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "again"}},
    });
    let entry = run_ok(&s, &load);
    let name = entry["outputs"]["3"]["images"][0]["filename"]
        .as_str()
        .unwrap()
        .to_string();
    let image = image::open(s.output_dir().join(name)).unwrap().to_rgb8();
    assert_eq!(image.dimensions(), (24, 16));
    assert_eq!(image.get_pixel(3, 3).0, [255, 0, 255]);
}

/// Video Slice ("Trim Video"): the frames shown from the start time for the duration (a
/// negative start counts from the end, duration 0 runs to the end) with the audio from the same
/// time; a duration the video cannot give fails when strict.
#[test]
fn video_slice_keeps_the_frames_and_audio_of_its_window() {
    let s = Server::start(&[]);
    // Ten frames at 4 fps (2.5 s), each a different grey, and 2.5 s of audio at 8 kHz.
    let sliced = |start: f64, duration: f64, strict: bool| {
        json!({
            "frames": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 10, "color": 0}},
            "audio": {"class_type": "EmptyAudio", "inputs": {"duration": 2.5, "sample_rate": 8000, "channels": 1}},
            "video": {"class_type": "CreateVideo", "inputs": {"images": ["frames", 0], "fps": 4.0, "audio": ["audio", 0]}},
            "slice": {"class_type": "Video Slice", "inputs": {"video": ["video", 0], "start_time": start, "duration": duration, "strict_duration": strict}},
            "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["slice", 0]}},
            "size": {"class_type": "GetImageSize", "inputs": {"image": ["parts", 0]}},
            "count": {"class_type": "PreviewAny", "inputs": {"source": ["size", 2]}},
            "audio_out": {"class_type": "SaveAudio", "inputs": {"audio": ["parts", 1], "filename_prefix": "slice"}},
        })
    };
    let frames_and_seconds = |prompt: Value| {
        let out = run_ok(&s, &prompt)["outputs"].clone();
        let frames: i64 = out["count"]["text"][0].as_str().unwrap().parse().unwrap();
        let (_, _, seconds) = saved_flac(&s, &out, "audio_out");
        (frames, (seconds * 1000.0).round() / 1000.0)
    };
    // Frames at 0.5, 0.75, 1.0 and 1.25 s.
    assert_eq!(frames_and_seconds(sliced(0.5, 1.0, false)), (4, 1.0));
    // The last second: frames at 1.5 … 2.25 s.
    assert_eq!(frames_and_seconds(sliced(-1.0, 0.0, false)), (4, 1.0));
    // Not strict: what there is from 2 s.
    assert_eq!(frames_and_seconds(sliced(2.0, 5.0, false)), (2, 0.5));
    let id = s.queue(&sliced(2.0, 5.0, true), None);
    let entry = s.wait_history(&id, T);
    assert_eq!(entry["status"]["status_str"], "error");
}

/// SaveVideo's container, codec, re-encode and color choices (upstream's DynamicCombo under
/// `format`), CreateVideo's bit depth, and what GetVideoComponents reports back.
#[test]
fn save_video_containers_codecs_and_color_spaces() {
    let s = Server::start(&[]);
    write_sine_wav(&s.dir.join("input/sine.wav"), 44_100, 3.0);
    let save = |id: &str, bit_depth: i64, inputs: Value| {
        let mut save = json!({"video": ["2", 0], "filename_prefix": id});
        save.as_object_mut()
            .unwrap()
            .extend(inputs.as_object().unwrap().clone());
        json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 24, "color": 0x2080c0}},
            "4": {"class_type": "LoadAudio", "inputs": {"audio": "sine.wav"}},
            "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 24.0, "audio": ["4", 0], "bit_depth": bit_depth}},
            "3": {"class_type": "SaveVideo", "inputs": save},
            "5": {"class_type": "GetVideoComponents", "inputs": {"video": ["3", 0]}},
            "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 3]}},
            "7": {"class_type": "PreviewAny", "inputs": {"source": ["5", 4]}},
        })
    };
    let probe = |file: &str| {
        let streams = ffprobe(&s.output_dir().join(file));
        (
            stream(&streams, "video").clone(),
            stream(&streams, "audio").clone(),
        )
    };
    let color = |v: &Value| {
        [
            "pix_fmt",
            "color_range",
            "color_space",
            "color_transfer",
            "color_primaries",
        ]
        .map(|k| v[k].as_str().unwrap_or("").to_string())
    };

    // Default: H.264 in mp4, tagged SDR BT.709/sRGB; the audio cut to the video's second.
    let entry = run_ok(
        &s,
        &save(
            "plain",
            8,
            json!({"format": "auto", "format.codec": "auto"}),
        ),
    );
    let (v, a) = probe("plain_00001_.mp4");
    assert_eq!(v["codec_name"], "h264");
    assert_eq!(
        color(&v),
        ["yuv420p", "tv", "bt709", "iec61966-2-1", "bt709"].map(String::from)
    );
    let seconds: f64 = a["duration"].as_str().unwrap().parse().unwrap();
    assert!((seconds - 1.0).abs() < 0.05, "audio lasts {seconds} s");
    assert_eq!(entry["outputs"]["6"]["text"], json!(["8"]));
    assert_eq!(entry["outputs"]["7"]["text"], json!(["sRGB"]));

    // A 10-bit video re-encoded in mkv with a crf.
    run_ok(
        &s,
        &save(
            "deep",
            10,
            json!({"format": "mkv", "format.codec": "h264", "format.codec.encoding": "re-encode",
                   "format.codec.encoding.crf": 18.0, "format.codec.encoding.color_space": "auto"}),
        ),
    );
    let (v, _) = probe("deep_00001_.mkv");
    assert_eq!(
        (v["codec_name"].as_str(), v["pix_fmt"].as_str()),
        (Some("h264"), Some("yuv420p10le"))
    );

    // WebM: AV1 with Opus, and HDR (HLG) makes it 10-bit BT.2020.
    run_ok(
        &s,
        &save(
            "hdr",
            8,
            json!({"format": "webm", "format.codec": "av1", "format.codec.encoding": "re-encode",
                   "format.codec.encoding.crf": 30.0, "format.codec.encoding.color_space": "HDR"}),
        ),
    );
    let (v, a) = probe("hdr_00001_.webm");
    assert_eq!(
        (v["codec_name"].as_str(), a["codec_name"].as_str()),
        (Some("av1"), Some("opus"))
    );
    assert_eq!(
        color(&v),
        ["yuv420p10le", "tv", "bt2020nc", "arib-std-b67", "bt2020"].map(String::from)
    );

    // WebM offers no H.264: validation names the choice.
    let rejected = |prompt: Value| {
        let r = s.post_json("/prompt", &json!({"prompt": prompt}));
        assert_eq!(r.status, 400, "{}", r.text());
        r.json()
    };
    let body = rejected(save(
        "bad",
        8,
        json!({"format": "webm", "format.codec": "h264"}),
    ));
    assert_eq!(
        body["node_errors"]["3"]["errors"][0]["type"], "value_not_in_list",
        "{body}"
    );
    // Prompts from before the codec moved under the format miss it, as upstream reports.
    let body = rejected(save("old", 8, json!({"format": "auto", "codec": "auto"})));
    assert_eq!(
        body["node_errors"]["3"]["errors"][0]["details"], "codec",
        "{body}"
    );
}

/// SaveAudioAdvanced writes the format its DynamicCombo chooses and passes the audio on; the
/// save nodes name themselves when a video had no audio track.
#[test]
fn save_audio_advanced_and_missing_audio() {
    let s = Server::start(&[]);
    write_sine_wav(&s.dir.join("input/sine.wav"), 44_100, 1.0);
    let prompt = json!({
        "1": {"class_type": "LoadAudio", "inputs": {"audio": "sine.wav"}},
        "2": {"class_type": "SaveAudioAdvanced", "inputs": {"audio": ["1", 0],
            "filename_prefix": "audio/adv", "format": "mp3", "format.quality": "128k"}},
        "3": {"class_type": "PreviewAudio", "inputs": {"audio": ["2", 0]}},
    });
    let entry = run_ok(&s, &prompt);
    assert_eq!(
        entry["outputs"]["2"]["audio"][0]["filename"],
        "adv_00001.mp3"
    );
    let streams = ffprobe(&s.output_dir().join("audio/adv_00001.mp3"));
    assert_eq!(stream(&streams, "audio")["bit_rate"], "128000");
    assert_eq!(entry["outputs"]["3"]["audio"][0]["type"], "temp");
    // The counter reads names without the `_` after it.
    let mut again = prompt.clone();
    again["2"]["inputs"]["format"] = json!("flac");
    again["2"]["inputs"]
        .as_object_mut()
        .unwrap()
        .remove("format.quality");
    let entry = run_ok(&s, &again);
    assert_eq!(
        entry["outputs"]["2"]["audio"][0]["filename"],
        "adv_00002.flac"
    );

    let silent = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
        "3": {"class_type": "GetVideoComponents", "inputs": {"video": ["2", 0]}},
        "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 1], "filename_prefix": "none"}},
    });
    let error = s.run_failing(&silent, T);
    assert_eq!(
        error["exception_message"],
        "SaveAudio: input audio is None (source video may have no audio track).\n"
    );
}
