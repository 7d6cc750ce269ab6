// Tests for sim/generators: every schedule x mask x pass x dK/dV variant x GQA x CP size is
// structurally valid, conserves FLOPs exactly, sends exactly the CP-SCHEDULES.md bytes per rank, and
// balances where it should; plus the step structure of each schedule on small cases.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "sim/error.h"
#include "sim/schedule.h"

namespace cpscope {
namespace {

Bytes bytes_sent(const RankProgram& p) {
  Bytes b = 0;
  for (const Op& op : p.ops)
    if (is_comm(op.kind)) b += op.bytes;
  return b;
}

Flops flops_of(const RankProgram& p, OpKind kind) {
  Flops f = 0;
  for (const Op& op : p.ops)
    if (op.kind == kind) f += op.flops;
  return f;
}

// Query-key pairs per batch and head of a rank's forward blocks (each block weighted by its heads
// over all heads, so a head-split rank counts its share).
std::int64_t fwd_pairs_times_heads(const RankProgram& p) {
  std::int64_t n = 0;
  for (const Op& op : p.ops)
    if (op.kind == OpKind::Attend) n += block_pairs(op.attn) * op.attn.head_count;
  return n;
}

// ---- Independent re-statements of the IR semantics, used on every generated schedule ----------

// Global token position of local row j of a shard of `len` tokens at position `pos` of `n`
// positions: contiguous, or zigzag chunks pos and 2n-1-pos.
std::int64_t shard_token(bool zigzag, std::int64_t n, std::int64_t len, std::int64_t pos, std::int64_t j) {
  if (!zigzag) return pos * len + j;
  const std::int64_t c = len / 2;
  return j < c ? pos * c + j : (2 * n - 1 - pos) * c + (j - c);
}

// Checks that the attention ops of one pass cover every visible (query, key) pair of every head
// exactly once and no hidden pair, mapping local rows to global tokens by each schedule's documented
// sharding (ring.cc, allgather.cc, hybrid.cc).
void expect_exact_coverage(const Schedule& s, OpKind kind) {
  const Workload& w = s.workload;
  const std::int64_t S = w.seq, N = w.cp;
  const std::int64_t U = w.ulysses_size(), R = w.ring_size();
  std::vector<std::uint8_t> count(static_cast<std::size_t>(w.heads * S * S), 0);
  bool any = false;
  for (const auto& r : s.ranks) {
    for (const Op& op : r.ops) {
      if (op.kind != kind) continue;
      any = true;
      const AttnBlock& a = op.attn;
      auto q_token = [&](std::int64_t j) -> std::int64_t {
        switch (w.schedule) {
          case ScheduleKind::Ring:
            return shard_token(false, N, S / N, r.rank, j);
          case ScheduleKind::ZigzagRing:
            return shard_token(true, N, S / N, r.rank, j);
          case ScheduleKind::AllGather:
            return shard_token(w.balance == Balance::Zigzag, N, S / N, r.rank, j);
          case ScheduleKind::Ulysses:
          case ScheduleKind::Hybrid:
            return shard_token(w.schedule == ScheduleKind::Hybrid && w.balance == Balance::Zigzag, R, S / R, r.rank / U,
                               j);
        }
        return -1;
      };
      auto kv_token = [&](std::int64_t j) -> std::int64_t {
        switch (w.schedule) {
          case ScheduleKind::Ring:
            return shard_token(false, N, S / N, a.kv_src, j);
          case ScheduleKind::ZigzagRing:
            return shard_token(true, N, S / N, a.kv_src, j);
          case ScheduleKind::AllGather: {
            EXPECT_EQ(a.kv_src, -1);
            const bool reordered = w.balance == Balance::Contiguous || w.mask == Mask::Causal || N == 1;
            if (reordered) return j;        // global order (after the Layout for zigzag causal)
            const std::int64_t sl = S / N;  // rank-major gather of zigzag shards
            return shard_token(true, N, sl, j / sl, j % sl);
          }
          case ScheduleKind::Ulysses:
          case ScheduleKind::Hybrid:
            return shard_token(w.schedule == ScheduleKind::Hybrid && w.balance == Balance::Zigzag, R, S / R,
                               a.kv_src / U, j);
        }
        return -1;
      };
      for (std::int64_t i = 0; i < a.q_len; ++i) {
        const std::int64_t qt = q_token(a.q_off + i);
        for (std::int64_t j = 0; j < a.kv_len; ++j) {
          if (a.mask == AttnMask::Causal && j > i + a.causal_offset) continue;
          const std::int64_t kt = kv_token(a.kv_off + j);
          for (std::int64_t h = a.head_begin; h < a.head_begin + a.head_count; ++h)
            ++count[static_cast<std::size_t>((h * S + qt) * S + kt)];
        }
      }
    }
  }
  ASSERT_TRUE(any);
  std::int64_t wrong = 0;
  for (std::int64_t h = 0; h < w.heads; ++h)
    for (std::int64_t q = 0; q < S; ++q)
      for (std::int64_t k = 0; k < S; ++k) {
        const int want = w.mask == Mask::Full || k <= q ? 1 : 0;
        if (count[static_cast<std::size_t>((h * S + q) * S + k)] != want && wrong++ < 3)
          ADD_FAILURE() << to_string(kind) << ": head " << h << " query " << q << " key " << k << " covered "
                        << int(count[static_cast<std::size_t>((h * S + q) * S + k)]) << " times, want " << want;
      }
  EXPECT_EQ(wrong, 0);
}

// Checks, from the IR fields alone, that every two ops on different streams that touch the same
// buffer (one of them writing) are ordered by the events: the earlier completes before the later
// starts. Buffers: Op::send / Op::recv operands (a KvDkv slot split in its K/V and dK/dV halves) and
// the implicit Q, O, dO, dQ of attention and all-to-all ops.
void expect_no_races(const Schedule& s) {
  const Workload& w = s.workload;
  const std::int64_t R = w.ring_size();
  constexpr int kQ = 1000, kO = 1001, kDo = 1002, kDq = 1003;
  auto key = [](const Transfer& t, int half) { return (static_cast<int>(t.buffer) * 64 + t.slot) * 2 + half; };
  using Clock = std::array<std::int32_t, 3>;
  for (const auto& r : s.ranks) {
    std::vector<Clock> op_clock(r.ops.size());
    std::vector<std::int32_t> recorder(static_cast<std::size_t>(r.num_events), -1);
    std::array<Clock, 3> known;
    for (auto& k : known) k.fill(-1);
    struct State {
      std::int32_t writer = -1;
      Clock readers = {-1, -1, -1};
    };
    std::map<int, State> res;
    for (const Op& op : r.ops) {
      const int st = op.stream;
      for (std::int32_t e : op.wait) {
        if (e == kNoEvent) continue;
        const Clock& c = op_clock[static_cast<std::size_t>(recorder[static_cast<std::size_t>(e)])];
        for (int t = 0; t < 3; ++t) known[st][t] = std::max(known[st][t], c[t]);
      }
      std::vector<int> reads, writes;
      auto operand = [&](const Transfer& t, std::vector<int>& into, bool dkv_half) {
        if (t.buffer == BufferKind::None) return;
        if (t.buffer == BufferKind::KvDkv && op.kind == OpKind::SendRecv) {
          if (op.step <= R - 2) into.push_back(key(t, 0));
          if (op.step >= 1) into.push_back(key(t, 1));
        } else {
          into.push_back(key(t, t.buffer == BufferKind::KvDkv && dkv_half ? 1 : 0));
        }
      };
      switch (op.kind) {
        case OpKind::Attend:
          reads = {kQ};
          writes = {kO};
          operand(op.send, reads, false);
          break;
        case OpKind::AttendBwd:
          reads = {kQ, kO, kDo};
          writes = {kDq};
          operand(op.send, reads, false);
          operand(op.recv, writes, true);
          break;
        case OpKind::DkvAdd:
          operand(op.recv, reads, true);
          operand(op.recv, writes, true);
          break;
        case OpKind::Layout:
        case OpKind::SendRecv:
        case OpKind::AllGather:
        case OpKind::ReduceScatter:
          operand(op.send, reads, false);
          operand(op.recv, writes, false);
          break;
        case OpKind::AllToAll:
          if (op.buffer == BufferKind::QKV) writes = {kQ};
          if (op.buffer == BufferKind::O) reads = {kO};
          if (op.buffer == BufferKind::DO) writes = {kDo};
          if (op.buffer == BufferKind::DQKV) reads = {kDq};
          operand(op.send, reads, false);
          operand(op.recv, writes, false);
          break;
      }
      auto ordered = [&](std::int32_t j, int what) {
        if (j < 0) return;
        const int t = r.ops[static_cast<std::size_t>(j)].stream;
        if (t == st || known[st][t] >= j) return;
        ADD_FAILURE() << "rank " << r.rank << ": op " << op.id << " (" << op_name(op) << ") on " << s.streams[st]
                      << " is not ordered after op " << j << " (" << op_name(r.ops[static_cast<std::size_t>(j)])
                      << ") on " << s.streams[t] << ", both touching buffer " << what;
      };
      for (int x : reads) ordered(res[x].writer, x);
      for (int x : writes) {
        ordered(res[x].writer, x);
        for (std::int32_t j : res[x].readers) ordered(j, x);
      }
      Clock mine = known[st];
      mine[st] = op.id;
      known[st] = mine;
      op_clock[static_cast<std::size_t>(op.id)] = mine;
      if (op.record != kNoEvent) recorder[static_cast<std::size_t>(op.record)] = op.id;
      for (int x : reads) res[x].readers[st] = op.id;
      for (int x : writes) res[x] = State{op.id, {-1, -1, -1}};
    }
  }
}

struct Case {
  Workload w;
  std::string name() const {
    return std::string(to_string(w.schedule)) + " N=" + std::to_string(w.cp) + " U=" + std::to_string(w.ulysses) + " " +
           std::string(to_string(w.mask)) + " " + std::string(to_string(w.pass)) +
           " dkv=" + std::string(to_string(w.dkv)) + " balance=" + std::string(to_string(w.balance)) +
           " H=" + std::to_string(w.heads) + " Hkv=" + std::to_string(w.kv_heads) +
           " G=" + std::to_string(w.kv_head_groups) + " S=" + std::to_string(w.seq);
  }
};

// Per-rank bytes sent, from the formulas in CP-SCHEDULES.md.
Bytes expected_bytes(const Workload& w) {
  const Bytes b = w.elem_bytes();
  const std::int64_t N = w.cp, B = w.batch, D = w.head_dim, H = w.heads, Hkv = w.kv_heads;
  const std::int64_t s = w.seq / N;
  const bool fwd = w.pass != PassSet::Bwd, bwd = w.pass != PassSet::Fwd;
  const bool fp32 = w.dkv == DkvVariant::Fp32;
  // A ring of R positions with K/V blocks of m bytes (dK/dV the same shape).
  auto ring = [&](std::int64_t R, Bytes m_kv, Bytes m_dkv32) {
    Bytes t = 0;
    if (fwd) t += (R - 1) * m_kv;  // (N-1)·M_kv
    if (bwd)
      t += fp32 ? (R - 1) * m_kv + (R > 1 ? R : 0) * m_dkv32  // + N·dkv_fp32
                : (R - 1) * m_kv + (R - 1) * m_kv;            // + (N-1)·dkv_input
    return t;
  };
  const Bytes m_kv = 2 * B * s * Hkv * D * b;
  switch (w.schedule) {
    case ScheduleKind::Ring:
    case ScheduleKind::ZigzagRing:
      return ring(N, m_kv, 2 * B * s * Hkv * D * 4);
    case ScheduleKind::AllGather: {
      // (N-1)·M_kv gathered per pass; the backward reduce-scatters (N-1) dK/dV shards.
      Bytes t = 0;
      if (fwd) t += (N - 1) * m_kv;
      if (bwd) t += (N - 1) * m_kv + (N - 1) * 2 * B * s * Hkv * D * (fp32 ? 4 : b);
      return t;
    }
    case ScheduleKind::Ulysses:
    case ScheduleKind::Hybrid: {
      // All-to-all per pass: (U-1)/U·B·s·D·(H+2Hkv)·b one way and (U-1)/U·B·s·D·H·b the other.
      const std::int64_t U = w.schedule == ScheduleKind::Ulysses ? N : w.ulysses;
      const std::int64_t R = N / U;
      // CP-SCHEDULES.md: with fewer KV heads than U they are replicated up to U (one per rank).
      const std::int64_t Hkv_moved = std::max(Hkv, U);
      const Bytes a2a = (U - 1) * B * s * D * b * ((H + 2 * Hkv_moved) / U + H / U);
      const Bytes m_ring = 2 * B * (w.seq / R) * (Hkv_moved / U) * D * b;  // ring message 2·B·(S/R)·(Hkv/U)·D·b
      return (fwd ? a2a : 0) + (bwd ? a2a : 0) + ring(R, m_ring, 2 * B * (w.seq / R) * (Hkv_moved / U) * D * 4);
    }
  }
  return -1;
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const std::vector<std::pair<std::int64_t, std::int64_t>> gqa = {{8, 2}, {4, 4}};
  for (ScheduleKind kind : all_schedules())
    for (Mask mask : {Mask::Causal, Mask::Full})
      for (PassSet pass : {PassSet::Fwd, PassSet::Bwd, PassSet::FwdBwd})
        for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input})
          for (auto [h, hkv] : gqa)
            for (std::int64_t N : {1, 2, 4, 8})
              for (Balance bal : {Balance::Zigzag, Balance::Contiguous})
                for (std::int64_t U = 1; U <= N; ++U)
                  for (std::int64_t G : {1, 2})
                    for (std::int64_t S : {48, 96}) {
                      if (kind != ScheduleKind::Hybrid && U != 1) continue;
                      if (kind == ScheduleKind::Hybrid && N % U != 0) continue;
                      if (kind != ScheduleKind::AllGather && G != 1) continue;
                      const bool uses_balance = kind == ScheduleKind::AllGather || kind == ScheduleKind::Hybrid;
                      if (!uses_balance && bal != Balance::Zigzag) continue;
                      if (S == 48 && (mask == Mask::Full || pass == PassSet::Bwd)) continue;  // keep it small
                      Case c;
                      c.w.batch = 2;
                      c.w.seq = S;
                      c.w.heads = h;
                      c.w.kv_heads = hkv;
                      c.w.head_dim = 16;
                      c.w.dtype = N == 4 ? DType::FP32 : DType::BF16;
                      c.w.mask = mask;
                      c.w.pass = pass;
                      c.w.schedule = kind;
                      c.w.cp = N;
                      c.w.ulysses = kind == ScheduleKind::Hybrid ? U : 1;
                      c.w.balance = bal;
                      c.w.dkv = dkv;
                      c.w.kv_head_groups = G;
                      if (!invalid_reason(c.w).empty()) continue;
                      cases.push_back(c);
                    }
  return cases;
}

