// The SIMT emulation itself (runtime/kernels/emu/simt.h): ldmatrix and mma.sync through the standard usage
// patterns give the matrix product, and the mistakes it exists to catch are reported, not silently run.
#include "runtime/kernels/emu/simt.h"
#include "runtime/kernels/mma.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace cpscope::rt::kernels {
namespace {

using simt::Dim3;

template <typename V>
simt::GlobalBuffer buf(const V& v) {
  return {v.data(), v.size() * sizeof(v[0])};
}

// Runs body() as one warp (or `threads` threads) of one CTA; returns the error text, empty when it ran.
template <typename F>
std::string run(F body, std::size_t smem, std::vector<simt::GlobalBuffer> globals = {}, unsigned threads = 32) {
  try {
    simt::launch(Dim3{1, 1, 1}, Dim3{threads, 1, 1}, smem, body, globals);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// C[16][16] = A[16][16] B[16][16] with small integers (exact in bf16 and fp32): A row-major loaded with the
// A pattern of ldmatrix, B once stored [n][k] (ldmatrix) and once [k][n] (ldmatrix.trans); both must give the
// product, with C scattered from the accumulator layout c0,c1 = (g, 2t..), c2,c3 = (g+8, 2t..).
TEST(Simt, LdmatrixAndMmaComputeTheMatrixProduct) {
  int A[16][16], B[16][16];
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) {
      A[i][j] = (i * 7 + j * 3) % 11 - 5;
      B[i][j] = (i * 5 + j * 2) % 9 - 4;
    }
  }
  std::vector<std::uint16_t> a_h(256), bnk_h(256), bkn_h(256);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) {
      a_h[static_cast<std::size_t>(i * 16 + j)] = host::f32_to_bf16(static_cast<float>(A[i][j]));
      bkn_h[static_cast<std::size_t>(i * 16 + j)] = host::f32_to_bf16(static_cast<float>(B[i][j]));  // [k][n]
      bnk_h[static_cast<std::size_t>(j * 16 + i)] = host::f32_to_bf16(static_cast<float>(B[i][j]));  // [n][k]
    }
  }
  for (bool trans : {false, true}) {
    SCOPED_TRACE(trans ? "B as [k][n] with ldmatrix.trans" : "B as [n][k] with ldmatrix");
    std::vector<float> c(256, -1.f);
    const std::string err = run(
        [&] {
          CPS_DYNAMIC_SMEM(smem);
          auto* a_s = reinterpret_cast<__nv_bfloat16*>(smem);
          auto* b_s = a_s + 256;
          const int lane = static_cast<int>(threadIdx.x);
          if (lane == 0) {
            std::memcpy(a_s, a_h.data(), 512);
            std::memcpy(b_s, (trans ? bkn_h : bnk_h).data(), 512);
          }
          __syncthreads();
          std::uint32_t a[4], b[4];
          // A: lanes 0-15 give rows 0-15 at column 0, lanes 16-31 rows 0-15 at column 8.
          dev::ldmatrix_x4(a, a_s + (lane % 16) * 16 + (lane / 16) * 8);
          if (!trans) {  // matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
            dev::ldmatrix_x4(b, b_s + ((lane % 8) + 8 * (lane / 16)) * 16 + 8 * ((lane / 8) % 2));
          } else {  // matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15)
            dev::ldmatrix_x4_trans(b, b_s + ((lane % 8) + 8 * ((lane / 8) % 2)) * 16 + 8 * (lane / 16));
          }
          float acc[2][4] = {};
          dev::MmaType<__nv_bfloat16>::mma(acc[0], a, b[0], b[1]);
          dev::MmaType<__nv_bfloat16>::mma(acc[1], a, b[2], b[3]);
          const int g = lane / 4, t = lane % 4;
          for (int nh = 0; nh < 2; ++nh) {
            for (int e = 0; e < 4; ++e) c[static_cast<std::size_t>((g + 8 * (e / 2)) * 16 + 8 * nh + 2 * t + e % 2)] = acc[nh][e];
          }
        },
        1024);
    ASSERT_EQ(err, "");
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 16; ++j) {
        int want = 0;
        for (int k = 0; k < 16; ++k) want += A[i][k] * B[k][j];
        ASSERT_EQ(c[static_cast<std::size_t>(i * 16 + j)], static_cast<float>(want)) << "C[" << i << "][" << j << "]";
      }
    }
  }
}

