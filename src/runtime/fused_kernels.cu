// Fused per-token kernels for the diffusion transformers (and the Wan VAE's channel norm),
// compiled at run time by NVRTC (runtime/nvrtc.rs). Each reproduces a chain of libtorch ops in
// one pass over memory and rounds to the storage type at the same points libtorch does, so
// results match the unfused chain to the last bit except where a reduction sums in another order.
//
// No CUDA headers: bf16/fp16 conversions are written out (NVRTC may not ship cuda_bf16.h), as
// single PTX conversions where the architecture has them: at these sizes the kernels are bound
// by their instruction count as much as by memory.
// One thread block per token row, held in registers: the row is read once and written once
// (widths are multiples of 8 up to 49152; runtime/fused.rs checks).

typedef unsigned short u16;
struct bf16 { u16 bits; };
struct f16 { u16 bits; };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) {
  return __uint_as_float(((unsigned)v.bits) << 16);
}
__device__ __forceinline__ float to_float(f16 v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
}

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
// Round to nearest even, as libtorch's float -> bfloat16 cast (NaN payloads may differ).
template <> __device__ __forceinline__ bf16 from_float<bf16>(float v) {
#if __CUDA_ARCH__ >= 800
  u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return bf16{h};
#else
  unsigned u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{(u16)0x7fc0u};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{(u16)(u >> 16)};
#endif
}
template <> __device__ __forceinline__ f16 from_float<f16>(float v) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return f16{h};
}
template <typename T> __device__ __forceinline__ float round_to(float v) {
  return to_float(from_float<T>(v));
}
#if __CUDA_ARCH__ >= 800
// One instruction: the bfloat16 of v in the top half of a word whose bottom half is zero.
template <> __device__ __forceinline__ float round_to<bf16>(float v) {
  unsigned w;
  asm("cvt.rn.bf16x2.f32 %0, %1, 0f00000000;" : "=r"(w) : "f"(v));
  return __uint_as_float(w);
}
#endif

