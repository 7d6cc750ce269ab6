// Compiled into each engine library that tools/engine-ab.sh compares: one simulate() of a schedule
// without a Timeline, timed from the call to the return (set-up included, as in sim_bench).
#include <chrono>

#include "sim/engine.h"
#include "sim/hardware.h"

extern "C" double cpscope_ab_simulate(const cpscope::Schedule* schedule, long* events) {
  cpscope::SimOptions options;
  options.record_timeline = false;
  const auto t0 = std::chrono::steady_clock::now();
  const cpscope::SimResult r = cpscope::simulate(*schedule, cpscope::default_hardware(), options);
  const auto t1 = std::chrono::steady_clock::now();
  *events = r.stats.events_processed;
  return std::chrono::duration<double>(t1 - t0).count();
}
