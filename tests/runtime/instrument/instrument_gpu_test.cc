// GPU tests of the CUPTI tracer through run_on_cuda: a traced loopback run must give every op of every
// virtual rank exactly one interval (start <= end, on the op's stream), and a ring schedule's
// communication must overlap its attention on the GPU somewhere, which is what concurrent-kernel
// tracing (not the serializing kernel kind) must preserve; replay traces its one rank; the overhead mode
// splits the iterations. Each test skips itself when no CUDA device is visible.
//
// The same source also builds as instrument_emu_test, on the CPU SIMT emulation (runtime/kernels/emu/), whose
// stand-in tracer records host-clock intervals through the same attribution: shapes are cut, its lazy streams
// run one item at a time (so nothing overlaps and that check is left out), and replay runs on its one-rank NCCL.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <map>
#include <string>
#include <thread>
#include <utility>

#include "runtime/cuda/cuda_run.h"
#include "runtime/instrument/cupti_tracer.h"
#include "sim/schedule.h"
#include "tests/runtime/gpu_test_util.h"
#include "sim/timeline.h"

namespace cpscope::rt {
namespace {

#if defined(CPS_SIMT_EMU)
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

Workload ring(ScheduleKind kind, std::int64_t cp, std::int64_t seq, PassSet pass) {
  Workload w;
  w.schedule = kind;
  w.cp = cp;
  w.batch = 1;
  // Emulated: a sixteenth of the tokens, half the heads, head_dim 64 (the emulation is some 10^4 times slower).
  w.seq = kEmulated ? seq / 16 : seq;
  w.heads = kEmulated ? 8 : 16;
  w.kv_heads = 4;
  w.head_dim = kEmulated ? 64 : 128;
  w.dtype = DType::BF16;
  w.mask = Mask::Causal;
  w.pass = pass;
  w.gpus_per_node = 8;
  if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
  validate(w);
  return w;
}

CudaRunOptions options(Transport t) {
  CudaRunOptions o;
  o.transport = t;
  o.warmup = 1;
  o.iters = 2;
  o.timeout = std::chrono::seconds(120);
  return o;
}

// Every op of `ranks` has exactly one interval, on its stream, with start <= end.
void expect_one_interval_per_op(const Schedule& s, const Timeline& t, const std::vector<std::int32_t>& ranks) {
  std::map<std::pair<std::int32_t, std::int64_t>, int> count;
  for (const Interval& iv : t.intervals) {
    ++count[{iv.rank, iv.op_id}];
    EXPECT_LE(iv.start, iv.end) << "rank " << iv.rank << " op " << iv.op_id;
    EXPECT_GE(iv.start, 0);
    const Op& op = s.ranks[static_cast<std::size_t>(iv.rank)].ops[static_cast<std::size_t>(iv.op_id)];
    EXPECT_EQ(iv.stream, op.stream) << op_name(op);
  }
  std::size_t expected = 0;
  for (std::int32_t r : ranks) {
    for (const Op& op : s.ranks[static_cast<std::size_t>(r)].ops)
      EXPECT_EQ((count[{r, op.id}]), 1) << "rank " << r << " op " << op.id << " (" << op_name(op) << ")";
    expected += s.ranks[static_cast<std::size_t>(r)].ops.size();
  }
  EXPECT_EQ(t.intervals.size(), expected);
}

// Some communication interval of a rank overlaps some compute interval of the same rank.
bool comm_overlaps_compute(const Timeline& t) {
  for (const Interval& a : t.intervals) {
    if (a.kind != IntervalKind::Comm) continue;
    for (const Interval& b : t.intervals)
      if (b.rank == a.rank && b.kind == IntervalKind::Compute && b.stream != a.stream && a.start < b.end &&
          b.start < a.end)
        return true;
  }
  return false;
}

TEST(InstrumentGpu, LoopbackRingTracesEveryOpOfEveryRankAndOverlaps) {
  CPS_REQUIRE_GPU();
  // Long enough blocks (4K tokens per rank) that a step's receive copy runs beside the attention.
  const Schedule s = make_schedule(ring(ScheduleKind::Ring, 4, 16384, PassSet::Fwd));
  const CudaRunResult r = run_on_cuda(s, options(Transport::Loopback));
  ASSERT_TRUE(r.traced);
  EXPECT_EQ(r.trace.dropped, 0);
  EXPECT_EQ(r.trace.missing_ops, 0) << r.trace.first_missing;
  EXPECT_GT(r.trace.records, 0);
  EXPECT_EQ(r.iteration_ms.size(), 2u);  // the traced iteration is extra
  EXPECT_GT(r.traced_ms, 0.0);
  expect_one_interval_per_op(s, r.timeline, {0, 1, 2, 3});
  if (!kEmulated) {
    EXPECT_TRUE(comm_overlaps_compute(r.timeline)) << "no communication overlapped attention on any rank";
  }
}

TEST(InstrumentGpu, LoopbackEveryScheduleForwardBackward) {
  CPS_REQUIRE_GPU();
  for (ScheduleKind k : {ScheduleKind::ZigzagRing, ScheduleKind::AllGather, ScheduleKind::Ulysses, ScheduleKind::Hybrid}) {
    const Schedule s = make_schedule(ring(k, 4, 4096, PassSet::FwdBwd));
    SCOPED_TRACE(std::string(to_string(k)));
    const CudaRunResult r = run_on_cuda(s, options(Transport::Loopback));
    ASSERT_TRUE(r.traced);
    EXPECT_EQ(r.trace.missing_ops, 0) << r.trace.first_missing;
    // Every record belongs to an op, the fills and the backward's delta included (Op::fills).
    EXPECT_EQ(r.trace.unattributed, 0);
    expect_one_interval_per_op(s, r.timeline, {0, 1, 2, 3});
  }
}

TEST(InstrumentGpu, ReplayTracesItsOneRankIncludingNcclKernels) {
  CPS_REQUIRE_GPU();  // emulated: the stand-in NCCL's self-copies are recorded as NCCL's kernels are
  const Schedule s = make_schedule(ring(ScheduleKind::ZigzagRing, 4, 16384, PassSet::FwdBwd));
  CudaRunOptions o = options(Transport::Replay);
  o.replay_rank = 2;
  const CudaRunResult r = run_on_cuda(s, o);
  ASSERT_TRUE(r.traced);
  EXPECT_EQ(r.trace.missing_ops, 0) << r.trace.first_missing;  // sendrecv ops: NCCL kernels from ncclGroupEnd
  expect_one_interval_per_op(s, r.timeline, {2});
}

TEST(InstrumentGpu, OverheadModeAlternatesAndStillTraces) {
  CPS_REQUIRE_GPU();
  const Schedule s = make_schedule(ring(ScheduleKind::Ring, 4, 8192, PassSet::Fwd));
  CudaRunOptions o = options(Transport::Loopback);
  o.iters = 4;
  o.trace_overhead = true;
  const CudaRunResult r = run_on_cuda(s, o);
  ASSERT_TRUE(r.traced);
  EXPECT_EQ(r.iteration_ms.size(), 4u);
  EXPECT_EQ(r.untraced_ms.size(), 2u);
  EXPECT_EQ(r.traced_iteration_ms.size(), 2u);
  expect_one_interval_per_op(s, r.timeline, {0, 1, 2, 3});
}

TEST(InstrumentGpu, NoTraceLeavesNoTimeline) {
  CPS_REQUIRE_GPU();
  const Schedule s = make_schedule(ring(ScheduleKind::Ring, 2, 2048, PassSet::Fwd));
  CudaRunOptions o = options(Transport::Loopback);
  o.trace = false;
  const CudaRunResult r = run_on_cuda(s, o);
  EXPECT_FALSE(r.traced);
  EXPECT_TRUE(r.timeline.intervals.empty());
}

#if !defined(CPS_SIMT_EMU)
// What the nccl transport relies on for NCCL's own-thread launches (non-blocking communicators): a launch
// from another thread inside an op's launch window is that op's, one outside any window is unattributed.
// The emulation's stand-in tracer has no API records, so this runs on a GPU only.
TEST(InstrumentGpu, LaunchWindowClaimsAnotherThreadsLaunch) {
  CPS_REQUIRE_GPU();
  constexpr std::size_t kBytes = std::size_t{1} << 20;
  void* buf = nullptr;
  ASSERT_EQ(cudaMalloc(&buf, kBytes), cudaSuccess);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaError_t in_window = cudaErrorUnknown, outside = cudaErrorUnknown;
  instrument::TraceCapture c;
  {
    instrument::CuptiTracer tracer(0);
    tracer.start();
    {
      const instrument::LaunchWindowScope window(0, 7);
      std::thread t([&] { in_window = cudaMemsetAsync(buf, 0, kBytes, stream); });
      t.join();
    }
    std::thread t([&] { outside = cudaMemsetAsync(buf, 1, kBytes, stream); });
    t.join();
    tracer.end_launches();
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    c = tracer.finish();
  }
  cudaStreamDestroy(stream);
  cudaFree(buf);
  ASSERT_EQ(in_window, cudaSuccess);
  ASSERT_EQ(outside, cudaSuccess);
  ASSERT_EQ(c.ops.size(), 1u);
  EXPECT_EQ(c.ops[0].rank, 0);
  EXPECT_EQ(c.ops[0].op, 7);
  EXPECT_LE(c.ops[0].start_ns, c.ops[0].end_ns);
  EXPECT_EQ(c.windowed, 1);
  EXPECT_EQ(c.unattributed, 1);
}
#endif

}  // namespace
}  // namespace cpscope::rt
