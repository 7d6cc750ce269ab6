// Merging per-file traces: dense rank numbering, re-interned names and streams, a common time origin.
#include "sim/trace/trace.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <tuple>

#include "sim/error.h"

namespace cpscope::trace {

std::int32_t stream_index(Timeline& timeline, const std::string& label) {
  // Traces have a handful of streams; a linear scan beats a map and keeps Timeline unchanged.
  for (std::size_t i = 0; i < timeline.streams.size(); ++i)
    if (timeline.streams[i] == label) return static_cast<std::int32_t>(i);
  timeline.streams.push_back(label);
  return static_cast<std::int32_t>(timeline.streams.size() - 1);
}

Trace merge_traces(std::vector<Trace> parts) {
  // Global rank order over every (part, local rank).
  struct Key {
    std::int64_t order, pid, device;
    std::size_t part, local;
  };
  std::vector<Key> keys;
  for (std::size_t p = 0; p < parts.size(); ++p)
    for (std::size_t r = 0; r < parts[p].ranks.size(); ++r) {
      const RankSource& s = parts[p].ranks[r];
      keys.push_back({s.order, s.pid, s.device, p, r});
    }
  std::stable_sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
    return std::tie(a.order, a.pid, a.device, a.part) < std::tie(b.order, b.pid, b.device, b.part);
  });
  std::vector<std::vector<std::int32_t>> rank_of(parts.size());
  for (std::size_t p = 0; p < parts.size(); ++p) rank_of[p].assign(parts[p].ranks.size(), -1);

  Trace out;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    rank_of[keys[i].part][keys[i].local] = static_cast<std::int32_t>(i);
    out.ranks.push_back(parts[keys[i].part].ranks[keys[i].local]);
  }
  out.timeline.num_ranks = static_cast<std::int32_t>(keys.size());

  Nanos origin = std::numeric_limits<Nanos>::max();
  for (const Trace& t : parts) {
    for (const Interval& iv : t.timeline.intervals) origin = std::min(origin, iv.start);
    for (const Range& r : t.ranges) origin = std::min(origin, r.start);
  }
  if (origin == std::numeric_limits<Nanos>::max()) origin = 0;

  // One part (the common case, and the multi-GB one): move and shift in place, no second copy.
  if (parts.size() == 1) {
    Trace t = std::move(parts[0]);
    for (Interval& iv : t.timeline.intervals) {
      iv.rank = rank_of[0][iv.rank];
      iv.start -= origin;
      iv.end -= origin;
    }
    for (Range& r : t.ranges) {
      r.rank = rank_of[0][r.rank];
      r.start -= origin;
      r.end -= origin;
    }
    t.ranks = std::move(out.ranks);
    t.timeline.num_ranks = out.timeline.num_ranks;
    t.origin_ns = t.origin_ns + origin;
    return t;
  }

  std::string format;
  for (Trace& t : parts) {
    std::vector<std::uint32_t> name_map(t.timeline.names().size());
    for (std::size_t i = 0; i < name_map.size(); ++i) name_map[i] = out.timeline.intern(t.timeline.names()[i]);
    std::vector<std::int32_t> stream_map(t.timeline.streams.size());
    for (std::size_t i = 0; i < stream_map.size(); ++i) stream_map[i] = stream_index(out.timeline, t.timeline.streams[i]);
    const std::size_t p = static_cast<std::size_t>(&t - parts.data());
    for (Interval iv : t.timeline.intervals) {
      iv.rank = rank_of[p][iv.rank];
      iv.stream = stream_map[iv.stream];
      iv.name = name_map[iv.name];
      iv.start -= origin;
      iv.end -= origin;
      out.timeline.intervals.push_back(iv);
    }
    t.timeline.intervals = {};  // free as we go
    for (Range r : t.ranges) {
      r.rank = rank_of[p][r.rank];
      r.name = name_map[r.name];
      r.domain = name_map[r.domain];
      r.start -= origin;
      r.end -= origin;
      out.ranges.push_back(r);
    }
    for (std::string& w : t.warnings) out.warnings.push_back(std::move(w));
    format = format.empty() || format == t.format ? t.format : "mixed";
  }
  out.format = format;
  out.origin_ns = origin;
  return out;
}

}  // namespace cpscope::trace
