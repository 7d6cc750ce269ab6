// Private to the engine (sim/engine*.cc): the Simulation class and its per-op, per-stream, per-rank
// and per-transfer state. The model and the performance notes are at the top of sim/engine.cc.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sim/cost.h"
#include "sim/engine.h"
#include "sim/engine_queue.h"
#include "sim/schedule.h"

namespace cpscope::engine_detail {

constexpr std::int32_t kNone = -1;
constexpr std::int32_t kNever = -2;  // OpRec::wait: an event that no op of the rank records

enum class EvType : std::uint8_t { OpDone, ComputeDone, LatencyDone, FlowDone, TransferDone, CollectiveDone };

// 8 bytes, so a queue entry (with its time) is 16: the queue moves entries around, size matters.
struct Event {
  static constexpr std::uint32_t kAuxMask = (1u << 29) - 1;
  std::int32_t index;     // stream (OpDone), compute slot, flow slot or collective instance
  std::uint32_t packed;   // type in the top 3 bits; below, a slot version (ComputeDone, FlowDone; modulo
                          // 2^29, ample to tell a stale event from the live one) or a rank (OpDone)
  EvType type() const { return static_cast<EvType>(packed >> 29); }
  std::uint32_t aux() const { return packed & kAuxMask; }
};
static_assert(sizeof(Event) == 8);

// What the event loop reads about one op, in 24 bytes (see "Speed" in engine.cc). Indexed by a global
// op index g that runs rank by rank and, within a rank, stream by stream in issue order. Read-only
// once set up: what changes while an op runs lives in its stream's StreamState, which stays in cache.
// Events are resolved to the op that records them (an op's wait is met when that op is done), peers'
// ranks are found from their op index (Simulation::rank_of), and durations and byte counts are
// indices into a table of distinct values. Trivially constructible on purpose: set-up writes every
// field, so the array is never zero-filled.
struct OpRec {
  std::uint32_t work;       // index into works_: compute ns at full rate; SendRecv: bytes of the send
  std::int32_t wait[2];     // g of the op recording each awaited event, kNone, or kNever
  std::int32_t match_send;  // SendRecv: g of the op receiving our send (kNone: unmatched); collective: instance
  std::int32_t match_recv;  // SendRecv: g of the op whose send we receive (kNone: unmatched); collective: op id
  OpKind kind;
  std::uint8_t stream;
  std::uint8_t has_send : 1;  // SendRecv: has a send part
  std::uint8_t has_recv : 1;  // SendRecv: has a receive part
  std::uint8_t waited_on;     // 1 when an op of the rank waits for this one (its recorded event)
};
static_assert(sizeof(OpRec) == 24, "OpRec grew: the event loop's memory traffic is proportional to it");
static_assert(std::is_trivially_default_constructible_v<OpRec>, "OpRec arrays are allocated without zero-filling");

// A stream's FIFO of ops, g in [first, stop) where first is the previous stream's stop (or the
// rank's first op), the state of the op running on it, and a copy of the record of the op at its head
// while that op waits for an event (see "Speed" in engine.cc). 48 bytes.
struct StreamState {
  std::int32_t next = 0;            // g of the op to run next (running, when busy)
  std::int32_t stop = 0;            // g one past the stream's last op
  std::int32_t waiting_on = kNone;  // g of the op the next op waits for (or kNever), or kNone
  std::uint32_t send_work = 0;      // running SendRecv: works_ id of its send's bytes
  std::uint8_t busy = 0;            // the op at `next` runs
  std::uint8_t parts = 0;           // running SendRecv: transfers (send, receive) not yet complete
  OpKind kind = OpKind::Attend;     // running op's kind
  std::uint8_t waited_on = 0;       // running op records an event some op of the rank waits for
  std::uint8_t cached = 0;          // `head` holds the record of the op at `next` (it waits)
  OpRec head;                       // (read instead of recs_[next] while `cached`)
};
static_assert(sizeof(StreamState) == 48, "StreamState grew: a rank's streams are touched at every wake-up");

// A list of int32 with std::vector's order semantics that keeps up to N elements inline (in its
// owner's cache line, no allocation) and spills to the heap beyond that.
template <int N>
class SmallVec {
 public:
  SmallVec() = default;
  SmallVec(const SmallVec& o) { *this = o; }
  SmallVec& operator=(const SmallVec& o) {
    if (this == &o) return *this;
    spill_ = o.spill_ ? std::make_unique<std::vector<std::int32_t>>(*o.spill_) : nullptr;
    std::copy(o.inline_, o.inline_ + N, inline_);
    size_ = o.size_;
    data_ = spill_ ? spill_->data() : inline_;
    return *this;
  }
  SmallVec(SmallVec&& o) noexcept { *this = std::move(o); }
  SmallVec& operator=(SmallVec&& o) noexcept {
    spill_ = std::move(o.spill_);
    std::copy(o.inline_, o.inline_ + N, inline_);
    size_ = o.size_;
    data_ = spill_ ? spill_->data() : inline_;
    o.size_ = 0;
    o.data_ = o.inline_;
    return *this;
  }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::int32_t* begin() { return data_; }
  std::int32_t* end() { return data_ + size_; }
  const std::int32_t* begin() const { return data_; }
  const std::int32_t* end() const { return data_ + size_; }
  std::int32_t& operator[](std::size_t i) { return data_[i]; }
  std::int32_t operator[](std::size_t i) const { return data_[i]; }
  std::int32_t back() const { return data_[size_ - 1]; }
  void push_back(std::int32_t v) {
    if (size_ >= N) return spill(v);
    data_[size_++] = v;
  }
  void pop_back() { --size_; }
  void erase(std::int32_t* it) {  // keeps the order of the others
    std::copy(it + 1, end(), it);
    --size_;
  }

