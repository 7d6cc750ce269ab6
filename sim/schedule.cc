// Schedule IR: names, block pair counts, the structural checker and the generator dispatch.
//
// Operand conventions of the generators (each sim/generators/*.cc documents its slots):
//  - SendRecv: Op::send / Op::recv with peer >= 0 (CP ranks); Op::bytes = the send's bytes;
//    Transfer::bytes per direction. Channel 0 K/V (and TE's packed [K/V; dK/dV]), channel 1 fp32 dK/dV.
//  - Every other op has peer -1 in both and uses them as local operands: Op::send is the slotted
//    buffer it reads, Op::recv the slotted buffer it writes (BufferKind::None: none / implicit):
//      Attend      send = K/V read (also AttnBlock::kv_slot); reads Q, writes O/LSE implicitly.
//      AttendBwd   send = K/V read; recv = dK/dV destination, or None for the dkv scratch that the
//                  next DkvAdd consumes; reads Q, O/LSE, dO and adds into dQ implicitly.
//      DkvAdd      recv = the dK/dV accumulator it adds the scratch into.
//      Layout      send = source, recv = destination (equal when in place). With buffer DQKV (send = recv
//                  = DQKV): Ulysses' sum of the KV-head copies the backward all-to-all received (hybrid.cc).
//      AllGather   recv = gathered slot (reads the rank's K/V input).
//      ReduceScatter send = the gathered-range dK/dV slot (writes the rank's dK/dV output).
//      AllToAll    by Op::buffer: QKV writes Q and recv (K/V slot 0); O reads O; DO writes dO;
//                  DQKV reads dQ and send (where the ring left the rank's dK/dV).
//  - Op::bytes: bytes sent (SendRecv, collectives: (members-1)·bytes_per_peer) or the size of the
//    buffer a Layout/DkvAdd touches. FLOPs only on attention ops.
#include "sim/schedule.h"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>
#include <unordered_map>

#include "sim/error.h"
#include "sim/generators/generators.h"

