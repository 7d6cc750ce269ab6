// The nccl transport (runtime/cuda/transport_nccl.cc), the code a cluster runs, on the SIMT emulation: the ranks
// are threads of this process that meet through a ProcessGroup of threads, and NCCL is the emulation's stand-in
// (runtime/kernels/emu/nccl_emu.cc: non-blocking init and split, grouped point-to-point, all-gather and
// reduce-scatter). Every schedule runs forward and backward with --check against plain attention, so the
// transport's communicators, splits, peer numbering, staging, packing and in-place collectives are exercised
// in CI, where MPI and GPUs are not. What it cannot show: NCCL's own behaviour and timing on real links.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nccl.h>  // the emulation's stand-in: cps_emu_nccl_inits

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <set>
#include <utility>
#include <condition_variable>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/cuda/cuda_run.h"
#include "runtime/cuda/transport.h"
#include "sim/error.h"
#include "sim/schedule.h"

namespace cpscope::rt {
namespace {

constexpr double kTolerance = 2e-2;  // bf16 inputs, as the loopback checks

// A barrier whose waiters give up after a while: a rank that never comes (it failed alone) fails the test
// instead of hanging it.
class TimedBarrier {
 public:
  explicit TimedBarrier(int n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const std::uint64_t gen = generation_;
    if (++count_ == n_) {
      count_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(120), [&] { return generation_ != gen; }))
      throw std::runtime_error("a peer rank did not reach the process group's barrier within 120 s");
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_, count_ = 0;
  std::uint64_t generation_ = 0;
};

// What the ranks of one run share.
struct Meeting {
  explicit Meeting(int n) : n(n), barrier(n), hashes(static_cast<std::size_t>(n)) {
    for (int r = 0; r < n; ++r) local_rank.push_back(r);
  }
  int n;
  std::vector<std::int32_t> local_rank;  // each rank's on its node (default: one node)
  TimedBarrier barrier;
  std::mutex mu;
  std::vector<unsigned char> bytes;
  std::vector<double> acc;
  int contributed = 0;
  std::vector<std::uint64_t> hashes;
};

// A ProcessGroup whose ranks are threads (on the nodes Meeting::local_rank says).
class ThreadGroup final : public ProcessGroup {
 public:
  ThreadGroup(Meeting& m, int rank) : m_(m), rank_(rank) {}
  std::int32_t rank() const override { return rank_; }
  std::int32_t size() const override { return m_.n; }
  std::int32_t local_rank() const override { return m_.local_rank[static_cast<std::size_t>(rank_)]; }
  void barrier() override { m_.barrier.arrive_and_wait(); }
  void broadcast(void* data, std::int64_t bytes, std::int32_t root) override {
    barrier();
    if (rank_ == root) {
      const std::lock_guard<std::mutex> lock(m_.mu);
      m_.bytes.assign(static_cast<unsigned char*>(data), static_cast<unsigned char*>(data) + bytes);
    }
    barrier();
    if (rank_ != root) {
      const std::lock_guard<std::mutex> lock(m_.mu);
      std::copy(m_.bytes.begin(), m_.bytes.end(), static_cast<unsigned char*>(data));
    }
    barrier();
  }
  std::vector<double> max(const std::vector<double>& v) override {
    barrier();
    {
      const std::lock_guard<std::mutex> lock(m_.mu);
      if (m_.contributed++ == 0)
        m_.acc = v;
      else
        for (std::size_t i = 0; i < v.size(); ++i) m_.acc[i] = std::max(m_.acc[i], v[i]);
    }
    barrier();
    std::vector<double> out;
    {
      const std::lock_guard<std::mutex> lock(m_.mu);
      out = m_.acc;
    }
    barrier();
    if (rank_ == 0) m_.contributed = 0;  // before anyone passes the next call's first barrier
    return out;
  }
  void check_same(std::uint64_t hash, const std::string& what) override {
    m_.hashes[static_cast<std::size_t>(rank_)] = hash;
    barrier();
    std::vector<std::int32_t> differ;
    for (std::int32_t r = 0; r < m_.n; ++r)
      if (m_.hashes[static_cast<std::size_t>(r)] != m_.hashes[0]) differ.push_back(r);
    barrier();
    if (!differ.empty())
      throw InputError("config", fmt::format("{} differs between the ranks: ranks {} do not match rank 0", what,
                                             fmt::join(differ, ", ")));
  }