 private:
  void spill(std::int32_t v) {  // beyond N elements: the heap holds all of them
    if (!spill_) spill_ = std::make_unique<std::vector<std::int32_t>>(inline_, inline_ + N);
    spill_->resize(size_);
    spill_->push_back(v);
    data_ = spill_->data();
    ++size_;
  }

  std::int32_t* data_ = inline_;
  std::uint32_t size_ = 0;
  std::int32_t inline_[N] = {};
  std::unique_ptr<std::vector<std::int32_t>> spill_;
};

// Per rank, laid out so that an op's start or end touches two cache lines of it.
// A device's compute state (processor sharing, interference) lives in the RankState of its first rank
// (`pool`): with one rank per device, the rank's own.
struct alignas(64) RankState {
  std::int32_t comm_active = 0;     // communication ops in progress
  std::int32_t compute_active = 0;  // Attend/AttendBwd in progress (Timeline kind Compute)
  std::int32_t memory_active = 0;   // DkvAdd/Layout in progress (Timeline kind Memory)
  std::int32_t stream_base = 0;     // index of the rank's first stream in streams_
  std::int32_t pool = 0;            // the rank whose state below is this rank's device's
  std::int32_t device_comm = 0;     // (pool) communication ops in progress on the device's ranks
  double slowdown = 1.0;            // (pool) compute ops advance 1 ns of work per `slowdown` ns
  SmallVec<3> running;              // (pool) compute slots of the device's ranks
  Nanos since = 0;                  // the busy totals below are up to date until here
  Nanos first_start = -1;
  Nanos last_end = 0;
  Nanos compute_ns = 0, comm_ns = 0, exposed_comm_ns = 0, busy_ns = 0;
};

// Where a rank sits on the links (read when a transfer begins).
struct RankNet {
  std::int64_t node = 0;
  std::int32_t device = 0;                 // DeviceSharing: rank / ranks_per_device
  std::int32_t copy_out = 0, copy_in = 0;  // the device's copy resources (transfers within it)
  std::int32_t link_out = 0, link_in = 0;  // NVLink resources
  std::int32_t nic_out = 0, nic_in = 0;    // NIC resources
};

struct alignas(32) ComputeSlot {
  double remaining = 0;  // ns of work left at full rate
  Nanos last = 0;        // when `remaining` was last brought up to date
  std::uint32_t version = 0;
  std::int32_t rank = 0;
  std::int32_t sid = 0;  // stream running the op
};

// One transfer (a send and its matching receive), from the moment both ops have started: latency,
// then its bytes flowing through two resources. 64 bytes.
struct alignas(64) Flow {
  double remaining = 0;  // bytes
  double rate = 0;       // bytes per ns (= GB/s)
  Nanos last = 0;
  std::uint32_t version = 0;
  std::int32_t src_rank = 0, dst_rank = 0;
  std::int32_t send_sid = 0, recv_sid = 0;  // streams running the sending and the receiving op
  std::int32_t res[2] = {kNone, kNone};
  std::int32_t pos[2] = {0, 0};  // index in each resource's flow list
  std::uint8_t solo = 0;         // registered ahead of its latency, alone (Simulation::begin_transfer)
};
static_assert(sizeof(Flow) == 64, "a Flow is one cache line");

struct Resource {
  double bandwidth = 0;  // bytes per ns
  double share = 0;      // bandwidth / flows.size() (while a flow is active)
  SmallVec<3> flows;     // active flows
};

struct Collective {
  std::int32_t group = 0;
  std::int32_t arrived = 0;
  std::int32_t member_base = 0;       // first of group-size entries in members_
};

inline bool is_collective(OpKind k) {
  return k == OpKind::AllGather || k == OpKind::AllToAll || k == OpKind::ReduceScatter;
}
inline bool is_compute(OpKind k) {
  return k == OpKind::Attend || k == OpKind::AttendBwd || k == OpKind::DkvAdd || k == OpKind::Layout;
}

// Same rounding as the cost model: ceil with a relative slack for exact integer quotients.
inline Nanos ceil_ns(double x) {
  if (!(x > 0)) return 0;
  const double y = x * (1.0 - 1e-12);
  const auto t = static_cast<Nanos>(y);  // floor, y being positive; std::ceil is a libm call here
  return t + (static_cast<double>(t) < y ? 1 : 0);
}

struct SetupPart;

// The record array of a finished simulation is kept for the next one in the process (sim/engine_setup.cc):
// plan and sweep simulate config after config, and a fresh 150 MB array costs its page faults and the
// kernel's zeroing of every page again, which on a virtual machine varied from 0.03 to 0.45 s a run.
// take_records() returns an array of at least n records (capacity: its size), reusing the kept one when
// it is large enough; keep_records() keeps the larger of the two.
std::unique_ptr<OpRec[]> take_records(std::size_t n, std::size_t& capacity);
void keep_records(std::unique_ptr<OpRec[]> recs, std::size_t capacity);

class Simulation {
 public:
  Simulation(const Schedule& s, const HardwareProfile& hw, const SimOptions& opt)
      : s_(s), w_(s.workload), hw_(hw), opt_(opt), cost_(hw, s.workload) {}
  ~Simulation() {
    if (recs_) keep_records(std::move(recs_), recs_capacity_);
  }
  Simulation(const Simulation&) = delete;
  Simulation& operator=(const Simulation&) = delete;

