// Compiled into each engine library that tools/engine-ab.sh compares: one simulate() of a schedule
// without a Timeline, timed from the call to the return (set-up included, as in sim_bench).
#include <chrono>
#include <cstdint>

#include "sim/engine.h"
#include "sim/hardware.h"

extern "C" double cpscope_ab_simulate(const cpscope::Schedule* schedule, long* fingerprint) {
  cpscope::SimOptions options;
  options.record_timeline = false;
  const auto t0 = std::chrono::steady_clock::now();
  const cpscope::SimResult r = cpscope::simulate(*schedule, cpscope::default_hardware(), options);
  const auto t1 = std::chrono::steady_clock::now();
  // What the engines must agree on: every rank's end and busy totals (FNV-1a over them).
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::int64_t v) { h = (h ^ static_cast<std::uint64_t>(v)) * 1099511628211ull; };
  for (std::size_t i = 0; i < r.rank_busy.size(); ++i) {
    const cpscope::RankBusy& b = r.rank_busy[i];
    for (const std::int64_t v : {r.rank_end[i], b.first_start, b.last_end, b.compute_ns, b.comm_ns, b.exposed_comm_ns, b.busy_ns}) mix(v);
  }
  *fingerprint = static_cast<long>(h);
  return std::chrono::duration<double>(t1 - t0).count();
}
