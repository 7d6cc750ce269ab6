// The GPU check's calibration and validation set (tools/gpu-check.sh plan), predicted leave-one-out from
// perfect measurements. Each run of the set is simulated on a known "true" GPU (the H200 profile with every
// fitted parameter moved, rates by a shape-dependent factor) as cp-profile would measure it: a replay run
// keeps its one rank and sends to itself, a loopback run puts all its ranks on one device. The bench file is
// what `cp-profile bench` would time on that GPU over the plan's block lengths. `cp-sim validate
// --leave-one-out` on them, from the base profile the script uses, must then predict every run closely:
// what it misses here it would miss on a device for reasons of the set's design (a block shape that only the
// left-out run has), not of the GPU. A device session runs the script once; this finds such a gap before.
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sim/calibrate.h"
#include "sim/hardware.h"
#include "sim/planner.h"
#include "sim/schedule.h"
#include "sim/workload.h"

namespace cpscope {
namespace {

struct PlannedRun {
  std::string transport, schedule, mask, pass;
  std::int64_t cp = 0, local = 0;
};

struct Plan {
  std::vector<PlannedRun> runs;
  std::vector<std::int64_t> blocks;
  std::int64_t heads = 0, kv_heads = 0, head_dim = 0;
};

// `bash tools/gpu-check.sh plan`, parsed.
Plan read_plan() {
  const std::string cmd = std::string("bash '") + CPSCOPE_SOURCE_DIR + "/tools/gpu-check.sh' plan";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) throw std::runtime_error("cannot run " + cmd);
  std::string text;
  char buf[4096];
  while (const std::size_t n = fread(buf, 1, sizeof buf, pipe.get())) text.append(buf, n);
  Plan plan;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream in(line);
    std::string first;
    in >> first;
    if (first == "bench") {
      for (std::int64_t b; in >> b;) plan.blocks.push_back(b);
    } else if (first == "heads") {
      for (std::string flag; in >> flag;) {
        std::int64_t v = 0;
        in >> v;
        (flag == "--heads" ? plan.heads : flag == "--kv-heads" ? plan.kv_heads : plan.head_dim) = v;
      }
    } else if (!first.empty()) {
      PlannedRun r;
      r.transport = first;
      in >> r.schedule >> r.cp >> r.local >> r.mask >> r.pass;
      if (!in) throw std::runtime_error("unreadable plan line: " + line);
      plan.runs.push_back(r);
    }
  }
  return plan;
}

// The H200 profile the script starts its fit from, with every parameter calibration fits moved: a GPU that
// is not the base, so the fit has to find it in the runs and the bench.
HardwareProfile true_gpu() {
  HardwareProfile hw = load_hardware("h200-sxm");
  hw.name = "true-gpu";
  hw.launch_latency_ns = 6000;
  hw.memory_bandwidth_GBps *= 0.8;
  hw.device_copy = {1200, 7000};
  hw.comm_compute_interference = 1.15;
  for (RateTable& t : hw.attention)
    for (std::size_t i = 0; i < t.q_tokens.size(); ++i)
      for (std::size_t j = 0; j < t.kv_tokens.size(); ++j)  // smaller blocks lose more than larger ones
        t.tflops[i][j] *= 0.6 + 0.02 * std::log2(static_cast<double>(t.q_tokens[i] * t.kv_tokens[j]));
  return hw;
}

Workload workload_of(const PlannedRun& r, const Plan& plan) {
  Workload w;
  w.schedule = parse_schedule(r.schedule);
  w.cp = r.cp;
  w.ulysses = w.schedule == ScheduleKind::Hybrid ? 2 : 1;  // the script's --ulysses 2
  w.seq = r.cp * r.local;
  w.mask = parse_mask(r.mask);
  w.pass = parse_pass(r.pass);
  w.heads = plan.heads;
  w.kv_heads = plan.kv_heads;
  w.head_dim = plan.head_dim;
  return w;
}

