//! Architecture detection from keys and shapes: tiny files with the real key layout of every
//! family (tests/python/detect_fixtures.py) are named and configured like the real files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

mod common;
mod reference;

use serde_json::{json, Value};
use tch::{Device, Kind};
use videosdgx::models::diffusion_file::{DiffusionFile, WeightDtype};
use videosdgx::runtime::detect::detect;
use videosdgx::runtime::inspect::inspect;
use videosdgx::runtime::manager::{MemoryConfig, ModelManager};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| reference::shared_fixtures("detect_fixtures.py"))
}

fn file(name: &str) -> PathBuf {
    fixtures().join(format!("{name}.safetensors"))
}

/// (component, architecture, prefix) of every detected component.
fn components(name: &str) -> Vec<(String, String, String)> {
    let file = SafetensorsFile::open(&file(name)).unwrap();
    detect(&file)
        .unwrap()
        .into_iter()
        .map(|d| (d.component.to_string(), d.architecture, d.prefix))
        .collect()
}

fn config(name: &str, component: &str) -> Value {
    let file = SafetensorsFile::open(&file(name)).unwrap();
    detect(&file)
        .unwrap()
        .into_iter()
        .find(|d| d.component == component)
        .unwrap()
        .config
}

fn one(component: &str, architecture: &str, prefix: &str) -> Vec<(String, String, String)> {
    vec![(component.into(), architecture.into(), prefix.into())]
}

#[test]
fn every_diffusion_model_family_is_named_with_its_shape_config() {
    let dm = "diffusion_model";
    assert_eq!(components("wan21_t2v"), one(dm, "WAN21_T2V", ""));
    assert_eq!(
        components("wan21_t2v_prefixed"),
        one(dm, "WAN21_T2V", "model.diffusion_model.")
    );
    assert_eq!(components("wan21_i2v"), one(dm, "WAN21_I2V", ""));
    assert_eq!(components("wan22_ti2v_5b"), one(dm, "WAN22_T2V", ""));
    assert_eq!(components("flux_dev"), one(dm, "Flux", ""));
    assert_eq!(components("magi1"), one(dm, "MAGI1", ""));

    let wan = config("wan21_t2v", dm);
    let expected = json!({"dim": 256, "num_heads": 2, "ffn_dim": 512, "num_layers": 2,
                          "in_dim": 16, "out_dim": 16, "model_type": "t2v", "text_dim": 32});
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&wan[key], value, "wan {key}");
    }
    assert_eq!(config("wan21_i2v", dm)["model_type"], "i2v");
    let flux = config("flux_dev", dm);
    assert_eq!(
        (
            flux["hidden_size"].as_u64(),
            flux["depth"].as_u64(),
            flux["depth_single_blocks"].as_u64()
        ),
        (Some(256), Some(2), Some(3))
    );
    assert_eq!(
        (flux["in_channels"].as_u64(), flux["vec_in_dim"].as_u64()),
        (Some(16), Some(40))
    );
    assert_eq!(flux["guidance_embed"], true);
    let magi = config("magi1", dm);
    assert_eq!(magi["num_layers"], 2);
    assert_eq!(magi["num_query_groups"], 1);
    assert_eq!(magi["caption_channels"], 64);
}

#[test]
fn a_diffusion_model_computes_in_the_dtype_the_command_line_forces() {
    let open = |unet_dtype| {
        let config = MemoryConfig {
            unet_dtype,
            ..Default::default()
        };
        let manager = Arc::new(ModelManager::new(Device::Cpu, config));
        DiffusionFile::open(manager, &file("wan21_t2v"), WeightDtype::Default)
            .unwrap()
            .dtype
    };
    // ComfyUI's own choice on the CPU is float32, whatever the class prefers on a GPU.
    assert_eq!(open(None), Kind::Float);
    assert_eq!(open(Some(Kind::BFloat16)), Kind::BFloat16);
    assert_eq!(open(Some(Kind::Half)), Kind::Half);
}

