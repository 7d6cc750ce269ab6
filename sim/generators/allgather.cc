// All-gather K/V (Llama 3 style "pass-KV all-gather"), optionally pipelined over KV-head groups
// (ring-flash-attention's llama3 variant).
//
// Sharding: balance contiguous: rank r holds tokens [r·s, (r+1)·s); balance zigzag: chunks r and
// 2N-1-r of c = S/(2N) tokens (local rows [0,c) and [c,2c)). One collective group, all N ranks
// (Schedule::groups[0]).
//
// G = kv_head_groups (G | Hkv). Head group g covers query heads [g·H/G, (g+1)·H/G) and KV heads
// [g·Hkv/G, (g+1)·Hkv/G). Every op of group g has step g. Gathered K/V live in slot g%2 when G > 1
// (double buffer), else in slot 0 (AttnBlock::kv_slot; kv_src = -1, gathered).
//
// Forward, per group g:
//   AllGather K/V on "comm" (buffer KV, bytes_per_peer = M_kv/G = 2·B·s·(Hkv/G)·D·b, bytes
//   (N-1)·bytes_per_peer; reads the rank's K/V input, Op::recv names the gathered slot). With N = 1
//   there is no gather and KV slot 0 is the rank's own K/V.
//   Zigzag + causal: a Layout on "compute" permutes the gathered slot from rank order into global
//   token order (bytes = the gathered slot, N·bytes_per_peer; in place through a scratch). Full masks
//   need no order, and contiguous sharding gathers in global order already.
//   Attention of the local Q against its causal prefix of the gathered K/V:
//     contiguous causal: q [0,s) x kv [0,(r+1)·s) Causal offset r·s;
//     zigzag causal:     q [0,c) x kv [0,(r+1)·c) Causal offset r·c, and
//                        q [c,2c) x kv [0,(2N-r)·c) Causal offset (2N-1-r)·c (2N·c²+c pairs: balanced);
//     full:              q [0,s) x kv [0,S) Full.
//   Attention ops name their K/V slot in Op::send; backward ones their dkv_gathered slot (DKV, same
//   index; with N = 1 it is the rank's dK/dV output) in Op::recv.
// Backward, per group g: the same gather (K/V are re-gathered, not kept: Llama 3 saves the memory),
//   Layout as forward, AttendBwd per block (accumulating the gathered-range dK/dV straight into the
//   dkv_gathered slot g%2 / 0: the first AttendBwd of a group writes the whole slot, zero outside its
//   key range, the second adds), for zigzag + causal a Layout back to rank order, then ReduceScatter
//   (buffer DKV, bytes_per_peer = one rank's dK/dV shard of the group, 2·B·s·(Hkv/G)·D·e with e = 4
//   for DkvVariant::Fp32 and b for Input; Op::send names the dkv_gathered slot).
// Issue order (G > 1): gather 0, gather 1, then per g: compute g, gather g+2, [reduce-scatter g]. The
//   gather of g+1 overlaps the compute of g; gather g+2 reuses slot g%2 and so waits for compute g
//   (derived by RankBuilder from the slots, like every wait). G = 1: gather, compute, [reduce-scatter].
// Staging (Op::staged_send/recv, what the runtime's CUDA transports copy because a message is not one
//   span of its tensor): they gather and reduce the K and V planes (dK and dV) one at a time, so with
//   B = 1 every member's rows of a plane lie end to end in the gathered slot and NCCL works in place.
//   With B > 1 the gather unpacks and the reduce-scatter packs every member's rows (2N copies of half
//   of bytes_per_peer); with G > 1 the gather packs the rank's head group of each input plane (2
//   copies); the reduce-scatter unpacks its result into the dK/dV output when that is a head slice or
//   the sum ran in fp32 (2 copies).
// N = 1: no collectives and no Layout (one rank holds everything, in order).
// Per-rank bytes sent: forward (N-1)·M_kv; backward (N-1)·M_kv + (N-1)·2·B·s·Hkv·D·e.
// Buffers: q, kv, o, lse (+ do, dq, dkv); gathered_kv (N·M_kv/G per slot, one or two slots, fwd and
// bwd), layout_scratch and layout_row_maps (zigzag causal), dkv_gathered (bwd, one or two slots), dkv_stage_fp32 (bwd, with
// DkvVariant::Input: each AttendBwd's fp32 dK/dV before the converting add into the slot). No fp32 O or dQ
// accumulator: every output row is written by exactly one attention call per head group.
#include <algorithm>
#include <array>
#include <utility>

