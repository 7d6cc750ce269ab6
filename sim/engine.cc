// Discrete-event engine: runs a Schedule's per-rank programs against a HardwareProfile.
//
// Model (see sim/schedule.h for the IR semantics it executes):
//  - Streams are FIFOs: an op starts when it is at the head of its stream and every event it waits on
//    has been recorded (its recording op completed). One op runs per stream at a time.
//  - Compute ops (Attend, AttendBwd, DkvAdd, Layout) need CostModel::compute_ns of GPU time. Their
//    progress is fluid: with k compute ops running on a rank each advances at 1/k (concurrent kernels
//    share the SMs: two compute streams never give a GPU more than its rate), and while any
//    communication op (SendRecv or collective, from its start to its completion, as an NCCL kernel
//    occupies SMs while it waits for its peer) is in progress on the rank, at a further
//    1/comm_compute_interference. Whenever a rank's rate changes, the remaining work of its running
//    compute ops is brought up to date and their completions re-scheduled; stale completion events are
//    recognised by a per-slot version counter.
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
//    per node: under TpInner the interleaved groups mostly sit behind other NICs of the node.) A SendRecv op completes when its send and its
//    receive transfers have both completed (either may be absent).
//  - Collectives: the k-th collective on a group starts when every member has started its k-th
//    collective on that group; all members complete together CostModel::collective_ns later (inter-node
//    when the group spans nodes). A simplification: collectives count as communication for
//    interference but do not share link bandwidth with concurrent point-to-point flows.
//  - Deadlock: when no event is left and ops remain, InternalError names each rank's first blocked op
//    and what it waits for.
// Time is integer ns; events at equal times run in insertion order (sim/engine_queue.h), so a run is
// deterministic.
//
// Speed (a 1024-rank ring has ~6M ops): set-up reads each rank's ops into 40-byte OpRecs (durations
// from the cost model memoised by shape, transfers and collectives matched) laid out stream by stream,
// so a stream's ops are adjacent and the event loop walks memory sequentially instead of touching the
// 176-byte Ops; timeline intervals are pre-filled in the same order with their names while the ops
// are in cache, and the loop records only 16-byte start/end pairs. The event queue is a radix heap
// (sim/engine_queue.h). Fair sharing updates only the flows of the resources a starting or ending
// flow uses. The big arrays are advised as huge pages. No per-op allocation, no std::map.
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
  if (st.busy || st.head == st.end) return;
  const std::int32_t g = st.first + st.head;
  const OpRec& rec = recs_[g];
  for (const std::int32_t e : rec.wait) {
    if (e == kNone || recorded(e)) continue;
    st.waiting_on = e;  // record_event() looks for it among the rank's streams
    return;
  }
  st.busy = true;
  // The stream's next record is needed when this op completes: fetch it while the op runs.
  if (st.head + 1 < st.end) __builtin_prefetch(&recs_[g + 1]);
  start_op(rank, g);
}

void Simulation::start_op(std::int32_t rank, std::int32_t g) {
  OpRec& rec = recs_[g];
  rec.status = kRunning;
  if (times_) times_[g].start = now_;
  switch (rec.kind) {
    case OpKind::Attend:
    case OpKind::AttendBwd:
    case OpKind::DkvAdd:
    case OpKind::Layout: {
      RankState& r = ranks_[rank];
      advance(r);
      std::int32_t slot;
      if (!free_slots_.empty()) {
        slot = free_slots_.back();
        free_slots_.pop_back();
      } else {
        slot = static_cast<std::int32_t>(slots_.size());
        slots_.emplace_back();
      }
      ComputeSlot& cs = slots_[slot];
      cs.remaining = static_cast<double>(rec.work);
      cs.last = now_;
      cs.op = g;
      cs.rank = rank;
      r.running.push_back(slot);
      reschedule(rank);
      break;
    }
    case OpKind::SendRecv: {
      comm_begin(rank);
      const bool has_send = rec.send_peer != kNone, has_recv = rec.recv_peer != kNone;
      rec.parts_left = static_cast<std::uint8_t>(has_send + has_recv);
      if (rec.parts_left == 0) {
        push(now_, EvType::OpDone, g, static_cast<std::uint32_t>(rank));
        break;
      }
      if (has_send && ++rec.send_ready == 2) begin_transfer(g, rank);
      if (has_recv && rec.match_recv != kNone) {
        OpRec& sender = recs_[rec.match_recv];
        if (++sender.send_ready == 2) begin_transfer(rec.match_recv, rec.recv_peer);
      }
      break;
    }
    case OpKind::AllGather:
    case OpKind::AllToAll:
    case OpKind::ReduceScatter: {
      comm_begin(rank);
      Collective& c = colls_[rec.match_send];
      members_[c.member_base + c.arrived] = {g, rank};
      if (++c.arrived == static_cast<std::int32_t>(s_.groups[c.group].size())) {
        const Op& op = op_of(rank, g);
        const Nanos dur = cost_.collective_ns(op, placements_[c.group], group_nic_sharing_[c.group]);
        push(now_ + dur, EvType::CollectiveDone, rec.match_send, 0);
      }
      break;
    }
  }
}

