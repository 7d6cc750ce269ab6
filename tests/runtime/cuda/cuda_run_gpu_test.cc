// GPU tests of the CUDA runtime: every schedule, run by the executor on the CUDA backend with the
// loopback transport (all ranks on one GPU), must reproduce plain fp32 attention computed on the GPU by
// the reference kernels, within bf16 tolerance; the replay transport must time every kind of transfer; a
// receive that never matches must time out naming the rank and the op. Each test skips itself when no
// CUDA device is visible.
//
// The same source also builds as cuda_run_emu_test, on the CPU SIMT emulation of the kernels and a stand-in
// CUDA runtime (runtime/kernels/emu/), where CI runs it: shapes are cut (the emulation is some 10^4 times
// slower than a GPU) and nothing is CUPTI-traced; replay runs on the emulation's stand-in NCCL (one-rank
// communicators, runtime/kernels/emu/nccl_emu.cc).
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "runtime/cuda/cuda_run.h"
#include "sim/error.h"
#include "sim/schedule.h"
#include "tests/runtime/gpu_test_util.h"

namespace cpscope::rt {
namespace {

// bf16 inputs, fp32 accumulation: the flash kernels round P and dS to bf16 for the tensor cores.
constexpr double kTolerance = 2e-2;


#if defined(CPS_SIMT_EMU)
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

Workload small(ScheduleKind kind, std::int64_t cp, std::int64_t seq, std::int64_t dim, Mask mask, PassSet pass) {
  Workload w;
  w.schedule = kind;
  w.cp = cp;
  w.batch = 1;
  // Emulated: an eighth of the tokens, 4 heads, head_dim 64 (still several tiles per rank and step at cp 2).
  w.seq = kEmulated ? seq / 8 : seq;
  w.heads = kEmulated ? 4 : 8;
  w.kv_heads = 2;
  w.head_dim = kEmulated ? 64 : dim;
  w.dtype = DType::BF16;
  w.mask = mask;
  w.pass = pass;
  w.gpus_per_node = 8;
  if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
  return w;
}

std::string describe(const Workload& w) {
  return fmt::format("{} cp={} U={} S={} H={}/{} D={} mask={} pass={} balance={} dkv={} G={}", to_string(w.schedule),
                     w.cp, w.ulysses, w.seq, w.heads, w.kv_heads, w.head_dim, to_string(w.mask), to_string(w.pass),
                     to_string(w.balance), to_string(w.dkv), w.kv_head_groups);
}

void expect_matches_reference(const Workload& w) {
  SCOPED_TRACE(describe(w));
  CudaRunOptions o;
  o.transport = Transport::Loopback;
  o.check = true;
  o.warmup = 1;
  o.iters = 2;  // a second iteration must start from empty accumulators again
  o.timeout = std::chrono::seconds(120);
  o.trace = !kEmulated;
  const CudaRunResult r = run_on_cuda(make_schedule(w), o);
  ASSERT_TRUE(r.check.ran);
  if (w.pass != PassSet::Bwd) {
    EXPECT_LE(r.check.o, kTolerance) << "O";
    EXPECT_LE(r.check.lse, kTolerance) << "LSE";
  }
  if (w.pass != PassSet::Fwd) {
    EXPECT_LE(r.check.dq, kTolerance) << "dQ";
    EXPECT_LE(r.check.dk, kTolerance) << "dK";
    EXPECT_LE(r.check.dv, kTolerance) << "dV";
  }
  ASSERT_EQ(r.iteration_ms.size(), 2u);
  for (double ms : r.iteration_ms) EXPECT_TRUE(std::isfinite(ms) && ms > 0) << ms;
  EXPECT_GT(r.device_bytes, 0);
}

// Runs every valid workload of `cases`; returns how many ran.
int check_all(const std::vector<Workload>& cases) {
  int ran = 0;
  for (const Workload& w : cases) {
    if (!invalid_reason(w).empty()) continue;
    expect_matches_reference(w);
    ++ran;
  }
  return ran;
}

TEST(CudaLoopback, RingAndZigzagRingMatchReference) {
  CPS_REQUIRE_GPU();
  std::vector<Workload> cases;
  for (ScheduleKind kind : {ScheduleKind::Ring, ScheduleKind::ZigzagRing})
    for (std::int64_t cp : {2, 4})
      for (Mask m : {Mask::Causal, Mask::Full})
        for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
          Workload w = small(kind, cp, 2048, cp == 2 ? 128 : 64, m, PassSet::FwdBwd);
          w.dkv = dkv;
          cases.push_back(w);
        }
  EXPECT_EQ(check_all(cases), 16);
}

TEST(CudaLoopback, AllGatherMatchesReference) {
  CPS_REQUIRE_GPU();
  std::vector<Workload> cases;
  for (std::int64_t cp : {2, 4})
    for (Mask m : {Mask::Causal, Mask::Full})
      for (std::int64_t groups : {1, 2}) {
        Workload w = small(ScheduleKind::AllGather, cp, 2048, groups == 1 ? 128 : 64, m, PassSet::FwdBwd);
        w.kv_head_groups = groups;
        w.dkv = groups == 1 ? DkvVariant::Fp32 : DkvVariant::Input;
        cases.push_back(w);
      }
  Workload contiguous = small(ScheduleKind::AllGather, 4, 1024, 128, Mask::Causal, PassSet::FwdBwd);
  contiguous.balance = Balance::Contiguous;
  cases.push_back(contiguous);
  EXPECT_EQ(check_all(cases), 9);
}

TEST(CudaLoopback, UlyssesMatchesReference) {
  CPS_REQUIRE_GPU();
  std::vector<Workload> cases;
  for (Mask m : {Mask::Causal, Mask::Full}) {
    cases.push_back(small(ScheduleKind::Ulysses, 2, 2048, 128, m, PassSet::FwdBwd));
    Workload four = small(ScheduleKind::Ulysses, 4, 1024, 64, m, PassSet::FwdBwd);
    four.kv_heads = 4;  // Ulysses splits KV heads over the group
    cases.push_back(four);
    Workload repeated = four;
    repeated.kv_heads = 2;  // ... or repeats them up to it: two copies of each, summed in the backward
    cases.push_back(repeated);
  }
  EXPECT_EQ(check_all(cases), 6);
  // Loopback asks the driver for its most hardware queues (a user's own value would stay): with 8, streams of
  // different virtual ranks would share queues and wait for each other's work.
  const char* connections = std::getenv("CUDA_DEVICE_MAX_CONNECTIONS");
  ASSERT_NE(connections, nullptr);
  EXPECT_STREQ(connections, "32");
}

TEST(CudaLoopback, HybridMatchesReference) {
  CPS_REQUIRE_GPU();
  std::vector<Workload> cases;
  for (Mask m : {Mask::Causal, Mask::Full})
    for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
      Workload w = small(ScheduleKind::Hybrid, 4, 4096, 128, m, PassSet::FwdBwd);
      w.dkv = dkv;
      cases.push_back(w);
    }
  // U = 4 > Hkv = 2: each KV head repeated twice, the copies rotating round a ring of 2.
  Workload repeated = small(ScheduleKind::Hybrid, 8, 4096, 64, Mask::Causal, PassSet::FwdBwd);
  repeated.ulysses = 4;
  repeated.dkv = DkvVariant::Input;
  cases.push_back(repeated);
  EXPECT_EQ(check_all(cases), 5);
}

