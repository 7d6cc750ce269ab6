// Double-precision attention of one block for the host backend (Eigen): forward with the stable LSE
// merge, backward adding into dQ and dK/dV. Tensors are one plane of [batch][rows][heads][dim].
#pragma once

#include <cstdint>

namespace cpscope::rt::host {

struct TensorView {
  double* data = nullptr;  // plane start
  std::int64_t rows = 0;
  std::int32_t heads = 0;
  std::int32_t dim = 0;
  double* at(std::int64_t b, std::int64_t row, std::int32_t head) const {
    return data + ((b * rows + row) * heads + head) * dim;
  }
};

struct BlockSpec {
  std::int64_t batch = 1;
  std::int64_t q_off = 0, q_len = 0, kv_off = 0, kv_len = 0;
  std::int32_t head_begin = 0, head_count = 0;
  std::int32_t gqa_ratio = 1, kv_head_shift = 0;
  bool causal = false;
  std::int64_t causal_offset = 0;  // block key j visible to block query i iff j <= i + causal_offset
  double scale = 1.0;
};

// Merges the block's attention into (o, lse): lse' = logaddexp(lse, lse_blk),
// o' = o·exp(lse - lse') + o_blk·exp(lse_blk - lse'). Rows that see no key are left unchanged.
void attend_fwd(const BlockSpec& s, const TensorView& q, const TensorView& k, const TensorView& v,
                const TensorView& o, const TensorView& lse);

// Adds the block's dQ into dq and its dK, dV into dk, dv, from the final o and lse of the forward.
void attend_bwd(const BlockSpec& s, const TensorView& q, const TensorView& k, const TensorView& v,
                const TensorView& o, const TensorView& lse, const TensorView& dout, const TensorView& dq,
                const TensorView& dk, const TensorView& dv);

}  // namespace cpscope::rt::host
