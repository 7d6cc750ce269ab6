// A CPU emulation of the CUDA features cpscope's kernels use, so that their device code (the same .cu and .cuh
// sources the GPU build compiles) runs in CI: the GPU test sources build a second time on it (kernels_emu_test,
// cuda_run_emu_test, instrument_emu_test; tests/CMakeLists.txt) and simt_test checks the emulation itself.
//
// Every thread of a CTA is a fiber on the launching OS thread (a small x86-64 context switch; ucontext
// elsewhere); CTAs run one after another. Warp collectives (ldmatrix, mma.sync, shfl, __syncwarp) and
// __syncthreads switch fibers until every participant has arrived; the last one computes the result for the
// whole warp from the PTX ISA fragment layouts (not from the kernels' own lane arithmetic). cp.async copies
// are deferred to the cp.async.wait_group that covers them, so a read of shared memory that forgets its wait
// sees stale bytes, and shared memory starts as 0xff bytes (NaN in bf16/fp16/fp32), so a read of a row nobody
// wrote poisons the result. Shared-memory addresses are checked (in bounds, aligned), cp.async sources and
// atomics must lie in a registered global buffer, and a warp whose lanes meet different collectives, or a CTA
// that can make no progress, is an error. launch() reports the first error as std::runtime_error naming the
// CTA and thread. Timing is not modelled; only results are.
//
// Built with CPS_SIMT_EMU defined and runtime/kernels/emu/cuda/ ahead on the include path, the kernels' .cu
// launchers compile unchanged as C++ (emu/*_emu.cc): <cuda_runtime.h> and friends resolve to the stand-ins
// there (lazy streams, host memory as device memory), and CPS_LAUNCH (runtime/kernels/launch.h) queues
// simt::launch on the stream. A static local is the CTA's shared array (`__shared__` below): CTAs run one at
// a time.
#pragma once

#include "runtime/kernels/host_dtype.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define CPS_DYNAMIC_SMEM(name) unsigned char* name = ::cpscope::simt::shared_memory()

namespace cpscope::simt {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr Dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}  // NOLINT: like dim3
};

// A global-memory range the kernel may read with cp.async or update with atomics.
struct GlobalBuffer {
  const void* p;
  std::size_t bytes;
};

// Runs kernel() as every thread of every CTA of `grid` (blocks of `block` threads, a multiple of 32, with
// `smem_bytes` of dynamic shared memory). The kernel may touch the registered buffers (cudaMalloc'd memory)
// and `globals`. Launches from several host threads run one after another.
void launch(Dim3 grid, Dim3 block, std::size_t smem_bytes, const std::function<void()>& kernel,
            const std::vector<GlobalBuffer>& globals = {});
void register_global(const void* p, std::size_t bytes);  // cudaMalloc
void unregister_global(const void* p);                   // cudaFree
bool is_global(const void* p);                           // inside a registered buffer
bool is_global_range(const void* p, std::size_t bytes);  // all `bytes` inside one registered buffer

// How the emulation runs. A cp.async copy may land at any time between its issue and the wait_group that covers
// it: by default it lands at the wait (a read that forgets its wait sees stale bytes); with
// cp_async_lands_at_issue, at once (a copy into a buffer other warps may still be reading corrupts their reads,
// the hazard of a missing barrier before a refill). The fault is deliberate, for the tests that show a wrong
// fragment layout does not go unnoticed. Warps run in lockstep by default, each fiber resumed once per round
// (every warp one collective further); warp_by_warp runs each warp as far as it can go alone (to a
// __syncthreads or its end) before the next, so warps drift apart as far as the barriers let them.
struct Options {
  bool cp_async_lands_at_issue = false;
  bool warp_by_warp = false;
  bool ldmatrix_ignores_trans = false;  // fault: ldmatrix .trans loads as if without .trans
};
void set_options(const Options& o);

// What the built-ins below call; valid only inside launch().
const Dim3& thread_idx();
const Dim3& block_idx();
const Dim3& grid_dim();
const Dim3& block_dim();
unsigned char* shared_memory();
void syncthreads();
void syncwarp();
float shfl_xor(float x, int lane_mask);
std::uint32_t smem_offset(const void* p);
void cp_async(void* smem, const void* gmem, int bytes, int src_bytes);
void cp_async_commit();
void cp_async_wait(int pending);
void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr, bool trans);
enum class Mma16 : std::uint8_t { BF16, FP16 };
void mma_m16n8k16(Mma16 type, float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1);
void check_global(const void* p, std::size_t bytes, const char* what);

}  // namespace cpscope::simt