// Eight consecutive elements as float32 (16-byte loads and stores; callers keep them aligned).
__device__ __forceinline__ void load8(const float* p, float* v) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void unpack16(uint4 u, u16* h) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
  for (int j = 0; j < 4; ++j) {
    h[2 * j] = (u16)(w[j] & 0xffffu);
    h[2 * j + 1] = (u16)(w[j] >> 16);
  }
}
template <typename T> __device__ __forceinline__ void load8(const T* p, float* v) {
  u16 h[8];
  unpack16(*reinterpret_cast<const uint4*>(p), h);
  for (int j = 0; j < 8; ++j) v[j] = to_float(T{h[j]});
}
// bfloat16 is the top half of a float32: one mask or shift per element.
__device__ __forceinline__ void load8(const bf16* p, float* v) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
  for (int j = 0; j < 4; ++j) {
    v[2 * j] = __uint_as_float(w[j] << 16);
    v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
  }
}
__device__ __forceinline__ void store8(float* p, const float* v) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
// Two elements rounded to T and packed, the first in the low half.
template <typename T> __device__ __forceinline__ unsigned pack2(float lo, float hi) {
  return (unsigned)from_float<T>(lo).bits | ((unsigned)from_float<T>(hi).bits << 16);
}
#if __CUDA_ARCH__ >= 800
template <> __device__ __forceinline__ unsigned pack2<bf16>(float lo, float hi) {
  unsigned w;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(w) : "f"(hi), "f"(lo));
  return w;
}
#endif
template <typename T> __device__ __forceinline__ void store8(T* p, const float* v) {
  unsigned w[4];
  for (int j = 0; j < 4; ++j) w[j] = pack2<T>(v[2 * j], v[2 * j + 1]);
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// The sum of `v` over the block, in every thread.
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // `partial` may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < (int)((blockDim.x + 31) >> 5) ? partial[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Row kernels: one block per row, whose 16-byte vectors of 8 elements are dealt to the block's
// threads in turn (thread t takes vectors t, t + blockDim.x, …, at most VECTORS of them) and all
// loaded before the row's reductions. Several vectors per thread keep more rows in flight per SM,
// so memory stays busy while other rows reduce (one vector per thread reached about half the
// memory bandwidth). runtime/fused.rs sizes the blocks to match.
#define VECTORS 6
#define FOR_EACH_VECTOR(i, width)                                              \
  _Pragma("unroll") for (int j = 0, i = threadIdx.x; j < VECTORS; ++j, i += blockDim.x) \
    if (i < (width) / 8)

// Loads this thread's vectors of a row into v and returns the row's 1 / rms (eps added).
template <typename T>
__device__ __forceinline__ float load_row_rstd(const T* __restrict__ row, int width, float eps,
                                               float (&v)[VECTORS][8]) {
  float squares = 0.f;
  FOR_EACH_VECTOR(i, width) {
    load8(row + i * 8, v[j]);
    for (int k = 0; k < 8; ++k) squares += v[j][k] * v[j][k];
  }
  return rsqrtf(block_sum(squares) / width + eps);
}

// q/k after their projection: RMS norm over the row (`rms_norm(x, weight)`, rounded to T), then
// with ROPE each (even, odd) pair rotated in float32 by the token's rotation (`apply_rope`),
// rounded to T. x: [rows, width] rows `stride` elements apart (q and k may be views of one
// projection); out: [rows, width]; rot: [tokens, half_head, 2] (cos, sin); row r is token
// r % tokens. half_head is a multiple of 4, so the 4 pairs of a vector lie in one head.
template <typename T, bool ROPE>
__device__ void rms_norm_rope(const T* __restrict__ x, int stride, const T* __restrict__ weight,
                              const float* __restrict__ rot, T* __restrict__ out, int width,
                              int half_head, int tokens, float eps) {
  const long row = blockIdx.x;
  const unsigned token = blockIdx.x % (unsigned)tokens;
  float v[VECTORS][8];
  const float rstd = load_row_rstd(x + row * stride, width, eps, v);
  FOR_EACH_VECTOR(i, width) {
    const int i0 = i * 8;
    float w[8], r[8], o[8];
    load8(weight + i0, w);
    if (!ROPE) {
      for (int k = 0; k < 8; ++k) o[k] = v[j][k] * rstd * w[k];
      store8(out + row * width + i0, o);
      continue;
    }
    load8(rot + ((long)token * half_head + (i0 / 2) % half_head) * 2, r);
    for (int k = 0; k < 4; ++k) {
      const float a = round_to<T>(v[j][2 * k] * rstd * w[2 * k]);
      const float b = round_to<T>(v[j][2 * k + 1] * rstd * w[2 * k + 1]);
      const float c = r[2 * k], s = r[2 * k + 1];
      o[2 * k] = a * c - b * s;
      o[2 * k + 1] = a * s + b * c;
    }
    store8(out + row * width + i0, o);
  }
}

// LTX's q/k: RMS norm over the row (rounded to T), then the "split" rotation in float32, rounded
// to T: in each head of 2·half elements, element i turns with element i + half by the angle of
// (token, head, i). cos, sin: [tokens, heads, half] float32; row r is token r % tokens. A
// vector's partner vector, half elements away, may belong to another thread: it is read again
// (from cache) and normed with the row's rstd. half is a multiple of 8.
template <typename T>
__device__ void rms_norm_split_rope(const T* __restrict__ x, int stride,
                                    const T* __restrict__ weight, const float* __restrict__ cos,
                                    const float* __restrict__ sin, T* __restrict__ out, int width,
                                    int half, int heads, int tokens, float eps) {
  const long row = blockIdx.x;
  const unsigned token = blockIdx.x % (unsigned)tokens;
  float v[VECTORS][8];
  const float rstd = load_row_rstd(x + row * stride, width, eps, v);
  FOR_EACH_VECTOR(i, width) {
    const int i0 = i * 8;
    const int head = i0 / (2 * half), pos = i0 % (2 * half);
    const bool first = pos < half;
    const int p0 = first ? i0 + half : i0 - half;
    float w[8], pv[8], pw[8], c[8], sn[8], o[8];
    load8(weight + i0, w);
    load8(x + row * stride + p0, pv);
    load8(weight + p0, pw);
    const long angle = ((long)token * heads + head) * half + (first ? pos : pos - half);
    load8(cos + angle, c);
    load8(sin + angle, sn);
    for (int k = 0; k < 8; ++k) {
      const float own = round_to<T>(v[j][k] * rstd * w[k]);
      const float partner = round_to<T>(pv[k] * rstd * pw[k]);
      o[k] = first ? own * c[k] - partner * sn[k] : own * c[k] + partner * sn[k];
    }
    store8(out + row * width + i0, o);
  }
}

// The offset of the modulation row that token row `row` of [batch, tokens] uses, in a
// [batch, rows, width] tensor with one row per `tokens_per_row` tokens. Once per row, in 32 bits
// (row counts stay under 2^31): 64-bit division is a long software routine on the GPU.
__device__ __forceinline__ long modulation_row(unsigned row, int width, unsigned tokens,
                                               unsigned rows, unsigned tokens_per_row) {
  const unsigned batch = row / tokens, token = row - batch * tokens;
  return (long)(batch * rows + token / tokens_per_row) * width;
}

// What is added to the residual stream x before its LayerNorm.
enum Residual { NONE, PLAIN, GATED };

// A residual add and the LayerNorm (RMS: the RMS norm) after it, in one pass: r = x (NONE), x + y (PLAIN) or x + y·gate
// (GATED: libtorch's addcmul, the product rounded to float32, the sum to T), written to out_x
// unless it is x itself; then out_h = the modulated affine-free LayerNorm of r,
// `shift + layer_norm(r) · (scale + 1)` (MODULATE: p = shift, q = scale), or the affine one,
// `layer_norm(r) · p + q` (p, q: [width]). Each op is rounded to T where libtorch's chain rounds.
// x, y, out_x, out_h: [batch, tokens, width]; gate, shift, scale: [batch, rows, width] with one
// row per `tokens_per_row` tokens (1 row broadcasts; Wan 2.2 gives one per latent frame).
template <typename T, int RESIDUAL, bool MODULATE, bool RMS = false>
__device__ void residual_layer_norm(const T* __restrict__ x, const T* __restrict__ y,
                                    const T* __restrict__ gate, const T* __restrict__ p,
                                    const T* __restrict__ q, T* __restrict__ out_x,
                                    T* __restrict__ out_h, int width, int tokens, int rows,
                                    int tokens_per_row, float eps) {
  const long row = blockIdx.x;
  const long mod = modulation_row(blockIdx.x, width, tokens, rows, tokens_per_row);
  float v[VECTORS][8], sum = 0.f;
  FOR_EACH_VECTOR(i, width) {
    const long at = row * width + i * 8;
    load8(x + at, v[j]);
    if (RESIDUAL != NONE) {
      float a[8];
      load8(y + at, a);
      if (RESIDUAL == GATED) {
        float g[8];
        load8(gate + mod + i * 8, g);
        for (int k = 0; k < 8; ++k) a[k] = __fmul_rn(a[k], g[k]);
      }
      for (int k = 0; k < 8; ++k) v[j][k] = round_to<T>(v[j][k] + a[k]);
      store8(out_x + at, v[j]);
    }
    for (int k = 0; k < 8; ++k) sum += v[j][k];
  }
  const float mean = RMS ? 0.f : block_sum(sum) / width;
  float deviations = 0.f;
  FOR_EACH_VECTOR(i, width) {
    for (int k = 0; k < 8; ++k) deviations += (v[j][k] - mean) * (v[j][k] - mean);
  }
  const float rstd = rsqrtf(block_sum(deviations) / width + eps);
  FOR_EACH_VECTOR(i, width) {
    const int i0 = i * 8;
    float a[8], b[8], o[8];
    if (MODULATE && RMS) {  // LTX's `rms_norm(r) * (1 + scale) + shift`: the product rounded
      load8(p + mod + i0, a);
      load8(q + mod + i0, b);
      for (int k = 0; k < 8; ++k)
        o[k] = a[k] + round_to<T>(round_to<T>(v[j][k] * rstd) * round_to<T>(b[k] + 1.f));
    } else if (MODULATE) {
      load8(p + mod + i0, a);
      load8(q + mod + i0, b);
      for (int k = 0; k < 8; ++k)
        o[k] = a[k] + round_to<T>((v[j][k] - mean) * rstd) * round_to<T>(b[k] + 1.f);
    } else {
      load8(p + i0, a);
      load8(q + i0, b);
      for (int k = 0; k < 8; ++k) o[k] = (v[j][k] - mean) * rstd * a[k] + b[k];
    }
    store8(out_h + row * width + i0, o);
  }
}

// `x.clamp(-448, 448).to(float8_e4m3fn)`, the activation quantization in front of every FP8
// matmul, in one pass: `satfinite` saturates to ±448 as the clamp does and rounds to nearest
// even as libtorch's cast does. Flat over n elements (a multiple of 8), 8 per thread. FP8
// conversions need compute capability 8.9; runtime/fused.rs launches it only there.
template <typename T>
__device__ void quantize_e4m3(const T* __restrict__ x, unsigned char* __restrict__ out, int n) {
  const long i0 = ((long)blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i0 >= n) return;
#if __CUDA_ARCH__ >= 890
  float v[8];
  load8(x + i0, v);
  unsigned short pairs[4];
  for (int j = 0; j < 4; ++j)  // the first of each pair goes to the low byte
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pairs[j]) : "f"(v[2 * j + 1]), "f"(v[2 * j]));
  *reinterpret_cast<uint2*>(out + i0) =
      make_uint2(pairs[0] | ((unsigned)pairs[1] << 16), pairs[2] | ((unsigned)pairs[3] << 16));
