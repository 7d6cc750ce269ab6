// Timeline: interned names and ordering of intervals.
#include "sim/timeline.h"

#include <algorithm>
#include <tuple>

namespace cpscope {

std::string_view to_string(IntervalKind k) {
  switch (k) {
    case IntervalKind::Compute: return "compute";
    case IntervalKind::Comm: return "comm";
    case IntervalKind::Memory: return "memory";
  }
  return "unknown";
}

IntervalKind interval_kind(OpKind k) {
  switch (k) {
    case OpKind::Attend:
    case OpKind::AttendBwd:
      return IntervalKind::Compute;
    case OpKind::DkvAdd:
    case OpKind::Layout:
      return IntervalKind::Memory;
    case OpKind::SendRecv:
    case OpKind::AllGather:
    case OpKind::AllToAll:
    case OpKind::ReduceScatter:
      return IntervalKind::Comm;
  }
  return IntervalKind::Comm;
}

std::uint32_t Timeline::intern(std::string_view name) {
  std::string key(name);
  auto it = name_ids_.find(key);
  if (it != name_ids_.end()) return it->second;
  const auto id = static_cast<std::uint32_t>(names_.size());
  names_.push_back(key);
  name_ids_.emplace(std::move(key), id);
  return id;
}

void Timeline::sort_by_start() {
  // Stable, so intervals that tie on (rank, start, stream) keep their recorded order: the same input
  // always gives the same order.
  std::stable_sort(intervals.begin(), intervals.end(), [](const Interval& a, const Interval& b) {
    return std::tie(a.rank, a.start, a.stream) < std::tie(b.rank, b.start, b.stream);
  });
}

std::set<std::int32_t> Timeline::ranks_with_intervals() const {
  std::set<std::int32_t> r;
  for (const Interval& iv : intervals) r.insert(iv.rank);
  return r;
}

void Timeline::keep_ranks(const std::set<std::int32_t>& ranks) {
  std::erase_if(intervals, [&](const Interval& iv) { return ranks.count(iv.rank) == 0; });
}

}  // namespace cpscope