TEST(Generators, EveryValidCombinationIsConsistentAndConserves) {
  const std::vector<Case> cases = all_cases();
  int hybrid_splits = 0, ulysses = 0, gathers_pipelined = 0, repeated_kv = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name());
    const Workload& w = c.w;
    const Schedule s = make_schedule(w);
    ASSERT_NO_THROW(check_schedule(s));
    ASSERT_EQ(static_cast<std::int64_t>(s.ranks.size()), w.cp);
    expect_no_races(s);
    if (w.seq == 48 || w.cp == 4) {
      if (w.pass != PassSet::Bwd) expect_exact_coverage(s, OpKind::Attend);
      if (w.pass != PassSet::Fwd) expect_exact_coverage(s, OpKind::AttendBwd);
    }

    // FLOPs: total over ranks equals the single-device attention's, exactly.
    const std::int64_t pairs = w.mask == Mask::Causal ? w.seq * (w.seq + 1) / 2 : w.seq * w.seq;
    const Flops fwd = 4 * w.batch * w.heads * w.head_dim * pairs;
    const Flops want = (w.pass != PassSet::Bwd ? fwd : 0) + (w.pass != PassSet::Fwd ? fwd / 2 * 5 : 0);
    Flops total = 0;
    for (const auto& r : s.ranks)
      for (const Op& op : r.ops) total += op.flops;
    EXPECT_EQ(total, want);
    EXPECT_EQ(total, w.total_flops());

    // Bytes: every rank sends exactly the formula.
    const Bytes bytes = expected_bytes(w);
    for (const auto& r : s.ranks) EXPECT_EQ(bytes_sent(r), bytes) << "rank " << r.rank;

    // Backward blocks are the forward's: per rank, bwd FLOPs are 2.5x fwd FLOPs.
    if (w.pass == PassSet::FwdBwd) {
      for (const auto& r : s.ranks)
        EXPECT_EQ(flops_of(r, OpKind::AttendBwd) * 2, flops_of(r, OpKind::Attend) * 5) << "rank " << r.rank;
    }

    // Balanced schedules do the same work on every rank.
    const bool balanced =
        w.mask == Mask::Full || w.schedule == ScheduleKind::ZigzagRing || w.schedule == ScheduleKind::Ulysses ||
        ((w.schedule == ScheduleKind::AllGather || w.schedule == ScheduleKind::Hybrid) && w.balance == Balance::Zigzag);
    if (balanced && w.pass != PassSet::Bwd) {
      for (const auto& r : s.ranks) EXPECT_EQ(fwd_pairs_times_heads(r), fwd_pairs_times_heads(s.ranks[0]));
    }

    // Streams: comm_dkv only for a ring backward with fp32 dK/dV.
    const bool ring_kind = w.schedule == ScheduleKind::Ring || w.schedule == ScheduleKind::ZigzagRing ||
                           w.schedule == ScheduleKind::Hybrid;
    const bool dkv_stream = ring_kind && w.pass != PassSet::Fwd && w.dkv == DkvVariant::Fp32;
    EXPECT_EQ(s.streams.size(), dkv_stream ? 3u : 2u);
    EXPECT_EQ(s.streams[0], "compute");
    EXPECT_EQ(s.streams[1], "comm");

    // Every rank lists its inputs for peak memory, with positive sizes.
    for (const auto& r : s.ranks) {
      ASSERT_FALSE(r.buffers.empty());
      EXPECT_EQ(r.buffers[0].name, "q");
      for (const auto& b : r.buffers) EXPECT_GT(b.bytes, 0) << b.name;
      // The transport's staging buffers are counted exactly when some op stages, at the size the nccl
      // transport allocates.
      Bytes staging = 0, listed = 0;
      for (const StagingNeed& n : staging_needs(s, r.rank, false)) staging += n.send + n.recv;
      for (const auto& b : r.buffers)
        if (b.name == "staging") listed += b.bytes;
      EXPECT_EQ(listed, staging);
      bool stages = false;
      for (const Op& op : r.ops) stages = stages || op.staged() > 0;
      EXPECT_EQ(staging > 0, stages);
    }
    hybrid_splits += w.schedule == ScheduleKind::Hybrid && w.ulysses > 1 && w.ulysses < w.cp;
    ulysses += w.schedule == ScheduleKind::Ulysses;
    repeated_kv += w.kv_replicas() > 1;
    gathers_pipelined += w.schedule == ScheduleKind::AllGather && w.kv_head_groups > 1;
  }
  // The matrix really covers what it claims (guards against validate() rejecting too much).
  EXPECT_GT(cases.size(), 1000u);
  EXPECT_GT(hybrid_splits, 100);
  EXPECT_GT(ulysses, 30);
  EXPECT_GT(repeated_kv, 30);
  EXPECT_GT(gathers_pipelined, 50);
}

