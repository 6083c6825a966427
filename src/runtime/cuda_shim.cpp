// The few libtorch C++ calls tch does not expose: the accelerator's caching-allocator statistics
// and cache release, the scaled-dot-product-attention backend order, and a second stream for
// copying model parts ahead of their use. Device-generic (`at::accelerator`, `c10::Stream`), so
// it needs no CUDA headers. Every entry returns 0 on success and never lets a C++ exception
// cross into Rust.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include <ATen/Context.h>
#include <ATen/DeviceAccelerator.h>
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

namespace {
bool has_device(int device) {
  return at::accelerator::getAccelerator(false).has_value() && device >= 0 &&
         device < at::accelerator::deviceCount();
}
// One stream of libtorch's pool per device, taken once and kept: every copy-ahead of a device
// queues on it, in the order it was asked for.
c10::Stream copy_stream(c10::DeviceType type, c10::DeviceIndex index) {
  static std::mutex lock;
  static std::map<c10::DeviceIndex, c10::Stream> streams;
  std::lock_guard<std::mutex> guard(lock);
  auto found = streams.find(index);
  if (found == streams.end()) {
    c10::impl::VirtualGuardImpl impl(type);
    found = streams.emplace(index, impl.getStreamFromGlobalPool(c10::Device(type, index))).first;
  }
  return found->second;
}

// The stream this thread was on when its copy-ahead began (streams are per thread in libtorch).
std::optional<c10::Stream>& caller_stream() {
  thread_local std::optional<c10::Stream> stream;
  return stream;
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

// Begins a copy-ahead on `device`: the copy stream waits for everything queued so far on this
// thread's current stream, then becomes the current stream, so the copies libtorch issues next
// go there and take their memory from that stream's pool. Reusing memory a part freed earlier
// is safe because of that wait: the part was freed after its last use was queued.
int vdgx_copy_ahead_begin(int device) {
  try {
    if (!has_device(device) || caller_stream().has_value()) return 1;
    auto type = *at::accelerator::getAccelerator(true);
    auto index = static_cast<c10::DeviceIndex>(device);
    c10::Stream caller = at::accelerator::getCurrentStream(index);
    c10::Stream copies = copy_stream(type, index);
    c10::Event queued(type);
    queued.record(caller);
    queued.block(copies);
    at::accelerator::setCurrentStream(copies);
    caller_stream() = caller;
    return 0;
  } catch (...) {
    return 2;
  }
}

// Ends it: on success `*event` is recorded after the copies; either way the thread's stream is
// the caller's again.
int vdgx_copy_ahead_end(void** event) {
  auto& caller = caller_stream();
  if (!caller.has_value()) return 1;
  int rc = 0;
  std::unique_ptr<c10::Event> done;
  try {
    c10::Stream copies = at::accelerator::getCurrentStream(caller->device_index());
    done = std::make_unique<c10::Event>(copies.device_type());
    done->record(copies);
  } catch (...) {
    rc = 2;
  }
  try {
    at::accelerator::setCurrentStream(*caller);
  } catch (...) {
    rc = 2;
  }
  caller.reset();
  if (rc == 0) *event = done.release();
  return rc;
}

// The calling thread's current stream on the event's device waits for the copies.
int vdgx_copy_ahead_wait(void* event) {
  try {
    auto* done = static_cast<c10::Event*>(event);
    done->block(at::accelerator::getCurrentStream(done->device_index()));
    return 0;
  } catch (...) {
    return 2;
  }
}

void vdgx_copy_ahead_free(void* event) {
  delete static_cast<c10::Event*>(event);
}
}
