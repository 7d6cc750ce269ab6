// Internal to the generators: appends ops to one rank's program and derives their event waits from
// the buffers they read and write, so no generator hand-wires a record/wait pair.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "sim/schedule.h"

namespace cpscope::gen {

// Stream indices into Schedule::streams. Generators use "compute" and "comm" always, and
// "comm_dkv" when a ring backward rotates fp32 dK/dV on its own stream.
inline constexpr std::uint8_t kCompute = 0;
inline constexpr std::uint8_t kComm = 1;
inline constexpr std::uint8_t kCommDkv = 2;
inline constexpr int kMaxStreams = 3;
static_assert(kMaxStreams - 1 <= 2, "an op waits on at most two events: one per other stream");

// The per-rank buffers whose hazards the builder tracks. Names are the generators' (see each file's
// header comment for what holds what); inputs that no op writes need no entry.
// clang-format off
enum class Res : std::uint8_t {
  Q,           // query rows attended (input; Ulysses/hybrid: the all-to-all output)
  O,           // output + LSE accumulators as attention writes them
  Do,          // output gradient as AttendBwd reads it (hybrid/Ulysses: the all-to-all output)
  Dq,          // dQ accumulator
  DkvScratch,  // one block's dK/dV as AttendBwd writes it (ring schedules)
  // Ring K/V: slot 0 own block, slots 1 and 2 the receive double buffer.
  Kv0, Kv1, Kv2,
  // Ring dK/dV accumulators (fp32 variant), double buffer.
  Dkv0, Dkv1,
  // TransformerEngine packed [K/V ; dK/dV] slots: the K/V halves and the dK/dV halves.
  PackedKv0, PackedKv1, PackedDkv0, PackedDkv1,
  // All-gathered K/V (one slot, or two when pipelined by head groups) and the dK/dV over the gathered
  // range before the reduce-scatter.
  Gathered0, Gathered1, DkvGathered0, DkvGathered1,
  Out,  // what leaves the schedule: O or dQ/dK/dV in the rank's own sequence layout
  kCount
};
// clang-format on
inline constexpr int kNumRes = static_cast<int>(Res::kCount);

inline Res kv_res(int slot) { return static_cast<Res>(static_cast<int>(Res::Kv0) + slot); }
inline Res dkv_res(int slot) { return static_cast<Res>(static_cast<int>(Res::Dkv0) + slot); }
inline Res packed_kv_res(int slot) { return static_cast<Res>(static_cast<int>(Res::PackedKv0) + slot); }
inline Res packed_dkv_res(int slot) { return static_cast<Res>(static_cast<int>(Res::PackedDkv0) + slot); }
inline Res gathered_res(int slot) { return static_cast<Res>(static_cast<int>(Res::Gathered0) + slot); }
inline Res dkv_gathered_res(int slot) { return static_cast<Res>(static_cast<int>(Res::DkvGathered0) + slot); }

// Builds one rank's op list. emit() appends an op and adds the waits its buffer hazards need:
//  - read after write: wait for the buffer's last writer;
//  - write after read/write: wait for the last writer and the last reader on each stream.
// Ops on the op's own stream are ordered by the stream already. For another stream only the latest
// required op counts (a stream completes in order), and a wait that an earlier wait on this stream
// already implies (tracked with per-op vector clocks) is dropped. The op waited on records an event,
// allocated the first time someone needs it, so events are recorded before they are waited on by
// construction and ops nobody waits on record nothing.
//
// One builder is reused for every rank of a schedule (reset()), so its scratch vectors are allocated
// once; the rank's op vector is reserved up front by the caller's estimate.
class RankBuilder {
 public:
  RankBuilder(const Workload& w, std::int64_t num_streams) : w_(w), num_streams_(num_streams) {}

  // Starts a rank: clears the hazard state and reserves `expected_ops`.
  void reset(RankProgram& prog, std::size_t expected_ops);

