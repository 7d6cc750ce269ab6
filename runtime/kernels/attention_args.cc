// Argument checks of the attention launchers: shapes, ranges, GQA head mapping, alignment, grid limits.
#include "runtime/kernels/attention_args.h"

#include "runtime/kernels/check.h"

#include <cmath>
#include <cstdint>
#include <string>

namespace cpscope::rt::kernels {
namespace {

constexpr std::int64_t kMaxGridYZ = 65535;  // grid.y = heads of the block, grid.z = batch

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// Common to forward and backward; returns false for an empty block.
bool validate_common(const AttnInputs& in, const AttnBlockArgs& b) {
  const auto& [dtype, head_dim, batch, q, q_tokens, q_heads, k, v, kv_tokens, kv_heads] = in;
  CPS_REQUIRE(dtype == DType::BF16 || dtype == DType::FP16, "attention inputs must be BF16 or FP16");
  CPS_REQUIRE(head_dim == 64 || head_dim == 128, "head_dim must be 64 or 128");
  CPS_REQUIRE(batch >= 0 && q_tokens >= 0 && kv_tokens >= 0 && q_heads > 0 && kv_heads > 0, "tensor shape");
  CPS_REQUIRE(b.q_off >= 0 && b.q_len >= 0 && b.q_off + b.q_len <= q_tokens, "query rows outside the Q tensor");
  CPS_REQUIRE(b.kv_off >= 0 && b.kv_len >= 0 && b.kv_off + b.kv_len <= kv_tokens, "key rows outside the K/V tensor");
  CPS_REQUIRE(b.head_begin >= 0 && b.head_count >= 0 && b.head_begin + b.head_count <= q_heads,
              "query heads outside the Q tensor");
  CPS_REQUIRE(b.gqa_ratio >= 1, "gqa_ratio must be >= 1");
  CPS_REQUIRE(std::isfinite(b.scale), "scale must be finite");
  CPS_REQUIRE(batch <= kMaxGridYZ && b.head_count <= kMaxGridYZ, "batch and head_count are limited to 65535");
  if (batch == 0 || b.head_count == 0 || b.q_len == 0) return false;
  const int first_kv = b.head_begin / b.gqa_ratio - b.kv_head_shift;
  const int last_kv = (b.head_begin + b.head_count - 1) / b.gqa_ratio - b.kv_head_shift;
  CPS_REQUIRE(first_kv >= 0 && last_kv < kv_heads, "a query head maps to a KV head outside the K/V tensor");
  CPS_REQUIRE(q != nullptr && aligned16(q), "q must be a 16-byte aligned device pointer");
  if (b.kv_len > 0) {
    CPS_REQUIRE(k != nullptr && v != nullptr && aligned16(k) && aligned16(v),
                "k and v must be 16-byte aligned device pointers");
  }
  return true;
}

}  // namespace

std::size_t dtype_bytes(DType dt) {
  switch (dt) {
    case DType::BF16:
    case DType::FP16:
      return 2;
    case DType::FP32:
      return 4;
  }
  CPS_REQUIRE(false, "unknown DType");
  return 0;
}

bool validate_fwd(const AttnFwdArgs& a) {
  if (!validate_common(a, a.blk)) return false;
  CPS_REQUIRE(a.o != nullptr && a.lse != nullptr && aligned16(a.o), "o (16-byte aligned) and lse must be set");
  return true;
}

bool validate_bwd(const AttnBwdArgs& a) {
  if (!validate_common(a, a.blk)) return false;
  if (a.blk.kv_len == 0) return false;  // no key: no gradient
  CPS_REQUIRE(a.dout != nullptr && aligned16(a.dout), "dout must be a 16-byte aligned device pointer");
  CPS_REQUIRE(a.lse != nullptr && a.delta != nullptr, "lse and delta must be set");
  CPS_REQUIRE(a.dq != nullptr && a.dk != nullptr && a.dv != nullptr && aligned16(a.dq) && aligned16(a.dk) &&
                  aligned16(a.dv),
              "dq, dk and dv must be 16-byte aligned device pointers");
  return true;
}

}  // namespace cpscope::rt::kernels
