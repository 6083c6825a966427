//! The official Wan templates (workflows/*_api.json, converted from the shipped UI files) run
//! unchanged but for size, length and steps, through the real server and WebSocket, on tiny
//! random checkpoints in ComfyUI's layouts (tests/python/wan_workflow_fixtures.py), on the CPU:
//! each must save a playable mp4 with the right frame count, size and fps. The SAM 3
//! segmentation templates that the Wan inpainting and SCAIL-2 templates build on run here too.

mod common;
mod reference;

use std::path::Path;
use std::time::Duration;

use common::{ffprobe, Server};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(300);
const WIDTH: i64 = 64;
const HEIGHT: i64 = 32;
const LENGTH: i64 = 5;

fn template(name: &str) -> Value {
    let path = format!("{}/workflows/{name}_api.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The template at test size: 64×32, 5 frames, 2 steps, its own output prefix.
fn reduced(mut prompt: Value, prefix: &str) -> Value {
    for node in prompt.as_object_mut().unwrap().values_mut() {
        let class = node["class_type"].as_str().unwrap().to_string();
        let inputs = &mut node["inputs"];
        match class.as_str() {
            "EmptyHunyuanLatentVideo" | "WanImageToVideo" | "Wan22ImageToVideoLatent" => {
                inputs["width"] = json!(WIDTH);
                inputs["height"] = json!(HEIGHT);
                inputs["length"] = json!(LENGTH);
            }
            "KSampler" => {
                inputs["steps"] = json!(2);
                inputs["seed"] = json!(7);
            }
            "SaveVideo" => inputs["filename_prefix"] = json!(prefix),
            _ => {}
        }
    }
    prompt
}

/// Runs the prompt, checks the WS reported success, returns the saved video's path.
fn run(server: &Server, prompt: &Value, client: &str) -> std::path::PathBuf {
    run_all(server, prompt, client).remove(0)
}

/// Runs the prompt, checks the WS reported success, returns each saved video's path by the
/// id of the node that saved it.
fn run_all(server: &Server, prompt: &Value, client: &str) -> Vec<std::path::PathBuf> {
    let mut ws = server.ws(client);
    let id = server.queue(prompt, Some(client));
    let messages = ws.until_done(&id, T);
    let types = common::types(&messages);
    assert!(
        types.contains(&"execution_success".to_string()),
        "{types:?}: {messages:?}\n{}",
        server.log()
    );
    let history = server.wait_history(&id, T);
    let videos: Vec<std::path::PathBuf> = history["outputs"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|o| o["images"].as_array().filter(|_| o["animated"][0] == true))
        .map(|images| {
            let video = &images[0];
            server
                .output_dir()
                .join(video["subfolder"].as_str().unwrap())
                .join(video["filename"].as_str().unwrap())
        })
        .collect();
    assert!(!videos.is_empty(), "no saved video in the history");
    videos
}

/// A server with the tiny Wan checkpoints and a 40×30 gradient as the I2V start image `input`.
fn wan_server(input: &str) -> Server {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let start = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 90]));
    std::fs::create_dir_all(server.dir.join("input")).unwrap();
    start.save(server.dir.join("input").join(input)).unwrap();
    server
}

fn check_video(path: &Path, fps: &str) {
    let stream = ffprobe(path)[0].clone();
    assert_eq!(stream["codec_name"], "h264", "{stream}");
    assert_eq!(stream["width"], WIDTH);
    assert_eq!(stream["height"], HEIGHT);
    assert_eq!(stream["nb_read_frames"], LENGTH.to_string());
    assert_eq!(stream["r_frame_rate"], fps);
}

#[test]
fn wan_templates_make_videos_through_the_server() {
    let server = wan_server("image_to_video_wan_start_image.png");

    let t2v = run(
        &server,
        &reduced(template("text_to_video_wan"), "t2v"),
        "c1",
    );
    check_video(&t2v, "16/1");
    let i2v = run(
        &server,
        &reduced(template("image_to_video_wan"), "i2v"),
        "c2",
    );
    check_video(&i2v, "16/1");
    let ti2v = run(
        &server,
        &reduced(template("video_wan2_2_5B_ti2v"), "ti2v"),
        "c3",
    );
    check_video(&ti2v, "24/1");

    // VAEDecodeTiled in place of VAEDecode: 64 px tiles (32 px overlap) over a 128×64 video,
    // two latent frames per temporal window; the video keeps its size and frame count.
    let mut tiled = reduced(template("text_to_video_wan"), "tiled");
    tiled["8"] = json!({"class_type": "VAEDecodeTiled", "inputs": {
        "samples": ["3", 0], "vae": ["39", 0], "tile_size": 64, "overlap": 32,
        "temporal_size": 8, "temporal_overlap": 4}});
    tiled["40"]["inputs"]["width"] = json!(WIDTH * 2);
    tiled["40"]["inputs"]["height"] = json!(HEIGHT * 2);
    let stream = ffprobe(&run(&server, &tiled, "c4"))[0].clone();
    assert_eq!(stream["width"], WIDTH * 2);
    assert_eq!(stream["height"], HEIGHT * 2);
    assert_eq!(stream["nb_read_frames"], LENGTH.to_string());
}

/// The latent the T2V template's sampler makes, saved by SaveLatent, with `model` feeding
/// ModelSamplingSD3 (so the UNETLoader can be swapped or a LoRA put in between).
fn sampled_latent(
    server: &Server,
    extra: Value,
    model: Value,
    unet: &str,
    prefix: &str,
) -> Vec<f32> {
    let mut prompt = reduced(template("text_to_video_wan"), prefix);
    for (id, node) in extra.as_object().unwrap() {
        prompt[id] = node.clone();
    }
    prompt["37"]["inputs"]["unet_name"] = json!(unet);
    prompt["48"]["inputs"]["model"] = model;
    saved_latent(server, prompt, json!(["3", 0]), prefix)
}

/// Runs `prompt` with a SaveLatent of `samples` added and returns that latent's values.
fn saved_latent(server: &Server, mut prompt: Value, samples: Value, prefix: &str) -> Vec<f32> {
    prompt["91"] = json!({"class_type": "SaveLatent", "inputs": {"samples": samples, "filename_prefix": format!("latents/{prefix}")}});
    run(server, &prompt, prefix);
    latent_values(
        &server
            .output_dir()
            .join(format!("latents/{prefix}_00001_.latent")),
    )
}

/// The values of a SaveLatent file's `latent_tensor`.
fn latent_values(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensor = file.tensor("latent_tensor").unwrap();
    assert_eq!(tensor.dtype(), safetensors::Dtype::F32);
    tensor
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// LoraLoaderModelOnly in the T2V template samples exactly what the same LoRA merged into the
/// checkpoint by the fixture script (ComfyUI's float32 merge) samples; without the LoRA the
/// latent is clearly different, so the LoRA is not ignored.
#[test]
fn lora_loader_in_the_template_equals_the_merged_checkpoint() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let base = "wan2.1_t2v_1.3B_fp16.safetensors";
    let lora_node = json!({"90": {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["37", 0], "lora_name": "wan_test_lora.safetensors", "strength_model": 0.8}}});
    let with_lora = sampled_latent(&server, lora_node, json!(["90", 0]), base, "lora");
    let merged = sampled_latent(
        &server,
        json!({}),
        json!(["37", 0]),
        "wan2.1_t2v_1.3B_lora_merged.safetensors",
        "merged",
    );
    let plain = sampled_latent(&server, json!({}), json!(["37", 0]), base, "plain");
    let diff = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(
        diff(&with_lora, &merged) <= 1e-5,
        "LoRA node vs merged file: {}",
        diff(&with_lora, &merged)
    );
    assert!(
        diff(&with_lora, &plain) > 1e-2,
        "the LoRA changed nothing: {}",
        diff(&with_lora, &plain)
    );
}