  // Appends `op` (its id is set here) and returns its index.
  std::int32_t emit(Op op, std::span<const Res> reads, std::span<const Res> writes);
  std::int32_t emit(Op op, std::initializer_list<Res> reads, std::initializer_list<Res> writes) {
    return emit(op, std::span<const Res>(reads.begin(), reads.size()),
                std::span<const Res>(writes.begin(), writes.size()));
  }

  // FLOPs of an attention block: 4·B·D·heads·pairs forward, 10·B·D·heads·pairs backward (2.5x).
  Flops attn_flops(const AttnBlock& a, OpPass pass) const;

  // Convenience constructors for the common op shapes (the caller emits them).
  // Attend/AttendBwd of block `a`; `kv` names the K/V operand read (buffer kind and slot), `dkv` the
  // dK/dV destination of a backward block (none: the dkv scratch that the next DkvAdd consumes).
  Op attend(OpPass pass, std::int32_t step, const AttnBlock& a, Transfer kv, Transfer dkv = {}) const;
  Op sendrecv(OpPass pass, std::int32_t step, std::uint8_t stream, std::uint8_t channel, BufferKind buffer,
              std::int32_t send_peer, std::int32_t send_slot, Bytes send_bytes, std::int32_t recv_peer,
              std::int32_t recv_slot, Bytes recv_bytes) const;
  static Op collective(OpKind kind, OpPass pass, std::int32_t step, std::int32_t group, std::int64_t group_size,
                       BufferKind buffer, Bytes bytes_per_peer);
  // A compute-stream op that is not attention (Layout, DkvAdd): reads `src` and writes `dst`
  // (peer -1; see schedule.cc for how the runtime reads them).
  static Op local(OpKind kind, OpPass pass, std::int32_t step, BufferKind buffer, Bytes bytes, Transfer src,
                  Transfer dst);

  const Workload& workload() const { return w_; }
  RankProgram& program() { return *prog_; }

 private:
  using Clock = std::array<std::int32_t, kMaxStreams>;
  struct ResState {
    std::int32_t writer = -1;
    Clock readers = {-1, -1, -1};  // last reader on each stream since the last write
  };
  std::int32_t event_of(std::int32_t op_index);
  // Sets Op::fill_bytes / Op::fills: what the runtime's executor fills right before the op (rt::Executor,
  // with rt::RankLayout's tensor sizes; the executor checks the two agree, op by op).
  void add_fills(Op& op);
  void fill(Op& op, Bytes bytes, std::int32_t kernels = 1) {
    op.fill_bytes += bytes;
    op.fills += kernels;
  }

  const Workload& w_;
  std::int64_t num_streams_;
  RankProgram* prog_ = nullptr;
  std::size_t reserved_ = 0;
  std::array<ResState, kNumRes> res_{};
  std::vector<Clock> clock_;                // per op: latest op of each stream complete before it starts
  std::array<Clock, kMaxStreams> known_{};  // per stream: same, for the next op issued on it
  std::array<bool, 2> pass_started_{};      // fwd, bwd: the pass's first compute-stream op was emitted
  std::array<bool, 2> fresh_{};             // DKV slots 0, 1 start empty: filled before the next AttendBwd into them
  bool delta_ready_ = false;                // the backward's delta (rowsum(dO·O)) was computed
};

// Appends a buffer to the rank's peak-memory list when it is live in a pass the workload runs.
void add_buffer(RankProgram& prog, const Workload& w, const char* name, Bytes bytes, bool fwd, bool bwd);
// The entries every schedule has: inputs q, kv, the output o and lse (forward output, backward input),
// and for the backward do, dq and dkv, all in the rank's own sequence shard.
void add_io_buffers(RankProgram& prog, const Workload& w);
// A local (peer -1) buffer operand: what a non-SendRecv op reads (Op::send) or writes (Op::recv).
inline Transfer local_operand(BufferKind buffer, std::int32_t slot) { return Transfer{-1, slot, buffer, 0, 0}; }

inline bool has_fwd(PassSet p) { return p != PassSet::Bwd; }
inline bool has_bwd(PassSet p) { return p != PassSet::Fwd; }

}  // namespace cpscope::gen