namespace cpscope {
namespace {

constexpr std::array<std::string_view, kNumOpKinds> kOpKindNames = {
    "attend", "attend_bwd", "dkv_add", "layout", "sendrecv", "allgather", "alltoall", "reduce_scatter"};
static_assert(static_cast<int>(OpKind::ReduceScatter) + 1 == kNumOpKinds,
              "OpKind changed: update kNumOpKinds and kOpKindNames");
constexpr std::array<std::string_view, 13> kBufferNames = {"none", "q",  "k",   "v",      "kv",  "o",   "lse",
                                                           "do",   "dq", "dkv", "kv_dkv", "qkv", "dqkv"};
static_assert(static_cast<std::size_t>(BufferKind::DQKV) + 1 == kBufferNames.size(),
              "BufferKind changed: update kBufferNames");

bool is_attention(OpKind k) { return k == OpKind::Attend || k == OpKind::AttendBwd; }
bool is_collective(OpKind k) { return k == OpKind::AllGather || k == OpKind::AllToAll || k == OpKind::ReduceScatter; }

}  // namespace

std::string_view to_string(OpKind k) {
  const auto i = static_cast<std::size_t>(k);
  if (i >= kOpKindNames.size()) throw InternalError("unknown OpKind");
  return kOpKindNames[i];
}

std::string_view to_string(OpPass p) {
  switch (p) {
    case OpPass::Fwd:
      return "fwd";
    case OpPass::Bwd:
      return "bwd";
  }
  throw InternalError("unknown OpPass");
}

std::string_view to_string(BufferKind b) {
  const auto i = static_cast<std::size_t>(b);
  if (i >= kBufferNames.size()) throw InternalError("unknown BufferKind");
  return kBufferNames[i];
}

std::string_view to_string(AttnMask m) {
  switch (m) {
    case AttnMask::None:
      return "none";
    case AttnMask::Full:
      return "full";
    case AttnMask::Causal:
      return "causal";
  }
  throw InternalError("unknown AttnMask");
}

std::string op_name(const Op& op) {
  return fmt::format("{}/step{}/{}", to_string(op.pass), op.step, to_string(op.kind));
}

std::int64_t Schedule::num_ops() const {
  std::int64_t n = 0;
  for (const auto& r : ranks) n += static_cast<std::int64_t>(r.ops.size());
  return n;
}

std::vector<TransferMatch> match_transfers(const Schedule& s) {
  // Receives per (src, dst, channel) in the receiver's issue order, then each send takes the next one.
  std::unordered_map<std::uint64_t, std::vector<std::int32_t>> recvs;
  auto key = [](std::int64_t src, std::int64_t dst, std::uint8_t ch) {
    return (static_cast<std::uint64_t>(src) << 40) | (static_cast<std::uint64_t>(dst) << 8) | ch;
  };
  for (std::size_t r = 0; r < s.ranks.size(); ++r)
    for (const Op& op : s.ranks[r].ops)
      if (op.kind == OpKind::SendRecv && op.recv.peer >= 0)
        recvs[key(op.recv.peer, static_cast<std::int64_t>(r), op.recv.channel)].push_back(op.id);
  std::unordered_map<std::uint64_t, std::size_t> used;
  std::vector<TransferMatch> out;
  for (std::size_t r = 0; r < s.ranks.size(); ++r)
    for (const Op& op : s.ranks[r].ops) {
      if (op.kind != OpKind::SendRecv || op.send.peer < 0) continue;
      const std::uint64_t k = key(static_cast<std::int64_t>(r), op.send.peer, op.send.channel);
      const std::size_t i = used[k]++;
      const auto it = recvs.find(k);
      if (it == recvs.end() || i >= it->second.size()) continue;  // unmatched: check_schedule reports it
      out.push_back({static_cast<std::int32_t>(r), op.id, op.send.peer, it->second[i], op.send.channel, op.send.bytes});
    }
  return out;
}

std::int64_t block_pairs(const AttnBlock& a) {
  CPSCOPE_CHECK(a.q_len >= 0 && a.kv_len >= 0, fmt::format("negative block size {}x{}", a.q_len, a.kv_len));
  const std::int64_t q = a.q_len;
  const std::int64_t k = a.kv_len;
  switch (a.mask) {
    case AttnMask::None:
      return 0;
    case AttnMask::Full:
      return q * k;
    case AttnMask::Causal:
      break;
  }
  if (q == 0 || k == 0) return 0;
  // Row i sees clamp(i + o + 1, 0, k) keys. Rows below i0 = -o see none; rows from i1 = k - o - 1 on
  // see all k; rows in [i0, i1) see i + o + 1 (an arithmetic series).
  const std::int64_t o = a.causal_offset;
  const std::int64_t i0 = std::clamp<std::int64_t>(-o, 0, q);
  const std::int64_t i1 = std::clamp<std::int64_t>(k - o - 1, i0, q);
  const std::int64_t rows = i1 - i0;
  return rows * (o + 1) + rows * (i0 + i1 - 1) / 2 + (q - i1) * k;
}

namespace {

// Everything check_schedule needs to know about one rank's op, found in one pass.
[[noreturn]] void fail(const Schedule& s, std::size_t rank, std::size_t op, const std::string& what) {
  const Op& o = s.ranks[rank].ops[op];
  throw InternalError(fmt::format("check_schedule: rank {} op {} ({}): {}", rank, op, op_name(o), what));
}

std::uint64_t p2p_key(std::int64_t src, std::int64_t dst, std::uint8_t channel) {
  return (static_cast<std::uint64_t>(src) << 40) | (static_cast<std::uint64_t>(dst) << 8) | channel;
}

struct P2pEntry {
  std::int32_t op;  // global op index
  Bytes bytes;
  BufferKind buffer;
};

}  // namespace

// Besides the per-op and matching checks, a progress check executes the schedule abstractly under
// the IR's semantics (stream FIFOs, events, a SendRecv completes once the peers' matching ops have
// started, a collective once every member has reached it) and reports ops that can never run: a
// deadlock the engine or the runtime would hang on.
void check_schedule(const Schedule& s) {
  const auto n = static_cast<std::int64_t>(s.ranks.size());
  const Workload& w = s.workload;
  if (n != w.cp) throw InternalError(fmt::format("check_schedule: {} rank programs for cp = {}", n, w.cp));
  if (s.streams.empty() || s.streams.size() > 255) throw InternalError("check_schedule: bad stream count");
  for (std::size_t g = 0; g < s.groups.size(); ++g) {
    auto m = s.groups[g];
    if (m.empty()) throw InternalError(fmt::format("check_schedule: group {} is empty", g));
    std::sort(m.begin(), m.end());
    if (std::adjacent_find(m.begin(), m.end()) != m.end() || m.front() < 0 || m.back() >= n)
      throw InternalError(fmt::format("check_schedule: group {} has out-of-range or repeated members", g));
  }

  // Global op index base per rank.
  std::vector<std::int64_t> base(static_cast<std::size_t>(n) + 1, 0);
  for (std::int64_t r = 0; r < n; ++r) base[r + 1] = base[r] + static_cast<std::int64_t>(s.ranks[r].ops.size());
  if (base[n] >= (std::int64_t{1} << 31)) throw InternalError("check_schedule: more than 2^31 ops");
  const auto total = static_cast<std::size_t>(base[n]);
  auto rank_of = [&](std::int32_t gop) {
    return static_cast<std::size_t>(std::upper_bound(base.begin(), base.end(), gop) - base.begin() - 1);
  };

  std::vector<std::int32_t> recorder;  // per rank's events, flattened: op id that records it
  // Compact copies for the progress check: stream, kind, and the global op each wait depends on.
  std::vector<std::uint8_t> op_stream(total), op_kind(total);
  std::vector<std::int32_t> op_wait(2 * total, -1);
  std::vector<std::int64_t> ev_base(static_cast<std::size_t>(n) + 1, 0);
  std::unordered_map<std::uint64_t, std::vector<P2pEntry>> sends, recvs;
  // Collectives: per group, per member position, the member's collective ops on that group in order.
  std::vector<std::vector<std::vector<std::int32_t>>> coll(s.groups.size());
  for (std::size_t g = 0; g < s.groups.size(); ++g) coll[g].resize(s.groups[g].size());

  for (std::int64_t r = 0; r < n; ++r) {
    const RankProgram& prog = s.ranks[r];
    if (prog.rank != r) throw InternalError(fmt::format("check_schedule: ranks[{}] has rank {}", r, prog.rank));
    if (prog.num_events < 0) throw InternalError(fmt::format("check_schedule: rank {} num_events < 0", r));
    ev_base[r + 1] = ev_base[r] + prog.num_events;
    recorder.resize(static_cast<std::size_t>(ev_base[r + 1]), -1);
    std::int32_t* rec = recorder.data() + ev_base[r];
    for (std::size_t i = 0; i < prog.ops.size(); ++i) {
      const Op& op = prog.ops[i];
      const auto gop = static_cast<std::int32_t>(base[r] + static_cast<std::int64_t>(i));
      if (op.id != static_cast<std::int32_t>(i)) fail(s, r, i, fmt::format("id {} is not its index", op.id));
      if (op.stream >= s.streams.size()) fail(s, r, i, fmt::format("stream {} out of range", op.stream));
      op_stream[static_cast<std::size_t>(gop)] = op.stream;
      op_kind[static_cast<std::size_t>(gop)] = static_cast<std::uint8_t>(op.kind);
      for (std::size_t j = 0; j < op.wait.size(); ++j) {
        const std::int32_t e = op.wait[j];
        if (e == kNoEvent) continue;
        if (e < 0 || e >= prog.num_events) fail(s, r, i, fmt::format("waits on event {} out of range", e));
        if (rec[e] < 0) fail(s, r, i, fmt::format("waits on event {} before any op records it", e));
        op_wait[2 * static_cast<std::size_t>(gop) + j] = static_cast<std::int32_t>(base[r] + rec[e]);
      }
      if (op.record != kNoEvent) {
        if (op.record < 0 || op.record >= prog.num_events)
          fail(s, r, i, fmt::format("records event {} out of range", op.record));
        if (rec[op.record] >= 0)
          fail(s, r, i, fmt::format("records event {} already recorded by op {}", op.record, rec[op.record]));
        rec[op.record] = static_cast<std::int32_t>(i);
      }

      if (is_attention(op.kind)) {
        const AttnBlock& a = op.attn;
        if (a.mask == AttnMask::None) fail(s, r, i, "attention without a mask");
        if (a.q_len < 0 || a.kv_len < 0 || a.q_off < 0 || a.kv_off < 0) fail(s, r, i, "negative block extent");
        if (a.head_count <= 0 || a.head_begin < 0 || a.head_begin + a.head_count > w.heads)
          fail(s, r, i,
               fmt::format("heads [{}, {}) outside [0, {})", a.head_begin, a.head_begin + a.head_count, w.heads));
        const Flops expect =
            (op.kind == OpKind::Attend ? 4 : 10) * w.batch * w.head_dim * a.head_count * block_pairs(a);
        if (op.flops != expect) fail(s, r, i, fmt::format("flops {} but the block has {}", op.flops, expect));
      } else if (op.flops != 0) {
        fail(s, r, i, "FLOPs on a non-attention op");
      }

      if (op.kind == OpKind::SendRecv) {
        if (op.send.peer < 0 && op.recv.peer < 0) fail(s, r, i, "SendRecv with neither send nor receive");
        for (const Transfer* t : {&op.send, &op.recv}) {
          if (t->peer < 0) continue;
          if (t->peer >= n || t->peer == r) fail(s, r, i, fmt::format("peer {} invalid", t->peer));
          if (t->bytes < 0) fail(s, r, i, "negative transfer bytes");
        }
        if (op.bytes != (op.send.peer >= 0 ? op.send.bytes : 0)) fail(s, r, i, "bytes differ from the send's bytes");
        if (op.send.peer >= 0)
          sends[p2p_key(r, op.send.peer, op.send.channel)].push_back({gop, op.send.bytes, op.send.buffer});
        if (op.recv.peer >= 0)
          recvs[p2p_key(op.recv.peer, r, op.recv.channel)].push_back({gop, op.recv.bytes, op.recv.buffer});
      } else {
        if (op.send.peer >= 0 || op.recv.peer >= 0) fail(s, r, i, "a peer on an op that is not a SendRecv");
        if (op.bytes < 0) fail(s, r, i, "negative bytes");
      }

      if (is_collective(op.kind)) {
        if (op.group < 0 || static_cast<std::size_t>(op.group) >= s.groups.size())
          fail(s, r, i, fmt::format("group {} out of range", op.group));
        const auto& members = s.groups[static_cast<std::size_t>(op.group)];
        const auto it = std::find(members.begin(), members.end(), static_cast<std::int32_t>(r));
        if (it == members.end()) fail(s, r, i, fmt::format("rank is not a member of group {}", op.group));
        if (op.bytes_per_peer < 0) fail(s, r, i, "negative bytes_per_peer");
        const auto size = static_cast<Bytes>(members.size());
        if (op.bytes != (size - 1) * op.bytes_per_peer)
          fail(s, r, i,
               fmt::format("bytes {} != (members-1)·bytes_per_peer = {}", op.bytes, (size - 1) * op.bytes_per_peer));
        if (op.staged_send < 0 || op.staged_recv < 0 || op.staged_copies < 0 ||
            (op.staged() > 0) != (op.staged_copies > 0))
          fail(s, r, i, fmt::format("staged {} + {} bytes in {} copies", op.staged_send, op.staged_recv,
                                    op.staged_copies));
        coll[static_cast<std::size_t>(op.group)][static_cast<std::size_t>(it - members.begin())].push_back(gop);
      } else if (op.group != -1) {
        fail(s, r, i, "a group on an op that is not a collective");
      } else if (op.staged() != 0 || op.staged_copies != 0) {
        fail(s, r, i, "staging on an op that is not a collective");
      }
      const bool compute = op.kind == OpKind::Attend || op.kind == OpKind::AttendBwd || op.kind == OpKind::DkvAdd ||
                           op.kind == OpKind::Layout;
      // Kernels without bytes of their own are a copy's further planes or row runs (the op counts the bytes).
      if (op.fills < 0 || op.fill_bytes < 0 || (op.fill_bytes > 0 && op.fills == 0) || (!compute && op.fills != 0))
        fail(s, r, i, fmt::format("fills {} bytes in {} kernels (only compute ops fill, bytes need kernels)",
                                  op.fill_bytes, op.fills));
    }
  }

  auto op_at = [&](std::int32_t gop) -> const Op& {
    const std::size_t r = rank_of(gop);
    return s.ranks[r].ops[static_cast<std::size_t>(gop - base[r])];
  };
  auto fail_at = [&](std::int32_t gop, const std::string& what) {
    const std::size_t r = rank_of(gop);
    fail(s, r, static_cast<std::size_t>(gop - base[r]), what);
  };

  // Point-to-point matching: the k-th send a->b on a channel pairs with the k-th receive at b from a.
  std::vector<std::int32_t> send_partner(total, -1), recv_partner(total, -1);
  for (const auto& [key, sv] : sends) {
    const auto src = static_cast<std::int64_t>(key >> 40);
    const auto dst = static_cast<std::int64_t>((key >> 8) & 0xffffffff);
    const auto ch = static_cast<int>(key & 0xff);
    const auto it = recvs.find(key);
    const std::size_t nr = it == recvs.end() ? 0 : it->second.size();
    if (nr != sv.size())
      fail_at(sv.front().op,
              fmt::format("{} sends {} -> {} on channel {} but {} receives", sv.size(), src, dst, ch, nr));
    for (std::size_t k = 0; k < sv.size(); ++k) {
      const P2pEntry& a = sv[k];
      const P2pEntry& b = it->second[k];
      if (a.bytes != b.bytes || a.buffer != b.buffer)
        fail_at(a.op, fmt::format("send #{} {} -> {} on channel {} ({} bytes of {}) meets a receive of {} bytes of {}",
                                  k, src, dst, ch, a.bytes, to_string(a.buffer), b.bytes, to_string(b.buffer)));
      // The runtime's nccl transport gives each stream its own communicators (concurrent streams would
      // interleave one's operations): a pair on two streams would wait for each other forever there.
      if (op_at(a.op).stream != op_at(b.op).stream)
        fail_at(a.op, fmt::format("send #{} {} -> {} on channel {} is on stream {} but its receive on stream {}: the "
                                  "runtime gives each stream its own communicator, where they would never meet",
                                  k, src, dst, ch, op_at(a.op).stream, op_at(b.op).stream));
      send_partner[static_cast<std::size_t>(a.op)] = b.op;
      recv_partner[static_cast<std::size_t>(b.op)] = a.op;
    }
  }
  for (const auto& [key, rv] : recvs)
    if (!sends.contains(key))
      fail_at(rv.front().op, fmt::format("receives from {} on channel {} that nobody sends", key >> 40, key & 0xff));

  // Collectives: every member issues the same sequence on each group.
  std::vector<std::int32_t> coll_inst(total, -1);
  std::vector<std::vector<std::int32_t>> inst_ops;  // instance -> the members' ops
  for (std::size_t g = 0; g < s.groups.size(); ++g) {
    const auto& seqs = coll[g];
    for (std::size_t m = 1; m < seqs.size(); ++m) {
      if (seqs[m].size() != seqs[0].size())
        throw InternalError(fmt::format("check_schedule: group {}: rank {} issues {} collectives, rank {} issues {}", g,
                                        s.groups[g][m], seqs[m].size(), s.groups[g][0], seqs[0].size()));
      for (std::size_t k = 0; k < seqs[0].size(); ++k) {
        const Op& a = op_at(seqs[0][k]);
        const Op& b = op_at(seqs[m][k]);
        if (a.kind != b.kind || a.bytes_per_peer != b.bytes_per_peer || a.buffer != b.buffer)
          fail_at(seqs[m][k], fmt::format("collective #{} on group {} is {} of {} bytes/peer, rank {} issues {} of {}",
                                          k, g, to_string(b.kind), b.bytes_per_peer, s.groups[g][0], to_string(a.kind),
                                          a.bytes_per_peer));
        if (a.stream != b.stream)
          fail_at(seqs[m][k], fmt::format("collective #{} on group {} is on stream {}, rank {} issues it on stream {}: "
                                          "the runtime gives each stream its own communicator, where they would "
                                          "never meet",
                                          k, g, b.stream, s.groups[g][0], a.stream));
      }
    }
    for (std::size_t k = 0; k < (seqs.empty() ? 0 : seqs[0].size()); ++k) {
      const auto inst = static_cast<std::int32_t>(inst_ops.size());
      auto& ops = inst_ops.emplace_back();
      for (const auto& seq : seqs) {
        ops.push_back(seq[k]);
        coll_inst[static_cast<std::size_t>(seq[k])] = inst;
      }
    }
  }

  // Progress: run the schedule abstractly until nothing more can start. Works on the compact per-op
  // arrays filled in the first pass, so the large Op structs are not walked again.
  std::vector<std::uint8_t> started(total, 0), done(total, 0);
  std::vector<std::int32_t> inst_started(inst_ops.size(), 0);
  const std::size_t nstreams = s.streams.size();
  std::vector<std::size_t> head(static_cast<std::size_t>(n) * nstreams, 0);  // next op index per (rank, stream)
  std::vector<std::int32_t> work;
  std::vector<std::uint8_t> queued(static_cast<std::size_t>(n), 0);
  auto push = [&](std::size_t r) {
    if (!queued[r]) {
      queued[r] = 1;
      work.push_back(static_cast<std::int32_t>(r));
    }
  };
  auto complete = [&](std::int32_t gop) {
    done[static_cast<std::size_t>(gop)] = 1;
    push(rank_of(gop));
  };
  // Every send and receive has a partner by now, so "has a send" is "has a send partner".
  auto try_complete_p2p = [&](std::int32_t gop) {
    const auto i = static_cast<std::size_t>(gop);
    if (!started[i] || done[i]) return;
    const std::int32_t sp = send_partner[i];
    const std::int32_t rp = recv_partner[i];
    if (sp >= 0 && !started[static_cast<std::size_t>(sp)]) return;
    if (rp >= 0 && !started[static_cast<std::size_t>(rp)]) return;
    complete(gop);
  };
  for (std::int64_t r = 0; r < n; ++r) push(static_cast<std::size_t>(r));
  while (!work.empty()) {
    const auto r = static_cast<std::size_t>(work.back());
    work.pop_back();
    queued[r] = 0;
    const std::size_t first = static_cast<std::size_t>(base[r]);
    const std::size_t count = static_cast<std::size_t>(base[r + 1] - base[r]);
    for (std::size_t st = 0; st < nstreams; ++st) {
      std::size_t& h = head[r * nstreams + st];
      while (true) {
        while (h < count && op_stream[first + h] != st) ++h;
        if (h >= count) break;
        const std::size_t gi = first + h;
        if (done[gi]) {
          ++h;
          continue;
        }
        if (started[gi]) break;
        const std::int32_t w0 = op_wait[2 * gi], w1 = op_wait[2 * gi + 1];
        if ((w0 >= 0 && !done[static_cast<std::size_t>(w0)]) || (w1 >= 0 && !done[static_cast<std::size_t>(w1)])) break;
        started[gi] = 1;
        const auto gop = static_cast<std::int32_t>(gi);
        const auto kind = static_cast<OpKind>(op_kind[gi]);
        if (kind == OpKind::SendRecv) {
          try_complete_p2p(gop);
          if (send_partner[gi] >= 0) try_complete_p2p(send_partner[gi]);
          if (recv_partner[gi] >= 0) try_complete_p2p(recv_partner[gi]);
        } else if (is_collective(kind)) {
          const auto inst = static_cast<std::size_t>(coll_inst[gi]);
          if (++inst_started[inst] == static_cast<std::int32_t>(inst_ops[inst].size()))
            for (std::int32_t m : inst_ops[inst]) complete(m);
        } else {
          complete(gop);
        }
        if (!done[gi]) break;
      }
    }
  }
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::size_t i = 0; i < s.ranks[r].ops.size(); ++i) {
      if (done[static_cast<std::size_t>(base[r]) + i]) continue;
      std::string heads;
      const auto& ops = s.ranks[r].ops;
      for (std::size_t st = 0; st < nstreams; ++st) {
        std::size_t h = head[static_cast<std::size_t>(r) * nstreams + st];
        while (h < ops.size() && (ops[h].stream != st || done[static_cast<std::size_t>(base[r]) + h])) ++h;
        if (h < ops.size())
          heads += fmt::format("{}{} at op {} ({}{})", heads.empty() ? "" : "; ", s.streams[st], h, op_name(ops[h]),
                               started[static_cast<std::size_t>(base[r]) + h] ? ", started" : ", waiting");
      }
      fail(s, static_cast<std::size_t>(r), i, "never runs (deadlock); stream heads: " + heads);
    }
  }
}