/// SkipLayerGuidanceDiTSimple on the T2V template (cfg 6): skipping block 1 in the
/// unconditional calls changes the sampled latent; an empty layer list leaves the model as it
/// is.
#[test]
fn skip_layer_guidance_simple_skips_blocks_in_the_unconditional_call() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let base = "wan2.1_t2v_1.3B_fp16.safetensors";
    let slg = |layers: &str| {
        json!({"90": {"class_type": "SkipLayerGuidanceDiTSimple", "inputs": {"model": ["37", 0],
            "double_layers": layers, "single_layers": "", "start_percent": 0.0, "end_percent": 1.0}}})
    };
    let plain = sampled_latent(&server, json!({}), json!(["37", 0]), base, "slg_plain");
    let skipped = sampled_latent(&server, slg("1"), json!(["90", 0]), base, "slg_skip");
    let none = sampled_latent(&server, slg(""), json!(["90", 0]), base, "slg_none");
    assert_ne!(plain, skipped, "skipping a block changed nothing");
    assert_eq!(plain, none);
}

/// EasyCache, LazyCache and the CFG patches in the T2V template (cfg 6, 6 steps). A reuse
/// threshold of 0 never skips, so the latent is the plain one; a high one skips calls from the
/// third on, which changes it. The patch chain (wanBlockSwap, APG, TCFG, FreSca, RescaleCFG,
/// Mahiro, TemporalScoreRescaling, Epsilon Scaling) runs and changes it too.
#[test]
fn step_caches_and_cfg_patches_run_in_the_template() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let latent = |nodes: &[(&str, Value)], prefix: &str| {
        let mut prompt = reduced(template("text_to_video_wan"), prefix);
        prompt["3"]["inputs"]["steps"] = json!(6);
        let mut model = json!(["37", 0]);
        for (n, (class, inputs)) in nodes.iter().enumerate() {
            let id = format!("{}", 101 + n);
            let mut inputs = inputs.clone();
            inputs["model"] = model;
            prompt[&id] = json!({"class_type": class, "inputs": inputs});
            model = json!([id, 0]);
        }
        prompt["48"]["inputs"]["model"] = model;
        let values = saved_latent(&server, prompt, json!(["3", 0]), prefix);
        assert!(values.iter().all(|v| v.is_finite()), "{prefix}");
        values
    };
    let cache = |class: &'static str, threshold: f64| {
        (
            class,
            json!({"reuse_threshold": threshold, "start_percent": 0.0,
            "end_percent": 1.0, "verbose": true}),
        )
    };
    let plain = latent(&[], "cache_plain");
    for class in ["EasyCache", "LazyCache"] {
        let never = latent(&[cache(class, 0.0)], &format!("{class}_never"));
        assert_eq!(plain, never, "{class} with a zero threshold");
        let often = latent(&[cache(class, 3.0)], &format!("{class}_often"));
        assert_ne!(plain, often, "{class} skipped nothing");
    }
    let chain = [
        ("wanBlockSwap", json!({})),
        (
            "APG",
            json!({"eta": 0.8, "norm_threshold": 5.0, "momentum": -0.5}),
        ),
        ("TCFG", json!({})),
        (
            "FreSca",
            json!({"scale_low": 1.0, "scale_high": 1.25, "freq_cutoff": 20}),
        ),
        ("RescaleCFG", json!({"multiplier": 0.7})),
        ("Mahiro", json!({})),
        (
            "TemporalScoreRescaling",
            json!({"tsr_k": 0.95, "tsr_sigma": 1.0}),
        ),
        ("Epsilon Scaling", json!({"scaling_factor": 1.005})),
    ];
    assert_ne!(plain, latent(&chain, "cfg_patches"));
}

/// A Wan 2.2 A14B template (high/low-noise pair in one subgraph) at test size: 64×32, a 0.25 s
/// "duration" (5 frames at 16 fps through its ComfyMathExpression), 4 plain steps split at 2,
/// the turbo switch (LoRA models, 4 steps, cfg 1) as given.
fn reduced_a14b(mut prompt: Value, prefix: &str, turbo: bool) -> Value {
    for node in prompt.as_object_mut().unwrap().values_mut() {
        let class = node["class_type"].as_str().unwrap().to_string();
        let inputs = &mut node["inputs"];
        let value = inputs["value"].clone();
        match (class.as_str(), value.as_f64()) {
            ("EmptyHunyuanLatentVideo" | "WanImageToVideo", _) => {
                inputs["width"] = json!(WIDTH);
                inputs["height"] = json!(HEIGHT);
            }
            ("PrimitiveFloat", Some(5.0)) => inputs["value"] = json!(0.25),
            ("PrimitiveInt", Some(20.0)) => inputs["value"] = json!(4),
            ("PrimitiveInt", Some(10.0)) => inputs["value"] = json!(2),
            ("PrimitiveBoolean", _) => inputs["value"] = json!(turbo),
            ("SaveVideo", _) => inputs["filename_prefix"] = json!(prefix),
            _ => {}
        }
    }
    prompt
}

