// Elementwise kernels of the runtime: backward preprocess (delta = rowsum(dO * O)), block copy/convert, fill.
#include "runtime/kernels/attention.h"
#include "runtime/kernels/check.h"
#include "runtime/kernels/launch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace cpscope::rt::kernels {
namespace {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

constexpr int kThreads = 256;
constexpr std::int64_t kMaxBlocks = 1 << 20;  // grid-stride beyond this

unsigned grid_for(std::int64_t work) {
  return static_cast<unsigned>(std::clamp<std::int64_t>((work + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

// One warp per (batch, token, head) row; rows of BSHD are contiguous, so row r starts at r * D.
template <typename OT, typename DT>
__global__ void __launch_bounds__(kThreads) bwd_preprocess_kernel(const OT* o, const DT* dout, float* delta,
                                                                  std::int64_t rows, std::int64_t tokens, int heads,
                                                                  int head_dim) {
  const int lane = threadIdx.x % 32;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (kThreads / 32);
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32; r < rows;
       r += warps) {
    float acc = 0.f;
    for (int d = lane; d < head_dim; d += 32) acc += to_f32(o[r * head_dim + d]) * to_f32(dout[r * head_dim + d]);
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
    if (lane == 0) {
      const std::int64_t h = r % heads, bt = r / heads, t = bt % tokens, b = bt / tokens;
      delta[(b * heads + h) * tokens + t] = acc;
    }
  }
}

// One warp per (batch, row) of the block: a row's heads·head_dim elements are contiguous in both tensors, so
// the lanes stride over them without per-element index arithmetic (a 64-bit division per element would make
// this memory-bound copy compute-bound several times over). A row map permutes whole rows in the same launch.
template <typename ST, typename DT>
__global__ void __launch_bounds__(kThreads) copy_block_kernel(const ST* src, DT* dst, CopyBlockArgs a,
                                                              std::int64_t rows_total) {
  const int lane = threadIdx.x % 32;
  const std::int64_t span = static_cast<std::int64_t>(a.heads) * a.head_dim;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (kThreads / 32);
  for (std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32; g < rows_total;
       g += warps) {
    const std::int64_t b = g / a.rows, r = g % a.rows;
    const std::int64_t sr = a.row_map != nullptr ? a.row_map[r] : r;
    const ST* s = src + ((b * a.src_tokens + a.src_row + sr) * a.src_heads + a.src_head) * a.head_dim;
    DT* t = dst + ((b * a.dst_tokens + a.dst_row + r) * a.dst_heads + a.dst_head) * a.head_dim;
    for (std::int64_t i = lane; i < span; i += 32) {
      float v = to_f32(s[i]);
      if (a.add) v += to_f32(t[i]);
      t[i] = from_f32<DT>(v);
    }
  }
}

__global__ void __launch_bounds__(kThreads) fill_kernel(float* p, std::int64_t n, float value) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) p[i] = value;
}

// Calls f with a null pointer of the C++ type of dt (for template dispatch).
template <typename F>
void with_type(DType dt, F&& f) {
  switch (dt) {
    case DType::BF16:
      f(static_cast<__nv_bfloat16*>(nullptr));
      return;
    case DType::FP16:
      f(static_cast<__half*>(nullptr));
      return;
    case DType::FP32:
      f(static_cast<float*>(nullptr));
      return;
  }
  CPS_REQUIRE(false, "unknown DType");
}

}  // namespace

void attn_bwd_preprocess(DType o_dtype, DType do_dtype, const void* o, const void* dout, float* delta, int batch,
                         std::int64_t tokens, int heads, int head_dim, cudaStream_t stream) {
  CPS_REQUIRE(batch >= 0 && tokens >= 0 && heads > 0 && head_dim > 0, "preprocess shape");
  const std::int64_t rows = static_cast<std::int64_t>(batch) * tokens * heads;
  if (rows == 0) return;
  CPS_REQUIRE(o != nullptr && dout != nullptr && delta != nullptr, "preprocess pointers must be set");
  const unsigned grid = grid_for(rows * 32);
  with_type(o_dtype, [&](auto* ot) {
    with_type(do_dtype, [&](auto* dt) {
      using OT = std::remove_pointer_t<decltype(ot)>;
      using DT = std::remove_pointer_t<decltype(dt)>;
      auto* kernel = &bwd_preprocess_kernel<OT, DT>;
      CPS_LAUNCH(kernel, grid, kThreads, 0, stream, static_cast<const OT*>(o), static_cast<const DT*>(dout), delta,
                 rows, tokens, heads, head_dim);
    });
  });
  CPS_CUDA_CHECK_LAUNCH();
}

void copy_block(const CopyBlockArgs& a, cudaStream_t stream) {
  CPS_REQUIRE(a.batch >= 0 && a.rows >= 0 && a.heads >= 0 && a.head_dim > 0, "copy_block shape");
  CPS_REQUIRE(a.src_row >= 0 && a.src_row + a.rows <= a.src_tokens, "copy_block rows outside src");
  CPS_REQUIRE(a.dst_row >= 0 && a.dst_row + a.rows <= a.dst_tokens, "copy_block rows outside dst");
  CPS_REQUIRE(a.src_head >= 0 && a.src_head + a.heads <= a.src_heads, "copy_block heads outside src");
  CPS_REQUIRE(a.dst_head >= 0 && a.dst_head + a.heads <= a.dst_heads, "copy_block heads outside dst");
  const std::int64_t rows_total = static_cast<std::int64_t>(a.batch) * a.rows;
  if (rows_total == 0 || a.heads == 0) return;
  CPS_REQUIRE(a.src != nullptr && a.dst != nullptr, "copy_block pointers must be set");
  const unsigned grid = grid_for(rows_total * 32);
  with_type(a.src_dtype, [&](auto* st) {
    with_type(a.dst_dtype, [&](auto* dt) {
      using ST = std::remove_pointer_t<decltype(st)>;
      using DT = std::remove_pointer_t<decltype(dt)>;
      auto* kernel = &copy_block_kernel<ST, DT>;
      CPS_LAUNCH(kernel, grid, kThreads, 0, stream, static_cast<const ST*>(a.src), static_cast<DT*>(a.dst), a,
                 rows_total);
    });
  });
  CPS_CUDA_CHECK_LAUNCH();
}

#if !defined(CPS_SIMT_EMU)
__global__ void spin_kernel(std::uint64_t ns) {
  std::uint64_t start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}
#endif

void spin(std::int64_t ns, cudaStream_t stream) {
  CPS_REQUIRE(ns >= 0, "spin duration");
#if defined(CPS_SIMT_EMU)
  static_cast<void>(stream);
#else
  if (ns == 0) return;
  spin_kernel<<<1, 1, 0, stream>>>(static_cast<std::uint64_t>(ns));
  CPS_CUDA_CHECK_LAUNCH();
#endif
}

void fill_f32(float* p, std::int64_t n, float value, cudaStream_t stream) {
  CPS_REQUIRE(n >= 0, "fill_f32 count");
  if (n == 0) return;
  CPS_REQUIRE(p != nullptr, "fill_f32 pointer must be set");
  auto* kernel = &fill_kernel;
  CPS_LAUNCH(kernel, grid_for(n), kThreads, 0, stream, p, n, value);
  CPS_CUDA_CHECK_LAUNCH();
}

}  // namespace cpscope::rt::kernels
