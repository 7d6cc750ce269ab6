// Plain fp32 attention on the GPU: the reference the CUDA runtime's --check and the GPU tests compare
// every schedule against. Direct loops, one thread block per (batch, head, row); shares no code with the
// flash kernels or the CP schedules. Correctness only, but fast enough for seq up to a few 10K.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace cpscope::rt::refk {

// Global tensors, all fp32 device memory: q, dout, o [batch][seq][heads][head_dim]; k, v
// [batch][seq][kv_heads][head_dim]; lse, delta [batch][heads][seq] (natural log).
// Causal: key token j is visible to query token i iff j <= i.
struct RefShape {
  int batch = 1;
  std::int64_t seq = 0;
  int heads = 1, kv_heads = 1, head_dim = 64;
  bool causal = true;
  float scale = 1.f;
};

// Forward for the n query tokens rows[0..n) (a device array): o [batch][n][heads][D], lse [batch][heads][n].
void ref_forward(const RefShape& s, const float* q, const float* k, const float* v, const std::int64_t* rows,
                 std::int64_t n, float* o, float* lse, cudaStream_t stream);

// delta[b][h][t] = sum_d o[b][t][h][d] * dout[b][t][h][d] over all seq tokens (o: the global forward output).
void ref_delta(const RefShape& s, const float* o, const float* dout, float* delta, cudaStream_t stream);

// dQ of the n query tokens rows[0..n): dq [batch][n][heads][D]. lse and delta: global, all tokens.
void ref_backward_dq(const RefShape& s, const float* q, const float* k, const float* v, const float* dout,
                     const float* lse, const float* delta, const std::int64_t* rows, std::int64_t n, float* dq,
                     cudaStream_t stream);

// dK and dV of the n key tokens rows[0..n): dk, dv [batch][n][kv_heads][D] (GQA: summed over the query
// heads of each KV head).
void ref_backward_dkv(const RefShape& s, const float* q, const float* k, const float* v, const float* dout,
                      const float* lse, const float* delta, const std::int64_t* rows, std::int64_t n, float* dk,
                      float* dv, cudaStream_t stream);

}  // namespace cpscope::rt::refk
