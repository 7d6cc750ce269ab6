// The ring (pass-KV) steps, shared by ring, zigzag-ring and hybrid (one function, parameterised by
// RingSpec: members, heads, tokens, zigzag).
//
// Notation: R ring size, p this rank's ring position, L tokens per position, c = L/2,
// M = 2·B·L·Hkv_ring·D·b the K/V block bytes. Ring position j is CP rank base + j·stride.
//
// K/V slots (BufferKind::KV, AttnBlock::kv_slot, Transfer::slot):
//   slot 0      the rank's own K/V block. Never a receive target, so it survives the forward for the
//               backward without a copy (ring-flash-attention sends k, v straight from the inputs).
//               Ring: the packed K/V input; hybrid: the K/V part of the all-to-all output.
//   slots 1, 2  the receive double buffer. Step i >= 1 reads slot 1 + (i-1)%2 (ring_fwd_slot).
//   Memory is the same as "own K/V + two comm slots".
//
// Forward, step i = 0..R-1, source src = (p - i) mod R, K/V in slot ring_fwd_slot(i):
//   if i < R-1: SendRecv on "comm", channel 0, buffer KV: send slot(i) to p+1, receive the next block
//               from p-1 into slot(i+1); M bytes each way. Issued before the step's attention so it
//               overlaps it.
//   Attend on "compute" of the block ring_block(src) (skipped when the causal mask hides it).
// Blocks (same rule forward and backward, depends only on (p, src)):
//   full mask:            q [0,L) x kv [0,L) Full.
//   contiguous, causal:   src == p: q [0,L) x kv [0,L) Causal offset 0; src < p: Full; src > p: skipped.
//   zigzag, causal (the rank holds chunks p and 2R-1-p, in that order):
//                         src == p: [0,2c) x [0,2c) Causal offset 0 (exact: 2c²+c pairs);
//                         src < p:  q [0,2c) x kv [0,c) Full (only the block's first chunk is earlier);
//                         src > p:  q [c,2c) x kv [0,2c) Full (only the rank's second chunk is later).
//
// Events are not hand-wired: RankBuilder derives them from the slots each op reads and writes.
// For the forward that gives exactly: SendRecv(i) waits on the attention that last read the slot it
// receives into (step i-1's, when that step attended; a skipped step needs no wait since the slot's
// previous reader was already waited on by SendRecv(i-1)), and Attend(i) waits on SendRecv(i-1)
// (its receive). The same tracking carries across passes in fwd+bwd (the backward's first receive
// into slot 1 waits for the forward's last reader of slot 1).
//
// Backward, DkvVariant::Fp32 (PyTorch context_parallel / ring-flash-attention): K/V rotate exactly as
// in the forward. Step i:
//   SendRecv K/V (as forward, pass bwd) if i < R-1;
//   AttendBwd (reads Q, O/LSE, dO and the K/V slot; adds into dQ; writes the block's dK/dV into the
//   dkv scratch, input dtype) and DkvAdd (adds the scratch into fp32 accumulator slot i%2; bytes =
//   the accumulator's size 2·B·L·Hkv_ring·D·4) — both skipped on a masked step;
//   SendRecv on "comm_dkv", channel 1, buffer DKV (fp32, 2·B·L·Hkv_ring·D·4 bytes): send accumulator
//   slot i%2 to p+1, receive the next from p-1 into slot (i+1)%2. It waits on the step's DkvAdd (or,
//   on a skipped step, simply forwards what the previous dK/dV receive brought).
//   R transfers: the last brings each accumulator home (slot R%2).
//
// R = 1 (cp = 1, or hybrid/Ulysses with a ring of one): no transfers and no accumulators; the one
// AttendBwd writes dQ and dK/dV (DKV slot 0) directly, in both variants.
//
// Backward, DkvVariant::Input (TransformerEngine): the ring reversed (send to p-1, receive from p+1).
//   Assumption: the forward's last K/V block, (p+1) mod R, is kept for the backward (TE saves
//   p2p_comm_buffers[-1]) in K/V slot ring_fwd_slot(R-1); in bwd-only schedules it is an input there.
//   Storage is TE's two packed slots [K/V ; dK/dV] (BufferKind::KvDkv, slots 0 and 1; AttnBlock::kv_slot
//   indexes them in this backward). First a Layout (compute) copies the saved block into packed slot 0
//   (TE: p2p_comm_buffers[0][0].copy_(kv); M bytes). Step i works on block (p+1+i) mod R:
//   SendRecv on "comm", channel 0, buffer KvDkv: send packed slot i%2 to p-1, receive into packed slot
//   (i+1)%2 from p+1. It carries the K/V of the step-i block if i <= R-2 (M bytes) and the dK/dV
//   accumulator of the step i-1 block if i >= 1 (M bytes, input dtype), so it is posted after step
//   i-1's DkvAdd. Step 0 moves only K/V and step R-1 only dK/dV (TE slices send_tensor[0] / [1]).
//   AttendBwd of the step-i block (packed slot i%2), then DkvAdd into the accumulator just received,
//   the dK/dV half of packed slot (i+1)%2 (it waits on the SendRecv). The last step's block is the
//   rank's own, so its accumulator ends home in packed slot R%2. Masked steps still forward K/V and
//   accumulators. R-1 K/V and R-1 dK/dV transfers per rank.
//
// dK/dV accumulator slots are zero-filled when the backward starts (the runtime's memset; TE's first
// accumulation is a copy, equivalent to adding into zero). A masked first step of the TE ring
// therefore forwards a zero accumulator, which keeps the byte count at the formula's.
//
// Operands (see schedule.cc): Attend/AttendBwd name the K/V they read in Op::send (KV slot, or KvDkv
// packed slot in the Input backward); an R > 1 AttendBwd writes the implicit dkv scratch (Op::recv
// empty) and the DkvAdd after it names the accumulator it adds into in Op::recv (DKV slot, or the
// dK/dV half of a KvDkv packed slot). A KvDkv SendRecv carries the K/V half when step <= R-2 and the
// dK/dV half when step >= 1. The staging Layout reads Op::send (KV slot) and writes Op::recv (KvDkv 0).
#include "sim/generators/ring_steps.h"

