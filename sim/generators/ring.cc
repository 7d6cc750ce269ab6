// Ring (contiguous sharding) and zigzag-ring (head-tail balanced) schedules.
//
// Sharding: ring: rank r holds tokens [r·s, (r+1)·s). zigzag-ring: the sequence is cut into 2N chunks
// of c = S/(2N) tokens and rank r holds chunks r and 2N-1-r, in that order (local rows [0,c) and
// [c,2c)). All heads on every rank; no collectives (Schedule::groups is empty).
//
// Per rank: the forward ring (N attention steps, N-1 K/V SendRecvs on "comm") and/or the backward
// ring in the workload's dK/dV variant, both from ring_steps.cc (documented there), with
// RingSpec{size N, position r, members 0..N-1, tokens s, heads [0,H), KV heads Hkv}.
// Per-rank bytes sent (M_kv = 2·B·s·Hkv·D·b):
//   forward (N-1)·M_kv; backward fp32 (N-1)·M_kv + N·2·B·s·Hkv·D·4 (none when N = 1);
//   backward input (TransformerEngine) (N-1)·M_kv + (N-1)·M_kv.
// Buffers: q, kv, o, lse (+ do, dq, dkv) and the ring's slots and accumulators (ring_steps.cc).
#include "sim/generators/generators.h"
#include "sim/generators/ring_steps.h"

namespace cpscope::gen {

Schedule empty_schedule(const Workload& w) {
  Schedule s;
  s.workload = w;
  s.streams = {"compute", "comm"};
  const bool ring_kind =
      w.schedule == ScheduleKind::Ring || w.schedule == ScheduleKind::ZigzagRing || w.schedule == ScheduleKind::Hybrid;
  if (ring_kind && has_bwd(w.pass) && w.dkv == DkvVariant::Fp32) s.streams.emplace_back("comm_dkv");
  s.ranks.resize(static_cast<std::size_t>(w.cp));
  for (std::size_t r = 0; r < s.ranks.size(); ++r) s.ranks[r].rank = static_cast<std::int32_t>(r);
  return s;
}

Schedule make_ring(const Workload& w) {
  Schedule sched = empty_schedule(w);
  RankBuilder b(w, static_cast<std::int64_t>(sched.streams.size()));
  for (auto& prog : sched.ranks) {
    RingSpec spec;
    spec.size = w.cp;
    spec.pos = prog.rank;
    spec.tokens = w.local_tokens();
    spec.zigzag = w.schedule == ScheduleKind::ZigzagRing;
    spec.mask = w.mask;
    spec.head_count = static_cast<std::int32_t>(w.heads);
    spec.kv_heads = w.kv_heads;
    b.reset(prog, ring_ops_estimate(w, spec));
    if (has_fwd(w.pass)) emit_ring_forward(b, spec);
    if (has_bwd(w.pass)) emit_ring_backward(b, spec);
    add_io_buffers(prog, w);
    add_ring_buffers(prog, w, spec);
  }
  return sched;
}

}  // namespace cpscope::gen