/// The Wan 2.2 A14B templates (`video_wan2_2_14B_t2v`, `video_wan2_2_14B_i2v`: subgraphs with
/// ComfySwitchNode between plain and lightx2v-LoRA models, ComfyMathExpression for the length,
/// two KSamplerAdvanced over the high/low-noise pair) on fp8-scaled tiny models: through the
/// server in both switch positions, and as shipped (UI format) through `videosdgx run`.
#[test]
fn wan22_a14b_templates_make_videos_in_both_modes() {
    let server = wan_server("video_wan2_2_14B_i2v_input_image.jpg");
    for name in ["video_wan2_2_14B_t2v", "video_wan2_2_14B_i2v"] {
        let plain = run(
            &server,
            &reduced_a14b(template(name), &format!("{name}_plain"), false),
            "a14b",
        );
        check_video(&plain, "16/1");
        let turbo = run(
            &server,
            &reduced_a14b(template(name), &format!("{name}_turbo"), true),
            "a14b",
        );
        check_video(&turbo, "16/1");
        assert_ne!(
            std::fs::read(&plain).unwrap(),
            std::fs::read(&turbo).unwrap()
        );
    }

    // The shipped T2V file through the CLI, its subgraph's widgets reduced the same way.
    let path = format!(
        "{}/workflows/video_wan2_2_14B_t2v_ui.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut ui: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for node in ui["definitions"]["subgraphs"][0]["nodes"]
        .as_array_mut()
        .unwrap()
    {
        let kind = node["type"].as_str().unwrap().to_string();
        let values = &mut node["widgets_values"];
        match (kind.as_str(), values[0].as_f64()) {
            ("EmptyHunyuanLatentVideo", _) => {
                values[0] = json!(WIDTH);
                values[1] = json!(HEIGHT);
            }
            ("PrimitiveFloat", Some(5.0)) => values[0] = json!(0.25),
            ("PrimitiveInt", Some(20.0)) => values[0] = json!(4),
            ("PrimitiveInt", Some(10.0)) => values[0] = json!(2),
            _ => {}
        }
    }
    let file = server.dir.join("a14b_t2v_ui.json");
    let saved = common::run_workflow_file(&ui, &file, &server.dir);
    let video = &saved["80"]["images"][0];
    check_video(
        &server
            .output_dir()
            .join(video["subfolder"].as_str().unwrap())
            .join(video["filename"].as_str().unwrap()),
        "16/1",
    );
}

/// In ComfyUI, WanFirstLastFrameToVideo with only a start image conditions exactly as
/// WanImageToVideo does: the same grey video with the image first, and a mask that, folded
/// four frames per latent frame, keeps the first latent frame. So the Wan 2.2 A14B I2V
/// template samples the same latent with either node; with an end image as well it does not.
#[test]
fn first_last_frame_with_a_start_image_samples_what_image_to_video_samples() {
    let server = wan_server("video_wan2_2_14B_i2v_input_image.jpg");
    let prompt = reduced_a14b(template("video_wan2_2_14B_i2v"), "flf_i2v", false);
    let samples = json!(["129:85", 0]);
    let i2v = saved_latent(&server, prompt.clone(), samples.clone(), "i2v");
    let mut flf = prompt;
    flf["129:98"]["class_type"] = json!("WanFirstLastFrameToVideo");
    let same = saved_latent(&server, flf.clone(), samples.clone(), "flf_start");
    assert_eq!(i2v, same, "start image only");
    flf["129:98"]["inputs"]["end_image"] = json!(["97", 0]);
    let both = saved_latent(&server, flf, samples, "flf_both");
    assert_ne!(i2v, both, "the end image changed nothing");
}

/// Makes the files the prompt's LoadImage, LoadAudio and LoadVideo nodes name (an 8-frame
/// video).
fn make_inputs(server: &Server, prompt: &Value) {
    server.make_inputs(prompt, 8);
}

/// A first-last-frame, Fun or VACE template at test size: the Wan conditioning node's literal
/// size and length (64×32, 5 frames), `primitives` (node id → value) where the template derives
/// them, KSampler at 2 steps, the high/low KSamplerAdvanced pair at 4 steps split at 2.
fn reduced_control(mut prompt: Value, prefix: &str, primitives: &[(&str, i64)]) -> Value {
    for (id, node) in prompt.as_object_mut().unwrap().iter_mut() {
        let class = node["class_type"].as_str().unwrap().to_string();
        let inputs = &mut node["inputs"];
        let mut set = |name: &str, value: i64| {
            if inputs[name].is_number() {
                inputs[name] = json!(value);
            }
        };
        match class.as_str() {
            "WanFirstLastFrameToVideo"
            | "WanFunInpaintToVideo"
            | "WanFunControlToVideo"
            | "Wan22FunControlToVideo"
            | "WanVaceToVideo"
            | "WanCameraEmbedding"
            | "WanTrackToVideo"
            | "WanMoveTrackToVideo"
            | "WanHuMoImageToVideo" => {
                set("width", WIDTH);
                set("height", HEIGHT);
                set("length", LENGTH);
            }
            // The start image's size, and the frame WanMove's tracks are drawn in.
            "ImageScale" | "GenerateTracks" => {
                set("width", WIDTH);
                set("height", HEIGHT);
            }
            "KSampler" => set("steps", 2),
            "KSamplerAdvanced" => {
                set("steps", 4);
                if inputs["start_at_step"] == 10 {
                    inputs["start_at_step"] = json!(2);
                }
                if inputs["end_at_step"] == 10 {
                    inputs["end_at_step"] = json!(2);
                }
            }
            "PrimitiveInt" => {
                if let Some((_, value)) = primitives.iter().find(|(p, _)| p == id) {
                    inputs["value"] = json!(value);
                }
            }
            // The tiny models have two blocks: skip the second.
            "SkipLayerGuidanceDiT" => inputs["double_layers"] = json!("1"),
            "SaveVideo" => inputs["filename_prefix"] = json!(prefix),
            _ => {}
        }
    }
    prompt
}

/// The first-last-frame (Wan 2.1 FLF2V with two images' CLIP tokens; Wan 2.2 A14B), Fun InP
/// (2.1 with CFGZeroStar and SkipLayerGuidanceDiT; 2.2), Fun Control (2.1 on Canny edges of the
/// control video; 2.2 with a reference image), Fun Camera (2.1 1.3B and 14B, 2.2 A14B: camera
/// embeddings of preset motions), ATI (a start frame's features carried along JSON tracks, plain
/// FP8 weights), WanMove (generated Bézier tracks, Kijai's FP8 layout) and VACE (text only, reference image with its
/// trimmed frame, first-last frames built from masks in subgraphs, outpainting, control video)
/// templates through the server on tiny models: each saves a playable video of the size,
/// frame count and fps it asks for.
#[test]
fn wan_control_templates_make_videos_through_the_server() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    // (template, fps, primitives to set, frames)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, i64)], i64);
    let cases: [Case; 19] = [
        ("video_wan2_2_14B_flf2v", "16/1", &[], LENGTH),
        // Five first-last-frame clips between six key frames, joined.
        ("templates-6-key-frames", "24/1", &[], 5 * LENGTH),
        ("wan2.1_flf2v_720_f16", "16/1", &[], LENGTH),
        ("wan2.1_fun_inp", "16/1", &[], LENGTH),
        ("video_wan2_2_14B_fun_inpaint", "16/1", &[], LENGTH),
        ("video_wan2_2_5B_fun_inpaint", "24/1", &[], LENGTH),
        ("wan2.1_fun_control", "16/1", &[], LENGTH),
        ("video_wan2_2_14B_fun_control", "16/1", &[], LENGTH),
        ("video_wan2_2_5B_fun_control", "24/1", &[], LENGTH),
        ("video_wan2.1_fun_camera_v1.1_1.3B", "16/1", &[], LENGTH),
        ("video_wan2.1_fun_camera_v1.1_14B", "16/1", &[], LENGTH),
        ("video_wan2_2_14B_fun_camera", "16/1", &[], LENGTH),
        ("video_wan_ati", "16/1", &[], LENGTH),
        // Its steps come from a PrimitiveInt through a switch.
        ("video_wanmove_480p", "16/1", &[("257:263", 2)], LENGTH),
        ("video_wan_vace_14B_t2v", "16/1", &[], LENGTH),
        ("video_wan_vace_14B_ref2v", "16/1", &[], LENGTH),
        // Its length is `a · 16 + 1` frames: a = 1 gives 17.
        (
            "video_wan_vace_flf2v",
            "16/1",
            &[
                ("220:131", 1),
                ("220:193", WIDTH),
                ("220:194", HEIGHT),
                ("220:202", 2),
            ],
            17,
        ),
        (
            "video_wan_vace_outpainting",
            "16/1",
            &[("131", LENGTH), ("137", WIDTH), ("139", HEIGHT)],
            LENGTH,
        ),
        ("video_wan_vace_14B_v2v", "16/1", &[], LENGTH),
    ];
    for (name, fps, primitives, frames) in cases {
        let prompt = reduced_control(template(name), name, primitives);
        make_inputs(&server, &prompt);
        let stream = ffprobe(&run(&server, &prompt, name))[0].clone();
        assert_eq!(stream["codec_name"], "h264", "{name}: {stream}");
        assert_eq!(
            (&stream["width"], &stream["height"]),
            (&json!(WIDTH), &json!(HEIGHT)),
            "{name}"
        );
        assert_eq!(stream["nb_read_frames"], frames.to_string(), "{name}");
        assert_eq!(stream["r_frame_rate"], fps, "{name}");
    }
}

