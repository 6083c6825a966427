//! LTX-2 against PyPI diffusers at tiny configs, with random weights in ComfyUI's layout and the
//! checkpoint's `config` metadata, float32 on the CPU: the video VAE (AutoencoderKLLTX2Video,
//! tests/python/ltx_vae_reference.py), plain and timestep-conditioned; the audio-video
//! transformer and its text connectors (LTX2VideoTransformer3DModel,
//! LTX2ConnectorTransformer1d, tests/python/ltx_av_reference.py). And the LTXV latent nodes
//! through the real server on the tiny VAE.

mod common;
mod reference;

use std::path::Path;
use std::time::Duration;

use common::Server;
use serde_json::json;
use tch::{Device, Kind, Tensor};
use videosdgx::models::loading::component;
use videosdgx::models::ltx::av_config::AvConfig;
use videosdgx::models::ltx::av_model::{AvInputs, LtxAvModel};
use videosdgx::models::ltx::vae_config::VaeConfig;
use videosdgx::models::ltx::video_vae::LtxVideoVae;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

/// The VAE in `file` as the server's loader reads it, in float32 on the CPU.
fn load(file: &SafetensorsFile) -> LtxVideoVae {
    let found = component(file, "vae").unwrap();
    assert_eq!(found.architecture, "ltxv_vae");
    let config = VaeConfig::new(found.config.get("metadata"), 2).unwrap();
    assert_eq!((config.temporal_ratio(), config.spatial_ratio()), (8, 32));
    let weights = Weights::new(file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
    LtxVideoVae::load(&weights, config).unwrap()
}

fn check(dir: &Path, name: &str, timestep: bool) {
    let file = SafetensorsFile::open(&dir.join(format!("{name}.safetensors"))).unwrap();
    let vae = load(&file);
    assert_eq!(vae.config.timestep_conditioning, timestep);
    let io = SafetensorsFile::open(&dir.join(format!("{name}_io.safetensors"))).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();

    // 11 frames in: ComfyUI keeps the first 1 + 8k.
    let mean = vae.encode(&get("video"));
    let err = reference::max_abs_diff(&mean, &get("mean"));
    assert!(err <= 1e-4, "{name} encode max abs error {err}");

    let decoded = vae.decode(&get("latent"));
    assert_eq!(decoded.size(), [1, 3, 17, 64, 96]);
    let err = reference::max_abs_diff(&decoded, &get("decoded"));
    assert!(err <= 1e-4, "{name} decode max abs error {err}");
}

#[test]
fn ltx2_video_vae_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("ltx_vae_reference.py");
    check(dir.path(), "ltx2_vae", false);
    check(dir.path(), "ltx2_vae_timestep", true);
}

/// One reference transformer: its connectors on the prompt features, then a forward on video and
/// audio latents with per-token video timesteps.
fn check_av(dir: &Path, name: &str) {
    let file = SafetensorsFile::open(&dir.join(format!("{name}.safetensors"))).unwrap();
    let found = component(&file, "diffusion_model").unwrap();
    assert_eq!(found.architecture, "LTXAV");
    let config = AvConfig::from_detected(&found.config).unwrap();
    let weights = Weights::new(&file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
    let model = LtxAvModel::load(&weights, config).unwrap();
    let io = SafetensorsFile::open(&dir.join(format!("{name}_io.safetensors"))).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();

    let context = model.encode_context(&get("text")).unwrap();
    let err = reference::max_abs_diff(&context, &get("context"));
    assert!(err <= 1e-4, "{name} connectors max abs error {err}");

    let audio = get("audio");
    let inputs = AvInputs {
        video: &get("video"),
        audio: Some(&audio),
        video_timestep: &get("video_timestep"),
        audio_timestep: &Tensor::from_slice(&[0.7f32]),
        context: &get("context"),
        frame_rate: 24.0,
    };
    let (video, audio) = model.forward(&inputs).unwrap();
    let err = reference::max_abs_diff(&video, &get("video_out"));
    assert!(err <= 1e-4, "{name} video max abs error {err}");
    let err = reference::max_abs_diff(&audio.unwrap(), &get("audio_out"));
    assert!(err <= 1e-4, "{name} audio max abs error {err}");
}

/// ComfyUI's video-to-audio attention reads the video after the audio-to-video update, and gates
/// audio-to-video at the audio's timestep, where diffusers does neither: each file silences one
/// direction so the other is compared exactly (the script says how). Upstream ComfyUI's own
/// `LTXAVModel`, loaded from the same files, matches these references within 2e-6.
#[test]
fn ltx2_av_transformer_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("ltx_av_reference.py");
    check_av(dir.path(), "ltxav_v2a");
    check_av(dir.path(), "ltxav_a2v");
}