TEST(Simt, CpAsyncLandsOnlyAtItsWait) {
  std::vector<float> src(32 * 4);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
  for (bool wait : {true, false}) {
    std::vector<float> seen(src.size(), 0.f);
    const std::string err = run(
        [&] {
          CPS_DYNAMIC_SMEM(smem);
          auto* s = reinterpret_cast<float*>(smem);
          const unsigned tid = threadIdx.x;
          dev::cp_async_16(s + 4 * tid, src.data() + 4 * tid, 16);
          dev::cp_async_commit();
          if (wait) dev::cp_async_wait<0>();
          __syncthreads();
          for (int i = 0; i < 4; ++i) seen[4 * tid + static_cast<unsigned>(i)] = s[(4 * tid + static_cast<unsigned>(i) + 4) % 128];
        },
        512, {buf(src)});
    ASSERT_EQ(err, "");
    for (std::size_t i = 0; i < seen.size(); ++i) {
      if (wait) {
        ASSERT_EQ(seen[i], src[(i + 4) % 128]);
      } else {
        ASSERT_TRUE(std::isnan(seen[i])) << "a read before cp.async.wait_group saw the copy";
      }
    }
  }
}

TEST(Simt, ReportsDivergentWarpsAndDeadlocks) {
  EXPECT_NE(run([] { threadIdx.x < 16 ? (void)__shfl_xor_sync(~0u, 1.f, 1) : __syncwarp(); }, 0)
                .find("divergent warp: this lane is at __syncwarp while lanes of its warp wait at __shfl_xor_sync"),
            std::string::npos);
  // Half a warp leaves; the other half waits for it at a shuffle forever.
  EXPECT_NE(run([] { if (threadIdx.x < 16) (void)__shfl_xor_sync(~0u, 1.f, 1); }, 0).find("deadlocked"),
            std::string::npos);
  // A lane at __syncthreads while its warp-mates go to a collective, in either order of arrival.
  EXPECT_NE(run([] { threadIdx.x == 0 ? __syncthreads() : __syncwarp(); }, 0)
                .find("divergent warp: this lane is at __syncwarp while lanes of its warp wait at __syncthreads"),
            std::string::npos);
  EXPECT_NE(run([] { threadIdx.x == 31 ? __syncthreads() : __syncwarp(); }, 0)
                .find("divergent warp: this lane is at __syncthreads while lanes of its warp wait at __syncwarp"),
            std::string::npos);
  // Threads that exit count as arrived at __syncthreads (as on the GPU).
  EXPECT_EQ(run([] { if (threadIdx.x >= 32) __syncthreads(); }, 0, {}, 64), "");
}

TEST(Simt, ReportsBadAddresses) {
  std::vector<std::uint16_t> g(64);
  EXPECT_NE(run([] {
              CPS_DYNAMIC_SMEM(smem);
              std::uint32_t r[4];
              dev::ldmatrix_x4(r, smem + 16 * (threadIdx.x % 16));  // the row at 240 ends past 250 bytes
            },
            250)
                .find("past the 250 bytes of shared memory"),
            std::string::npos);
  EXPECT_NE(run([] {
              CPS_DYNAMIC_SMEM(smem);
              std::uint32_t r[4];
              dev::ldmatrix_x4(r, smem + 8);
            },
            1024)
                .find("misaligned"),
            std::string::npos);
  EXPECT_NE(run([&] {
              CPS_DYNAMIC_SMEM(smem);
              dev::cp_async_16(smem, g.data() + 64, 16);  // just past the buffer
            },
            1024, {buf(g)})
                .find("cp.async touches global memory outside every buffer"),
            std::string::npos);
  float2 x{0.f, 0.f};
  EXPECT_NE(run([&] { atomicAdd(&x, make_float2(1.f, 1.f)); }, 0).find("atomicAdd(float2) touches global memory"),
            std::string::npos);
  // An 8-byte atomic at a 4-byte aligned address: cudaErrorMisalignedAddress on a GPU.
  alignas(8) float pair[3] = {0.f, 0.f, 0.f};
  std::vector<simt::GlobalBuffer> globals = {{pair, sizeof pair}};
  EXPECT_NE(run([&] { atomicAdd(reinterpret_cast<float2*>(pair + 1), make_float2(1.f, 1.f)); }, 0, globals)
                .find("atomicAdd(float2) at a global address not aligned to its 8 bytes"),
            std::string::npos);
  EXPECT_EQ(run([&] { if (threadIdx.x == 0) atomicAdd(reinterpret_cast<float2*>(pair), make_float2(1.f, 1.f)); }, 0,
                globals),
            "");
  EXPECT_THROW(simt::launch(Dim3{1, 1, 1}, Dim3{48, 1, 1}, 0, [] {}, {}), std::invalid_argument);
  EXPECT_NE(run([] {
              float local[4] = {};
              (void)dev::smem_u32(local);
            },
            64)
                .find("shared-memory address of a pointer outside shared memory"),
            std::string::npos);
  EXPECT_THROW((void)simt::thread_idx(), std::logic_error);  // outside a launch
}

}  // namespace
}  // namespace cpscope::rt::kernels