 private:
  Meeting& m_;
  int rank_;
};

CudaRunOptions options() {
  CudaRunOptions o;
  o.transport = Transport::Nccl;
  o.check = true;
  o.warmup = 1;
  o.iters = 2;  // a second iteration reuses communicators, staging and slots
  o.timeout = std::chrono::seconds(300);
  o.trace = false;  // tracing gathers over MPI
  return o;
}

// Runs `schedule` with one thread per rank; `opts(rank)` gives each rank's options. Returns each rank's result
// and the message of each rank's exception (empty when it returned).
struct Outcome {
  std::vector<CudaRunResult> results;
  std::vector<std::string> errors;
};
Outcome run_ranks(const Schedule& schedule, const std::function<CudaRunOptions(int)>& opts,
                 std::vector<std::int32_t> local_rank = {}) {
  const int n = static_cast<int>(schedule.ranks.size());
  Meeting meeting(n);
  if (!local_rank.empty()) meeting.local_rank = std::move(local_rank);
  Outcome out;
  out.results.resize(static_cast<std::size_t>(n));
  out.errors.resize(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      ThreadGroup group(meeting, r);
      try {
        out.results[static_cast<std::size_t>(r)] = run_nccl_rank(schedule, opts(r), group);
      } catch (const std::exception& e) {
        out.errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  return out;
}

Workload small(ScheduleKind kind, std::int64_t cp) {
  Workload w;
  w.schedule = kind;
  w.cp = cp;
  w.batch = 1;
  w.seq = 256;  // 64 tokens per rank at cp 4: the emulation is some 10^4 times slower than a GPU
  w.heads = 4;
  w.kv_heads = 2;
  w.head_dim = 64;
  w.dtype = DType::BF16;
  w.mask = Mask::Causal;
  w.pass = PassSet::FwdBwd;
  w.gpus_per_node = 8;
  return w;
}

std::string describe(const Workload& w) {
  return fmt::format("{} cp={} U={} B={} H={}/{} mask={} balance={} dkv={} G={}", to_string(w.schedule), w.cp,
                     w.ulysses, w.batch, w.heads, w.kv_heads, to_string(w.mask), to_string(w.balance),
                     to_string(w.dkv), w.kv_head_groups);
}

void expect_matches_reference(const Workload& w) {
  SCOPED_TRACE(describe(w));
  ASSERT_EQ(invalid_reason(w), "");
  const Outcome o = run_ranks(make_schedule(w), [](int) { return options(); });
  // Every rank's error: the first is often a peer's abort, the cause is in another rank's.
  for (std::size_t r = 0; r < o.errors.size(); ++r) EXPECT_EQ(o.errors[r], "") << "rank " << r;
  if (::testing::Test::HasFailure()) return;
  for (std::size_t r = 0; r < o.results.size(); ++r) {
    const CudaRunResult& res = o.results[r];
    SCOPED_TRACE(fmt::format("rank {}", r));
    ASSERT_TRUE(res.check.ran);
    EXPECT_EQ(res.rank, static_cast<std::int32_t>(r));
    EXPECT_EQ(res.ranks, w.cp);
    // The errors are reduced over the ranks: every rank reports the same.
    EXPECT_EQ(res.check.o, o.results[0].check.o);
    EXPECT_LE(res.check.o, kTolerance) << "O";
    EXPECT_LE(res.check.lse, kTolerance) << "LSE";
    EXPECT_LE(res.check.dq, kTolerance) << "dQ";
    EXPECT_LE(res.check.dk, kTolerance) << "dK";
    EXPECT_LE(res.check.dv, kTolerance) << "dV";
    ASSERT_EQ(res.iteration_ms.size(), 2u);
    for (double ms : res.iteration_ms) EXPECT_TRUE(std::isfinite(ms) && ms > 0) << ms;
  }
}

// Point-to-point rings: SendRecv on the stream communicators, K/V forward and fp32 dK/dV (PyTorch) or
// TransformerEngine's packed [K/V; dK/dV] messages in the input dtype, reversed.
TEST(NcclTransportEmu, RingsMatchReference) {
  Workload ring = small(ScheduleKind::Ring, 4);
  expect_matches_reference(ring);
  Workload te = small(ScheduleKind::ZigzagRing, 4);
  te.dkv = DkvVariant::Input;
  expect_matches_reference(te);
}

// Collectives on split communicators: all-gather and reduce-scatter per plane, in place (one head group, batch 1)
// and staged (two head groups: packing the rank's heads, unpacking into a head slice; batch 2: every member's
// rows), the reduce-scatter summing in fp32 or, with dK/dV in the input dtype, in bf16.
TEST(NcclTransportEmu, AllGatherMatchesReference) {
  Workload in_place = small(ScheduleKind::AllGather, 4);
  in_place.balance = Balance::Contiguous;
  expect_matches_reference(in_place);
  Workload groups = small(ScheduleKind::AllGather, 4);
  groups.kv_head_groups = 2;
  groups.dkv = DkvVariant::Input;
  expect_matches_reference(groups);
  Workload batch = small(ScheduleKind::AllGather, 2);
  batch.batch = 2;
  batch.mask = Mask::Full;
  expect_matches_reference(batch);
}

// All-to-alls as grouped sends and receives on split communicators (peers numbered by their position in the
// group): Ulysses over all ranks (KV heads split or repeated), and hybrid's Ulysses groups beside its rings.
TEST(NcclTransportEmu, UlyssesAndHybridMatchReference) {
  Workload ulysses = small(ScheduleKind::Ulysses, 2);
  expect_matches_reference(ulysses);
  Workload hybrid = small(ScheduleKind::Hybrid, 4);
  hybrid.ulysses = 2;
  expect_matches_reference(hybrid);
  // Ulysses over more ranks than KV heads: each head goes to two ranks, and the backward all-to-all brings
  // back two copies of its dK/dV, one into the output and one into the replicas buffer.
  Workload repeated = small(ScheduleKind::Ulysses, 4);
  expect_matches_reference(repeated);
}

// A rank started with other options is refused on every rank before any collective, naming it.
TEST(NcclTransportEmu, RanksWithDifferentOptionsAreRefusedBeforeAnyCollective) {
  const Schedule s = make_schedule(small(ScheduleKind::Ring, 2));
  const Outcome o = run_ranks(s, [](int r) {
    CudaRunOptions opt = options();
    if (r == 1) opt.seed = 99;
    return opt;
  });
  for (const std::string& e : o.errors) EXPECT_NE(e.find("ranks 1 do not match rank 0"), std::string::npos) << e;
  // Only rank 1 traces: it must not refuse alone (tracing needs MPI) while rank 0 waits in the hash check.
  const Outcome t = run_ranks(s, [](int r) {
    CudaRunOptions opt = options();
    opt.trace = r == 1;
    return opt;
  });
  for (const std::string& e : t.errors) EXPECT_NE(e.find("ranks 1 do not match rank 0"), std::string::npos) << e;
}

// NCCL_COMM_BLOCKING=1 overrides the communicators' non-blocking config, and a missing peer would then hang
// a rank inside NCCL past every timeout: every rank refuses it before creating a communicator.
TEST(NcclTransportEmu, BlockingCommunicatorsFromTheEnvironmentAreRefused) {
  const Schedule s = make_schedule(small(ScheduleKind::Ring, 2));
  const long long before = cps_emu_nccl_inits();
  ASSERT_EQ(setenv("NCCL_COMM_BLOCKING", "1", 1), 0);
  const Outcome o = run_ranks(s, [](int) { return options(); });
  unsetenv("NCCL_COMM_BLOCKING");
  ASSERT_EQ(o.errors.size(), 2u);
  for (const std::string& e : o.errors)
    EXPECT_NE(e.find("NCCL_COMM_BLOCKING: is '1' on rank"), std::string::npos) << e;
  for (const std::string& e : o.errors) EXPECT_NE(e.find("past the --timeout; unset it"), std::string::npos) << e;
  EXPECT_EQ(cps_emu_nccl_inits(), before) << "refused before any communicator";
}

// A communicator per stream that carries communication on some rank, none for the compute stream (or a
// stream only the backward uses, in a forward-only run); and the memory check keeps 512 MiB free per
// communicator a rank holds (stream ones and the split ones of its groups), at least 1 GiB.
TEST(NcclTransportEmu, CommunicatorsOnlyWhereRanksCommunicate) {
  Workload fwd = small(ScheduleKind::Ring, 2);
  fwd.pass = PassSet::Fwd;
  const Schedule s = make_schedule(fwd);
  std::set<std::int32_t> talking;
  for (const RankProgram& p : s.ranks)
    for (const Op& op : p.ops)
      if (op.kind == OpKind::SendRecv) talking.insert(op.stream);
  ASSERT_EQ(talking.size(), 1u);
  ASSERT_GT(s.streams.size(), 1u);
  const long long before = cps_emu_nccl_inits();
  const Outcome o = run_ranks(s, [](int) { return options(); });
  for (const std::string& e : o.errors) EXPECT_EQ(e, "");
  EXPECT_EQ(cps_emu_nccl_inits() - before, 2) << "one communicator of 2 ranks, on stream " << *talking.begin();

  // What each rank holds, counted from its own ops: the streams any rank talks on, its (group, stream) pairs.
  auto expected_reserve = [](const Schedule& sched, std::int32_t rank) {
    std::set<std::int32_t> streams;
    for (const RankProgram& p : sched.ranks)
      for (const Op& op : p.ops)
        if (is_comm(op.kind)) streams.insert(op.stream);
    std::set<std::pair<std::int32_t, std::int32_t>> groups;
    for (const Op& op : sched.ranks.at(static_cast<std::size_t>(rank)).ops)
      if (op.group >= 0) groups.insert({op.group, op.stream});
    const auto comms = static_cast<std::int64_t>(streams.size() + groups.size());
    return std::max<std::int64_t>(comms * (std::int64_t{512} << 20), std::int64_t{1} << 30);
  };
  Workload hybrid = small(ScheduleKind::Hybrid, 4);
  hybrid.ulysses = 2;
  for (const Workload& w : {fwd, small(ScheduleKind::Ring, 4), small(ScheduleKind::AllGather, 4), hybrid}) {
    SCOPED_TRACE(describe(w));
    const Schedule sched = make_schedule(w);
    Meeting meeting(static_cast<int>(w.cp));
    for (std::int32_t r = 0; r < w.cp; ++r) {
      ThreadGroup group(meeting, r);  // the transport only reads the schedule before allocate()
      EXPECT_EQ(make_nccl_transport(sched, group)->library_bytes(), expected_reserve(sched, r)) << "rank " << r;
    }
  }
  // Hybrid's ranks hold more than the floor: two stream communicators and their Ulysses groups' splits.
  Meeting meeting(4);
  ThreadGroup rank0(meeting, 0);
  EXPECT_GT(make_nccl_transport(make_schedule(hybrid), rank0)->library_bytes(), std::int64_t{1} << 30);
}

// Tracing gathers the timelines over MPI: a group of threads cannot, and says so.
TEST(NcclTransportEmu, TracingNeedsMpi) {
  const Schedule s = make_schedule(small(ScheduleKind::Ring, 2));
  const Outcome o = run_ranks(s, [](int) {
    CudaRunOptions opt = options();
    opt.trace = true;
    return opt;
  });
  for (const std::string& e : o.errors) EXPECT_NE(e.find("over MPI"), std::string::npos) << e;
}

// Where the processes sit, from their node-local ranks.
TEST(NodeLayout, NodesRanksPerNodeAndPlacement) {
  const NodeLayout blocks{{0, 1, 2, 3, 0, 1, 2, 3}};
  EXPECT_EQ(blocks.nodes(), 2);
  EXPECT_EQ(blocks.ranks_per_node(), 4);
  EXPECT_EQ(blocks.irregular(), "");
  const NodeLayout one_node{{0, 1, 2}};
  EXPECT_EQ(one_node.nodes(), 1);
  EXPECT_EQ(one_node.ranks_per_node(), 3);
  EXPECT_EQ(one_node.irregular(), "");
  const NodeLayout cyclic{{0, 0, 1, 1}};  // ranks 0 and 2 on one node, 1 and 3 on the other
  EXPECT_EQ(cyclic.nodes(), 2);
  EXPECT_NE(cyclic.irregular().find("not placed 2 to a node in rank order (process 1 has local rank 0"),
            std::string::npos)
      << cyclic.irregular();
  const NodeLayout uneven{{0, 1, 2, 0}};
  EXPECT_NE(uneven.irregular().find("4 processes sit unevenly on 2 nodes (up to 3 on one)"), std::string::npos)
      << uneven.irregular();
}

// A profile's workload must say which transfers crossed the network: every rank refuses a workload that puts its
// CP ranks on other nodes than the job does, or a job whose processes sit where the simulator cannot follow,
// before any NCCL call; a workload that matches runs.
TEST(NcclTransportEmu, WorkloadNodesMustBeTheJobs) {
  Workload w = small(ScheduleKind::Ring, 4);
  w.pass = PassSet::Fwd;
  const Schedule s = make_schedule(w);  // 8 GPUs per node: all four ranks on node 0
  auto refused = [&](std::vector<std::int32_t> local, const std::string& why) {
    const Outcome o = run_ranks(s, [](int) { return options(); }, std::move(local));
    for (std::size_t r = 0; r < o.errors.size(); ++r) EXPECT_NE(o.errors[r].find(why), std::string::npos) << o.errors[r];
  };
  refused({0, 1, 0, 1}, "gpus_per_node: the workload puts CP rank 2 on node 0 (8 GPUs per node), but the job runs "
                        "it on node 1 (2 processes per node on 2 nodes): give --gpus-per-node 2");
  refused({0, 0, 1, 1}, "not placed 2 to a node in rank order");
  refused({0, 1, 2, 0}, "sit unevenly on 2 nodes");

  Workload two = small(ScheduleKind::Ring, 2);
  two.pass = PassSet::Fwd;
  two.gpus_per_node = 1;  // a node each, as the job below
  const Outcome o = run_ranks(make_schedule(two), [](int) { return options(); }, {0, 0});
  for (std::size_t r = 0; r < o.errors.size(); ++r) ASSERT_EQ(o.errors[r], "") << "rank " << r;
  for (const CudaRunResult& res : o.results) {
    EXPECT_EQ(res.nodes, 2);
    EXPECT_EQ(res.ranks_per_node, 1);
    ASSERT_TRUE(res.check.ran);
    EXPECT_LE(res.check.o, kTolerance);
  }
}

}  // namespace
}  // namespace cpscope::rt
