// Integers in the JSON that cpscope reads (workload configs, hardware profiles, profiles, bench rows):
// one rule for every reader, so a value one accepts another does not refuse, and none wraps around.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

namespace cpscope {

// The value of a JSON number that is an integer within int64: 2 and 2.0 alike (notebooks write integral
// floats). nullopt for 2.5, 1e30, 18446744073709551615, NaN and anything that is not a number; the
// caller names the field and the rule in its error.
inline std::optional<std::int64_t> json_integer(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
    return static_cast<std::int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<std::int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // [-2^63, 2^63): both bounds exact in a double; beyond them the conversion is undefined.
    if (std::isfinite(d) && d == std::floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
      return static_cast<std::int64_t>(d);
  }
  return std::nullopt;
}

}  // namespace cpscope
