//! The SDXL UNet (with ComfyUI's ADM vector) against PyPI diffusers' UNet2DConditionModel at a
//! tiny SDXL-shaped config (tests/python/sdxl_reference.py), float32 on the CPU; and Lotus-D,
//! the same UNet code at an SD 2 layout, with its template through the server; and the unCLIP
//! pooled vector.

mod common;
mod reference;

use std::sync::Arc;
use std::time::Duration;

use common::Server;
use tch::{Device, Kind, Tensor};
use videosdgx::models::diffusion_file::{DiffusionFile, WeightDtype};
use videosdgx::models::loading::{component, component_bytes};
use videosdgx::models::sdxl::lotus::null_prompt;
use videosdgx::models::sdxl::net::adm;
use videosdgx::models::sdxl::net::SdxlNet;
use videosdgx::models::sdxl::unclip::unclip_pooled;
use videosdgx::models::sdxl::unet::Unet;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::manager::Placement;
use videosdgx::runtime::manager::{MemoryConfig, ModelManager};
use videosdgx::runtime::safetensors_file::SafetensorsFile;
use videosdgx::sampling::model::{CondEntry, DiffusionNet};

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

/// Lotus-D: an SD 2-shaped UNet with the 4-wide task embedding (tests/python/lotus_reference.py)
/// loaded as UNETLoader loads it, its one-step output against diffusers' with LotusConditioning's
/// text states; then the official `image_lotus_depth_v1_1` template (workflows/, converted from
/// its UI file) unchanged on those files and a 40×30 picture.
#[test]
fn lotus_matches_diffusers_and_its_template_makes_a_depth_map() {
    let _guard = tch::no_grad_guard();
    let server = Server::start(&[]);
    reference::run_into("lotus_reference.py", &server.dir);
    let models = Arc::new(ModelManager::new(Device::Cpu, MemoryConfig::default()));
    let path = server
        .dir
        .join("models/diffusion_models/lotus-depth-d-v1-1.safetensors");
    let file = DiffusionFile::open(models, &path, WeightDtype::Default).unwrap();
    assert_eq!(file.detected.architecture, "LotusD");
    let net = SdxlNet::open(file).unwrap();
    let io = SafetensorsFile::open(&server.dir.join("lotus_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let cond = CondEntry::new(null_prompt());
    let out = net
        .forward(&get("x"), &Tensor::from_slice(&[999.0f32]), &cond)
        .unwrap();
    let err = reference::max_abs_diff(&out, &get("out"));
    assert!(err <= 1e-4, "Lotus UNet max abs error {err}");
    // ComfyUI's IMG_TO_IMG: the network sees the latent unscaled and its output is the result.
    let sampling = net.sampling();
    let sigma = Tensor::from_slice(&[999.0f32]);
    assert!(sampling.calculate_input(&sigma, &get("x")).equal(&get("x")));
    assert!(sampling
        .calculate_denoised(&sigma, &out, &get("x"))
        .equal(&out));
    assert_eq!(sampling.timestep(999.0), 999.0);

    let path = format!(
        "{}/workflows/image_lotus_depth_v1_1_api.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let prompt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    server.make_inputs(&prompt, 1);
    let entry = server.run_ok(&prompt, Duration::from_secs(300));
    let saved = &entry["outputs"]["9"]["images"][0];
    let image = image::open(
        server
            .output_dir()
            .join(saved["filename"].as_str().unwrap()),
    )
    .unwrap()
    .to_rgb8();
    // VAEEncode crops to whole latent cells: 40×30 → 40×24.
    assert_eq!(image.dimensions(), (40, 24));
}

/// unCLIPConditioning's pooled vector for SDXL (tests/python/unclip_reference.py, which equals
/// ComfyUI's own `unclip_adm` to the bit on the CPU): one image at the template's strength, and
/// three images over two nodes (noise augmentation, a negative strength, the merge's re-noising
/// with the generator's next draw).
#[test]
fn unclip_pooled_matches_comfyui() {
    let dir = reference::fixtures("unclip_reference.py");
    let io = SafetensorsFile::open(&dir.path().join("unclip_io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    for case in ["one", "two"] {
        let seed = get(&format!("{case}_seed")).int64_value(&[0]) as u64;
        let pooled = unclip_pooled(
            &get(&format!("{case}_embeds")),
            &get(&format!("{case}_params")),
            seed,
            Device::Cpu,
        );
        let err = reference::max_abs_diff(&pooled, &get(&format!("{case}_pooled")));
        assert!(err <= 1e-6, "{case}: max abs error {err}");
    }
}
