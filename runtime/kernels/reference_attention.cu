// Plain fp32 attention (see reference_attention.h). Each block owns one output row (a query row for O,
// LSE and dQ; a key row for dK/dV) and walks the other side in chunks of kThreads: thread t computes
// the score of element t of the chunk, the chunk's probabilities go through shared memory, and thread d
// accumulates output column d. The softmax is two-pass (max, then sum and output), so no online
// rescaling: simple enough to trust as a reference.
#include "runtime/kernels/reference_attention.h"

#include "runtime/kernels/check.h"
#include "runtime/kernels/launch.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace cpscope::rt::refk {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxDim = 256;
constexpr int kCols = kMaxDim / kThreads;  // output columns per thread
static_assert(kMaxDim % kThreads == 0, "kMaxDim must be a multiple of kThreads");

__device__ float block_reduce(float v, bool is_max, float* red) {
  for (int m = 16; m > 0; m >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, m);
    v = is_max ? fmaxf(v, o) : v + o;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < kThreads / 32; ++w) r = is_max ? fmaxf(r, red[w]) : r + red[w];
  return r;
}

__device__ float dot(const float* a, const float* b, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Row offsets into the global tensors.
__device__ std::int64_t qrow(const RefShape& s, std::int64_t b, std::int64_t t, int h) {
  return ((b * s.seq + t) * s.heads + h) * s.head_dim;
}
__device__ std::int64_t kvrow(const RefShape& s, std::int64_t b, std::int64_t t, int g) {
  return ((b * s.seq + t) * s.kv_heads + g) * s.head_dim;
}

__global__ void __launch_bounds__(kThreads) fwd_kernel(RefShape s, const float* q, const float* k, const float* v,
                                                       const std::int64_t* rows, std::int64_t n, float* o,
                                                       float* lse) {
  const std::int64_t r = blockIdx.x;
  const int h = blockIdx.y;
  const std::int64_t b = blockIdx.z;
  const int g = h / (s.heads / s.kv_heads);
  const int D = s.head_dim;
  const std::int64_t i = rows[r];
  __shared__ float qs[kMaxDim];
  __shared__ float p[kThreads];
  __shared__ float red[kThreads / 32];
  for (int d = threadIdx.x; d < D; d += kThreads) qs[d] = q[qrow(s, b, i, h) + d];
  __syncthreads();
  const std::int64_t kend = s.causal ? i + 1 : s.seq;
  float m = -INFINITY;
  for (std::int64_t j = threadIdx.x; j < kend; j += kThreads) m = fmaxf(m, s.scale * dot(qs, k + kvrow(s, b, j, g), D));
  m = block_reduce(m, true, red);
  float l = 0.f;
  float acc[kCols] = {};
  for (std::int64_t j0 = 0; j0 < kend; j0 += kThreads) {
    const std::int64_t j = j0 + threadIdx.x;
    float pj = 0.f;
    if (j < kend) pj = expf(s.scale * dot(qs, k + kvrow(s, b, j, g), D) - m);
    p[threadIdx.x] = pj;
    l += pj;
    __syncthreads();
    const int cnt = static_cast<int>(kend - j0 < kThreads ? kend - j0 : kThreads);
    for (int c = 0; c < kCols; ++c) {
      const int d = threadIdx.x + c * kThreads;
      if (d >= D) break;
      for (int t = 0; t < cnt; ++t) acc[c] += p[t] * v[kvrow(s, b, j0 + t, g) + d];
    }
    __syncthreads();
  }
  l = block_reduce(l, false, red);
  for (int c = 0; c < kCols; ++c) {
    const int d = threadIdx.x + c * kThreads;
    if (d < D) o[((b * n + r) * s.heads + h) * D + d] = acc[c] / l;
  }
  if (threadIdx.x == 0) lse[(b * s.heads + h) * n + r] = m + logf(l);
}

__global__ void __launch_bounds__(kThreads) delta_kernel(RefShape s, const float* o, const float* dout,
                                                         float* delta) {
  const std::int64_t rows = static_cast<std::int64_t>(s.batch) * s.seq * s.heads;
  for (std::int64_t x = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; x < rows;
       x += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const int h = static_cast<int>(x % s.heads);
    const std::int64_t t = (x / s.heads) % s.seq, b = x / (static_cast<std::int64_t>(s.heads) * s.seq);
    delta[(b * s.heads + h) * s.seq + t] = dot(o + x * s.head_dim, dout + x * s.head_dim, s.head_dim);
  }
}

__global__ void __launch_bounds__(kThreads) dq_kernel(RefShape s, const float* q, const float* k, const float* v,
                                                      const float* dout, const float* lse, const float* delta,
                                                      const std::int64_t* rows, std::int64_t n, float* dq) {
  const std::int64_t r = blockIdx.x;
  const int h = blockIdx.y;
  const std::int64_t b = blockIdx.z;
  const int g = h / (s.heads / s.kv_heads);
  const int D = s.head_dim;
  const std::int64_t i = rows[r];
  __shared__ float qs[kMaxDim], dos[kMaxDim];
  __shared__ float ds[kThreads];
  for (int d = threadIdx.x; d < D; d += kThreads) {
    qs[d] = q[qrow(s, b, i, h) + d];
    dos[d] = dout[qrow(s, b, i, h) + d];
  }
  __syncthreads();
  const float lse_i = lse[(b * s.heads + h) * s.seq + i];
  const float delta_i = delta[(b * s.heads + h) * s.seq + i];
  const std::int64_t kend = s.causal ? i + 1 : s.seq;
  float acc[kCols] = {};
  for (std::int64_t j0 = 0; j0 < kend; j0 += kThreads) {
    const std::int64_t j = j0 + threadIdx.x;
    float dsj = 0.f;
    if (j < kend) {
      const float pj = expf(s.scale * dot(qs, k + kvrow(s, b, j, g), D) - lse_i);
      dsj = pj * (dot(dos, v + kvrow(s, b, j, g), D) - delta_i);
    }
    ds[threadIdx.x] = dsj;
    __syncthreads();
    const int cnt = static_cast<int>(kend - j0 < kThreads ? kend - j0 : kThreads);
    for (int c = 0; c < kCols; ++c) {
      const int d = threadIdx.x + c * kThreads;
      if (d >= D) break;
      for (int t = 0; t < cnt; ++t) acc[c] += ds[t] * k[kvrow(s, b, j0 + t, g) + d];
    }
    __syncthreads();
  }
  for (int c = 0; c < kCols; ++c) {
    const int d = threadIdx.x + c * kThreads;
    if (d < D) dq[((b * n + r) * s.heads + h) * D + d] = s.scale * acc[c];
  }
}

__global__ void __launch_bounds__(kThreads) dkv_kernel(RefShape s, const float* q, const float* k, const float* v,
                                                       const float* dout, const float* lse, const float* delta,
                                                       const std::int64_t* rows, std::int64_t n, float* dk,
                                                       float* dv) {
  const std::int64_t r = blockIdx.x;
  const int g = blockIdx.y;
  const std::int64_t b = blockIdx.z;
  const int ratio = s.heads / s.kv_heads;
  const int D = s.head_dim;
  const std::int64_t j = rows[r];
  __shared__ float ks[kMaxDim], vs[kMaxDim];
  __shared__ float ps[kThreads], dss[kThreads];
  for (int d = threadIdx.x; d < D; d += kThreads) {
    ks[d] = k[kvrow(s, b, j, g) + d];
    vs[d] = v[kvrow(s, b, j, g) + d];
  }
  __syncthreads();
  const std::int64_t qbegin = s.causal ? j : 0;
  float acc_k[kCols] = {}, acc_v[kCols] = {};
  for (int h = g * ratio; h < (g + 1) * ratio; ++h) {
    for (std::int64_t i0 = qbegin; i0 < s.seq; i0 += kThreads) {
      const std::int64_t i = i0 + threadIdx.x;
      float pi = 0.f, dsi = 0.f;
      if (i < s.seq) {
        const float lse_i = lse[(b * s.heads + h) * s.seq + i];
        const float delta_i = delta[(b * s.heads + h) * s.seq + i];
        pi = expf(s.scale * dot(q + qrow(s, b, i, h), ks, D) - lse_i);
        dsi = pi * (dot(dout + qrow(s, b, i, h), vs, D) - delta_i);
      }
      ps[threadIdx.x] = pi;
      dss[threadIdx.x] = dsi;
      __syncthreads();
      const int cnt = static_cast<int>(s.seq - i0 < kThreads ? s.seq - i0 : kThreads);
      for (int c = 0; c < kCols; ++c) {
        const int d = threadIdx.x + c * kThreads;
        if (d >= D) break;
        for (int t = 0; t < cnt; ++t) {
          acc_v[c] += ps[t] * dout[qrow(s, b, i0 + t, h) + d];
          acc_k[c] += dss[t] * q[qrow(s, b, i0 + t, h) + d];
        }
      }
      __syncthreads();
    }
  }
  for (int c = 0; c < kCols; ++c) {
    const int d = threadIdx.x + c * kThreads;
    if (d >= D) continue;
    const std::int64_t x = ((b * n + r) * s.kv_heads + g) * D + d;
    dk[x] = s.scale * acc_k[c];
    dv[x] = acc_v[c];
  }
}

void check_shape(const RefShape& s) {
  CPS_REQUIRE(s.batch >= 1 && s.batch <= 65535, "reference: batch must be in [1, 65535]");
  CPS_REQUIRE(s.seq >= 1 && s.heads >= 1 && s.heads <= 65535 && s.kv_heads >= 1 && s.heads % s.kv_heads == 0,
              "reference: seq >= 1 and heads a multiple of kv_heads");
  CPS_REQUIRE(s.head_dim >= 1 && s.head_dim <= kMaxDim, "reference: head_dim must be in [1, 256]");
}

dim3 grid(std::int64_t n, int heads, int batch) {
  return dim3(static_cast<unsigned>(n), static_cast<unsigned>(heads), static_cast<unsigned>(batch));
}

}  // namespace

