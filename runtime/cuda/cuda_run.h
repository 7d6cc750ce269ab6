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
};

// Throws InputError (exit 2 at the tool) for a config the device cannot hold (the message gives the
// required and the free bytes), std::runtime_error for CUDA/NCCL/MPI failures with the expression,
// file:line, rank, op and step where known.
CudaRunResult run_on_cuda(const Schedule& schedule, const CudaRunOptions& options);

}  // namespace cpscope::rt
