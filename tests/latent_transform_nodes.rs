//! The core latent transforms (`nodes.py`) through the server on a loaded ramp latent:
//! LoadLatent (with and without `latent_format_version_0`), LatentRotate (clockwise quarter
//! turns, as `rot90` over (W, H)), LatentFlip, LatentCrop (whole cells, the start kept 8 cells
//! from the far edge), LatentComposite (cut at the edge; feathered borders), LatentBlend and
//! RepeatLatentBatch.

mod common;
mod reference;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

const T: Duration = Duration::from_secs(60);
const H: i64 = 12;
const W: i64 = 16;

/// The value of the ramp latent `[1, 4, 12, 16]` at (c, y, x).
fn ramp(c: i64, y: i64, x: i64) -> f32 {
    (c * H * W + y * W + x) as f32
}

/// Every SaveLatent output's tensor, by node id.
fn saved(s: &Server, prompt: &Value) -> std::collections::HashMap<String, Tensor> {
    let entry = s.run_ok(prompt, T);
    let mut out = std::collections::HashMap::new();
    for (node, output) in entry["outputs"].as_object().unwrap() {
        let rec = &output["latents"][0];
        let path = s
            .output_dir()
            .join(rec["subfolder"].as_str().unwrap())
            .join(rec["filename"].as_str().unwrap());
        let tensors = Tensor::read_safetensors(&path).unwrap();
        let (_, t) = tensors
            .into_iter()
            .find(|(n, _)| n == "latent_tensor")
            .unwrap();
        out.insert(node.clone(), t);
    }
    out
}

#[test]
fn latent_transforms_move_values_as_comfyui_does() {
    let s = Server::start(&[]);
    let input = s.dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let values = Tensor::arange(4 * H * W, (Kind::Float, Device::Cpu)).view([1, 4, H, W]);
    let version = Tensor::zeros([1], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(
        &[
            ("latent_tensor", values.shallow_clone()),
            ("latent_format_version_0", version),
        ],
        input.join("ramp.latent"),
    )
    .unwrap();
    Tensor::write_safetensors(
        &[("latent_tensor", values.shallow_clone())],
        input.join("old.latent"),
    )
    .unwrap();
    let save = |from: &str| json!({"class_type": "SaveLatent", "inputs": {"samples": [from, 0], "filename_prefix": format!("latents/{from}")}});
    let prompt = json!({
        "ramp": {"class_type": "LoadLatent", "inputs": {"latent": "ramp.latent"}},
        "old": {"class_type": "LoadLatent", "inputs": {"latent": "old.latent"}},
        "rot": {"class_type": "LatentRotate", "inputs": {"samples": ["ramp", 0], "rotation": "90 degrees"}},
        "flip": {"class_type": "LatentFlip", "inputs": {"samples": ["ramp", 0], "flip_method": "y-axis: horizontally"}},
        "crop": {"class_type": "LatentCrop", "inputs": {"samples": ["ramp", 0], "width": 64, "height": 64, "x": 16, "y": 8}},
        "paste": {"class_type": "LatentComposite", "inputs": {"samples_to": ["ramp", 0], "samples_from": ["crop", 0], "x": 96, "y": 0, "feather": 0}},
        "soft": {"class_type": "LatentComposite", "inputs": {"samples_to": ["ramp", 0], "samples_from": ["crop", 0], "x": 32, "y": 16, "feather": 16}},
        "zero": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 96, "batch_size": 1}},
        "blend": {"class_type": "LatentBlend", "inputs": {"samples1": ["ramp", 0], "samples2": ["zero", 0], "blend_factor": 0.25}},
        "rep": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["ramp", 0], "amount": 3}},
        "s_old": save("old"), "s_rot": save("rot"), "s_flip": save("flip"), "s_crop": save("crop"),
        "s_paste": save("paste"), "s_soft": save("soft"), "s_blend": save("blend"), "s_rep": save("rep"),
    });
    let out = saved(&s, &prompt);
    let at = |node: &str, idx: &[i64]| out[node].double_value(idx) as f32;
    // Older files hold SD1 latents scaled by 0.18215; loading undoes it.
    assert!((at("s_old", &[0, 1, 2, 3]) - ramp(1, 2, 3) / 0.18215).abs() < 1e-3);
    // A clockwise quarter turn: out[i][j] = in[H − 1 − j][i].
    assert_eq!(out["s_rot"].size(), [1, 4, W, H]);
    assert_eq!(at("s_rot", &[0, 2, 5, 3]), ramp(2, H - 1 - 3, 5));
    assert_eq!(at("s_flip", &[0, 0, 4, 0]), ramp(0, 4, W - 1));
    // 64 px from (16, 8): 8 × 8 cells from cell (2, 1).
    assert_eq!(out["s_crop"].size(), [1, 4, 8, 8]);
    assert_eq!(at("s_crop", &[0, 3, 0, 0]), ramp(3, 1, 2));
    // Pasted at cell x = 12: only 4 of its 8 columns fit.
    assert_eq!(at("s_paste", &[0, 0, 0, 12]), ramp(0, 1, 2));
    assert_eq!(at("s_paste", &[0, 0, 0, 15]), ramp(0, 1, 5));
    assert_eq!(at("s_paste", &[0, 0, 0, 11]), ramp(0, 0, 11));
    // Feathered over 2 cells inside the target: the corner cell weighs (½)·(½) of the paste.
    let corner = 0.25 * ramp(1, 1, 2) + 0.75 * ramp(1, 2, 4);
    assert!((at("s_soft", &[0, 1, 2, 4]) - corner).abs() < 1e-3);
    assert!(
        (at("s_soft", &[0, 1, 5, 7]) - ramp(1, 4, 5)).abs() < 1e-3,
        "the middle is pasted whole"
    );
    assert!((at("s_blend", &[0, 2, 3, 4]) - 0.25 * ramp(2, 3, 4)).abs() < 1e-3);
    assert_eq!(out["s_rep"].size(), [3, 4, H, W]);
    assert_eq!(at("s_rep", &[2, 1, 1, 1]), ramp(1, 1, 1));
}