// What cp-profile --json would write for the run on `hw`: replay measures rank N-1 (the script's
// --replay-rank) with every transfer a send to itself; loopback runs all ranks on the one GPU.
NamedProfile measured(const PlannedRun& r, const Plan& plan, const HardwareProfile& hw, const std::string& name) {
  const Workload w = workload_of(r, plan);
  const bool replay = r.transport == "replay";
  const DeviceSharing sharing = replay ? DeviceSharing{1, 1.0, true} : DeviceSharing{static_cast<std::int32_t>(r.cp), 1.0};
  SimulatedRun run = simulate_workload(w, hw, true, sharing);
  if (replay) run.timeline.keep_ranks({static_cast<std::int32_t>(r.cp - 1)});
  return {name, profile_from_json(nlohmann::json::parse(profile_json(run.result, &run.timeline).dump()), name), ""};
}

// `cp-profile bench --backend cuda --transport replay` on `hw` over `blocks`: every q x kv pair full, the
// diagonal causal, both passes; self-transfers from 1 KiB to 256 MiB; the largest block beside transfers.
NamedBench bench(const Plan& plan, const std::vector<std::int64_t>& blocks, const HardwareProfile& hw) {
  nlohmann::json rows = nlohmann::json::array();
  auto kernel_ns = [&](bool bwd, bool causal, std::int64_t q, std::int64_t kv, Flops flops) {
    return static_cast<double>(hw.launch_latency_ns) +
           static_cast<double>(flops) / (hw.attention_tflops(bwd, causal, plan.head_dim, q, kv) * 1e3);
  };
  auto attention_row = [&](bool bwd, bool causal, std::int64_t q, std::int64_t kv) {
    AttnBlock a;
    a.q_len = q;
    a.kv_len = kv;
    a.mask = causal ? AttnMask::Causal : AttnMask::Full;
    const Flops fwd = 4 * plan.heads * plan.head_dim * block_pairs(a);
    const Flops flops = bwd ? fwd * 5 / 2 : fwd;
    nlohmann::json row = {{"kind", "attention"}, {"pass", bwd ? "bwd" : "fwd"}, {"mask", causal ? "causal" : "full"},
                          {"head_dim", plan.head_dim}, {"q_tokens", q}, {"kv_tokens", kv}, {"batch", 1},
                          {"heads", plan.heads}, {"flops", flops}};
    return std::make_pair(row, kernel_ns(bwd, causal, q, kv, flops));
  };
  for (const bool bwd : {false, true})
    for (std::int64_t q : blocks)
      for (std::int64_t kv : blocks)
        for (const bool causal : {false, true}) {
          if (causal && q != kv) continue;
          auto [row, ns] = attention_row(bwd, causal, q, kv);
          row["ns"] = std::llround(ns);
          rows.push_back(row);
        }
  for (std::int64_t bytes = 1024; bytes <= (std::int64_t{256} << 20); bytes *= 4) {
    const LinkClass copy = hw.device_copy_link();
    rows.push_back({{"kind", "transfer"}, {"link", "self"}, {"bytes", bytes},
                    {"ns", std::llround(static_cast<double>(copy.latency_ns) +
                                        static_cast<double>(bytes) / copy.bandwidth_GBps)}});
  }
  for (const bool bwd : {false, true}) {
    auto [row, ns] = attention_row(bwd, false, blocks.back(), blocks.back());
    row["kind"] = "interference";
    row["alone_ns"] = std::llround(ns);
    row["with_comm_ns"] = std::llround(ns * hw.comm_compute_interference);  // overlapped all through
    rows.push_back(row);
  }
  return {"bench.json", {{"schema", "cpscope.bench/1"}, {"backend", "synthetic"}, {"rows", rows}}};
}

