// Argument structs of the attention kernels: plain C++ with no CUDA header, so CPU-side code (the SIMT
// emulation tests, argument checks) can use them without the toolkit.
#pragma once

#include <cstdint>

// Layout everywhere: tensors are [batch][tokens][heads][head_dim] contiguous (BSHD); LSE and delta are fp32
// [batch][heads][tokens]. Attention inputs are BF16 or FP16 with head_dim 64 or 128; accumulators are fp32.
namespace cpscope::rt::kernels {

enum class DType : std::uint8_t { BF16, FP16, FP32 };

struct AttnBlockArgs {            // which part of the tensors one call covers
  std::int64_t q_off, q_len;      // query rows [q_off, q_off+q_len) of the Q tensor (and of O, LSE, dO, dQ)
  std::int64_t kv_off, kv_len;    // key rows [kv_off, kv_off+kv_len) of K/V (and of dK, dV)
  int head_begin, head_count;     // query heads (indices into the Q tensor's heads)
  int gqa_ratio;                  // query heads per KV head (>= 1)
  int kv_head_shift;              // KV tensor head of query head h = h / gqa_ratio - kv_head_shift
  bool causal;                    // block-relative key j visible to block-relative query i iff j <= i + causal_offset
  std::int64_t causal_offset;
  float scale;                    // softmax scale, usually 1/sqrt(head_dim)
};

// What both passes read: Q [batch][q_tokens][q_heads][D] and K, V [batch][kv_tokens][kv_heads][D] in dtype.
struct AttnInputs {
  DType dtype; int head_dim; int batch;
  const void* q; std::int64_t q_tokens; int q_heads;
  const void* k; const void* v; std::int64_t kv_tokens; int kv_heads;
};

struct AttnFwdArgs : AttnInputs {
  float* o;      // fp32 [batch][q_tokens][q_heads][D]: normalised output of the rows/heads covered
  float* lse;    // fp32 [batch][q_heads][q_tokens], natural log
  bool merge;    // true: merge with the existing (o, lse) of those rows by the stable LSE update
                 //   lse' = logaddexp(lse_old, lse_blk); o' = o_old·exp(lse_old-lse') + o_blk·exp(lse_blk-lse')
                 //   (lse_old = -inf means empty: a copy); false: overwrite.
  AttnBlockArgs blk;
};

struct AttnBwdArgs : AttnInputs {
  const void* dout;        // [batch][q_tokens][q_heads][D] in dtype
  const float* lse;        // final (fully merged) forward LSE
  const float* delta;      // from attn_bwd_preprocess
  float* dq;               // fp32, same shape as Q: ADDS this block's dQ contribution
  float* dk; float* dv;    // fp32, same shape as K/V: ADD this block's dK/dV (GQA: summed over the query heads of each KV head)
  AttnBlockArgs blk;
};

// Converts/copies a sub-block between tensors of different shape and dtype: rows [src_row, +rows), heads
// [src_head, +heads) of src -> rows [dst_row, +rows), heads [dst_head, +heads) of dst, all head_dim; `add`
// adds into dst instead of overwriting.
struct CopyBlockArgs {
  DType src_dtype, dst_dtype; const void* src; void* dst; int batch;
  std::int64_t src_tokens; int src_heads; std::int64_t dst_tokens; int dst_heads; int head_dim;
  std::int64_t src_row, dst_row, rows; int src_head, dst_head, heads; bool add;
  // Device memory, `rows` entries: dst row dst_row + r takes src row src_row + row_map[r] (null: src_row + r).
  const std::int64_t* row_map = nullptr;
};

}  // namespace cpscope::rt::kernels
