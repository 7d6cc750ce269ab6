// Executor: IR op -> backend calls. The operand conventions are the generators' (sim/schedule.cc):
//  Attend      reads Q and the K/V tensor named by Op::send; merges into O/LSE (stable LSE update).
//  AttendBwd   reads Q, O, LSE, dO and the K/V of Op::send; adds into dQ; adds the block's dK/dV into
//              the tensor of Op::recv, or into the dkv scratch when Op::recv is empty. A destination in
//              the input dtype (allgather --dkv input) takes them through the fp32 dkv stage: zero the
//              block's rows and KV heads there, attend, add them (converting) into the destination.
//  DkvAdd      adds the dkv scratch into the dK/dV of Op::recv (the dK/dV planes of a packed slot).
//  Layout      Op::send -> Op::recv: allgather's gathered K/V from rank order to token order (and its
//              dK/dV back), or TransformerEngine's copy of the saved K/V block into packed slot 0; with
//              buffer DQKV, Ulysses' sum of the KV-head copies (DkvReplicas) into the dK/dV output.
//  SendRecv    moves the slots of Op::send / Op::recv; a packed [K/V; dK/dV] message carries its K/V
//              half when step <= R-2 and its dK/dV half when step >= 1.
//  AllGather   rank's K/V input (the op's head group) -> the gathered slot of Op::recv, rank order.
//  ReduceScatter the gathered-range dK/dV of Op::send -> the rank's dK/dV output (head group).
//  AllToAll    by Op::buffer: QKV, O, DO, DQKV (hybrid.cc): per peer, the head slice it owns (with KV
//              heads repeated, r = U/Hkv: peer v's K/V is input head v/r, and its dK/dV returns copy v % r).
// Fills that start a pass (the IR's "accumulators start empty"): the forward sets O = 0 and LSE = -inf
// with its first compute-stream op (after that op's waits); the backward zero-fills dQ, the ring's dK/dV
// accumulators and the dK/dV halves of packed slots. A dK/dV destination that attention adds into directly (no ring: R = 1, allgather)
// is zero-filled right before the first AttendBwd that writes it, and again after a collective has
// consumed it, so a reused slot starts empty.
// Every transfer's byte count is checked against the tensors it moves (element size: fp32 for Acc
// tensors, the workload dtype otherwise), and a collective's Op::staged_send/recv against the messages that are
// not one span of their tensor (RankLayout::one_span, the rule the CUDA transports pack and unpack by),
// so the runtime cannot silently move or copy other data than the simulator times. Likewise every fill
// (and the dkv stage's converting add) against the op's Op::fills and fill_bytes.
#include "runtime/executor.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>

#include <fmt/format.h>

#include "sim/error.h"

