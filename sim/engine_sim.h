// Private to the engine (sim/engine*.cc): the Simulation class and its per-op, per-stream, per-rank
// and per-transfer state. The model and the performance notes are at the top of sim/engine.cc.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "sim/cost.h"
#include "sim/engine.h"
#include "sim/engine_queue.h"
#include "sim/schedule.h"

namespace cpscope::engine_detail {

constexpr std::int32_t kNone = -1;

enum class EvType : std::uint8_t { OpDone, ComputeDone, LatencyDone, FlowDone, TransferDone, CollectiveDone };

// 8 bytes, so a queue entry (with its time) is 16: the queue moves entries around, size matters.
struct Event {
  static constexpr std::uint32_t kAuxMask = (1u << 29) - 1;
  std::int32_t index;     // g of an op, compute slot, flow slot or collective instance
  std::uint32_t packed;   // type in the top 3 bits; below, a slot version (ComputeDone, FlowDone; modulo
                          // 2^29, ample to tell a stale event from the live one) or a rank (OpDone,
                          // LatencyDone, TransferDone)
  EvType type() const { return static_cast<EvType>(packed >> 29); }
  std::uint32_t aux() const { return packed & kAuxMask; }
};
static_assert(sizeof(Event) == 8);

enum : std::uint8_t { kWaiting = 0, kRunning = 1, kDone = 2 };

// Everything the event loop needs about one op (40 bytes; see "Speed" in engine.cc). Indexed by a
// global op index g that runs rank by rank and, within a rank, stream by stream in issue order.
// Trivially constructible on purpose: set-up writes every field, so the array is never zero-filled.
struct OpRec {
  Nanos work;               // compute: ns at full rate; SendRecv: bytes of the send
  std::int32_t wait[2];     // global event indices or kNone
  std::int32_t record;      // global event index or kNone
  std::int32_t match_send;  // SendRecv: g of the op receiving our send; collective: instance
  std::int32_t match_recv;  // SendRecv: g of the op whose send we receive
  std::int32_t send_peer;   // SendRecv: ranks, or kNone
  std::int32_t recv_peer;
  OpKind kind;
  std::uint8_t stream;
  std::uint8_t status : 2;      // kWaiting, kRunning, kDone
  std::uint8_t parts_left : 2;  // SendRecv: transfers (send, receive) not yet complete
  std::uint8_t send_ready : 2;  // SendRecv: how many of {this op, its receiver} have started
};
static_assert(sizeof(OpRec) <= 40, "OpRec grew: the event loop's memory traffic is proportional to it");
static_assert(std::is_trivially_default_constructible_v<OpRec>, "OpRec arrays are allocated without zero-filling");

struct StreamState {
  std::int32_t first = 0;             // g of the stream's first op
  std::int32_t head = 0;              // position of the next op to run
  std::int32_t end = 0;
  std::int32_t waiting_on = kNone;    // global event the head op waits for, or kNone
  bool busy = false;
};

struct RankState {
  std::int32_t op_base = 0;      // global index of the rank's op 0
  std::int32_t event_base = 0;
  std::int32_t stream_base = 0;
  std::int32_t comm_active = 0;  // communication ops in progress
  std::int64_t node = 0;
  std::int32_t link_out = 0, link_in = 0;  // NVLink resources
  std::int32_t nic_out = 0, nic_in = 0;    // NIC resources
  double slowdown = 1.0;                   // compute ops advance 1 ns of work per `slowdown` ns
  std::vector<std::int32_t> running;       // compute slots
};

struct ComputeSlot {
  double remaining = 0;  // ns of work left at full rate
  Nanos last = 0;        // when `remaining` was last brought up to date
  std::uint32_t version = 0;
  std::int32_t op = kNone;
  std::int32_t rank = 0;
};

struct Flow {
  double remaining = 0;  // bytes
  double rate = 0;       // bytes per ns (= GB/s)
  Nanos last = 0;
  std::uint32_t version = 0;
  std::int32_t send_op = kNone;
  std::int32_t src_rank = 0;
  std::int32_t res[2] = {kNone, kNone};
  std::int32_t pos[2] = {0, 0};  // index in each resource's flow list
};

struct Resource {
  double bandwidth = 0;               // bytes per ns
  std::vector<std::int32_t> flows;    // active flows
};

struct Collective {
  std::int32_t group = 0;
  std::int32_t arrived = 0;
  std::int32_t member_base = 0;       // first of group-size entries in members_
};

inline bool is_comm(OpKind k) {
  return k == OpKind::SendRecv || k == OpKind::AllGather || k == OpKind::AllToAll || k == OpKind::ReduceScatter;
}
inline bool is_collective(OpKind k) {
  return k == OpKind::AllGather || k == OpKind::AllToAll || k == OpKind::ReduceScatter;
}
inline bool is_compute(OpKind k) {
  return k == OpKind::Attend || k == OpKind::AttendBwd || k == OpKind::DkvAdd || k == OpKind::Layout;
}

inline IntervalKind interval_kind(OpKind k) {
  switch (k) {
    case OpKind::Attend:
    case OpKind::AttendBwd: return IntervalKind::Compute;
    case OpKind::DkvAdd:
    case OpKind::Layout: return IntervalKind::Memory;
    default: return IntervalKind::Comm;
  }
}

// Same rounding as the cost model: ceil with a relative slack for exact integer quotients.
inline Nanos ceil_ns(double x) {
  if (!(x > 0)) return 0;
  return static_cast<Nanos>(std::ceil(x * (1.0 - 1e-12)));
}

class Simulation {
 public:
  Simulation(const Schedule& s, const HardwareProfile& hw, const SimOptions& opt)
      : s_(s), w_(s.workload), hw_(hw), opt_(opt), cost_(hw, s.workload) {}

