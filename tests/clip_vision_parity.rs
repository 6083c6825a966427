//! The CLIP vision tower against PyPI transformers' CLIPVisionModelWithProjection at a tiny
//! config (tests/python/clip_vision_reference.py), float32 on the CPU: ComfyUI's preprocessing,
//! the penultimate hidden state Wan I2V uses, the last hidden state and the image embedding.

mod reference;

use tch::{Device, Kind};
use videosdgx::models::clip_vision::{preprocess, Activation, ClipVisionModel};
use videosdgx::models::weights::Weights;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn clip_vision_matches_transformers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("clip_vision_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("clip_vision.safetensors")).unwrap();
    let weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
    let model = ClipVisionModel::load(&weights, Activation::Gelu).unwrap();
    assert_eq!(model.image_size, 28);
    let io = SafetensorsFile::open(&dir.path().join("clip_vision_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    for (tag, crop) in [("crop", true), ("squash", false)] {
        let pixels = preprocess(&get("images"), 28, crop);
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