#include <array>

#include "sim/error.h"

namespace cpscope::gen {

bool ring_block(const RingSpec& r, std::int64_t src, AttnBlock* out) {
  if (src < 0 || src >= r.size) src = ((src % r.size) + r.size) % r.size;
  const std::int64_t L = r.tokens;
  const std::int64_t c = L / 2;
  const std::int64_t p = r.pos;
  AttnBlock a;
  a.head_begin = r.head_begin;
  a.head_count = r.head_count;
  a.kv_src = r.member(src);
  a.q_len = L;
  a.kv_len = L;
  a.mask = AttnMask::Full;
  if (r.mask == Mask::Full) {
    // every pair visible
  } else if (src == p) {
    a.mask = AttnMask::Causal;  // diagonal; in zigzag order too (chunk p, then chunk 2R-1-p)
  } else if (!r.zigzag) {
    if (src > p) return false;
  } else if (src < p) {
    a.kv_len = c;  // queries of both chunks see only the block's first chunk
  } else {
    a.q_off = c;  // only the rank's second chunk sees the block, all of it
    a.q_len = c;
  }
  *out = a;
  return true;
}

void emit_ring_forward(RankBuilder& b, const RingSpec& r) {
  const Workload& w = b.workload();
  const Bytes m = r.kv_bytes(w, w.elem_bytes());
  const std::int32_t next = r.member(r.pos + 1);
  const std::int32_t prev = r.member(r.pos - 1);
  for (std::int64_t i = 0; i < r.size; ++i) {
    const auto step = static_cast<std::int32_t>(i);
    const std::int32_t slot = ring_fwd_slot(i);
    if (i + 1 < r.size) {
      const std::int32_t into = ring_fwd_slot(i + 1);
      b.emit(b.sendrecv(OpPass::Fwd, step, kComm, 0, BufferKind::KV, next, slot, m, prev, into, m), {kv_res(slot)},
             {kv_res(into)});
    }
    AttnBlock a;
    if (ring_block(r, i <= r.pos ? r.pos - i : r.pos - i + r.size, &a)) {
      a.kv_slot = slot;
      b.emit(b.attend(OpPass::Fwd, step, a, local_operand(BufferKind::KV, slot)), {Res::Q, kv_res(slot)}, {Res::O});
    }
  }
}

namespace {

DkvHome emit_backward_fp32(RankBuilder& b, const RingSpec& r) {
  const Workload& w = b.workload();
  const Bytes m = r.kv_bytes(w, w.elem_bytes());
  const Bytes acc = r.kv_bytes(w, 4);
  const std::int32_t next = r.member(r.pos + 1);
  const std::int32_t prev = r.member(r.pos - 1);
  for (std::int64_t i = 0; i < r.size; ++i) {
    const auto step = static_cast<std::int32_t>(i);
    const std::int32_t slot = ring_fwd_slot(i);
    const auto acc_slot = static_cast<std::int32_t>(i % 2);
    if (i + 1 < r.size) {
      const std::int32_t into = ring_fwd_slot(i + 1);
      b.emit(b.sendrecv(OpPass::Bwd, step, kComm, 0, BufferKind::KV, next, slot, m, prev, into, m), {kv_res(slot)},
             {kv_res(into)});
    }
    AttnBlock a;
    if (ring_block(r, i <= r.pos ? r.pos - i : r.pos - i + r.size, &a)) {
      a.kv_slot = slot;
      b.emit(b.attend(OpPass::Bwd, step, a, local_operand(BufferKind::KV, slot)),
             {Res::Q, Res::O, Res::Do, kv_res(slot)}, {Res::Dq, Res::DkvScratch});
      Op add = RankBuilder::local(OpKind::DkvAdd, OpPass::Bwd, step, BufferKind::DKV, acc, Transfer{},
                                  local_operand(BufferKind::DKV, acc_slot));
      add.attn.kv_src = a.kv_src;
      b.emit(add, {Res::DkvScratch, dkv_res(acc_slot)}, {dkv_res(acc_slot)});
    }
    {
      const auto into = static_cast<std::int32_t>((i + 1) % 2);
      b.emit(b.sendrecv(OpPass::Bwd, step, kCommDkv, 1, BufferKind::DKV, next, acc_slot, acc, prev, into, acc),
             {dkv_res(acc_slot)}, {dkv_res(into)});
    }
  }
  const auto home = static_cast<std::int32_t>(r.size % 2);
  return {dkv_res(home), local_operand(BufferKind::DKV, home)};
}

DkvHome emit_backward_input(RankBuilder& b, const RingSpec& r) {
  const Workload& w = b.workload();
  const Bytes m = r.kv_bytes(w, w.elem_bytes());  // K/V block and dK/dV accumulator, input dtype
  const std::int32_t to = r.member(r.pos - 1);
  const std::int32_t from = r.member(r.pos + 1);
  const std::int32_t saved = ring_fwd_slot(r.size - 1);
  b.emit(RankBuilder::local(OpKind::Layout, OpPass::Bwd, 0, BufferKind::KvDkv, m, local_operand(BufferKind::KV, saved),
                            local_operand(BufferKind::KvDkv, 0)),
         {kv_res(saved)}, {packed_kv_res(0)});
  for (std::int64_t i = 0; i < r.size; ++i) {
    const auto step = static_cast<std::int32_t>(i);
    const auto cur = static_cast<std::int32_t>(i % 2);
    const auto nxt = static_cast<std::int32_t>((i + 1) % 2);
    const bool kv_part = i + 2 <= r.size;  // i <= R-2
    const bool dkv_part = i >= 1;
    const Bytes bytes = (kv_part ? m : 0) + (dkv_part ? m : 0);
    std::array<Res, 2> reads{};
    std::array<Res, 2> writes{};
    std::size_t n = 0;
    if (kv_part) {
      reads[n] = packed_kv_res(cur);
      writes[n++] = packed_kv_res(nxt);
    }
    if (dkv_part) {
      reads[n] = packed_dkv_res(cur);
      writes[n++] = packed_dkv_res(nxt);
    }
    b.emit(b.sendrecv(OpPass::Bwd, step, kComm, 0, BufferKind::KvDkv, to, cur, bytes, from, nxt, bytes),
           std::span<const Res>(reads.data(), n), std::span<const Res>(writes.data(), n));
    AttnBlock a;
    if (ring_block(r, (r.pos + 1 + i) % r.size, &a)) {
      a.kv_slot = cur;
      b.emit(b.attend(OpPass::Bwd, step, a, local_operand(BufferKind::KvDkv, cur)),
             {Res::Q, Res::O, Res::Do, packed_kv_res(cur)}, {Res::Dq, Res::DkvScratch});
      Op add = RankBuilder::local(OpKind::DkvAdd, OpPass::Bwd, step, BufferKind::KvDkv, m, Transfer{},
                                  local_operand(BufferKind::KvDkv, nxt));
      add.attn.kv_src = a.kv_src;
      b.emit(add, {Res::DkvScratch, packed_dkv_res(nxt)}, {packed_dkv_res(nxt)});
    }
  }
  const auto home = static_cast<std::int32_t>(r.size % 2);
  return {packed_dkv_res(home), local_operand(BufferKind::KvDkv, home)};
}

}  // namespace

DkvHome emit_ring_backward(RankBuilder& b, const RingSpec& r) {
  if (r.size == 1) {
    // No ring (cp = 1, or hybrid/Ulysses with R = 1): one block, whose AttendBwd writes dQ and dK/dV
    // straight into their final buffers (DKV slot 0), both variants alike.
    AttnBlock a;
    ring_block(r, r.pos, &a);
    b.emit(b.attend(OpPass::Bwd, 0, a, local_operand(BufferKind::KV, 0), local_operand(BufferKind::DKV, 0)),
           {Res::Q, Res::O, Res::Do, kv_res(0)}, {Res::Dq, dkv_res(0)});
    return {dkv_res(0), local_operand(BufferKind::DKV, 0)};
  }
  return b.workload().dkv == DkvVariant::Fp32 ? emit_backward_fp32(b, r) : emit_backward_input(b, r);
}

void add_ring_buffers(RankProgram& prog, const Workload& w, const RingSpec& r) {
  // R = 1 has no ring: attention writes O, dQ and dK/dV straight into the pass's own buffers.
  if (r.size == 1) return;
  const Bytes b = w.elem_bytes();
  const Bytes m = r.kv_bytes(w, b);
  const Bytes rows_fp32 = w.batch * r.tokens * r.head_count * w.head_dim * 4;
  const bool fp32 = w.dkv == DkvVariant::Fp32;
  add_buffer(prog, w, "o_acc_fp32", rows_fp32, true, false);
  add_buffer(prog, w, "kv_recv_slots", 2 * m, true, fp32);
  add_buffer(prog, w, "dq_acc_fp32", rows_fp32, false, true);
  add_buffer(prog, w, "dkv_scratch", m, false, true);
  if (fp32) {
    add_buffer(prog, w, "dkv_acc_fp32_slots", 2 * r.kv_bytes(w, 4), false, true);
  } else {
    add_buffer(prog, w, "kv_saved", m, false, true);  // forward's last block, kept for the backward
    add_buffer(prog, w, "kvdkv_slots", 2 * 2 * m, false, true);
  }
}

std::size_t ring_ops_estimate(const Workload& w, const RingSpec& r) {
  const auto n = static_cast<std::size_t>(r.size);
  std::size_t ops = 0;
  if (has_fwd(w.pass)) ops += 2 * n;
  if (has_bwd(w.pass)) ops += 4 * n + 1;
  return ops;
}

}  // namespace cpscope::gen
