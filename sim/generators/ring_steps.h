// Internal to the generators: the ring (pass-KV) step structure shared by ring, zigzag-ring and the
// ring part of hybrid, parameterised by the ring's members, heads and token layout.
#pragma once

#include <cstdint>

#include "sim/generators/builder.h"

namespace cpscope::gen {

// One rank's view of its ring. Ring position j is CP rank base + j·stride (ring: base 0, stride 1;
// hybrid: base u, stride U). Every position holds `tokens` query and key rows of `head_count` query
// heads and `kv_heads` KV heads; zigzag means those rows are chunks j and 2R-1-j of 2R chunks.
struct RingSpec {
  std::int64_t size = 1;  // R
  std::int64_t pos = 0;   // this rank's position
  std::int32_t base = 0;
  std::int32_t stride = 1;
  std::int64_t tokens = 0;  // L = S/R
  bool zigzag = false;
  Mask mask = Mask::Causal;
  std::int32_t head_begin = 0;  // query heads this ring attends
  std::int32_t head_count = 0;
  std::int64_t kv_heads = 0;  // KV heads its K/V blocks carry

  std::int32_t member(std::int64_t j) const {
    const std::int64_t m = j >= 0 && j < size ? j : ((j % size) + size) % size;
    return static_cast<std::int32_t>(base + m * stride);
  }
  // K (and V) bytes of one ring block at `elem` bytes per element: 2·B·L·Hkv_ring·D·elem.
  Bytes kv_bytes(const Workload& w, Bytes elem) const { return 2 * w.batch * tokens * kv_heads * w.head_dim * elem; }
};

// The attention block of this rank's Q against the K/V block of ring position `src`, or false when
// the causal mask hides all of it. Same rule forward and backward.
bool ring_block(const RingSpec& r, std::int64_t src, AttnBlock* out);

// Forward ring slot of step i: 0 is the rank's own K/V, then receives alternate in slots 1 and 2.
inline std::int32_t ring_fwd_slot(std::int64_t step) {
  return step == 0 ? 0 : static_cast<std::int32_t>(1 + (step - 1) % 2);
}

// Emits the forward ring: R attention steps and R-1 K/V SendRecvs on "comm".
void emit_ring_forward(RankBuilder& b, const RingSpec& r);
// Where the backward leaves the rank's own dK/dV: the tracked buffer and its IR operand.
struct DkvHome {
  Res res;
  Transfer operand;
};
// Emits the backward ring for workload().dkv and returns where this rank's own dK/dV end up (for the
// hybrid's all-to-all to read).
DkvHome emit_ring_backward(RankBuilder& b, const RingSpec& r);

// Peak-memory entries of the ring part (slots, accumulators, scratch) for one rank.
void add_ring_buffers(RankProgram& prog, const Workload& w, const RingSpec& r);

// Ops per rank of the ring part, an upper bound for reserve().
std::size_t ring_ops_estimate(const Workload& w, const RingSpec& r);

}  // namespace cpscope::gen
