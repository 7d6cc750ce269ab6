// Device primitives of the attention kernels: cp.async, ldmatrix, mma.sync m16n8k16 and fp32 -> 16-bit packing.
// With CPS_SIMT_EMU defined, the PTX instructions come from the CPU emulation instead (emu/simt.h), and the
// kernels built on this header run in CI (kernels_emu_test: tests/runtime/kernels/kernels_gpu_test.cc built on it).
#pragma once

#include <cstdint>

#if defined(CPS_SIMT_EMU)
#include "runtime/kernels/emu/simt.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// The dynamic shared memory of a kernel, as a byte array `name`.
#define CPS_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

namespace cpscope::rt::kernels::dev {

// Fragment layouts (PTX ISA, mma.m16n8k16 with .row.col): lane = 4*g + t.
//   A 16x16: a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B 16x8 (k x n): b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C 16x8 fp32: c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// ldmatrix.x4: lanes 8m..8m+7 give the row addresses of matrix m; register m of every lane holds matrix m,
// (row lane/4, cols 2(lane%4)..+1), or with .trans (rows 2(lane%4)..+1, col lane/4).

#if !defined(CPS_SIMT_EMU)
__device__ __forceinline__ std::uint32_t smem_u32(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; src_bytes = 0 zero-fills the destination (rows past the end of a block).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Shared-memory byte addresses (32-bit): lane bases are computed once and tile offsets are compile-time
// constants, which keeps address registers out of the unrolled loops.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
#endif  // !CPS_SIMT_EMU
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem) { ldmatrix_x4(r, smem_u32(smem)); }
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem) {
  ldmatrix_x4_trans(r, smem_u32(smem));
}

// Per-lane element offsets (in a row-major tile with row stride `stride`) of the three ldmatrix.x4 patterns;
// add row0 * stride + col0 of the 16x16 sub-tile.
//  A operand (16 rows x 16 k, row-major), registers a0..a3:
__device__ __forceinline__ int lane_off_a(int lane, int stride) { return (lane & 15) * stride + ((lane >> 4) << 3); }
//  Two B operands (n 16 x k 16 stored [n][k]): regs {0,1} = n 0..7, {2,3} = n 8..15:
__device__ __forceinline__ int lane_off_b(int lane, int stride) {
  return ((lane & 7) + ((lane >> 4) << 3)) * stride + (((lane >> 3) & 1) << 3);
}
//  Two B operands with .trans (k 16 x n 16 stored [k][n]): regs {0,1} = n 0..7, {2,3} = n 8..15:
__device__ __forceinline__ int lane_off_bt(int lane, int stride) {
  return ((lane & 7) + (((lane >> 3) & 1) << 3)) * stride + ((lane >> 4) << 3);
}

#if !defined(CPS_SIMT_EMU)
template <typename T>
struct MmaType;
template <>
struct MmaType<__nv_bfloat16> {
  static __device__ __forceinline__ void mma(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo sits in the low half
    return *reinterpret_cast<const std::uint32_t*>(&v);
  }
  static __device__ __forceinline__ float2 unpack(std::uint32_t x) {
    return make_float2(__uint_as_float(x << 16), __uint_as_float(x & 0xffff0000u));
  }
};
template <>
struct MmaType<__half> {
  static __device__ __forceinline__ void mma(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  }
  static __device__ __forceinline__ float2 unpack(std::uint32_t x) {
    return __half22float2(*reinterpret_cast<const __half2*>(&x));
  }
};
#endif  // !CPS_SIMT_EMU

// Row max / sum over the 4 lanes (t = 0..3) that share an accumulator row.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace cpscope::rt::kernels::dev