#define threadIdx (::cpscope::simt::thread_idx())
#define blockIdx (::cpscope::simt::block_idx())
#define gridDim (::cpscope::simt::grid_dim())
#define blockDim (::cpscope::simt::block_dim())

struct float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float __uint_as_float(std::uint32_t u) { return ::cpscope::rt::kernels::host::bits_f32(u); }
inline void __syncthreads() { ::cpscope::simt::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::cpscope::simt::syncwarp(); }
inline float __shfl_xor_sync(unsigned, float x, int lane_mask) { return ::cpscope::simt::shfl_xor(x, lane_mask); }
inline void atomicAdd(float2* p, float2 v) {  // fibers never interleave inside a call: plain adds are atomic
  ::cpscope::simt::check_global(p, sizeof *p, "atomicAdd(float2)");
  p->x += v.x;
  p->y += v.y;
}
// The 16-bit types as the toolkit spells them (the *_raw structs are its way in and out of the bit patterns).
struct __nv_bfloat16_raw {
  std::uint16_t x;
};
struct __half_raw {
  std::uint16_t x;
};
struct __nv_bfloat16 {
  std::uint16_t x;
  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(__nv_bfloat16_raw r) : x(r.x) {}                // NOLINT(google-explicit-constructor)
  constexpr operator __nv_bfloat16_raw() const { return {x}; }           // NOLINT(google-explicit-constructor)
};
struct __half {
  std::uint16_t x;
  __half() = default;
  constexpr __half(__half_raw r) : x(r.x) {}                              // NOLINT(google-explicit-constructor)
  constexpr operator __half_raw() const { return {x}; }                  // NOLINT(google-explicit-constructor)
};
inline float __half2float(__half h) { return ::cpscope::rt::kernels::host::f16_to_f32(h.x); }
inline float __bfloat162float(__nv_bfloat16 h) { return ::cpscope::rt::kernels::host::bf16_to_f32(h.x); }
inline __half __float2half_rn(float x) { return __half_raw{::cpscope::rt::kernels::host::f32_to_f16(x)}; }
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
  return __nv_bfloat16_raw{::cpscope::rt::kernels::host::f32_to_bf16(x)};
}
using dim3 = ::cpscope::simt::Dim3;

// The PTX-level primitives of runtime/kernels/mma.cuh.
namespace cpscope::rt::kernels::dev {

inline std::uint32_t smem_u32(const void* p) { return simt::smem_offset(p); }
inline void cp_async_16(void* smem, const void* gmem, int src_bytes) { simt::cp_async(smem, gmem, 16, src_bytes); }
inline void cp_async_4(void* smem, const void* gmem, int src_bytes) { simt::cp_async(smem, gmem, 4, src_bytes); }
inline void cp_async_commit() { simt::cp_async_commit(); }
template <int N>
inline void cp_async_wait() {
  simt::cp_async_wait(N);
}
inline void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) { simt::ldmatrix_x4(r, addr, false); }
inline void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) { simt::ldmatrix_x4(r, addr, true); }

template <typename T>
struct MmaType;
template <>
struct MmaType<__nv_bfloat16> {
  static void mma(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    simt::mma_m16n8k16(simt::Mma16::BF16, c, a, b0, b1);
  }
  static std::uint32_t pack(float lo, float hi) {
    return host::f32_to_bf16(lo) | static_cast<std::uint32_t>(host::f32_to_bf16(hi)) << 16;
  }
  static float2 unpack(std::uint32_t x) {
    return {host::bf16_to_f32(static_cast<std::uint16_t>(x)), host::bf16_to_f32(static_cast<std::uint16_t>(x >> 16))};
  }
};
template <>
struct MmaType<__half> {
  static void mma(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    simt::mma_m16n8k16(simt::Mma16::FP16, c, a, b0, b1);
  }
  static std::uint32_t pack(float lo, float hi) {
    return host::f32_to_f16(lo) | static_cast<std::uint32_t>(host::f32_to_f16(hi)) << 16;
  }
  static float2 unpack(std::uint32_t x) {
    return {host::f16_to_f32(static_cast<std::uint16_t>(x)), host::f16_to_f32(static_cast<std::uint16_t>(x >> 16))};
  }
};

}  // namespace cpscope::rt::kernels::dev