/// `video_wan2_2_14B_s2v` (Wan 2.2 S2V with the lightx2v LoRA): the wav2vec2 features of 2 s of
/// audio and a reference image drive a first clip and two extensions, each continuing from the
/// last latent frames with the audio from where the video ends; the latents are joined, the
/// first frame doubled and three frames dropped as the template does. At 64×64 (the motion
/// frames' coarsest projection needs 8 latent rows) and 5 frames a clip: 3 × 2 latent frames +
/// 1 → 25 frames, 22 kept, with the audio muxed in.
#[test]
fn wan_s2v_template_makes_a_talking_video_with_its_audio() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let mut prompt = reduced_control(
        template("video_wan2_2_14B_s2v"),
        "s2v",
        &[("103", 2), ("104", LENGTH)],
    );
    prompt["93"]["inputs"]["width"] = json!(64);
    prompt["93"]["inputs"]["height"] = json!(64);
    make_inputs(&server, &prompt);
    let streams = ffprobe(&run(&server, &prompt, "s2v"));
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(
        (&video["width"], &video["height"]),
        (&json!(64), &json!(64))
    );
    assert_eq!(video["nb_read_frames"], "22");
    assert_eq!(video["r_frame_rate"], "16/1");
    assert!(
        streams.iter().any(|s| s["codec_type"] == "audio"),
        "{streams:?}"
    );
}

/// `video_wan2_1_infinitetalk` (InfiniteTalk on the I2V 14B model with the lightx2v LoRA, two
/// speakers): each speaker's region painted in the Painter nodes, a first clip from the start
/// image and a second that continues from its last frames with the audio from there; the two
/// clips saved alone and joined, with both speakers' audio one after the other. At 64×32 and 5
/// frames a clip (2 motion frames for the second): 5 and 10 frames at 25 fps.
#[test]
fn wan_infinitetalk_template_makes_two_speakers_talk_over_two_clips() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let mut prompt = template("video_wan2_1_infinitetalk");
    prompt["149"]["inputs"]["value"] = json!(WIDTH);
    prompt["150"]["inputs"]["value"] = json!(HEIGHT);
    for (id, motion) in [("188:129", 9), ("324:311", 2)] {
        prompt[id]["inputs"]["length"] = json!(LENGTH);
        prompt[id]["inputs"]["motion_frame_count"] = json!(motion);
    }
    for id in ["188:192", "324:320"] {
        prompt[id]["inputs"]["steps"] = json!(2);
    }
    prompt["162"]["inputs"]["filename_prefix"] = json!("talk_first");
    prompt["141"]["inputs"]["filename_prefix"] = json!("talk_joined");
    make_inputs(&server, &prompt);
    // The speakers' regions as the frontend uploads paintings: RGBA, opaque where painted.
    for (node, name, left) in [
        ("174", "speaker_1.png", true),
        ("175", "speaker_2.png", false),
    ] {
        let painting = image::RgbaImage::from_fn(40, 30, |x, _| {
            let alpha = if (x < 20) == left { 255 } else { 0 };
            image::Rgba([255, 255, 255, alpha])
        });
        painting.save(server.dir.join("input").join(name)).unwrap();
        prompt[node]["inputs"]["mask"] = json!(name);
    }
    let videos = run_all(&server, &prompt, "talk");
    let frames = |prefix: &str| {
        let path = videos
            .iter()
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
            .unwrap();
        let streams = ffprobe(path);
        assert!(
            streams.iter().any(|s| s["codec_type"] == "audio"),
            "{streams:?}"
        );
        let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
        assert_eq!(
            (&video["width"], &video["height"], &video["r_frame_rate"]),
            (&json!(WIDTH), &json!(HEIGHT), &json!("25/1"))
        );
        video["nb_read_frames"].as_str().unwrap().to_string()
    };
    assert_eq!(frames("talk_first"), "5");
    assert_eq!(frames("talk_joined"), "10");
}

/// `video_bernini_r_image_editing` and `video_bernini_r_video_editing` (Bernini-R on the Wan
/// 2.2 A14B pair with the lightx2v LoRA, res_multistep): the source image or the trimmed source
/// video VAE-encoded as an in-context stream; the edited image (with ImageCompare's two
/// previews) and the edited video at the source's frame rate. At 64×48 (the image's longer side
/// set to 64) and, for the video, 32×64 portrait from 8 source frames, 2 steps.
#[test]
fn wan_bernini_templates_edit_an_image_and_a_video() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let mut image = template("video_bernini_r_image_editing");
    image["116"]["inputs"]["resize_type.longer_size"] = json!(64);
    image["76:63"]["inputs"]["value"] = json!(2);
    image["76:67"]["inputs"]["value"] = json!(1);
    make_inputs(&server, &image);
    let history = server.run_ok(&image, T);
    let outputs = &history["outputs"];
    let saved = &outputs["115"]["images"][0];
    let path = server
        .output_dir()
        .join(saved["filename"].as_str().unwrap());
    assert_eq!(image::image_dimensions(path).unwrap(), (64, 48));
    for key in ["a_images", "b_images"] {
        assert_eq!(outputs["118"][key][0]["type"], "temp", "{outputs}");
    }

    let mut video = template("video_bernini_r_video_editing");
    video["298:278"]["inputs"]["width"] = json!(32);
    video["298:278"]["inputs"]["height"] = json!(64);
    video["298:286"]["inputs"]["value"] = json!(2);
    video["298:289"]["inputs"]["value"] = json!(1);
    video["46"]["inputs"]["filename_prefix"] = json!("bernini_video");
    make_inputs(&server, &video);
    let stream = ffprobe(&run(&server, &video, "bernini"))[0].clone();
    assert_eq!(
        (&stream["width"], &stream["height"]),
        (&json!(32), &json!(64))
    );
    // 8 source frames: 2 latent frames, 5 decoded.
    assert_eq!(stream["nb_read_frames"], "5");
    assert_eq!(stream["r_frame_rate"], "16/1");
}

