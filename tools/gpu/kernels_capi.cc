// A C ABI over the attention kernels, loaded by tools/gpu/sdpa_compare.py with ctypes so cpscope's
// kernels and PyTorch's scaled_dot_product_attention run on the same tensors in the same process
// (same card, same clocks, same run). Pointers are device pointers from torch tensors; tensors are
// [batch][tokens][heads][head_dim] (BSHD), LSE and delta fp32 [batch][heads][tokens].
// Every function returns 0, or -1 with the message in cps_last_error().
#include <cmath>
#include <cstdint>
#include <exception>
#include <string>

#include "runtime/kernels/attention.h"

namespace {

thread_local std::string g_error;

namespace k = cpscope::rt::kernels;

k::AttnBlockArgs whole_block(std::int64_t seq_q, std::int64_t seq_kv, int heads, int kv_heads, int head_dim,
                             int causal) {
  k::AttnBlockArgs b{};
  b.q_off = 0;
  b.q_len = seq_q;
  b.kv_off = 0;
  b.kv_len = seq_kv;
  b.head_begin = 0;
  b.head_count = heads;
  b.gqa_ratio = heads / kv_heads;
  b.kv_head_shift = 0;
  b.causal = causal != 0;
  b.causal_offset = 0;
  b.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  return b;
}

// Q, K and V of the same length (the whole sequence); dtype: 0 bf16, 1 fp16.
k::AttnInputs whole_inputs(int dtype, int head_dim, int batch, const void* q, const void* k_, const void* v,
                           std::int64_t seq, int heads, int kv_heads) {
  return {dtype == 0 ? k::DType::BF16 : k::DType::FP16, head_dim, batch, q, seq, heads, k_, v, seq, kv_heads};
}

template <class F>
int guarded(F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    g_error = e.what();
    return -1;
  }
}

}  // namespace

extern "C" {

const char* cps_last_error() { return g_error.c_str(); }

// dtype: 0 bf16, 1 fp16. O fp32 [B][S][H][D] (overwritten), LSE fp32 [B][H][S].
int cps_attn_fwd(int dtype, int head_dim, int batch, const void* q, const void* k_, const void* v, float* o,
                 float* lse, std::int64_t seq, int heads, int kv_heads, int causal, void* stream) {
  return guarded([&] {
    const k::AttnFwdArgs a{whole_inputs(dtype, head_dim, batch, q, k_, v, seq, heads, kv_heads), o, lse, false,
                           whole_block(seq, seq, heads, kv_heads, head_dim, causal)};
    k::attn_fwd(a, static_cast<cudaStream_t>(stream));
  });
}

// The backward of the whole sequence: preprocess (delta from fp32 O and dO) then the block kernel,
// adding into dq, dk, dv (fp32; the caller zeroes them).
int cps_attn_bwd(int dtype, int head_dim, int batch, const void* q, const void* k_, const void* v, const float* o,
                 const void* dout, const float* lse, float* delta, float* dq, float* dk, float* dv, std::int64_t seq,
                 int heads, int kv_heads, int causal, void* stream) {
  return guarded([&] {
    const k::AttnInputs in = whole_inputs(dtype, head_dim, batch, q, k_, v, seq, heads, kv_heads);
    const auto s = static_cast<cudaStream_t>(stream);
    k::attn_bwd_preprocess(k::DType::FP32, in.dtype, o, dout, delta, batch, seq, heads, head_dim, s);
    k::attn_bwd(k::AttnBwdArgs{in, dout, lse, delta, dq, dk, dv, whole_block(seq, seq, heads, kv_heads, head_dim, causal)},
                s);
  });
}

}  // extern "C"
