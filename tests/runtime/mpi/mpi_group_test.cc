// The nccl transport's MPI parts under a real mpirun (ctest starts 3 ranks on this machine; tests/CMakeLists.txt):
// MPI's process group (runtime/cuda/process_group_mpi.cc: rank and node layout, broadcast, max, the
// config-hash check that refuses mismatched ranks before any collective, failed calls named) and a traced
// run's cross-rank step (runtime/instrument/mpi_sync.cc: clock offsets from round trips to rank 0, the interval
// gather at rank 0, the two together as run_nccl uses them). Every rank runs every test; the job fails when
// any rank fails, and ranks other than 0 print only their failures, prefixed with their rank.
//
// `mpi_group_test --abort-demo` is the job-abort check (tests/runtime/mpi/mpi_abort_test.sh): rank 1 ends the
// job with end_mpi_job(7) while the others wait in a barrier that rank 1 never reaches.
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/cuda/check.h"
#include "runtime/cuda/transport.h"
#include "runtime/instrument/mpi_sync.h"
#include "sim/error.h"

namespace cpscope::rt {
namespace {

ProcessGroup* g_group = nullptr;  // made in main, before any test
ProcessGroup& group() { return *g_group; }

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A rank's planted clock offset from rank 0's: 10 s steps, far above any round trip, negative for odd
// ranks, so a wrong sign or reference rank cannot pass.
std::int64_t planted_offset(std::int32_t rank) { return (rank % 2 == 1 ? -1 : 1) * std::int64_t{10'000'000'000} * rank; }
// How far a measured offset may be from the planted one: half the shortest round trip (microseconds on an
// idle machine; a busy 2-core CI machine running 3 ranks can deschedule one for tens of milliseconds).
constexpr std::int64_t kSkewNs = 500'000'000;

TEST(MpiGroup, RanksSizeAndNodeLayoutMatchTheWorld) {
  int world_rank = -1, world_size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  EXPECT_EQ(group().rank(), world_rank);
  EXPECT_EQ(group().size(), world_size);
  EXPECT_GE(world_size, 3) << "start this test with at least 3 ranks (a middle rank and a last one)";
  EXPECT_EQ(group().local_rank(), world_rank) << "every rank of this job runs on one node";
  EXPECT_TRUE(group().is_mpi());
  // Gathered over the ranks: the job is one node of world_size processes, in rank order.
  const NodeLayout job = node_layout(group());
  ASSERT_EQ(job.local_rank.size(), static_cast<std::size_t>(world_size));
  for (int r = 0; r < world_size; ++r) EXPECT_EQ(job.local_rank[static_cast<std::size_t>(r)], r);
  EXPECT_EQ(job.nodes(), 1);
  EXPECT_EQ(job.ranks_per_node(), world_size);
  EXPECT_EQ(job.irregular(), "");
}

TEST(MpiGroup, BroadcastDeliversTheRootsBytesFromEveryRoot) {
  for (std::int32_t root = 0; root < group().size(); ++root) {
    std::vector<std::uint8_t> want(1000), buf(1000, 0xEE);
    for (std::size_t i = 0; i < want.size(); ++i) want[i] = static_cast<std::uint8_t>(i * 7 + root * 31);
    if (group().rank() == root) buf = want;
    group().broadcast(buf.data(), static_cast<std::int64_t>(buf.size()), root);
    EXPECT_EQ(buf, want) << "root " << root;
  }
}

TEST(MpiGroup, MaxIsElementwiseOverTheRanks) {
  const std::int32_t r = group().rank(), n = group().size();
  std::vector<double> mine = {static_cast<double>(r), -static_cast<double>(r), r == 1 ? 2.5 : -1.0,
                              -std::numeric_limits<double>::infinity()};
  mine[3] = r == n - 1 ? 1e300 : -std::numeric_limits<double>::infinity();
  const std::vector<double> got = group().max(mine);
  EXPECT_EQ(got, (std::vector<double>{static_cast<double>(n - 1), 0.0, 2.5, 1e300}));
}

TEST(MpiGroup, SameConfigHashPasses) { EXPECT_NO_THROW(group().check_same(0x1234'5678'9abc'def0ULL, "the workload")); }

TEST(MpiGroup, DifferentConfigHashIsRefusedOnEveryRankNamingTheRanks) {
  // Ranks 1 and the last differ from rank 0; every rank (rank 0 too) must refuse, or some would go on into a
  // collective the others never join.
  const std::int32_t r = group().rank(), last = group().size() - 1;
  const std::uint64_t hash = (r == 1 || r == last) ? 7 + static_cast<std::uint64_t>(r) : 42;
  try {
    group().check_same(hash, "the workload or the run options");
    ADD_FAILURE() << "rank " << r << ": mismatched hashes were accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "config");
    EXPECT_NE(std::string(e.what()).find("the workload or the run options differs between the ranks: ranks 1, " +
                                         std::to_string(last) + " do not match rank 0"),
              std::string::npos)
        << e.what();
  }
}

TEST(MpiGroup, FailedCallNamesTheRankTheCallAndMpisReason) {
  // A root outside the group: every rank's MPI_Bcast returns MPI_ERR_ROOT (the group's communicator returns
  // errors instead of aborting the job), and the check turns it into a DeviceError.
  int x = 0;
  try {
    group().broadcast(&x, sizeof x, group().size());
    ADD_FAILURE() << "a broadcast from root " << group().size() << " succeeded";
  } catch (const DeviceError& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("rank " + std::to_string(group().rank()) + ": ", 0), 0u) << m;
    EXPECT_NE(m.find("process_group_mpi.cc:"), std::string::npos) << m;
    EXPECT_NE(m.find("MPI call MPI_Bcast("), std::string::npos) << m;
    EXPECT_NE(m.find("root"), std::string::npos) << m;  // MPI's own reason: an invalid root
  }
  group().barrier();  // and the group still works
  EXPECT_EQ(group().max({1.0}).front(), 1.0);
}

TEST(MpiSync, ClockOffsetRecoversAPlantedOffset) {
  instrument::MpiSync sync;
  EXPECT_EQ(sync.rank(), group().rank());
  EXPECT_EQ(sync.size(), group().size());
  const std::int64_t planted = planted_offset(sync.rank());
  const std::int64_t got = sync.clock_offset_ns([&] { return steady_ns() + planted; }, 7);
  EXPECT_LE(std::llabs(got - planted), kSkewNs) << "rank " << sync.rank() << ": measured " << got << " ns, planted "
                                                << planted << " ns";
  if (sync.rank() == 0) {
    EXPECT_EQ(got, 0) << "rank 0 is the reference: its offset is 0 exactly";
  }
  // Refused on every rank before any message, so none is left waiting.
  EXPECT_THROW(sync.clock_offset_ns([&] { return steady_ns(); }, 0), DeviceError);
  group().barrier();
}

TEST(MpiSync, GatherCollectsEveryRanksIntervalsInRankOrder) {
  instrument::MpiSync sync;
  const std::int32_t r = sync.rank();
  // Rank k has k intervals (rank 0 none: an empty contribution), with values past 32 bits.
  auto of_rank = [](std::int32_t k) {
    std::vector<OpInterval> v;
    for (std::int32_t i = 0; i < k; ++i) {
      const std::int64_t start = (std::int64_t{1} << 40) * k + 1000 * i;
      v.push_back({k, 100 * k + i, start, start + 10 + i});
    }
    return v;
  };
  const std::vector<OpInterval> got = sync.gather_to_root(of_rank(r));
  if (r != 0) {
    EXPECT_TRUE(got.empty());
    return;
  }
  std::vector<OpInterval> want;
  for (std::int32_t k = 0; k < sync.size(); ++k)
    for (const OpInterval& o : of_rank(k)) want.push_back(o);
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].rank, want[i].rank) << i;
    EXPECT_EQ(got[i].op, want[i].op) << i;
    EXPECT_EQ(got[i].start_ns, want[i].start_ns) << i;
    EXPECT_EQ(got[i].end_ns, want[i].end_ns) << i;
  }
}

TEST(MpiSync, AlignAndGatherPutsEveryRankOnRankZerosClock) {
  // What a traced nccl run does after its traced iteration: each rank stamped its ops with its own clock
  // (here: the steady clock plus a planted offset); rank 0 must get them all on its clock.
  instrument::MpiSync sync;
  const std::int32_t r = sync.rank(), n = sync.size();
  const std::int64_t planted = planted_offset(r);
  auto now = [&] { return steady_ns() + planted; };
  group().barrier();
  const std::int64_t t0 = now();
  std::vector<OpInterval> mine;
  for (std::int32_t i = 0; i < 3; ++i) mine.push_back({r, i, t0 + 1'000 * i, t0 + 1'000 * i + 500});
  const instrument::MpiSync::Gathered g = sync.align_and_gather(now, mine, /*dropped=*/3 * r);
  if (r != 0) {
    EXPECT_TRUE(g.ops.empty());
    return;
  }
  ASSERT_EQ(g.clock_offset_ns.size(), static_cast<std::size_t>(n));
  for (std::int32_t k = 0; k < n; ++k)
    EXPECT_LE(std::llabs(g.clock_offset_ns[static_cast<std::size_t>(k)] - planted_offset(k)), kSkewNs) << "rank " << k;
  EXPECT_EQ(g.dropped, 3 * (n - 1));  // the most any rank dropped
  ASSERT_EQ(g.ops.size(), static_cast<std::size_t>(3 * n));
  for (std::size_t i = 0; i < g.ops.size(); ++i) {
    const OpInterval& o = g.ops[i];
    EXPECT_EQ(o.rank, static_cast<std::int32_t>(i / 3));
    EXPECT_EQ(o.op, static_cast<std::int32_t>(i % 3));
    EXPECT_EQ(o.end_ns - o.start_ns, 500) << "shifting keeps durations";
    // Every rank stamped its first op right after the same barrier: on rank 0's clock they are close.
    EXPECT_LE(std::llabs(o.start_ns - 1'000 * o.op - t0), kSkewNs) << "rank " << o.rank << " op " << o.op;
  }
}

// Ranks other than 0 print only their failures, each line prefixed with the rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "rank %d: %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                 r.message());
  }
  void OnTestEnd(const ::testing::TestInfo& t) override {
    if (t.result()->Failed()) std::fprintf(stderr, "rank %d: [  FAILED  ] %s.%s\n", rank_, t.test_suite_name(), t.name());
  }

 private:
  int rank_;
};

}  // namespace
}  // namespace cpscope::rt

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  bool abort_demo = false;
  for (int i = 1; i < argc; ++i) abort_demo = abort_demo || std::strcmp(argv[i], "--abort-demo") == 0;
  std::unique_ptr<cpscope::rt::ProcessGroup> group = cpscope::rt::make_mpi_group();  // initializes MPI
  const int rank = group->rank();
  if (abort_demo) {
    if (rank == 1) {
      std::fprintf(stderr, "rank 1: failing, ending the job\n");
      cpscope::rt::end_mpi_job(7);
      std::fprintf(stderr, "rank 1: end_mpi_job returned\n");
      return 1;
    }
    group->barrier();  // never completes: rank 1 does not come
    std::fprintf(stderr, "rank %d: passed a barrier rank 1 never reached\n", rank);
    return 1;
  }
  cpscope::rt::g_group = group.get();
  if (rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new cpscope::rt::FailurePrinter(rank));
  }
  const int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && worst != rc) std::fprintf(stderr, "a test failed on another rank (its failures are above)\n");
  group.reset();
  return worst;  // MPI is finalized at exit
}
