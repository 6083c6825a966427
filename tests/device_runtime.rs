//! The runtime against the device's real memory: allocator statistics, weights copied from the
//! mapping to the GPU in slices, and the model manager freeing GPU memory when it evicts. On a
//! machine without a GPU only the CPU halves run.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};
use videosdgx::runtime::accel::{
    allocator_stats, empty_cache, reset_peak, set_sdp_priority, SdpBackend,
};
use videosdgx::runtime::linear::Linear;
use videosdgx::runtime::manager::{MemoryConfig, ModelManager};
use videosdgx::runtime::safetensors_file::SafetensorsFile;

#[test]
fn allocator_stats_follow_allocations_on_a_gpu_and_are_absent_without_one() {
    use SdpBackend::*;
    set_sdp_priority(&[CuDnn, Flash, Efficient, Math, Overrideable]).unwrap();
    if !tch::Cuda::is_available() {
        assert_eq!(allocator_stats(0), None);
        empty_cache();
        return;
    }
    reset_peak(0);
    let before = allocator_stats(0).unwrap();
    let t = Tensor::zeros([16 << 20], (Kind::Float, Device::Cuda(0)));
    let during = allocator_stats(0).unwrap();
    assert!(during.allocated >= before.allocated + (64 << 20));
    assert!(during.peak_allocated >= during.allocated);
    drop(t);
    empty_cache();
    let after = allocator_stats(0).unwrap();
    assert_eq!(after.allocated, before.allocated);
    assert!(
        after.reserved < during.reserved,
        "empty_cache gave the block back"
    );
    assert!(
        after.peak_allocated >= before.allocated + (64 << 20),
        "the peak is kept"
    );
}

/// One 160 MB layer (more than two 64 MB slices) in a file.
fn big_layer(dir: &std::path::Path, name: &str, seed: i64) -> std::path::PathBuf {
    tch::manual_seed(seed);
    let path = dir.join(name);
    let w = Tensor::randn([10240, 8192], (Kind::BFloat16, Device::Cpu));
    Tensor::write_safetensors(&[("layer.weight", &w)], &path).unwrap();
    path
}

#[test]
fn a_gpu_evicts_whole_models_and_gets_their_memory_back() {
    if !tch::Cuda::is_available() {
        return;
    }
    let _guard = tch::no_grad_guard();
    let device = Device::Cuda(0);
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (
        big_layer(dir.path(), "a.safetensors", 1),
        big_layer(dir.path(), "b.safetensors", 2),
    );
    let bytes = 10240 * 8192 * 2;
    let load = |path: &std::path::Path| {
        let file = SafetensorsFile::open(path).unwrap();
        // Sliced copy straight from the mapping equals the CPU copy.
        let on_gpu = file.tensor("layer.weight", device).unwrap();
        assert!(on_gpu
            .to_device(Device::Cpu)
            .equal(&file.tensor("layer.weight", Device::Cpu).unwrap()));
        drop(on_gpu);
        Linear::load(
            &file,
            &BTreeMap::new(),
            "layer",
            (10240, 8192),
            Kind::BFloat16,
            device,
        )
    };
    let config = MemoryConfig {
        budget: Some(bytes * 3 / 2),
        reserve: 0,
        lowvram: false,
        ..Default::default()
    };
    let models = ModelManager::new(device, config);
    let x = Tensor::randn([4, 8192], (Kind::BFloat16, device));
    let a = models.get_or_load("a", bytes, |_| load(&pa)).unwrap();
    let out_a = a.forward(&x).unwrap();
    drop(a);
    empty_cache();
    let with_a = allocator_stats(0).unwrap().allocated;
    let b = models.get_or_load("b", bytes, |_| load(&pb)).unwrap();
    drop(b);
    empty_cache();
    let with_b = allocator_stats(0).unwrap().allocated;
    assert_eq!(with_b, with_a, "a's memory went back before b came in");
    let a = models.get_or_load("a", bytes, |_| load(&pa)).unwrap();
    assert!(
        a.forward(&x).unwrap().equal(&out_a),
        "a reloaded computes the same"
    );
    assert_eq!(models.loads(), 3);
}
