// Units used across cpscope: integer nanoseconds, bytes and FLOPs carry their unit in the type name.
#pragma once

#include <cstdint>

namespace cpscope {

// Simulated and measured time: integer nanoseconds, so the engine is deterministic and exact.
using Nanos = std::int64_t;
// Sizes of buffers and messages.
using Bytes = std::int64_t;
// Floating-point operation counts. Integer so conservation across ranks is exact.
using Flops = std::int64_t;

inline constexpr Nanos kNanosPerSecond = 1'000'000'000;
inline constexpr Bytes kKiB = 1024;
inline constexpr Bytes kMiB = 1024 * kKiB;
inline constexpr Bytes kGiB = 1024 * kMiB;

}  // namespace cpscope
