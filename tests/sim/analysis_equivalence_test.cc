// summarize(SimResult, Schedule), which needs no Timeline, must equal the interval-union analysis of
// the recorded Timeline field by field, for every schedule kind, mask, pass and dK/dV variant.
#include <gtest/gtest.h>

#include "sim/analysis.h"
#include "sim/engine.h"
#include "sim/hardware.h"
#include "sim/schedule.h"

namespace cpscope {
namespace {

void expect_same(const Summary& a, const Summary& b, const std::string& what) {
  EXPECT_EQ(a.step_time_ns, b.step_time_ns) << what;
  EXPECT_EQ(a.total_flops, b.total_flops) << what;
  ASSERT_EQ(a.ranks.size(), b.ranks.size()) << what;
  for (std::size_t r = 0; r < a.ranks.size(); ++r) {
    const RankMetrics& x = a.ranks[r];
    const RankMetrics& y = b.ranks[r];
    EXPECT_EQ(x.rank, y.rank) << what;
    EXPECT_EQ(x.span_ns, y.span_ns) << what << " rank " << r;
    EXPECT_EQ(x.compute_ns, y.compute_ns) << what << " rank " << r;
    EXPECT_EQ(x.comm_ns, y.comm_ns) << what << " rank " << r;
    EXPECT_EQ(x.exposed_comm_ns, y.exposed_comm_ns) << what << " rank " << r;
    EXPECT_EQ(x.idle_ns, y.idle_ns) << what << " rank " << r;
    EXPECT_EQ(x.bytes_sent, y.bytes_sent) << what << " rank " << r;
    EXPECT_EQ(x.flops, y.flops) << what << " rank " << r;
    EXPECT_EQ(x.peak_memory_bytes, y.peak_memory_bytes) << what << " rank " << r;
  }
}

TEST(AnalysisEquivalence, EngineMetricsEqualTimelineUnionForEverySchedule) {
  int cases = 0;
  for (ScheduleKind kind : all_schedules()) {
    for (Mask mask : {Mask::Causal, Mask::Full}) {
      for (PassSet pass : {PassSet::Fwd, PassSet::Bwd, PassSet::FwdBwd}) {
        for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
          for (std::int64_t gpn : {8, 2}) {  // one node, and a ring spanning four nodes
            Workload w;
            w.schedule = kind;
            w.cp = 8;
            w.seq = 16384;
            w.heads = 8;
            w.kv_heads = 8;
            w.mask = mask;
            w.pass = pass;
            w.dkv = dkv;
            w.gpus_per_node = gpn;
            if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
            if (kind == ScheduleKind::AllGather) w.kv_head_groups = 2;
            ASSERT_EQ(invalid_reason(w), "");
            const Schedule s = make_schedule(w);
            const SimResult with = simulate(s, default_hardware(), SimOptions{true, 0, {}});
            const SimResult without = simulate(s, default_hardware(), SimOptions{false, 0, {}});
            const std::string what = std::string(to_string(kind)) + " " + std::string(to_string(mask)) + " " +
                                     std::string(to_string(pass)) + " dkv=" + std::string(to_string(dkv)) +
                                     " gpus_per_node=" + std::to_string(gpn);
            EXPECT_TRUE(without.timeline.intervals.empty()) << what;
            const Summary from_timeline = summarize(with.timeline, &s);
            expect_same(from_timeline, summarize(without, s), what);
            expect_same(from_timeline, summarize(with, s), what);
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 5 * 2 * 3 * 2 * 2);
}

}  // namespace
}  // namespace cpscope