void Simulation::complete_op(std::int32_t rank, std::int32_t g) {
  OpRec& rec = recs_[g];
  rec.status = kDone;
  ++done_ops_;
  if (is_comm(rec.kind)) comm_end(rank);
  if (times_) times_[g].end = now_;
  result_.rank_end[rank] = std::max(result_.rank_end[rank], now_);
  const std::int32_t sid = ranks_[rank].stream_base + rec.stream;
  StreamState& st = streams_[sid];
  CPSCOPE_CHECK(st.busy && st.first + st.head == g,
                fmt::format("rank {} op {} completed but is not running at the head of its stream", rank, local_[g]));
  st.busy = false;
  ++st.head;
  if (rec.record != kNone) record_event(rank, rec.record);
  try_start(rank, sid);
}

// Marks the event recorded and starts the ops of this rank's streams that were blocked on it. (A
// rank has a handful of streams: scanning them is cheaper than keeping waiter lists per event.)
void Simulation::record_event(std::int32_t rank, std::int32_t e) {
  recorded_[static_cast<std::size_t>(e) >> 6] |= std::uint64_t{1} << (e & 63);
  const std::int32_t base = ranks_[rank].stream_base;
  const auto num_streams = static_cast<std::int32_t>(s_.streams.size());
  for (std::int32_t sid = base; sid < base + num_streams; ++sid) {
    if (streams_[sid].waiting_on != e) continue;
    streams_[sid].waiting_on = kNone;
    try_start(rank, sid);
  }
}

// ---------------------------------------------------------------------------------------------
// Compute progress (fluid, processor sharing, interference).

void Simulation::advance(RankState& r) {
  for (const std::int32_t slot : r.running) {
    ComputeSlot& cs = slots_[slot];
    if (cs.last != now_) {
      cs.remaining -= static_cast<double>(now_ - cs.last) / r.slowdown;
      cs.last = now_;
    }
  }
}

// Sets the rank's slowdown from its current counts and re-schedules every running compute op. The
// caller has brought their remaining work up to `now_` with the previous slowdown (advance()).
void Simulation::reschedule(std::int32_t rank) {
  RankState& r = ranks_[rank];
  const double k = static_cast<double>(std::max<std::size_t>(1, r.running.size()));
  r.slowdown = k * (r.comm_active > 0 ? hw_.comm_compute_interference : 1.0);
  for (const std::int32_t slot : r.running) {
    ComputeSlot& cs = slots_[slot];
    ++cs.version;
    push(now_ + ceil_ns(cs.remaining * r.slowdown), EvType::ComputeDone, slot, cs.version);
  }
}

void Simulation::comm_begin(std::int32_t rank) {
  RankState& r = ranks_[rank];
  if (r.comm_active++ == 0 && hw_.comm_compute_interference != 1.0) {
    advance(r);  // with the slowdown that held until now
    reschedule(rank);
  }
}

void Simulation::comm_end(std::int32_t rank) {
  RankState& r = ranks_[rank];
  CPSCOPE_CHECK(r.comm_active > 0, "communication count underflow");
  if (--r.comm_active == 0 && hw_.comm_compute_interference != 1.0) {
    advance(r);
    reschedule(rank);
  }
}

// ---------------------------------------------------------------------------------------------
// Transfers: latency, then a flow that shares its resources fairly.

void Simulation::begin_transfer(std::int32_t send_op, std::int32_t src_rank) {
  const bool intra = ranks_[src_rank].node == ranks_[recs_[send_op].send_peer].node;
  const Nanos latency = intra ? hw_.nvlink.latency_ns : hw_.network.latency_ns;
  if (latency > 0)
    push(now_ + latency, EvType::LatencyDone, send_op, static_cast<std::uint32_t>(src_rank));
  else
    start_flow(send_op, src_rank);
}

