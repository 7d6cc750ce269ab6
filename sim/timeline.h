// Timeline: the single currency of cpscope. The engine, the runtime tracer and the trace readers
// write it; analysis, export, calibration and comparison read only it.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sim/schedule.h"
#include "sim/units.h"

namespace cpscope {

enum class IntervalKind : std::uint8_t { Compute, Comm, Memory };
std::string_view to_string(IntervalKind);
// How an op of the schedule IR counts in a Timeline: attention is compute, DkvAdd and Layout are
// memory-bound, transfers and collectives are communication. The simulator and the runtime's measured
// timelines both use this.
IntervalKind interval_kind(OpKind);

struct Interval {
  std::int32_t rank = 0;
  std::int32_t stream = 0;      // index into Timeline::streams
  IntervalKind kind = IntervalKind::Compute;
  std::uint32_t name = 0;       // index into Timeline::names (e.g. "fwd/step3/attend", a kernel name)
  std::int64_t op_id = -1;      // schedule op id, or -1 when unknown (foreign traces)
  std::int32_t step = -1;       // CP step, or -1
  std::int8_t pass = -1;        // 0 fwd, 1 bwd, -1 unknown
  Nanos start = 0;
  Nanos end = 0;
  Bytes bytes = 0;
  Flops flops = 0;
  Nanos duration() const { return end - start; }
};

class Timeline {
 public:
  std::int32_t num_ranks = 0;
  std::vector<std::string> streams;   // stream names, shared by all ranks
  std::vector<Interval> intervals;    // any order; sort_by_start() orders by (rank, start, stream)

  // Interns a name and returns its index (stable).
  std::uint32_t intern(std::string_view name);
  const std::string& name(std::uint32_t id) const { return names_[id]; }
  const std::vector<std::string>& names() const { return names_; }
  void sort_by_start();

  // The ranks that have intervals. A replay profile (cp-profile --transport replay) has one rank of the
  // schedule's N; a simulated timeline has them all.
  std::set<std::int32_t> ranks_with_intervals() const;
  // This timeline without the intervals of any rank outside `ranks` (names and streams kept).
  void keep_ranks(const std::set<std::int32_t>& ranks);

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, std::uint32_t> name_ids_;
};

}  // namespace cpscope
