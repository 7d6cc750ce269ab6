// Discrete-event engine: runs a Schedule's per-rank programs against a HardwareProfile.
//
// Model (see sim/schedule.h for the IR semantics it executes):
//  - Streams are FIFOs: an op starts when it is at the head of its stream and every event it waits on
//    has been recorded (its recording op completed). One op runs per stream at a time. An event is
//    recorded by one op (set-up rejects a second recorder).
//  - Compute ops (Attend, AttendBwd, DkvAdd, Layout) need CostModel::compute_ns of GPU time. Their
//    progress is fluid: with k compute ops running on a rank each advances at 1/k (concurrent kernels
//    share the SMs: two compute streams never give a GPU more than its rate), and while any
//    communication op (SendRecv or collective, from its start to its completion, as an NCCL kernel
//    occupies SMs while it waits for its peer) is in progress on the rank, at a further
//    1/comm_compute_interference. Whenever a rank's rate changes, the remaining work of its running
//    compute ops is brought up to date and their completions re-scheduled; stale completion events are
//    recognised by a per-slot version counter. With SimOptions::sharing, "a rank" above is "a device":
//    the compute ops of all the ranks on one device share it (each at min(1, compute_slots / k)) and any
//    of their communication ops slows all of them; transfers between them are copies on the device:
//    HardwareProfile::device_copy_link(), fairly shared.
//  - local_transfers (replay: each rank as if it ran alone, sending to itself): no rank waits for a peer.
//    A SendRecv is one copy of its larger side from the rank to itself, begun when the op starts; a
//    collective completes collective_ns (on_device, alone) + staging_ns(transport_staging(.., replay))
//    after the rank starts it. Nothing below about matching peers applies.
//  - SendRecv: the k-th send from a to b on channel c matches the k-th receive on b from a on c (issue
//    order, matched once before the run). A transfer starts when both the sending op and the receiving
//    op have started. It takes the link latency (fixed, occupies no bandwidth), then its bytes flow at
//    rate = min over the resources it uses of bandwidth / active flows on that resource, recomputed for
//    the flows of a resource whenever a flow joins or leaves it. Resources: intra-node (same node via
//    Workload::node_of): the sender's NVLink egress and the receiver's NVLink ingress; inter-node: the
//    sender's NIC egress and the receiver's NIC ingress, where GPU g of a node uses NIC
//    CostModel::nic_of_local_gpu(g) (several GPUs of this group may share one NIC: their flows share
//    the resource). Every CP group of the mesh runs the same schedule at once, so a NIC also carries
//    the identical traffic of the other groups' GPUs behind it: it offers this group
//    network bandwidth x (our GPUs on the NIC) / (all GPUs on the NIC). (Counted per NIC rather than
//    per node: under TpInner the interleaved groups mostly sit behind other NICs of the node.) A
//    SendRecv op completes when its send and its receive transfers have both completed (either may be
//    absent).
//  - Collectives: the k-th collective on a group starts when every member has started its k-th
//    collective on that group; all members complete together CostModel::collective_ns later (inter-node
//    when the group spans nodes; copies within a GPU when no byte leaves one, see GroupPlacement::on_device),
//    plus CostModel::staging_ns for the packing and unpacking copies (the IR's: transport_staging) when
//    each rank has its GPU alone.
//    A simplification: collectives count as communication for interference but do not share link (or
//    device copy) bandwidth with concurrent point-to-point flows.
//  - Deadlock: when no event is left and ops remain, InternalError names each rank's first blocked op
//    and what it waits for.
// Time is integer ns; events at equal times run in insertion order (sim/engine_queue.h), so a run is
// deterministic.
//
// Per-rank totals: every op start and end first brings its rank's busy totals up to now_ (account():
// time since the last change is added to compute, comm, exposed comm and busy according to the counts
// of compute, comm and memory ops running), so SimResult::rank_busy holds exactly the interval
// unions summarize() computes from a Timeline, without one.
//
// Speed (a 1024-rank ring has ~6M ops): set-up reads each rank's ops into 24-byte OpRecs (durations
// from the cost model memoised by shape, byte counts and durations as indices into a table of
// distinct values, transfers and collectives matched, events resolved to the op that records them)
// laid out stream by stream, so a stream's ops are adjacent and the event loop walks memory
// sequentially instead of touching the 176-byte Ops. Large schedules are set up by two threads (see
// engine_setup.cc). The records are read-only in the loop: the state of a running op lives in its
// stream's StreamState (a few hot cache lines per rank), a transfer's in its Flow, and a peer's
// progress is read from its streams, so an op's record is read when it reaches the head of its stream
// and not after: an op that must wait there (two ops in three at N = 1024) keeps a copy in its
// StreamState, which the wake-up touches anyway, where reading the record again a round of the ring
// later missed the caches (that re-read was a third of try_start()'s profile samples, try_start() a
// sixth of the run's). The first read is prefetched when the op before it on the stream starts; the
// stream heads lie on thousands of different pages and the profile shows that first read still
// stalling. Set-up prefetches the Ops it reads first (about 12% off set-up). Timeline
// intervals, when recorded, are pre-filled by set-up and the loop records only 16-byte start/end
// pairs. The event queue is a base-256 radix heap whose smallest buckets are popped as sorted runs
// (sim/engine_queue.h): with ranks drifting apart most event times are distinct, and a base-16 heap
// moved each event down about twice (128 ranks) and searched its buckets on most pops. Fair sharing
// updates only the flows of the resources a starting or ending flow uses, and a transfer whose
// resources are free when it begins is registered at once as flowing from the end of its latency,
// without a LatencyDone event (begin_transfer(); a quarter fewer events at N = 128). The big arrays are
// allocated without zero-filling and advised as huge pages, and the records' array is kept for the
// next simulation in the process (take_records() in engine_sim.h). No per-op allocation, no std::map.
#include "sim/engine.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "sim/engine_sim.h"
#include "sim/error.h"