Workload base(ScheduleKind kind, std::int64_t N, Mask mask = Mask::Causal, PassSet pass = PassSet::Fwd) {
  Workload w;
  w.batch = 1;
  w.seq = 16 * N;
  w.heads = 4;
  w.kv_heads = 2;
  w.head_dim = 8;
  w.cp = N;
  w.schedule = kind;
  w.mask = mask;
  w.pass = pass;
  w.gpus_per_node = std::max<std::int64_t>(8, N);
  return w;
}

TEST(Ring, ContiguousCausalIsUnbalancedAsDocumented) {
  for (std::int64_t N : {2, 4, 8}) {
    const Workload w = base(ScheduleKind::Ring, N);
    const Schedule s = make_schedule(w);
    const std::int64_t sl = w.seq / N;
    // Rank N-1: (N-½)·s² + s/2 pairs; rank 0: the diagonal only.
    EXPECT_EQ(fwd_pairs_times_heads(s.ranks[N - 1]), ((2 * N - 1) * sl * sl + sl) / 2 * w.heads);
    EXPECT_EQ(fwd_pairs_times_heads(s.ranks[0]), sl * (sl + 1) / 2 * w.heads);
    // Rank r attends steps 0..r only, and still forwards every block.
    for (const auto& r : s.ranks) {
      int attends = 0, sendrecvs = 0;
      for (const Op& op : r.ops) {
        attends += op.kind == OpKind::Attend;
        sendrecvs += op.kind == OpKind::SendRecv;
        if (op.kind == OpKind::Attend) {
          EXPECT_LE(op.step, r.rank);
        }
      }
      EXPECT_EQ(attends, r.rank + 1);
      EXPECT_EQ(sendrecvs, N - 1);
    }
  }
}