TEST(CudaLoopback, ForwardOnlyAndBackwardOnlyMatchReference) {
  CPS_REQUIRE_GPU();
  std::vector<Workload> cases;
  for (ScheduleKind kind : all_schedules())
    for (PassSet p : {PassSet::Fwd, PassSet::Bwd}) {
      Workload w = small(kind, 2, 1024, 64, Mask::Causal, p);
      if (kind == ScheduleKind::Hybrid) w.cp = 4;
      w.dkv = kind == ScheduleKind::ZigzagRing ? DkvVariant::Input : DkvVariant::Fp32;
      cases.push_back(w);
    }
  EXPECT_EQ(check_all(cases), 10);
}

TEST(CudaLoopback, UnmatchedReceiveTimesOutNamingTheOp) {
  CPS_REQUIRE_GPU();
  const Workload w = small(ScheduleKind::Ring, 4, 1024, 64, Mask::Causal, PassSet::Fwd);
  Schedule s = make_schedule(w);
  for (Op& op : s.ranks[1].ops)
    if (op.kind == OpKind::SendRecv && op.step == 1) op.recv.peer = 3;  // rank 3 never sends to 1 on K/V
  CudaRunOptions o;
  o.timeout = std::chrono::seconds(2);
  o.warmup = 0;
  o.iters = 1;
  o.trace = !kEmulated;
  try {
    run_on_cuda(s, o);
    FAIL() << "expected a timeout";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank 1 op"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fwd/step1/sendrecv"), std::string::npos) << msg;
    EXPECT_NE(msg.find("timed out"), std::string::npos) << msg;
  }
}

