//! TextGenerate's text against transformers' Gemma3ForCausalLM (tests/python/gemma3_reference.py):
//! ComfyUI's Gemma tokenization and chat templates, an image's soft tokens (SigLIP and Gemma 3's
//! projector) in place of `<image_soft_token>`, greedy tokens, ComfyUI's sampling filters
//! with a seeded CPU generator (top-k and whole-vocabulary paths, penalties), a prompt past the
//! 1024-token sliding window, decoded without the special tokens. The reference recomputes the
//! whole sequence per token, so the key/value cache is checked too. One test, so nothing else in
//! this process draws from the CPU generator meanwhile.

mod reference;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tch::{Device, Kind, Tensor};
use videosdgx::models::gemma3::{Gemma3Config, Gemma3Text};
use videosdgx::models::gemma3_vision::Gemma3Vision;
use videosdgx::models::loading::component;
use videosdgx::models::text_encoder::TextEncoder;
use videosdgx::models::text_generation::{Decoding, Sampling};
use videosdgx::models::weights::Weights;
use videosdgx::runtime::manager::{MemoryConfig, ModelManager};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

fn decoding(case: &Value) -> Decoding {
    let s = &case["sampling"];
    if s.is_null() {
        return Decoding::Greedy;
    }
    Decoding::Sampled(Sampling {
        temperature: s["temperature"].as_f64().unwrap(),
        top_k: s["top_k"].as_i64().unwrap(),
        top_p: s["top_p"].as_f64().unwrap(),
        min_p: s["min_p"].as_f64().unwrap(),
        repetition_penalty: s["repetition_penalty"].as_f64().unwrap(),
        presence_penalty: s["presence_penalty"].as_f64().unwrap(),
        seed: s["seed"].as_u64().unwrap(),
    })
}

#[test]
fn gemma3_generates_comfyuis_text() {
    let dir = reference::fixtures("gemma3_reference.py");
    let cases: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("generation.json")).unwrap())
            .unwrap();
    let manager = Arc::new(ModelManager::new(Device::Cpu, MemoryConfig::default()));
    let clip = TextEncoder::ltxav(
        manager,
        &dir.path().join("gemma3.safetensors"),
        &dir.path().join("ltx_projection.safetensors"),
        false,
    )
    .unwrap();
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 5);
    let pictures = SafetensorsFile::open(&dir.path().join("generation_image.safetensors")).unwrap();
    let image = pictures.tensor("image", Device::Cpu).unwrap();
    for case in cases {
        let max_length = case["max_length"].as_u64().unwrap() as usize;
        let mut steps = 0;
        let text = clip
            .generate(
                case["prompt"].as_str().unwrap(),
                case["image"].as_bool().unwrap().then_some(&image),
                case["template"].as_bool().unwrap(),
                max_length,
                &decoding(case),
                &mut |n, max| {
                    assert_eq!((n, max), (steps + 1, max_length as u64));
                    steps = n;
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "{case}");
        assert_eq!(steps as usize, case["tokens"].as_array().unwrap().len());
    }
    // The window case really is past the window, and its logits match token by token: the
    // prompt once, then each token through the cache, which sliding layers see only in part.
    let prompt_tokens = cases[3]["prompt_tokens"].as_i64().unwrap();
    assert!(prompt_tokens > 1024);
    let file = SafetensorsFile::open(&dir.path().join("window_logits.safetensors")).unwrap();
    let (ids, expected) = (
        file.tensor("ids", Device::Cpu).unwrap(),
        file.tensor("logits", Device::Cpu).unwrap(),
    );
    let (model, vision) = gemma3(&dir.path().join("gemma3.safetensors"));
    // The image's soft tokens: ComfyUI's scaling and preprocessing, the SigLIP tower, the
    // projector.
    let soft = vision.embed(&image).unwrap();
    let err = reference::max_abs_diff(&soft, &pictures.tensor("soft_tokens", Device::Cpu).unwrap());
    assert!(err <= 1e-4, "image soft tokens max abs error {err}");
    let _guard = tch::no_grad_guard();
    let total = ids.size()[1];
    let mut cache = model.kv_cache(1, total);
    let mut logits = Vec::new();
    let mut start = 0;
    for end in std::iter::once(prompt_tokens).chain(prompt_tokens + 1..=total) {
        let x = model.embed(&ids.narrow(1, start, end - start), Kind::Float);
        logits.push(model.logits(&model.forward_cached(&x, &mut cache).unwrap()));
        start = end;
    }
    let logits = Tensor::cat(&logits, 0);
    let err = reference::max_abs_diff(&logits, &expected);
    assert!(err <= 1e-4, "cached logits max abs error {err}");
}

fn gemma3(path: &Path) -> (Gemma3Text, Gemma3Vision) {
    let file = SafetensorsFile::open(path).unwrap();
    let found = component(&file, "text_encoder").unwrap();
    let weights = Weights::new(&file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
    let text = Gemma3Text::load(&weights, Gemma3Config::from_weights(&weights).unwrap()).unwrap();
    (text, Gemma3Vision::load(&weights).unwrap())
}