std::int64_t schedule_ops_estimate(const Workload& w) {
  const bool fwd = w.pass != PassSet::Bwd, bwd = w.pass != PassSet::Fwd;
  std::int64_t per_rank = 16 + 8 * w.kv_head_groups;
  if (w.schedule != ScheduleKind::AllGather) {
    const std::int64_t R = w.ring_size();  // ring_steps.cc: 2R forward, 4R + 1 backward
    per_rank += (fwd ? 2 * R : 0) + (bwd ? 4 * R + 1 : 0);
  }
  return w.cp * per_rank;
}

void check_schedule_size(const Workload& w, Bytes available) {
  const std::int64_t ops = schedule_ops_estimate(w);
  const std::string what =
      fmt::format("{} ranks of {} give about {:.3g} ops", w.cp, to_string(w.schedule), static_cast<double>(ops));
  constexpr const char* kHint = "a ring has about 6·N² ops: use a smaller cp, or hybrid with a larger ulysses";
  if (ops >= std::numeric_limits<std::int32_t>::max())
    throw InputError("cp", fmt::format("{}, more than the engine's 2^31 op indices ({})", what, kHint));
  // Each op is held as an Op, then as the engine's record, its times and its set-up state (about 64
  // bytes; a Timeline for --trace or --profile adds its intervals), and the process needs some
  // headroom: a 4096-rank ring (1.0e8 ops) grew past 15 GiB within a minute on a 22 GiB machine.
  const double need = static_cast<double>(ops) * static_cast<double>(sizeof(Op) + 64);
  if (available > 0 && need > 0.9 * static_cast<double>(available))
    throw InputError("cp", fmt::format("{}, which need at least {:.1f} GiB, more than 90% of the {:.1f} GiB of memory "
                                       "available here ({})",
                                       what, need / (1 << 30), static_cast<double>(available) / (1 << 30), kHint));
}

