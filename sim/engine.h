// Discrete-event engine: runs a Schedule on a HardwareProfile and produces the simulated Timeline.
// Deterministic: integer nanoseconds, ties broken by insertion sequence, no globals (a Simulation
// owns its clock, queue and statistics).
#pragma once

#include <cstdint>

#include "sim/hardware.h"
#include "sim/schedule.h"
#include "sim/timeline.h"

namespace cpscope {

struct SimOptions {
  bool record_timeline = true;   // false: only statistics (faster for sweeps and plan)
};

struct SimStats {
  std::int64_t ops_executed = 0;
  std::int64_t events_processed = 0;
  Nanos makespan = 0;  // end of the last op on any rank
};

struct SimResult {
  Timeline timeline;   // empty when !record_timeline
  SimStats stats;
  // Per CP rank totals (always filled): see analysis.h for their definitions.
  std::vector<Nanos> rank_end;          // when the rank's last op ended
};

// Simulates one CP group in full. Throws InternalError on a deadlock (ops left that can never start),
// naming the first blocked op of each rank.
SimResult simulate(const Schedule&, const HardwareProfile&, const SimOptions& = {});

}  // namespace cpscope
