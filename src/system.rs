//! Host memory and the compute device, for `/system_stats`.

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
    type Init = unsafe extern "C" fn(u32) -> i32;
    type DeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type GetName = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
    type Retain = unsafe extern "C" fn(*mut *mut std::ffi::c_void, i32) -> i32;
    type Push = unsafe extern "C" fn(*mut std::ffi::c_void) -> i32;
    type Pop = unsafe extern "C" fn(*mut *mut std::ffi::c_void) -> i32;
    type MemInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // SAFETY: the symbols are the CUDA driver API's, called with the signatures it documents.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").ok()?;
        let init: libloading::Symbol<Init> = lib.get(b"cuInit").ok()?;
        let device_get: libloading::Symbol<DeviceGet> = lib.get(b"cuDeviceGet").ok()?;
        let get_name: libloading::Symbol<GetName> = lib.get(b"cuDeviceGetName").ok()?;
        let retain: libloading::Symbol<Retain> = lib.get(b"cuDevicePrimaryCtxRetain").ok()?;
        let push: libloading::Symbol<Push> = lib.get(b"cuCtxPushCurrent_v2").ok()?;
        let pop: libloading::Symbol<Pop> = lib.get(b"cuCtxPopCurrent_v2").ok()?;
        let mem_info: libloading::Symbol<MemInfo> = lib.get(b"cuMemGetInfo_v2").ok()?;
        if init(0) != 0 {
            return None;
        }
        let mut dev = 0;
        if device_get(&mut dev, index) != 0 {
            return None;
        }
        let mut name = [0 as std::ffi::c_char; 256];
        get_name(name.as_mut_ptr(), 256, dev);
        let name = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        let mut ctx = std::ptr::null_mut();
        let (mut free, mut total) = (0usize, 0usize);
        if retain(&mut ctx, dev) == 0 && push(ctx) == 0 {
            mem_info(&mut free, &mut total);
            let mut popped = std::ptr::null_mut();
            pop(&mut popped);
        }
        Some(CudaDevice {
            name,
            total: total as u64,
            free: free as u64,
        })
    }
}

/// One `CUdevice_attribute` of device `index` through the CUDA driver API.
fn device_attribute(index: usize, attribute: i32) -> Option<i32> {
    type Init = unsafe extern "C" fn(u32) -> i32;
    type DeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type Attribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
    // SAFETY: the symbols are the CUDA driver API's, called with the signatures it documents.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").ok()?;
        let init: libloading::Symbol<Init> = lib.get(b"cuInit").ok()?;
        let device_get: libloading::Symbol<DeviceGet> = lib.get(b"cuDeviceGet").ok()?;
        let get: libloading::Symbol<Attribute> = lib.get(b"cuDeviceGetAttribute").ok()?;
        let mut dev = 0;
        if init(0) != 0 || device_get(&mut dev, index as i32) != 0 {
            return None;
        }
        let mut value = 0;
        (get(&mut value, attribute, dev) == 0).then_some(value)
    }
}

/// The device's compute capability `(major, minor)`, e.g. `(9, 0)` for H100, `(12, 1)` for GB10.
pub fn compute_capability(index: usize) -> Option<(i32, i32)> {
    // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
    Some((device_attribute(index, 75)?, device_attribute(index, 76)?))
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
