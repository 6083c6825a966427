//! The CLIP vision tower against PyPI transformers' CLIPVisionModelWithProjection at a tiny
//! config (tests/python/clip_vision_reference.py), float32 on the CPU: ComfyUI's preprocessing,
//! the penultimate hidden state Wan I2V uses, the last hidden state and the image embedding;
//! and a SigLIP tower with FLUX Redux's projector.

mod reference;

use std::sync::Arc;

use tch::{Device, Kind};
use videosdgx::models::clip_vision::{preprocess, Activation, ClipVision, ClipVisionModel};
use videosdgx::models::flux::redux::Redux;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::manager::{MemoryConfig, ModelManager, Placement};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

/// Squashed images run through the tower as `--lowvram` loads it with no room: every layer
/// streamed from the host (a no-op copy on the CPU, the same code path as on a GPU).
#[test]
fn clip_vision_matches_transformers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("clip_vision_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("clip_vision.safetensors")).unwrap();
    let load = |resident_bytes| {
        let mut weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
        weights.placement = Placement {
            device: Device::Cpu,
            resident_bytes,
        };
        ClipVisionModel::load(&weights, Activation::Gelu).unwrap()
    };
    let (resident, streamed) = (load(u64::MAX), load(0));
    assert_eq!(resident.image_size, 28);
    assert_eq!(streamed.resident_layers(), 0);
    let io = SafetensorsFile::open(&dir.path().join("clip_vision_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    for (tag, crop, model) in [("crop", true, &resident), ("squash", false, &streamed)] {
        let pixels = preprocess(&get("images"), 28, crop, model.mean_std());
        let err = reference::max_abs_diff(&pixels, &get(&format!("pixels_{tag}")));
        assert!(err <= 1e-4, "{tag} preprocess max abs error {err}");
        let (last, penultimate, embeds) = model.forward(&get(&format!("pixels_{tag}"))).unwrap();
        for (name, ours) in [
            ("last", last),
            ("penultimate", penultimate),
            ("embeds", embeds),
        ] {
            let err = reference::max_abs_diff(&ours, &get(&format!("{name}_{tag}")));
            assert!(err <= 1e-4, "{tag} {name} max abs error {err}");
        }
    }
}

/// CLIPVisionLoader on a SigLIP file (sigclip_vision_patch14_384's layout: patch bias, no class
/// token, its unused pooling head) through CLIPVisionEncode's path — SigLIP's mean and std
/// 0.5, center crop — against transformers' SiglipVisionModel; then FLUX Redux's projector on
/// its last hidden state.
#[test]
fn siglip_and_redux_match_transformers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("clip_vision_reference.py");
    let manager = Arc::new(ModelManager::new(Device::Cpu, MemoryConfig::default()));
    let siglip = ClipVision::open(manager, &dir.path().join("siglip_vision.safetensors")).unwrap();
    let io = SafetensorsFile::open(&dir.path().join("siglip_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let out = siglip.encode(&get("images"), true).unwrap();
    for (name, ours) in [
        ("last", &*out.last_hidden_state),
        ("penultimate", &*out.penultimate),
    ] {
        let err = reference::max_abs_diff(ours, &get(name));
        assert!(err <= 1e-4, "SigLIP {name} max abs error {err}");
    }
    // SigLIP's pooled output is its normed states, unprojected.
    assert!(out.image_embeds.equal(&out.last_hidden_state));
    let redux = Redux::open(&dir.path().join("redux.safetensors")).unwrap();
    let tokens = redux.tokens(&out.last_hidden_state, Device::Cpu).unwrap();
    let err = reference::max_abs_diff(&tokens, &get("redux"));
    assert!(err <= 1e-4, "Redux max abs error {err}");
    assert_eq!(tokens.kind(), Kind::Float);
    // Another tower's width is refused, not multiplied.
    let error = redux.tokens(&out.last_hidden_state.narrow(2, 0, 8), Device::Cpu);
    assert!(error.unwrap_err().to_string().contains("SigLIP"));
}
