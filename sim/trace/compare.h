// cp-trace compare: two timelines of the same configuration (measured vs cp-sim, or two runs) aligned
// by op name and step. Both sides are reduced to op intervals (op_timeline.h) when they have cpscope
// op ranges; otherwise both are compared kernel by kernel (name = kernel name, no steps).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sim/trace/trace.h"

namespace cpscope::trace {

struct OpDiff {
  std::string name;  // "fwd/step3/attend", or a kernel name
  std::int64_t count_a = 0, count_b = 0;
  Nanos total_a_ns = 0, total_b_ns = 0;  // summed over ranks and occurrences
  Nanos mean_a_ns = 0, mean_b_ns = 0;    // total / count (0 when absent)
};

// A step = every op of one (pass, CP step) on every rank: its span is the latest end minus the
// earliest start over ranks, so it includes waiting for the slowest rank.
struct StepDiff {
  std::string step;  // "fwd/step3"
  Nanos span_a_ns = 0, span_b_ns = 0;
  bool in_a = false, in_b = false;
};

struct CompareReport {
  std::string basis;  // "ops" or "kernels"
  Nanos wall_a_ns = 0, wall_b_ns = 0;
  std::vector<OpDiff> ops;      // by name
  std::vector<StepDiff> steps;  // fwd before bwd, by step
  std::vector<std::string> warnings;
};

CompareReport compare_traces(const Trace& a, const Trace& b);

}  // namespace cpscope::trace