TEST(Ring, ZigzagBlocksAndEventChain) {
  const std::int64_t N = 4;
  const Workload w = base(ScheduleKind::ZigzagRing, N);
  const Schedule s = make_schedule(w);
  const std::int64_t c = w.seq / (2 * N);
  for (const auto& r : s.ranks) {
    SCOPED_TRACE(r.rank);
    // Issue order: SendRecv(i) then Attend(i); the last step has no SendRecv.
    ASSERT_EQ(r.ops.size(), static_cast<std::size_t>(2 * N - 1));
    std::vector<const Op*> sr, at;
    for (const Op& op : r.ops) (op.kind == OpKind::SendRecv ? sr : at).push_back(&op);
    for (std::int64_t i = 0; i < N; ++i) {
      const Op& a = *at[static_cast<std::size_t>(i)];
      const std::int64_t src = ((r.rank - i) % N + N) % N;
      EXPECT_EQ(a.step, i);
      EXPECT_EQ(a.attn.kv_src, src);
      EXPECT_EQ(a.attn.kv_slot, i == 0 ? 0 : 1 + (i - 1) % 2);
      EXPECT_EQ(block_pairs(a.attn), i == 0 ? 2 * c * c + c : 2 * c * c);
      if (i == 0) {
        EXPECT_EQ(a.attn.mask, AttnMask::Causal);
      } else if (src < r.rank) {
        EXPECT_EQ(a.attn.q_len, 2 * c);
        EXPECT_EQ(a.attn.kv_len, c);
      } else {
        EXPECT_EQ(a.attn.q_off, c);
        EXPECT_EQ(a.attn.kv_len, 2 * c);
      }
      // Attend(i) waits for the receive of SendRecv(i-1).
      const std::int32_t recv_event = i >= 1 ? sr[static_cast<std::size_t>(i - 1)]->record : kNoEvent;
      EXPECT_EQ(a.wait[0], recv_event);
      if (i + 1 < N) {
        const Op& x = *sr[static_cast<std::size_t>(i)];
        EXPECT_EQ(x.step, i);
        EXPECT_EQ(x.send.peer, (r.rank + 1) % N);
        EXPECT_EQ(x.recv.peer, (r.rank + N - 1) % N);
        EXPECT_EQ(x.send.slot, a.attn.kv_slot);
        EXPECT_EQ(x.recv.slot, 1 + i % 2);
        // SendRecv(i) overwrites the slot Attend(i-1) read: it waits on it (slot 2 is fresh at i=1).
        const std::int32_t free_event = i >= 2 ? at[static_cast<std::size_t>(i - 1)]->record : kNoEvent;
        EXPECT_EQ(x.wait[0], free_event);
      }
    }
  }
}