TEST(CudaReplay, TimesEveryKindOfTransfer) {
  CPS_REQUIRE_GPU();
  std::vector<Workload> cases;
  cases.push_back(small(ScheduleKind::ZigzagRing, 8, 8192, 128, Mask::Causal, PassSet::FwdBwd));  // send/recv
  Workload te = small(ScheduleKind::Ring, 4, 4096, 128, Mask::Causal, PassSet::FwdBwd);
  te.dkv = DkvVariant::Input;  // packed [K/V; dK/dV] messages
  cases.push_back(te);
  Workload ag = small(ScheduleKind::AllGather, 4, 4096, 128, Mask::Causal, PassSet::FwdBwd);
  ag.kv_head_groups = 2;  // all-gather and reduce-scatter of head groups (non-contiguous regions)
  cases.push_back(ag);
  Workload in_place = small(ScheduleKind::AllGather, 4, 4096, 128, Mask::Causal, PassSet::FwdBwd);
  in_place.dkv = DkvVariant::Input;  // nccl would reduce-scatter in place; replay unpacks the result
  cases.push_back(in_place);
  cases.push_back(small(ScheduleKind::Hybrid, 4, 4096, 64, Mask::Full, PassSet::FwdBwd));  // all-to-all + ring
  Workload batched = small(ScheduleKind::Hybrid, 4, 2048, 64, Mask::Causal, PassSet::FwdBwd);
  batched.batch = 2;  // every all-to-all part of two batch entries: packed and unpacked
  cases.push_back(batched);
  cases.push_back(small(ScheduleKind::ZigzagRing, 4, 4096, 128, Mask::Causal, PassSet::Bwd));
  // Every op's copies are checked against the simulator's transport_staging() as it runs (an InternalError
  // would fail run_on_cuda).
  for (const Workload& w : cases) {
    SCOPED_TRACE(describe(w));
    ASSERT_TRUE(invalid_reason(w).empty()) << invalid_reason(w);
    CudaRunOptions o;
    o.transport = Transport::Replay;
    o.replay_rank = static_cast<std::int32_t>(w.cp - 1);
    o.warmup = 1;
    o.iters = 3;
    const CudaRunResult r = run_on_cuda(make_schedule(w), o);
    ASSERT_EQ(r.iteration_ms.size(), 3u);
    for (double ms : r.iteration_ms) EXPECT_TRUE(std::isfinite(ms) && ms > 0) << ms;
    EXPECT_FALSE(r.check.ran);
    EXPECT_FALSE(r.device_name.empty());
    EXPECT_GT(r.sm_count, 0);
    EXPECT_FALSE(r.nccl_version.empty());
    EXPECT_GT(r.device_bytes, 0);
  }
}

}  // namespace
}  // namespace cpscope::rt
