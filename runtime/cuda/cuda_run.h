// Runs a schedule on CUDA: the executor over the CUDA backend (streams, events, device memory, the
// kernels of runtime/kernels) with one of three transports:
//   loopback  all N ranks as virtual ranks in this process on one GPU; transfers are device copies
//             between the virtual ranks' tensors on their comm streams (correctness, demos);
//   replay    one chosen rank of the N-rank schedule on one GPU; every transfer and collective is
//             NCCL sending the same bytes to itself (measures one rank's real compute/comm overlap);
//   nccl      one rank per process and GPU, launched by mpirun or srun, NCCL communicators
//             bootstrapped over MPI (clusters).
// Plain C++ header: tools include it without the CUDA toolkit's headers.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "sim/schedule.h"
#include "sim/timeline.h"

namespace cpscope::rt {

enum class Transport : std::uint8_t { Loopback, Replay, Nccl };

struct CudaRunOptions {
  Transport transport = Transport::Loopback;
  std::int32_t replay_rank = 0;  // replay: which rank of the schedule runs
  std::int32_t warmup = 2;
  std::int32_t iters = 10;
  std::chrono::seconds timeout{300};  // NCCL asynchronous-error polling deadline per iteration
  std::int32_t device = -1;           // -1: local rank modulo visible devices
  bool check = false;                 // compare with fp32 plain attention on the GPU
  std::uint64_t seed = 1234;          // inputs: the same pseudo-random global tensors on every rank
  // CUPTI-trace one more iteration after the timed ones (so tracing costs none of them) and return its
  // measured Timeline. Every op is an NVTX range either way.
  bool trace = true;
  // The overhead benchmark: the timed iterations alternate untraced / traced (untraced first); the
  // Timeline comes from the last traced one and no extra iteration runs. Implies tracing.
  bool trace_overhead = false;
};

// What the tracer saw in the traced iteration: this process's records (nccl: rank 0's; dropped: the
// worst rank's).
struct TraceStats {
  std::int64_t records = 0;       // kernel/memcpy/memset records
  std::int64_t unattributed = 0;  // launched outside any op or launch window (other libraries)
  std::int64_t windowed = 0;      // attributed through a launch window (nccl: NCCL's own thread)
  std::int64_t untimed = 0;       // without timestamps (ignored)
  std::int64_t dropped = 0;       // dropped by CUPTI (no buffer)
  std::int64_t missing_ops = 0;   // ops of the traced ranks without an interval (nothing launched)
  std::string first_missing;      // e.g. "rank 2 op 17 (fwd/step3/sendrecv)"
  std::vector<std::int64_t> clock_offset_ns;  // nccl: each rank's clock minus rank 0's, as applied
};

struct CudaCheck {
  bool ran = false;
  double o = 0, lse = 0, dq = 0, dk = 0, dv = 0;  // max |x - ref| / max |ref| per output (checked ranks)
};

struct CudaRunResult {
  std::int32_t rank = 0, ranks = 1;  // this process's rank (nccl), else 0 of 1
  std::vector<double> iteration_ms;  // per timed iteration: the step time (slowest rank for nccl/loopback)
  CudaCheck check;
  std::string device_name;           // e.g. "NVIDIA H100 80GB HBM3"
  std::int32_t sm_count = 0;
  std::string driver_version, cuda_version, nccl_version;
  std::int64_t device_bytes = 0;     // memory the run allocated on this device
  std::int32_t nodes = 1, ranks_per_node = 1;  // where the ranks ran (nccl: from MPI's node-local ranks)

  // The traced iteration (options.trace or trace_overhead): one interval per op with GPU timestamps from
  // CUPTI — nccl: every rank's, at rank 0 only, clocks aligned to rank 0's; loopback: every virtual rank's;
  // replay: its one rank's (the other ranks have no intervals).
  bool traced = false;
  Timeline timeline;
  double traced_ms = 0;  // the traced iteration's step time (event-timed, like iteration_ms)
  TraceStats trace;
  // trace_overhead: iteration_ms split into the untraced and the traced iterations.
  std::vector<double> untraced_ms, traced_iteration_ms;
};

// Throws InputError (exit 2 at the tool) for a config the device cannot hold (the message gives the
// required and the free bytes), std::runtime_error for CUDA/NCCL/MPI failures with the expression,
// file:line, rank, op and step where known.
CudaRunResult run_on_cuda(const Schedule& schedule, const CudaRunOptions& options);

class ProcessGroup;  // runtime/cuda/transport.h
struct NodeLayout;   // runtime/cuda/transport.h
// Throws InputError unless the job has one process per CP rank (field cp), places them in rank order, as many on
// every node, and `w` puts each CP rank on the node the job runs it on (field gpus_per_node; a job on one node:
// any gpus_per_node >= cp), so a profile's workload says which transfers crossed the network. run_nccl_rank and
// the nccl transport of run_on_cuda check this after the ranks' configs are compared, before any NCCL call.
void check_node_layout(const Workload& w, const NodeLayout& job);
// One rank of a nccl-transport run whose ranks meet through `group`: run_on_cuda's nccl transport passes MPI's
// (make_mpi_group); the emulation's test runs every rank as a thread of one process with a group of threads.
// Tracing aligns clocks and gathers the timelines over MPI, so it needs MPI's group (InputError otherwise).
CudaRunResult run_nccl_rank(const Schedule& schedule, const CudaRunOptions& options, ProcessGroup& group);

}  // namespace cpscope::rt
