//! The FLUX.1 transformer against PyPI diffusers' FluxTransformer2DModel at a tiny config
//! (tests/python/flux_reference.py), dev and schnell, float32 on the CPU, loaded through
//! detection from a file with ComfyUI's key names; schnell with all but one block streamed
//! (`--lowvram`).

mod reference;

use std::ffi::OsStr;

use tch::{Device, Kind};
use videosdgx::models::flux::dit::{FluxConfig, FluxInputs, FluxModel, ReferenceMethod};
use videosdgx::models::loading::component;
use videosdgx::models::rope::RopeOptions;
use videosdgx::models::weights::Weights;
use videosdgx::runtime::manager::Placement;
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn flux_transformer_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    // dev (guidance embedding) and schnell (none).
    for (flags, guidance_embed) in [(&[][..], true), (&["--schnell"][..], false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![dir.path().as_os_str()];
        args.extend(flags.iter().map(OsStr::new));
        reference::run("flux_reference.py", &args, b"");
        let file = SafetensorsFile::open(&dir.path().join("flux.safetensors")).unwrap();
        let found = component(&file, "diffusion_model").unwrap();
        assert_eq!(found.architecture, "Flux");
        let config = FluxConfig::from_detected(&found.config).unwrap();
        assert_eq!(
            (
                config.hidden,
                config.heads,
                config.depth,
                config.depth_single,
                config.guidance_embed
            ),
            (256, 2, 2, 2, guidance_embed)
        );
        let mut weights = Weights::new(&file, &found.prefix, Kind::Float, Device::Cpu).unwrap();
        // schnell as `--lowvram` with room for the first block only: the other three are
        // streamed for each use (a no-op copy on the CPU; the computation must not change).
        let first_block = format!("{}double_blocks.0.", found.prefix);
        let block_bytes: usize = file
            .names()
            .filter(|n| n.starts_with(&first_block))
            .map(|n| file.entry(n).unwrap().shape.iter().product::<usize>() * 4)
            .sum();
        if !guidance_embed {
            weights.placement = Placement {
                device: Device::Cpu,
                resident_bytes: block_bytes as u64,
            };
        }
        let model = FluxModel::load(&weights, config).unwrap();
        let resident = if guidance_embed { 4 } else { 1 };
        assert_eq!(model.resident_blocks(), (resident, 4));
        let io = SafetensorsFile::open(&dir.path().join("flux_io.safetensors")).unwrap();
        let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
        let guidance = guidance_embed.then(|| get("guidance"));
        let out = model
            .forward(
                &get("x"),
                &get("sigma"),
                &get("context"),
                Some(&get("pooled")),
                guidance.as_ref(),
            )
            .unwrap();
        let err = reference::max_abs_diff(&out, &get("out"));
        assert!(err <= 1e-4, "{flags:?}: max abs error {err}");
        // ScaleROPE's options move the image tokens' positions.
        let rope = RopeOptions {
            scale: [1.0, 2.0, 1.5],
            shift: [3.0, 0.5, -1.0],
        };
        let pooled = get("pooled");
        let inputs = FluxInputs {
            y: Some(&pooled),
            guidance: guidance.as_ref(),
            rope,
            ..FluxInputs::default()
        };
        let scaled = model
            .forward_with(&get("x"), &get("sigma"), &get("context"), &inputs)
            .unwrap();
        let err = reference::max_abs_diff(&scaled, &get("out_rope"));
        assert!(err <= 1e-4, "{flags:?} with ScaleROPE: max abs error {err}");
        let moved = reference::max_abs_diff(&scaled, &out);
        assert!(moved > 1e-2, "ScaleROPE moved the output by {moved} only");
        // Kontext's reference latents, placed by offset and by index.
        let references = [get("ref_0"), get("ref_1")];
        for (method, name) in [
            (ReferenceMethod::Offset, "offset"),
            (ReferenceMethod::Index, "index"),
        ] {
            let inputs = FluxInputs {
                y: Some(&pooled),
                guidance: guidance.as_ref(),
                references: &references,
                reference_method: method,
                ..FluxInputs::default()
            };
            let kontext = model
                .forward_with(&get("x"), &get("sigma"), &get("context"), &inputs)
                .unwrap();
            let err = reference::max_abs_diff(&kontext, &get(&format!("out_kontext_{name}")));
            assert!(err <= 1e-4, "{flags:?} Kontext {name}: max abs error {err}");
            assert!(reference::max_abs_diff(&kontext, &out) > 1e-2);
        }
    }
}
