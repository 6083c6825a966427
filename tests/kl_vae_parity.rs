//! The LDM KL autoencoder (FLUX's AE, SDXL's VAE) against PyPI diffusers' AutoencoderKL at tiny
//! configs (tests/python/kl_vae_reference.py), float32 on the CPU, through detection.

mod reference;

use tch::{Device, Kind};
use videosdgx::models::kl_vae::KlVae;
use videosdgx::models::loading::component;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn kl_autoencoders_match_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("kl_vae_reference.py");
    let io = SafetensorsFile::open(&dir.path().join("kl_vae_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    for tag in ["flux", "sdxl"] {
        let file =
            SafetensorsFile::open(&dir.path().join(format!("{tag}_vae.safetensors"))).unwrap();
        let found = component(&file, "vae").unwrap();
        assert_eq!(found.architecture, format!("{tag}_vae"));
        let weights = Weights::new(&file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
        let vae = KlVae::load(&weights).unwrap();
        let err = reference::max_abs_diff(&vae.encode(&get("image")), &get(&format!("mean_{tag}")));
        assert!(err <= 1e-4, "{tag} encode: max abs error {err}");
        let decoded = vae.decode(&get(&format!("latent_{tag}")));
        let err = reference::max_abs_diff(&decoded, &get(&format!("decoded_{tag}")));
        assert!(err <= 1e-4, "{tag} decode: max abs error {err}");
    }
}
