// The measured Timeline: op intervals recorded by a backend (host clocks, or CUPTI GPU timestamps)
// turned into the Timeline the simulator also produces, so one analysis and one set of reporters
// serve both. Interval kinds are the simulator's (interval_kind in sim/timeline.h).
#pragma once

#include <cstdint>
#include <vector>

#include "sim/schedule.h"
#include "sim/timeline.h"

namespace cpscope::rt {

struct OpInterval {
  std::int32_t rank = 0;
  std::int32_t op = -1;      // index into the rank's program
  std::int64_t start_ns = 0, end_ns = 0;  // any clock; shifted so the earliest start is 0
};

// One interval per recorded op, named op_name(op), with the op's stream, step, pass, bytes, FLOPs.
Timeline measured_timeline(const Schedule& schedule, const std::vector<OpInterval>& ops);

}  // namespace cpscope::rt
