// Analysis of a Timeline: step time, per-rank busy/exposed/idle, memory; the numbers every report shows.
#pragma once

#include <cstdint>
#include <vector>

#include "sim/engine.h"
#include "sim/schedule.h"
#include "sim/timeline.h"

namespace cpscope {

struct RankMetrics {
  std::int32_t rank = 0;
  Nanos span_ns = 0;          // first start to last end on this rank
  Nanos compute_ns = 0;       // union of Compute intervals (all streams)
  Nanos comm_ns = 0;          // union of Comm intervals
  Nanos exposed_comm_ns = 0;  // |comm \ compute|: communication not overlapped by compute
  Nanos idle_ns = 0;          // step time minus |compute ∪ comm ∪ memory| on this rank
  Bytes bytes_sent = 0;
  Flops flops = 0;
  Bytes peak_memory_bytes = 0;  // from the schedule's buffers (0 for foreign traces)
};

struct Summary {
  Nanos step_time_ns = 0;     // slowest rank's last end minus the earliest start
  Flops total_flops = 0;
  std::vector<RankMetrics> ranks;
  Nanos max_exposed_comm_ns() const;
  Bytes max_peak_memory_bytes() const;
  double achieved_tflops_per_gpu() const;  // total_flops / N / step time
};

// Interval-union based metrics per rank. `schedule` may be null (foreign traces: no memory/bytes).
Summary summarize(const Timeline&, const Schedule* schedule = nullptr);
// The same Summary for a simulated run without its Timeline: the engine accumulates every per-rank
// figure as it runs (SimResult::rank_busy), the schedule gives the ranks and their peak memory.
// Equal, field by field, to summarize(result.timeline, &schedule) of a run that recorded it.
Summary summarize(const SimResult& result, const Schedule& schedule);
// Peak live bytes of a rank's buffers (max over forward and backward).
Bytes peak_memory(const RankProgram&);

}  // namespace cpscope
