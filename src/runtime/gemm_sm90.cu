// Hopper (sm_90a) GEMM with the bias and the tanh GELU in its epilogue, behind a C ABI, for
// runtime/gemm_sm90.rs: `gelu_tanh(x·wᵀ + b)` in one pass, the first half of the DiTs' MLPs.
//
// A CUTLASS 3 TMA warp-specialised kernel (the headers come with the flashinfer-python wheel that
// scripts/build_sm90_kernels.sh unpacks). It saves the separate GELU kernel, which reads and
// writes the whole [tokens, 4·dim] hidden state (Wan 1.3B at 81 frames: 0.8 ms per block).
// The activation is computed in float32 on the float32 accumulator plus bias, and rounded once.
#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/operations.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/util/packed_stride.hpp>

#include "sm90_entry.cuh"

// Mirrors `GemmArgs` in gemm_sm90.rs: row-major x [m, k], w [n, k], out [m, n], bias [n],
// all contiguous and 16-byte aligned.
struct GemmArgs {
  const void* x;
  const void* w;
  const void* bias;
  void* out;
  int64_t m, n, k;
  void* stream;
};

namespace {

using namespace cute;

// gelu_tanh(x) = x·sigmoid(2u), u = √(2/π)·(x + 0.044715·x³): the same function as PyTorch's
// 0.5·x·(1 + tanh(u)), written so that no 1 + tanh(u) cancels for negative x (CUTLASS's
// GELU_taylor does, with a tanh approximation whose absolute error then dominates).
template <class T>
struct GeluTanh;

template <>
struct GeluTanh<float> {
  CUTLASS_HOST_DEVICE float operator()(float x) const {
    constexpr float kLinear = 1.5957691216057308f;  // 2·√(2/π)
    constexpr float kCubic = 0.0713548162726009f;   // 2·√(2/π)·0.044715
    float two_u = x * fmaf(kCubic, x * x, kLinear);
#if defined(__CUDA_ARCH__)
    // exp(-2u) overflows to inf for very negative x, and x / inf is the limit, -0.
    return __fdividef(x, 1.0f + __expf(-two_u));
#else
    return x / (1.0f + expf(-two_u));
#endif
  }
};

template <int N>
struct GeluTanh<cutlass::Array<float, N>> {
  CUTLASS_HOST_DEVICE cutlass::Array<float, N> operator()(cutlass::Array<float, N> const& x) const {
    cutlass::Array<float, N> y;
    GeluTanh<float> gelu;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) y[i] = gelu(x[i]);
    return y;
  }
};

// Two schedules, measured on the H100 at the MLP shapes (benches/RESULTS.md): with a short
// reduction (Wan 1.3B's 1536) the epilogue's GELU is a large share of each tile, and two consumer
// warp groups taking turns (ping-pong, 128 × 128 tiles) hide it behind each other's main loop;
// with a long one (Wan 14B's 5120) the cooperative 128 × 256 tile is faster.
struct Pingpong {
  using Tile = Shape<_128, _128, _64>;
  using Mainloop = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
  using Epilogue = cutlass::epilogue::TmaWarpSpecialized;
};
struct Cooperative {
  using Tile = Shape<_128, _256, _64>;
  using Mainloop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
  using Epilogue = cutlass::epilogue::TmaWarpSpecializedCooperative;
};
constexpr int64_t kLongestPingpongReduction = 2048;

template <class T, class Schedule>
struct BiasGeluGemm {
  using Layout = cutlass::layout::RowMajor;      // x [m, k] and out [m, n]
  using LayoutW = cutlass::layout::ColumnMajor;  // w [n, k] read as the k × n operand
  static constexpr int kAlign = 128 / cutlass::sizeof_bits<T>::value;
  using Tile = typename Schedule::Tile;
  using Cluster = Shape<_2, _1, _1>;  // pairs of CTAs share each w tile's load
  using Fusion = cutlass::epilogue::fusion::LinCombPerColBiasEltAct<GeluTanh, T, float, T, void>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, Layout, kAlign, T,
      Layout, kAlign, typename Schedule::Epilogue, Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, T, Layout, kAlign, T, LayoutW, kAlign,
      float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      typename Schedule::Mainloop>::CollectiveOp;
  using Kernel =
      cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

// A problem the kernel cannot take (the caller falls back for this call only).
constexpr int kUnsupported = -1;

// 0, kUnsupported, or the cudaError_t of a failed launch.
template <class T, class Schedule>
int run(const GemmArgs& a) {
  using Gemm = typename BiasGeluGemm<T, Schedule>::Gemm;
  const int m = static_cast<int>(a.m), n = static_cast<int>(a.n), k = static_cast<int>(a.k);
  if (m != a.m || n != a.n || k != a.k) return kUnsupported;
  auto stride_x = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideA{}, {m, k, 1});
  auto stride_w = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideB{}, {n, k, 1});
  auto stride_out = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideD{}, {m, n, 1});
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {m, n, k, 1},
      {static_cast<const T*>(a.x), stride_x, static_cast<const T*>(a.w), stride_w},
      {{}, nullptr, stride_out, static_cast<T*>(a.out), stride_out}};
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = 0.0f;
  args.epilogue.thread.bias_ptr = static_cast<const T*>(a.bias);
  Gemm gemm;
  // The persistent tile scheduler without split-k needs no workspace; refuse rather than
  // allocate if a CUTLASS update ever changes that.
  if (Gemm::get_workspace_size(args) != 0 || gemm.can_implement(args) != cutlass::Status::kSuccess) {
    return kUnsupported;
  }
  auto stream = static_cast<cudaStream_t>(a.stream);
  if (gemm.initialize(args, nullptr, stream) != cutlass::Status::kSuccess) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  cutlass::Status status = gemm.run(stream);
  cudaError_t launched = cudaGetLastError();
  if (launched != cudaSuccess) return static_cast<int>(launched);
  return status == cutlass::Status::kSuccess ? 0 : static_cast<int>(cudaErrorLaunchFailure);
}

template <class T>
int run(const GemmArgs& a) {
  return a.k <= kLongestPingpongReduction ? run<T, Pingpong>(a) : run<T, Cooperative>(a);
}

}  // namespace

// dtype: 0 bf16, 1 fp16. Returns 0, -1 for a problem the kernel cannot take, or a cudaError_t.
VDGX_EXPORT int vdgx_sm90_linear_gelu_tanh(int dtype, const GemmArgs* args) {
  return by_dtype(dtype, [&](auto element) { return run<decltype(element)>(*args); });
}
