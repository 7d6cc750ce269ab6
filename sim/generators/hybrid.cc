// Hybrid Ulysses x ring (USP, TransformerEngine "a2a+p2p") and plain Ulysses (hybrid with U = N, R = 1).
//
// Mesh: N = U·R. CP rank r = k·U + u sits in Ulysses group k = r / U (the U adjacent ranks
// {kU .. kU+U-1}, Schedule::groups[k]) at position u, and in the ring of the strided ranks
// {u, u+U, u+2U, ...} at ring position k. Ulysses: U = N, one group, a ring of one.
//
// Sharding (s = S/N tokens per rank, L = S/R tokens per Ulysses group):
//   contiguous (Ulysses always; hybrid with balance contiguous): rank r holds [r·s, (r+1)·s), so group
//     k holds [k·L, (k+1)·L) and the all-to-all output (peers' tokens concatenated in group order) is
//     already in sequence order.
//   zigzag (hybrid with balance zigzag): the ring's zigzag at group level, split contiguously over the
//     group, as USP (yunchang zigzag_extract_local) does: group k's local sequence is chunk k ++ chunk
//     2R-1-k of 2R chunks of L/2 tokens, and rank u of the group holds rows [u·s, (u+1)·s) of it. The
//     all-to-all output is then in the ring's local order too.
//   So no Layout op is needed: the head<->sequence permutation is folded into the all-to-all's packing
//   (the runtime packs per-peer head slices), and the token order after it is the ring's.
//
// KV heads: hk = Hkv/U per rank after the all-to-all. With fewer KV heads than the group (Hkv < U, Hkv | U)
// each is repeated r = U/Hkv times, as DeepSpeed-Ulysses and USP repeat them before the all-to-all: rank
// u then holds one KV head, u/r (hk = Hkv·r/U = 1), the one its query heads [u·H/U, (u+1)·H/U) read.
// The runtime packs that head for each peer straight from the input (no repeated copy is made), so the
// all-to-all moves B·s·(H/U + 2)·D·b per peer. Its backward returns every copy's dK/dV, and the r copies
// of a head must be summed: copy 0 lands in the dK/dV output, copies 1..r-1 in a buffer
// ("a2a_dkv_replicas", B·s·(r-1)·Hkv·2·D·b), and a Layout (compute, buffer DQKV) adds them in, r-1
// copies of two planes (DQKV's last step).
//
// Per rank, heads [u·H/U, (u+1)·H/U) and KV heads hk after the all-to-all:
//   forward:  AllToAll QKV in the group (buffer QKV, bytes_per_peer = B·s·(H/U+2·hk)·D·b, step 0);
//             the forward ring over R (ring_steps.cc) with L tokens per position, ring peers r ± U,
//             K/V block 2·B·L·hk·D·b (= M_kv) — with R = 1 a single Attend of the whole group
//             sequence (causal offset 0 or full); then AllToAll O back (buffer O, bytes_per_peer =
//             B·s·(H/U)·D·b, step R-1).
//   backward: AllToAll dO in (buffer DO, B·s·(H/U)·D·b per peer, step 0); the backward ring in the
//             workload's dK/dV variant (R = 1: one AttendBwd); AllToAll of packed dQ/dK/dV out
//             (buffer DQKV, B·s·(H/U+2·hk)·D·b per peer, input dtype: the fp32 accumulators are cast
//             while packing, step R-1).
//   With U = 1 there is no all-to-all (a group of one); hybrid is then the ring over N.
//   The backward assumes the forward's head-layout Q/K/V, O and LSE are kept (as autograd saves them);
//   in bwd-only schedules they are inputs.
// Staging (Op::staged_send/recv, what the runtime's nccl transport copies because a message is not one span of
// its tensor), per all-to-all of P bytes per peer: the QKV and DQKV messages are two regions each way
// (Q and K/V; dQ and dK/dV), so all U parts are packed and unpacked, 2·U·P bytes in 4U copies. O goes
// out from the fp32 accumulator (packed, converting, unless the input dtype is fp32 and B = 1) and
// lands in a head slice of the output (unpacked). dO is packed from a head slice and lands in rows of
// the head-layout dO, unpacked only when B > 1 (its batch entries are then apart).
// Per-rank bytes sent per pass: all-to-all (U-1)·B·s·D·b·((H/U+2·hk) + H/U) plus the ring's bytes for
// R (ring_steps.cc) with M_kv = 2·B·L·hk·D·b.
// Buffers: q, kv, o, lse (+ do, dq, dkv) in sequence layout; a2a_qkv and o_heads (fwd, kept for bwd),
// a2a_do and a2a_dqkv (bwd) in head layout, a2a_dkv_replicas (bwd, r > 1) in sequence layout; the ring's
// slots and accumulators.
#include <utility>

#include "sim/error.h"
#include "sim/generators/generators.h"
#include "sim/generators/ring_steps.h"

