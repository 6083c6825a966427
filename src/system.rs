//! Host memory and the compute device, for `/system_stats`.

use std::sync::OnceLock;

use serde_json::{json, Value as Json};

/// `(total, available)` host RAM in bytes, from /proc/meminfo.
pub fn ram() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// A CUDA device as the driver reports it.
pub struct CudaDevice {
    pub name: String,
    pub total: u64,
    pub free: u64,
}

/// Device facts through the CUDA driver API (libtorch exposes no name or free-memory call).
pub fn cuda_device(index: i32) -> Option<CudaDevice> {
    let driver = crate::runtime::cuda_driver::driver()?;
    let index = usize::try_from(index).ok()?;
    let name = driver.device_name(index).ok()?;
    let (free, total) = driver.memory(index).unwrap_or((0, 0));
    Some(CudaDevice { name, total, free })
}

/// One `CUdevice_attribute` of device `index` through the CUDA driver API.
fn device_attribute(index: usize, attribute: i32) -> Option<i32> {
    crate::runtime::cuda_driver::driver()?
        .attribute(index, attribute)
        .ok()
}

/// The device's compute capability `(major, minor)`, e.g. `(9, 0)` for H100, `(12, 1)` for GB10.
pub fn compute_capability(index: usize) -> Option<(i32, i32)> {
    // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
    Some((device_attribute(index, 75)?, device_attribute(index, 76)?))
}

/// The compute capability of torch device `device`, read once per process; `None` off CUDA.
pub fn device_capability(device: tch::Device) -> Option<(i32, i32)> {
    static CAPABILITIES: OnceLock<Vec<Option<(i32, i32)>>> = OnceLock::new();
    let tch::Device::Cuda(index) = device else {
        return None;
    };
    let capabilities = CAPABILITIES.get_or_init(|| {
        (0..tch::Cuda::device_count().max(0) as usize)
            .map(compute_capability)
            .collect()
    });
    capabilities.get(index).copied().flatten()
}

/// Whether the GPU shares physical memory with the CPU: integrated (GB10) or reading pageable
/// host memory through the host page tables (Grace coherent systems).
pub fn unified_memory(index: usize) -> bool {
    // CU_DEVICE_ATTRIBUTE_INTEGRATED, _PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES
    device_attribute(index, 18) == Some(1) || device_attribute(index, 100) == Some(1)
}

/// The `devices` list of `/system_stats`: the primary torch device.
pub fn devices(cpu_only: bool) -> Json {
    if !cpu_only && tch::Cuda::is_available() {
        if let Some(d) = cuda_device(0) {
            // ComfyUI: free = the driver's free memory plus the allocator's cached free blocks.
            let torch = crate::runtime::accel::allocator_stats(0).unwrap_or_default();
            let torch_free = torch.reserved.saturating_sub(torch.allocated);
            return json!([{"name": format!("cuda:0 {} : native", d.name), "type": "cuda", "index": 0,
                           "vram_total": d.total, "vram_free": d.free + torch_free,
                           "torch_vram_total": torch.reserved, "torch_vram_free": torch_free}]);
        }
    }
    let (total, free) = ram();
    json!([{"name": "cpu", "type": "cpu", "index": null, "vram_total": total, "vram_free": free,
             "torch_vram_total": total, "torch_vram_free": free}])
}