/// `image_chrono_edit_14B` (ChronoEdit: the I2V 14B model cast to FP8, ScaleROPE spacing the
/// latent frames 7 apart in time, the edited image taken from the video's last frame): plain
/// and with the distillation LoRA, an image of the reduced size; ScaleROPE's spacing reaches
/// the model.
#[test]
fn chrono_edit_template_edits_an_image_through_its_last_frame() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let prompt = reduced(template("image_chrono_edit_14B"), "chrono");
    make_inputs(&server, &prompt);
    let sampled = |mut prompt: Value, prefix: &str| {
        prompt["60"]["inputs"]["filename_prefix"] = json!(prefix);
        prompt["latent"] = json!({"class_type": "SaveLatent", "inputs": {
            "samples": ["97:110", 0], "filename_prefix": format!("latents/{prefix}")}});
        let history = server.run_ok(&prompt, T);
        let saved = &history["outputs"]["60"]["images"][0];
        let image = server
            .output_dir()
            .join(saved["filename"].as_str().unwrap());
        assert_eq!(
            image::image_dimensions(image).unwrap(),
            (WIDTH as u32, HEIGHT as u32)
        );
        latent_values(
            &server
                .output_dir()
                .join(format!("latents/{prefix}_00001_.latent")),
        )
    };
    let spaced = sampled(prompt.clone(), "chrono");
    let mut distilled = prompt.clone();
    distilled["97:123"]["inputs"]["value"] = json!(true);
    sampled(distilled, "chrono_distilled");
    let mut plain = prompt;
    plain["97:98"]["inputs"]["scale_t"] = json!(1.0);
    assert_ne!(sampled(plain, "chrono_unscaled"), spaced);
}

/// `video_humo` (HuMo 17B in plain FP8 with the lightx2v LoRA): Whisper's layers of the audio
/// drive the talking video of the reference image; the audio is muxed in. The sound reaches
/// the sampler: silence in its place gives another latent.
#[test]
fn humo_template_makes_a_video_from_a_reference_image_and_speech() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let mut prompt = reduced_control(template("video_humo"), "humo", &[]);
    make_inputs(&server, &prompt);
    let streams = ffprobe(&run(&server, &prompt, "humo"));
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(
        (&video["width"], &video["height"], &video["r_frame_rate"]),
        (&json!(WIDTH), &json!(HEIGHT), &json!("25/1"))
    );
    assert_eq!(video["nb_read_frames"], LENGTH.to_string());
    assert!(streams.iter().any(|s| s["codec_type"] == "audio"));
    prompt["59"]["inputs"]["filename_prefix"] = json!("humo_sound");
    let heard = saved_latent(&server, prompt.clone(), json!(["64", 0]), "humo_heard");
    prompt["silence"] = json!({"class_type": "EmptyAudio", "inputs": {
        "duration": 2.0, "sample_rate": 44100, "channels": 1}});
    prompt["56"]["inputs"]["audio"] = json!(["silence", 0]);
    prompt["59"]["inputs"]["filename_prefix"] = json!("humo_silent");
    let silent = saved_latent(&server, prompt, json!(["64", 0]), "humo_silent");
    assert_ne!(heard, silent);
}

/// `video_causal_forcing_i2v` (Causal Forcing: ARVideoI2V caches the start image's latent,
/// SamplerARVideo denoises one latent frame at a time against the cached ones): the video at
/// the reduced size, from 1 s of frames (17), and its first frame's latent is the start
/// image's.
#[test]
fn causal_forcing_template_makes_a_video_frame_by_frame() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let mut prompt = template("video_causal_forcing_i2v");
    prompt["29:8"]["inputs"]["width"] = json!(WIDTH);
    prompt["29:8"]["inputs"]["height"] = json!(HEIGHT);
    prompt["29:28"]["inputs"]["value"] = json!(1.0);
    prompt["29:13"]["inputs"]["steps"] = json!(2);
    make_inputs(&server, &prompt);
    let stream = ffprobe(&run(&server, &prompt, "causal"))[0].clone();
    assert_eq!(
        (&stream["width"], &stream["height"], &stream["r_frame_rate"]),
        (&json!(WIDTH), &json!(HEIGHT), &json!("16/1"))
    );
    assert_eq!(stream["nb_read_frames"], "17");
    // The sampled latent starts with the start image's (the AR sampler writes it as is).
    let sampled = saved_latent(
        &server,
        prompt.clone(),
        json!(["29:15", 0]),
        "causal_latent",
    );
    let mut encoded = prompt;
    encoded["enc"] = json!({"class_type": "VAEEncode", "inputs": {
        "pixels": ["scaled", 0], "vae": ["29:3", 0]}});
    encoded["scaled"] = json!({"class_type": "ImageScale", "inputs": {
        "image": ["18", 0], "upscale_method": "bilinear", "width": WIDTH, "height": HEIGHT,
        "crop": "center"}});
    let start = saved_latent(&server, encoded, json!(["enc", 0]), "causal_start");
    // `[1, 16, frames, h, w]` against `[1, 16, 1, h, w]`: each channel's first frame.
    let cells = (HEIGHT / 8 * WIDTH / 8) as usize;
    let frames = sampled.len() / (16 * cells);
    assert_eq!((start.len(), frames), (16 * cells, 5));
    let diff = (0..16)
        .flat_map(|c| (0..cells).map(move |j| (c * frames * cells + j, c * cells + j)))
        .map(|(a, b)| (sampled[a] - start[b]).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "first frame differs by {diff}");
}

/// WanMove's tracks reach the sampler: the template's Bézier tracks, drawn in the test frame,
/// change the sampled latent against strength 0, and tracks that lie outside the frame change
/// nothing.
#[test]
fn wanmove_tracks_change_the_sampled_video_only_where_they_lie_in_the_frame() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let prompt = reduced_control(template("video_wanmove_480p"), "wanmove", &[("257:263", 2)]);
    make_inputs(&server, &prompt);
    let sample =
        |prompt: Value, prefix: &str| saved_latent(&server, prompt, json!(["257:144", 0]), prefix);
    let tracked = sample(prompt.clone(), "wanmove_tracked");
    let mut still = prompt.clone();
    still["257:195"]["inputs"]["strength"] = json!(0.0);
    let untracked = sample(still, "wanmove_strength_0");
    assert_ne!(tracked, untracked, "the tracks changed nothing");
    let mut outside = prompt;
    for id in ["244", "245", "246"] {
        outside[id]["inputs"]["width"] = json!(WIDTH * 50);
        outside[id]["inputs"]["height"] = json!(HEIGHT * 50);
    }
    assert_eq!(sample(outside, "wanmove_outside"), untracked);
}

/// `video_wan2.1_alpha_t2v_14B` (Wan-Alpha: the RGBA LoRA on the T2V 14B model, the latent
/// decoded by an RGB and an alpha VAE, the alpha's red channel inverted twice into the mask
/// JoinImageWithAlpha takes): an animated WebP of 5 RGBA frames at 64×32.
#[test]
fn wan_alpha_template_saves_an_rgba_animation() {
    use image::AnimationDecoder;
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let mut prompt = template("video_wan2.1_alpha_t2v_14B");
    prompt["40"]["inputs"]["width"] = json!(WIDTH);
    prompt["40"]["inputs"]["height"] = json!(HEIGHT);
    prompt["40"]["inputs"]["length"] = json!(LENGTH);
    prompt["3"]["inputs"]["steps"] = json!(2);
    prompt["80"]["inputs"]["filename_prefix"] = json!("alpha");
    let path = run(&server, &prompt, "alpha");
    assert_eq!(path.extension().unwrap(), "webp");
    let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    let decoder = image::codecs::webp::WebPDecoder::new(file).unwrap();
    assert!(decoder.has_animation());
    let frames = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), LENGTH as usize);
    let first = frames[0].buffer();
    assert_eq!(first.dimensions(), (WIDTH as u32, HEIGHT as u32));
    let alphas: std::collections::BTreeSet<u8> = first.pixels().map(|p| p[3]).collect();
    assert!(alphas.len() > 1, "one alpha everywhere: {alphas:?}");
}