/// LatentAdd/Subtract/Multiply/Interpolate (the second latent resized bilinearly and repeated
/// to the first) and LatentUpscale on a video latent (every frame resized), against
/// tests/python/latent_math_reference.py; LatentBatchSeedBehavior through the seeds it gives
/// KSampler's noise.
#[test]
fn latent_arithmetic_and_video_upscale_match_comfyui() {
    let s = Server::start(&[]);
    let input = s.dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let latents = [
        ("image", vec![1, 4, 12, 16]),
        ("small", vec![1, 4, 6, 6]),
        ("video", vec![1, 4, 3, 6, 8]),
        ("clip", vec![2, 4, 3, 4, 4]),
    ];
    tch::manual_seed(11);
    for (name, shape) in &latents {
        let t = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
        let version = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(
            &[("latent_tensor", t), ("latent_format_version_0", version)],
            input.join(format!("{name}.latent")),
        )
        .unwrap();
    }
    reference::run("latent_math_reference.py", &[input.as_os_str()], b"");
    let expected: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(input.join("expected.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let load = |name: &str| json!({"class_type": "LoadLatent", "inputs": {"latent": format!("{name}.latent")}});
    let save = |from: &str| json!({"class_type": "SaveLatent", "inputs": {"samples": [from, 0], "filename_prefix": format!("latents/{from}")}});
    let pair = |class: &str, a: &str, b: &str| json!({"class_type": class, "inputs": {"samples1": [a, 0], "samples2": [b, 0]}});
    let mut interp = pair("LatentInterpolate", "image", "small");
    interp["inputs"]["ratio"] = json!(0.3);
    let mut interp_video = pair("LatentInterpolate", "video", "clip");
    interp_video["inputs"]["ratio"] = json!(0.8);
    let prompt = json!({
        "image": load("image"), "small": load("small"), "video": load("video"), "clip": load("clip"),
        "add": pair("LatentAdd", "image", "small"),
        "subtract": pair("LatentSubtract", "video", "clip"),
        "multiply": {"class_type": "LatentMultiply", "inputs": {"samples": ["video", 0], "multiplier": -1.5}},
        "interpolate": interp, "interpolate_video": interp_video,
        "upscale_video": {"class_type": "LatentUpscale", "inputs": {"samples": ["video", 0], "upscale_method": "bilinear",
                          "width": 160, "height": 80, "crop": "disabled"}},
        "upscale_video_crop": {"class_type": "LatentUpscale", "inputs": {"samples": ["video", 0], "upscale_method": "bicubic",
                               "width": 64, "height": 64, "crop": "center"}},
        "s1": save("add"), "s2": save("subtract"), "s3": save("multiply"), "s4": save("interpolate"),
        "s5": save("interpolate_video"), "s6": save("upscale_video"), "s7": save("upscale_video_crop"),
    });
    let out = saved(&s, &prompt);
    for (save_id, name) in [
        ("s1", "add"),
        ("s2", "subtract"),
        ("s3", "multiply"),
        ("s4", "interpolate"),
        ("s5", "interpolate_video"),
        ("s6", "upscale_video"),
        ("s7", "upscale_video_crop"),
    ] {
        let (ours, theirs) = (&out[save_id], &expected[name]);
        assert_eq!(ours.size(), theirs.size(), "{name}");
        let err = (ours - theirs).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{name}: max abs error {err}");
    }

    // Mismatched channels fail the node with PyTorch's message; the server carries on.
    let bad = json!({
        "image": load("image"),
        "wide": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 96, "batch_size": 1}},
        "add": pair("LatentAdd", "image", "wide"),
        "s": save("add"),
    });
    let id = s.queue(&bad, None);
    let entry = s.wait_history(&id, T);
    assert_eq!(entry["status"]["status_str"], "error");
    let failure = &entry["status"]["messages"][2][1];
    assert_eq!(failure["exception_type"], "RuntimeError", "{failure}");
    // PyTorch's message alone: no tch prefix, no C++ backtrace.
    let message = failure["exception_message"].as_str().unwrap();
    assert!(
        message.starts_with("The size of tensor a (4) must match the size of tensor b (16)"),
        "{failure}"
    );
    assert!(!message.contains("Exception raised from"), "{failure}");

    // "fixed" gives both batch items the first seed, so KSampler noises them alike.
    let sampled = |behavior: &str| {
        let prompt = json!({
            "m": {"class_type": "TestToyModel", "inputs": {"prediction": "eps", "shift": 3.0}},
            "c": {"class_type": "TestToyConditioning", "inputs": {"value": 0.5}},
            "e": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 2}},
            "b": {"class_type": "LatentBatchSeedBehavior", "inputs": {"samples": ["e", 0], "seed_behavior": behavior}},
            "k": {"class_type": "KSampler", "inputs": {"model": ["m", 0], "seed": 3, "steps": 2, "cfg": 1.0, "sampler_name": "euler",
                  "scheduler": "normal", "positive": ["c", 0], "negative": ["c", 0], "latent_image": ["b", 0], "denoise": 1.0}},
            "s": {"class_type": "SaveLatent", "inputs": {"samples": ["k", 0], "filename_prefix": format!("latents/{behavior}")}},
        });
        saved(&s, &prompt).remove("s").unwrap()
    };
    let fixed = sampled("fixed");
    assert!((fixed.get(0) - fixed.get(1)).abs().max().double_value(&[]) < 1e-6);
    let random = sampled("random");
    assert!(
        (random.get(0) - random.get(1))
            .abs()
            .max()
            .double_value(&[])
            > 0.1
    );
}
