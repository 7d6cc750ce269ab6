// Plain single-device attention in double precision: the reference every schedule's gathered output
// is checked against. Deliberately naive (direct loops, no blocking, no LSE merging) so it shares no
// code or shortcut with the executor or the backends' block kernels.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/layout.h"
#include "sim/workload.h"

namespace cpscope::rt {

// Global tensors, [batch][seq][heads][head_dim] (K, V, dK, dV with kv_heads); lse [batch][seq][heads].
struct AttentionData {
  std::vector<double> q, k, v, dout;  // inputs
  std::vector<double> o, lse;         // forward outputs (inputs of a backward-only run)
  std::vector<double> dq, dk, dv;     // backward outputs
};

// The inputs random_inputs generates, one tensor each.
enum class InputTensor : std::uint8_t { Q = 0, K = 1, V = 2, Do = 3 };
// The value random_inputs puts at flat `index` of tensor `which`: a counter-based hash (splitmix64),
// uniform in [-1, 1), so a rank can generate exactly its own shard of a 1M-token sequence without
// building the global tensors.
double input_value(std::uint64_t seed, InputTensor which, std::int64_t index);
// The global tensor a rank's input load reads (RankLayout::loads()).
const std::vector<double>& input_tensor(const AttentionData& d, RankLayout::Source s);

// Deterministic pseudo-random q, k, v, dout in [-1, 1) (o, lse, gradients empty).
AttentionData random_inputs(const Workload& w, std::uint64_t seed);
// Fills o and lse.
void reference_forward(const Workload& w, AttentionData& d);
// Fills dq, dk, dv from q, k, v, dout, o and lse.
void reference_backward(const Workload& w, AttentionData& d);

// max |a - b| / max |b| (normwise relative error); infinity when sizes differ or a value is NaN.
double relative_error(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace cpscope::rt
