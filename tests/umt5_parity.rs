//! The UMT5 encoder against PyPI transformers' UMT5EncoderModel at a tiny config (random
//! weights in ComfyUI's single-file layout, tests/python/umt5_reference.py), float32 on the CPU.

mod reference;

use tch::{Device, Kind};
use videosdgx::models::t5::{T5Config, T5Encoder};
use videosdgx::models::weights::Weights;
use videosdgx::runtime::detect::detect;
use videosdgx::runtime::manager::Placement;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn umt5_with_streamed_blocks_matches_transformers_and_zeroes_padding_like_comfyui() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("umt5_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("umt5.safetensors")).unwrap();
    let detected = detect(&file).unwrap();
    assert_eq!(detected[0].architecture, "umt5");
    let mut weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
    let config = T5Config::from_detected(&detected[0].config, &weights).unwrap();
    assert_eq!(
        (config.num_heads, config.inner_dim, config.num_layers),
        (4, 32, 3)
    );
    // `--lowvram` with room for one block: the others are kept on the host and streamed for
    // each use (on the CPU the copy is a no-op; it runs the streaming code all the same).
    let block_bytes: usize = file
        .names()
        .filter(|n| n.starts_with("encoder.block.0."))
        .map(|n| file.entry(n).unwrap().shape.iter().product::<usize>() * 4)
        .sum();
    weights.placement = Placement {
        device: Device::Cpu,
        resident_bytes: block_bytes as u64,
    };
    let encoder = T5Encoder::load(&weights, config).unwrap();
    assert_eq!(encoder.resident_blocks(), 1);

    let io = SafetensorsFile::open(&dir.path().join("umt5_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let (ids, mask, expected) = (get("ids"), get("mask"), get("hidden"));
    let hidden = encoder.forward(&ids, Some(&mask), None).unwrap();
    assert_eq!(hidden.size(), [2, 150, 32]);
    // transformers leaves padded positions as computed; ComfyUI zeroes them (zero_out_masked).
    let keep = mask.to_kind(Kind::Float).unsqueeze(-1);
    let err = ((&hidden - &expected) * &keep)
        .abs()
        .max()
        .double_value(&[]);
    assert!(err <= 1e-4, "max abs error {err}");
    let padded = (&hidden * (keep.neg() + 1.0)).abs().max().double_value(&[]);
    assert_eq!(padded, 0.0);
    // The unpadded prompt needs no mask at all.
    let first = encoder.forward(&ids.narrow(0, 0, 1), None, None).unwrap();
    let err = (first - expected.narrow(0, 0, 1))
        .abs()
        .max()
        .double_value(&[]);
    assert!(err <= 1e-4, "without mask: {err}");
}

#[test]
fn t5_v1_1_matches_transformers_unmasked_as_flux_runs_it() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("umt5_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("t5.safetensors")).unwrap();
    let detected = detect(&file).unwrap();
    assert_eq!(detected[0].architecture, "t5");
    let weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
    let config = T5Config::from_detected(&detected[0].config, &weights).unwrap();
    let encoder = T5Encoder::load(&weights, config).unwrap();
    let io = SafetensorsFile::open(&dir.path().join("umt5_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let hidden = encoder.forward(&get("ids"), None, None).unwrap();
    let err = reference::max_abs_diff(&hidden, &get("t5_hidden"));
    assert!(err <= 1e-4, "max abs error {err}");
}

/// ComfyUI runs T5 in float32 with the weights held in the file's half precision: holding the
/// Linears and the token table in fp16 changes nothing but memory when the file is fp16.
#[test]
fn umt5_held_in_fp16_computes_exactly_what_float32_weights_compute() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("umt5_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("umt5.safetensors")).unwrap();
    let half: Vec<(String, tch::Tensor)> = file
        .names()
        .map(|n| {
            let t = file.tensor(n, Device::Cpu).unwrap();
            let t = if t.is_floating_point() {
                t.to_kind(Kind::Half)
            } else {
                t
            };
            (n.to_string(), t)
        })
        .collect();
    let path = dir.path().join("umt5_fp16.safetensors");
    tch::Tensor::write_safetensors(&half, &path).unwrap();
    let file = SafetensorsFile::open(&path).unwrap();
    let config = &detect(&file).unwrap()[0].config;
    let load = |held: Kind| {
        let mut weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
        weights.linear_dtype = held;
        T5Encoder::load(&weights, T5Config::from_detected(config, &weights).unwrap()).unwrap()
    };
    let io = SafetensorsFile::open(&dir.path().join("umt5_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let (ids, mask) = (get("ids"), get("mask"));
    let wide = load(Kind::Float).forward(&ids, Some(&mask), None).unwrap();
    let held = load(Kind::Half).forward(&ids, Some(&mask), None).unwrap();
    assert_eq!(held.kind(), Kind::Float);
    assert!(held.equal(&wide), "fp16-held weights changed the output");
    // The fp16 file is the reference's weights rounded, so it stays close to transformers.
    let keep = mask.to_kind(Kind::Float).unsqueeze(-1);
    let expected = get("hidden") * &keep;
    let relative =
        (&held * &keep - &expected).norm().double_value(&[]) / expected.norm().double_value(&[]);
    assert!(
        relative > 0.0 && relative <= 1e-2,
        "relative error {relative}"
    );
}