#endif
}

// The Wan VAE's RMS norm over the channels of [batch, channels, positions] (positions = frames ·
// height · width, contiguous), `F.normalize(x, dim=1) · scale · gamma`, then SiLU with SILU:
// rounded to T where libtorch's chain rounds (the norm, the quotient, gamma · scale, the
// product, the SiLU). Each thread takes 8 consecutive positions of one batch item
// (blocks_per_item blocks per item) and walks the channels twice: the sum of squares, then the
// outputs. A warp's loads of one channel are 256 contiguous elements. positions is a multiple of
// 8; runtime/fused.rs checks.
template <typename T, bool SILU>
__device__ void channel_rms_norm(const T* __restrict__ x, const T* __restrict__ gamma,
                                 T* __restrict__ out, int channels, int count,
                                 int blocks_per_item, float scale) {
  const long long positions = count;
  const int item = blockIdx.x / blocks_per_item;
  const long long p0 = ((long long)(blockIdx.x % blocks_per_item) * blockDim.x + threadIdx.x) * 8;
  if (p0 >= positions) return;
  const long long base = (long long)item * channels * positions + p0;
  float sum[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  for (int c = 0; c < channels; ++c) {
    float v[8];
    load8(x + base + c * positions, v);
    for (int j = 0; j < 8; ++j) sum[j] += v[j] * v[j];
  }
  float norm[8];
  for (int j = 0; j < 8; ++j) norm[j] = fmaxf(round_to<T>(sqrtf(sum[j])), round_to<T>(1e-12f));
  for (int c = 0; c < channels; ++c) {
    const float g = round_to<T>(to_float(gamma[c]) * scale);
    float v[8];
    load8(x + base + c * positions, v);
    for (int j = 0; j < 8; ++j) {
      float y = round_to<T>(round_to<T>(v[j] / norm[j]) * g);
      if (SILU) y = round_to<T>(y / (1.f + expf(-y)));
      v[j] = y;
    }
    store8(out + base + c * positions, v);
  }
}

#define RESIDUAL_LAYER_NORM(T, SUFFIX, NAME, RESIDUAL, MODULATE, RMS)                       \
  extern "C" __global__ void NAME##_##SUFFIX(const T* x, const T* y, const T* gate, const T* p, \
                                             const T* q, T* out_x, T* out_h, int width,        \
                                             int tokens, int rows, int tokens_per_row,         \
                                             float eps) {                                      \
    residual_layer_norm<T, RESIDUAL, MODULATE, RMS>(x, y, gate, p, q, out_x, out_h, width,    \
                                                    tokens, rows, tokens_per_row, eps);        \
  }