/// A Wan Animate 2 template at test size: the pose video's frames scaled to 64×32 (the size
/// the template then reads back for the reference image and the output), 13 frames, 2 steps,
/// its two SaveVideo nodes' prefixes.
fn reduced_animate2(mut prompt: Value, prefix: &str) -> Value {
    prompt["261:243"]["inputs"]["resize_type.width"] = json!(WIDTH);
    prompt["261:243"]["inputs"]["resize_type.height"] = json!(HEIGHT);
    prompt["261:247"]["inputs"]["length"] = json!(13);
    prompt["261:18"]["inputs"]["steps"] = json!(2);
    prompt["261:19"]["inputs"]["noise_seed"] = json!(7);
    prompt["246"]["inputs"]["filename_prefix"] = json!(prefix);
    prompt["292"]["inputs"]["filename_prefix"] = json!(format!("{prefix}_stitched"));
    prompt
}

/// `video_wan_animate2` (int8 ConvRot model, the lightx2v LoRA, the pose branch's block inputs
/// cached in int8) and `video_wan_animate2_distilled` with its context windows switched on:
/// each animates the reference image along the 8-frame pose video into 13 frames at 64×32 and
/// saves it beside the pose video. Windows longer than the latent change nothing; windows of
/// 2 latent frames (each after the first run with the frame before it, FreeNoise on) sample
/// another latent.
#[test]
fn wan_animate2_templates_animate_a_reference_image_along_a_pose_video() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let plain = reduced_animate2(template("video_wan_animate2"), "animate2");
    make_inputs(&server, &plain);
    let videos = run_all(&server, &plain, "animate2");
    let result = videos
        .iter()
        .find(|p| !p.to_string_lossy().contains("stitched"))
        .unwrap();
    let stream = ffprobe(result)[0].clone();
    assert_eq!(
        (&stream["width"], &stream["height"], &stream["r_frame_rate"]),
        (&json!(WIDTH), &json!(HEIGHT), &json!("16/1"))
    );
    assert_eq!(stream["nb_read_frames"], "13");
    let stitched = videos
        .iter()
        .find(|p| p.to_string_lossy().contains("stitched"))
        .unwrap();
    // The 40×30 pose video at the result's height (42 wide) on its right, for its 8 frames.
    let stream = ffprobe(stitched)[0].clone();
    assert_eq!(
        (&stream["width"], &stream["nb_read_frames"]),
        (&json!(WIDTH + 42), &json!("8"))
    );

    let distilled = reduced_animate2(template("video_wan_animate2_distilled"), "distilled");
    make_inputs(&server, &distilled);
    let latent = |mut prompt: Value, windows: Option<(i64, i64)>, prefix: &str| {
        if let Some((length, overlap)) = windows {
            prompt["261:258"]["inputs"]["switch"] = json!(true);
            prompt["261:257"]["inputs"]["context_length"] = json!(length);
            prompt["261:257"]["inputs"]["context_overlap"] = json!(overlap);
        }
        saved_latent(&server, prompt, json!(["261:19", 0]), prefix)
    };
    let whole = latent(distilled.clone(), None, "animate2_whole");
    assert_eq!(whole.len(), 16 * 5 * (HEIGHT / 8 * WIDTH / 8) as usize);
    assert_eq!(
        latent(distilled.clone(), Some((21, 8)), "animate2_one_window"),
        whole
    );
    let windowed = latent(distilled.clone(), Some((2, 1)), "animate2_windows");
    assert!(windowed.iter().all(|v| v.is_finite()));
    assert_ne!(windowed, whole, "the context windows changed nothing");
    let stream = ffprobe(&run(&server, &distilled, "distilled"))[0].clone();
    assert_eq!(stream["nb_read_frames"], "13");
}

/// WanPhantomSubjectToVideo in the T2V template: two subject images become two latent frames
/// after the video's along time (`time_dim_concat`), the unconditional call gets blank ones
/// (`negative_img_text`); the saved video keeps the video's 5 frames. Without the images, or
/// with the text-only negative, the sampler draws another latent.
#[test]
fn phantom_subject_frames_follow_the_video_and_are_cut_off() {
    let server = wan_server("phantom_subject.png");
    let mut prompt = reduced(template("text_to_video_wan"), "phantom");
    prompt["61"] = json!({"class_type": "LoadImage", "inputs": {"image": "phantom_subject.png"}});
    prompt["62"] =
        json!({"class_type": "RepeatImageBatch", "inputs": {"image": ["61", 0], "amount": 2}});
    prompt["60"] = json!({"class_type": "WanPhantomSubjectToVideo", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "vae": ["39", 0], "width": WIDTH,
        "height": HEIGHT, "length": LENGTH, "batch_size": 1, "images": ["62", 0]}});
    let sampler = &mut prompt["3"]["inputs"];
    sampler["positive"] = json!(["60", 0]);
    sampler["negative"] = json!(["60", 2]);
    sampler["latent_image"] = json!(["60", 3]);
    check_video(&run(&server, &prompt, "phantom"), "16/1");

    let latent = |prompt: &Value, prefix: &str| {
        saved_latent(&server, prompt.clone(), json!(["3", 0]), prefix)
    };
    let subjects = latent(&prompt, "phantom_subjects");
    assert_eq!(subjects.len(), 16 * 2 * (HEIGHT / 8 * WIDTH / 8) as usize);
    let mut text_negative = prompt.clone();
    text_negative["3"]["inputs"]["negative"] = json!(["60", 1]);
    assert_ne!(latent(&text_negative, "phantom_text_negative"), subjects);
    let mut without = prompt.clone();
    without["60"]["inputs"]
        .as_object_mut()
        .unwrap()
        .remove("images");
    assert_ne!(latent(&without, "phantom_without"), subjects);
}

