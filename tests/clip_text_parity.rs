//! CLIP text encoders and CLIP's BPE tokenizer against PyPI transformers
//! (tests/python/clip_text_reference.py, clip_tokenizer_reference.py,
//! clip_lora_embedding_reference.py), float32 on the CPU.

mod reference;

use std::sync::Arc;

use tch::{Device, Kind, Tensor};
use videosdgx::models::clip_text::{ClipLayer, ClipTextModel};
use videosdgx::models::clip_tokenizer;
use videosdgx::models::clip_vision::Activation;
use videosdgx::models::text_encoder::TextEncoder;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::manager::{MemoryConfig, ModelManager, Placement};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

const END: i64 = 999;

#[test]
fn clip_text_towers_match_transformers_in_both_layouts() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("clip_text_reference.py");
    let io = SafetensorsFile::open(&dir.path().join("clip_text_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    // The OpenCLIP tower as `--lowvram` loads it with no room: every layer streamed.
    for (tag, activation, resident_bytes) in [
        ("hf", Activation::QuickGelu, u64::MAX),
        ("open", Activation::Gelu, 0),
    ] {
        let file =
            SafetensorsFile::open(&dir.path().join(format!("clip_{tag}.safetensors"))).unwrap();
        let mut weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
        weights.placement = Placement {
            device: Device::Cpu,
            resident_bytes,
        };
        let model = ClipTextModel::load(&weights, activation).unwrap();
        assert_eq!(model.num_layers(), 3);
        let all_or_none = if resident_bytes == 0 { 0 } else { 3 };
        assert_eq!(model.resident_layers(), all_or_none);
        let ids = get(&format!("ids_{tag}"));
        let check = |name: &str, ours: &Tensor| {
            let err = reference::max_abs_diff(ours, &get(&format!("{name}_{tag}")));
            assert!(err <= 1e-4, "{tag} {name}: max abs error {err}");
        };
        let last = model.forward(&ids, END, ClipLayer::Last, None).unwrap();
        check("last", &last.hidden);
        check("pooled", &last.pooled);
        check("projected", last.projected.as_ref().unwrap());
        let penultimate = ClipLayer::Hidden {
            index: -2,
            final_norm: false,
        };
        check(
            "penultimate",
            &model.forward(&ids, END, penultimate, None).unwrap().hidden,
        );
    }
}

#[test]
fn clip_tokenizer_matches_transformers() {
    let tokenizer = clip_tokenizer::shared().expect("make setup installs open-clip-torch");
    let prompts = [
        "a photograph of an astronaut riding a horse",
        "A CAT, sitting   on the mat!!  It's 4k; they're ready.",
        "café crème brûlée, naïve — “quotes” and emoji 🐱🚀",
        "   leading and trailing\tspaces\n",
        "numbers 1234567 and v2.5 and 3.14159",
        "<|startoftext|>special<|endoftext|> tokens",
        "日本語のテキスト 中文 한국어",
        "hyphen-ated under_score slash/path (parens) [brackets] {braces}",
    ];
    let json = serde_json::to_vec(&prompts).unwrap();
    let path = tokenizer_file();
    let out = reference::run("clip_tokenizer_reference.py", &[path.as_os_str()], &json);
    let expected: Vec<Vec<u32>> = serde_json::from_slice(&out).unwrap();
    for (prompt, want) in prompts.iter().zip(expected) {
        assert_eq!(tokenizer.encode(prompt), want, "{prompt:?}");
    }
}

fn tokenizer_file() -> std::path::PathBuf {
    videosdgx::venv::site_packages()
        .into_iter()
        .map(|s| s.join("open_clip/bpe_simple_vocab_16e6.txt.gz"))
        .find(|p| p.is_file())
        .expect("open-clip-torch installed")
}

/// SDXL's CLIP value (CLIP-L in transformers' layout, CLIP-G in OpenCLIP's, one checkpoint)
/// with a kohya LoRA's text-encoder half and textual-inversion embeddings, against transformers
/// with the LoRA merged and the embeddings as extra vocabulary rows
/// (tests/python/clip_lora_embedding_reference.py).
#[test]
fn sdxl_text_encoders_take_loras_and_embeddings_like_transformers() {
    let _guard = tch::no_grad_guard();
    let tokenizer = clip_tokenizer::shared().expect("make setup installs open-clip-torch");
    let words = serde_json::json!({
        "before": tokenizer.encode("a photo of"),
        "after": tokenizer.encode("cat"),
    });
    let dir = tempfile::tempdir().unwrap();
    reference::run(
        "clip_lora_embedding_reference.py",
        &[dir.path().as_os_str()],
        &serde_json::to_vec(&words).unwrap(),
    );
    let expected = SafetensorsFile::open(&dir.path().join("expected.safetensors")).unwrap();
    let config = MemoryConfig {
        budget: None,
        reserve: 0,
        lowvram: false,
        ..Default::default()
    };
    let manager = Arc::new(ModelManager::new(Device::Cpu, config));
    let clip = TextEncoder::sdxl(
        manager,
        &dir.path().join("sdxl_text.safetensors"),
        "conditioner.embedders.0.transformer.",
        "conditioner.embedders.1.model.",
    )
    .unwrap()
    .with_embedding_dirs(vec![dir.path().join("embeddings")]);
    let with_lora = clip.with_lora(&dir.path().join("te_lora.safetensors"), 0.7);
    for (case, encoder, prompt) in [
        ("ti", &clip, "a photo of embedding:tiny_ti cat"),
        ("sd15", &clip, "a photo of embedding:sd15 cat"),
        ("ti_lora", &with_lora, "a photo of embedding:tiny_ti cat"),
    ] {
        let entry = encoder.encode(prompt).unwrap();
        let want = |n: &str| {
            expected
                .tensor(&format!("{case}_{n}"), Device::Cpu)
                .unwrap()
        };
        let err = reference::max_abs_diff(&entry.context, &want("context"));
        assert!(err <= 1e-4, "{case} context: max abs error {err}");
        let pooled = entry.pooled.as_ref().unwrap();
        let err = reference::max_abs_diff(pooled, &want("pooled"));
        assert!(err <= 1e-4, "{case} pooled: max abs error {err}");
    }
    // The LoRA changes the towers, and a missing embedding is dropped, not an error.
    let plain = clip.encode("a photo of embedding:tiny_ti cat").unwrap();
    let patched = with_lora
        .encode("a photo of embedding:tiny_ti cat")
        .unwrap();
    assert!(reference::max_abs_diff(&plain.context, &patched.context) > 1e-2);
    let missing = clip.encode("a photo of embedding:nowhere cat").unwrap();
    let without = clip.encode("a photo of cat").unwrap();
    assert_eq!(
        reference::max_abs_diff(&missing.context, &without.context),
        0.0
    );
}