class GpuCheckPlan : public ::testing::Test {
 protected:
  void SetUp() override {
    plan_ = read_plan();
    ASSERT_FALSE(plan_.runs.empty()) << "gpu-check.sh plan printed no runs";
    ASSERT_FALSE(plan_.blocks.empty()) << "gpu-check.sh plan printed no bench blocks";
    ASSERT_GT(plan_.heads, 0);
    for (std::size_t i = 0; i < plan_.runs.size(); ++i) {
      const PlannedRun& r = plan_.runs[i];
      profiles_.push_back(measured(r, plan_, truth_, std::to_string(i + 1) + "-" + r.transport + "-" + r.schedule +
                                                          "-cp" + std::to_string(r.cp) + "-" + std::to_string(r.local) +
                                                          "-" + r.mask + "-" + r.pass));
    }
  }
  Validation leave_one_out(const std::vector<std::int64_t>& blocks) const {
    return validate(profiles_, load_hardware("h200-sxm"), true, {bench(plan_, blocks, truth_)});
  }

  Plan plan_;
  HardwareProfile truth_ = true_gpu();
  std::vector<NamedProfile> profiles_;
};

// What issue 4 asks of the set: at least 24 replay runs over the five schedules, N in {2, 4, 8}, 2K-32K tokens per
// rank, both masks and both pass sets, plus loopback runs.
TEST_F(GpuCheckPlan, CoversWhatTheIssueAsks) {
  std::set<std::string> schedules, masks, passes;
  std::set<std::int64_t> ns;
  std::int64_t replay = 0, loopback = 0, shortest = 1 << 30, longest = 0;
  for (const PlannedRun& r : plan_.runs) {
    EXPECT_NO_THROW(validate(workload_of(r, plan_))) << r.schedule << " cp=" << r.cp << " " << r.local;
    if (r.transport == "loopback") {
      ++loopback;
      continue;
    }
    ASSERT_EQ(r.transport, "replay");
    ++replay;
    schedules.insert(r.schedule);
    masks.insert(r.mask);
    passes.insert(r.pass);
    ns.insert(r.cp);
    shortest = std::min(shortest, r.local);
    longest = std::max(longest, r.local);
  }
  EXPECT_GE(replay, 24);
  EXPECT_GE(loopback, 1);
  EXPECT_EQ(schedules, (std::set<std::string>{"allgather", "hybrid", "ring", "ulysses", "zigzag-ring"}));
  EXPECT_EQ(ns, (std::set<std::int64_t>{2, 4, 8}));
  EXPECT_EQ(masks, (std::set<std::string>{"causal", "full"}));
  EXPECT_EQ(passes, (std::set<std::string>{"fwd", "fwd+bwd"}));
  EXPECT_EQ(shortest, 2048);
  EXPECT_EQ(longest, 32768);
}

// With perfect measurements every run is predicted from the others and the bench within 3% (the issue's target
// on a GPU is 5%), most within a fraction of a percent. What remains is one run whose shape nobody else measures:
// ulysses at N=8 attends 64K-token causal blocks backward, beyond the bench's largest block, so its rate is the
// base table's trend carried from the bench's 32K, and this true GPU's rates keep rising faster than the base's.
TEST_F(GpuCheckPlan, LeaveOneOutOfPerfectMeasurementsIsWithinThreePercent) {
  const Validation v = leave_one_out(plan_.blocks);
  ASSERT_EQ(v.rows.size(), plan_.runs.size());
  EXPECT_LE(v.max_abs_error, 0.03) << "worst: " << v.worst << "\n" << validation_table(v);
  EXPECT_LE(v.mean_abs_error, 0.005) << validation_table(v);
}

// The check can fail: without the bench's largest block the runs with 32K-token and longer blocks are predicted
// from the base table's trend over more doublings, and the ulysses run misses by more than 4%.
TEST_F(GpuCheckPlan, ABenchGridWithoutItsLargestBlockMisses) {
  ASSERT_GE(plan_.blocks.size(), 2u);
  const std::vector<std::int64_t> without(plan_.blocks.begin(), plan_.blocks.end() - 1);
  const Validation v = leave_one_out(without);
  EXPECT_GT(v.max_abs_error, 0.04) << validation_table(v);
}

}  // namespace
}  // namespace cpscope
