// Hopper (sm_90a) flash attention behind a C ABI, for runtime/attention_sm90.rs; one half of
// the library runtime/sm90.rs loads (gemm_sm90.cu is the other).
//
// The kernel is FlashInfer's FA3-style sm_90 prefill template (TMA loads, warp-specialised
// wgmma pipelines), instantiated here for what the video DiTs need: head dim 128, bf16 or fp16,
// no mask, and optionally a float32 bias per key (a prompt's padding as one key, see
// runtime/attention.rs). scripts/build_sm90_kernels.sh compiles this file with nvcc from PyPI
// against the headers of the pinned flashinfer-python wheel; nothing of FlashInfer is vendored.
// On the H100 it runs Wan's 32k-token self-attention at about 660 TFLOP/s against cuDNN's 575.
#include <cstdint>
#include <mutex>

#include "sm90_entry.cuh"

#include <flashinfer/attention/hopper/default_params.cuh>
#include <flashinfer/attention/hopper/prefill_sm90.cuh>
#include <flashinfer/attention/hopper/variants.cuh>

// Mirrors `AttentionArgs` in attention_sm90.rs. Tensors are [batch, tokens, heads, 128]
// with any strides (in elements) whose head dim is contiguous. Global, not in the anonymous
// namespace: the exported entry takes it, and would otherwise get internal linkage.
struct AttentionArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  int64_t batch, q_len, kv_len, heads;
  int64_t q_strides[3], k_strides[3], v_strides[3], o_strides[3];  // batch, token, head
  // Null, or kv_len float32 values added to the scores of each key (natural-log units, shared
  // by every query, head and batch element).
  const float* key_bias;
  float scale;
  void* stream;
};

// The CTA tile (query rows × key rows) and pipeline depth. FlashInfer's own choice for head dim
// 128 without a mask is 128 × 192 with two stages; benches/device/prepare.sh builds other tiles
// (-DVDGX_CTA_Q=… etc.) for the tile sweep of benches/device/run_all.sh.
#ifndef VDGX_CTA_Q
#define VDGX_CTA_Q 128
#endif
#ifndef VDGX_CTA_KV
#define VDGX_CTA_KV 192
#endif
#ifndef VDGX_STAGES
#define VDGX_STAGES 2
#endif

namespace {

constexpr int kHeadDim = 128;

// The second stream of one device and the events that order it after and before the caller's.
struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr;
  cudaEvent_t done = nullptr;
  std::mutex lock;  // one batched call at a time records and waits on the events
};

constexpr int kMaxDevices = 64;

// Created once per device and kept for the process; nullptr where CUDA refused, and then every
// batch element runs on the caller's stream.
SideStream* side_stream() {
  static std::mutex creating;
  static SideStream* streams[kMaxDevices] = {};
  static bool failed[kMaxDevices] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return nullptr;
  std::lock_guard<std::mutex> guard(creating);
  if (streams[device] == nullptr && !failed[device]) {
    auto* s = new SideStream();
    if (cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking) == cudaSuccess &&
        cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming) == cudaSuccess &&
        cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming) == cudaSuccess) {
      streams[device] = s;
    } else {
      failed[device] = true;
      delete s;
      cudaGetLastError();  // clear the error so later launches do not report it
    }
  }
  return streams[device];
}

// FlashInfer's single-prefill parameters with our own extras: the variants read theirs from
// `additional_params` (StandardAttention only `sm_scale`), which the kernel passes through.
template <typename T>
struct Params : flashinfer::SinglePrefillParams<T, T, T, int32_t> {
  struct AdditionalParams {
    float sm_scale;
    const float* key_bias;
  } additional_params;
};

// softmax(scale · q·kᵀ + bias) · v with one float32 bias per key. The updater scales the raw
// logits, so the bias joins them divided by the scale.
struct KeyBias {
  float sm_scale_log2;
  float inverse_scale;
  const float* key_bias;
  uint32_t kv_len;

  template <typename MainloopParams, typename BlockCoord>
  __device__ KeyBias(const MainloopParams& params, const BlockCoord& block_coord) {
    auto [q_tile, qo_head, kv_head, qo_indptr, kv_indptr, qo_len, keys, batch] = block_coord;
    const auto& extra = params.additional_params;
    sm_scale_log2 = extra.sm_scale * flashinfer::math::log2e;
    inverse_scale = 1.0f / extra.sm_scale;
    key_bias = extra.key_bias;
    kv_len = keys;
  }

  template <int NUM_ROWS_PER_THREAD>
  __device__ auto GetAttentionUpdater() {
    return flashinfer::OnlineSoftmax<NUM_ROWS_PER_THREAD, /*WITH_SCALE=*/true>(sm_scale_log2);
  }