#include "sim/error.h"
#include "sim/generators/builder.h"
#include "sim/generators/generators.h"

namespace cpscope::gen {

Schedule make_allgather(const Workload& w) {
  Schedule sched = empty_schedule(w);
  const std::int64_t N = w.cp;
  const std::int64_t G = w.kv_head_groups;
  CPSCOPE_CHECK(G >= 1 && w.kv_heads % G == 0 && w.heads % G == 0, "kv_head_groups must divide the heads");
  std::vector<std::int32_t> all;
  for (std::int64_t r = 0; r < N; ++r) all.push_back(static_cast<std::int32_t>(r));
  sched.groups.push_back(std::move(all));

  const Bytes b = w.elem_bytes();
  const std::int64_t s = w.local_tokens();
  const std::int64_t c = s / 2;
  const std::int64_t S = w.seq;
  const bool zigzag = w.balance == Balance::Zigzag;
  const bool gather = N > 1;
  const bool layout = gather && zigzag && w.mask == Mask::Causal;
  const auto hq = static_cast<std::int32_t>(w.heads / G);
  const std::int64_t hk = w.kv_heads / G;
  const Bytes ag_per_peer = 2 * w.batch * s * hk * w.head_dim * b;
  const Bytes rs_elem = w.dkv == DkvVariant::Fp32 ? 4 : b;
  const Bytes rs_per_peer = 2 * w.batch * s * hk * w.head_dim * rs_elem;
  auto slot_of = [&](std::int64_t g) { return static_cast<std::int32_t>(G > 1 ? g % 2 : 0); };

  RankBuilder bld(w, static_cast<std::int64_t>(sched.streams.size()));
  for (auto& prog : sched.ranks) {
    const std::int64_t r = prog.rank;
    // The attention blocks of head group g (kv_slot and heads filled in), one or two.
    auto blocks = [&](std::int64_t g, std::array<AttnBlock, 2>& out) {
      AttnBlock a;
      a.head_begin = static_cast<std::int32_t>(g * hq);
      a.head_count = hq;
      a.kv_slot = slot_of(g);
      a.kv_src = -1;
      if (w.mask == Mask::Full) {
        a.q_len = s;
        a.kv_len = S;
        a.mask = AttnMask::Full;
        out[0] = a;
        return 1;
      }
      a.mask = AttnMask::Causal;
      if (!zigzag) {
        a.q_len = s;
        a.kv_len = (r + 1) * s;
        a.causal_offset = r * s;
        out[0] = a;
        return 1;
      }
      a.q_len = c;
      a.kv_len = (r + 1) * c;
      a.causal_offset = r * c;
      out[0] = a;
      a.q_off = c;
      a.kv_len = (2 * N - r) * c;
      a.causal_offset = (2 * N - 1 - r) * c;
      out[1] = a;
      return 2;
    };
    auto emit_gather = [&](OpPass pass, std::int64_t g) {
      if (!gather) return;
      Op op = RankBuilder::collective(OpKind::AllGather, pass, static_cast<std::int32_t>(g), 0, N, BufferKind::KV,
                                      ag_per_peer);
      op.recv = local_operand(BufferKind::KV, slot_of(g));  // reads the rank's K/V input
      op.staged_send = G > 1 ? ag_per_peer : 0;
      op.staged_recv = w.batch > 1 ? N * ag_per_peer : 0;
      op.staged_copies = static_cast<std::int32_t>((G > 1 ? 2 : 0) + (w.batch > 1 ? 2 * N : 0));
      bld.emit(op, {}, {gathered_res(slot_of(g))});
    };
    auto emit_layout = [&](OpPass pass, std::int64_t g, BufferKind buf, Bytes bytes, Res res) {
      const Transfer slot = local_operand(buf, slot_of(g));
      bld.emit(RankBuilder::local(OpKind::Layout, pass, static_cast<std::int32_t>(g), buf, bytes, slot, slot), {res},
               {res});
    };
    auto emit_forward = [&](std::int64_t g) {
      const auto step = static_cast<std::int32_t>(g);
      const Res kv = gather ? gathered_res(slot_of(g)) : kv_res(0);
      if (layout) emit_layout(OpPass::Fwd, g, BufferKind::KV, N * ag_per_peer, kv);
      std::array<AttnBlock, 2> blk;
      const int n = blocks(g, blk);
      for (int i = 0; i < n; ++i)
        bld.emit(bld.attend(OpPass::Fwd, step, blk[i], local_operand(BufferKind::KV, slot_of(g))), {Res::Q, kv},
                 {Res::O});
    };
    auto emit_backward = [&](std::int64_t g) {
      const auto step = static_cast<std::int32_t>(g);
      const Res kv = gather ? gathered_res(slot_of(g)) : kv_res(0);
      const Res dkv = gather ? dkv_gathered_res(slot_of(g)) : Res::Out;
      if (layout) emit_layout(OpPass::Bwd, g, BufferKind::KV, N * ag_per_peer, kv);
      std::array<AttnBlock, 2> blk;
      const int n = blocks(g, blk);
      for (int i = 0; i < n; ++i)
        bld.emit(bld.attend(OpPass::Bwd, step, blk[i], local_operand(BufferKind::KV, slot_of(g)),
                            local_operand(BufferKind::DKV, slot_of(g))),
                 {Res::Q, Res::O, Res::Do, kv, dkv}, {Res::Dq, dkv});
      if (layout) emit_layout(OpPass::Bwd, g, BufferKind::DKV, N * rs_per_peer, dkv);
    };
    auto emit_reduce_scatter = [&](std::int64_t g) {
      if (!gather) return;
      Op op = RankBuilder::collective(OpKind::ReduceScatter, OpPass::Bwd, static_cast<std::int32_t>(g), 0, N,
                                      BufferKind::DKV, rs_per_peer);
      op.send = local_operand(BufferKind::DKV, slot_of(g));  // writes the rank's dK/dV output
      const bool unpack = G > 1 || rs_elem != b;
      op.staged_send = w.batch > 1 ? N * rs_per_peer : 0;
      op.staged_recv = unpack ? rs_per_peer : 0;
      op.staged_copies = static_cast<std::int32_t>((w.batch > 1 ? 2 * N : 0) + (unpack ? 2 : 0));
      bld.emit(op, {dkv_gathered_res(slot_of(g))}, {Res::Out});
    };

    bld.reset(prog, static_cast<std::size_t>(10 * G + 4));
    if (has_fwd(w.pass)) {
      emit_gather(OpPass::Fwd, 0);
      if (G > 1) emit_gather(OpPass::Fwd, 1);
      for (std::int64_t g = 0; g < G; ++g) {
        emit_forward(g);
        if (g + 2 < G) emit_gather(OpPass::Fwd, g + 2);
      }
    }
    if (has_bwd(w.pass)) {
      emit_gather(OpPass::Bwd, 0);
      if (G > 1) emit_gather(OpPass::Bwd, 1);
      for (std::int64_t g = 0; g < G; ++g) {
        emit_backward(g);
        if (g + 2 < G) emit_gather(OpPass::Bwd, g + 2);
        emit_reduce_scatter(g);
      }
    }

    add_io_buffers(prog, w);
    if (gather) {
      const Bytes slots = G > 1 ? 2 : 1;
      add_buffer(prog, w, "gathered_kv", slots * N * ag_per_peer, true, true);
      if (layout) {
        add_buffer(prog, w, "layout_scratch", N * ag_per_peer, true, false);
        add_buffer(prog, w, "layout_scratch_bwd", N * std::max(ag_per_peer, rs_per_peer), false, true);
        add_buffer(prog, w, "layout_row_maps", 2 * w.seq * 8, true, true);  // int64 per row, both ways
      }
      add_buffer(prog, w, "dkv_gathered", slots * N * rs_per_peer, false, true);
      // Attention adds dK/dV in fp32: an input-dtype slot takes each block's through an fp32 stage.
      if (w.dkv == DkvVariant::Input) add_buffer(prog, w, "dkv_stage_fp32", N * 2 * w.batch * s * hk * w.head_dim * 4, false, true);
    }
  }
  return sched;
}

}  // namespace cpscope::gen