/// workflows/wan2_2_animate_api.json (Wan 2.2 Animate) at test size: 64×32, 5 frames, 2 steps,
/// the face video's first frame only (each face frame costs a 512×512 motion encoder pass on
/// the CPU). The reference image's character moves along the 8-frame pose video into a 16 fps
/// mp4 of 5 frames, the reference slot trimmed off. Without the face or without the pose video
/// the sampler draws another latent, so both reach the model.
#[test]
fn wan22_animate_workflow_moves_the_reference_along_a_pose_and_a_face() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    reference::run_into("wan_animate_workflow_fixtures.py", &server.dir);
    let mut prompt = template("wan2_2_animate");
    let conditioning = &mut prompt["13"]["inputs"];
    conditioning["width"] = json!(WIDTH);
    conditioning["height"] = json!(HEIGHT);
    conditioning["length"] = json!(LENGTH);
    conditioning["face_video"] = json!(["20", 0]);
    prompt["20"] = json!({"class_type": "ImageFromBatch",
        "inputs": {"image": ["12", 0], "batch_index": 0, "length": 1}});
    prompt["15"]["inputs"]["steps"] = json!(2);
    prompt["15"]["inputs"]["seed"] = json!(7);
    prompt["19"]["inputs"]["filename_prefix"] = json!("animate");
    make_inputs(&server, &prompt);
    check_video(&run(&server, &prompt, "animate"), "16/1");

    let latent = |prompt: &Value, prefix: &str| {
        saved_latent(&server, prompt.clone(), json!(["15", 0]), prefix)
    };
    let full = latent(&prompt, "animate_full");
    assert_eq!(full.len(), 16 * 3 * (HEIGHT / 8 * WIDTH / 8) as usize);
    for (input, prefix) in [
        ("face_video", "animate_no_face"),
        ("pose_video", "animate_no_pose"),
    ] {
        let mut without = prompt.clone();
        without["13"]["inputs"]
            .as_object_mut()
            .unwrap()
            .remove(input);
        assert_ne!(latent(&without, prefix), full, "{input} changed nothing");
    }
}

/// `video_wan_dancer` at test size (64×32, 13 frames, 2 steps a pass) on a 2 s song: the global
/// model samples the whole song at 6 fps (13 frames over 61 frames of music features) from the
/// start image, its frames become the key frames of the first 13-frame segment, which the local
/// model samples at 30 fps with that segment's music; saved with the song, beside the global
/// pass's preview (its 4 latent frames decoded one by one).
#[test]
fn wan_dancer_template_dances_to_the_song() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let mut prompt = template("video_wan_dancer");
    for (id, value) in [
        ("696:398", WIDTH),
        ("696:400", HEIGHT),
        ("696:491", 13),
        ("696:637", 2),
    ] {
        prompt[id]["inputs"]["value"] = json!(value);
    }
    prompt["696:662"]["inputs"]["steps"] = json!(2);
    prompt["696:651"]["inputs"]["video_frames"] = json!(13);
    prompt["698"]["inputs"]["filename_prefix"] = json!("dancer_preview");
    prompt["699"]["inputs"]["filename_prefix"] = json!("dancer");
    make_inputs(&server, &prompt);
    let videos = run_all(&server, &prompt, "dancer");
    let find = |preview: bool| {
        let path = videos
            .iter()
            .find(|p| p.to_string_lossy().contains("preview") == preview)
            .unwrap();
        ffprobe(path)
    };
    let streams = find(false);
    assert_eq!(
        (&streams[0]["width"], &streams[0]["height"]),
        (&json!(WIDTH), &json!(HEIGHT))
    );
    assert_eq!(
        (&streams[0]["nb_read_frames"], &streams[0]["r_frame_rate"]),
        (&json!("13"), &json!("30/1"))
    );
    assert_eq!(streams[1]["codec_type"], "audio", "{streams:?}");
    let preview = find(true)[0].clone();
    assert_eq!(
        (&preview["nb_read_frames"], &preview["r_frame_rate"]),
        (&json!("4"), &json!("8/1"))
    );
}

/// `video_wan_vace_inpainting` at test size (64×32, 5 frames, 2 steps): SAM 3.1 finds the
/// prompt's "cat" in each frame of the input video (detector, then two refinement passes of the
/// SAM heads on each detection's crop), the grown masks grey out those regions of the control
/// video, and VACE with the CausVid LoRA repaints them beside a reference image; saved at the
/// input video's 16 fps.
#[test]
fn wan_vace_inpainting_template_segments_then_repaints() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let mut prompt = template("video_wan_vace_inpainting");
    for (id, value) in [("306:290", HEIGHT), ("306:297", WIDTH), ("306:273", 2)] {
        prompt[id]["inputs"]["value"] = json!(value);
    }
    prompt["306:289"]["inputs"]["length"] = json!(LENGTH);
    prompt["69"]["inputs"]["filename_prefix"] = json!("vace_inpainting");
    make_inputs(&server, &prompt);
    let stream = ffprobe(&run(&server, &prompt, "vace_inpainting"))[0].clone();
    assert_eq!(
        (&stream["width"], &stream["height"]),
        (&json!(WIDTH), &json!(HEIGHT))
    );
    assert_eq!(
        (&stream["nb_read_frames"], &stream["r_frame_rate"]),
        (&json!(LENGTH.to_string()), &json!("16/1"))
    );
}

/// `video_wan21_scail2_character_replacement` (and its INT8 form) at test size: SAM 3.1 tracks
/// the prompt's "human" through the driving video and in the reference image (the detector on
/// each frame, tracks started from its first detections and propagated from memory), the
/// tracks are painted as SCAIL-2's identity masks, and SCAIL-2 with its LoRAs renders the
/// first chunk and then an extension anchored on its last frame, color-matched to it. The
/// driving video has 9 frames, so the extension (frames 4–8) samples a latent frame after its
/// anchor's.
#[test]
fn wan_scail2_templates_track_then_replace_the_character() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    for (name, prefix) in [
        ("video_wan21_scail2_character_replacement", "scail2"),
        (
            "video_wan21_scail2_character_replacement_int8",
            "scail2_int8",
        ),
    ] {
        let mut prompt = template(name);
        for (chunk, [width, height, steps, frames, expression]) in [
            ("213", ["178", "179", "168", "177", "184"]),
            ("262", ["236", "237", "228", "235", "241"]),
        ] {
            let id = |n: &str| format!("{chunk}:{n}");
            prompt[id(width)]["inputs"]["value"] = json!(WIDTH);
            prompt[id(height)]["inputs"]["value"] = json!(HEIGHT);
            prompt[id(steps)]["inputs"]["value"] = json!(2);
            prompt[id(frames)]["inputs"]["length"] = json!(LENGTH);
            // Chunks of 5 frames, the second anchored on the first's last frame.
            prompt[id(expression)]["inputs"]["values.b"] = json!(LENGTH);
            prompt[id(expression)]["inputs"]["values.c"] = json!(1);
        }
        prompt["213:114"]["inputs"]["previous_frame_count"] = json!(1);
        prompt["262:259"]["inputs"]["previous_frame_count"] = json!(1);
        prompt["262:251"]["inputs"]["batch_index"] = json!(1);
        // Random weights score every detection low: keep them all (at most 4 tracks).
        for id in ["213:196", "213:198", "262:244", "262:246"] {
            prompt[id]["inputs"]["detection_threshold"] = json!(0.0);
        }
        prompt["271"]["inputs"]["filename_prefix"] = json!(prefix);
        prompt["202"]["inputs"]["filename_prefix"] = json!(format!("{prefix}_first"));
        server.make_inputs(&prompt, 9);
        let videos = run_all(&server, &prompt, prefix);
        let frames: Vec<Value> = videos
            .iter()
            .map(|v| ffprobe(v)[0]["nb_read_frames"].clone())
            .collect();
        // The first chunk's 5 frames; the extension's 5 add 4 after its anchor.
        assert!(
            frames.contains(&json!("5")) && frames.contains(&json!("9")),
            "{frames:?}"
        );
        let stream = ffprobe(&videos[0])[0].clone();
        assert_eq!(
            (&stream["width"], &stream["height"], &stream["r_frame_rate"]),
            (&json!(WIDTH), &json!(HEIGHT), &json!("16/1"))
        );
    }
}