Bytes available_memory_bytes() {
  if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    long long kib = -1;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "MemAvailable: %lld kB", &kib) == 1) break;
    std::fclose(f);
    if (kib > 0) return static_cast<Bytes>(kib) * 1024;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<Bytes>(pages) * page : 0;
}

std::vector<StagingNeed> staging_needs(const Schedule& schedule, std::int32_t rank, bool replay) {
  std::vector<StagingNeed> out(schedule.streams.size());
  const auto a = staging_align;
  for (const Op& op : schedule.ranks.at(static_cast<std::size_t>(rank)).ops) {
    StagingNeed n;
    const std::int64_t members =
        op.group >= 0 ? static_cast<std::int64_t>(schedule.groups.at(static_cast<std::size_t>(op.group)).size()) : 0;
    const std::int64_t P = op.bytes_per_peer;
    if (!replay) {
      // What the op packs and unpacks: an all-to-all a slice per staged part; the other collectives a
      // slice per plane for all their members' parts, fewer slices than copies (each slice wastes less
      // than kStagingAlign to alignment).
      auto slices = [&](Bytes bytes) { return bytes > 0 ? bytes + kStagingAlign * op.staged_copies : 0; };
      if (op.kind == OpKind::AllToAll && P > 0) {
        n.send = op.staged_send / P * a(P);
        n.recv = op.staged_recv / P * a(P);
      } else {
        n.send = slices(op.staged_send);
        // A reduce-scatter's result that must be unpacked is reduced in place, in the rank's segment of
        // what it sends (its tensor or the packed send slice), and unpacked from there.
        n.recv = op.kind == OpKind::ReduceScatter ? 0 : slices(op.staged_recv);
      }
    } else {
      switch (op.kind) {
        case OpKind::SendRecv: {  // one self-send of the larger side, from and into staging
          const std::int64_t S = op.send.peer >= 0 ? op.send.bytes : 0;
          const std::int64_t R = op.recv.peer >= 0 ? op.recv.bytes : 0;
          n.send = n.recv = a(std::max(S, R));
          break;
        }
        case OpKind::AllToAll:  // one slice per member each way; the (members-1)·P self-send fits in it
          n.send = members * a(P);
          n.recv = members * a(P);
          break;
        case OpKind::AllGather:
          n.send = std::max(a(P), a((members - 1) * P));
          n.recv = a(members * P);
          break;
        case OpKind::ReduceScatter:
          n.send = a(members * P);
          n.recv = std::max(a(P), a((members - 1) * P));
          break;
        default:
          continue;
      }
    }
    StagingNeed& s = out.at(op.stream);
    s.send = std::max(s.send, n.send);
    s.recv = std::max(s.recv, n.recv);
  }
  return out;
}

