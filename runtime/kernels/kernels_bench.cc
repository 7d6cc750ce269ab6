// Benchmark of the attention kernels: one JSON line per (kernel, shape) with ms and TFLOP/s.
// FLOPs count visible (query, key) pairs: forward 4*B*H*D*pairs, backward 2.5x that (preprocess included).
#include "runtime/kernels/attention.h"
#include "runtime/kernels/check.h"
#include "runtime/kernels/host_dtype.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <random>
#include <vector>

namespace {

using cpscope::rt::kernels::AttnBlockArgs;
using cpscope::rt::kernels::AttnBwdArgs;
using cpscope::rt::kernels::AttnFwdArgs;
using cpscope::rt::kernels::AttnInputs;
using cpscope::rt::kernels::DType;
namespace k = cpscope::rt::kernels;

void* dev_random16(std::size_t n, std::mt19937_64& rng) {
  std::vector<std::uint16_t> h(n);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& x : h) x = k::host::f32_to_bf16(nd(rng));
  void* p = nullptr;
  CPS_CUDA_CHECK(cudaMalloc(&p, n * 2));
  CPS_CUDA_CHECK(cudaMemcpy(p, h.data(), n * 2, cudaMemcpyHostToDevice));
  return p;
}
float* dev_f32(std::size_t n) {
  void* p = nullptr;
  CPS_CUDA_CHECK(cudaMalloc(&p, n * 4));
  CPS_CUDA_CHECK(cudaMemset(p, 0, n * 4));
  return static_cast<float*>(p);
}

template <typename F>
double time_ms(F&& f, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) f();
  cudaEvent_t a, b;
  CPS_CUDA_CHECK(cudaEventCreate(&a));
  CPS_CUDA_CHECK(cudaEventCreate(&b));
  CPS_CUDA_CHECK(cudaEventRecord(a, nullptr));
  for (int i = 0; i < iters; ++i) f();
  CPS_CUDA_CHECK(cudaEventRecord(b, nullptr));
  CPS_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  CPS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  CPS_CUDA_CHECK(cudaEventDestroy(a));
  CPS_CUDA_CHECK(cudaEventDestroy(b));
  return ms / iters;
}

void run(int batch, std::int64_t seq, int heads, int kv_heads, int d, bool causal, std::mt19937_64& rng) {
  const std::size_t nq = static_cast<std::size_t>(batch) * seq * heads * d;
  const std::size_t nk = static_cast<std::size_t>(batch) * seq * kv_heads * d;
  const std::size_t nl = static_cast<std::size_t>(batch) * heads * seq;
  void* q = dev_random16(nq, rng);
  void* kk = dev_random16(nk, rng);
  void* v = dev_random16(nk, rng);
  void* dout = dev_random16(nq, rng);
  float *o = dev_f32(nq), *lse = dev_f32(nl), *delta = dev_f32(nl), *dq = dev_f32(nq), *dk = dev_f32(nk),
        *dv = dev_f32(nk);
  const AttnBlockArgs blk{0, seq, 0, seq, 0, heads, heads / kv_heads, 0, causal, 0,
                          1.f / std::sqrt(static_cast<float>(d))};
  const AttnInputs in{DType::BF16, d, batch, q, seq, heads, kk, v, seq, kv_heads};
  const AttnFwdArgs fa{in, o, lse, false, blk};
  const AttnBwdArgs ba{in, dout, lse, delta, dq, dk, dv, blk};
  const double pairs = causal ? static_cast<double>(seq) * (seq + 1) / 2 : static_cast<double>(seq) * seq;
  const double fwd_flops = 4.0 * batch * heads * d * pairs;
  const int iters = seq >= 16384 ? 5 : 20;
  const double fwd_ms = time_ms([&] { k::attn_fwd(fa, nullptr); }, 2, iters);
  const double bwd_ms = time_ms(
      [&] {
        k::attn_bwd_preprocess(DType::FP32, DType::BF16, o, dout, delta, batch, seq, heads, d, nullptr);
        k::attn_bwd(ba, nullptr);
      },
      2, iters);
  CPS_CUDA_CHECK(cudaDeviceSynchronize());
  for (int pass = 0; pass < 2; ++pass) {
    const double ms = pass == 0 ? fwd_ms : bwd_ms;
    const double flops = pass == 0 ? fwd_flops : 2.5 * fwd_flops;
    std::printf(
        "{\"kernel\":\"%s\",\"dtype\":\"bf16\",\"batch\":%d,\"seq\":%lld,\"heads\":%d,\"kv_heads\":%d,"
        "\"head_dim\":%d,\"causal\":%s,\"ms\":%.4f,\"tflops\":%.2f}\n",
        pass == 0 ? "attn_fwd" : "attn_bwd", batch, static_cast<long long>(seq), heads, kv_heads, d,
        causal ? "true" : "false", ms, flops / (ms * 1e-3) / 1e12);
  }
  std::fflush(stdout);
  for (void* p : {q, kk, v, dout, static_cast<void*>(o), static_cast<void*>(lse), static_cast<void*>(delta),
                  static_cast<void*>(dq), static_cast<void*>(dk), static_cast<void*>(dv)}) {
    CPS_CUDA_CHECK(cudaFree(p));
  }
}

}  // namespace

int main() {
  try {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      std::fprintf(stderr, "kernels_bench: no CUDA device\n");
      return 2;
    }
    std::mt19937_64 rng(1);
    for (std::int64_t seq : {4096, 16384}) {
      for (bool causal : {false, true}) run(1, seq, 32, 8, 128, causal, rng);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernels_bench: %s\n", e.what());
    return 1;
  }
}
