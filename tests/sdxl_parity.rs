//! The SDXL UNet (with ComfyUI's ADM vector) against PyPI diffusers' UNet2DConditionModel at a
//! tiny SDXL-shaped config (tests/python/sdxl_reference.py), float32 on the CPU.

mod reference;

use tch::{Device, Kind};
use videosdgx::models::loading::{component, component_bytes};
use videosdgx::models::sdxl::net::adm;
use videosdgx::models::sdxl::unet::Unet;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::manager::Placement;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn sdxl_unet_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("sdxl_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("sdxl_unet.safetensors")).unwrap();
    let found = component(&file, "diffusion_model").unwrap();
    assert_eq!(
        found.config["transformer_depth"],
        serde_json::json!([0, 0, 2, 2])
    );
    let io = SafetensorsFile::open(&dir.path().join("sdxl_unet_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let y = adm(&get("pooled"), &get("sizes").narrow(0, 0, 1));
    // Resident, and as `--lowvram` loads it with room for half the weights: the layers past
    // that are streamed from the host (a no-op copy on the CPU, the GPU's code path).
    let half = component_bytes(&file, &found.prefix, Kind::Float) / 2;
    for resident_bytes in [u64::MAX, half] {
        let mut weights = Weights::new(&file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
        weights.placement = Placement {
            device: Device::Cpu,
            resident_bytes,
        };
        let unet = Unet::load(&weights).unwrap();
        let (resident, all) = unet.resident_layers();
        assert_eq!(
            resident == all,
            resident_bytes == u64::MAX,
            "{resident} of {all}"
        );
        let eps = unet
            .forward(&get("x"), &get("t"), &get("context"), Some(&y))
            .unwrap();
        let err = reference::max_abs_diff(&eps, &get("eps"));
        assert!(
            err <= 1e-4,
            "{resident} of {all} layers resident: max abs error {err}"
        );
    }
}