void ref_forward(const RefShape& s, const float* q, const float* k, const float* v, const std::int64_t* rows,
                 std::int64_t n, float* o, float* lse, cudaStream_t stream) {
  check_shape(s);
  CPS_REQUIRE(n >= 0 && n <= 0x7fffffff, "reference: row count");
  if (n == 0) return;
  auto* kernel = &fwd_kernel;
  CPS_LAUNCH(kernel, grid(n, s.heads, s.batch), kThreads, 0, stream, s, q, k, v, rows, n, o, lse);
  CPS_CUDA_CHECK_LAUNCH();
}

void ref_delta(const RefShape& s, const float* o, const float* dout, float* delta, cudaStream_t stream) {
  check_shape(s);
  const std::int64_t rows = static_cast<std::int64_t>(s.batch) * s.seq * s.heads;
  const std::int64_t blocks = (rows + kThreads - 1) / kThreads;
  auto* kernel = &delta_kernel;
  CPS_LAUNCH(kernel, static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)), kThreads, 0, stream, s, o, dout,
             delta);
  CPS_CUDA_CHECK_LAUNCH();
}

void ref_backward_dq(const RefShape& s, const float* q, const float* k, const float* v, const float* dout,
                     const float* lse, const float* delta, const std::int64_t* rows, std::int64_t n, float* dq,
                     cudaStream_t stream) {
  check_shape(s);
  CPS_REQUIRE(n >= 0 && n <= 0x7fffffff, "reference: row count");
  if (n == 0) return;
  auto* kernel = &dq_kernel;
  CPS_LAUNCH(kernel, grid(n, s.heads, s.batch), kThreads, 0, stream, s, q, k, v, dout, lse, delta, rows, n, dq);
  CPS_CUDA_CHECK_LAUNCH();
}

void ref_backward_dkv(const RefShape& s, const float* q, const float* k, const float* v, const float* dout,
                      const float* lse, const float* delta, const std::int64_t* rows, std::int64_t n, float* dk,
                      float* dv, cudaStream_t stream) {
  check_shape(s);
  CPS_REQUIRE(n >= 0 && n <= 0x7fffffff, "reference: row count");
  if (n == 0) return;
  auto* kernel = &dkv_kernel;
  CPS_LAUNCH(kernel, grid(n, s.kv_heads, s.batch), kThreads, 0, stream, s, q, k, v, dout, lse, delta, rows, n, dk, dv);
  CPS_CUDA_CHECK_LAUNCH();
}

}  // namespace cpscope::rt::refk
