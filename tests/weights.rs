//! Weight files as ComfyUI reads them: tiny fixtures written by PyPI torch + safetensors
//! (tests/python/weight_fixtures.py), loaded by the real loader and compared bit for bit.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use videosdgx::runtime::gguf::GgufFile;
use videosdgx::runtime::inspect::inspect;
use videosdgx::runtime::linear::Linear;
use videosdgx::runtime::lora::{load_lora, unet_key_map};
use videosdgx::runtime::quant::{dequantize_nvfp4, input_scale, quantized_layers, LayerQuant};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

mod common;
mod reference;

const P: &str = "model.diffusion_model.";

fn fixtures(dir: &Path) -> Value {
    serde_json::from_slice(&reference::run_into("weight_fixtures.py", dir)).unwrap()
}

/// A layer's weight as the emulated path multiplies it: loaded in its stored format, then
/// dequantized to `kind`.
fn load_weight(
    file: &SafetensorsFile,
    layers: &BTreeMap<String, LayerQuant>,
    layer: &str,
    shape: (i64, i64),
    kind: Kind,
    device: Device,
) -> anyhow::Result<Tensor> {
    Linear::load(file, layers, layer, shape, kind, device)?.dequantized(kind)
}

fn bits(t: &Tensor) -> Vec<i64> {
    let f = t
        .to_kind(Kind::Float)
        .contiguous()
        .view_dtype(Kind::Int)
        .flatten(0, -1);
    Vec::<i64>::try_from(f.to_kind(Kind::Int64)).unwrap()
}

fn expected_bits(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_i64().unwrap())
        .collect()
}

fn fp8(format: &str, full: bool) -> LayerQuant {
    let mut options = json!({"format": format});
    if full {
        options["full_precision_matrix_mult"] = json!(true);
    }
    LayerQuant {
        format: format.into(),
        full_precision_matrix_mult: full,
        options,
    }
}

