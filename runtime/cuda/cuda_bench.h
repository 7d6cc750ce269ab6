// GPU microbenchmarks for calibration (cp-profile bench --backend cuda), the CUDA counterpart of
// runtime/host_bench.h, with the same cpscope.bench/1 rows:
//   attention     the flash kernels over a grid of square and rectangular blocks, causal (square) and
//                 full, forward and backward (with its preprocess), CUDA events, median of `repeats`;
//   transfer      one message over 1 KiB..256 MiB on the transport: loopback = a device-to-device copy,
//                 replay = NCCL sending to itself on a 1-rank communicator. On one GPU neither crosses a
//                 link, so these rows say link "self" and cp-sim calibrate leaves link parameters alone
//                 (the rows document the transport's own cost);
//   interference  the largest square block alone and while a stream of 256 MiB copies (or NCCL
//                 self-sends) runs beside it.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/cuda/cuda_run.h"

namespace cpscope::rt {

struct CudaBenchOptions {
  Transport transport = Transport::Loopback;  // loopback or replay (nccl needs the cluster: use cp-profile runs)
  std::vector<std::int64_t> block_tokens = {1024, 2048, 4096, 8192, 16384};
  std::int64_t head_dim = 128;
  std::int64_t heads = 32, kv_heads = 8;
  std::int32_t repeats = 10;
  std::int64_t min_bytes = 1024, max_bytes = 256ll << 20;
  std::int32_t device = -1;  // -1: device 0
};

// Throws InputError for options the kernels cannot run, std::runtime_error on CUDA/NCCL failures.
nlohmann::json run_cuda_bench(const CudaBenchOptions& options);

}  // namespace cpscope::rt
