//! The Wan VAEs against PyPI diffusers' AutoencoderKLWan at tiny configs (random weights in
//! ComfyUI's layout, tests/python/wan_vae_reference.py), float32 on the CPU. diffusers encodes
//! in chunks of 4 frames and decodes one latent frame at a time; we stream 4 / 2 — equal results
//! show the causal streaming is exact.

mod reference;

use tch::{Device, Kind};
use videosdgx::models::wan::vae::WanVae;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

/// Loads `name` from the fixtures and checks encode and decode against diffusers.
fn check(dir: &std::path::Path, name: &str, z_dim: i64, ratio: i64) {
    let file = SafetensorsFile::open(&dir.join(format!("{name}.safetensors"))).unwrap();
    let weights = Weights::new(&file, "", Kind::Float, Device::Cpu).unwrap();
    let vae = WanVae::load(&weights).unwrap();
    assert_eq!((vae.z_dim, vae.spatial_ratio()), (z_dim, ratio));
    let io = SafetensorsFile::open(&dir.join(format!("{name}_io.safetensors"))).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();

    let mean = vae.encode(&get("video"));
    let err = reference::max_abs_diff(&mean, &get("mean"));
    assert!(err <= 1e-4, "{name} encode max abs error {err}");

    let decoded = vae.decode(&get("latent"));
    let err = reference::max_abs_diff(&decoded, &get("decoded"));
    assert!(err <= 1e-4, "{name} decode max abs error {err}");
}

#[test]
fn wan_vaes_match_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("wan_vae_reference.py");
    check(dir.path(), "wan21_vae", 4, 8);
    check(dir.path(), "wan22_vae", 6, 16);
}