TEST(Ring, Fp32BackwardRotatesAccumulatorsHome) {
  const std::int64_t N = 4;
  Workload w = base(ScheduleKind::ZigzagRing, N, Mask::Causal, PassSet::Bwd);
  const Schedule s = make_schedule(w);
  ASSERT_EQ(s.streams.size(), 3u);
  for (const auto& r : s.ranks) {
    int kv = 0, dkv = 0, adds = 0;
    for (const Op& op : r.ops) {
      if (op.kind == OpKind::SendRecv && op.stream == 1) {
        ++kv;
        EXPECT_EQ(op.send.channel, 0);
        EXPECT_EQ(op.buffer, BufferKind::KV);
      }
      if (op.kind == OpKind::SendRecv && op.stream == 2) {
        ++dkv;
        EXPECT_EQ(op.send.channel, 1);
        EXPECT_EQ(op.buffer, BufferKind::DKV);
        EXPECT_EQ(op.send.peer, (r.rank + 1) % N);
        EXPECT_EQ(op.bytes, 2 * w.batch * (w.seq / N) * w.kv_heads * w.head_dim * 4);
        // It sends the accumulator its step's DkvAdd just wrote, so it waits on that op.
        const Op& prev = r.ops[static_cast<std::size_t>(op.id - 1)];
        ASSERT_EQ(prev.kind, OpKind::DkvAdd);
        EXPECT_EQ(op.wait[0], prev.record);
      }
      adds += op.kind == OpKind::DkvAdd;
    }
    EXPECT_EQ(kv, N - 1);
    EXPECT_EQ(dkv, N);
    EXPECT_EQ(adds, N);
  }
}

// The fills the runtime makes (Op::fills, checked against the executor in executor_host_test): the first
// compute op of each pass starts the accumulators, the first AttendBwd computes the backward's delta, and
// every ring AttendBwd clears the dK/dV scratch.
TEST(Ring, FillsStartThePassesAndClearTheScratch) {
  const std::int64_t N = 4;
  Workload w = base(ScheduleKind::ZigzagRing, N, Mask::Causal, PassSet::FwdBwd);
  const Schedule s = make_schedule(w);
  const Bytes s_tok = w.seq / N, B = w.batch, D = w.head_dim;
  const Bytes o = B * s_tok * w.heads * D * 4, lse = B * s_tok * w.heads * 4;
  const Bytes dkv = B * s_tok * w.kv_heads * 2 * D * 4;
  for (const auto& r : s.ranks) {
    bool fwd_started = false, bwd_started = false, delta = false;
    for (const Op& op : r.ops) {
      Bytes want = 0;
      std::int32_t kernels = 0;
      if (op.stream == 0 && op.pass == OpPass::Fwd && !fwd_started) {
        fwd_started = true;
        want += o + lse;  // O = 0, LSE = -inf
        kernels += 2;
      }
      if (op.stream == 0 && op.pass == OpPass::Bwd && !bwd_started) {
        bwd_started = true;
        want += o + 2 * dkv;  // dQ and the two fp32 accumulator slots
        kernels += 3;
      }
      if (op.kind == OpKind::AttendBwd) {
        want += dkv;  // the scratch
        kernels += 1;
        if (!delta) {  // the backward's delta: reads O (fp32) and dO, writes a float per row and head
          delta = true;
          want += o + o / 4 * w.elem_bytes() + lse;
          kernels += 1;
        }
      }
      if (op.kind == OpKind::DkvAdd) kernels += 1;  // the add's second plane (dV after dK)
      EXPECT_EQ(op.fill_bytes, want) << "rank " << r.rank << " op " << op.id;
      EXPECT_EQ(op.fills, kernels) << "rank " << r.rank << " op " << op.id;
    }
    EXPECT_TRUE(fwd_started && bwd_started);
  }
}