  SimResult run();

 private:
  void setup();
  void setup_ranks(SetupPart& part);
  void setup_resources();
  [[noreturn]] void bad_op(std::int32_t rank, std::int32_t i) const;

  void push(Nanos t, EvType type, std::int32_t index, std::uint32_t aux) {
    queue_.push(t, Event{index, (static_cast<std::uint32_t>(type) << 29) | (aux & Event::kAuxMask)});
  }

  void try_start(std::int32_t rank, std::int32_t sid);
  void start_op(std::int32_t rank, std::int32_t sid, std::int32_t g, const OpRec& rec);
  void complete_op(std::int32_t rank, std::int32_t sid);
  void wake_waiters(std::int32_t rank, std::int32_t g);
  // Brings the rank's busy totals up to now_ (call before any of its active counts change).
  void account(RankState& r) {
    const Nanos dt = now_ - r.since;
    if (dt == 0) return;
    r.since = now_;
    if (r.compute_active > 0) r.compute_ns += dt;
    if (r.comm_active > 0) {
      r.comm_ns += dt;
      if (r.compute_active == 0) r.exposed_comm_ns += dt;
    }
    if ((r.compute_active | r.comm_active | r.memory_active) != 0) r.busy_ns += dt;
  }
  // The stream (index in streams_) of the rank's op g: the rank's streams are consecutive ranges of g.
  std::int32_t stream_of(std::int32_t rank, std::int32_t g) const {
    std::int32_t sid = ranks_[rank].stream_base;
    while (g >= streams_[sid].stop) ++sid;
    return sid;
  }
  // Whether the rank's op g has completed: it lies before the head of its stream.
  bool done(std::int32_t rank, std::int32_t g) const { return g < streams_[stream_of(rank, g)].next; }
  // Whether op g of stream sid has started (it may have completed since).
  bool started(std::int32_t sid, std::int32_t g) const {
    const StreamState& st = streams_[sid];
    return g < st.next || (g == st.next && st.busy != 0);
  }
  // The rank whose ops include g (g must be a valid op index).
  std::int32_t rank_of(std::int32_t g) const {
    const auto block = static_cast<std::size_t>(g) >> rank_block_shift_;
    std::int32_t lo = rank_block_[block];
    const std::int32_t hi = rank_block_[block + 1];
    if (hi - lo > 8)  // many small ranks in one block
      return static_cast<std::int32_t>(
          std::upper_bound(op_base_.begin() + lo + 1, op_base_.begin() + hi + 1, g) - op_base_.begin() - 1);
    // The last rank starting at or before g.
    while (op_base_[static_cast<std::size_t>(lo) + 1] <= g) ++lo;
    return lo;
  }

