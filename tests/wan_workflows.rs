//! The official Wan templates (workflows/*_api.json, converted from the shipped UI files) run
//! unchanged but for size, length and steps, through the real server and WebSocket, on tiny
//! random checkpoints in ComfyUI's layouts (tests/python/wan_workflow_fixtures.py), on the CPU:
//! each must save a playable mp4 with the right frame count, size and fps.

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
    let video = history["outputs"]
        .as_object()
        .unwrap()
        .values()
        .find_map(|o| o["images"].as_array().filter(|_| o["animated"][0] == true))
        .expect("a saved video in the history")[0]
        .clone();
    server
        .output_dir()
        .join(video["subfolder"].as_str().unwrap())
        .join(video["filename"].as_str().unwrap())
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
    prompt["91"] = json!({"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": format!("latents/{prefix}")}});
    run(server, &prompt, prefix);
    let path = server
        .output_dir()
        .join(format!("latents/{prefix}_00001_.latent"));
    let bytes = std::fs::read(&path).unwrap();
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