// Allgather with its gathered dK/dV in the input dtype: attention adds in fp32, so every AttendBwd also
// zeroes its key rows of the fp32 stage and adds them, converting, into the slot (two memory kernels, sized
// by the block, not the gathered range), and the stage counts in the backward's memory. fp32 slots need
// neither.
TEST(AllGather, InputDkvStagesEachBlockInFp32) {
  const std::int64_t N = 4;
  for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
    Workload w = base(ScheduleKind::AllGather, N, Mask::Causal, PassSet::Bwd);
    w.balance = Balance::Contiguous;
    w.dkv = dkv;
    SCOPED_TRACE(to_string(dkv));
    const Schedule s = make_schedule(w);
    const Bytes s_tok = w.seq / N, B = w.batch, D = w.head_dim, e = w.elem_bytes();
    const Bytes stage = B * w.seq * w.kv_heads * 2 * D * 4;
    for (const auto& r : s.ranks) {
      const Op* bwd = nullptr;
      for (const Op& op : r.ops)
        if (op.kind == OpKind::AttendBwd) bwd = &op;
      ASSERT_NE(bwd, nullptr);
      ASSERT_EQ(bwd->attn.kv_len, (r.rank + 1) * s_tok);  // the causal prefix
      const Bytes o = B * s_tok * w.heads * D * 4;
      Bytes want = o + (o + o / 4 * e + B * s_tok * w.heads * 4);  // dQ (the pass's first op) and the delta
      std::int32_t kernels = 2;
      want += B * w.seq * w.kv_heads * 2 * D * (dkv == DkvVariant::Input ? e : 4);  // the fresh slot
      kernels += 1;
      if (dkv == DkvVariant::Input) {
        const Bytes block = B * bwd->attn.kv_len * w.kv_heads * 2 * D;
        want += block * 4 + block * (4 + e);  // zero the stage's rows, add them into the slot
        // The zeroing is a kernel per plane and batch entry unless the rows are the whole stage (the last
        // rank's causal prefix); the add, a kernel per plane.
        kernels += (bwd->attn.kv_len < w.seq ? 2 * static_cast<std::int32_t>(B) : 1) + 2;
      }
      EXPECT_EQ(bwd->fill_bytes, want) << "rank " << r.rank;
      EXPECT_EQ(bwd->fills, kernels) << "rank " << r.rank;
      Bytes staged = 0;
      for (const BufferUse& b : r.buffers)
        if (b.name == "dkv_stage_fp32") {
          EXPECT_TRUE(b.bwd && !b.fwd);
          staged += b.bytes;
        }
      EXPECT_EQ(staged, dkv == DkvVariant::Input ? stage : 0) << "rank " << r.rank;
    }
  }
}

TEST(Ring, InputBackwardIsReversedAndPacked) {
  const std::int64_t N = 4;
  Workload w = base(ScheduleKind::ZigzagRing, N, Mask::Causal, PassSet::Bwd);
  w.dkv = DkvVariant::Input;
  const Schedule s = make_schedule(w);
  ASSERT_EQ(s.streams.size(), 2u);
  const Bytes m = 2 * w.batch * (w.seq / N) * w.kv_heads * w.head_dim * w.elem_bytes();
  for (const auto& r : s.ranks) {
    std::vector<const Op*> sr, bwd;
    for (const Op& op : r.ops) {
      if (op.kind == OpKind::SendRecv) sr.push_back(&op);
      if (op.kind == OpKind::AttendBwd) bwd.push_back(&op);
    }
    EXPECT_EQ(r.ops[0].kind, OpKind::Layout);  // stage the saved block into packed slot 0
    ASSERT_EQ(sr.size(), static_cast<std::size_t>(N));
    ASSERT_EQ(bwd.size(), static_cast<std::size_t>(N));
    for (std::int64_t i = 0; i < N; ++i) {
      const Op& x = *sr[static_cast<std::size_t>(i)];
      EXPECT_EQ(x.buffer, BufferKind::KvDkv);
      EXPECT_EQ(x.send.peer, (r.rank + N - 1) % N);
      EXPECT_EQ(x.recv.peer, (r.rank + 1) % N);
      EXPECT_EQ(x.bytes, (i <= N - 2 ? m : 0) + (i >= 1 ? m : 0));
      EXPECT_EQ(bwd[static_cast<std::size_t>(i)]->attn.kv_src, (r.rank + 1 + i) % N);
    }
    EXPECT_EQ(bwd.back()->attn.kv_src, r.rank);  // the last block is the rank's own: its dK/dV is home
  }
}

