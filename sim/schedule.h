// Schedule IR: the per-rank programs that both the simulator engine and the runtime executor consume.
//
// Semantics follow CUDA/NCCL:
//  - each rank's `ops` are in host issue order; ops on the same stream run in that order (FIFO);
//  - an op may wait on up to two events before it starts and record one event when it ends; an event
//    id is recorded by exactly one op of that rank, always issued before any op that waits on it;
//  - a SendRecv op is one NCCL group (ncclGroupStart/End): it completes when its send and its receive
//    have both completed. Sends from rank a to rank b on channel c match b's receives from a on c in
//    issue order;
//  - a collective starts when every member of its group has reached it; the k-th collective on a group
//    matches the k-th collective on that group on every other member;
//  - both sides of a matched send and receive, and every member's op of a collective, are on the same
//    stream (the runtime's NCCL communicators are per stream).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sim/units.h"
#include "sim/workload.h"

namespace cpscope {

enum class OpPass : std::uint8_t { Fwd, Bwd };

enum class OpKind : std::uint8_t {
  Attend,         // forward attention of a Q block against a K/V block; merges O and LSE into the
                  // output accumulators (fp32, stable LSE update) unless it is the first for those rows
  AttendBwd,      // backward of one block: adds into dQ (local, fp32) and writes the block's dK/dV
                  // into the dkv scratch (or straight into the dkv accumulator of the slot)
  DkvAdd,         // adds the dkv scratch into the received dK/dV accumulator (memory bound)
  Layout,         // permutes a buffer (Ulysses head<->sequence layouts, zigzag reorder after gather)
  SendRecv,       // grouped send and/or receive with ring neighbours
  AllGather,      // all-gather over `group`
  AllToAll,       // all-to-all over `group` (NCCL: grouped send/receive to every member)
  ReduceScatter,  // reduce-scatter over `group` (sum)
};
inline constexpr int kNumOpKinds = 8;
// Does an op of this kind communicate (point-to-point or a collective)?
inline bool is_comm(OpKind k) {
  return k == OpKind::SendRecv || k == OpKind::AllGather || k == OpKind::AllToAll || k == OpKind::ReduceScatter;
}

// What a buffer operand holds. The runtime maps these to device allocations.
enum class BufferKind : std::uint8_t {
  None,
  Q, K, V, KV,    // inputs (KV: K and V packed in one buffer)
  O, Lse, DO,     // output, log-sum-exp, incoming output gradient
  DQ, DKV,        // gradients
  KvDkv,          // packed [K/V ; dK/dV] message (TransformerEngine backward)
  QKV,            // packed Q, K, V (Ulysses all-to-all)
  DQKV,           // packed dQ, dK, dV (Ulysses backward all-to-all)
};

enum class AttnMask : std::uint8_t {
  None,    // not an attention op
  Full,    // every query attends every key of the block
  Causal,  // key j (0-based in the block) is visible to query i iff j <= i + causal_offset
};

// A K/V buffer slot index. Ring schedules double-buffer K/V (slots 0,1) and dK/dV (slots 0,1);
// gathered schedules use slot 0 for the gathered buffer (or one slot per pipelined head group).
struct AttnBlock {
  std::int64_t q_off = 0;      // first query row in the rank's local Q (after any layout op)
  std::int64_t q_len = 0;      // query rows
  std::int64_t kv_off = 0;     // first key row in the K/V slot
  std::int64_t kv_len = 0;     // key rows
  std::int64_t causal_offset = 0;  // Causal only: see AttnMask::Causal
  std::int32_t head_begin = 0;     // first query head of the block (KV heads follow by GQA ratio)
  std::int32_t head_count = 0;     // query heads in the block
  std::int32_t kv_slot = 0;        // K/V slot read
  std::int32_t kv_src = -1;        // CP rank whose K/V this block is (-1: gathered/full)
  AttnMask mask = AttnMask::None;
};

struct Transfer {
  std::int32_t peer = -1;  // CP rank, -1 when absent
  std::int32_t slot = 0;   // buffer slot read (send) or written (receive)
  BufferKind buffer = BufferKind::None;
  std::uint8_t channel = 0;  // matching channel: 0 = K/V, 1 = dK/dV (own stream/communicator)
  Bytes bytes = 0;
};

inline constexpr std::int32_t kNoEvent = -1;

struct Op {
  std::int32_t id = 0;       // index in the rank's op vector
  OpKind kind = OpKind::Attend;
  OpPass pass = OpPass::Fwd;
  std::uint8_t stream = 0;   // index into Schedule::streams (here: no padding hole; Op is 200 bytes)
  std::int32_t step = 0;     // CP step (ring step, or pipelined head-group index)
  std::array<std::int32_t, 2> wait = {kNoEvent, kNoEvent};
  std::int32_t record = kNoEvent;
  Flops flops = 0;           // 4·B·H_blk·D·pairs forward, 2.5x backward; 0 for non-attention ops
  Bytes bytes = 0;           // bytes this rank sends (p2p, collectives) or touches (DkvAdd, Layout)
  AttnBlock attn;            // Attend / AttendBwd
  Transfer send, recv;       // SendRecv
  std::int32_t group = -1;   // collectives: index into Schedule::groups
  BufferKind buffer = BufferKind::None;  // collectives / Layout / DkvAdd: what is moved or touched
  Bytes bytes_per_peer = 0;  // collectives: bytes each member contributes per peer (AllToAll) or
                             // per rank (AllGather input, ReduceScatter output)
  // Collectives: what this rank's transport copies around the transfer because a message is not one
  // contiguous span of its tensor (rt::RankLayout::one_span): bytes packed into staging before sending,
  // bytes unpacked from it after receiving, and the copy kernels that do it (one per region). On the
  // op's stream, where a rank has its GPU to itself (nccl, replay; loopback copies region to region).
  // The runtime's executor checks these against the tensors. 0 for every other op.
  Bytes staged_send = 0, staged_recv = 0;
  std::int32_t staged_copies = 0;
  Bytes staged() const { return staged_send + staged_recv; }
  // Compute ops: what the runtime fills on the op's stream right after its waits and before the op
  // itself, so that accumulators start empty (gen::RankBuilder::add_fills says which): bytes written and
  // memset kernels, one per tensor; also the other memory kernels the runtime adds to an attention op
  // (the backward's delta; allgather --dkv input's converting add of the fp32 stage after the block).
  // Timed with the op (CostModel::compute_ns) and measured with it (the executor attributes the fills to
  // the op); the executor checks them against its tensors. 0 elsewhere.
  std::int32_t fills = 0;
  Bytes fill_bytes = 0;
};

// A live buffer for peak-memory accounting.
struct BufferUse {
  std::string name;   // e.g. "q", "kv_slots", "o_acc_fp32", "gathered_kv"
  Bytes bytes = 0;
  bool fwd = false;   // live during the forward pass
  bool bwd = false;   // live during the backward pass
};

struct RankProgram {
  std::int32_t rank = 0;   // CP rank
  std::vector<Op> ops;
  std::int32_t num_events = 0;
  std::vector<BufferUse> buffers;
};

struct Schedule {
  Workload workload;
  std::vector<std::string> streams;             // e.g. {"compute", "comm", "comm_dkv"}
  std::vector<std::vector<std::int32_t>> groups;  // collective groups (CP ranks)
  std::vector<RankProgram> ranks;               // size N