/// The images a preview node's history output names, fetched through `/view` as a client
/// would.
fn previews(server: &Server, output: &Value) -> Vec<image::DynamicImage> {
    output["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| {
            let path = format!(
                "/view?filename={}&subfolder={}&type={}",
                file["filename"].as_str().unwrap(),
                file["subfolder"].as_str().unwrap(),
                file["type"].as_str().unwrap()
            );
            let response = server.get(&path);
            assert_eq!(response.status, 200, "{path}");
            image::load_from_memory(&response.body).unwrap()
        })
        .collect()
}

/// `utility_image_segment_sam3` and `utility_video_segment_sam3`, the SAM 3.1 segmentation the
/// Wan inpainting and SCAIL-2 templates build on, unchanged but for the detection threshold
/// (random weights score every detection low): the image's "guitar" is cut out with
/// JoinImageWithAlpha, the video's "unicorn" masked in each frame; then tracked through the
/// video and previewed with SAM3_TrackPreview.
#[test]
fn sam3_segmentation_templates_cut_out_mask_and_track_what_the_prompt_names() {
    let server = Server::start(&[]);
    reference::run_into("wan_workflow_fixtures.py", &server.dir);
    let mut image = template("utility_image_segment_sam3");
    image["99:75"]["inputs"]["threshold"] = json!(0.0);
    make_inputs(&server, &image);
    let outputs = server.run_ok(&image, T)["outputs"].clone();
    let (mask, cutout) = (
        previews(&server, &outputs["95"]),
        previews(&server, &outputs["106"]),
    );
    assert_eq!((mask.len(), cutout.len()), (1, 1));
    let (mask, cutout) = (mask[0].to_luma8(), cutout[0].to_rgba8());
    assert_eq!(
        (mask.dimensions(), cutout.dimensions()),
        ((40, 30), (40, 30))
    );
    let covered = mask.pixels().filter(|p| p[0] > 127).count();
    assert!(0 < covered && covered < 40 * 30, "{covered} pixels masked");
    // JoinImageWithAlpha keeps the image's colours and makes what the mask covers transparent.
    for (x, y, pixel) in cutout.enumerate_pixels() {
        assert_eq!(pixel.0[..3], [x as u8 * 6, y as u8 * 8, 90]);
        assert_eq!(pixel[3], 255 - mask.get_pixel(x, y)[0], "({x}, {y})");
    }

    let mut video = template("utility_video_segment_sam3");
    video["114:101"]["inputs"]["threshold"] = json!(0.0);
    make_inputs(&server, &video);
    let masks = previews(&server, &server.run_ok(&video, T)["outputs"]["95"]);
    assert_eq!(masks.len(), 8);
    for mask in masks.iter().map(|m| m.to_luma8()) {
        assert_eq!(mask.dimensions(), (40, 30));
        let covered = mask.pixels().filter(|p| p[0] > 127).count();
        assert!(0 < covered && covered < 40 * 30, "{covered} pixels masked");
    }

    // The same video tracked, its tracks previewed by SAM3_TrackPreview as an mp4 in temp/.
    let mut track = video.clone();
    track["track"] = json!({"class_type": "SAM3_VideoTrack", "inputs": {
        "images": ["114:104", 0], "model": ["114:102", 0], "conditioning": ["114:100", 0],
        "detection_threshold": 0.0, "max_objects": 2, "detect_interval": 1}});
    track["preview"] = json!({"class_type": "SAM3_TrackPreview", "inputs": {
        "track_data": ["track", 0], "images": ["114:104", 0], "opacity": 0.5, "fps": 12.0}});
    track.as_object_mut().unwrap().remove("95");
    let shown = server.run_ok(&track, T)["outputs"]["preview"].clone();
    assert_eq!(shown["animated"], json!([true]), "{shown}");
    let file = &shown["images"][0];
    assert_eq!(
        (&file["subfolder"], &file["type"]),
        (&json!(""), &json!("temp"))
    );
    let path = server
        .dir
        .join("temp")
        .join(file["filename"].as_str().unwrap());
    let stream = ffprobe(&path)[0].clone();
    assert_eq!(
        (&stream["codec_name"], &stream["width"], &stream["height"]),
        (&json!("h264"), &json!(40), &json!(30))
    );
    assert_eq!(
        (&stream["nb_read_frames"], &stream["r_frame_rate"]),
        (&json!("8"), &json!("12/1"))
    );
}

/// Puts `file` of what `script` writes under the server's `models/` as `dest`.
fn install_fixture(server: &Server, (script, file): (&str, &str), dest: &str) {
    let fixtures = tempfile::tempdir().unwrap();
    reference::run_into(script, fixtures.path());
    let dest = server.dir.join("models").join(dest);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(fixtures.path().join(file), dest).unwrap();
}

/// `utility-gan_upscaler`, the template Wan videos are upscaled with: every frame of the loaded
/// video through RealESRGAN_x4plus (a tiny network in its Real-ESRGAN key layout, from
/// tests/python/upscale_reference.py) and back into an mp4 at the source's frame rate, ×4 in
/// size.
#[test]
fn gan_upscaler_template_upscales_every_frame_of_a_video() {
    let server = Server::start(&[]);
    install_fixture(
        &server,
        ("upscale_reference.py", "realesrgan_x4.safetensors"),
        "upscale_models/RealESRGAN_x4plus.safetensors",
    );
    let prompt = template("utility-gan_upscaler");
    make_inputs(&server, &prompt);
    let stream = ffprobe(&run(&server, &prompt, "gan"))[0].clone();
    assert_eq!(stream["codec_name"], "h264", "{stream}");
    assert_eq!(
        (&stream["width"], &stream["height"]),
        (&json!(160), &json!(120))
    );
    assert_eq!(stream["nb_read_frames"], "8");
    assert_eq!(stream["r_frame_rate"], "16/1");
}

/// `utility_video_frame_interpolation`, the template that smooths Wan's 16 fps videos: a
/// 5-frame 96×64 video through FILM (a narrow network in film_net_fp16's layout, from
/// tests/python/film_reference.py) at the template's multiplier 2, saved at twice the frame rate
/// with the frames in between: 9 frames at 32 fps.
#[test]
fn frame_interpolation_template_doubles_the_frame_rate() {
    let server = Server::start(&[]);
    install_fixture(
        &server,
        ("film_reference.py", "film_net.safetensors"),
        "frame_interpolation/film_net_fp16.safetensors",
    );
    let prompt = template("utility_video_frame_interpolation");
    let input = server.dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=96x64:rate=16",
        ])
        .args(["-frames:v", "5", "-pix_fmt", "yuv420p"])
        .arg(input.join(prompt["4"]["inputs"]["file"].as_str().unwrap()))
        .status()
        .unwrap();
    assert!(status.success());
    let stream = ffprobe(&run(&server, &prompt, "interp"))[0].clone();
    assert_eq!(
        (&stream["width"], &stream["height"]),
        (&json!(96), &json!(64))
    );
    assert_eq!(stream["nb_read_frames"], "9");
    assert_eq!(stream["r_frame_rate"], "32/1");
}
