#include "runtime/instrument/op_intervals.h"

#include <algorithm>
#include <limits>
#include <map>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "runtime/instrument/correlation.h"
#include "sim/error.h"

namespace cpscope::rt::instrument {

namespace {
// The launch windows' claims: correlation id -> key, for the API calls that began inside exactly one window
// and that no external correlation claims already.
std::unordered_map<std::uint32_t, std::uint64_t> window_claims(std::vector<LaunchWindow> windows,
                                                               const std::vector<ApiRecord>& api,
                                                               const std::unordered_map<std::uint32_t, std::uint64_t>& key_of) {
  std::unordered_map<std::uint32_t, std::uint64_t> claims;
  if (windows.empty()) return claims;
  std::sort(windows.begin(), windows.end(),
            [](const LaunchWindow& a, const LaunchWindow& b) { return a.begin_ns < b.begin_ns; });
  // reach[i]: the latest end among windows 0..i, so "does an earlier window also contain t" is one lookup.
  std::vector<std::uint64_t> reach(windows.size());
  for (std::size_t i = 0; i < windows.size(); ++i)
    reach[i] = std::max(windows[i].end_ns, i > 0 ? reach[i - 1] : 0);
  for (const ApiRecord& c : api) {
    if (key_of.contains(c.correlation)) continue;
    const auto after = std::upper_bound(windows.begin(), windows.end(), c.start_ns,
                                        [](std::uint64_t t, const LaunchWindow& w) { return t < w.begin_ns; });
    if (after == windows.begin()) continue;
    const auto i = static_cast<std::size_t>(after - windows.begin()) - 1;
    const bool inside = windows[i].end_ns >= c.start_ns;
    const bool shared = i > 0 && reach[i - 1] >= c.start_ns;  // overlapping windows: whose call is unknown
    if (inside && !shared) claims[c.correlation] = windows[i].key;
  }
  return claims;
}
}  // namespace

Attribution attribute_records(const std::vector<GpuRecord>& records, const std::vector<CorrelationRecord>& correlations,
                              const std::vector<ApiRecord>& api, const std::vector<LaunchWindow>& windows) {
  std::unordered_map<std::uint32_t, std::uint64_t> key_of;
  key_of.reserve(correlations.size());
  for (const CorrelationRecord& c : correlations) key_of[c.correlation] = c.key;
  const std::unordered_map<std::uint32_t, std::uint64_t> claims = window_claims(windows, api, key_of);
  std::map<std::pair<std::int32_t, std::int32_t>, OpInterval> by_op;
  Attribution a;
  for (const GpuRecord& r : records) {
    if (r.start_ns == 0 && r.end_ns == 0) {
      ++a.untimed;
      continue;
    }
    std::optional<std::uint64_t> key;
    bool windowed = false;
    if (const auto f = key_of.find(r.correlation); f != key_of.end()) {
      key = f->second;
    } else if (const auto g = claims.find(r.correlation); g != claims.end()) {
      key = g->second;
      windowed = true;
    }
    const std::optional<KeyParts> k = key ? unpack_key(*key) : std::nullopt;
    if (!k) {
      ++a.unattributed;
      continue;
    }
    ++a.attributed;
    a.windowed += windowed;
    const auto start = static_cast<std::int64_t>(r.start_ns);
    const auto end = static_cast<std::int64_t>(std::max(r.end_ns, r.start_ns));
    auto [pos, fresh] = by_op.try_emplace({k->rank, k->op}, OpInterval{k->rank, k->op, start, end});
    if (!fresh) {
      pos->second.start_ns = std::min(pos->second.start_ns, start);
      pos->second.end_ns = std::max(pos->second.end_ns, end);
    }
  }
  a.ops.reserve(by_op.size());
  for (auto& [key, iv] : by_op) a.ops.push_back(iv);
  return a;
}

void shift_clock(std::vector<OpInterval>& ops, std::int64_t offset_ns) {
  for (OpInterval& o : ops) {
    o.start_ns -= offset_ns;
    o.end_ns -= offset_ns;
  }
}

std::int64_t clock_offset(const std::vector<ClockPing>& rounds) {
  CPSCOPE_CHECK(!rounds.empty(), "clock offset from no round trips");
  const ClockPing* best = nullptr;
  for (const ClockPing& p : rounds) {
    CPSCOPE_CHECK(p.received >= p.sent,
                  fmt::format("clock round trip received at {} ns before it was sent at {} ns", p.received, p.sent));
    if (best == nullptr || p.received - p.sent < best->received - best->sent) best = &p;
  }
  // (sent + received) / 2 without the sum, which readings near 2^63 ns would overflow.
  return best->sent + (best->received - best->sent) / 2 - best->reference;
}

std::vector<std::int64_t> flatten(const std::vector<OpInterval>& ops) {
  std::vector<std::int64_t> flat;
  flat.reserve(ops.size() * kFlatFields);
  for (const OpInterval& o : ops) flat.insert(flat.end(), {o.rank, o.op, o.start_ns, o.end_ns});
  return flat;
}

std::vector<OpInterval> unflatten(const std::vector<std::int64_t>& flat) {
  CPSCOPE_CHECK(flat.size() % kFlatFields == 0,
                fmt::format("gathered interval array of {} values is not a multiple of {}", flat.size(), kFlatFields));
  std::vector<OpInterval> ops(flat.size() / kFlatFields);
  constexpr auto kI32 = std::numeric_limits<std::int32_t>::max();
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const std::int64_t* f = flat.data() + i * kFlatFields;
    CPSCOPE_CHECK(f[0] >= 0 && f[0] <= kI32 && f[1] >= 0 && f[1] <= kI32,
                  fmt::format("gathered interval {} has rank {} op {}", i, f[0], f[1]));
    ops[i] = OpInterval{static_cast<std::int32_t>(f[0]), static_cast<std::int32_t>(f[1]), f[2], f[3]};
  }
  return ops;
}

std::vector<MissingOp> missing_ops(const Schedule& schedule, const std::vector<std::int32_t>& ranks,
                                   const std::vector<OpInterval>& ops) {
  std::vector<std::vector<bool>> seen(schedule.ranks.size());
  for (std::size_t r = 0; r < schedule.ranks.size(); ++r) seen[r].assign(schedule.ranks[r].ops.size(), false);
  for (const OpInterval& o : ops)
    if (o.rank >= 0 && static_cast<std::size_t>(o.rank) < seen.size() && o.op >= 0 &&
        static_cast<std::size_t>(o.op) < seen[static_cast<std::size_t>(o.rank)].size())
      seen[static_cast<std::size_t>(o.rank)][static_cast<std::size_t>(o.op)] = true;
  std::vector<MissingOp> missing;
  for (std::int32_t r : ranks) {
    CPSCOPE_CHECK(r >= 0 && static_cast<std::size_t>(r) < seen.size(), fmt::format("rank {} is not in the schedule", r));
    const auto& s = seen[static_cast<std::size_t>(r)];
    for (std::size_t i = 0; i < s.size(); ++i)
      if (!s[i]) missing.push_back({r, static_cast<std::int32_t>(i)});
  }
  return missing;
}

}  // namespace cpscope::rt::instrument
