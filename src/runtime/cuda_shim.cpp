// The few libtorch C++ calls tch does not expose: the accelerator's caching-allocator statistics
// and cache release, and the scaled-dot-product-attention backend order. Device-generic
// (`at::accelerator`), so it needs no CUDA headers. Every entry returns 0 on success and never
// lets a C++ exception cross into Rust.
#include <cstdint>
#include <vector>

#include <ATen/Context.h>
#include <ATen/DeviceAccelerator.h>

namespace {
bool has_device(int device) {
  return at::accelerator::getAccelerator(false).has_value() && device >= 0 &&
         device < at::accelerator::deviceCount();
}
}  // namespace

extern "C" {

int vdgx_accel_memory(int device, int64_t* allocated, int64_t* reserved, int64_t* peak_allocated) {
  try {
    if (!has_device(device)) return 1;
    auto stats = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = stats.allocated_bytes[all].current;
    *reserved = stats.reserved_bytes[all].current;
    *peak_allocated = stats.allocated_bytes[all].peak;
    return 0;
  } catch (...) {
    return 2;
  }
}

int vdgx_accel_reset_peak(int device) {
  try {
    if (!has_device(device)) return 1;
    at::accelerator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return 2;
  }
}

int vdgx_accel_empty_cache() {
  try {
    if (!has_device(0)) return 1;
    at::accelerator::emptyCache();
    return 0;
  } catch (...) {
    return 2;
  }
}

// Backends by at::SDPBackend code, first preferred (0 math, 1 flash, 2 efficient, 3 cuDNN).
int vdgx_set_sdp_priority(const int64_t* order, int len) {
  try {
    at::globalContext().setSDPPriorityOrder(std::vector<int64_t>(order, order + len));
    return 0;
  } catch (...) {
    return 2;
  }
}
}