namespace cpscope {
namespace engine_detail {

// ---------------------------------------------------------------------------------------------
// Op lifecycle.

void Simulation::try_start(std::int32_t rank, std::int32_t sid) {
  StreamState& st = streams_[sid];
  if (st.busy != 0 || st.next == st.stop) return;
  const std::int32_t g = st.next;
  const OpRec& rec = st.cached ? st.head : recs_[g];
  for (const std::int32_t w : rec.wait) {
    if (w == kNone || (w >= 0 && done(rank, w))) continue;
    st.waiting_on = w;  // wake_waiters() looks for it among the rank's streams
    if (!st.cached) {
      st.head = rec;
      st.cached = 1;
    }
    return;
  }
  st.cached = 0;
  st.busy = 1;
  st.kind = rec.kind;
  st.waited_on = rec.waited_on;
  // The stream's next record is read when this op ends, many events from now: fetch it meanwhile
  // (at N = 1024 the records are 150 MB).
  const char* const next = reinterpret_cast<const char*>(&recs_[g + 1]);
  __builtin_prefetch(next);
  __builtin_prefetch(next + sizeof(OpRec) - 1);
  start_op(rank, sid, g, rec);
}

void Simulation::start_op(std::int32_t rank, std::int32_t sid, std::int32_t g, const OpRec& rec) {
  RankState& r = ranks_[rank];
  if (times_) times_[g].start = now_;
  account(r);
  if (r.first_start < 0) r.first_start = now_;
  switch (rec.kind) {
    case OpKind::Attend:
    case OpKind::AttendBwd:
    case OpKind::DkvAdd:
    case OpKind::Layout: {
      if (rec.kind == OpKind::Attend || rec.kind == OpKind::AttendBwd) ++r.compute_active;
      else ++r.memory_active;
      std::int32_t slot;
      if (!free_slots_.empty()) {
        slot = free_slots_.back();
        free_slots_.pop_back();
      } else {
        slot = static_cast<std::int32_t>(slots_.size());
        slots_.emplace_back();
      }
      ComputeSlot& cs = slots_[slot];
      cs.remaining = static_cast<double>(works_[rec.work]);
      cs.last = now_;
      cs.rank = rank;
      cs.sid = sid;
      RankState& pool = ranks_[r.pool];
      pool.running.push_back(slot);
      retime(pool);
      break;
    }
    case OpKind::SendRecv: {
      comm_begin(r);
      StreamState& st = streams_[sid];
      st.parts = static_cast<std::uint8_t>(rec.has_send + rec.has_recv);
      st.send_work = rec.work;
      if (st.parts == 0) {
        push(now_, EvType::OpDone, sid, static_cast<std::uint32_t>(rank));
        break;
      }
      if (opt_.sharing.local_transfers) {  // replay: one send to itself of the larger side (rec.work), now
        st.parts = 2;                      // (its completion ends both parts)
        begin_transfer(rank, sid, rank, sid, rec.work);
        break;
      }
      // A transfer begins when the second of its two ops starts.
      if (rec.has_send && rec.match_send != kNone) {
        const std::int32_t dst = rank_of(rec.match_send);
        const std::int32_t recv_sid = stream_of(dst, rec.match_send);
        if (started(recv_sid, rec.match_send)) begin_transfer(rank, sid, dst, recv_sid, rec.work);
      }
      if (rec.has_recv && rec.match_recv != kNone && rec.match_recv != g) {  // (g: sent to itself, begun above)
        const std::int32_t src = rank_of(rec.match_recv);
        const std::int32_t send_sid = stream_of(src, rec.match_recv);
        if (started(send_sid, rec.match_recv)) begin_transfer(src, send_sid, rank, sid, streams_[send_sid].send_work);
      }
      break;
    }
    case OpKind::AllGather:
    case OpKind::AllToAll:
    case OpKind::ReduceScatter: {
      comm_begin(r);
      if (opt_.sharing.local_transfers) {  // replay: the rank moves its bytes to itself, now, alone
        const Op& op = s_.ranks[rank].ops[rec.match_recv];
        const Nanos dur =
            cost_.collective_ns(op, placements_[op.group], group_nic_sharing_[op.group]) + staging_ns(op);
        push(now_ + dur, EvType::OpDone, sid, static_cast<std::uint32_t>(rank));
        break;
      }
      Collective& c = colls_[rec.match_send];
      members_[c.member_base + c.arrived] = {sid, rank};
      if (++c.arrived == static_cast<std::int32_t>(s_.groups[c.group].size())) {
        const Op& op = s_.ranks[rank].ops[rec.match_recv];
        // Members' staging is alike, so the last to arrive sets the pace.
        const Nanos dur = cost_.collective_ns(op, placements_[c.group], group_nic_sharing_[c.group]) + staging_ns(op);
        push(now_ + dur, EvType::CollectiveDone, rec.match_send, 0);
      }
      break;
    }
  }
}

Nanos Simulation::staging_ns(const Op& op) const {
  // A rank alone on its GPU packs and unpacks non-contiguous messages on the collective's stream (replay
  // some more: transport_staging). Loopback copies region to region, and the host backend's queues copy
  // whatever the layout: no staging.
  if (opt_.sharing.ranks_per_device != 1) return 0;
  const auto members = static_cast<std::int64_t>(s_.groups[static_cast<std::size_t>(op.group)].size());
  return cost_.staging_ns(transport_staging(op, members, opt_.sharing.local_transfers));
}

// The op running on stream sid has completed.
void Simulation::complete_op(std::int32_t rank, std::int32_t sid) {
  StreamState& st = streams_[sid];
  RankState& r = ranks_[rank];
  CPSCOPE_CHECK(st.busy != 0, fmt::format("rank {} stream {} completed an op but runs none", rank, sid));
  const std::int32_t g = st.next;
  ++done_ops_;
  account(r);
  switch (st.kind) {
    case OpKind::Attend:
    case OpKind::AttendBwd: --r.compute_active; break;
    case OpKind::DkvAdd:
    case OpKind::Layout: --r.memory_active; break;
    default: comm_end(r); break;
  }
  if (times_) times_[g].end = now_;
  r.last_end = std::max(r.last_end, now_);
  st.busy = 0;
  st.next = g + 1;
  if (st.waited_on) wake_waiters(rank, g);
  try_start(rank, sid);
}

// The op g (just done) records an event: start the ops of this rank's streams that were blocked on
// it. (A rank has a handful of streams: scanning them is cheaper than keeping waiter lists.)
void Simulation::wake_waiters(std::int32_t rank, std::int32_t g) {
  const std::int32_t base = ranks_[rank].stream_base;
  for (std::int32_t sid = base; sid < base + num_streams_; ++sid) {
    if (streams_[sid].waiting_on != g) continue;
    streams_[sid].waiting_on = kNone;
    try_start(rank, sid);
  }
}

// ---------------------------------------------------------------------------------------------
// Compute progress (fluid, processor sharing, interference).

// Sets the device's slowdown from its current counts and re-schedules every running compute op, after
// bringing its remaining work up to now_ at the slowdown that held until now. `r` is the device's pool.
void Simulation::retime(RankState& r) {
  // With nothing running there is nothing to re-time, and the slowdown is read only here: the next
  // retime() sets it, when an op starts (whose work is then up to date, so the stale `before` is unused).
  if (r.running.empty()) return;
  const double before = r.slowdown;
  const double k = static_cast<double>(r.running.size());
  const double slots = opt_.sharing.compute_slots;  // 1 for a GPU: k/1 is exactly k, as before sharing
  r.slowdown = (k > slots ? k / slots : 1.0) * (r.device_comm > 0 ? hw_.comm_compute_interference : 1.0);
  for (const std::int32_t slot : r.running) {
    ComputeSlot& cs = slots_[slot];
    if (cs.last != now_) {
      cs.remaining -= static_cast<double>(now_ - cs.last) / before;
      cs.last = now_;
    }
    ++cs.version;
    push(now_ + ceil_ns(cs.remaining * r.slowdown), EvType::ComputeDone, slot, cs.version);
  }
}

void Simulation::comm_begin(RankState& r) {
  ++r.comm_active;
  RankState& pool = ranks_[r.pool];
  if (pool.device_comm++ == 0 && hw_.comm_compute_interference != 1.0) retime(pool);
}

void Simulation::comm_end(RankState& r) {
  CPSCOPE_CHECK(r.comm_active > 0, "communication count underflow");
  --r.comm_active;
  RankState& pool = ranks_[r.pool];
  if (--pool.device_comm == 0 && hw_.comm_compute_interference != 1.0) retime(pool);
}

// ---------------------------------------------------------------------------------------------
// Transfers: latency, then a flow that shares its resources fairly.

void Simulation::begin_transfer(std::int32_t src, std::int32_t send_sid, std::int32_t dst, std::int32_t recv_sid,
                                std::uint32_t work) {
  std::int32_t f;
  if (!free_flows_.empty()) {
    f = free_flows_.back();
    free_flows_.pop_back();
  } else {
    f = static_cast<std::int32_t>(flows_.size());
    flows_.emplace_back();
  }
  Flow& fl = flows_[f];
  const RankNet& a = net_[src];
  const RankNet& b = net_[dst];
  const bool local = opt_.sharing.local(src, dst);  // a copy within one GPU, not a link
  const bool intra = a.node == b.node;
  fl.remaining = static_cast<double>(works_[work]);
  fl.src_rank = src;
  fl.dst_rank = dst;
  fl.send_sid = send_sid;
  fl.recv_sid = recv_sid;
  fl.res[0] = local ? a.copy_out : intra ? a.link_out : a.nic_out;
  fl.res[1] = local ? b.copy_in : intra ? b.link_in : b.nic_in;
  const Nanos latency = local ? hw_.device_copy_link().latency_ns : intra ? hw_.nvlink.latency_ns : hw_.network.latency_ns;
  fl.solo = 0;
  if (latency > 0 && fl.remaining > 0 && resources_[fl.res[0]].flows.empty() && resources_[fl.res[1]].flows.empty()) {
    // No other flow on its resources: unless one arrives first, it will flow alone from the end of its
    // latency at the resources' bandwidth. It is registered now as a flow that started then, with the
    // completion that start_flow() and update_flow() would compute, and no LatencyDone event (a
    // quarter of all events at N = 128, two thirds of the transfers there and nearly all at N = 1024
    // begin alone). A flow that comes to one of its resources settles it first (settle()).
    fl.solo = 1;
    fl.last = now_ + latency;
    join_resources(f);
    fl.rate = std::min(resources_[fl.res[0]].share, resources_[fl.res[1]].share);
    ++fl.version;
    push(fl.last + ceil_ns(fl.remaining / fl.rate), EvType::FlowDone, f, fl.version);
    return;
  }
  if (latency > 0)
    push(now_ + latency, EvType::LatencyDone, f, 0);
  else
    start_flow(f);
}

// Adds flow f to the lists of its two resources and updates their fair shares.
void Simulation::join_resources(std::int32_t f) {
  Flow& fl = flows_[f];
  for (int i = 0; i < 2; ++i) {
    Resource& rs = resources_[fl.res[i]];
    fl.pos[i] = static_cast<std::int32_t>(rs.flows.size());
    rs.flows.push_back(f);
    rs.share = rs.bandwidth / static_cast<double>(rs.flows.size());
  }
}

// A solo flow (begin_transfer()) meets another flow on a resource. If its latency is over, it is an
// ordinary flow that started at `last` at the rate it has; otherwise it leaves the resources and
// starts as any flow when its latency ends.
void Simulation::settle(std::int32_t f) {
  Flow& fl = flows_[f];
  fl.solo = 0;
  if (fl.last <= now_) return;
  for (const std::int32_t r : fl.res) resources_[r].flows.pop_back();  // it is alone on them
  ++fl.version;  // its FlowDone is void
  push(fl.last, EvType::LatencyDone, f, 0);
}

void Simulation::start_flow(std::int32_t f) {
  Flow& fl = flows_[f];
  if (!(fl.remaining > 0)) {  // no bytes
    // Through the queue, not a direct call: completions never recurse into further completions.
    push(now_, EvType::TransferDone, f, 0);
    return;
  }
  const std::int32_t res[2] = {fl.res[0], fl.res[1]};
  for (const std::int32_t r : res) {  // a solo flow is the only one on its resources
    const auto& list = resources_[r].flows;
    if (list.size() == 1 && flows_[list[0]].solo) settle(list[0]);
  }
  fl.rate = 0;
  fl.last = now_;
  join_resources(f);
  for (const std::int32_t r : res)
    for (const std::int32_t other : resources_[r].flows)
      if (other != f) update_flow(other);
  update_flow(f);
}

// Recomputes a flow's rate from its resources' current counts; re-schedules it if the rate changed.
void Simulation::update_flow(std::int32_t f) {
  Flow& fl = flows_[f];
  const Resource& a = resources_[fl.res[0]];
  const Resource& b = resources_[fl.res[1]];
  const double rate = std::min(a.share, b.share);
  if (rate == fl.rate) return;
  if (fl.last != now_) {
    fl.remaining -= static_cast<double>(now_ - fl.last) * fl.rate;
    fl.last = now_;
  }
  fl.rate = rate;
  ++fl.version;
  push(now_ + ceil_ns(fl.remaining / rate), EvType::FlowDone, f, fl.version);
}

// Removes a finished flow from its resources and speeds up the flows that shared them.
void Simulation::end_flow(std::int32_t f) {
  Flow& fl = flows_[f];
  ++fl.version;
  const std::int32_t res[2] = {fl.res[0], fl.res[1]};
  const std::int32_t pos[2] = {fl.pos[0], fl.pos[1]};
  for (int i = 0; i < 2; ++i) {
    Resource& rs = resources_[res[i]];
    auto& list = rs.flows;
    const std::int32_t moved = list.back();
    list[pos[i]] = moved;
    list.pop_back();
    if (!list.empty()) rs.share = rs.bandwidth / static_cast<double>(list.size());
    if (moved != f) {
      Flow& m = flows_[moved];
      m.pos[m.res[0] == res[i] ? 0 : 1] = pos[i];
    }
  }
  for (const std::int32_t r : res)
    for (const std::int32_t other : resources_[r].flows) update_flow(other);
}

// The transfer's bytes have arrived: its send part and its receive part are done.
void Simulation::transfer_done(std::int32_t f) {
  const Flow& fl = flows_[f];
  const std::int32_t src = fl.src_rank, dst = fl.dst_rank, send_sid = fl.send_sid, recv_sid = fl.recv_sid;
  free_flows_.push_back(f);
  part_done(src, send_sid);
  part_done(dst, recv_sid);
}

void Simulation::part_done(std::int32_t rank, std::int32_t sid) {
  StreamState& st = streams_[sid];
  CPSCOPE_CHECK(st.parts > 0, "transfer part completed twice");
  if (--st.parts == 0) complete_op(rank, sid);
}

// ---------------------------------------------------------------------------------------------

SimResult Simulation::run() {
  setup();
  for (std::int32_t sid = 0; sid < static_cast<std::int32_t>(streams_.size()); ++sid)
    try_start(sid / static_cast<std::int32_t>(s_.streams.size()), sid);

  while (!queue_.empty()) {
    const auto [time, ev] = queue_.pop();
    now_ = time;
    switch (ev.type()) {
      case EvType::OpDone:
        complete_op(static_cast<std::int32_t>(ev.aux()), ev.index);
        break;
      case EvType::ComputeDone: {
        ComputeSlot& cs = slots_[ev.index];
        if ((cs.version & Event::kAuxMask) != ev.aux()) continue;  // stale: re-scheduled since
        const std::int32_t rank = cs.rank, sid = cs.sid;
        RankState& pool = ranks_[ranks_[rank].pool];
        pool.running.erase(std::find(pool.running.begin(), pool.running.end(), ev.index));
        ++cs.version;
        free_slots_.push_back(ev.index);
        retime(pool);
        complete_op(rank, sid);
        break;
      }
      case EvType::LatencyDone:
        start_flow(ev.index);
        break;
      case EvType::FlowDone: {
        const Flow& fl = flows_[ev.index];
        if ((fl.version & Event::kAuxMask) != ev.aux()) continue;
        end_flow(ev.index);
        transfer_done(ev.index);
        break;
      }
      case EvType::TransferDone:
        transfer_done(ev.index);
        break;
      case EvType::CollectiveDone: {
        const Collective& c = colls_[ev.index];
        const auto size = static_cast<std::int32_t>(s_.groups[c.group].size());
        for (std::int32_t i = 0; i < size; ++i) {
          const auto [sid, rank] = members_[c.member_base + i];
          complete_op(rank, sid);
        }
        break;
      }
    }
    ++events_;
  }
  if (done_ops_ != total_ops_) report_deadlock();

  if (times_) {
    Interval* iv = result_.timeline.intervals.data();
    for (std::int64_t g = 0; g < total_ops_; ++g) {
      iv[g].start = times_[g].start;
      iv[g].end = times_[g].end;
    }
  }
  result_.stats.ops_executed = done_ops_;
  result_.stats.events_processed = events_;
  result_.rank_end.resize(ranks_.size());
  result_.rank_busy.resize(ranks_.size());
  for (std::size_t r = 0; r < ranks_.size(); ++r) {
    const RankState& rs = ranks_[r];
    RankBusy& b = result_.rank_busy[r];  // flops and bytes_sent: filled by set-up
    b.first_start = rs.first_start;
    b.last_end = rs.last_end;
    b.compute_ns = rs.compute_ns;
    b.comm_ns = rs.comm_ns;
    b.exposed_comm_ns = rs.exposed_comm_ns;
    b.busy_ns = rs.busy_ns;
    result_.rank_end[r] = rs.last_end;
    result_.stats.makespan = std::max(result_.stats.makespan, rs.last_end);
  }
  return std::move(result_);
}

}  // namespace engine_detail

SimResult simulate(const Schedule& schedule, const HardwareProfile& hw, const SimOptions& options) {
  engine_detail::Simulation sim(schedule, hw, options);
  return sim.run();
}

}  // namespace cpscope