  // Compute progress.
  void retime(RankState& r);
  void comm_begin(RankState& r);
  // A collective's packing and unpacking copies (transport_staging), where each rank has its GPU alone
  // (a cluster, replay); loopback and the host backend copy region to region: 0.
  Nanos staging_ns(const Op& op) const;
  void comm_end(RankState& r);

  // Transfers.
  void begin_transfer(std::int32_t src, std::int32_t send_sid, std::int32_t dst, std::int32_t recv_sid,
                      std::uint32_t work);
  void start_flow(std::int32_t f);
  void settle(std::int32_t f);
  void join_resources(std::int32_t f);
  void update_flow(std::int32_t f);
  void end_flow(std::int32_t f);
  void transfer_done(std::int32_t f);
  void part_done(std::int32_t rank, std::int32_t sid);

  std::uint32_t name_id(const Op& op);
  [[noreturn]] void report_deadlock();
  std::string describe_blocked(std::int32_t rank, std::int32_t g);
  // g of the first op of the rank's stream s.
  std::int32_t stream_first(std::int32_t rank, std::int32_t s) const {
    return s == 0 ? op_base_[static_cast<std::size_t>(rank)] : streams_[ranks_[rank].stream_base + s - 1].stop;
  }
  // Diagnostics only (a pass over the rank's ops): the op id of g, and the Op itself.
  std::int32_t local_of(std::int32_t rank, std::int32_t g) const;
  const Op& op_of(std::int32_t rank, std::int32_t g) const { return s_.ranks[rank].ops[local_of(rank, g)]; }

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
  std::vector<RankNet> net_;
  std::unique_ptr<OpRec[]> recs_;                    // per g
  std::size_t recs_capacity_ = 0;                    // recs_ may be larger than needed (take_records())
  std::vector<Nanos> works_;                         // distinct work values (OpRec::work)
  std::vector<StreamState> streams_;                 // per (rank, stream)
  std::int32_t num_streams_ = 0;
  // rank_of(): op_base_ per rank plus the total; rank_block_[b]: the rank owning op b << shift, and
  // a last entry for the end.
  std::vector<std::int32_t> op_base_;
  std::vector<std::int32_t> rank_block_;
  int rank_block_shift_ = 0;
  std::vector<ComputeSlot> slots_;
  std::vector<std::int32_t> free_slots_;
  std::vector<Flow> flows_;
  std::vector<std::int32_t> free_flows_;
  std::vector<Resource> resources_;
  std::vector<Collective> colls_;
  std::vector<std::pair<std::int32_t, std::int32_t>> members_;  // (stream, rank) per collective arrival
  std::vector<GroupPlacement> placements_;  // per group
  std::vector<double> group_nic_sharing_;   // per group: NIC sharing factor of its busiest NIC
  // Timeline: intervals pre-filled by set-up (indexed by g); the loop writes only the compact times
  // (4 ops per cache line instead of 1), copied into the intervals at the end.
  struct Times {
    Nanos start, end;
  };
  std::unique_ptr<Times[]> times_;

  std::vector<std::int32_t> coll_count_;  // set-up: collectives so far per (group, rank)

  // Interned op names by (pass, kind, step).
  std::vector<std::uint32_t> names_[2][kNumOpKinds];

  SimResult result_;
};

}  // namespace cpscope::engine_detail
