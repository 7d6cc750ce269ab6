// Op emission with buffer-hazard tracking for the schedule generators (see builder.h).
#include "sim/generators/builder.h"

#include <algorithm>

#include "sim/error.h"

namespace cpscope::gen {

void RankBuilder::reset(RankProgram& prog, std::size_t expected_ops) {
  prog_ = &prog;
  prog.ops.clear();
  prog.ops.reserve(expected_ops);
  reserved_ = expected_ops;
  prog.num_events = 0;
  res_.fill(ResState{});
  clock_.clear();
  clock_.reserve(expected_ops);
  for (auto& k : known_) k.fill(-1);
  pass_started_ = {false, false};
  fresh_ = {false, false};
  delta_ready_ = false;
}

// The executor's fills and extra memory kernels (runtime/executor.cc), with the sizes of rt::RankLayout's
// tensors (a kernel per contiguous run: a whole tensor is one):
//  - a pass's first compute-stream op: forward O = 0 and LSE = -inf (fp32); backward dQ = 0 (fp32), and
//    with a ring (R > 1, not allgather) its dK/dV accumulators: both fp32 slots, or the dK/dV halves of
//    both packed slots (input dtype). Without a ring the dK/dV slots start "fresh" instead;
//  - the backward's first AttendBwd: the delta, rowsum(dO·O) per row and head (Backend::prepare_backward:
//    reads the fp32 O and dO, writes an fp32 per row and head), once per pass;
//  - an AttendBwd into the implicit scratch (R > 1): the scratch = 0 (fp32), every time;
//  - an AttendBwd into a fresh DKV slot: the slot = 0, once; a reduce-scatter that consumed a slot makes
//    it fresh again (allgather's slots serve head groups g and g+2);
//  - allgather with its gathered dK/dV in the input dtype (--dkv input, cp > 1), every AttendBwd: the
//    block's key rows and KV heads of the fp32 dkv stage = 0, and after the attention the converting add
//    of the stage into the slot (a memory kernel too: counted here with the stage's and the slot's bytes).
//  - copies (Executor::issue_op): a kernel per plane (a row map permutes rows within it), plus a kernel per
//    plane for an in-place copy's second pass through the scratch buffer; the op itself counts one kernel
//    writing its bytes, the rest count here. DkvAdd and TransformerEngine's packing Layout copy two planes (one
//    more kernel); all-gather's zigzag reorder copies two planes in place through its row map: 3 more kernels
//    and its bytes written again.
//    Ulysses' replica sum (Layout of DQKV, hybrid.cc) adds r-1 copies of two planes: 2(r-1)-1 more kernels
//    and r-2 more times its bytes.
void RankBuilder::add_fills(Op& op) {
  if (op.kind == OpKind::DkvAdd) {
    fill(op, 0);
  } else if (op.kind == OpKind::Layout) {
    if (op.recv.buffer == BufferKind::KvDkv) {
      fill(op, 0);
    } else if (op.buffer == BufferKind::DQKV) {
      const std::int64_t adds = w_.kv_replicas() - 1;
      fill(op, (adds - 1) * op.bytes, static_cast<std::int32_t>(2 * adds - 1));
    } else {
      fill(op, op.bytes, 3);
    }
  }
  // Most ops fill nothing: leave before any arithmetic (this runs for every op of a schedule).
  const bool starts_pass = op.stream == kCompute && !pass_started_[op.pass == OpPass::Fwd ? 0 : 1];
  if (!starts_pass && op.kind != OpKind::AttendBwd && op.kind != OpKind::ReduceScatter) return;
  const Workload& w = w_;
  const Bytes B = w.batch, D = w.head_dim, e = w.elem_bytes();
  const bool gather = w.schedule == ScheduleKind::AllGather;
  const std::int64_t U = gather ? 1 : w.ulysses_size(), R = gather ? 1 : w.ring_size();
  const std::int64_t rows = gather ? w.local_tokens() : w.seq / R;  // of O, LSE and dQ
  const std::int64_t hq = w.heads / U, hk = w.ulysses_kv_heads();
  const Bytes dkv_block = B * rows * hk * 2 * D * 4;  // a ring's fp32 dK/dV slot or scratch, or R = 1's slot
  if (op.stream == kCompute) {
    const int p = op.pass == OpPass::Fwd ? 0 : 1;
    if (!pass_started_[p]) {
      pass_started_[p] = true;
      if (p == 0) {
        fill(op, B * rows * hq * D * 4);  // O
        fill(op, B * rows * hq * 4);      // LSE
      } else {
        fill(op, B * rows * hq * D * 4);  // dQ
        if (!gather && R > 1) {
          const Bytes slot = w.dkv == DkvVariant::Fp32 ? dkv_block : B * rows * hk * 2 * D * e;
          fill(op, slot);
          fill(op, slot);
        }
        fresh_ = {gather || R == 1, gather || R == 1};
        delta_ready_ = false;
      }
    }
  }
  if (op.kind == OpKind::AttendBwd) {
    if (!delta_ready_) {
      delta_ready_ = true;
      fill(op, B * rows * hq * D * 4 + B * rows * hq * D * e + B * rows * hq * 4);  // O, dO, delta
    }
    if (op.recv.buffer == BufferKind::None) {
      fill(op, dkv_block);  // the scratch
    } else if (op.recv.buffer == BufferKind::DKV) {
      const auto slot = static_cast<std::size_t>(op.recv.slot);
      CPSCOPE_CHECK(slot < fresh_.size(), "AttendBwd into a DKV slot beyond 1");
      if (fresh_[slot]) {
        fresh_[slot] = false;
        if (gather && w.cp == 1) fresh_ = {false, false};  // both slots are the output itself: one storage
        if (!gather) {
          fill(op, dkv_block);
        } else if (w.cp == 1) {
          fill(op, B * rows * w.kv_heads * 2 * D * 4);  // the output itself, all heads, fp32
        } else {
          const Bytes rs = w.dkv == DkvVariant::Fp32 ? 4 : e;
          fill(op, B * w.seq * (w.kv_heads / w.kv_head_groups) * 2 * D * rs);  // the gathered range's dK/dV
        }
      }
      if (gather && w.cp > 1 && w.dkv == DkvVariant::Input) {
        // The fp32 dkv stage (the gathered range's rows, a head group's KV heads, dK and dV planes): the
        // block's key rows and KV heads zeroed, a kernel per contiguous run (Executor::fill: one when the
        // block is the whole stage, else one per plane and batch entry, per row too for part of the heads),
        // then added (converting) into the slot, a kernel per plane.
        const std::int64_t ratio = w.heads / w.kv_heads;
        const std::int64_t kvh = (op.attn.head_begin + op.attn.head_count - 1) / ratio - op.attn.head_begin / ratio + 1;
        const std::int64_t stage_heads = w.kv_heads / w.kv_head_groups;
        const Bytes block = B * op.attn.kv_len * kvh * 2 * D;
        const std::int64_t runs = kvh < stage_heads        ? 2 * B * op.attn.kv_len
                                  : op.attn.kv_len < w.seq ? 2 * B
                                                           : 1;
        fill(op, block * 4, static_cast<std::int32_t>(runs));
        fill(op, block * (4 + e), 2);
      }
    }
  }
  if (op.kind == OpKind::ReduceScatter && op.send.buffer == BufferKind::DKV) {
    const auto slot = static_cast<std::size_t>(op.send.slot);
    CPSCOPE_CHECK(slot < fresh_.size(), "reduce-scatter of a DKV slot beyond 1");
    fresh_[slot] = true;
  }
}

std::int32_t RankBuilder::event_of(std::int32_t op_index) {
  Op& op = prog_->ops[static_cast<std::size_t>(op_index)];
  if (op.record == kNoEvent) op.record = prog_->num_events++;
  return op.record;
}

std::int32_t RankBuilder::emit(Op op, std::span<const Res> reads, std::span<const Res> writes) {
  CPSCOPE_CHECK(op.stream < num_streams_, "op on a stream the schedule does not declare");
  // Generation must not reallocate the op vector (one allocation per rank): estimates are upper bounds.
  CPSCOPE_CHECK(prog_->ops.size() < reserved_, "op count estimate too small");
  const int s = op.stream;
  const auto& ops = prog_->ops;
  auto stream_of = [&](std::int32_t i) { return ops[static_cast<std::size_t>(i)].stream; };

  // Latest op on each stream that must complete before this one starts.
  Clock need = {-1, -1, -1};
  auto require = [&](std::int32_t i) {
    if (i >= 0) need[stream_of(i)] = std::max(need[stream_of(i)], i);
  };
  for (Res r : reads) require(res_[static_cast<int>(r)].writer);
  for (Res r : writes) {
    const ResState& st = res_[static_cast<int>(r)];
    require(st.writer);
    for (std::int32_t i : st.readers) require(i);
  }

  Clock& known = known_[s];
  std::array<std::int32_t, kMaxStreams> cand{};
  int ncand = 0;
  for (int t = 0; t < kMaxStreams; ++t)
    if (t != s && need[t] > known[t]) cand[ncand++] = need[t];
  // Drop a wait that another candidate's completion already implies.
  int nwait = 0;
  for (int a = 0; a < ncand; ++a) {
    const int ta = stream_of(cand[a]);
    bool implied = false;
    for (int b = 0; b < ncand; ++b)
      if (b != a && clock_[static_cast<std::size_t>(cand[b])][ta] >= cand[a]) implied = true;
    if (implied) continue;
    CPSCOPE_CHECK(nwait < 2, "an op needs more than two event waits");
    op.wait[nwait++] = event_of(cand[a]);
    const Clock& c = clock_[static_cast<std::size_t>(cand[a])];
    for (int t = 0; t < kMaxStreams; ++t) known[t] = std::max(known[t], c[t]);
  }

  add_fills(op);
  const auto id = static_cast<std::int32_t>(ops.size());
  op.id = id;
  known[s] = id;
  clock_.push_back(known);
  prog_->ops.push_back(op);

  for (Res r : reads) {
    ResState& st = res_[static_cast<int>(r)];
    st.readers[s] = id;
  }
  for (Res r : writes) {
    ResState& st = res_[static_cast<int>(r)];
    st.writer = id;
    st.readers = {-1, -1, -1};
  }
  return id;
}

Flops RankBuilder::attn_flops(const AttnBlock& a, OpPass pass) const {
  const Flops per_pair_head = (pass == OpPass::Fwd ? 4 : 10) * w_.batch * w_.head_dim;
  return per_pair_head * a.head_count * block_pairs(a);
}

Op RankBuilder::attend(OpPass pass, std::int32_t step, const AttnBlock& a, Transfer kv, Transfer dkv) const {
  Op op;
  op.send = kv;
  op.recv = dkv;
  op.kind = pass == OpPass::Fwd ? OpKind::Attend : OpKind::AttendBwd;
  op.pass = pass;
  op.step = step;
  op.stream = kCompute;
  op.attn = a;
  op.flops = attn_flops(a, pass);
  return op;
}

Op RankBuilder::sendrecv(OpPass pass, std::int32_t step, std::uint8_t stream, std::uint8_t channel, BufferKind buffer,
                         std::int32_t send_peer, std::int32_t send_slot, Bytes send_bytes, std::int32_t recv_peer,
                         std::int32_t recv_slot, Bytes recv_bytes) const {
  Op op;
  op.kind = OpKind::SendRecv;
  op.pass = pass;
  op.step = step;
  op.stream = stream;
  op.buffer = buffer;
  if (send_peer >= 0) op.send = Transfer{send_peer, send_slot, buffer, channel, send_bytes};
  if (recv_peer >= 0) op.recv = Transfer{recv_peer, recv_slot, buffer, channel, recv_bytes};
  op.bytes = send_peer >= 0 ? send_bytes : 0;
  return op;
}

Op RankBuilder::collective(OpKind kind, OpPass pass, std::int32_t step, std::int32_t group, std::int64_t group_size,
                           BufferKind buffer, Bytes bytes_per_peer) {
  Op op;
  op.kind = kind;
  op.pass = pass;
  op.step = step;
  op.stream = kComm;
  op.group = group;
  op.buffer = buffer;
  op.bytes_per_peer = bytes_per_peer;
  op.bytes = (group_size - 1) * bytes_per_peer;  // NCCL ring all-gather / reduce-scatter, all-to-all
  return op;
}

Op RankBuilder::local(OpKind kind, OpPass pass, std::int32_t step, BufferKind buffer, Bytes bytes, Transfer src,
                      Transfer dst) {
  Op op;
  op.send = src;
  op.recv = dst;
  op.kind = kind;
  op.pass = pass;
  op.step = step;
  op.stream = kCompute;
  op.buffer = buffer;
  op.bytes = bytes;
  return op;
}

void add_buffer(RankProgram& prog, const Workload& w, const char* name, Bytes bytes, bool fwd, bool bwd) {
  fwd = fwd && has_fwd(w.pass);
  bwd = bwd && has_bwd(w.pass);
  if (!fwd && !bwd) return;
  prog.buffers.push_back(BufferUse{name, bytes, fwd, bwd});
}

void add_io_buffers(RankProgram& prog, const Workload& w) {
  const Bytes b = w.elem_bytes();
  const std::int64_t s = w.local_tokens();
  const Bytes q = w.batch * s * w.heads * w.head_dim * b;
  const Bytes kv = 2 * w.batch * s * w.kv_heads * w.head_dim * b;
  add_buffer(prog, w, "q", q, true, true);
  add_buffer(prog, w, "kv", kv, true, true);
  add_buffer(prog, w, "o", q, true, true);
  add_buffer(prog, w, "lse", w.batch * w.heads * s * 4, true, true);
  add_buffer(prog, w, "do", q, false, true);
  add_buffer(prog, w, "dq", q, false, true);
  add_buffer(prog, w, "dkv", kv, false, true);
}

}  // namespace cpscope::gen