  // Keys past kv_len (the last tile's tail) are masked after this; their bias is not read.
  REGISTER_LOGITS_TRANSFORM(params, logits, batch_idx, qo_idx, kv_idx, qo_head_idx, kv_head_idx, {
    return kv_idx < kv_len ? logits + __ldg(key_bias + kv_idx) * inverse_scale : logits;
  })
};

template <typename T, typename Variant>
int launch_one(const AttentionArgs& a, int64_t b, cudaStream_t stream) {
  Params<T> p{};
  p.q_ptr = const_cast<T*>(static_cast<const T*>(a.q)) + b * a.q_strides[0];
  p.k_ptr = const_cast<T*>(static_cast<const T*>(a.k)) + b * a.k_strides[0];
  p.v_ptr = const_cast<T*>(static_cast<const T*>(a.v)) + b * a.v_strides[0];
  p.o_ptr = static_cast<T*>(a.o) + b * a.o_strides[0];
  p.lse_ptr = nullptr;
  p.additional_params.sm_scale = a.scale;
  p.additional_params.key_bias = a.key_bias;
  p.q_stride_n = a.q_strides[1];
  p.q_stride_h = a.q_strides[2];
  p.k_stride_n = a.k_strides[1];
  p.k_stride_h = a.k_strides[2];
  p.v_stride_n = a.v_strides[1];
  p.v_stride_h = a.v_strides[2];
  p.o_stride_n = a.o_strides[1];
  p.o_stride_h = a.o_strides[2];
  p.qo_len = static_cast<int>(a.q_len);
  p.kv_len = static_cast<int>(a.kv_len);
  p.num_qo_heads = static_cast<int>(a.heads);
  p.num_kv_heads = static_cast<int>(a.heads);
  p.group_size = 1;
  p.window_left = -1;
  p.causal = false;
  using Traits =
      flashinfer::AttentionKernelTraits</*USE_TMA_LOAD_KV=*/true, kHeadDim, kHeadDim, VDGX_CTA_Q,
                                        VDGX_CTA_KV, VDGX_STAGES, T, T, T, int32_t, Variant>;
  cudaError_t status =
      flashinfer::SinglePrefillWithKVCacheKernelTraitsDispatched<Traits,
                                                                 /*LEFT_SLIDING_WINDOW=*/false,
                                                                 /*CAUSAL=*/false>(p, stream);
  if (status == cudaSuccess) status = cudaGetLastError();
  return static_cast<int>(status);
}

// One launch per batch element: the single-sequence kernel tiles tokens × heads, one CTA per
// tile. Odd elements go to a second stream so the launches run side by side: the last, partial
// wave of CTAs of one fills up with the other's instead of idling (Wan's CFG batch of two at
// 81 frames is 23.3 waves of 132 CTAs per element).
template <typename T, typename Variant>
int run(const AttentionArgs& a) {
  auto caller = static_cast<cudaStream_t>(a.stream);
  SideStream* side = a.batch > 1 ? side_stream() : nullptr;
  if (side == nullptr) {
    for (int64_t b = 0; b < a.batch; ++b) {
      if (int rc = launch_one<T, Variant>(a, b, caller)) return rc;
    }
    return 0;
  }
  std::lock_guard<std::mutex> guard(side->lock);
  // The side stream starts after everything queued on the caller's stream (q, k, v ready)...
  if (cudaError_t e = cudaEventRecord(side->ready, caller)) return static_cast<int>(e);
  if (cudaError_t e = cudaStreamWaitEvent(side->stream, side->ready, 0)) return static_cast<int>(e);
  int status = 0;
  for (int64_t b = 0; b < a.batch && status == 0; ++b) {
    status = launch_one<T, Variant>(a, b, b % 2 == 0 ? caller : side->stream);
  }
  // ...and the caller's stream goes on only once the side stream is through, even after a
  // failed launch, so nothing later reuses q, k, v or o under a running kernel.
  cudaError_t recorded = cudaEventRecord(side->done, side->stream);
  cudaError_t waited = recorded == cudaSuccess ? cudaStreamWaitEvent(caller, side->done, 0) : recorded;
  if (status != 0) return status;
  return static_cast<int>(waited);
}

}  // namespace

// The library's ABI (AttentionArgs here, GemmArgs in gemm_sm90.cu, the entries' signatures),
// bumped whenever it changes, so a stale build is refused rather than misread.
VDGX_EXPORT int vdgx_sm90_abi() { return 3; }

// dtype: 0 bf16, 1 fp16. Returns 0, or the cudaError_t of the failed launch.
VDGX_EXPORT int vdgx_sm90_attention(int dtype, const AttentionArgs* args) {
  return by_dtype(dtype, [&](auto element) {
    using T = decltype(element);
    return args->key_bias == nullptr ? run<T, flashinfer::StandardAttention>(*args)
                                      : run<T, KeyBias>(*args);
  });
}