#define INSTANTIATE(T, SUFFIX)                                                                 \
  extern "C" __global__ void rms_norm_rope_##SUFFIX(const T* x, int stride, const T* weight,  \
                                                    const float* rot, T* out, int width,      \
                                                    int half_head, int tokens, float eps) {   \
    rms_norm_rope<T, true>(x, stride, weight, rot, out, width, half_head, tokens, eps);       \
  }                                                                                            \
  extern "C" __global__ void rms_norm_split_rope_##SUFFIX(                                    \
      const T* x, int stride, const T* weight, const float* cos, const float* sin, T* out,     \
      int width, int half, int heads, int tokens, float eps) {                                 \
    rms_norm_split_rope<T>(x, stride, weight, cos, sin, out, width, half, heads, tokens, eps); \
  }                                                                                            \
  extern "C" __global__ void rms_norm_##SUFFIX(const T* x, int stride, const T* weight, T* out, \
                                               int width, float eps) {                        \
    rms_norm_rope<T, false>(x, stride, weight, nullptr, out, width, 1, 1, eps);                \
  }                                                                                            \
  RESIDUAL_LAYER_NORM(T, SUFFIX, layer_norm_modulate, NONE, true, false)                      \
  RESIDUAL_LAYER_NORM(T, SUFFIX, rms_norm_modulate, NONE, true, true)                         \
  RESIDUAL_LAYER_NORM(T, SUFFIX, residual_layer_norm_modulate, PLAIN, true, false)            \
  RESIDUAL_LAYER_NORM(T, SUFFIX, residual_layer_norm_affine, PLAIN, false, false)             \
  RESIDUAL_LAYER_NORM(T, SUFFIX, gated_residual_layer_norm_modulate, GATED, true, false)      \
  RESIDUAL_LAYER_NORM(T, SUFFIX, gated_residual_layer_norm_affine, GATED, false, false)       \
  extern "C" __global__ void quantize_e4m3_##SUFFIX(const T* x, unsigned char* out, int n) {  \
    quantize_e4m3<T>(x, out, n);                                                               \
  }                                                                                            \
  extern "C" __global__ void channel_rms_norm_##SUFFIX(const T* x, const T* gamma, T* out,     \
                                                       int channels, int positions,           \
                                                       int blocks_per_item, float scale) {    \
    channel_rms_norm<T, false>(x, gamma, out, channels, positions, blocks_per_item, scale);    \
  }                                                                                            \
  extern "C" __global__ void channel_rms_norm_silu_##SUFFIX(const T* x, const T* gamma, T* out, \
                                                            int channels, int positions,      \
                                                            int blocks_per_item, float scale) { \
    channel_rms_norm<T, true>(x, gamma, out, channels, positions, blocks_per_item, scale);     \
  }

INSTANTIATE(bf16, bf16)
INSTANTIATE(f16, f16)
INSTANTIATE(float, f32)
