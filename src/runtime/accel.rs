//! Accelerator facts and controls libtorch has but tch does not expose, through the small C++
//! shim in `cuda_shim.cpp` (built by build.rs against the same libtorch).

use anyhow::{bail, Result};

extern "C" {
    fn vdgx_accel_memory(
        device: i32,
        allocated: *mut i64,
        reserved: *mut i64,
        peak: *mut i64,
    ) -> i32;
    fn vdgx_accel_reset_peak(device: i32) -> i32;
    fn vdgx_accel_empty_cache() -> i32;
    fn vdgx_set_sdp_priority(order: *const i64, len: i32) -> i32;
}

/// The caching allocator's view of one device, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Held by live tensors.
    pub allocated: u64,
    /// Taken from the driver (allocated plus cached free blocks).
    pub reserved: u64,
    /// Most ever allocated since the start or the last `reset_peak`.
    pub peak_allocated: u64,
}

/// `None` where the device does not exist (e.g. no GPU).
pub fn allocator_stats(device: usize) -> Option<AllocatorStats> {
    let (mut allocated, mut reserved, mut peak) = (0i64, 0i64, 0i64);
    // SAFETY: the shim writes the three out-parameters and nothing else.
    let rc = unsafe { vdgx_accel_memory(device as i32, &mut allocated, &mut reserved, &mut peak) };
    (rc == 0).then(|| AllocatorStats {
        allocated: allocated.max(0) as u64,
        reserved: reserved.max(0) as u64,
        peak_allocated: peak.max(0) as u64,
    })
}

pub fn reset_peak(device: usize) {
    // SAFETY: no pointers cross; a missing device is reported, not undefined.
    unsafe { vdgx_accel_reset_peak(device as i32) };
}

/// Hands the allocator's cached free blocks back to the driver (ComfyUI's `soft_empty_cache`).
pub fn empty_cache() {
    // SAFETY: as above.
    unsafe { vdgx_accel_empty_cache() };
}

/// libtorch's scaled-dot-product-attention backends, by `at::SDPBackend` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpBackend {
    Math = 0,
    Flash = 1,
    Efficient = 2,
    CuDnn = 3,
    Overrideable = 4,
}

/// Sets the order libtorch tries attention backends in (each still checks it can run the call).
pub fn set_sdp_priority(order: &[SdpBackend]) -> Result<()> {
    let codes: Vec<i64> = order.iter().map(|b| *b as i64).collect();
    // SAFETY: the shim copies `len` values out of the slice.
    let rc = unsafe { vdgx_set_sdp_priority(codes.as_ptr(), codes.len() as i32) };
    if rc != 0 {
        bail!("libtorch refused the attention backend order {order:?}");
    }
    Ok(())
}