/// `latent_tensor` of a SaveLatent file.
fn saved_latent(path: &Path) -> Tensor {
    let file = SafetensorsFile::open(path).unwrap();
    file.tensor("latent_tensor", Device::Cpu).unwrap()
}

/// EmptyLTXVLatentVideo, LTXVImgToVideoInplace, LTXVImgToVideo (after LTXVConditioning and
/// LTXVPreprocess) and VAEDecode on the 128-channel tiny VAE from models/vae: the first latent
/// frame is the image's encoding, the rest stay empty, and 3 latent frames decode to 17.
#[test]
fn ltxv_latent_nodes_run_through_the_server() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("ltx_vae_reference.py");
    let server = Server::start(&[]);
    let vae_dir = server.dir.join("models").join("vae");
    std::fs::create_dir_all(&vae_dir).unwrap();
    std::fs::copy(
        dir.path().join("ltx2_vae.safetensors"),
        vae_dir.join("ltx2.safetensors"),
    )
    .unwrap();
    let prompt = json!({
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ltx2.safetensors"}},
        "image": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": 0x3366cc}},
        "empty": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 96, "height": 64, "length": 17, "batch_size": 1}},
        "inplace": {"class_type": "LTXVImgToVideoInplace", "inputs": {"vae": ["vae", 0], "image": ["image", 0],
                    "latent": ["empty", 0], "strength": 0.8, "bypass": false}},
        "save_inplace": {"class_type": "SaveLatent", "inputs": {"samples": ["inplace", 0], "filename_prefix": "inplace"}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["inplace", 0], "vae": ["vae", 0]}},
        "frames": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "frames"}},
        "pos": {"class_type": "TestToyConditioning", "inputs": {"value": 0.5}},
        "neg": {"class_type": "TestToyConditioning", "inputs": {"value": 0.1}},
        "cond": {"class_type": "LTXVConditioning", "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "frame_rate": 24.0}},
        "pre": {"class_type": "LTXVPreprocess", "inputs": {"image": ["image", 0], "img_compression": 30}},
        "i2v": {"class_type": "LTXVImgToVideo", "inputs": {"positive": ["cond", 0], "negative": ["cond", 1], "vae": ["vae", 0],
                "image": ["pre", 0], "width": 96, "height": 64, "length": 17, "batch_size": 2, "strength": 1.0}},
        "save_i2v": {"class_type": "SaveLatent", "inputs": {"samples": ["i2v", 2], "filename_prefix": "i2v"}},
    });
    let entry = server.run_ok(&prompt, Duration::from_secs(300));
    assert_eq!(
        entry["outputs"]["frames"]["images"]
            .as_array()
            .unwrap()
            .len(),
        17
    );

    let vae = load(&SafetensorsFile::open(&dir.path().join("ltx2_vae.safetensors")).unwrap());
    let color = Tensor::from_slice(&[0x33 as f32, 0x66 as f32, 0xcc as f32]) / 255.0;
    let video = (color.view([1, 3, 1, 1, 1]) * 2.0 - 1.0).expand([1, 3, 1, 64, 96], false);
    let expected = vae.encode(&video);

    let inplace = saved_latent(&server.output_dir().join("inplace_00001_.latent"));
    assert_eq!(inplace.size(), [1, 128, 3, 2, 3]);
    let err = reference::max_abs_diff(&inplace.narrow(2, 0, 1), &expected);
    assert!(err <= 1e-4, "inplace first frame max abs error {err}");
    assert_eq!(inplace.narrow(2, 1, 2).abs().max().double_value(&[]), 0.0);

    // The H.264 round trip moves the colour a little: close to the plain encoding, not equal.
    let i2v = saved_latent(&server.output_dir().join("i2v_00001_.latent"));
    assert_eq!(i2v.size(), [2, 128, 3, 2, 3]);
    assert_eq!(i2v.get(0), i2v.get(1));
    let first = i2v.narrow(0, 0, 1).narrow(2, 0, 1);
    let err = reference::max_abs_diff(&first, &expected);
    assert!(
        err > 0.0 && err < 0.5,
        "preprocessed first frame differs by {err}"
    );
    assert_eq!(i2v.narrow(2, 1, 2).abs().max().double_value(&[]), 0.0);
}