namespace cpscope::gen {
namespace {

Schedule make_a2a_ring(const Workload& w) {
  Schedule sched = empty_schedule(w);
  const std::int64_t U = w.ulysses_size();
  const std::int64_t R = w.ring_size();
  CPSCOPE_CHECK(U * R == w.cp, "hybrid mesh is not U x R");
  for (std::int64_t k = 0; k < R; ++k) {
    std::vector<std::int32_t> members;
    for (std::int64_t u = 0; u < U; ++u) members.push_back(static_cast<std::int32_t>(k * U + u));
    sched.groups.push_back(std::move(members));
  }

  const Bytes b = w.elem_bytes();
  const std::int64_t s = w.local_tokens();
  const std::int64_t L = w.seq / R;
  const std::int64_t hq = w.heads / U;
  const std::int64_t hk = w.ulysses_kv_heads();
  const std::int64_t replicas = w.kv_replicas();
  const Bytes qkv_per_peer = w.batch * s * (hq + 2 * hk) * w.head_dim * b;
  const Bytes o_per_peer = w.batch * s * hq * w.head_dim * b;
  const bool a2a = U > 1;
  // The staging of one all-to-all: P bytes per peer, `send`/`recv` the parts' region counts (0: sent
  // from / received into the tensor itself).
  auto staged = [U](Op op, std::int32_t send, std::int32_t recv) {
    op.staged_send = (send > 0 ? U : 0) * op.bytes_per_peer;
    op.staged_recv = (recv > 0 ? U : 0) * op.bytes_per_peer;
    op.staged_copies = static_cast<std::int32_t>(U) * (send + recv);
    return op;
  };
  const std::int32_t o_send = w.elem_bytes() == 4 && w.batch == 1 ? 0 : 1;
  const std::int32_t do_recv = w.batch == 1 ? 0 : 1;
  const auto last = static_cast<std::int32_t>(R - 1);

  RankBuilder bld(w, static_cast<std::int64_t>(sched.streams.size()));
  for (auto& prog : sched.ranks) {
    const std::int64_t k = prog.rank / U;
    const std::int64_t u = prog.rank % U;
    const auto group = static_cast<std::int32_t>(k);
    RingSpec spec;
    spec.size = R;
    spec.pos = k;
    spec.base = static_cast<std::int32_t>(u);
    spec.stride = static_cast<std::int32_t>(U);
    spec.tokens = L;
    spec.zigzag = w.balance == Balance::Zigzag && w.schedule == ScheduleKind::Hybrid;
    spec.mask = w.mask;
    spec.head_begin = static_cast<std::int32_t>(u * hq);
    spec.head_count = static_cast<std::int32_t>(hq);
    spec.kv_heads = hk;
    bld.reset(prog, ring_ops_estimate(w, spec) + 5);
    if (has_fwd(w.pass)) {
      if (a2a) {
        Op op = staged(RankBuilder::collective(OpKind::AllToAll, OpPass::Fwd, 0, group, U, BufferKind::QKV,
                                               qkv_per_peer), 2, 2);
        op.recv = local_operand(BufferKind::KV, 0);  // K/V land in ring slot 0, Q in the head-layout Q
        bld.emit(op, {}, {Res::Q, kv_res(0)});
      }
      emit_ring_forward(bld, spec);
      if (a2a)
        bld.emit(staged(RankBuilder::collective(OpKind::AllToAll, OpPass::Fwd, last, group, U, BufferKind::O,
                                                o_per_peer), o_send, 1),
                 {Res::O}, {Res::Out});
    }
    if (has_bwd(w.pass)) {
      if (a2a)
        bld.emit(staged(RankBuilder::collective(OpKind::AllToAll, OpPass::Bwd, 0, group, U, BufferKind::DO,
                                                o_per_peer), 1, do_recv),
                 {}, {Res::Do});
      const DkvHome home = emit_ring_backward(bld, spec);
      if (a2a) {
        Op op = staged(RankBuilder::collective(OpKind::AllToAll, OpPass::Bwd, last, group, U, BufferKind::DQKV,
                                               qkv_per_peer), 2, 2);
        op.send = home.operand;  // dK/dV from where the ring left them, dQ from its accumulator
        bld.emit(op, {Res::Dq, home.res}, {Res::Out});
        if (replicas > 1) {
          // Sum each KV head's r copies into the output: r-1 adds of B·s·Hkv·2·D·b (the op counts one).
          const Transfer rep = local_operand(BufferKind::DQKV, 0);
          bld.emit(RankBuilder::local(OpKind::Layout, OpPass::Bwd, last, BufferKind::DQKV,
                                      w.batch * s * w.kv_heads * 2 * w.head_dim * b, rep, rep),
                   {Res::Out}, {Res::Out});
        }
      }
    }
    add_io_buffers(prog, w);
    if (a2a) {
      add_buffer(prog, w, "a2a_qkv", w.batch * L * (hq + 2 * hk) * w.head_dim * b, true, true);
      add_buffer(prog, w, "o_heads", w.batch * L * hq * w.head_dim * b, true, true);
      add_buffer(prog, w, "a2a_do", w.batch * L * hq * w.head_dim * b, false, true);
      add_buffer(prog, w, "a2a_dqkv", w.batch * L * (hq + 2 * hk) * w.head_dim * b, false, true);
      if (replicas > 1)
        add_buffer(prog, w, "a2a_dkv_replicas", w.batch * s * (replicas - 1) * w.kv_heads * 2 * w.head_dim * b, false,
                   true);
    }
    add_ring_buffers(prog, w, spec);
  }
  return sched;
}

}  // namespace

Schedule make_ulysses(const Workload& w) { return make_a2a_ring(w); }
Schedule make_hybrid(const Workload& w) { return make_a2a_ring(w); }

}  // namespace cpscope::gen
