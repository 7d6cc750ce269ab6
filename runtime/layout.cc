// Rank layouts. The token orders follow the generators' header comments exactly:
//  ring/zigzag-ring/hybrid/ulysses (sim/generators/ring_steps.cc, hybrid.cc): ring position j holds
//    L = S/R tokens, [jL, (j+1)L) or, zigzag, chunks j and 2R-1-j of L/2; a Ulysses group k's local
//    sequence is position k's tokens and its rank u holds rows [u·s, (u+1)·s) of it.
//  allgather (allgather.cc): rank r holds [r·s, (r+1)·s), or chunks r and 2N-1-r of s/2; gathered
//    slots hold the N ranks' rows in rank order (global order after the zigzag Layout).
#include "runtime/layout.h"

#include <fmt/format.h>

#include "sim/error.h"

namespace cpscope::rt {
namespace {

constexpr std::array<std::string_view, kNumTensors> kTensorNames = {
    "q_in", "kv_in", "do_in", "o_out", "dq_out", "dkv_out", "q",        "o",       "lse",        "do",
    "dq",   "kv0",   "kv1",   "kv2",   "dkv0",   "dkv1",    "kv_dkv0", "kv_dkv1", "dkv_scratch",
    "dkv_stage", "dkv_replicas"};
static_assert(kTensorNames.size() == static_cast<std::size_t>(TensorId::kCount), "TensorId changed: update kTensorNames");

bool is_allgather(const Workload& w) { return w.schedule == ScheduleKind::AllGather; }

bool ring_zigzag(const Workload& w) {
  return w.schedule == ScheduleKind::ZigzagRing || (w.schedule == ScheduleKind::Hybrid && w.balance == Balance::Zigzag);
}

// Tokens of position j of `parts` positions over `seq` tokens, contiguous or zigzag.
std::vector<std::int64_t> position_tokens(std::int64_t seq, std::int64_t parts, std::int64_t j, bool zigzag) {
  const std::int64_t len = seq / parts;
  std::vector<std::int64_t> t;
  t.reserve(static_cast<std::size_t>(len));
  if (!zigzag) {
    for (std::int64_t i = 0; i < len; ++i) t.push_back(j * len + i);
    return t;
  }
  const std::int64_t c = len / 2;
  for (std::int64_t i = 0; i < c; ++i) t.push_back(j * c + i);
  for (std::int64_t i = 0; i < c; ++i) t.push_back((2 * parts - 1 - j) * c + i);
  return t;
}

}  // namespace

std::string_view to_string(TensorId t) {
  const auto i = static_cast<std::size_t>(t);
  if (i >= kTensorNames.size()) throw InternalError("unknown TensorId");
  return kTensorNames[i];
}

std::vector<std::int64_t> seq_tokens(const Workload& w, std::int64_t rank) {
  if (is_allgather(w)) return position_tokens(w.seq, w.cp, rank, w.balance == Balance::Zigzag);
  const std::int64_t U = w.ulysses_size();
  const std::int64_t R = w.ring_size();
  const std::vector<std::int64_t> group = position_tokens(w.seq, R, rank / U, ring_zigzag(w));
  const std::int64_t s = w.local_tokens();
  const std::int64_t u = rank % U;
  return {group.begin() + u * s, group.begin() + (u + 1) * s};
}

RankLayout::RankLayout(const Workload& w, std::int32_t rank) : w_(w), rank_(rank) {
  validate(w_);
  CPSCOPE_CHECK(rank >= 0 && rank < w.cp, fmt::format("rank {} of cp {}", rank, w.cp));
  const bool fwd = w.pass != PassSet::Bwd;
  const bool bwd = w.pass != PassSet::Fwd;
  const auto H = static_cast<std::int32_t>(w.heads);
  const auto Hkv = static_cast<std::int32_t>(w.kv_heads);
  const std::int64_t s = w.local_tokens();
  io_tokens_ = seq_tokens(w, rank);

  use(TensorId::QIn, s, H, 0, 1, Precision::Input, false);
  use(TensorId::KvIn, s, Hkv, 0, 2, Precision::Input, true);
  if (bwd) use(TensorId::DoIn, s, H, 0, 1, Precision::Input, false);

  if (is_allgather(w)) {
    const std::int64_t N = w.cp;
    const std::int64_t G = w.kv_head_groups;
    const auto hk = static_cast<std::int32_t>(Hkv / G);
    work_tokens_ = io_tokens_;
    alias(TensorId::Q, TensorId::QIn);
    if (bwd) alias(TensorId::Do, TensorId::DoIn);
    use(TensorId::O, s, H, 0, 1, Precision::Acc, false);
    use(TensorId::Lse, s, H, 0, 1, Precision::Acc, false, 1);
    if (bwd) use(TensorId::Dq, s, H, 0, 1, Precision::Acc, false);
    if (N == 1) {
      // No gather: every K/V operand is the input, every dK/dV operand the output (all heads).
      alias(TensorId::Kv0, TensorId::KvIn);
      alias(TensorId::Kv1, TensorId::KvIn);
      if (bwd) {
        use(TensorId::DkvOut, s, Hkv, 0, 2, Precision::Acc, true);
        alias(TensorId::Dkv0, TensorId::DkvOut);
        alias(TensorId::Dkv1, TensorId::DkvOut);
      }
      return;
    }
    const int slots = G > 1 ? 2 : 1;
    for (int i = 0; i < slots; ++i) use(static_cast<TensorId>(static_cast<int>(TensorId::Kv0) + i), w.seq, hk, 0, 2,
                                        Precision::Input, true);
    if (bwd) {
      const Precision rs = w.dkv == DkvVariant::Fp32 ? Precision::Acc : Precision::Input;
      for (int i = 0; i < slots; ++i)
        use(static_cast<TensorId>(static_cast<int>(TensorId::Dkv0) + i), w.seq, hk, 0, 2, rs, true);
      // Attention adds dK/dV in fp32 (atomics), so a gathered dK/dV in the input dtype takes each
      // block's through an fp32 stage (the executor fills it and adds it, converting, per AttendBwd).
      if (rs == Precision::Input) use(TensorId::DkvStage, w.seq, hk, 0, 2, Precision::Acc, true);
      use(TensorId::DkvOut, s, Hkv, 0, 2, Precision::Input, true);
    }
    return;
  }

  U_ = w.ulysses_size();
  R_ = w.ring_size();
  k_ = rank / U_;
  u_ = rank % U_;
  const std::int64_t L = w.seq / R_;
  const auto hq = static_cast<std::int32_t>(H / U_);
  replicas_ = w.kv_replicas();
  const auto hk = static_cast<std::int32_t>(w.ulysses_kv_heads());
  const auto qbase = static_cast<std::int32_t>(u_ * hq);
  const auto kbase = static_cast<std::int32_t>(u_ * hk);  // r > 1: repeated head u, a copy of input head u/r
  work_tokens_ = block_tokens(k_);
  if (U_ > 1) {
    if (fwd) use(TensorId::OOut, s, H, 0, 1, Precision::Input, false);
    if (bwd) {
      use(TensorId::DqOut, s, H, 0, 1, Precision::Input, false);
      use(TensorId::DkvOut, s, Hkv, 0, 2, Precision::Input, true);
      if (replicas_ > 1)
        use(TensorId::DkvReplicas, s, static_cast<std::int32_t>((replicas_ - 1) * Hkv), 0, 2, Precision::Input, true);
    }
    use(TensorId::Q, L, hq, qbase, 1, Precision::Input, false);
    use(TensorId::Kv0, L, hk, kbase, 2, Precision::Input, true);
    if (bwd) use(TensorId::Do, L, hq, qbase, 1, Precision::Input, false);
  } else {
    alias(TensorId::Q, TensorId::QIn);
    alias(TensorId::Kv0, TensorId::KvIn);
    if (bwd) alias(TensorId::Do, TensorId::DoIn);
  }
  use(TensorId::O, L, hq, qbase, 1, Precision::Acc, false);
  use(TensorId::Lse, L, hq, qbase, 1, Precision::Acc, false, 1);
  if (R_ > 1) {
    use(TensorId::Kv1, L, hk, kbase, 2, Precision::Input, true);
    use(TensorId::Kv2, L, hk, kbase, 2, Precision::Input, true);
  }
  if (!bwd) return;
  use(TensorId::Dq, L, hq, qbase, 1, Precision::Acc, false);
  if (R_ == 1) {
    use(TensorId::Dkv0, L, hk, kbase, 2, Precision::Acc, true);
  } else if (w.dkv == DkvVariant::Fp32) {
    use(TensorId::Dkv0, L, hk, kbase, 2, Precision::Acc, true);
    use(TensorId::Dkv1, L, hk, kbase, 2, Precision::Acc, true);
    use(TensorId::DkvScratch, L, hk, kbase, 2, Precision::Acc, true);
  } else {
    use(TensorId::KvDkv0, L, hk, kbase, 4, Precision::Input, true);
    use(TensorId::KvDkv1, L, hk, kbase, 4, Precision::Input, true);
    use(TensorId::DkvScratch, L, hk, kbase, 2, Precision::Acc, true);
  }
}

void RankLayout::use(TensorId t, std::int64_t rows, std::int32_t heads, std::int32_t head_base, std::int32_t planes,
                     Precision p, bool kv, std::int32_t dim) {
  TensorDesc& d = desc_[static_cast<int>(t)];
  d.used = true;
  d.alias_of = TensorId::kCount;
  d.rows = rows;
  d.heads = heads;
  d.head_base = head_base;
  d.dim = dim > 0 ? dim : static_cast<std::int32_t>(w_.head_dim);
  d.planes = planes;
  d.precision = p;
  d.kv_heads = kv;
}

void RankLayout::alias(TensorId t, TensorId of) {
  const TensorDesc& target = desc(of);
  CPSCOPE_CHECK(target.used && target.alias_of == TensorId::kCount, "alias of an unallocated tensor");
  TensorDesc& d = desc_[static_cast<int>(t)];
  d = target;
  d.alias_of = of;
}

TensorId RankLayout::storage(TensorId t) const {
  const TensorDesc& d = desc(t);
  return d.alias_of == TensorId::kCount ? t : d.alias_of;
}

bool RankLayout::one_span(const std::vector<Region>& rs, std::int64_t message_elem_bytes) const {
  if (rs.size() != 1) return false;
  const Region& r = rs[0];
  const TensorDesc& d = desc(r.tensor);
  const std::int64_t elem = d.precision == Precision::Acc ? 4 : w_.elem_bytes();
  const bool all_heads = r.head == 0 && r.heads == d.heads;
  const bool all_rows = r.row == 0 && r.rows == d.rows;
  // Several planes or batch entries are one span only with every row.
  return elem == message_elem_bytes && all_heads && (all_rows || (r.planes == 1 && w_.batch == 1));
}

TensorId RankLayout::operand(BufferKind kind, std::int32_t slot) const {
  auto pick = [&](TensorId first, std::int32_t count) {
    CPSCOPE_CHECK(slot >= 0 && slot < count, fmt::format("{} slot {} out of range", to_string(kind), slot));
    const auto t = static_cast<TensorId>(static_cast<int>(first) + slot);
    CPSCOPE_CHECK(desc(t).used, fmt::format("rank {}: operand {} slot {} names tensor {}, which this schedule does not "
                                            "allocate",
                                            rank_, to_string(kind), slot, to_string(t)));
    return t;
  };
  switch (kind) {
    case BufferKind::KV:
      return pick(TensorId::Kv0, 3);
    case BufferKind::DKV:
      return pick(TensorId::Dkv0, 2);
    case BufferKind::KvDkv:
      return pick(TensorId::KvDkv0, 2);
    default:
      break;
  }
  throw InternalError(fmt::format("rank {}: no slotted tensor for operand {}", rank_, to_string(kind)));
}

std::int32_t RankLayout::kv_head_base(TensorId t, const Op& op) const {
  if (is_allgather(w_) && w_.cp > 1 &&
      (t == TensorId::Kv0 || t == TensorId::Kv1 || t == TensorId::Dkv0 || t == TensorId::Dkv1 ||
       t == TensorId::DkvStage))
    return static_cast<std::int32_t>(op.step * (w_.kv_heads / w_.kv_head_groups));
  return desc(t).head_base;
}

std::int32_t RankLayout::input_kv_head(std::int64_t repeated) const {
  return static_cast<std::int32_t>(repeated / replicas_);
}

std::int32_t RankLayout::packed_kv_head(std::int64_t v) const { return input_kv_head(v * w_.ulysses_kv_heads()); }

std::int32_t RankLayout::ring_member(std::int64_t j) const {
  const std::int64_t m = ((j % R_) + R_) % R_;
  return static_cast<std::int32_t>(u_ + m * U_);
}

std::vector<std::int64_t> RankLayout::block_tokens(std::int64_t ring_pos) const {
  CPSCOPE_CHECK(!is_allgather(w_), "block_tokens of an allgather schedule");
  return position_tokens(w_.seq, R_, ((ring_pos % R_) + R_) % R_, ring_zigzag(w_));
}

namespace {
Region whole(TensorId t, const TensorDesc& d, std::int32_t plane = 0) {
  return Region{t, plane, 1, 0, d.rows, 0, d.heads};
}
}  // namespace

RankLayout::Result RankLayout::out_o() const {
  if (desc(TensorId::OOut).used) return {whole(TensorId::OOut, desc(TensorId::OOut)), &io_tokens_, 0};
  return {whole(TensorId::O, desc(TensorId::O)), &work_tokens_, desc(TensorId::O).head_base};
}

RankLayout::Result RankLayout::out_lse() const {
  return {whole(TensorId::Lse, desc(TensorId::Lse)), &work_tokens_, desc(TensorId::Lse).head_base};
}

RankLayout::Result RankLayout::out_dq() const {
  if (desc(TensorId::DqOut).used) return {whole(TensorId::DqOut, desc(TensorId::DqOut)), &io_tokens_, 0};
  return {whole(TensorId::Dq, desc(TensorId::Dq)), &work_tokens_, desc(TensorId::Dq).head_base};
}

RankLayout::Result RankLayout::out_dk() const {
  if (desc(TensorId::DkvOut).used) return {whole(TensorId::DkvOut, desc(TensorId::DkvOut), 0), &io_tokens_, 0};
  if (R_ == 1 || w_.dkv == DkvVariant::Fp32) {
    const TensorId t = R_ == 1 ? TensorId::Dkv0 : static_cast<TensorId>(static_cast<int>(TensorId::Dkv0) + R_ % 2);
    return {whole(t, desc(t), 0), &work_tokens_, desc(t).head_base};
  }
  const auto t = static_cast<TensorId>(static_cast<int>(TensorId::KvDkv0) + R_ % 2);
  return {whole(t, desc(t), 2), &work_tokens_, desc(t).head_base};
}

RankLayout::Result RankLayout::out_dv() const {
  Result r = out_dk();
  r.region.plane += 1;
  return r;
}

std::vector<RankLayout::Load> RankLayout::loads() const {
  std::vector<Load> out;
  out.push_back({TensorId::QIn, 0, Source::Q, io_tokens_, 0});
  out.push_back({TensorId::KvIn, 0, Source::K, io_tokens_, 0});
  out.push_back({TensorId::KvIn, 1, Source::V, io_tokens_, 0});
  if (w_.pass == PassSet::Fwd) return out;
  out.push_back({TensorId::DoIn, 0, Source::Do, io_tokens_, 0});
  if (w_.pass != PassSet::Bwd) return out;
  // Backward only: what the forward leaves for the backward is an input.
  out.push_back({TensorId::O, 0, Source::O, work_tokens_, desc(TensorId::O).head_base});
  out.push_back({TensorId::Lse, 0, Source::Lse, work_tokens_, desc(TensorId::Lse).head_base});
  if (is_allgather(w_)) return out;
  // The working K/V's heads count among the repeated ones (r > 1: one head, a copy of input head u/r).
  auto load_kv = [&](TensorId t, std::vector<std::int64_t> tok) {
    const std::int32_t head = input_kv_head(desc(t).head_base);
    out.push_back({t, 0, Source::K, tok, head});
    out.push_back({t, 1, Source::V, std::move(tok), head});
  };
  if (U_ > 1) {
    out.push_back({TensorId::Q, 0, Source::Q, work_tokens_, desc(TensorId::Q).head_base});
    load_kv(TensorId::Kv0, work_tokens_);
  }
  if (R_ > 1 && w_.dkv == DkvVariant::Input) {
    // TransformerEngine keeps the forward's last K/V block, ring position k+1, in slot fwd_slot(R-1).
    const auto t = static_cast<TensorId>(static_cast<int>(TensorId::Kv0) + (R_ - 1 == 0 ? 0 : 1 + (R_ - 2) % 2));
    load_kv(t, block_tokens(k_ + 1));
  }
  return out;
}

}  // namespace cpscope::rt
