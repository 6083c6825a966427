//! CLIP text encoders and CLIP's BPE tokenizer against PyPI transformers
//! (tests/python/clip_text_reference.py, clip_tokenizer_reference.py), float32 on the CPU.

mod reference;

use tch::{Device, Kind, Tensor};
use videosdgx::models::clip_text::{ClipLayer, ClipTextModel};
use videosdgx::models::clip_tokenizer;
use videosdgx::models::clip_vision::Activation;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

const END: i64 = 999;

#[test]
fn clip_text_towers_match_transformers_in_both_layouts() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("clip_text_reference.py");
    let io = SafetensorsFile::open(&dir.path().join("clip_text_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    for (tag, activation) in [("hf", Activation::QuickGelu), ("open", Activation::Gelu)] {
        let file =
            SafetensorsFile::open(&dir.path().join(format!("clip_{tag}.safetensors"))).unwrap();
        let weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
        let model = ClipTextModel::load(&weights, activation).unwrap();
        assert_eq!(model.num_layers(), 3);
        let ids = get(&format!("ids_{tag}"));
        let check = |name: &str, ours: &Tensor| {
            let err = reference::max_abs_diff(ours, &get(&format!("{name}_{tag}")));
            assert!(err <= 1e-4, "{tag} {name}: max abs error {err}");
        };
        let last = model.forward(&ids, END, ClipLayer::Last).unwrap();
        check("last", &last.hidden);
        check("pooled", &last.pooled);
        check("projected", last.projected.as_ref().unwrap());
        let penultimate = ClipLayer::Hidden {
            index: -2,
            final_norm: false,
        };
        check(
            "penultimate",
            &model.forward(&ids, END, penultimate).unwrap().hidden,
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