// The zigzag reorder is an in-place copy through a row map: a kernel per plane into the scratch (the map
// permutes rows within it, whatever N), then a kernel per plane back, writing the bytes a second time. The
// op counts one kernel and its bytes; its fills the rest (the executor counts its real copies and checks
// them against these in every host test).
TEST(AllGather, ZigzagReorderCountsItsCopyKernels) {
  for (std::int64_t N : {2, 4, 8}) {
    Workload w = base(ScheduleKind::AllGather, N, Mask::Causal, PassSet::FwdBwd);
    w.kv_head_groups = 2;  // group 1's reorders start no pass: their fills are the copy's alone
    const Schedule s = make_schedule(w);
    int seen = 0;
    for (const auto& r : s.ranks)
      for (const Op& op : r.ops) {
        if (op.kind != OpKind::Layout || op.step != 1) continue;
        ++seen;
        EXPECT_EQ(op.fills, 3) << "N=" << N << " rank " << r.rank << " op " << op.id;  // 2 planes, twice, less the op's
        EXPECT_EQ(op.fill_bytes, op.bytes) << "N=" << N << " rank " << r.rank << " op " << op.id;
      }
    EXPECT_EQ(seen, 3 * N) << "group 1's reorders per rank: K/V forward, K/V gathered again and dK/dV backward";
  }
}

TEST(AllGather, PipelinedGathersOverlapCompute) {
  Workload w = base(ScheduleKind::AllGather, 4);
  w.kv_heads = 4;
  w.kv_head_groups = 4;
  const Schedule s = make_schedule(w);
  ASSERT_EQ(s.groups.size(), 1u);
  const RankProgram& r = s.ranks[1];
  // gather 0, gather 1, then compute g (layout + two attends), gather g+2.
  std::vector<std::string> names;
  for (const Op& op : r.ops) names.push_back(op_name(op));
  const std::vector<std::string> want = {
      "fwd/step0/allgather", "fwd/step1/allgather", "fwd/step0/layout", "fwd/step0/attend",
      "fwd/step0/attend",    "fwd/step2/allgather", "fwd/step1/layout", "fwd/step1/attend",
      "fwd/step1/attend",    "fwd/step3/allgather", "fwd/step2/layout", "fwd/step2/attend",
      "fwd/step2/attend",    "fwd/step3/layout",    "fwd/step3/attend", "fwd/step3/attend"};
  EXPECT_EQ(names, want);
  // Gather 1 does not wait; gather 2 reuses slot 0 and waits for group 0's last attention.
  EXPECT_EQ(r.ops[1].wait[0], kNoEvent);
  EXPECT_EQ(r.ops[5].wait[0], r.ops[4].record);
  EXPECT_NE(r.ops[4].record, kNoEvent);
  // Layout g waits for gather g.
  EXPECT_EQ(r.ops[2].wait[0], r.ops[0].record);
  EXPECT_EQ(r.ops[6].wait[0], r.ops[1].record);
  for (const Op& op : r.ops) {
    if (op.kind == OpKind::Attend) {
      EXPECT_EQ(op.attn.head_count, 1);
      EXPECT_EQ(op.attn.head_begin, op.step);
      EXPECT_EQ(op.attn.kv_slot, op.step % 2);
    }
  }
}

TEST(Ulysses, OpsAndHeads) {
  Workload w = base(ScheduleKind::Ulysses, 2, Mask::Causal, PassSet::FwdBwd);
  w.ulysses = 2;
  const Schedule s = make_schedule(w);
  for (const auto& r : s.ranks) {
    std::vector<std::string> names;
    for (const Op& op : r.ops) names.push_back(op_name(op));
    const std::vector<std::string> want = {"fwd/step0/alltoall", "fwd/step0/attend",     "fwd/step0/alltoall",
                                           "bwd/step0/alltoall", "bwd/step0/attend_bwd", "bwd/step0/alltoall"};
    EXPECT_EQ(names, want);
    const Op& a = r.ops[1];
    EXPECT_EQ(a.attn.q_len, w.seq);
    EXPECT_EQ(a.attn.kv_len, w.seq);
    EXPECT_EQ(a.attn.head_begin, r.rank * 2);
    EXPECT_EQ(a.attn.head_count, 2);
    EXPECT_EQ(r.ops[0].buffer, BufferKind::QKV);
    EXPECT_EQ(r.ops[2].buffer, BufferKind::O);
    EXPECT_EQ(r.ops[3].buffer, BufferKind::DO);
    EXPECT_EQ(r.ops[5].buffer, BufferKind::DQKV);
  }
}

