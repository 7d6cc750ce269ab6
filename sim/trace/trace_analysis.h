// What cp-trace reports: per-rank busy/exposed/overlap/idle (summary), the same per annotation range
// (steps), and the kernels that take the time. Built on sim/analysis.h's interval unions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sim/trace/classify.h"
#include "sim/trace/trace.h"

namespace cpscope::trace {

// Unions are per rank, across streams. overlap = |comm ∩ compute| / |comm| (Holistic Trace Analysis'
// "communication computation overlap"), < 0 when the rank has no communication. idle = span - |busy|
// where busy is the union of compute, comm and memory and span the rank's first start to last end
// (per-rank, so traces of ranks that start at different times are not charged for the others).
struct RankReport {
  std::int32_t rank = 0;
  Nanos span_ns = 0, busy_ns = 0, idle_ns = 0;
  Nanos compute_ns = 0, attention_ns = 0, comm_ns = 0, memory_ns = 0, exposed_comm_ns = 0;
  double overlap = -1.0;
  std::int64_t kernels = 0;
};

struct KernelStat {
  std::string name;
  KernelClass cls = KernelClass::OtherCompute;
  std::int64_t count = 0;
  Nanos total_ns = 0, max_ns = 0;
};

struct TraceSummary {
  Nanos wall_ns = 0;  // earliest start to latest end over all ranks
  std::vector<RankReport> ranks;
  // A cpscope profile's ranks without intervals (a replay profile traces one rank of N): left out of `ranks`.
  std::vector<std::int32_t> untraced_ranks;
  std::vector<KernelStat> top_kernels;  // by total time, all ranks
};

TraceSummary summarize_trace(const Trace&, const Classifier&, std::size_t top = 10);

// One row per (step label, rank). A range is selected when `pattern` matches its name; its label is
// the matched text, so "^(fwd|bwd)/step\d+" groups cpscope's "fwd/step3/attend" and "fwd/step3/sendrecv"
// into "fwd/step3". The windows of one label on one rank are merged, intervals clipped to them, and
// span_ns is the merged windows' length.
struct StepRow {
  std::string label;
  std::int64_t ranges = 0;  // annotation ranges merged into this row
  Nanos first_start_ns = 0;
  RankReport metrics;
};

struct StepsReport {
  std::string pattern;
  std::vector<StepRow> rows;  // by first start, then rank
};

StepsReport summarize_steps(const Trace&, const Classifier&, const std::string& pattern);

// The class of every interval name (Memory kind intervals are Memory whatever their name).
std::vector<KernelClass> classify_names(const Timeline&, const Classifier&);

}  // namespace cpscope::trace
