// What the Hopper library's C entries share (attention_sm90.cu, gemm_sm90.cu).
#pragma once

#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

// The library is built with hidden symbols (scripts/build_sm90_kernels.sh); only the entries
// are exported.
#define VDGX_EXPORT extern "C" __attribute__((visibility("default")))

// Calls `run` with a value of the element type `dtype` names (0 bf16, 1 fp16) and returns what
// it returns; cudaErrorInvalidValue for any other dtype.
template <class Run>
int by_dtype(int dtype, Run run) {
  switch (dtype) {
    case 0:
      return run(cutlass::bfloat16_t{});
    case 1:
      return run(cutlass::half_t{});
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}