#[test]
fn all_in_one_checkpoints_split_into_their_components() {
    assert_eq!(
        components("sdxl"),
        vec![
            (
                "text_encoder".into(),
                "clip_l".into(),
                "conditioner.embedders.0.transformer.".into()
            ),
            (
                "text_encoder".into(),
                "clip_g".into(),
                "conditioner.embedders.1.model.".into()
            ),
            ("vae".into(), "sdxl_vae".into(), "first_stage_model.".into()),
            (
                "diffusion_model".into(),
                "SDXL".into(),
                "model.diffusion_model.".into()
            ),
        ]
    );
    let unet = config("sdxl", "diffusion_model");
    assert_eq!(unet["model_channels"], 32);
    assert_eq!(unet["channel_mult"], json!([1, 2, 4]));
    assert_eq!(unet["transformer_depth"], json!([0, 0, 2, 2, 3, 3]));
    assert_eq!(unet["context_dim"], 48);
    assert_eq!(unet["adm_in_channels"], 1552);

    let ltx: Vec<(String, String)> = components("ltx2")
        .into_iter()
        .map(|(c, a, _)| (c, a))
        .collect();
    let expected = [
        ("audio_vae", "ltx2_audio_vae"),
        ("diffusion_model", "LTXAV"),
        ("text_projection", "ltx2_text_projection"),
        ("vae", "ltxv_vae"),
        ("vocoder", "ltx2_vocoder"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(c, a)| (c.to_string(), a.to_string()))
        .collect();
    assert_eq!(ltx, expected);
    let dit = config("ltx2", "diffusion_model");
    assert_eq!(dit["num_layers"], 3);
    assert_eq!(dit["attention_head_dim"], 2);
    assert_eq!(dit["cross_attention_dim"], 48);
    // The header's config completes what shapes cannot say.
    assert_eq!(dit["num_attention_heads"], 2);
    assert_eq!(config("ltx2", "audio_vae")["latent_channels"], 8);
    assert_eq!(config("ltx2", "vae")["latent_channels"], 128);
}

#[test]
fn vaes_text_encoders_and_clip_vision_are_named() {
    assert_eq!(components("wan21_vae"), one("vae", "wan21_vae", ""));
    assert_eq!(components("wan22_vae"), one("vae", "wan22_vae", ""));
    assert_eq!(components("flux_ae"), one("vae", "flux_vae", ""));
    assert_eq!(components("magi1_vae"), one("vae", "magi1_vae", ""));
    assert_eq!(config("wan22_vae", "vae")["z_dim"], 48);
    assert_eq!(config("magi1_vae", "vae")["patch_size"], json!([4, 8, 8]));
    assert_eq!(components("umt5_xxl"), one("text_encoder", "umt5", ""));
    let t5 = config("umt5_xxl", "text_encoder");
    assert_eq!(
        (t5["num_layers"].as_u64(), t5["num_heads"].as_u64()),
        (Some(24), Some(2))
    );
    assert_eq!(t5["tokenizer_in_file"], true);
    assert_eq!(components("gemma3"), one("text_encoder", "gemma3", ""));
    assert_eq!(
        components("clip_vision_h"),
        one("clip_vision", "clip_vision_h", "")
    );
}

#[test]
fn an_unknown_file_is_an_error_naming_it_and_what_was_expected() {
    let path = file("unknown");
    let err = detect(&SafetensorsFile::open(&path).unwrap()).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("unknown.safetensors"), "{message}");
    assert!(
        message.contains("Wan 2.1/2.2 DiT") && message.contains("CLIP vision"),
        "{message}"
    );
    assert!(message.contains("foo.bar.weight"), "{message}");
    // inspect still reports what it can, with the reason.
    let report = inspect(&path).unwrap();
    assert_eq!(report["detected"], json!([]));
    assert!(report["detection_error"]
        .as_str()
        .unwrap()
        .contains("not a model"));
}

#[test]
fn the_inspect_command_names_the_architecture() {
    let out = common::videosdgx(&["inspect".as_ref(), file("wan22_ti2v_5b").as_os_str()]);
    let report: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["detected"][0]["architecture"], "WAN22_T2V");
    assert_eq!(report["detected"][0]["config"]["out_dim"], 48);
    assert!(report["detected"][0]["parameters"].as_u64().unwrap() > 0);
}
