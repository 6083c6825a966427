//! The upscale models against PyPI spandrel 0.4.2, which ComfyUI's UpscaleModelLoader uses
//! (tests/python/upscale_reference.py): ESRGAN in its three key layouts (with Real-ESRGAN's
//! ×4, its pixel-unshuffled ×2 and ESRGAN+), Real-ESRGAN Compact, each through ImageUpscaleWithModel's
//! 512-pixel tiles on an image two tiles wide, a batch of odd sizes and a one-pixel-high image.

mod reference;

use std::collections::BTreeMap;
use std::sync::Arc;

use tch::Device;
use videosdgx::models::upscale::{UpscaleModel, TILE};
use videosdgx::runtime::manager::{MemoryConfig, ModelManager};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn upscale_models_match_spandrel_through_comfyuis_tiling() {
    let _guard = tch::no_grad_guard();
    let dir = tempfile::tempdir().unwrap();
    let scales = reference::run_into("upscale_reference.py", dir.path());
    let scales: BTreeMap<String, i64> = serde_json::from_slice(&scales).unwrap();
    let io = SafetensorsFile::open(&dir.path().join("io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let config = MemoryConfig {
        budget: None,
        reserve: 0,
        lowvram: false,
        ..Default::default()
    };
    let manager = Arc::new(ModelManager::new(Device::Cpu, config));
    assert_eq!(scales.len(), 6);
    for (name, scale) in scales {
        let path = dir.path().join(format!("{name}.safetensors"));
        let model = UpscaleModel::open(manager.clone(), &path).unwrap();
        assert_eq!(model.scale(), scale, "{name}: scale");
        for input in ["wide", "small", "thin"] {
            let mut tiles = 0;
            let ours = model
                .upscale(&get(input), TILE, &mut || {
                    tiles += 1;
                    Ok(())
                })
                .unwrap();
            let expected_tiles = if input == "wide" {
                2
            } else {
                get(input).size()[0]
            };
            assert_eq!(tiles, expected_tiles, "{name} {input}: tiles run");
            let err = reference::max_abs_diff(&ours, &get(&format!("{name}_{input}")));
            assert!(err <= 1e-5, "{name} {input}: max abs error {err}");
        }
    }
}

#[test]
fn a_file_of_another_kind_is_refused_with_the_supported_architectures() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not_an_upscaler.safetensors");
    let t = tch::Tensor::zeros([2, 2], (tch::Kind::Float, Device::Cpu));
    tch::Tensor::write_safetensors(&[("encoder.weight", &t)], &path).unwrap();
    let manager = Arc::new(ModelManager::new(Device::Cpu, MemoryConfig::default()));
    let err = UpscaleModel::open(manager, &path)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not an upscale model"), "{err}");
    assert!(err.contains("ESRGAN"), "{err}");
}
