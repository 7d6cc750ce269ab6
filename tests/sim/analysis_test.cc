// Tests for sim/analysis: interval unions, exposed communication, idle, bytes, FLOPs, peak memory.
#include "sim/analysis.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include <gtest/gtest.h>

#include "sim/engine.h"
#include "sim/error.h"
#include "sim/hardware.h"
#include "sim/workload.h"

namespace cpscope {
namespace {

std::string describe_for_test(const Workload& w) {
  return std::string(to_string(w.schedule)) + " " + std::string(to_string(w.mask)) + " " +
         std::string(to_string(w.pass)) + " " + std::string(to_string(w.dkv)) + " cp=" + std::to_string(w.cp);
}

constexpr IntervalKind kCompute = IntervalKind::Compute;
constexpr IntervalKind kComm = IntervalKind::Comm;
constexpr IntervalKind kMemory = IntervalKind::Memory;

Timeline make_timeline(std::int32_t num_ranks, int num_streams = 2) {
  Timeline t;
  t.num_ranks = num_ranks;
  const char* names[] = {"compute", "comm", "comm_dkv", "extra"};
  for (int s = 0; s < num_streams; ++s) t.streams.emplace_back(names[s]);
  return t;
}

void add(Timeline& t, std::int32_t rank, std::int32_t stream, IntervalKind kind, Nanos start, Nanos end,
         Bytes bytes = 0, Flops flops = 0) {
  Interval iv;
  iv.rank = rank;
  iv.stream = stream;
  iv.kind = kind;
  iv.start = start;
  iv.end = end;
  iv.bytes = bytes;
  iv.flops = flops;
  t.intervals.push_back(iv);
}

TEST(Analysis, ExposedCommIsCommMinusComputeExactly) {
  Timeline t = make_timeline(1);
  add(t, 0, 1, kComm, 0, 100);
  add(t, 0, 0, kCompute, 50, 80);
  add(t, 0, 0, kCompute, 90, 200);
  const Summary s = summarize(t);
  ASSERT_EQ(s.ranks.size(), 1u);
  const RankMetrics& m = s.ranks[0];
  EXPECT_EQ(s.step_time_ns, 200);
  EXPECT_EQ(m.rank, 0);
  EXPECT_EQ(m.compute_ns, 30 + 110);
  EXPECT_EQ(m.comm_ns, 100);
  EXPECT_EQ(m.exposed_comm_ns, 50 + 10);  // [0,50) and [80,90)
  EXPECT_EQ(m.idle_ns, 0);
  EXPECT_EQ(m.span_ns, 200);
  EXPECT_EQ(s.max_exposed_comm_ns(), 60);
}

TEST(Analysis, UnionsSpanAllStreamsOfAKind) {
  Timeline t = make_timeline(1, 4);
  add(t, 0, 0, kCompute, 0, 100);
  add(t, 0, 3, kCompute, 50, 150);   // overlaps the first on another stream: counted once
  add(t, 0, 1, kComm, 140, 160);
  add(t, 0, 2, kComm, 155, 170);     // overlaps the other comm stream
  add(t, 0, 2, kComm, 170, 180);     // touches: still one union piece
  const RankMetrics m = summarize(t).ranks[0];
  EXPECT_EQ(m.compute_ns, 150);
  EXPECT_EQ(m.comm_ns, 40);                 // [140,180)
  EXPECT_EQ(m.exposed_comm_ns, 30);         // [150,180)
  EXPECT_EQ(m.idle_ns, 0);                  // busy [0,180) = step
  EXPECT_EQ(m.span_ns, 180);
}

TEST(Analysis, FullyHiddenCommHasNoExposure) {
  Timeline t = make_timeline(1);
  add(t, 0, 0, kCompute, 0, 1000);
  add(t, 0, 1, kComm, 10, 20);
  add(t, 0, 1, kComm, 500, 1000);
  const RankMetrics m = summarize(t).ranks[0];
  EXPECT_EQ(m.comm_ns, 510);
  EXPECT_EQ(m.exposed_comm_ns, 0);
}

TEST(Analysis, EarlyFinishingRankShowsIdleAgainstStepTime) {
  Timeline t = make_timeline(3);
  add(t, 0, 0, kCompute, 0, 1000);
  add(t, 1, 0, kCompute, 0, 400);
  add(t, 1, 1, kComm, 500, 600);   // gap [400,500) and tail [600,1000) are idle
  // rank 2 has no intervals at all
  const Summary s = summarize(t);
  ASSERT_EQ(s.ranks.size(), 3u);
  EXPECT_EQ(s.step_time_ns, 1000);
  EXPECT_EQ(s.ranks[0].idle_ns, 0);
  EXPECT_EQ(s.ranks[1].idle_ns, 500);
  EXPECT_EQ(s.ranks[1].span_ns, 600);
  EXPECT_EQ(s.ranks[1].exposed_comm_ns, 100);
  EXPECT_EQ(s.ranks[2].rank, 2);
  EXPECT_EQ(s.ranks[2].idle_ns, 1000);
  EXPECT_EQ(s.ranks[2].span_ns, 0);
  EXPECT_EQ(s.ranks[2].compute_ns, 0);
}

TEST(Analysis, StepTimeIsGlobalLastEndMinusGlobalFirstStart) {
  Timeline t = make_timeline(2);
  add(t, 0, 0, kCompute, 100, 300);
  add(t, 1, 0, kCompute, 250, 700);
  const Summary s = summarize(t);
  EXPECT_EQ(s.step_time_ns, 600);
  EXPECT_EQ(s.ranks[0].idle_ns, 400);
  EXPECT_EQ(s.ranks[0].span_ns, 200);
  EXPECT_EQ(s.ranks[1].idle_ns, 150);
}

TEST(Analysis, MemoryIntervalsAreBusyButNeitherComputeNorComm) {
  Timeline t = make_timeline(1);
  add(t, 0, 0, kCompute, 0, 10);
  add(t, 0, 0, kMemory, 20, 30);
  add(t, 0, 1, kComm, 25, 40);
  const RankMetrics m = summarize(t).ranks[0];
  EXPECT_EQ(m.compute_ns, 10);
  EXPECT_EQ(m.comm_ns, 15);
  EXPECT_EQ(m.exposed_comm_ns, 15);
  EXPECT_EQ(m.idle_ns, 40 - (10 + 20));  // busy [0,10) ∪ [20,40)
}

TEST(Analysis, ZeroLengthIntervalsCountForSpanButNotTime) {
  Timeline t = make_timeline(1);
  add(t, 0, 0, kCompute, 0, 10);
  add(t, 0, 1, kComm, 50, 50);
  const Summary s = summarize(t);
  EXPECT_EQ(s.step_time_ns, 50);
  EXPECT_EQ(s.ranks[0].comm_ns, 0);
  EXPECT_EQ(s.ranks[0].span_ns, 50);
  EXPECT_EQ(s.ranks[0].idle_ns, 40);
}

TEST(Analysis, FlopsAndCommIntervalBytesWithoutSchedule) {
  Timeline t = make_timeline(2);
  add(t, 0, 0, kCompute, 0, 500, 0, 1'000'000);
  add(t, 0, 0, kCompute, 500, 1000, 0, 1'000'000);
  add(t, 0, 1, kComm, 0, 100, 4096);
  add(t, 0, 0, kMemory, 0, 100, 777);   // memory traffic is not "sent"
  add(t, 1, 0, kCompute, 0, 1000, 0, 2'000'000);
  add(t, 1, 1, kComm, 0, 100, 100);
  add(t, 1, 1, kComm, 100, 200, 28);
  const Summary s = summarize(t);
  EXPECT_EQ(s.ranks[0].flops, 2'000'000);
  EXPECT_EQ(s.ranks[1].flops, 2'000'000);
  EXPECT_EQ(s.total_flops, 4'000'000);
  EXPECT_EQ(s.ranks[0].bytes_sent, 4096);
  EXPECT_EQ(s.ranks[1].bytes_sent, 128);
  EXPECT_EQ(s.ranks[0].peak_memory_bytes, 0);  // no schedule
  EXPECT_EQ(s.max_peak_memory_bytes(), 0);
  // 2e6 FLOPs per GPU in 1000 ns = 2e12 FLOP/s.
  EXPECT_DOUBLE_EQ(s.achieved_tflops_per_gpu(), 2.0);
}

TEST(Analysis, PeakMemoryIsMaxOverPasses) {
  RankProgram p;
  p.buffers.push_back({"q", 50, true, true});
  p.buffers.push_back({"o_acc_fp32", 100, true, false});
  p.buffers.push_back({"dkv_slots", 300, false, true});
  EXPECT_EQ(peak_memory(p), 350);  // fwd 150, bwd 350
  p.buffers.push_back({"kv_slots", 400, true, false});
  EXPECT_EQ(peak_memory(p), 550);  // fwd 550, bwd 350
  EXPECT_EQ(peak_memory(RankProgram{}), 0);
}

Op make_op(std::int32_t id, OpKind kind, Bytes bytes) {
  Op op;
  op.id = id;
  op.kind = kind;
  op.bytes = bytes;
  return op;
}

TEST(Analysis, ScheduleGivesBytesSentAndPeakMemory) {
  Schedule sched;
  sched.streams = {"compute", "comm"};
  sched.ranks.resize(2);
  for (std::int32_t r = 0; r < 2; ++r) {
    RankProgram& p = sched.ranks[r];
    p.rank = r;
    p.ops.push_back(make_op(0, OpKind::Attend, 0));
    p.ops.push_back(make_op(1, OpKind::SendRecv, 1000 + r));
    p.ops.push_back(make_op(2, OpKind::AllGather, 10));
    p.ops.push_back(make_op(3, OpKind::AllToAll, 20));
    p.ops.push_back(make_op(4, OpKind::ReduceScatter, 30));
    p.ops.push_back(make_op(5, OpKind::DkvAdd, 555'555));   // touched, not sent
    p.ops.push_back(make_op(6, OpKind::Layout, 666'666));   // touched, not sent
    p.buffers.push_back({"q", 100 * (r + 1), true, true});
  }
  Timeline t = make_timeline(2);
  add(t, 0, 1, kComm, 0, 10, 999'999);  // interval bytes are ignored when a schedule is given
  add(t, 1, 0, kCompute, 0, 10);
  const Summary s = summarize(t, &sched);
  EXPECT_EQ(s.ranks[0].bytes_sent, 1000 + 10 + 20 + 30);
  EXPECT_EQ(s.ranks[1].bytes_sent, 1001 + 10 + 20 + 30);
  EXPECT_EQ(s.ranks[0].peak_memory_bytes, 100);
  EXPECT_EQ(s.ranks[1].peak_memory_bytes, 200);
  EXPECT_EQ(s.max_peak_memory_bytes(), 200);
}

TEST(Analysis, ScheduleRanksCountEvenWithAnEmptyTimeline) {
  Schedule sched;
  sched.ranks.resize(4);
  for (std::int32_t r = 0; r < 4; ++r) sched.ranks[r].rank = r;
  const Summary s = summarize(Timeline{}, &sched);
  EXPECT_EQ(s.ranks.size(), 4u);
  EXPECT_EQ(s.step_time_ns, 0);
  EXPECT_EQ(s.achieved_tflops_per_gpu(), 0.0);
}

TEST(Analysis, EmptyTimeline) {
  const Summary s = summarize(Timeline{});
  EXPECT_TRUE(s.ranks.empty());
  EXPECT_EQ(s.step_time_ns, 0);
  EXPECT_EQ(s.total_flops, 0);
  EXPECT_EQ(s.max_exposed_comm_ns(), 0);
  EXPECT_EQ(s.achieved_tflops_per_gpu(), 0.0);
}

TEST(Analysis, RanksNamedByIntervalsBeyondNumRanksAreCounted) {
  Timeline t = make_timeline(1);
  add(t, 2, 0, kCompute, 0, 10);
  const Summary s = summarize(t);
  ASSERT_EQ(s.ranks.size(), 3u);
  EXPECT_EQ(s.ranks[2].compute_ns, 10);
  EXPECT_EQ(s.ranks[1].idle_ns, 10);
}

TEST(Analysis, InvalidIntervalsAreInternalErrors) {
  Timeline t = make_timeline(1);
  add(t, 0, 0, kCompute, 10, 5);
  EXPECT_THROW(summarize(t), InternalError);
  Timeline u = make_timeline(1);
  add(u, -1, 0, kCompute, 0, 5);
  EXPECT_THROW(summarize(u), InternalError);
}

TEST(Analysis, IntervalOrderDoesNotMatter) {
  Timeline t = make_timeline(4, 3);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    const auto rank = static_cast<std::int32_t>(rng() % 4);
    const auto stream = static_cast<std::int32_t>(rng() % 3);
    const IntervalKind kind = static_cast<IntervalKind>(rng() % 3);
    const Nanos start = static_cast<Nanos>(rng() % 100000);
    add(t, rank, stream, kind, start, start + static_cast<Nanos>(rng() % 500), 1, 3);
  }
  const Summary a = summarize(t);
  std::shuffle(t.intervals.begin(), t.intervals.end(), rng);
  const Summary b = summarize(t);
  ASSERT_EQ(a.ranks.size(), b.ranks.size());
  EXPECT_EQ(a.step_time_ns, b.step_time_ns);
  for (std::size_t r = 0; r < a.ranks.size(); ++r) {
    EXPECT_EQ(a.ranks[r].compute_ns, b.ranks[r].compute_ns);
    EXPECT_EQ(a.ranks[r].comm_ns, b.ranks[r].comm_ns);
    EXPECT_EQ(a.ranks[r].exposed_comm_ns, b.ranks[r].exposed_comm_ns);
    EXPECT_EQ(a.ranks[r].idle_ns, b.ranks[r].idle_ns);
    EXPECT_EQ(a.ranks[r].span_ns, b.ranks[r].span_ns);
    // Invariants of the definitions.
    EXPECT_GE(a.ranks[r].exposed_comm_ns, 0);
    EXPECT_LE(a.ranks[r].exposed_comm_ns, a.ranks[r].comm_ns);
    EXPECT_GE(a.ranks[r].idle_ns, 0);
  }
  EXPECT_EQ(a.total_flops, 2000 * 3);
}

// Brute force over a small time range: per-nanosecond occupancy gives the same unions.
TEST(Analysis, MatchesBruteForceOccupancy) {
  constexpr Nanos kRange = 3000;
  Timeline t = make_timeline(2, 3);
  std::mt19937_64 rng(11);
  for (int i = 0; i < 300; ++i) {
    const Nanos start = static_cast<Nanos>(rng() % kRange);
    const Nanos end = std::min<Nanos>(kRange, start + static_cast<Nanos>(rng() % 200));
    add(t, static_cast<std::int32_t>(rng() % 2), static_cast<std::int32_t>(rng() % 3),
        static_cast<IntervalKind>(rng() % 3), start, end);
  }
  const Summary s = summarize(t);
  Nanos lo = kRange, hi = 0;
  for (const Interval& iv : t.intervals) {
    lo = std::min(lo, iv.start);
    hi = std::max(hi, iv.end);
  }
  for (std::int32_t r = 0; r < 2; ++r) {
    std::vector<int> occ(kRange, 0);  // bit k: kind k occupies this nanosecond
    for (const Interval& iv : t.intervals)
      if (iv.rank == r)
        for (Nanos x = iv.start; x < iv.end; ++x) occ[x] |= 1 << static_cast<int>(iv.kind);
    Nanos compute = 0, comm = 0, exposed = 0, busy = 0;
    for (int o : occ) {
      compute += (o & 1) != 0;
      comm += (o & 2) != 0;
      exposed += (o & 2) != 0 && (o & 1) == 0;
      busy += o != 0;
    }
    EXPECT_EQ(s.ranks[r].compute_ns, compute);
    EXPECT_EQ(s.ranks[r].comm_ns, comm);
    EXPECT_EQ(s.ranks[r].exposed_comm_ns, exposed);
    EXPECT_EQ(s.ranks[r].idle_ns, (hi - lo) - busy);
  }
}

// A timeline the size of a zigzag ring forward+backward at N=1024 (millions of intervals): exact
// results, and fast (the bound is loose: CI machines are shared).
TEST(Analysis, MillionsOfIntervals) {
  constexpr std::int32_t kRanks = 1024;
  constexpr int kPerRank = 4096;  // 4,194,304 intervals
  Timeline t = make_timeline(kRanks);
  t.intervals.reserve(static_cast<std::size_t>(kRanks) * kPerRank);
  // Each rank: compute [100i, 100i+80) and comm [100i+60, 100i+100): 20 ns exposed per pair.
  // Interleave ranks so the input is not already grouped by rank.
  for (int i = 0; i < kPerRank / 2; ++i) {
    for (std::int32_t r = 0; r < kRanks; ++r) {
      add(t, r, 0, kCompute, 100 * i, 100 * i + 80, 0, 10);
      add(t, r, 1, kComm, 100 * i + 60, 100 * i + 100, 5);
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  const Summary s = summarize(t);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("summarize: %zu intervals in %.3f s\n", t.intervals.size(), seconds);
  constexpr Nanos pairs = kPerRank / 2;
  EXPECT_EQ(s.step_time_ns, 100 * pairs);
  for (const RankMetrics& m : s.ranks) {
    ASSERT_EQ(m.compute_ns, 80 * pairs);
    ASSERT_EQ(m.comm_ns, 40 * pairs);
    ASSERT_EQ(m.exposed_comm_ns, 20 * pairs);
    ASSERT_EQ(m.idle_ns, 0);
    ASSERT_EQ(m.bytes_sent, 5 * pairs);
  }
  EXPECT_EQ(s.total_flops, Flops{10} * pairs * kRanks);
  EXPECT_LT(seconds, 10.0);
}

// ---------------------------------------------------------------------------------------------
// summarize(SimResult, Schedule): the engine's per-rank totals give the Timeline's summary exactly.

void ExpectSameSummary(const Summary& a, const Summary& b) {
  EXPECT_EQ(a.step_time_ns, b.step_time_ns);
  EXPECT_EQ(a.total_flops, b.total_flops);
  ASSERT_EQ(a.ranks.size(), b.ranks.size());
  for (std::size_t r = 0; r < a.ranks.size(); ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    const RankMetrics &x = a.ranks[r], &y = b.ranks[r];
    EXPECT_EQ(x.rank, y.rank);
    EXPECT_EQ(x.span_ns, y.span_ns);
    EXPECT_EQ(x.compute_ns, y.compute_ns);
    EXPECT_EQ(x.comm_ns, y.comm_ns);
    EXPECT_EQ(x.exposed_comm_ns, y.exposed_comm_ns);
    EXPECT_EQ(x.idle_ns, y.idle_ns);
    EXPECT_EQ(x.bytes_sent, y.bytes_sent);
    EXPECT_EQ(x.flops, y.flops);
    EXPECT_EQ(x.peak_memory_bytes, y.peak_memory_bytes);
  }
}

// Runs `s` twice, with and without a Timeline, and compares the two summaries.
void ExpectSummariesAgree(const Schedule& s, const HardwareProfile& hw) {
  const SimResult with = simulate(s, hw);
  SimOptions options;
  options.record_timeline = false;
  const SimResult without = simulate(s, hw, options);
  ASSERT_TRUE(without.timeline.intervals.empty());
  ExpectSameSummary(summarize(with.timeline, &s), summarize(without, s));
  // A run that recorded its Timeline has the same totals too.
  ExpectSameSummary(summarize(with.timeline, &s), summarize(with, s));
}

TEST(AnalysisOfSimResult, EqualsTheTimelineSummaryForEveryScheduleMaskAndPass) {
  int compared = 0;
  for (ScheduleKind kind : all_schedules())
    for (Mask mask : {Mask::Causal, Mask::Full})
      for (PassSet pass : {PassSet::Fwd, PassSet::Bwd, PassSet::FwdBwd})
        for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
          Workload w;
          w.schedule = kind;
          w.mask = mask;
          w.pass = pass;
          w.dkv = dkv;
          w.seq = 8192;
          w.cp = 8;
          w.gpus_per_node = 4;  // two nodes: NVLink and network transfers
          if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
          if (kind == ScheduleKind::AllGather) w.kv_head_groups = 2;
          if (!invalid_reason(w).empty()) continue;
          SCOPED_TRACE(describe_for_test(w));
          ExpectSummariesAgree(make_schedule(w), default_hardware());
          ++compared;
        }
  EXPECT_GE(compared, 40);
}

TEST(AnalysisOfSimResult, EqualsTheTimelineSummaryWithInterferenceAndSharedLinks) {
  std::vector<Workload> workloads;
  {
    Workload w;  // zigzag ring over 4 nodes of 2 GPUs
    w.seq = 16384;
    w.cp = 8;
    w.gpus_per_node = 2;
    workloads.push_back(w);
    w.schedule = ScheduleKind::Ring;  // TP innermost: CP neighbours on other nodes, NICs shared by groups
    w.tp = 2;
    w.placement = Placement::TpInner;
    w.gpus_per_node = 4;
    workloads.push_back(w);
    w = Workload{};
    w.schedule = ScheduleKind::Hybrid;  // all-to-all inside nodes, ring across
    w.seq = 16384;
    w.cp = 16;
    w.ulysses = 4;
    w.gpus_per_node = 4;
    workloads.push_back(w);
    w = Workload{};
    w.schedule = ScheduleKind::AllGather;
    w.seq = 16384;
    w.cp = 4;
    w.kv_head_groups = 4;
    w.balance = Balance::Contiguous;
    workloads.push_back(w);
  }
  for (double interference : {1.0, 1.3}) {
    for (const char* name : {"h100-sxm", "a100-sxm-80gb"}) {
      HardwareProfile hw = load_hardware(name);
      hw.comm_compute_interference = interference;
      hw.nics_per_node = 2;  // GPUs share NICs: fair sharing between this group's own flows
      for (const Workload& w : workloads) {
        SCOPED_TRACE(describe_for_test(w) + " " + name + " interference " + std::to_string(interference));
        ExpectSummariesAgree(make_schedule(w), hw);
      }
    }
  }
}

TEST(AnalysisOfSimResult, EqualsTheTimelineSummaryOnHandBuiltEdgeCases) {
  // Zero-length ops, a rank without ops, two compute streams at once, memory ops between.
  Schedule s;
  s.workload.cp = 3;
  s.workload.head_dim = 128;
  s.streams = {"compute", "comm", "compute2"};
  s.ranks.resize(3);
  for (std::int32_t r = 0; r < 3; ++r) s.ranks[r].rank = r;
  auto add = [&](std::int32_t r, Op op) {
    op.id = static_cast<std::int32_t>(s.ranks[r].ops.size());
    s.ranks[r].ops.push_back(op);
  };
  Op attend;
  attend.kind = OpKind::Attend;
  attend.flops = 4'000'000'000;
  attend.attn.q_len = attend.attn.kv_len = 1024;
  attend.attn.mask = AttnMask::Full;
  Op empty_send;  // no peers: completes as it starts
  empty_send.kind = OpKind::SendRecv;
  empty_send.stream = 1;
  Op send = empty_send;
  send.send.peer = 2;
  send.send.bytes = send.bytes = 4 << 20;
  Op recv = empty_send;
  recv.recv.peer = 0;
  recv.recv.bytes = 4 << 20;
  Op layout;
  layout.kind = OpKind::Layout;
  layout.bytes = 1 << 20;
  add(0, attend);
  add(0, empty_send);
  add(0, send);
  Op attend2 = attend;
  attend2.stream = 2;
  add(0, attend2);
  add(0, layout);
  add(2, recv);
  add(2, layout);
  s.ranks[0].buffers.push_back({"q", 1000, true, false});
  HardwareProfile hw = default_hardware();
  hw.comm_compute_interference = 1.2;
  ExpectSummariesAgree(s, hw);
  const Summary sum = summarize(simulate(s, hw, SimOptions{false, 0, {}}), s);
  EXPECT_EQ(sum.ranks[1].span_ns, 0);
  EXPECT_EQ(sum.ranks[1].idle_ns, sum.step_time_ns);
  EXPECT_EQ(sum.ranks[0].peak_memory_bytes, 1000);
}

}  // namespace
}  // namespace cpscope