void Simulation::start_flow(std::int32_t send_op, std::int32_t src_rank) {
  const OpRec& rec = recs_[send_op];
  if (rec.work <= 0) {
    // Through the queue, not a direct call: completions never recurse into further completions.
    push(now_, EvType::TransferDone, send_op, static_cast<std::uint32_t>(src_rank));
    return;
  }
  const RankState& src = ranks_[src_rank];
  const RankState& dst = ranks_[rec.send_peer];
  const bool intra = src.node == dst.node;
  std::int32_t f;
  if (!free_flows_.empty()) {
    f = free_flows_.back();
    free_flows_.pop_back();
  } else {
    f = static_cast<std::int32_t>(flows_.size());
    flows_.emplace_back();
  }
  std::int32_t res[2];
  {
    Flow& fl = flows_[f];
    fl.remaining = static_cast<double>(rec.work);
    fl.rate = 0;
    fl.last = now_;
    fl.send_op = send_op;
    fl.src_rank = src_rank;
    fl.res[0] = res[0] = intra ? src.link_out : src.nic_out;
    fl.res[1] = res[1] = intra ? dst.link_in : dst.nic_in;
    for (int i = 0; i < 2; ++i) {
      auto& list = resources_[res[i]].flows;
      fl.pos[i] = static_cast<std::int32_t>(list.size());
      list.push_back(f);
    }
  }
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
  const double rate = std::min(a.bandwidth / static_cast<double>(a.flows.size()),
                               b.bandwidth / static_cast<double>(b.flows.size()));
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
    auto& list = resources_[res[i]].flows;
    const std::int32_t moved = list.back();
    list[pos[i]] = moved;
    list.pop_back();
    if (moved != f) {
      Flow& m = flows_[moved];
      m.pos[m.res[0] == res[i] ? 0 : 1] = pos[i];
    }
  }
  free_flows_.push_back(f);
  for (const std::int32_t r : res)
    for (const std::int32_t other : resources_[r].flows) update_flow(other);
}

void Simulation::transfer_done(std::int32_t send_op, std::int32_t src_rank) {
  const OpRec& rec = recs_[send_op];
  const std::int32_t recv_op = rec.match_send, dst = rec.send_peer;
  part_done(src_rank, send_op);
  part_done(dst, recv_op);
}

void Simulation::part_done(std::int32_t rank, std::int32_t g) {
  OpRec& rec = recs_[g];
  CPSCOPE_CHECK(rec.parts_left > 0, "transfer part completed twice");
  if (--rec.parts_left == 0) complete_op(rank, g);
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
        const std::int32_t rank = cs.rank, g = cs.op;
        RankState& r = ranks_[rank];
        advance(r);
        r.running.erase(std::find(r.running.begin(), r.running.end(), ev.index));
        ++cs.version;
        free_slots_.push_back(ev.index);
        reschedule(rank);
        complete_op(rank, g);
        break;
      }
      case EvType::LatencyDone:
        start_flow(ev.index, static_cast<std::int32_t>(ev.aux()));
        break;
      case EvType::FlowDone: {
        const Flow& fl = flows_[ev.index];
        if ((fl.version & Event::kAuxMask) != ev.aux()) continue;
        const std::int32_t send_op = fl.send_op, src = fl.src_rank;
        end_flow(ev.index);
        transfer_done(send_op, src);
        break;
      }
      case EvType::TransferDone:
        transfer_done(ev.index, static_cast<std::int32_t>(ev.aux()));
        break;
      case EvType::CollectiveDone: {
        const Collective& c = colls_[ev.index];
        const auto size = static_cast<std::int32_t>(s_.groups[c.group].size());
        for (std::int32_t i = 0; i < size; ++i) {
          const auto [g, rank] = members_[c.member_base + i];
          complete_op(rank, g);
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
  for (const Nanos t : result_.rank_end) result_.stats.makespan = std::max(result_.stats.makespan, t);
  return std::move(result_);
}

}  // namespace engine_detail

SimResult simulate(const Schedule& schedule, const HardwareProfile& hw, const SimOptions& options) {
  engine_detail::Simulation sim(schedule, hw, options);
  return sim.run();
}

}  // namespace cpscope
