// The executor: walks one rank's Schedule IR program and issues it on a Backend. It is the only place
// that gives IR operands their meaning (sim/schedule.cc lists the conventions), so every backend runs
// exactly the schedule the simulator times.
#pragma once

#include <array>
#include <cstdint>

#include "runtime/backend.h"
#include "runtime/layout.h"
#include "sim/schedule.h"

namespace cpscope::rt {

class Executor {
 public:
  // `schedule` must outlive the executor. Throws InternalError when the rank's program uses an
  // operand this layout has no tensor for, or a transfer's bytes disagree with the tensors it moves.
  Executor(const Schedule& schedule, std::int32_t rank, Backend& backend);

  const RankLayout& layout() const { return layout_; }

  // Allocates the rank's tensors on the backend (once).
  void allocate();
  // Enqueues one iteration: every op of the rank's program, in issue order, with the fills that start
  // a pass (output accumulators, gradient accumulators: issued with the pass's first compute-stream op,
  // after its waits). Does not wait; call backend.synchronize().
  void issue();

  // Bytes a region occupies in a message or buffer on a GPU (Acc: fp32; Input: the workload dtype).
  std::int64_t region_bytes(const Region& r) const;

 private:
  void issue_op(const Op& op);
  void begin_pass(const Op& first);
  Region whole(TensorId t, std::int32_t plane = 0, std::int32_t planes = -1) const;
  Region rows(TensorId t, std::int64_t row, std::int64_t count, std::int32_t plane = 0, std::int32_t planes = -1) const;
  Region heads(TensorId t, std::int32_t head, std::int32_t count, std::int32_t plane = 0,
               std::int32_t planes = -1) const;
  AttendArgs attend_args(const Op& op) const;
  // What the nccl transport copies through its staging buffers (RankLayout::one_span), added up per op
  // and compared with the IR's Op::staged_send, staged_recv and staged_copies by check_staging().
  struct StagingCount {
    std::int64_t send = 0, recv = 0;  // bytes packed before sending, unpacked after receiving
    std::int32_t copies = 0;
  };
  // One message of `bytes` over `rs`: staged (a copy per region) unless it is one span of its tensor.
  void count_message(StagingCount& c, const std::vector<Region>& rs, std::int64_t bytes, bool send) const;
  // A collective's per-member buffers of P bytes each: read or written in place when they are spans
  // lying end to end (consecutive rows of one tensor), else all staged, a copy each.
  void count_members(StagingCount& c, const std::vector<Region>& rs, std::int64_t P, bool send) const;
  void check_staging(const Op& op, const StagingCount& c) const;
  // Zero-fills `t` first when it must start empty (a gradient destination not yet written since the
  // pass began or a collective consumed it).
  void fill_if_fresh(const Op& op, TensorId t, std::int32_t plane, std::int32_t planes);
  // Every fill the executor issues goes through here: counted against the IR's Op::fills / fill_bytes
  // (gen::RankBuilder::add_fills), which the simulator times with the op.
  void fill(const Op& op, const Region& r, double value);
  // Every copy the executor issues goes through here, counted the same way: a kernel per plane (a row map
  // permutes rows in the same kernel), and an in-place copy one more per plane back from the scratch buffer
  // (CudaBackend::copy), with `bytes`. A copy that is the op itself (`is_op`: DkvAdd, Layout) leaves out
  // the one kernel the op stands for.
  void copy(const Op& op, const Region& src, const Region& dst, bool add, const std::vector<std::int64_t>& row_map,
            bool is_op, std::int64_t bytes);
  // Counts `kernels` memory kernels writing `bytes` in all that the executor adds to the op besides its fills
  // (the backward's delta) the same way.
  void count_kernel(std::int64_t bytes, std::int64_t kernels = 1);
  void check_fills(const Op& op) const;

  const Schedule& schedule_;
  std::int32_t rank_;
  Backend& backend_;
  RankLayout layout_;
  std::array<bool, kNumTensors> fresh_{};
  bool delta_ready_ = false;  // the pass's Backend::prepare_backward ran
  std::int32_t fills_ = 0;  // fills issued for the current op, and their bytes
  std::int64_t fill_bytes_ = 0;
  std::int32_t gqa_ratio_ = 1;
  double scale_ = 1.0;
  std::vector<std::int64_t> to_global_, to_rank_order_;  // allgather zigzag Layout row maps
};

}  // namespace cpscope::rt
