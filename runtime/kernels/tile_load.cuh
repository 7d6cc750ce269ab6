// Cooperative cp.async loads of BSHD row tiles into padded shared memory (zero-filling rows past the block end).
#pragma once

#include "runtime/kernels/mma.cuh"

#include <cstdint>

namespace cpscope::rt::kernels::dev {

// Copies ROWS rows of D elements from global (row i at g + i * g_stride) into s (row stride STRIDE elements);
// rows >= valid_rows are zero-filled. Requires valid_rows >= 1 (row 0 is a safe dummy source address).
template <int ROWS, int D, int STRIDE, int THREADS, typename T>
__device__ __forceinline__ void load_rows_async(T* s, const T* g, std::int64_t g_stride, std::int64_t valid_rows,
                                                int tid) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static_assert((ROWS * kChunks) % THREADS == 0, "tile chunks must divide evenly among the threads");
  static_assert((STRIDE * sizeof(T)) % 16 == 0, "padded smem rows must stay 16-byte aligned for cp.async/ldmatrix");
#pragma unroll
  for (int it = 0; it < ROWS * kChunks / THREADS; ++it) {
    const int c = it * THREADS + tid;
    const int r = c / kChunks, ch = c % kChunks;
    const bool ok = r < valid_rows;
    const T* src = g + (ok ? r * g_stride + ch * 8 : 0);
    cp_async_16(s + r * STRIDE + ch * 8, src, ok ? 16 : 0);
  }
}

}  // namespace cpscope::rt::kernels::dev