  std::int64_t num_ops() const;
};

std::string_view to_string(OpKind);
std::string_view to_string(OpPass);
std::string_view to_string(BufferKind);
std::string_view to_string(AttnMask);
// "fwd/step3/attend": the name NVTX ranges and timelines use for an op.
std::string op_name(const Op&);

// Unmasked query-key pairs of a block (per batch and head).
std::int64_t block_pairs(const AttnBlock&);

// The staging buffers a rank's transport allocates per IR stream (the most any one op on it needs, each
// message in its own 256-byte aligned slice). The nccl transport stages what Op::staged_send/recv say,
// except a reduce-scatter's result, which NCCL reduces in place and the transport unpacks from there;
// `replay` (one rank sending to itself) also needs room for the bytes its self-send moves: max(send,
// receive) for a SendRecv, (members-1) parts for a collective, whatever the layout. Counted in the
// simulator's peak memory (the nccl case) as the buffer "staging".
inline constexpr Bytes kStagingAlign = 256;
inline Bytes staging_align(Bytes n) { return (n + kStagingAlign - 1) / kStagingAlign * kStagingAlign; }
struct StagingNeed {
  Bytes send = 0, recv = 0;
};
std::vector<StagingNeed> staging_needs(const Schedule& schedule, std::int32_t rank, bool replay);

// The copies a rank's transport makes around a collective through its staging buffers: bytes packed
// plus unpacked, and the copy kernels (one per region).
struct StagedCopies {
  Bytes bytes = 0;
  std::int32_t copies = 0;
  StagedCopies& operator+=(const StagedCopies& o) {
    bytes += o.bytes;
    copies += o.copies;
    return *this;
  }
  bool operator==(const StagedCopies&) const = default;
};
// The nccl transport copies what the IR says (Op::staged_*). `replay` (one rank sending to itself
// through NCCL, a group of `members`) copies more where its self-send cannot work in place:
//  - an all-to-all's parts go out as one self-send, so they are always packed: when the IR packs none
//    (each part one span), `members` copies of bytes_per_peer more;
//  - a reduce-scatter's self-send brings back members-1 parts, not their sum, so its result is always
//    unpacked: when the IR unpacks none, bytes_per_peer more in one copy per plane (dK and dV).
// The replay transport checks what it copies against this, op by op. Any other op: nothing.
StagedCopies transport_staging(const Op& op, std::int64_t members, bool replay);
// The planes a collective's CUDA transports move one after another (runtime per_plane): 2 for an
// all-gather and a reduce-scatter (K and V; dK and dV), 1 for an all-to-all and any other op.
std::int32_t collective_planes(const Op& op);

// Structural checks: event ids recorded once and before their waits, send/receive pairs and
// collectives match across ranks with equal bytes on one stream, streams in range. Throws InternalError.
void check_schedule(const Schedule&);

// The point-to-point transfers of a schedule: the k-th send from rank a to rank b on a channel meets
// b's k-th receive from a on that channel. One entry per matched pair, in the senders' issue order.
struct TransferMatch {
  std::int32_t src_rank = 0, src_op = 0;  // the SendRecv op that sends
  std::int32_t dst_rank = 0, dst_op = 0;  // the SendRecv op that receives
  std::uint8_t channel = 0;
  Bytes bytes = 0;
};
std::vector<TransferMatch> match_transfers(const Schedule&);

// The generator for workload.schedule; validates the workload first, and refuses a schedule too large
// for the engine's 32-bit op indices or for the memory available here (InputError naming `cp`).
Schedule make_schedule(const Workload&);

// Ops the generator will emit, estimated before it runs: exact for the rings' attention and transfer
// ops, with a margin for the few per-rank extras (collectives, layouts, head groups).
std::int64_t schedule_ops_estimate(const Workload&);
// The size check make_schedule() runs, with the available memory given (make_schedule() passes
// available_memory_bytes(); 0 skips the memory rule).
void check_schedule_size(const Workload&, Bytes available);
// MemAvailable from /proc/meminfo, else physical memory; 0 when neither can be read.
Bytes available_memory_bytes();

}  // namespace cpscope