StagedCopies transport_staging(const Op& op, std::int64_t members, bool replay) {
  if (!is_collective(op.kind)) return {};
  StagedCopies c{op.staged(), op.staged_copies};
  if (!replay) return c;
  if (op.kind == OpKind::AllToAll && op.staged_send == 0) {
    c.bytes += members * op.bytes_per_peer;
    c.copies += static_cast<std::int32_t>(members);
  }
  if (op.kind == OpKind::ReduceScatter && op.staged_recv == 0) {
    c.bytes += op.bytes_per_peer;
    c.copies += collective_planes(op);
  }
  return c;
}

std::int32_t collective_planes(const Op& op) {
  return op.kind == OpKind::AllGather || op.kind == OpKind::ReduceScatter ? 2 : 1;
}

namespace {

Schedule generate(const Workload& w) {
  switch (w.schedule) {
    case ScheduleKind::Ring:
    case ScheduleKind::ZigzagRing:
      return gen::make_ring(w);
    case ScheduleKind::AllGather:
      return gen::make_allgather(w);
    case ScheduleKind::Ulysses:
      return gen::make_ulysses(w);
    case ScheduleKind::Hybrid:
      return gen::make_hybrid(w);
  }
  throw InternalError("unknown schedule kind");
}

}  // namespace

Schedule make_schedule(const Workload& w) {
  validate(w);
  check_schedule_size(w, available_memory_bytes());
  Schedule s = generate(w);
  // The nccl transport's staging buffers, allocated for the whole run. Only collectives stage, and a
  // schedule without groups has none (the rings: no pass over their millions of ops).
  if (s.groups.empty()) return s;
  for (RankProgram& prog : s.ranks) {
    Bytes bytes = 0;
    for (const StagingNeed& n : staging_needs(s, prog.rank, false)) bytes += n.send + n.recv;
    const bool fwd = w.pass != PassSet::Bwd, bwd = w.pass != PassSet::Fwd;
    if (bytes > 0) prog.buffers.push_back({"staging", bytes, fwd, bwd});
  }
  return s;
}

}  // namespace cpscope
