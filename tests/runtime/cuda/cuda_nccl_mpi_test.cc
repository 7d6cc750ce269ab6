// The nccl transport under MPI: run with one process per GPU, e.g.
//   mpirun -np 2 build/tests/runtime/cuda/cuda_nccl_mpi_test     (OpenMPI as root: --allow-run-as-root)
// Every rank runs the same schedules with --check; the relative errors are reduced over the ranks. Skips
// (on every rank alike) when there are fewer GPUs than ranks or the process count does not fit.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <string>

#include "runtime/cuda/cuda_run.h"
#include "runtime/cuda/transport.h"
#include "sim/schedule.h"

namespace cpscope::rt {
namespace {

constexpr double kTolerance = 2e-2;

// World size from the launcher's environment (OpenMPI, MPICH/Hydra, Slurm), before MPI is initialized.
int launcher_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return 1;
}

TEST(CudaNccl, SchedulesMatchReferenceAcrossProcesses) {
  const int n = launcher_size();
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) GTEST_SKIP() << "no CUDA device";
  if (n < 2 || n > 8 || (n & (n - 1)) != 0) GTEST_SKIP() << "run under mpirun with 2, 4 or 8 processes";
  if (devices < n) GTEST_SKIP() << "one GPU per process on this node: " << devices << " GPUs for " << n << " processes";
  if (!have_mpi()) GTEST_SKIP() << "this build has no MPI";
  std::vector<Workload> cases;
  for (ScheduleKind kind : {ScheduleKind::ZigzagRing, ScheduleKind::AllGather, ScheduleKind::Ulysses}) {
    Workload w;
    w.schedule = kind;
    w.cp = n;
    w.seq = 2048;
    w.heads = 8;
    w.kv_heads = kind == ScheduleKind::Ulysses ? n : 2;
    w.head_dim = 128;
    w.pass = PassSet::FwdBwd;
    if (kind == ScheduleKind::AllGather) w.kv_head_groups = 2;
    cases.push_back(w);
  }
  Workload te = cases[0];
  te.dkv = DkvVariant::Input;
  cases.push_back(te);
  for (const Workload& w : cases) {
    if (!invalid_reason(w).empty()) continue;
    SCOPED_TRACE(std::string(to_string(w.schedule)) + " dkv=" + std::string(to_string(w.dkv)));
    CudaRunOptions o;
    o.transport = Transport::Nccl;
    o.check = true;
    o.warmup = 1;
    o.iters = 2;
    o.timeout = std::chrono::seconds(120);
    const CudaRunResult r = run_on_cuda(make_schedule(w), o);
    EXPECT_EQ(r.ranks, n);
    ASSERT_TRUE(r.check.ran);
    EXPECT_LE(r.check.o, kTolerance);
    EXPECT_LE(r.check.lse, kTolerance);
    EXPECT_LE(r.check.dq, kTolerance);
    EXPECT_LE(r.check.dk, kTolerance);
    EXPECT_LE(r.check.dv, kTolerance);
    EXPECT_EQ(r.iteration_ms.size(), 2u);
  }
}

}  // namespace
}  // namespace cpscope::rt
