// CUPTI external correlation ids: the 64-bit id cpscope pushes (kind CUSTOM0) around every launch of an
// op, so each GPU activity record maps back to its (rank, op). The id carries the rank because loopback
// runs several virtual ranks in one process, and a tag so ids pushed by another tool on the same kind
// are not mistaken for ours.
#pragma once

#include <cstdint>
#include <optional>

namespace cpscope::rt::instrument {

// Layout: [63..56] tag, [55..32] CP rank, [31..0] op index in the rank's program.
inline constexpr std::uint64_t kKeyTag = 0xC5;
inline constexpr std::int32_t kMaxKeyRank = (1 << 24) - 1;

struct KeyParts {
  std::int32_t rank = 0;
  std::int32_t op = 0;
  bool operator==(const KeyParts&) const = default;
};

// Requires 0 <= rank <= kMaxKeyRank and op >= 0 (the callers hold IR ranks and op ids, so a violation is
// a cpscope bug; the backend checks it before pushing).
constexpr std::uint64_t pack_key(std::int32_t rank, std::int32_t op) {
  return (kKeyTag << 56) | (static_cast<std::uint64_t>(static_cast<std::uint32_t>(rank) & 0xFFFFFFu) << 32) |
         static_cast<std::uint64_t>(static_cast<std::uint32_t>(op));
}

constexpr bool key_packable(std::int32_t rank, std::int32_t op) { return rank >= 0 && rank <= kMaxKeyRank && op >= 0; }

// nullopt for an id without cpscope's tag.
constexpr std::optional<KeyParts> unpack_key(std::uint64_t key) {
  if ((key >> 56) != kKeyTag) return std::nullopt;
  const auto op = static_cast<std::uint32_t>(key & 0xFFFFFFFFu);
  if (op > 0x7FFFFFFFu) return std::nullopt;
  return KeyParts{static_cast<std::int32_t>((key >> 32) & 0xFFFFFFu), static_cast<std::int32_t>(op)};
}

static_assert(unpack_key(pack_key(kMaxKeyRank, 0x7FFFFFFF)) == KeyParts{kMaxKeyRank, 0x7FFFFFFF},
              "the key layout must round-trip the largest rank and op; widen the fields if IR limits grow");
static_assert(!unpack_key(42).has_value(), "an untagged id must not decode");

}  // namespace cpscope::rt::instrument
