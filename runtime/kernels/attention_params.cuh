// What the forward and backward kernels share: the block's tensors, ranges, GQA mapping and mask as kernel
// parameters, and the conversion from a (validated) call's arguments.
#pragma once

#include "runtime/kernels/attention_types.h"
#include "runtime/kernels/mma.cuh"
#include "runtime/kernels/tile_load.cuh"
#include "runtime/kernels/tile_math.h"

#include <cstdint>

namespace cpscope::rt::kernels::impl {

using dev::MmaType;
namespace tm = tile;

struct BlockParams {
  const void* q;
  const void* k;
  const void* v;
  std::int64_t q_tokens, kv_tokens;
  int q_heads, kv_heads;
  std::int64_t q_off, q_len, kv_off, kv_len;
  int head_begin, gqa_ratio, kv_head_shift;
  bool causal;
  std::int64_t causal_offset;
  float scale_log2;  // softmax scale * log2(e)
};

inline BlockParams block_params(const AttnInputs& in, const AttnBlockArgs& b) {
  BlockParams p{};
  p.q = in.q;
  p.k = in.k;
  p.v = in.v;
  p.q_tokens = in.q_tokens;
  p.kv_tokens = in.kv_tokens;
  p.q_heads = in.q_heads;
  p.kv_heads = in.kv_heads;
  p.q_off = b.q_off;
  p.q_len = b.q_len;
  p.kv_off = b.kv_off;
  p.kv_len = b.kv_len;
  p.head_begin = b.head_begin;
  p.gqa_ratio = b.gqa_ratio;
  p.kv_head_shift = b.kv_head_shift;
  p.causal = b.causal;
  p.causal_offset = b.causal_offset;
  p.scale_log2 = b.scale * tm::kLog2e;
  return p;
}

}  // namespace cpscope::rt::kernels::impl