// Fewer KV heads than the group (Hkv = 2, U = 8): each is repeated 4 times, so a rank receives one KV
// head per peer and, after the backward all-to-all, sums each head's 4 dK/dV copies.
TEST(Ulysses, RepeatsKvHeadsUpToTheGroup) {
  Workload w = base(ScheduleKind::Ulysses, 8, Mask::Causal, PassSet::FwdBwd);
  w.heads = 8;
  w.kv_heads = 2;
  const Schedule s = make_schedule(w);
  const Bytes B = w.batch, sl = w.seq / 8, D = w.head_dim, b = w.elem_bytes();
  const Bytes block = B * sl * w.kv_heads * 2 * D * b;  // the rank's dK/dV output
  for (const auto& r : s.ranks) {
    std::vector<std::string> names;
    for (const Op& op : r.ops) names.push_back(op_name(op));
    const std::vector<std::string> want = {"fwd/step0/alltoall", "fwd/step0/attend",     "fwd/step0/alltoall",
                                           "bwd/step0/alltoall", "bwd/step0/attend_bwd", "bwd/step0/alltoall",
                                           "bwd/step0/layout"};
    ASSERT_EQ(names, want);
    EXPECT_EQ(r.ops[0].bytes_per_peer, B * sl * (1 + 2 * 1) * D * b);  // H/U query heads, one K and one V head
    EXPECT_EQ(r.ops[5].bytes_per_peer, B * sl * (1 + 2 * 1) * D * b);
    const Op& sum = r.ops[6];
    EXPECT_EQ(sum.buffer, BufferKind::DQKV);
    EXPECT_EQ(sum.stream, 0);
    EXPECT_EQ(sum.bytes, block);  // one of the three adds; the other two with their five more kernels
    EXPECT_EQ(sum.fill_bytes, 2 * block);
    EXPECT_EQ(sum.fills, 2 * 3 - 1);
    EXPECT_TRUE(std::find(sum.wait.begin(), sum.wait.end(), r.ops[5].record) != sum.wait.end() &&
                r.ops[5].record != kNoEvent)
        << "the sum must wait for the all-to-all";
    Bytes replicas = 0;
    for (const BufferUse& u : r.buffers)
      if (u.name == "a2a_dkv_replicas") replicas = u.bytes;
    EXPECT_EQ(replicas, 3 * block);
  }
  w.kv_heads = 8;  // as many KV heads as ranks: split, nothing to sum
  const Schedule split = make_schedule(w);
  for (const Op& op : split.ranks[0].ops) EXPECT_NE(op.kind, OpKind::Layout);
}

TEST(Hybrid, RingsAreStridedAndGroupsAdjacent) {
  Workload w = base(ScheduleKind::Hybrid, 8, Mask::Causal, PassSet::FwdBwd);
  w.ulysses = 2;  // U = 2, R = 4
  w.kv_heads = 2;
  const Schedule s = make_schedule(w);
  ASSERT_EQ(s.groups.size(), 4u);
  EXPECT_EQ(s.groups[1], (std::vector<std::int32_t>{2, 3}));
  for (const auto& r : s.ranks) {
    for (const Op& op : r.ops) {
      if (op.kind == OpKind::SendRecv) {
        EXPECT_EQ(op.send.peer, (r.rank + 2) % 8);
        EXPECT_EQ(op.recv.peer, (r.rank + 8 - 2) % 8);
        if (op.buffer == BufferKind::KV) {
          EXPECT_EQ(op.bytes, 2 * w.batch * (w.seq / 4) * (w.kv_heads / 2) * w.head_dim * w.elem_bytes());
        }
      }
      if (op.kind == OpKind::AllToAll) {
        EXPECT_EQ(op.group, r.rank / 2);
      }
      if (op.kind == OpKind::Attend || op.kind == OpKind::AttendBwd) {
        EXPECT_EQ(op.attn.head_begin, (r.rank % 2) * 2);
        EXPECT_EQ(op.attn.head_count, 2);
        EXPECT_EQ(op.attn.kv_src % 2, r.rank % 2);  // blocks come from the rank's own ring
      }
    }
  }
}

TEST(Generators, FwdBwdContinuesEventsAcrossPasses) {
  Workload w = base(ScheduleKind::ZigzagRing, 3, Mask::Causal, PassSet::FwdBwd);
  w.seq = 48;
  w.gpus_per_node = 3;
  const Schedule s = make_schedule(w);
  ASSERT_NO_THROW(check_schedule(s));
  // The backward's first K/V receive (into slot 1) must wait for the forward's last reader of slot 1
  // (N = 3: the forward reads slot 1 at step 1).
  for (const auto& r : s.ranks) {
    const Op* first_bwd_sr = nullptr;
    const Op* fwd_step1 = nullptr;
    for (const Op& op : r.ops) {
      if (op.pass == OpPass::Fwd && op.kind == OpKind::Attend && op.step == 1) fwd_step1 = &op;
      if (op.pass == OpPass::Bwd && op.kind == OpKind::SendRecv && !first_bwd_sr) first_bwd_sr = &op;
    }
    ASSERT_TRUE(first_bwd_sr && fwd_step1);
    EXPECT_EQ(first_bwd_sr->recv.slot, 1);
    EXPECT_NE(fwd_step1->record, kNoEvent);
    EXPECT_TRUE(first_bwd_sr->wait[0] == fwd_step1->record || first_bwd_sr->wait[1] == fwd_step1->record);
  }
}

TEST(Generators, LargeZigzagRingIsFast) {
  // N = 1024 zigzag ring forward + backward: about 6.3 million ops.
  Workload w;
  w.seq = 1024 * 1024;
  w.cp = 1024;
  w.schedule = ScheduleKind::ZigzagRing;
  w.pass = PassSet::FwdBwd;
  const auto t0 = std::chrono::steady_clock::now();
  const Schedule s = make_schedule(w);
  const auto t1 = std::chrono::steady_clock::now();
  const std::int64_t N = w.cp;
  EXPECT_EQ(s.num_ops(), N * ((2 * N - 1) + (4 * N - 1)));
  std::printf("N=1024 zigzag fwd+bwd: %lld ops generated in %.3f s\n", static_cast<long long>(s.num_ops()),
              std::chrono::duration<double>(t1 - t0).count());
}

}  // namespace
}  // namespace cpscope