#[test]
fn formats_load_and_dequantize_like_comfyui() {
    let dir = tempfile::tempdir().unwrap();
    let reference = fixtures(dir.path());
    let open = |name: &str| SafetensorsFile::open(&dir.path().join(name)).unwrap();

    // Plain fp32/fp16/bf16 tensors: stored kinds, exact values, header metadata.
    let plain = open("plain.safetensors");
    for (name, want) in reference["plain"].as_object().unwrap() {
        assert_eq!(
            bits(&plain.tensor(name, Device::Cpu).unwrap()),
            expected_bits(want),
            "{name}"
        );
    }
    let q = plain
        .tensor(&format!("{P}blocks.0.attn.q.weight"), Device::Cpu)
        .unwrap();
    assert_eq!((q.kind(), q.size()), (Kind::BFloat16, vec![8, 6]));
    assert_eq!(plain.metadata()["modelspec.title"], "tiny");
    assert!(quantized_layers(&plain, P).unwrap().is_empty());

    // Legacy scaled fp8: the marker turns every scale_weight into an e4m3 layer; a two-element
    // marker also asks for full-precision matmuls; unit input scales are dropped.
    let scaled = open("scaled_fp8.safetensors");
    let layers = quantized_layers(&scaled, P).unwrap();
    let names: Vec<&str> = layers.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [format!("{P}blocks.0.ffn.0"), format!("{P}blocks.0.ffn.2")]
    );
    assert!(layers.values().all(|l| *l == fp8("float8_e4m3fn", false)));
    let full = quantized_layers(&open("scaled_fp8_full_precision.safetensors"), P).unwrap();
    assert!(full.values().all(|l| *l == fp8("float8_e4m3fn", true)));
    assert!(input_scale(&scaled, &format!("{P}blocks.0.ffn.0"))
        .unwrap()
        .is_none());
    let kept = input_scale(&scaled, &format!("{P}blocks.0.ffn.2"))
        .unwrap()
        .unwrap();
    assert_eq!(kept.double_value(&[]), 0.5);
    let want = &reference["scaled_fp8"];
    for (layer, shape, kind, key) in [
        ("blocks.0.ffn.0", (8, 6), Kind::BFloat16, "blocks.0.ffn.0"),
        ("blocks.0.ffn.2", (4, 8), Kind::BFloat16, "blocks.0.ffn.2"),
        ("blocks.0.ffn.2", (4, 8), Kind::Half, "blocks.0.ffn.2/fp16"),
        ("blocks.0.proj", (6, 6), Kind::BFloat16, "blocks.0.proj"),
    ] {
        let w = load_weight(
            &scaled,
            &layers,
            &format!("{P}{layer}"),
            shape,
            kind,
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(w.kind(), kind);
        assert_eq!(bits(&w), expected_bits(&want[key]), "{key}");
    }
    // A module expecting another shape gets an error naming the layer.
    let err = load_weight(
        &scaled,
        &layers,
        &format!("{P}blocks.0.ffn.0"),
        (6, 8),
        Kind::BFloat16,
        Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("blocks.0.ffn.0") && err.contains("expected [6, 8]"),
        "{err}"
    );

    // The per-layer scheme, from the header table or from comfy_quant tensors.
    for file in ["mixed_header.safetensors", "mixed_tensor.safetensors"] {
        let mixed = open(file);
        let layers = quantized_layers(&mixed, P).unwrap();
        assert_eq!(
            layers,
            BTreeMap::from([(format!("{P}proj"), fp8("float8_e5m2", false))]),
            "{file}"
        );
        let w = load_weight(
            &mixed,
            &layers,
            &format!("{P}proj"),
            (6, 4),
            Kind::BFloat16,
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            bits(&w),
            expected_bits(&reference["mixed"]["proj"]),
            "{file}"
        );
    }

    // NVFP4 with padded rows and columns and swizzled scales over several 128×4 tiles.
    let nvfp4 = open("nvfp4.safetensors");
    let layers = quantized_layers(&nvfp4, P).unwrap();
    assert_eq!(layers[&format!("{P}ffn")].format, "nvfp4");
    for (kind, key) in [(Kind::Float, "f32"), (Kind::BFloat16, "bf16")] {
        let w = load_weight(
            &nvfp4,
            &layers,
            &format!("{P}ffn"),
            (150, 90),
            kind,
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            bits(&w),
            expected_bits(&reference["nvfp4"][key]),
            "nvfp4 {key}"
        );
    }

    // A packed row that does not hold whole blocks is an error, not a panic.
    let odd = Tensor::zeros([16, 4], (Kind::Uint8, Device::Cpu));
    let scales = Tensor::zeros([128, 4], (Kind::Float, Device::Cpu));
    let err = dequantize_nvfp4(&odd, &scales, &Tensor::from(1.0f32), (16, 8), Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(err.contains("whole blocks"), "{err}");

    // Not a safetensors file: an error naming it.
    let bogus = dir.path().join("bogus.safetensors");
    std::fs::write(&bogus, b"not a weight file").unwrap();
    let err = SafetensorsFile::open(&bogus).err().unwrap().to_string();
    assert!(
        err.contains("bogus.safetensors") && err.contains("not a safetensors file"),
        "{err}"
    );
}

#[test]
fn loras_merge_like_comfyui() {
    let dir = tempfile::tempdir().unwrap();
    let reference = fixtures(dir.path());
    let base = SafetensorsFile::open(&dir.path().join("lora_base.safetensors")).unwrap();
    let lora = SafetensorsFile::open(&dir.path().join("lora.safetensors")).unwrap();
    let key_map = unet_key_map(base.names().map(String::as_str));
    assert_eq!(
        key_map["lora_unet_blocks_0_attn_q"],
        "diffusion_model.blocks.0.attn.q.weight"
    );
    let loaded = load_lora(&lora, &key_map).unwrap();
    let patched: Vec<&String> = loaded.patches.keys().collect();
    assert_eq!(
        patched,
        [
            "diffusion_model.blocks.0.attn.k.weight",
            "diffusion_model.blocks.0.attn.q.weight"
        ]
    );
    // Keys for modules the model does not have are reported, not silently dropped.
    assert_eq!(
        loaded.unused,
        ["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"]
    );
    let strength = reference["lora"]["strength"].as_f64().unwrap();
    for (key, patch) in &loaded.patches {
        let weight = base.tensor(key, Device::Cpu).unwrap();
        let merged = patch.apply(&weight, strength).unwrap();
        assert_eq!(merged.kind(), weight.kind(), "{key}");
        assert_eq!(
            bits(&merged),
            expected_bits(&reference["lora"][key]),
            "{key}"
        );
    }
}

#[test]
fn gguf_block_formats_dequantize_like_gguf_py() {
    let dir = tempfile::tempdir().unwrap();
    let reference = fixtures(dir.path());
    let file = GgufFile::open(&dir.path().join("tiny.gguf")).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(file.metadata["general.name"], "tiny");
    assert_eq!(file.metadata["general.architecture"], "wan");
    assert_eq!(file.metadata["wan.block_count"], 1);
    let expected = reference["gguf"].as_object().unwrap();
    assert_eq!(file.tensors.len(), expected.len());
    for (name, want) in expected {
        let t = file.dequantize(name).unwrap();
        let cols = if name.contains("_k.") { 512 } else { 64 };
        assert_eq!(t.size(), [6, cols], "{name}");
        assert_eq!(bits(&t), expected_bits(want), "{name}");
    }
    let report = inspect(&dir.path().join("tiny.gguf")).unwrap();
    assert_eq!(report["format"], "gguf");
    assert_eq!(report["parameters"], 8 * 6 * 64 + 3 * 6 * 512);
    assert_eq!(report["storage"]["Q5_1"], 1);
    let err = GgufFile::open(&dir.path().join("plain.safetensors"))
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("not a GGUF file"), "{err:#}");
}

#[test]
fn inspect_reports_components_storage_and_quantization() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    let report = inspect(&dir.path().join("scaled_fp8.safetensors")).unwrap();
    assert_eq!(report["tensors"], 8);
    assert_eq!(report["components"], json!({P: 8}));
    assert_eq!(
        report["storage"],
        json!({"BF16": 1, "F32": 4, "F8_E4M3": 3})
    );
    assert_eq!(report["quantized_layers"], json!({"float8_e4m3fn": 2}));
    assert_eq!(report["parameters"], 8 * 6 + 4 * 8 + 6 * 6 + 4);

    // The CLI prints the same report.
    let plain = dir.path().join("plain.safetensors");
    let out = common::videosdgx(&["inspect".as_ref(), plain.as_os_str()]);
    let printed: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        printed["components"],
        json!({"": 1, "first_stage_model.": 1, P: 3})
    );
    assert_eq!(printed["metadata"]["format"], "pt");
}