  SimResult run();

 private:
  void setup();
  void setup_resources();
  void match_transfers(const std::vector<std::vector<std::int32_t>>& sends,
                       const std::vector<std::vector<std::int32_t>>& recvs);

  void push(Nanos t, EvType type, std::int32_t index, std::uint32_t aux) {
    queue_.push(t, Event{index, (static_cast<std::uint32_t>(type) << 29) | (aux & Event::kAuxMask)});
  }

  void try_start(std::int32_t rank, std::int32_t sid);
  void start_op(std::int32_t rank, std::int32_t g);
  void complete_op(std::int32_t rank, std::int32_t g);
  void record_event(std::int32_t rank, std::int32_t e);

  // Compute progress.
  void advance(RankState& r);
  void reschedule(std::int32_t rank);
  void comm_begin(std::int32_t rank);
  void comm_end(std::int32_t rank);
  Nanos compute_duration(const Op& op);

  // Transfers.
  void begin_transfer(std::int32_t send_op, std::int32_t src_rank);
  void start_flow(std::int32_t send_op, std::int32_t src_rank);
  void update_flow(std::int32_t f);
  void end_flow(std::int32_t f);
  void transfer_done(std::int32_t send_op, std::int32_t src_rank);
  void part_done(std::int32_t rank, std::int32_t g);

  std::uint32_t name_id(const Op& op);
  [[noreturn]] void report_deadlock();
  std::string describe_blocked(std::int32_t rank, std::int32_t g);
  const Op& op_of(std::int32_t rank, std::int32_t g) const { return s_.ranks[rank].ops[local_[g]]; }

  const Schedule& s_;
  const Workload& w_;
  const HardwareProfile& hw_;
  SimOptions opt_;
  CostModel cost_;

  Nanos now_ = 0;
  std::int64_t total_ops_ = 0;
  std::int64_t done_ops_ = 0;
  std::int64_t events_ = 0;

  detail::RadixEventQueue<Event> queue_;  // ties in insertion order
  std::vector<RankState> ranks_;
  std::unique_ptr<OpRec[]> recs_;                    // per g
  std::unique_ptr<std::int32_t[]> local_;            // per g: the op's id (index in its rank's ops)
  std::vector<StreamState> streams_;                 // per (rank, stream)
  std::vector<std::uint64_t> recorded_;              // bit per global event: recorded
  bool recorded(std::int32_t e) const { return (recorded_[static_cast<std::size_t>(e) >> 6] >> (e & 63)) & 1; }
  std::vector<ComputeSlot> slots_;
  std::vector<std::int32_t> free_slots_;
  std::vector<Flow> flows_;
  std::vector<std::int32_t> free_flows_;
  std::vector<Resource> resources_;
  std::vector<Collective> colls_;
  std::vector<std::pair<std::int32_t, std::int32_t>> members_;  // (global op, rank) per collective arrival
  std::vector<GroupPlacement> placements_;  // per group
  std::vector<double> group_nic_sharing_;   // per group: NIC sharing factor of its busiest NIC
  // Timeline: intervals pre-filled by set-up (indexed by g); the loop writes only the compact times
  // (4 ops per cache line instead of 1), copied into the intervals at the end.
  struct Times {
    Nanos start, end;
  };
  std::unique_ptr<Times[]> times_;

  // Duration cache for compute ops: a pure function of the op's shape, memoised (direct-mapped).
  struct DurKey {
    std::int64_t q_len = -1, kv_len = -1, flops = -1, bytes = -1;
    std::uint8_t kind = 0, mask = 0;
    bool operator==(const DurKey&) const = default;
  };
  static constexpr std::size_t kDurCache = 1024;
  std::vector<std::pair<DurKey, Nanos>> dur_cache_ = std::vector<std::pair<DurKey, Nanos>>(kDurCache);

  // Interned op names by (pass, kind, step).
  std::vector<std::uint32_t> names_[2][kNumOpKinds];

  SimResult result_;
};

}  // namespace cpscope::engine_detail
