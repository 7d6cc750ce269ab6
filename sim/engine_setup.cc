// Engine set-up: flattens a Schedule into the records the event loop walks, matches transfers and
// collectives, lays out the link resources, and pre-fills the timeline.
#include <algorithm>
#include <array>
#include <limits>
#include <unordered_map>

#include <fmt/format.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "sim/engine_sim.h"
#include "sim/error.h"

namespace cpscope::engine_detail {

namespace {

// Asks the kernel to back [p, p + bytes) with transparent huge pages, where the process allows it
// ("madvise" mode): a 6M-op run then takes a few hundred page faults instead of ~100,000, which on
// virtual machines costs more than the simulation itself. A hint only; harmless where unsupported.
void advise_huge_pages(const void* p, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
  const auto begin = (reinterpret_cast<std::uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

// An uninitialised array for the per-op records, advised as huge pages.
template <typename T>
std::unique_ptr<T[]> make_big_array(std::size_t n) {
  static_assert(std::is_trivially_default_constructible_v<T>);
  auto a = std::make_unique_for_overwrite<T[]>(n);
  advise_huge_pages(a.get(), n * sizeof(T));
  return a;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Set-up: rank by rank, the ops are counted by stream, then read once in issue order into their
// records (matching transfers and collectives on the way), then, while still in cache, into the
// pre-filled timeline.

void Simulation::setup() {
  const auto n = static_cast<std::int32_t>(s_.ranks.size());
  const auto num_streams = static_cast<std::int32_t>(s_.streams.size());
  const auto num_groups = static_cast<std::int32_t>(s_.groups.size());
  CPSCOPE_CHECK(num_streams <= 256, "a schedule has at most 256 streams (Op::stream is 8 bits)");
  ranks_.resize(static_cast<std::size_t>(n));
  std::int64_t ops = 0, events = 0;
  for (std::int32_t r = 0; r < n; ++r) {
    const RankProgram& p = s_.ranks[r];
    CPSCOPE_CHECK(p.rank == r, fmt::format("ranks[{}] holds the program of rank {}", r, p.rank));
    ranks_[r].op_base = static_cast<std::int32_t>(ops);
    ranks_[r].event_base = static_cast<std::int32_t>(events);
    ranks_[r].stream_base = r * num_streams;
    ops += static_cast<std::int64_t>(p.ops.size());
    events += p.num_events;
    CPSCOPE_CHECK(ops < std::numeric_limits<std::int32_t>::max() && events < std::numeric_limits<std::int32_t>::max(),
                  "schedule too large for 32-bit op indices");
  }
  for (const auto& grp : s_.groups)
    for (auto m : grp) CPSCOPE_CHECK(m >= 0 && m < n, fmt::format("collective group member {} out of range", m));
  total_ops_ = ops;
  recs_ = make_big_array<OpRec>(static_cast<std::size_t>(ops));
  local_ = make_big_array<std::int32_t>(static_cast<std::size_t>(ops));
  recorded_.assign(static_cast<std::size_t>(events + 63) / 64, 0);
  streams_.assign(static_cast<std::size_t>(n) * num_streams, StreamState{});
  result_.rank_end.assign(static_cast<std::size_t>(n), 0);
  if (opt_.record_timeline) {
    result_.timeline.num_ranks = n;
    result_.timeline.streams = s_.streams;
    result_.timeline.intervals.reserve(static_cast<std::size_t>(ops));
    advise_huge_pages(result_.timeline.intervals.data(), static_cast<std::size_t>(ops) * sizeof(Interval));
  }

  // Transfers: (src, dst, channel) -> dense key, then per key the sending and receiving ops in issue
  // order. A rank talks to few peers, so a small per-rank cache in front of the map absorbs nearly
  // every lookup.
  std::unordered_map<std::uint64_t, std::int32_t> key_ids;
  std::vector<std::vector<std::int32_t>> sends, recvs;
  struct CacheEntry {
    std::uint64_t key = ~0ull;
    std::int32_t id = 0;
  };
  auto key_id = [&](std::array<CacheEntry, 4>& cache, std::int64_t src, std::int64_t dst, std::uint8_t ch) {
    const std::uint64_t key =
        (static_cast<std::uint64_t>(src) << 36) | (static_cast<std::uint64_t>(dst) << 8) | ch;
    for (const auto& c : cache)
      if (c.key == key) return c.id;
    auto [it, inserted] = key_ids.try_emplace(key, static_cast<std::int32_t>(sends.size()));
    if (inserted) {
      sends.emplace_back();
      recvs.emplace_back();
    }
    std::rotate(cache.rbegin(), cache.rbegin() + 1, cache.rend());
    cache[0] = {key, it->second};
    return it->second;
  };
  // Collectives: the k-th on a group of each rank; instances numbered per group after the pass.
  std::vector<std::int32_t> coll_count(static_cast<std::size_t>(num_groups) * n, 0);
  std::vector<std::int32_t> cursor(static_cast<std::size_t>(num_streams));

  for (std::int32_t r = 0; r < n; ++r) {
    const RankProgram& p = s_.ranks[r];
    const RankState& rs = ranks_[r];
    // Lay the rank's records out stream by stream.
    std::fill(cursor.begin(), cursor.end(), 0);
    for (const Op& op : p.ops) {
      CPSCOPE_CHECK(op.stream < num_streams,
                    fmt::format("rank {} op {} uses stream {} of {}", r, op.id, op.stream, num_streams));
      ++cursor[op.stream];
    }
    std::int32_t next = rs.op_base;
    for (std::int32_t st = 0; st < num_streams; ++st) {
      StreamState& ss = streams_[rs.stream_base + st];
      ss.first = next;
      ss.end = cursor[st];
      next += cursor[st];
      cursor[st] = ss.first;
    }
    std::array<CacheEntry, 4> send_cache{}, recv_cache{};
    // Issue order: matching of transfers and collectives follows it.
    for (std::size_t i = 0; i < p.ops.size(); ++i) {
      const Op& op = p.ops[i];
      const std::int32_t g = cursor[op.stream]++;
      OpRec& rec = recs_[g];
      local_[g] = static_cast<std::int32_t>(i);
      CPSCOPE_CHECK(op.id == static_cast<std::int32_t>(i), fmt::format("rank {} op at index {} has id {}", r, i, op.id));
      auto event = [&](std::int32_t ev) {
        CPSCOPE_CHECK(ev == kNoEvent || (ev >= 0 && ev < p.num_events),
                      fmt::format("rank {} op {} uses event {} of {}", r, op.id, ev, p.num_events));
        return ev == kNoEvent ? kNone : rs.event_base + ev;
      };
      rec.work = 0;
      rec.wait[0] = event(op.wait[0]);
      rec.wait[1] = event(op.wait[1]);
      rec.record = event(op.record);
      rec.match_send = rec.match_recv = rec.send_peer = rec.recv_peer = kNone;
      rec.kind = op.kind;
      rec.stream = op.stream;
      rec.status = kWaiting;
      rec.parts_left = 0;
      rec.send_ready = 0;
      if (is_compute(op.kind)) {
        rec.work = compute_duration(op);
      } else if (op.kind == OpKind::SendRecv) {
        if (op.send.peer >= 0) {
          CPSCOPE_CHECK(op.send.peer < n, fmt::format("rank {} op {} sends to rank {} of {}", r, op.id, op.send.peer, n));
          rec.send_peer = op.send.peer;
          rec.work = op.send.bytes;
          sends[key_id(send_cache, r, op.send.peer, op.send.channel)].push_back(g);
        }
        if (op.recv.peer >= 0) {
          CPSCOPE_CHECK(op.recv.peer < n,
                        fmt::format("rank {} op {} receives from rank {} of {}", r, op.id, op.recv.peer, n));
          rec.recv_peer = op.recv.peer;
          recvs[key_id(recv_cache, op.recv.peer, r, op.recv.channel)].push_back(g);
        }
      } else {
        CPSCOPE_CHECK(is_collective(op.kind), fmt::format("rank {} op {} has an unknown kind", r, op.id));
        CPSCOPE_CHECK(op.group >= 0 && op.group < num_groups,
                      fmt::format("rank {} op {} uses collective group {} of {}", r, op.id, op.group, num_groups));
        const auto& grp = s_.groups[op.group];
        CPSCOPE_CHECK(std::find(grp.begin(), grp.end(), r) != grp.end(),
                      fmt::format("rank {} op {} uses collective group {} which does not contain it", r, op.id,
                                  op.group));
        rec.match_recv = op.group;  // resolved to an instance below
        rec.match_send = coll_count[static_cast<std::size_t>(op.group) * n + r]++;
      }
    }
    // The timeline in record order (the rank's ops are still in cache).
    if (opt_.record_timeline) {
      for (std::int32_t g = rs.op_base; g < next; ++g) {
        const Op& op = p.ops[local_[g]];
        Interval iv;
        iv.rank = r;
        iv.stream = op.stream;
        iv.kind = interval_kind(op.kind);
        iv.name = name_id(op);
        iv.op_id = op.id;
        iv.step = op.step;
        iv.pass = static_cast<std::int8_t>(op.pass == OpPass::Fwd ? 0 : 1);
        iv.bytes = op.bytes;
        iv.flops = op.flops;
        result_.timeline.intervals.push_back(iv);
      }
    }
  }
  if (opt_.record_timeline) times_ = make_big_array<Times>(static_cast<std::size_t>(ops));
  match_transfers(sends, recvs);

  // A group has as many collective instances as its busiest member has collectives on it (a member
  // with fewer never completes the last ones: reported as a deadlock).
  std::vector<std::int32_t> inst_base(static_cast<std::size_t>(num_groups), 0);
  std::int32_t member_slots = 0;
  for (std::int32_t grp = 0; grp < num_groups; ++grp) {
    std::int32_t most = 0;
    for (std::int32_t r = 0; r < n; ++r) most = std::max(most, coll_count[static_cast<std::size_t>(grp) * n + r]);
    inst_base[grp] = static_cast<std::int32_t>(colls_.size());
    for (std::int32_t k = 0; k < most; ++k) {
      colls_.push_back(Collective{grp, 0, member_slots});
      member_slots += static_cast<std::int32_t>(s_.groups[grp].size());
    }
  }
  members_.assign(static_cast<std::size_t>(member_slots), {kNone, kNone});
  if (!colls_.empty())
    for (std::int64_t g = 0; g < total_ops_; ++g)
      if (is_collective(recs_[g].kind)) recs_[g].match_send += inst_base[recs_[g].match_recv];

  setup_resources();
}

void Simulation::match_transfers(const std::vector<std::vector<std::int32_t>>& sends,
                                 const std::vector<std::vector<std::int32_t>>& recvs) {
  // The k-th send of a key matches its k-th receive. Unmatched ones keep kNone: reported as a deadlock.
  for (std::size_t k = 0; k < sends.size(); ++k) {
    const std::size_t m = std::min(sends[k].size(), recvs[k].size());
    for (std::size_t i = 0; i < m; ++i) {
      recs_[sends[k][i]].match_send = recvs[k][i];
      recs_[recvs[k][i]].match_recv = sends[k][i];
    }
  }
}
void Simulation::setup_resources() {
  const auto n = static_cast<std::int32_t>(s_.ranks.size());
  const std::int64_t gpn = std::max<std::int64_t>(1, w_.gpus_per_node);
  // GPUs of a node behind each NIC (adjacent GPUs share a NIC when there are fewer NICs than GPUs).
  std::vector<std::int64_t> gpus_on_nic(static_cast<std::size_t>(std::max(gpn, hw_.nics_per_node)), 0);
  for (std::int64_t l = 0; l < gpn; ++l) ++gpus_on_nic[cost_.nic_of_local_gpu(l)];

  std::vector<std::int64_t> nic(static_cast<std::size_t>(n));
  std::unordered_map<std::int64_t, std::int32_t> nic_ids;  // node * stride + nic -> NIC egress resource
  std::vector<std::int32_t> ours;                          // per NIC (egress resource / 2): our GPUs on it
  resources_.assign(static_cast<std::size_t>(2) * n, Resource{hw_.nvlink.bandwidth_GBps, {}});
  const std::int64_t stride = static_cast<std::int64_t>(gpus_on_nic.size());
  for (std::int32_t r = 0; r < n; ++r) {
    RankState& rs = ranks_[r];
    const std::int64_t global = w_.global_rank(r);
    rs.node = global / gpn;
    nic[r] = cost_.nic_of_local_gpu(global % gpn);
    rs.link_out = 2 * r;
    rs.link_in = 2 * r + 1;
    auto [it, inserted] = nic_ids.try_emplace(rs.node * stride + nic[r], static_cast<std::int32_t>(resources_.size()));
    if (inserted) {
      resources_.push_back(Resource{0, {}});  // egress
      resources_.push_back(Resource{0, {}});  // ingress
      ours.push_back(0);
    }
    rs.nic_out = it->second;
    rs.nic_in = it->second + 1;
    ++ours[(it->second - 2 * n) / 2];
  }
  // Every CP group of the mesh runs this schedule at the same time, so the other GPUs behind one of
  // our NICs (the interleaved groups' ranks under TpInner) send the same traffic through it: our share
  // is (our GPUs on the NIC) / (all GPUs on the NIC). Our own GPUs that share a NIC are modelled
  // explicitly as flows on the same resource.
  std::vector<double> nic_sharing(ours.size(), 1.0);
  for (std::int32_t r = 0; r < n; ++r) {
    const std::size_t k = static_cast<std::size_t>(ranks_[r].nic_out - 2 * n) / 2;
    nic_sharing[k] = std::max(1.0, static_cast<double>(gpus_on_nic[nic[r]]) / static_cast<double>(ours[k]));
  }
  for (std::size_t k = 0; k < ours.size(); ++k) {
    const double bw = hw_.network.bandwidth_GBps / nic_sharing[k];
    resources_[2 * n + 2 * k].bandwidth = bw;
    resources_[2 * n + 2 * k + 1].bandwidth = bw;
  }
  // Placement of every collective group: nodes spanned, busiest node, NICs reachable per node, and the
  // largest NIC sharing factor among its members (the bottleneck NIC).
  placements_.resize(s_.groups.size());
  group_nic_sharing_.assign(s_.groups.size(), 1.0);
  for (std::size_t g = 0; g < s_.groups.size(); ++g) {
    const auto& grp = s_.groups[g];
    std::unordered_map<std::int64_t, std::vector<std::int64_t>> per_node;  // node -> NICs of members
    for (auto m : grp) {
      per_node[ranks_[m].node].push_back(nic[m]);
      const std::size_t k = static_cast<std::size_t>(ranks_[m].nic_out - 2 * n) / 2;
      group_nic_sharing_[g] = std::max(group_nic_sharing_[g], nic_sharing[k]);
    }
    GroupPlacement& p = placements_[g];
    p.size = static_cast<std::int64_t>(grp.size());
    p.nodes = std::max<std::int64_t>(1, static_cast<std::int64_t>(per_node.size()));
    p.max_per_node = 1;
    p.nics_per_node = per_node.empty() ? 1 : std::numeric_limits<std::int64_t>::max();
    for (auto& [node, nics] : per_node) {
      p.max_per_node = std::max<std::int64_t>(p.max_per_node, static_cast<std::int64_t>(nics.size()));
      std::sort(nics.begin(), nics.end());
      const auto distinct = std::unique(nics.begin(), nics.end()) - nics.begin();
      p.nics_per_node = std::min<std::int64_t>(p.nics_per_node, distinct);
    }
  }
}

Nanos Simulation::compute_duration(const Op& op) {
  DurKey key;
  key.q_len = op.attn.q_len;
  key.kv_len = op.attn.kv_len;
  key.flops = op.flops;
  key.bytes = op.bytes;
  key.kind = static_cast<std::uint8_t>(op.kind);
  key.mask = static_cast<std::uint8_t>(op.attn.mask);
  std::uint64_t h = 0x9E3779B97F4A7C15ull;
  for (std::uint64_t v : {static_cast<std::uint64_t>(key.q_len), static_cast<std::uint64_t>(key.kv_len),
                          static_cast<std::uint64_t>(key.flops), static_cast<std::uint64_t>(key.bytes),
                          static_cast<std::uint64_t>(key.kind) << 8 | key.mask}) {
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  }
  auto& entry = dur_cache_[h % kDurCache];
  if (!(entry.first == key)) {
    entry.first = key;
    entry.second = cost_.compute_ns(op);
  }
  return entry.second;
}

std::uint32_t Simulation::name_id(const Op& op) {
  auto& v = names_[op.pass == OpPass::Fwd ? 0 : 1][static_cast<std::size_t>(op.kind)];
  constexpr std::int32_t kMaxCachedStep = 1 << 20;
  if (op.step < 0 || op.step >= kMaxCachedStep) return result_.timeline.intern(op_name(op));
  if (static_cast<std::size_t>(op.step) >= v.size()) v.resize(static_cast<std::size_t>(op.step) + 1, ~0u);
  auto& id = v[static_cast<std::size_t>(op.step)];
  if (id == ~0u) id = result_.timeline.intern(op_name(op));
  return id;
}

}  // namespace cpscope::engine_detail
