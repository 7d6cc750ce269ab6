// The interface between the executor and a backend (host threads, or CUDA streams with a transport).
// The executor turns each Schedule IR op into these calls, in the rank's issue order; a backend
// enqueues them on the named stream and runs them asynchronously, CUDA style: calls on one stream run
// in order, record/wait order streams, and synchronize() waits for everything and reports the first
// error. Every call carries the op it comes from, for timelines, NVTX ranges and error messages.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/layout.h"
#include "sim/schedule.h"

namespace cpscope::rt {

// One attention block as a backend runs it. Heads are tensor-local: query head h of the Q tensor reads
// KV head h / gqa_ratio - kv_head_shift of the K/V tensor.
struct AttendArgs {
  TensorId q = TensorId::Q;
  TensorId kv = TensorId::kCount;  // K in plane 0, V in plane 1
  TensorId o = TensorId::O, lse = TensorId::Lse;
  std::int64_t q_off = 0, q_len = 0, kv_off = 0, kv_len = 0;
  std::int32_t head_begin = 0, head_count = 0;  // Q-tensor heads
  std::int32_t gqa_ratio = 1, kv_head_shift = 0;
  bool causal = false;
  std::int64_t causal_offset = 0;
  double scale = 1.0;
  // Backward: dO and the gradients. dQ is added to; dK/dV are added to planes dkv_plane, dkv_plane+1
  // of `dkv` (the executor zero-fills a destination that must start empty).
  TensorId dout = TensorId::Do, dq = TensorId::Dq, dkv = TensorId::kCount;
  std::int32_t dkv_plane = 0;
};

// A point-to-point part of an exchange: the regions sent to (or received from) one peer, packed in
// order into one message whose element type is the receiving tensors' (the sender converts).
struct Part {
  std::int32_t peer = -1;  // CP rank
  std::vector<Region> regions;
};

// A grouped send/receive (NCCL group): SendRecv ops and all-to-alls. `channel` keys the matching of
// point-to-point messages (the IR's Transfer::channel; all-to-alls use 2 + group index); `group` is
// the collective group (-1 for SendRecv) so NCCL can pick a communicator.
struct ExchangeArgs {
  std::int32_t channel = 0;
  std::int32_t group = -1;
  std::vector<Part> sends, recvs;
};

// All-gather over `members` (CP ranks, this rank at `position`): every member contributes `src`;
// member i's contribution lands in dst[i] on every member.
struct AllGatherArgs {
  std::int32_t group = 0;
  std::vector<std::int32_t> members;
  std::int32_t position = 0;
  Region src;
  std::vector<Region> dst;
};

// Reduce-scatter (sum): member i receives the sum over members of their src[i] into `dst`.
struct ReduceScatterArgs {
  std::int32_t group = 0;
  std::vector<std::int32_t> members;
  std::int32_t position = 0;
  std::vector<Region> src;
  Region dst;
};

// A collective over regions of several planes (a [K, V] or [dK, dV] slot) as one collective per plane:
// the same members, every region narrowed to one plane. NCCL gathers and reduces each plane in place,
// where a member's part of all planes together is never one span. One element (the collective itself)
// when the regions have one plane.
std::vector<AllGatherArgs> per_plane(const AllGatherArgs& x);
std::vector<ReduceScatterArgs> per_plane(const ReduceScatterArgs& x);

// The communicators the nccl transport splits for the collectives: per stream, the groups of the
// collectives issued on it, in layers of groups no two of which share a rank. One ncclCommSplit per layer
// gives each rank the communicator of its group in that layer (color: the group), so a stream with R
// disjoint groups (hybrid's R all-to-all groups) costs one split, not R. Every rank computes the same list
// (a split is collective over the parent). Layers in order of stream, then of their first group.
struct SplitLayer {
  std::int32_t stream = 0;
  std::vector<std::int32_t> groups;  // ascending, pairwise disjoint
};
std::vector<SplitLayer> split_layers(const Schedule& schedule);

class Backend {
 public:
  virtual ~Backend() = default;

  // Allocates the rank's tensors (called once, before any op) and fills inputs from host doubles:
  // `data` has desc.elements(batch) values in the tensor's [plane][batch][rows][heads][dim] order.
  virtual void allocate(const RankLayout& layout, std::int32_t num_streams, std::int32_t num_events) = 0;
  virtual void upload(TensorId t, const std::vector<double>& data) = 0;
  virtual std::vector<double> download(TensorId t) = 0;  // after synchronize()

  virtual void wait_event(const Op& op, std::int32_t stream, std::int32_t event) = 0;
  virtual void record_event(const Op& op, std::int32_t stream, std::int32_t event) = 0;

  virtual void fill(const Op& op, std::int32_t stream, const Region& r, double value) = 0;
  // dst = src (or dst += src); the regions have equal shape. `rows` optionally permutes: row i of
  // dst takes row row_map[i] of src (empty: identity).
  virtual void copy(const Op& op, std::int32_t stream, const Region& src, const Region& dst, bool add,
                    const std::vector<std::int64_t>& row_map = {}) = 0;
  // A row map that copy() will be given, by the same vector (the executor's permutations, fixed for the
  // run): called after allocate() and before any op, so a backend can keep it where its kernels read it.
  virtual void prepare_row_map(const std::vector<std::int64_t>& /*row_map*/) {}
  virtual void attend_fwd(const Op& op, std::int32_t stream, const AttendArgs& a, bool merge) = 0;
  // Before the first attend_bwd of a backward pass (the executor calls it once per pass, on that op's
  // stream, and counts it with the op's fills): what a backend computes once for all the pass's blocks.
  // The CUDA kernels' delta = rowsum(dO·O) reads O and dO and writes one fp32 per row and head; the host
  // backend computes it per block and does nothing here.
  virtual void prepare_backward(const Op& op, std::int32_t stream, const AttendArgs& a) {
    (void)op, (void)stream, (void)a;
  }
  virtual void attend_bwd(const Op& op, std::int32_t stream, const AttendArgs& a) = 0;
  virtual void exchange(const Op& op, std::int32_t stream, const ExchangeArgs& x) = 0;
  virtual void all_gather(const Op& op, std::int32_t stream, const AllGatherArgs& x) = 0;
  virtual void reduce_scatter(const Op& op, std::int32_t stream, const ReduceScatterArgs& x) = 0;

  // Waits for every stream; throws the first error any of them hit.
  virtual void synchronize() = 0;
};

}  // namespace cpscope::rt
