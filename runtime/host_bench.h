// Microbenchmarks for calibration on the host backend (cp-profile bench --backend host): the host
// transport's transfer time against message size, the host attention kernel's time over a grid of
// block shapes, masks and passes, and the same kernel beside a concurrent transfer (interference).
// The result is a cpscope.bench/1 JSON that cp-sim calibrate reads next to measured profiles.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace cpscope::rt {

struct BenchOptions {
  std::vector<std::int64_t> block_tokens = {64, 128, 256, 512};  // q and kv lengths of the grid
  std::int64_t head_dim = 32;
  std::int64_t heads = 4, kv_heads = 2, batch = 1;
  std::int64_t min_bytes = 1024, max_bytes = 256ll << 20;  // transfer sizes, x4 steps
  int repeats = 5;                                           // median of this many runs
};

// The "attention" row of a cpscope.bench/1 file for one block (FLOPs counted as the simulator counts
// them: 4·B·H·D per visible pair, 2.5x backward), without its timing; the CUDA bench uses it too.
nlohmann::json bench_attention_row(bool backward, bool causal, std::int64_t head_dim, std::int64_t q_tokens,
                                   std::int64_t kv_tokens, std::int64_t batch, std::int64_t heads);

// {"schema": "cpscope.bench/1", "backend": "host", "rows": [
//   {"kind": "attention", "pass", "mask", "head_dim", "q_tokens", "kv_tokens", "batch", "heads", "flops", "ns"},
//   {"kind": "transfer", "link": "nvlink", "bytes", "ns"},
//   {"kind": "interference", ...attention fields..., "alone_ns", "with_comm_ns"},
//   {"kind": "memory", "op", "bytes" (written), "kernels", "ns", "baseline" (optional: true for the CUDA
//    bench's cudaMemcpyAsync, which calibrate skips)}]}   (memory rows: the CUDA bench only)
nlohmann::json run_host_bench(const BenchOptions& options);

}  // namespace cpscope::rt