namespace cpscope::rt {

namespace {
Region plane_of(Region r, std::int32_t p) {
  r.plane += p;
  r.planes = 1;
  return r;
}

// `x` as one collective per plane: its single region (`one`) and its per-member regions (`many`), every
// one narrowed to the same plane.
template <class Args, Region Args::*one, std::vector<Region> Args::*many>
std::vector<Args> split_planes(const Args& x, const char* what) {
  std::vector<Args> out;
  const std::int32_t planes = (x.*one).planes;
  for (std::int32_t p = 0; p < planes; ++p) {
    Args a = x;
    a.*one = plane_of(x.*one, p);
    for (Region& r : a.*many) {
      CPSCOPE_CHECK(r.planes == planes, fmt::format("{}: the member regions' planes differ from the rank's", what));
      r = plane_of(r, p);
    }
    out.push_back(std::move(a));
  }
  return out;
}
}  // namespace

std::vector<AllGatherArgs> per_plane(const AllGatherArgs& x) {
  return split_planes<AllGatherArgs, &AllGatherArgs::src, &AllGatherArgs::dst>(x, "all-gather");
}

std::vector<ReduceScatterArgs> per_plane(const ReduceScatterArgs& x) {
  return split_planes<ReduceScatterArgs, &ReduceScatterArgs::dst, &ReduceScatterArgs::src>(x, "reduce-scatter");
}

std::vector<SplitLayer> split_layers(const Schedule& schedule) {
  std::set<std::pair<std::int32_t, std::int32_t>> used;  // (stream, group), ordered
  for (const RankProgram& prog : schedule.ranks)
    for (const Op& op : prog.ops)
      if (op.group >= 0 &&
          (op.kind == OpKind::AllGather || op.kind == OpKind::ReduceScatter || op.kind == OpKind::AllToAll))
        used.insert({op.stream, op.group});
  std::vector<SplitLayer> out;
  std::vector<std::vector<char>> taken;  // per layer: its groups' ranks
  for (const auto& [stream, group] : used) {
    const auto& members = schedule.groups.at(static_cast<std::size_t>(group));
    auto fits = [&](std::size_t l) {
      return out[l].stream == stream && std::none_of(members.begin(), members.end(), [&](std::int32_t r) {
               return taken[l].at(static_cast<std::size_t>(r)) != 0;
             });
    };
    std::size_t l = 0;
    while (l < out.size() && !fits(l)) ++l;
    if (l == out.size()) {
      out.push_back({stream, {}});
      taken.emplace_back(schedule.ranks.size(), 0);
    }
    out[l].groups.push_back(group);
    for (std::int32_t r : members) taken[l].at(static_cast<std::size_t>(r)) = 1;
  }
  return out;
}

Executor::Executor(const Schedule& schedule, std::int32_t rank, Backend& backend)
    : schedule_(schedule), rank_(rank), backend_(backend), layout_(schedule.workload, rank) {
  const Workload& w = schedule.workload;
  CPSCOPE_CHECK(rank >= 0 && static_cast<std::size_t>(rank) < schedule.ranks.size(), "rank out of range");
  gqa_ratio_ = layout_.attention_gqa_ratio();
  scale_ = 1.0 / std::sqrt(static_cast<double>(w.head_dim));
  if (w.schedule == ScheduleKind::AllGather && w.cp > 1) {
    // Row i of the token-ordered slot is token i; rank order is the ranks' sequence layouts concatenated.
    std::vector<std::int64_t> rank_order;
    for (std::int64_t r = 0; r < w.cp; ++r) {
      const auto t = seq_tokens(w, r);
      rank_order.insert(rank_order.end(), t.begin(), t.end());
    }
    to_global_.assign(rank_order.size(), -1);
    for (std::size_t j = 0; j < rank_order.size(); ++j) to_global_[static_cast<std::size_t>(rank_order[j])] =
        static_cast<std::int64_t>(j);
    to_rank_order_ = std::move(rank_order);
  }
}

void Executor::allocate() {
  const RankProgram& prog = schedule_.ranks[static_cast<std::size_t>(rank_)];
  backend_.allocate(layout_, static_cast<std::int32_t>(schedule_.streams.size()), prog.num_events);
  for (const auto* map : {&to_global_, &to_rank_order_})
    if (!map->empty()) backend_.prepare_row_map(*map);
}

std::int64_t Executor::region_bytes(const Region& r) const {
  const TensorDesc& d = layout_.desc(r.tensor);
  const std::int64_t elem = d.precision == Precision::Acc ? 4 : schedule_.workload.elem_bytes();
  return r.elements(schedule_.workload.batch, d.dim) * elem;
}

Region Executor::whole(TensorId t, std::int32_t plane, std::int32_t planes) const {
  const TensorDesc& d = layout_.desc(t);
  CPSCOPE_CHECK(d.used, fmt::format("rank {}: tensor {} is not allocated", rank_, to_string(t)));
  return Region{t, plane, planes < 0 ? d.planes - plane : planes, 0, d.rows, 0, d.heads};
}

Region Executor::rows(TensorId t, std::int64_t row, std::int64_t count, std::int32_t plane,
                      std::int32_t planes) const {
  Region r = whole(t, plane, planes);
  CPSCOPE_CHECK(row >= 0 && row + count <= r.rows, fmt::format("rows [{}, {}) of {} ({} rows)", row, row + count,
                                                               to_string(t), r.rows));
  r.row = row;
  r.rows = count;
  return r;
}

Region Executor::heads(TensorId t, std::int32_t head, std::int32_t count, std::int32_t plane,
                       std::int32_t planes) const {
  Region r = whole(t, plane, planes);
  CPSCOPE_CHECK(head >= 0 && head + count <= r.heads, fmt::format("heads [{}, {}) of {} ({} heads)", head,
                                                                  head + count, to_string(t), r.heads));
  r.head = head;
  r.heads = count;
  return r;
}

void Executor::count_message(StagingCount& c, const std::vector<Region>& rs, std::int64_t bytes, bool send) const {
  std::int64_t elements = 0;
  for (const Region& r : rs) elements += r.elements(schedule_.workload.batch, layout_.desc(r.tensor).dim);
  if (elements == 0 || layout_.one_span(rs, bytes / elements)) return;
  (send ? c.send : c.recv) += bytes;
  c.copies += static_cast<std::int32_t>(rs.size());
}

void Executor::count_members(StagingCount& c, const std::vector<Region>& rs, std::int64_t P, bool send) const {
  if (rs.empty()) return;
  const Region& first = rs[0];
  const std::int64_t elements = first.elements(schedule_.workload.batch, layout_.desc(first.tensor).dim);
  bool in_place = elements > 0;
  for (std::size_t i = 0; i < rs.size() && in_place; ++i)
    in_place = layout_.one_span({rs[i]}, P / elements) && rs[i].tensor == first.tensor &&
               rs[i].plane == first.plane && rs[i].row == first.row + static_cast<std::int64_t>(i) * first.rows;
  if (in_place) return;
  (send ? c.send : c.recv) += static_cast<std::int64_t>(rs.size()) * P;
  c.copies += static_cast<std::int32_t>(rs.size());
}

void Executor::check_staging(const Op& op, const StagingCount& c) const {
  CPSCOPE_CHECK(c.send == op.staged_send && c.recv == op.staged_recv && c.copies == op.staged_copies,
                fmt::format("rank {} op {} ({}): the IR stages {} + {} bytes (send + receive) in {} copies, the "
                            "tensors need {} + {} in {}",
                            rank_, op.id, op_name(op), op.staged_send, op.staged_recv, op.staged_copies, c.send,
                            c.recv, c.copies));
}

void Executor::fill(const Op& op, const Region& r, double value) {
  backend_.fill(op, op.stream, r, value);
  // A fill writes each contiguous run of the region with one kernel (CudaBackend::fill_region): whole rows
  // of every head are one run across batch entries and planes; part of the rows, one per plane and batch
  // entry; part of the heads, one per row of those too. (LSE tensors, stored heads-major, are only
  // filled whole.)
  const TensorDesc& d = layout_.desc(r.tensor);
  const std::int64_t batch = schedule_.workload.batch;
  const std::int64_t kernels = r.heads < d.heads ? r.planes * batch * r.rows : r.rows < d.rows ? r.planes * batch : 1;
  count_kernel(region_bytes(r), kernels);
}

void Executor::copy(const Op& op, const Region& src, const Region& dst, bool add,
                    const std::vector<std::int64_t>& row_map, bool is_op, std::int64_t bytes) {
  backend_.copy(op, op.stream, src, dst, add, row_map);
  auto overlap = [](std::int64_t a, std::int64_t an, std::int64_t b, std::int64_t bn) { return a < b + bn && b < a + an; };
  const bool in_place = layout_.storage(src.tensor) == layout_.storage(dst.tensor) &&
                        overlap(src.plane, src.planes, dst.plane, dst.planes) &&
                        overlap(src.row, src.rows, dst.row, dst.rows) && overlap(src.head, src.heads, dst.head, dst.heads);
  count_kernel(bytes, src.planes * (in_place ? 2 : 1) - (is_op ? 1 : 0));
}

void Executor::count_kernel(std::int64_t bytes, std::int64_t kernels) {
  fills_ += kernels;
  fill_bytes_ += bytes;
}

void Executor::check_fills(const Op& op) const {
  CPSCOPE_CHECK(fills_ == op.fills && fill_bytes_ == op.fill_bytes,
                fmt::format("rank {} op {} ({}): the IR fills {} bytes in {} kernels before the op, the executor {} in {}",
                            rank_, op.id, op_name(op), op.fill_bytes, op.fills, fill_bytes_, fills_));
}

void Executor::fill_if_fresh(const Op& op, TensorId t, std::int32_t plane, std::int32_t planes) {
  const TensorId s = layout_.storage(t);
  if (!fresh_[static_cast<int>(s)]) return;
  fill(op, whole(t, plane, planes), 0.0);
  fresh_[static_cast<int>(s)] = false;
}

// `first`: the pass's first op on the compute stream (0), after its waits; the fills are its own.
void Executor::begin_pass(const Op& first) {
  CPSCOPE_CHECK(first.stream == 0, "pass fills on a stream other than compute");
  fresh_.fill(false);
  if (first.pass == OpPass::Fwd) {
    fill(first, whole(TensorId::O), 0.0);
    fill(first, whole(TensorId::Lse), -std::numeric_limits<double>::infinity());
    return;
  }
  fill(first, whole(TensorId::Dq), 0.0);
  delta_ready_ = false;
  const Workload& w = schedule_.workload;
  const bool ring = w.schedule != ScheduleKind::AllGather && layout_.ring_size() > 1;
  for (TensorId t : {TensorId::Dkv0, TensorId::Dkv1}) {
    if (!layout_.desc(t).used) continue;
    if (ring)
      fill(first, whole(t), 0.0);
    else
      fresh_[static_cast<int>(layout_.storage(t))] = true;
  }
  for (TensorId t : {TensorId::KvDkv0, TensorId::KvDkv1})
    if (layout_.desc(t).used) fill(first, whole(t, 2, 2), 0.0);
}

AttendArgs Executor::attend_args(const Op& op) const {
  const AttnBlock& b = op.attn;
  AttendArgs a;
  a.kv = layout_.operand(op.send.buffer, op.send.slot);
  const TensorDesc& q = layout_.desc(TensorId::Q);
  const TensorDesc& kv = layout_.desc(a.kv);
  a.q_off = b.q_off;
  a.q_len = b.q_len;
  a.kv_off = b.kv_off;
  a.kv_len = b.kv_len;
  a.head_begin = b.head_begin - q.head_base;
  a.head_count = b.head_count;
  a.gqa_ratio = gqa_ratio_;
  // KV tensor head of Q-tensor head h: (h + q_base) / ratio - kv_base; q_base is a multiple of ratio.
  CPSCOPE_CHECK(q.head_base % gqa_ratio_ == 0, "Q tensor head base is not a multiple of the GQA ratio");
  a.kv_head_shift = layout_.kv_head_base(a.kv, op) - q.head_base / gqa_ratio_;
  a.causal = b.mask == AttnMask::Causal;
  a.causal_offset = b.causal_offset;
  a.scale = scale_;
  const auto where = [&] { return fmt::format("rank {} op {} ({})", rank_, op.id, op_name(op)); };
  CPSCOPE_CHECK(b.mask != AttnMask::None, where() + ": attention without a mask");
  CPSCOPE_CHECK(a.head_begin >= 0 && a.head_begin + a.head_count <= q.heads, where() + ": heads outside Q");
  CPSCOPE_CHECK(a.q_off >= 0 && a.q_off + a.q_len <= q.rows, where() + ": rows outside Q");
  CPSCOPE_CHECK(a.kv_off >= 0 && a.kv_off + a.kv_len <= kv.rows, where() + ": rows outside K/V");
  const std::int32_t kv_first = a.head_begin / gqa_ratio_ - a.kv_head_shift;
  const std::int32_t kv_last = (a.head_begin + a.head_count - 1) / gqa_ratio_ - a.kv_head_shift;
  CPSCOPE_CHECK(kv_first >= 0 && kv_last < kv.heads, where() + ": KV heads outside the K/V tensor");
  return a;
}

void Executor::issue() {
  const RankProgram& prog = schedule_.ranks[static_cast<std::size_t>(rank_)];
  bool started[2] = {false, false};
  for (const Op& op : prog.ops) {
    const int p = op.pass == OpPass::Fwd ? 0 : 1;
    for (std::int32_t e : op.wait)
      if (e != kNoEvent) backend_.wait_event(op, op.stream, e);
    fills_ = 0;
    fill_bytes_ = 0;
    if (!started[p] && op.stream == 0) {
      started[p] = true;
      begin_pass(op);
    }
    issue_op(op);
    check_fills(op);
    if (op.record != kNoEvent) backend_.record_event(op, op.stream, op.record);
  }
}

void Executor::issue_op(const Op& op) {
  const Workload& w = schedule_.workload;
  const auto where = [&] { return fmt::format("rank {} op {} ({})", rank_, op.id, op_name(op)); };
  const std::int32_t st = op.stream;
  switch (op.kind) {
    case OpKind::Attend:
      backend_.attend_fwd(op, st, attend_args(op), true);
      return;
    case OpKind::AttendBwd: {
      AttendArgs a = attend_args(op);
      if (op.recv.buffer == BufferKind::None) {
        a.dkv = TensorId::DkvScratch;
        fill(op, whole(TensorId::DkvScratch), 0.0);
      } else {
        CPSCOPE_CHECK(op.recv.buffer == BufferKind::DKV, where() + ": dK/dV destination is not a DKV slot");
        a.dkv = layout_.operand(op.recv.buffer, op.recv.slot);
        fill_if_fresh(op, a.dkv, 0, 2);
      }
      const TensorDesc& d = layout_.desc(a.dkv);
      const std::int32_t first = a.head_begin / a.gqa_ratio - a.kv_head_shift;
      // The destination's KV heads must line up with the K/V tensor's (same head base).
      CPSCOPE_CHECK(layout_.kv_head_base(a.dkv, op) == layout_.kv_head_base(a.kv, op) && first >= 0 &&
                        d.rows == layout_.desc(a.kv).rows,
                    where() + ": dK/dV destination does not match the K/V it differentiates");
      if (!delta_ready_) {  // counted as a fill: one kernel reading O and dO, writing a float per row and head
        backend_.prepare_backward(op, st, a);
        delta_ready_ = true;
        count_kernel(region_bytes(whole(a.o)) + region_bytes(whole(a.dout)) + region_bytes(whole(a.lse)));
      }
      if (layout_.desc(layout_.storage(a.dkv)).precision == Precision::Acc) {
        backend_.attend_bwd(op, st, a);
        return;
      }
      // A destination in the input dtype (allgather --dkv input): attention adds in fp32, so the
      // block's dK/dV go to the fp32 stage (only the block's key rows and KV heads are zeroed), which is
      // then added, converting, into the destination, a kernel per plane. All count with the op's fills.
      const std::int32_t last = (a.head_begin + a.head_count - 1) / a.gqa_ratio - a.kv_head_shift;
      const Region block{TensorId::DkvStage, 0, 2, a.kv_off, a.kv_len, first, last - first + 1};
      Region into = block;
      into.tensor = a.dkv;
      into.plane = a.dkv_plane;
      CPSCOPE_CHECK(layout_.desc(TensorId::DkvStage).used &&
                        layout_.kv_head_base(TensorId::DkvStage, op) == layout_.kv_head_base(a.dkv, op),
                    where() + ": a dK/dV destination in the input dtype without its fp32 stage");
      fill(op, block, 0.0);
      a.dkv = TensorId::DkvStage;
      a.dkv_plane = 0;
      backend_.attend_bwd(op, st, a);
      copy(op, block, into, true, {}, false, region_bytes(block) + region_bytes(into));
      return;
    }
    // A copy that is the op: the op counts one kernel writing its bytes, copy() the rest with its fills.
    case OpKind::DkvAdd: {
      const TensorId dst = layout_.operand(op.recv.buffer, op.recv.slot);
      const std::int32_t plane = op.recv.buffer == BufferKind::KvDkv ? 2 : 0;
      copy(op, whole(TensorId::DkvScratch), whole(dst, plane, 2), true, {}, true, 0);
      return;
    }
    case OpKind::Layout: {
      if (op.buffer == BufferKind::DQKV) {  // Ulysses: add copies 1..r-1 of each KV head's dK/dV into the output
        const std::int64_t r = layout_.kv_replicas();
        CPSCOPE_CHECK(r > 1, where() + ": a replica sum without KV-head replicas");
        const auto hkv = static_cast<std::int32_t>(w.kv_heads);
        for (std::int64_t i = 1; i < r; ++i) {
          const Region out = whole(TensorId::DkvOut);
          copy(op, heads(TensorId::DkvReplicas, static_cast<std::int32_t>((i - 1) * hkv), hkv), out, true, {}, i == 1,
               i == 1 ? 0 : region_bytes(out));
        }
        return;
      }
      const TensorId src = layout_.operand(op.send.buffer, op.send.slot);
      const TensorId dst = layout_.operand(op.recv.buffer, op.recv.slot);
      if (op.send.buffer == BufferKind::KV && op.recv.buffer == BufferKind::KvDkv) {
        copy(op, whole(src), whole(dst, 0, 2), false, {}, true, 0);  // TE: saved K/V -> packed slot 0
        return;
      }
      CPSCOPE_CHECK(src == dst && !to_global_.empty(), where() + ": unknown layout");
      const bool forward = op.send.buffer == BufferKind::KV;
      // In place through the scratch buffer: its bytes are written twice.
      copy(op, whole(src), whole(dst), false, forward ? to_global_ : to_rank_order_, true, region_bytes(whole(dst)));
      return;
    }
    case OpKind::SendRecv: {
      ExchangeArgs x;
      x.channel = op.send.peer >= 0 ? op.send.channel : op.recv.channel;
      const std::int64_t R = layout_.ring_size();
      auto regions = [&](const Transfer& t) {
        const TensorId id = layout_.operand(t.buffer, t.slot);
        if (t.buffer != BufferKind::KvDkv) return std::vector<Region>{whole(id)};
        const bool kv = op.step <= R - 2;
        const bool dkv = op.step >= 1;
        return std::vector<Region>{whole(id, kv ? 0 : 2, kv && dkv ? 4 : 2)};
      };
      auto check = [&](const Transfer& t, const std::vector<Region>& rs) {
        std::int64_t bytes = 0;
        for (const Region& r : rs) bytes += region_bytes(r);
        CPSCOPE_CHECK(bytes == t.bytes, fmt::format("{}: the IR moves {} bytes, the tensors hold {}", where(), t.bytes,
                                                    bytes));
      };
      if (op.send.peer >= 0) {
        x.sends.push_back({op.send.peer, regions(op.send)});
        check(op.send, x.sends.back().regions);
      }
      if (op.recv.peer >= 0) {
        x.recvs.push_back({op.recv.peer, regions(op.recv)});
        check(op.recv, x.recvs.back().regions);
      }
      StagingCount staged;
      for (const Part& p : x.sends) count_message(staged, p.regions, op.send.bytes, true);
      for (const Part& p : x.recvs) count_message(staged, p.regions, op.recv.bytes, false);
      check_staging(op, staged);
      backend_.exchange(op, st, x);
      return;
    }
    case OpKind::AllGather: {
      const auto& members = schedule_.groups.at(static_cast<std::size_t>(op.group));
      AllGatherArgs x;
      x.group = op.group;
      x.members = members;
      x.position = static_cast<std::int32_t>(std::find(members.begin(), members.end(), rank_) - members.begin());
      const TensorId dst = layout_.operand(op.recv.buffer, op.recv.slot);
      const std::int32_t hk = layout_.desc(dst).heads;
      x.src = heads(TensorId::KvIn, op.step * hk, hk);
      const std::int64_t s = w.local_tokens();
      for (std::size_t i = 0; i < members.size(); ++i)
        x.dst.push_back(rows(dst, static_cast<std::int64_t>(i) * s, s));
      const std::int64_t per_peer = region_bytes(x.dst[0]);
      CPSCOPE_CHECK(per_peer == op.bytes_per_peer, fmt::format("{}: the IR gathers {} bytes per peer, the tensors {}",
                                                               where(), op.bytes_per_peer, per_peer));
      StagingCount staged;  // the CUDA transports gather plane by plane
      for (const AllGatherArgs& p : per_plane(x)) {
        const std::int64_t P = region_bytes(p.src);
        count_message(staged, {p.src}, P, true);
        count_members(staged, p.dst, P, false);
      }
      check_staging(op, staged);
      backend_.all_gather(op, st, x);
      return;
    }
    case OpKind::ReduceScatter: {
      const auto& members = schedule_.groups.at(static_cast<std::size_t>(op.group));
      ReduceScatterArgs x;
      x.group = op.group;
      x.members = members;
      x.position = static_cast<std::int32_t>(std::find(members.begin(), members.end(), rank_) - members.begin());
      const TensorId src = layout_.operand(op.send.buffer, op.send.slot);
      const std::int32_t hk = layout_.desc(src).heads;
      const std::int64_t s = w.local_tokens();
      for (std::size_t i = 0; i < members.size(); ++i)
        x.src.push_back(rows(src, static_cast<std::int64_t>(i) * s, s));
      x.dst = heads(TensorId::DkvOut, op.step * hk, hk);
      const std::int64_t per_peer = region_bytes(x.src[0]);
      CPSCOPE_CHECK(per_peer == op.bytes_per_peer, fmt::format("{}: the IR reduces {} bytes per peer, the tensors {}",
                                                               where(), op.bytes_per_peer, per_peer));
      StagingCount staged;  // the CUDA transports reduce plane by plane
      for (const ReduceScatterArgs& p : per_plane(x)) {
        const std::int64_t P = region_bytes(p.src[0]);
        count_members(staged, p.src, P, true);
        count_message(staged, {p.dst}, P, false);
      }
      check_staging(op, staged);
      backend_.reduce_scatter(op, st, x);
      fresh_[static_cast<int>(layout_.storage(src))] = true;
      return;
    }
    case OpKind::AllToAll: {
      const auto& members = schedule_.groups.at(static_cast<std::size_t>(op.group));
      ExchangeArgs x;
      x.channel = 2 + op.group;
      x.group = op.group;
      const std::int64_t s = w.local_tokens();
      const std::int32_t hq = layout_.desc(TensorId::Q).heads;
      const std::int32_t hk = layout_.desc(TensorId::Kv0).heads;
      for (std::size_t i = 0; i < members.size(); ++i) {
        const std::int32_t peer = members[i];
        const auto v = static_cast<std::int32_t>(i);
        const std::int64_t row = v * s;
        Part send{peer, {}}, recv{peer, {}};
        switch (op.buffer) {
          case BufferKind::QKV:
            send.regions = {heads(TensorId::QIn, v * hq, hq), heads(TensorId::KvIn, layout_.packed_kv_head(v), hk)};
            recv.regions = {rows(TensorId::Q, row, s), rows(TensorId::Kv0, row, s)};
            break;
          case BufferKind::O:
            send.regions = {rows(TensorId::O, row, s)};
            recv.regions = {heads(TensorId::OOut, v * hq, hq)};
            break;
          case BufferKind::DO:
            send.regions = {heads(TensorId::DoIn, v * hq, hq)};
            recv.regions = {rows(TensorId::Do, row, s)};
            break;
          case BufferKind::DQKV: {
            const TensorId home = layout_.operand(op.send.buffer, op.send.slot);
            const std::int32_t plane = op.send.buffer == BufferKind::KvDkv ? 2 : 0;
            send.regions = {rows(TensorId::Dq, row, s), rows(home, row, s, plane, 2)};
            // Copy i = v % r of KV head v / r (one head each when r > 1): copy 0 into the output, the rest
            // into the replicas, which the Layout after this op adds in.
            const std::int64_t r = layout_.kv_replicas();
            const Region dkv = r == 1 || v % r == 0
                                   ? heads(TensorId::DkvOut, layout_.packed_kv_head(v), hk)
                                   : heads(TensorId::DkvReplicas,
                                           static_cast<std::int32_t>((v % r - 1) * w.kv_heads + v / r), hk);
            recv.regions = {heads(TensorId::DqOut, v * hq, hq), dkv};
            break;
          }
          default:
            throw InternalError(where() + ": all-to-all of an unknown buffer");
        }
        // Messages travel in the receiving tensors' element type.
        std::int64_t bytes = 0;
        for (const Region& r : recv.regions) bytes += region_bytes(r);
        CPSCOPE_CHECK(bytes == op.bytes_per_peer, fmt::format("{}: the IR moves {} bytes per peer, the tensors {}",
                                                              where(), op.bytes_per_peer, bytes));
        x.sends.push_back(std::move(send));
        x.recvs.push_back(std::move(recv));
      }
      StagingCount staged;
      for (const Part& p : x.sends) count_message(staged, p.regions, op.bytes_per_peer, true);
      for (const Part& p : x.recvs) count_message(staged, p.regions, op.bytes_per_peer, false);
      check_staging(op, staged);
      backend_.exchange(op, st, x);
      if (op.buffer == BufferKind::DQKV) {
        fresh_[static_cast<int>(layout_.storage(layout_.operand(op.send.buffer, op.send.slot)))] = true;
      }
      return;
    }
  }
  throw InternalError(where() + ": unknown op kind");
}

}  // namespace cpscope::rt
