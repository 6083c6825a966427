//! ColorTransfer's color math against ComfyUI's node written out over PyPI kornia 0.9's Lab
//! conversions (tests/python/color_transfer_reference.py): Reinhard and MKL in Lab and
//! histogram matching, each with per-frame, pooled and one-frame source statistics, against a
//! one- and a two-frame reference, and blended at strength 0.6.

mod reference;

use tch::Device;
use videosdgx::color_transfer::{transfer, Method, SourceStats};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn color_transfer_matches_comfyuis_node_over_kornia() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("color_transfer_reference.py");
    let file = SafetensorsFile::open(&dir.path().join("color_transfer.safetensors")).unwrap();
    let get = |name: &str| file.tensor(name, Device::Cpu).unwrap();
    let (target, reference) = (get("target"), get("ref"));
    let methods = [
        ("reinhard_lab", Method::Reinhard),
        ("mkl_lab", Method::Mkl),
        ("histogram", Method::Histogram),
    ];
    let modes = [
        ("per_frame", SourceStats::PerFrame),
        ("uniform", SourceStats::Uniform),
        ("target_frame", SourceStats::TargetFrame(2)),
    ];
    for (method_name, method) in methods {
        for (mode_name, mode) in modes {
            for frames in [1, 2] {
                let name = format!("{method_name}_{mode_name}_{frames}");
                let ours = transfer(&target, &reference.narrow(0, 0, frames), method, mode, 1.0);
                check(&name, &ours, &get(&name));
            }
        }
        let name = format!("{method_name}_per_frame_2_blend");
        let ours = transfer(&target, &reference, method, SourceStats::PerFrame, 0.6);
        check(&name, &ours, &get(&name));
    }
}

fn check(name: &str, ours: &tch::Tensor, theirs: &tch::Tensor) {
    assert_eq!(ours.size(), theirs.size(), "{name}: shape");
    let err = reference::max_abs_diff(ours, theirs);
    assert!(err <= 1e-4, "{name}: max abs error {err}");
}
