// Tests for sim/planner: list/range parsing, sweep expansion, plan enumeration, ranking, memory filter
// and the many-run reporters.
#include "sim/planner.h"

#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sim/analysis.h"
#include "sim/error.h"
#include "sim/hardware.h"
#include "sim/schedule.h"

namespace cpscope {
namespace {

using Ints = std::vector<std::int64_t>;
using Names = std::vector<std::string>;

// Expects `fn` to throw InputError whose field is `field` and whose message contains `needle`.
template <class Fn>
void ExpectInputError(Fn&& fn, const std::string& field, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no InputError (expected field " << field << ")";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), field) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// A small, fast workload: 8192 tokens on one node.
Workload Small() {
  Workload w;
  w.seq = 8192;
  return w;
}

TEST(ParseIntValues, SingleAndLists) {
  EXPECT_EQ(parse_int_values("cp", "8"), (Ints{8}));
  EXPECT_EQ(parse_int_values("cp", "2,4,8,16"), (Ints{2, 4, 8, 16}));
  EXPECT_EQ(parse_int_values("cp", " 2 , 4 "), (Ints{2, 4}));
  EXPECT_EQ(parse_int_values("cp", "4,2,4"), (Ints{4, 2}));  // duplicates dropped, order kept
  EXPECT_EQ(parse_int_values("seq", "128k"), (Ints{131072}));
  EXPECT_EQ(parse_int_values("seq", "1M"), (Ints{1048576}));
  EXPECT_EQ(parse_int_values("cp", "-1"), (Ints{-1}));  // validate() rejects it, with its own rule
}

TEST(ParseIntValues, Ranges) {
  EXPECT_EQ(parse_int_values("cp", "1:4"), (Ints{1, 2, 3, 4}));
  EXPECT_EQ(parse_int_values("cp", "2:10:+4"), (Ints{2, 6, 10}));
  EXPECT_EQ(parse_int_values("cp", "2:11:+4"), (Ints{2, 6, 10}));
  EXPECT_EQ(parse_int_values("seq", "32768:1048576:x2"), (Ints{32768, 65536, 131072, 262144, 524288, 1048576}));
  EXPECT_EQ(parse_int_values("seq", "32k:1m:x4"), (Ints{32768, 131072, 524288}));
  EXPECT_EQ(parse_int_values("cp", "3:3"), (Ints{3}));
  EXPECT_EQ(parse_int_values("cp", "1,2,8:32:x2"), (Ints{1, 2, 8, 16, 32}));
  EXPECT_EQ(parse_int_values("cp", "1:100:x10"), (Ints{1, 10, 100}));
}

TEST(ParseIntValues, RejectsBadSyntaxNamingFlagAndRule) {
  const std::string rule = "must be START:STOP[:+STEP|:xFACTOR]";
  ExpectInputError([] { parse_int_values("seq", "x:y"); }, "seq", "range 'x:y' " + rule);
  ExpectInputError([] { parse_int_values("seq", "1:2:3:4"); }, "seq", rule);
  ExpectInputError([] { parse_int_values("seq", "1:8:3"); }, "seq", "+STEP or xFACTOR");
  ExpectInputError([] { parse_int_values("seq", "1:8:y2"); }, "seq", "+STEP or xFACTOR");
  ExpectInputError([] { parse_int_values("seq", "1:8:x-2"); }, "seq", "+STEP or xFACTOR");
  ExpectInputError([] { parse_int_values("cp", "8:2"); }, "cp", "START must be <= STOP");
  ExpectInputError([] { parse_int_values("cp", "1:8:+0"); }, "cp", "+STEP must be >= 1");
  ExpectInputError([] { parse_int_values("cp", "1:8:x1"); }, "cp", "xFACTOR must be >= 2");
  ExpectInputError([] { parse_int_values("cp", "0:8:x2"); }, "cp", "START >= 1");
  ExpectInputError([] { parse_int_values("cp", "2,,4"); }, "cp", "empty item");
  ExpectInputError([] { parse_int_values("cp", ""); }, "cp", "empty list");
  ExpectInputError([] { parse_int_values("heads", "abc"); }, "heads", "'abc' is not an integer");
  ExpectInputError([] { parse_int_values("seq", "99999999999999999999"); }, "seq", "is not an integer");
  ExpectInputError([] { parse_int_values("seq", "1:10000000"); }, "seq", "more than");
}

TEST(ParseEnumValues, ListsAndAll) {
  EXPECT_EQ(parse_enum_values("schedule", "all"), (Names{"ring", "zigzag-ring", "allgather", "ulysses", "hybrid"}));
  EXPECT_EQ(parse_enum_values("mask", "causal,full"), (Names{"causal", "full"}));
  EXPECT_EQ(parse_enum_values("mask", "full, causal, full"), (Names{"full", "causal"}));
  EXPECT_EQ(parse_enum_values("pass", "all"), (Names{"fwd", "bwd", "fwd+bwd"}));
  EXPECT_EQ(parse_enum_values("dtype", "all").size(), 3u);
  EXPECT_EQ(parse_enum_values("balance", "all").size(), 2u);
  EXPECT_EQ(parse_enum_values("dkv", "all").size(), 2u);
  EXPECT_EQ(parse_enum_values("placement", "all").size(), 2u);
  ExpectInputError([] { parse_enum_values("schedule", "ring,bogus"); }, "schedule", "bogus");
  ExpectInputError([] { parse_enum_values("schedule", "all,ring"); }, "schedule", "'all'");
  ExpectInputError([] { parse_enum_values("mask", ""); }, "mask", "empty list");
}

TEST(ParseAxis, NumericEnumAndUnknown) {
  const SweepAxis cp = parse_axis("cp", "2:8:x2");
  EXPECT_EQ(cp.field, "cp");
  EXPECT_EQ(cp.values, (Names{"2", "4", "8"}));
  EXPECT_EQ(parse_axis("schedule", "zigzag-ring").values, (Names{"zigzag-ring"}));
  ExpectInputError([] { parse_axis("colour", "red"); }, "colour", "not a workload field");
}

TEST(WorkloadFields, SetAndGetRoundTrip) {
  Workload w;
  for (const WorkloadField& f : workload_fields()) {
    const std::string v = get_workload_field(w, f.flag);
    Workload copy;
    set_workload_field(copy, f.flag, v);
    EXPECT_EQ(get_workload_field(copy, f.flag), v) << f.flag;
    EXPECT_EQ(find_workload_field(f.flag), &f);
  }
  set_workload_field(w, "kv-heads", "4");
  set_workload_field(w, "schedule", "hybrid");
  set_workload_field(w, "seq", "256k");
  EXPECT_EQ(w.kv_heads, 4);
  EXPECT_EQ(w.schedule, ScheduleKind::Hybrid);
  EXPECT_EQ(w.seq, 262144);
  ExpectInputError([&] { set_workload_field(w, "cp", "2,4"); }, "cp", "is not an integer");
  ExpectInputError([&] { set_workload_field(w, "dtype", "int8"); }, "dtype", "int8");
  // JSON names of the fields match the workload JSON.
  const nlohmann::json j = to_json(Workload{});
  for (const WorkloadField& f : workload_fields()) EXPECT_TRUE(j.contains(std::string(f.json))) << f.json;
}

TEST(ExpandSweep, CartesianProductLastAxisFastest) {
  SweepSpec spec;
  spec.base = Small();
  spec.axes = {parse_axis("schedule", "ring,zigzag-ring"), parse_axis("cp", "2,4,8")};
  const std::vector<Workload> ws = expand_sweep(spec);
  ASSERT_EQ(ws.size(), 6u);
  EXPECT_EQ(ws[0].schedule, ScheduleKind::Ring);
  EXPECT_EQ(ws[0].cp, 2);
  EXPECT_EQ(ws[1].cp, 4);
  EXPECT_EQ(ws[2].cp, 8);
  EXPECT_EQ(ws[3].schedule, ScheduleKind::ZigzagRing);
  EXPECT_EQ(ws[3].cp, 2);
  for (const Workload& w : ws) EXPECT_EQ(w.seq, 8192);
  spec.axes.clear();
  EXPECT_EQ(expand_sweep(spec).size(), 1u);  // no axes: just the base
}

TEST(ExpandSweep, RefusesHugeProducts) {
  SweepSpec spec;
  spec.axes = {parse_axis("seq", "1:2000"), parse_axis("batch", "1:2000")};
  ExpectInputError([&] { expand_sweep(spec); }, "batch", "combinations");
}

TEST(RunSweep, SimulatesValidAndListsInvalidWithReasons) {
  SweepSpec spec;
  spec.base = Small();
  spec.axes = {parse_axis("schedule", "ring,zigzag-ring"), parse_axis("cp", "2,3,4")};
  const SweepResult r = run_sweep(spec);
  EXPECT_EQ(r.runs.size(), 4u);
  ASSERT_EQ(r.invalid.size(), 2u);
  for (const Rejected& inv : r.invalid) {
    EXPECT_EQ(inv.workload.cp, 3);
    EXPECT_EQ(inv.reason, invalid_reason(inv.workload));
    EXPECT_FALSE(inv.reason.empty());
  }
  EXPECT_EQ(r.varying, (Names{"schedule", "cp"}));
  for (const RunResult& run : r.runs) {
    EXPECT_GT(run.summary.step_time_ns, 0);
    EXPECT_EQ(run.summary.total_flops, run.workload.total_flops());
    EXPECT_EQ(run.summary.ranks.size(), static_cast<std::size_t>(run.workload.cp));
    EXPECT_EQ(run.hardware, default_hardware().name);
  }
  // Expansion order is kept: ring cp=2, ring cp=4, zigzag cp=2, zigzag cp=4.
  EXPECT_EQ(r.runs[0].workload.schedule, ScheduleKind::Ring);
  EXPECT_EQ(r.runs[1].workload.cp, 4);
  EXPECT_EQ(r.runs[2].workload.schedule, ScheduleKind::ZigzagRing);
}

TEST(RunSweep, UlyssesAndKvGroupsApplyOnlyToTheirSchedules) {
  SweepSpec spec;
  spec.base = Small();
  spec.axes = {parse_axis("schedule", "ring,hybrid,allgather"), parse_axis("ulysses", "2,4"),
               parse_axis("kv-head-groups", "1,2"), parse_axis("cp", "8")};
  const SweepResult r = run_sweep(spec);
  // ring once; hybrid U=2, U=4; allgather groups 1, 2.
  ASSERT_EQ(r.runs.size(), 5u);
  EXPECT_TRUE(r.invalid.empty());
  EXPECT_EQ(r.runs[0].workload.schedule, ScheduleKind::Ring);
  EXPECT_EQ(r.runs[0].workload.ulysses, 1);
  EXPECT_EQ(r.runs[1].workload.ulysses, 2);
  EXPECT_EQ(r.runs[2].workload.ulysses, 4);
  EXPECT_EQ(r.runs[3].workload.kv_head_groups, 1);
  EXPECT_EQ(r.runs[4].workload.kv_head_groups, 2);
  EXPECT_EQ(r.runs[4].workload.ulysses, 1);
}

TEST(RunSweep, ProgressCalledOncePerSimulationAndParallelIsIdentical) {
  SweepSpec spec;
  spec.base = Small();
  spec.axes = {parse_axis("schedule", "all"), parse_axis("cp", "2,4")};
  std::size_t valid = 0;  // (no ulysses/kv-head-groups axis, so no repeats)
  for (const Workload& w : expand_sweep(spec)) valid += invalid_reason(w).empty() ? 1 : 0;
  std::vector<std::string> seen;
  const SweepResult serial = run_sweep(spec, [&](std::size_t i, std::size_t n, const std::string& what) {
    EXPECT_EQ(i, seen.size());
    EXPECT_EQ(n, valid);
    seen.push_back(what);
  });
  EXPECT_EQ(seen.size(), valid);  // invalid ones are not simulated
  EXPECT_EQ(seen.front(), describe(serial.runs.front().workload));
  const SweepResult parallel = run_sweep(spec, {}, 3);
  EXPECT_EQ(sweep_json(serial, true).dump(), sweep_json(parallel, true).dump());
  EXPECT_EQ(sweep_csv(serial), sweep_csv(parallel));
}

TEST(RunSweep, JsonAndCsvReporters) {
  SweepSpec spec;
  spec.base = Small();
  spec.axes = {parse_axis("cp", "2,3")};
  const SweepResult r = run_sweep(spec);
  const nlohmann::json j = sweep_json(r);
  ASSERT_EQ(j["runs"].size(), 1u);
  EXPECT_EQ(j["runs"][0]["step_time_ns"].get<std::int64_t>(), r.runs[0].summary.step_time_ns);
  EXPECT_FALSE(j["runs"][0].contains("ranks"));
  EXPECT_TRUE(sweep_json(r, true)["runs"][0].contains("ranks"));
  ASSERT_EQ(j["invalid"].size(), 1u);
  EXPECT_EQ(j["invalid"][0]["workload"]["cp"], 3);
  EXPECT_FALSE(j["invalid"][0]["reason"].get<std::string>().empty());
  EXPECT_EQ(j["varying"], nlohmann::json::array({"cp"}));

  const std::string csv = sweep_csv(r);
  std::vector<std::string> lines;
  for (std::size_t b = 0, e; b < csv.size(); b = e + 1) {
    e = csv.find('\n', b);
    lines.push_back(csv.substr(b, e - b));
  }
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].rfind("schedule,cp,", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find("step_time_ns"), std::string::npos);
  EXPECT_EQ(lines[0].substr(lines[0].size() - 14), ",status,reason");
  EXPECT_NE(lines[1].find(std::to_string(r.runs[0].summary.step_time_ns)), std::string::npos);
  EXPECT_EQ(lines[1].substr(lines[1].size() - 4), ",ok,");
  EXPECT_NE(lines[2].find(",invalid,"), std::string::npos);
  // Every row has as many columns as the header (reasons are quoted when they hold commas).
  auto columns = [](const std::string& line) {
    std::size_t n = 1;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') quoted = !quoted;
      if (c == ',' && !quoted) ++n;
    }
    return n;
  };
  EXPECT_EQ(columns(lines[1]), columns(lines[0]));
  EXPECT_EQ(columns(lines[2]), columns(lines[0]));
  EXPECT_NE(sweep_table(r).find("invalid combinations (1)"), std::string::npos);
}

TEST(EnumeratePlan, CountsForOneNode) {
  PlanSpec spec;
  spec.base = Small();
  spec.gpus = 8;
  const std::vector<Workload> ws = enumerate_plan(spec);
  // cp=1: 1 (no CP). cp=2: ring, zigzag, allgather 2 balances x 3 groups, ulysses = 9.
  // cp=4: 9 + hybrid U=2 x 2 balances = 11. cp=8: 9 + hybrid U in {2,4} x 2 = 13.
  EXPECT_EQ(ws.size(), 1u + 9u + 11u + 13u);
  auto count = [&](ScheduleKind k, std::int64_t cp) {
    return std::count_if(ws.begin(), ws.end(), [&](const Workload& w) { return w.schedule == k && w.cp == cp; });
  };
  EXPECT_EQ(count(ScheduleKind::AllGather, 8), 6);
  EXPECT_EQ(count(ScheduleKind::Hybrid, 8), 4);
  EXPECT_EQ(count(ScheduleKind::Hybrid, 2), 0);
  for (const Workload& w : ws) {
    EXPECT_EQ(w.dp * w.cp * w.tp, 8);
    EXPECT_EQ(w.seq, 8192);
  }
  // cp ascending.
  EXPECT_TRUE(std::is_sorted(ws.begin(), ws.end(), [](const Workload& a, const Workload& b) { return a.cp < b.cp; }));
}

TEST(EnumeratePlan, ClusterAndNarrowing) {
  PlanSpec spec;
  spec.base = Small();
  spec.gpus = 64;
  spec.schedules = {ScheduleKind::Hybrid};
  spec.cp_sizes = {16};
  const std::vector<Workload> ws = enumerate_plan(spec);
  // U in {2, 4, 8} (proper divisors of 16 ... 2,4,8), two balances each.
  ASSERT_EQ(ws.size(), 6u);
  for (const Workload& w : ws) EXPECT_EQ(w.dp, 4);
  spec.base.tp = 3;
  ExpectInputError([&] { enumerate_plan(spec); }, "tp", "does not divide gpus = 64");
}

TEST(PlanReason, DivisibilityAndNodeRules) {
  PlanSpec spec;
  spec.base = Small();
  spec.gpus = 64;
  Workload w = spec.base;
  w.cp = 16;
  w.schedule = ScheduleKind::Hybrid;
  w.ulysses = 16;
  EXPECT_NE(plan_reason(spec, w).find("1 < U < N"), std::string::npos);
  w.ulysses = 4;
  EXPECT_EQ(plan_reason(spec, w), "");
  spec.base.gpus_per_node = 4;
  w.gpus_per_node = 4;
  w.cp = 32;
  w.ulysses = 8;
  const std::string reason = plan_reason(spec, w);
  EXPECT_NE(reason.find("does not divide gpus_per_node = 4"), std::string::npos) << reason;
  EXPECT_EQ(reason.rfind("ulysses:", 0), 0u);
  w.schedule = ScheduleKind::Ring;
  w.ulysses = 1;
  w.cp = 48;
  EXPECT_NE(plan_reason(spec, w).find("does not divide gpus = 64"), std::string::npos);
}

TEST(RunPlan, RanksByStepTimeAndListsDropped) {
  PlanSpec spec;
  spec.base = Small();
  spec.base.kv_heads = 2;  // makes kv_head_groups = 4 and ulysses cp >= 4 invalid
  spec.base.heads = 8;
  spec.gpus = 8;
  const PlanResult r = run_plan(spec, default_hardware());
  EXPECT_EQ(r.candidates, enumerate_plan(spec).size());
  EXPECT_EQ(r.ranked.size() + r.dropped.size(), r.candidates);
  ASSERT_FALSE(r.ranked.empty());
  ASSERT_FALSE(r.dropped.empty());
  for (std::size_t i = 1; i < r.ranked.size(); ++i) {
    const Summary& a = r.ranked[i - 1].result.summary;
    const Summary& b = r.ranked[i].result.summary;
    ASSERT_LE(a.step_time_ns, b.step_time_ns) << i;
    if (a.step_time_ns == b.step_time_ns) {
      ASSERT_LE(a.max_exposed_comm_ns(), b.max_exposed_comm_ns());
    }
  }
  bool saw_groups = false;
  for (const Rejected& d : r.dropped) {
    EXPECT_FALSE(d.reason.empty());
    if (d.workload.schedule == ScheduleKind::AllGather && d.workload.kv_head_groups == 4) {
      saw_groups = true;
      EXPECT_NE(d.reason.find("kv_head_groups"), std::string::npos) << d.reason;
    }
  }
  EXPECT_TRUE(saw_groups);
  // Reporters: the JSON holds everything, ranked best first.
  const nlohmann::json j = plan_json(spec, r);
  EXPECT_EQ(j["schema"], kPlanSchema);
  EXPECT_EQ(j["runs"].size(), r.ranked.size());
  EXPECT_EQ(j["dropped"].size(), r.dropped.size());
  EXPECT_EQ(j["runs"][0]["place"], 1);
  EXPECT_EQ(j["runs"][0]["step_time_ns"].get<std::int64_t>(), r.ranked[0].result.summary.step_time_ns);
  const std::string table = plan_table(spec, r, 3, false);
  EXPECT_NE(table.find("dropped"), std::string::npos);
  const std::string csv = plan_csv(r);
  EXPECT_EQ(static_cast<std::size_t>(std::count(csv.begin(), csv.end(), '\n')), 1 + r.candidates);
}

TEST(RunPlan, ThroughputRankingDividesByDp) {
  PlanSpec spec;
  spec.base = Small();
  spec.gpus = 8;
  spec.rank_by = RankBy::Throughput;
  const PlanResult r = run_plan(spec, default_hardware());
  for (std::size_t i = 1; i < r.ranked.size(); ++i) {
    const auto per_seq = [](const RunResult& x) {
      return static_cast<long double>(x.summary.step_time_ns) / static_cast<long double>(x.workload.dp);
    };
    ASSERT_LE(per_seq(r.ranked[i - 1].result), per_seq(r.ranked[i].result));
  }
  EXPECT_EQ(parse_rank_by("throughput"), RankBy::Throughput);
  ExpectInputError([] { parse_rank_by("speed"); }, "rank-by", "step|throughput");
}

TEST(RunPlan, MemoryFilterDropsWithTheNumbers) {
  const HardwareProfile& hw = default_hardware();
  PlanSpec spec;
  spec.base = Small();
  spec.gpus = 8;
  spec.schedules = {ScheduleKind::ZigzagRing};
  spec.cp_sizes = {1, 2, 8};
  // Peak attention memory of each candidate; the reserve is chosen so only the largest overflows.
  // (cp=1 is plain attention: no receive slots or fp32 accumulators, so cp=2 may need more.)
  auto peak_of = [&](std::int64_t cp) {
    Workload w = spec.base;
    w.cp = cp;
    w.schedule = cp == 1 ? ScheduleKind::Ring : ScheduleKind::ZigzagRing;
    w.balance = cp == 1 ? Balance::Contiguous : Balance::Zigzag;
    w.dp = 8 / cp;
    const Schedule s = make_schedule(w);
    Bytes p = 0;
    for (const RankProgram& rp : s.ranks) p = std::max(p, peak_memory(rp));
    return p;
  };
  std::vector<std::pair<Bytes, std::int64_t>> peaks = {{peak_of(1), 1}, {peak_of(2), 2}, {peak_of(8), 8}};
  std::sort(peaks.begin(), peaks.end());
  ASSERT_GT(peaks[2].first, peaks[1].first);
  spec.reserve_bytes = hw.memory_bytes - peaks[2].first + 1;
  const PlanResult r = run_plan(spec, hw);
  ASSERT_EQ(r.dropped.size(), 1u);
  EXPECT_EQ(r.dropped[0].workload.cp, peaks[2].second);
  EXPECT_EQ(r.dropped[0].reason.rfind("memory: attention peak", 0), 0u) << r.dropped[0].reason;
  EXPECT_NE(r.dropped[0].reason.find("reserve"), std::string::npos);
  EXPECT_NE(r.dropped[0].reason.find(hw.name), std::string::npos);
  EXPECT_EQ(r.ranked.size(), 2u);
  for (const PlanEntry& e : r.ranked) EXPECT_EQ(e.peak_memory_bytes, e.result.summary.max_peak_memory_bytes());

  spec.reserve_bytes = hw.memory_bytes;  // nothing fits
  const PlanResult none = run_plan(spec, hw);
  EXPECT_TRUE(none.ranked.empty());
  EXPECT_EQ(none.dropped.size(), 3u);
}

TEST(SimulateWorkload, RejectsInvalidAndKeepsTimelineOnRequest) {
  Workload w = Small();
  w.cp = 3;
  EXPECT_THROW(simulate_workload(w, default_hardware()), InputError);
  w.cp = 4;
  const SimulatedRun with = simulate_workload(w, default_hardware(), true);
  const SimulatedRun without = simulate_workload(w, default_hardware(), false);
  EXPECT_FALSE(with.timeline.intervals.empty());
  EXPECT_TRUE(without.timeline.intervals.empty());
  // The schedule comes with the Timeline (one interval per op), for the trace's flow arrows.
  EXPECT_EQ(with.schedule.num_ops(), static_cast<std::int64_t>(with.timeline.intervals.size()));
  EXPECT_EQ(with.schedule.ranks.size(), 4u);
  EXPECT_TRUE(without.schedule.ranks.empty());
  EXPECT_EQ(summary_json(with.result).dump(), summary_json(without.result).dump());
}

TEST(Describe, NamesTheVariant) {
  Workload w = Small();
  w.schedule = ScheduleKind::Hybrid;
  w.cp = 8;
  w.ulysses = 4;
  w.balance = Balance::Contiguous;
  EXPECT_EQ(describe(w), "hybrid cp=8 U=4 balance=contiguous seq=8192");
  w.schedule = ScheduleKind::AllGather;
  w.kv_head_groups = 2;
  EXPECT_EQ(describe(w), "allgather cp=8 balance=contiguous kv_groups=2 seq=8192");
}

}  // namespace
}  // namespace cpscope
