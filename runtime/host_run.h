// Runs every rank of a schedule on the host backend in one process (ranks as threads) and gathers
// the ranks' outputs back into global tensors: the CI-side check of every schedule.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "runtime/backend.h"
#include "runtime/host/host_backend.h"
#include "runtime/reference.h"
#include "sim/schedule.h"

namespace cpscope::rt {

struct HostRunOptions {
  std::chrono::milliseconds timeout{300000};  // per blocking wait (receive, event)
  std::int32_t iterations = 1;
  // Optional: wraps each rank's backend (fault injection in tests). Returns the backend the executor
  // drives; it must forward to `inner`.
  std::function<std::unique_ptr<Backend>(Backend& inner, std::int32_t rank)> wrap;
};

struct HostRunResult {
  AttentionData out;                             // o, lse (forward); dq, dk, dv (backward)
  std::vector<std::int64_t> iteration_ns;        // wall time of each iteration
  std::vector<std::vector<HostInterval>> intervals;  // per rank, the last iteration's ops
};

// `in` holds q, k, v, dout and, for a backward-only schedule, the forward's o and lse.
// Throws TransportError when a rank fails or a wait times out, InternalError on an IR inconsistency.
HostRunResult run_on_host(const Schedule& schedule, const AttentionData& in, const HostRunOptions& options = {});

}  // namespace cpscope::rt
