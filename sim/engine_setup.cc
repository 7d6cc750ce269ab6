// Engine set-up: flattens a Schedule into the records the event loop walks, matches transfers and
// collectives, lays out the link resources, and pre-fills the timeline. Large schedules are set up by
// two threads, each taking a range of ranks; what crosses the ranges (transfers between them,
// collective instances, distinct durations) is joined afterwards, in rank order, so the records are
// the same whatever the thread count.
#include <algorithm>
#include <array>
#include <exception>
#include <limits>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "sim/engine_sim.h"
#include "sim/error.h"

namespace cpscope {

void check_sharing(const DeviceSharing& s, const std::string& ranks_field, const std::string& slots_field) {
  if (s.ranks_per_device < 1) throw InputError(ranks_field, fmt::format("{} must be >= 1", s.ranks_per_device));
  if (!(s.compute_slots > 0 && s.compute_slots <= 65536))
    throw InputError(slots_field, fmt::format("{} must be in (0, 65536]", s.compute_slots));
}

}  // namespace cpscope

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

// Set-up threads for a schedule of `ops` ops: one per 32K ops, at most kMaxSetupThreads and the
// machine's cores (set-up is a few dozen ns per op; a thread costs tens of microseconds).
constexpr int kMaxSetupThreads = 2;
// How far ahead of the op it reads the first pass over a rank's ops prefetches (the schedule's ops are
// 176 bytes each, generated long before: they come from memory).
constexpr std::int32_t kPrefetchOps = 16;
int setup_threads(std::int64_t ops, int requested) {
  if (requested >= 1) return std::min(requested, kMaxSetupThreads);
  const auto cores = static_cast<std::int64_t>(std::max(1u, std::thread::hardware_concurrency()));
  return static_cast<int>(std::clamp<std::int64_t>(ops >> 15, 1, std::min<std::int64_t>(cores, kMaxSetupThreads)));
}

// The array take_records() hands out next (keep_records()).
struct SpareRecords {
  std::mutex mutex;
  std::unique_ptr<OpRec[]> recs;
  std::size_t capacity = 0;
};
SpareRecords& spare_records() {
  static SpareRecords spare;
  return spare;
}

}  // namespace

std::unique_ptr<OpRec[]> take_records(std::size_t n, std::size_t& capacity) {
  SpareRecords& spare = spare_records();
  {
    const std::lock_guard<std::mutex> lock(spare.mutex);
    if (spare.recs && spare.capacity >= n) {
      capacity = std::exchange(spare.capacity, 0);
      return std::move(spare.recs);
    }
  }
  capacity = n;
  return make_big_array<OpRec>(n);
}

void keep_records(std::unique_ptr<OpRec[]> recs, std::size_t capacity) {
  SpareRecords& spare = spare_records();
  std::unique_ptr<OpRec[]> drop;  // freed outside the lock
  const std::lock_guard<std::mutex> lock(spare.mutex);
  if (spare.recs && spare.capacity >= capacity) {
    drop = std::move(recs);
    return;
  }
  drop = std::exchange(spare.recs, std::move(recs));
  spare.capacity = capacity;
}

// Transfers: (src, dst, channel) -> dense key, then per key a FIFO of the sends (or receives) not
// matched yet. The k-th send of a key meets the k-th receive: whichever is set up second pops the
// first from the FIFO. A rank talks to few peers, so a small per-rank cache in front of the map
// absorbs nearly every lookup; drained FIFOs give their storage to the next key that needs one.
class TransferMatcher {
 public:
  void start_rank() { send_cache_ = recv_cache_ = {}; }
  // Pairs what this matcher (ranks set up by one thread) left unmatched with what `earlier` (ranks
  // before them) left, key by key: a key's sends all come from one rank and its receives from
  // another, so each side's leftovers are complete and in issue order. set(send, recv) is called per
  // pair; what stays unmatched stays kNone.
  template <typename Set>
  void pair_with(TransferMatcher& earlier, const Set& set) {
    for (const auto& [key, id] : ids_) {
      Fifo& q = fifos_[id];
      if (q.head == q.ops.size()) continue;
      const auto it = earlier.ids_.find(key);
      if (it == earlier.ids_.end()) continue;
      Fifo& e = earlier.fifos_[it->second];
      if (e.head == e.ops.size() || e.sends == q.sends) continue;
      Fifo& sends = q.sends ? q : e;
      Fifo& recvs = q.sends ? e : q;
      while (sends.head < sends.ops.size() && recvs.head < recvs.ops.size())
        set(sends.ops[sends.head++], recvs.ops[recvs.head++]);
    }
  }
  // Returns the partner of op g's send (receive), or kNone when it is queued for a later partner.
  std::int32_t send(std::int64_t src, std::int64_t dst, std::uint8_t ch, std::int32_t g) {
    return match(fifos_[key_id(send_cache_, src, dst, ch)], g, true);
  }
  std::int32_t recv(std::int64_t src, std::int64_t dst, std::uint8_t ch, std::int32_t g) {
    return match(fifos_[key_id(recv_cache_, src, dst, ch)], g, false);
  }

 private:
  struct Fifo {
    std::vector<std::int32_t> ops;
    std::uint32_t head = 0;
    bool sends = false;  // what it holds
  };
  struct CacheEntry {
    std::uint64_t key = ~0ull;
    std::int32_t id = 0;
  };
  using Cache = std::array<CacheEntry, 4>;

  std::int32_t key_id(Cache& cache, std::int64_t src, std::int64_t dst, std::uint8_t ch) {
    const std::uint64_t key =
        (static_cast<std::uint64_t>(src) << 36) | (static_cast<std::uint64_t>(dst) << 8) | ch;
    if (cache[0].key == key) return cache[0].id;
    if (cache[1].key == key) return cache[1].id;
    if (cache[2].key == key) return cache[2].id;
    if (cache[3].key == key) return cache[3].id;
    return miss(cache, key);
  }
  std::int32_t miss(Cache& cache, std::uint64_t key) {
    auto [it, inserted] = ids_.try_emplace(key, static_cast<std::int32_t>(fifos_.size()));
    if (inserted) fifos_.emplace_back();
    std::rotate(cache.rbegin(), cache.rbegin() + 1, cache.rend());
    cache[0] = {key, it->second};
    return it->second;
  }
  std::int32_t match(Fifo& q, std::int32_t g, bool is_send) {
    if (q.head != q.ops.size() && q.sends != is_send) {
      const std::int32_t other = q.ops[q.head++];
      if (q.head == q.ops.size()) recycle(q);
      return other;
    }
    if (q.ops.capacity() == 0 && !spare_.empty()) {
      q.ops = std::move(spare_.back());
      spare_.pop_back();
    }
    q.sends = is_send;
    q.ops.push_back(g);
    return kNone;
  }
  void recycle(Fifo& q) {
    q.ops.clear();
    q.head = 0;
    spare_.push_back(std::move(q.ops));
    q.ops = {};
  }

  std::unordered_map<std::uint64_t, std::int32_t> ids_;
  std::vector<Fifo> fifos_;
  std::vector<std::vector<std::int32_t>> spare_;
  Cache send_cache_{}, recv_cache_{};
};

// Distinct work values (durations, byte counts) of one set-up thread, interned: a direct-mapped
// cache in front of a map. Ids are global, local index x parts + part, so the threads' tables
// interleave into works_ without renumbering a record; local index 0 is 0 in every table.
class WorkTable {
 public:
  WorkTable(std::uint32_t part, std::uint32_t parts) : part_(part), parts_(parts) {}
  std::uint32_t id(Nanos value) {
    auto& entry = cache_[static_cast<std::uint64_t>(value) * 0x9E3779B97F4A7C15ull >> 56];
    if (entry.first == value) return entry.second;  // (0, 0) initially: right for every part
    auto [it, inserted] = ids_.try_emplace(value, 0);
    if (inserted) {
      CPSCOPE_CHECK(values_.size() < std::numeric_limits<std::uint32_t>::max() / parts_ - 1,
                    "too many distinct op durations");
      it->second = static_cast<std::uint32_t>(values_.size()) * parts_ + part_;
      values_.push_back(value);
    }
    entry = {value, it->second};
    return it->second;
  }
  const std::vector<Nanos>& values() const { return values_; }

 private:
  std::uint32_t part_, parts_;
  std::vector<Nanos> values_ = {0};
  std::array<std::pair<Nanos, std::uint32_t>, 256> cache_{};
  std::unordered_map<Nanos, std::uint32_t> ids_;
};

// A compute op's duration is a pure function of its shape: memoised per thread (direct-mapped), as
// a work id.
class DurationCache {
 public:
  std::uint32_t id(const Op& op, const CostModel& cost, WorkTable& works) {
    if (op.fills > 0) return works.id(cost.compute_ns(op));  // a few per rank: not worth a key
    const Key key{op.attn.q_len, op.attn.kv_len, op.flops, op.bytes, static_cast<std::uint8_t>(op.kind),
                  static_cast<std::uint8_t>(op.attn.mask)};
    const std::uint64_t h = (static_cast<std::uint64_t>(key.q_len) * 0x9E3779B97F4A7C15ull) ^
                            (static_cast<std::uint64_t>(key.kv_len) * 0xC2B2AE3D27D4EB4Full) ^
                            (static_cast<std::uint64_t>(key.flops) * 0x165667B19E3779F9ull) ^
                            (static_cast<std::uint64_t>(key.bytes) * 0x27D4EB2F165667C5ull) ^
                            ((static_cast<std::uint64_t>(key.kind) << 8 | key.mask) * 0x94D049BB133111EBull);
    auto& entry = entries_[(h ^ (h >> 29)) % entries_.size()];
    if (!(entry.first == key)) {
      entry.first = key;
      entry.second = works.id(cost.compute_ns(op));
    }
    return entry.second;
  }

 private:
  struct Key {
    std::int64_t q_len = -1, kv_len = -1, flops = -1, bytes = -1;
    std::uint8_t kind = 0, mask = 0;
    bool operator==(const Key&) const = default;
  };
  std::vector<std::pair<Key, std::uint32_t>> entries_ = std::vector<std::pair<Key, std::uint32_t>>(1024);
};

// One set-up thread's share: a range of ranks, and the tables it fills on its own.
struct SetupPart {
  SetupPart(std::uint32_t part, std::uint32_t parts) : works(part, parts) {}
  std::int32_t first_rank = 0, end_rank = 0;
  TransferMatcher matcher;
  WorkTable works;
  DurationCache durations;
  std::vector<std::pair<std::int32_t, std::int32_t>> collectives;  // (g, rank) of its collective ops, in order
  std::exception_ptr error;
};

// ---------------------------------------------------------------------------------------------
// Set-up: per rank (setup_ranks), a first pass over the rank's ops counts them by stream and finds
// the op that records each event; a second, in issue order, writes their records, matching the
// transfers among the thread's ranks; then, while the ops are still in cache, the pre-filled
// timeline. Then (setup) the threads' results are joined and the resources laid out.

void Simulation::setup() {
  const auto n = static_cast<std::int32_t>(s_.ranks.size());
  const auto num_streams = static_cast<std::int32_t>(s_.streams.size());
  const auto num_groups = static_cast<std::int32_t>(s_.groups.size());
  check_sharing(opt_.sharing, "ranks_per_device", "compute_slots");
  CPSCOPE_CHECK(num_streams <= 256, "a schedule has at most 256 streams (Op::stream is 8 bits)");
  num_streams_ = num_streams;
  ranks_.resize(static_cast<std::size_t>(n));
  op_base_.resize(static_cast<std::size_t>(n) + 1);
  std::int64_t ops = 0;
  for (std::int32_t r = 0; r < n; ++r) {
    const RankProgram& p = s_.ranks[r];
    CPSCOPE_CHECK(p.rank == r, fmt::format("ranks[{}] holds the program of rank {}", r, p.rank));
    CPSCOPE_CHECK(p.num_events >= 0, fmt::format("rank {} has {} events", r, p.num_events));
    op_base_[r] = static_cast<std::int32_t>(ops);
    ranks_[r].stream_base = r * num_streams;
    ranks_[r].pool = r - r % opt_.sharing.ranks_per_device;
    ops += static_cast<std::int64_t>(p.ops.size());
    CPSCOPE_CHECK(ops < std::numeric_limits<std::int32_t>::max(), "schedule too large for 32-bit op indices");
  }
  op_base_[n] = static_cast<std::int32_t>(ops);
  for (const auto& grp : s_.groups)
    for (auto m : grp) CPSCOPE_CHECK(m >= 0 && m < n, fmt::format("collective group member {} out of range", m));
  total_ops_ = ops;
  // rank_of(): blocks of about one rank's ops, so a lookup scans a rank or two.
  while ((std::int64_t{1} << (rank_block_shift_ + 1)) * std::max(n, 1) <= ops) ++rank_block_shift_;
  rank_block_.resize(static_cast<std::size_t>(ops >> rank_block_shift_) + 2);
  for (std::int32_t r = 0, b = 0; b < static_cast<std::int32_t>(rank_block_.size()); ++b) {
    const std::int64_t first =
        std::min<std::int64_t>(std::int64_t{b} << rank_block_shift_, std::max<std::int64_t>(ops - 1, 0));
    while (r + 1 < n && op_base_[static_cast<std::size_t>(r) + 1] <= first) ++r;
    rank_block_[b] = r;
  }
  recs_ = take_records(static_cast<std::size_t>(ops), recs_capacity_);
  result_.rank_busy.assign(static_cast<std::size_t>(n), RankBusy{});
  streams_.assign(static_cast<std::size_t>(n) * num_streams, StreamState{});
  coll_count_.assign(static_cast<std::size_t>(num_groups) * n, 0);
  if (opt_.record_timeline) {
    result_.timeline.num_ranks = n;
    result_.timeline.streams = s_.streams;
    result_.timeline.intervals.reserve(static_cast<std::size_t>(ops));
    advise_huge_pages(result_.timeline.intervals.data(), static_cast<std::size_t>(ops) * sizeof(Interval));
  }

  // Ranks split into ranges of about equal op counts, one per thread (the timeline's name table is
  // not shared between threads: one thread when it is recorded).
  const int threads = opt_.record_timeline ? 1 : setup_threads(ops, opt_.threads);
  std::vector<SetupPart> parts;
  parts.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) parts.emplace_back(static_cast<std::uint32_t>(t), static_cast<std::uint32_t>(threads));
  for (int t = 0, r = 0; t < threads; ++t) {
    parts[t].first_rank = r;
    const std::int64_t until = ops * (t + 1) / threads;
    while (r < n && (t + 1 == threads || op_base_[r] < until)) ++r;
    parts[t].end_rank = r;
  }
  auto run_part = [this](SetupPart& part) {
    try {
      setup_ranks(part);
    } catch (...) {
      part.error = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  for (int t = 1; t < threads; ++t) {
    try {
      workers.emplace_back(run_part, std::ref(parts[t]));
    } catch (const std::system_error&) {  // no thread to be had: this one does the part
      run_part(parts[t]);
    }
  }
  run_part(parts[0]);
  for (auto& w : workers) w.join();
  // The first error in rank order, as one thread would have met it.
  for (const SetupPart& part : parts)
    if (part.error) std::rethrow_exception(part.error);

  // Durations and byte counts, interleaved by part.
  std::size_t most = 0;
  for (const SetupPart& part : parts) most = std::max(most, part.works.values().size());
  works_.assign(most * static_cast<std::size_t>(threads), 0);
  for (int t = 0; t < threads; ++t) {
    const auto& v = parts[t].works.values();
    for (std::size_t i = 0; i < v.size(); ++i) works_[i * threads + t] = v[i];
  }
  // Transfers between the parts' ranges.
  for (int t = 1; t < threads; ++t)
    for (int u = 0; u < t; ++u)
      parts[t].matcher.pair_with(parts[u].matcher, [this](std::int32_t send, std::int32_t recv) {
        recs_[send].match_send = recv;
        recs_[recv].match_recv = send;
      });
  // Sends or receives still unmatched keep kNone: reported as a deadlock if the run needs them.

  // Collective instances, numbered in rank and issue order: the k-th collective of each member on a
  // group is instance inst_of[group][k] (set-up left k in match_send). A group has as many instances
  // as its busiest member has collectives on it (a member with fewer never completes the last ones:
  // reported as a deadlock).
  std::vector<std::vector<std::int32_t>> inst_of(static_cast<std::size_t>(num_groups));
  std::int32_t member_slots = 0;
  for (const SetupPart& part : parts) {
    for (const auto& [g, r] : part.collectives) {
      OpRec& rec = recs_[g];
      const std::int32_t group = s_.ranks[r].ops[rec.match_recv].group;
      auto& instances = inst_of[group];
      if (rec.match_send == static_cast<std::int32_t>(instances.size())) {
        instances.push_back(static_cast<std::int32_t>(colls_.size()));
        colls_.push_back(Collective{group, 0, member_slots});
        member_slots += static_cast<std::int32_t>(s_.groups[group].size());
      }
      rec.match_send = instances[rec.match_send];
    }
  }
  members_.assign(static_cast<std::size_t>(member_slots), {kNone, kNone});
  coll_count_.clear();
  coll_count_.shrink_to_fit();

  if (opt_.record_timeline) times_ = make_big_array<Times>(static_cast<std::size_t>(ops));
  setup_resources();
}

// Records of the part's ranks (see setup()). Touches only those ranks' records, streams and totals.
void Simulation::setup_ranks(SetupPart& part) {
  const auto n = static_cast<std::int32_t>(s_.ranks.size());
  const auto num_streams = static_cast<std::int32_t>(s_.streams.size());
  const auto num_groups = static_cast<std::int32_t>(s_.groups.size());
  // Per-rank scratch. Event tables are indexed by event + 1, so kNoEvent (-1) reads entry 0.
  std::vector<std::int32_t> cursor(static_cast<std::size_t>(num_streams));
  std::vector<std::int32_t> recorder_stream, recorder_pos;  // per event: the recording op's stream, position
  std::vector<std::uint8_t> waited;                         // per event: some op waits for it
  std::vector<std::int32_t> event_g;                        // per event: g of its recording op, or kNever
  std::vector<std::int32_t> local_of_g;                     // per op of the rank, by g: its id

  for (std::int32_t r = part.first_rank; r < part.end_rank; ++r) {
    const RankProgram& p = s_.ranks[r];
    const RankState& rs = ranks_[r];
    RankBusy& totals = result_.rank_busy[r];
    const std::int32_t op_base = op_base_[r];
    const auto num_ops = static_cast<std::int32_t>(p.ops.size());
    const Op* const ops_r = p.ops.data();
    const auto ne1 = static_cast<std::size_t>(p.num_events) + 1;
    // Pass 1: streams, events.
    std::fill(cursor.begin(), cursor.end(), 0);
    recorder_stream.assign(ne1, kNone);
    recorder_pos.resize(ne1);
    waited.assign(ne1, 0);
    for (std::int32_t i = 0; i < num_ops; ++i) {
      const Op& op = ops_r[i];
      if (i + kPrefetchOps < num_ops) __builtin_prefetch(&ops_r[i + kPrefetchOps]);  // (this first read misses)
      // Unsigned: kNoEvent (-1) passes, other negatives fail.
      if (op.id != i || op.stream >= num_streams || static_cast<std::uint32_t>(op.wait[0] + 1) >= ne1 ||
          static_cast<std::uint32_t>(op.wait[1] + 1) >= ne1 || static_cast<std::uint32_t>(op.record + 1) >= ne1 ||
          (op.record != kNoEvent && recorder_stream[op.record + 1] != kNone))
        bad_op(r, i);
      waited[op.wait[0] + 1] = 1;
      waited[op.wait[1] + 1] = 1;
      recorder_stream[op.record + 1] = op.stream;
      recorder_pos[op.record + 1] = cursor[op.stream]++;
    }
    // Lay the rank's records out stream by stream.
    std::int32_t next = op_base;
    for (std::int32_t st = 0; st < num_streams; ++st) {
      StreamState& ss = streams_[rs.stream_base + st];
      ss.next = next;
      next += cursor[st];
      ss.stop = next;
      cursor[st] = ss.next;  // now: where the stream's next record goes
    }
    event_g.resize(ne1);
    event_g[0] = kNone;
    waited[0] = 0;
    for (std::size_t e = 1; e < ne1; ++e)
      event_g[e] = recorder_stream[e] == kNone ? kNever : cursor[recorder_stream[e]] + recorder_pos[e];
    if (opt_.record_timeline) local_of_g.resize(static_cast<std::size_t>(num_ops));
    part.matcher.start_rank();
    // Pass 2, in issue order: matching of transfers and collectives follows it.
    for (std::int32_t i = 0; i < num_ops; ++i) {
      const Op& op = ops_r[i];
      const std::int32_t g = cursor[op.stream]++;
      if (opt_.record_timeline) local_of_g[g - op_base] = i;
      std::uint32_t work = 0;
      std::int32_t match_send = kNone, match_recv = kNone;
      bool has_send = false, has_recv = false;
      totals.flops += op.flops;
      if (is_compute(op.kind)) {
        work = part.durations.id(op, cost_, part.works);
      } else if (op.kind == OpKind::SendRecv) {
        totals.bytes_sent += op.bytes;
        if (op.send.peer >= 0) {
          if (op.send.peer >= n) bad_op(r, i);
          has_send = true;
          if (!opt_.sharing.local_transfers) work = part.works.id(op.send.bytes);  // (replay: below)
          match_send = part.matcher.send(r, op.send.peer, op.send.channel, g);
          if (match_send != kNone) recs_[match_send].match_recv = g;
        }
        if (op.recv.peer >= 0) {
          if (op.recv.peer >= n) bad_op(r, i);
          has_recv = true;
          match_recv = part.matcher.recv(op.recv.peer, r, op.recv.channel, g);
          if (match_recv == g) match_send = g;  // an op that sends to its own rank
          else if (match_recv != kNone) recs_[match_recv].match_send = g;
        }
        // Replay sends the larger side to itself in one transfer (Simulation::start_op).
        if (opt_.sharing.local_transfers)
          work = part.works.id(std::max(has_send ? op.send.bytes : 0, has_recv ? op.recv.bytes : 0));
      } else {
        if (!is_collective(op.kind) || op.group < 0 || op.group >= num_groups) bad_op(r, i);
        const auto& grp = s_.groups[op.group];
        if (std::find(grp.begin(), grp.end(), r) == grp.end()) bad_op(r, i);
        totals.bytes_sent += op.bytes;
        match_send = coll_count_[static_cast<std::size_t>(op.group) * n + r]++;  // k; instance set by setup()
        match_recv = i;  // the collective's duration is computed from the op
        part.collectives.emplace_back(g, r);
      }
      recs_[g] = OpRec{work,
                       {event_g[op.wait[0] + 1], event_g[op.wait[1] + 1]},
                       match_send,
                       match_recv,
                       op.kind,
                       op.stream,
                       has_send,
                       has_recv,
                       waited[op.record + 1]};
    }
    // The timeline in record order (the rank's ops are still in cache).
    if (opt_.record_timeline) {
      for (std::int32_t g = op_base; g < next; ++g) {
        const Op& op = p.ops[local_of_g[g - op_base]];
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
}

// Throws the InternalError for the first thing wrong with rank r's op i (set-up found one).
void Simulation::bad_op(std::int32_t r, std::int32_t i) const {
  const RankProgram& p = s_.ranks[r];
  const Op& op = p.ops[i];
  const auto n = static_cast<std::int32_t>(s_.ranks.size());
  const auto num_streams = static_cast<std::int32_t>(s_.streams.size());
  const auto num_groups = static_cast<std::int32_t>(s_.groups.size());
  CPSCOPE_CHECK(op.id == i, fmt::format("rank {} op at index {} has id {}", r, i, op.id));
  CPSCOPE_CHECK(op.stream < num_streams,
                fmt::format("rank {} op {} uses stream {} of {}", r, op.id, op.stream, num_streams));
  for (const std::int32_t ev : {op.wait[0], op.wait[1], op.record})
    CPSCOPE_CHECK(ev == kNoEvent || (ev >= 0 && ev < p.num_events),
                  fmt::format("rank {} op {} uses event {} of {}", r, op.id, ev, p.num_events));
  if (op.record != kNoEvent)
    for (std::int32_t k = 0; k < i; ++k)
      CPSCOPE_CHECK(p.ops[k].record != op.record,
                    fmt::format("rank {} op {} records event {}, which op {} already records (an event is recorded "
                                "by exactly one op)",
                                r, op.id, op.record, k));
  if (op.kind == OpKind::SendRecv) {
    CPSCOPE_CHECK(op.send.peer < n, fmt::format("rank {} op {} sends to rank {} of {}", r, op.id, op.send.peer, n));
    CPSCOPE_CHECK(op.recv.peer < n,
                  fmt::format("rank {} op {} receives from rank {} of {}", r, op.id, op.recv.peer, n));
  } else if (!is_compute(op.kind)) {
    CPSCOPE_CHECK(is_collective(op.kind), fmt::format("rank {} op {} has an unknown kind", r, op.id));
    CPSCOPE_CHECK(op.group >= 0 && op.group < num_groups,
                  fmt::format("rank {} op {} uses collective group {} of {}", r, op.id, op.group, num_groups));
    const auto& grp = s_.groups[op.group];
    CPSCOPE_CHECK(std::find(grp.begin(), grp.end(), r) != grp.end(),
                  fmt::format("rank {} op {} uses collective group {} which does not contain it", r, op.id,
                              op.group));
  }
  throw InternalError(fmt::format("rank {} op {}: invalid", r, i));
}

// The op id of g: its position in issue order among the rank's ops (diagnostics only).
std::int32_t Simulation::local_of(std::int32_t rank, std::int32_t g) const {
  const RankProgram& p = s_.ranks[rank];
  const auto num_streams = static_cast<std::int32_t>(s_.streams.size());
  std::vector<std::int32_t> cursor(static_cast<std::size_t>(num_streams));
  for (std::int32_t st = 0; st < num_streams; ++st) cursor[st] = stream_first(rank, st);
  for (std::int32_t i = 0; i < static_cast<std::int32_t>(p.ops.size()); ++i)
    if (cursor[p.ops[i].stream]++ == g) return i;
  throw InternalError(fmt::format("op index {} is not an op of rank {}", g, rank));
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
  resources_.assign(static_cast<std::size_t>(2) * n, Resource{hw_.nvlink.bandwidth_GBps, 0, {}});
  const std::int64_t stride = static_cast<std::int64_t>(gpus_on_nic.size());
  net_.resize(static_cast<std::size_t>(n));
  for (std::int32_t r = 0; r < n; ++r) {
    RankNet& rs = net_[r];
    const std::int64_t global = w_.global_rank(r);
    rs.node = global / gpn;
    nic[r] = cost_.nic_of_local_gpu(global % gpn);
    rs.device = r / opt_.sharing.ranks_per_device;
    rs.link_out = 2 * r;
    rs.link_in = 2 * r + 1;
    auto [it, inserted] = nic_ids.try_emplace(rs.node * stride + nic[r], static_cast<std::int32_t>(resources_.size()));
    if (inserted) {
      resources_.push_back(Resource{0, 0, {}});  // egress
      resources_.push_back(Resource{0, 0, {}});  // ingress
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
    const std::size_t k = static_cast<std::size_t>(net_[r].nic_out - 2 * n) / 2;
    nic_sharing[k] = std::max(1.0, static_cast<double>(gpus_on_nic[nic[r]]) / static_cast<double>(ours[k]));
  }
  for (std::size_t k = 0; k < ours.size(); ++k) {
    const double bw = hw_.network.bandwidth_GBps / nic_sharing[k];
    resources_[2 * n + 2 * k].bandwidth = bw;
    resources_[2 * n + 2 * k + 1].bandwidth = bw;
  }
  // Copies within a device (DeviceSharing): one egress and one ingress per device, after the NICs.
  const auto copy_base = static_cast<std::int32_t>(resources_.size());
  const double copy_bw = hw_.device_copy_link().bandwidth_GBps;
  for (std::int32_t r = 0; r < n; ++r) {
    RankNet& rs = net_[r];
    rs.copy_out = copy_base + 2 * rs.device;
    rs.copy_in = rs.copy_out + 1;
  }
  resources_.resize(static_cast<std::size_t>(copy_base) + 2 * static_cast<std::size_t>(opt_.sharing.devices(n)),
                    Resource{copy_bw, 0, {}});
  // Placement of every collective group: nodes spanned, busiest node, NICs reachable per node, and the
  // largest NIC sharing factor among its members (the bottleneck NIC).
  placements_.resize(s_.groups.size());
  group_nic_sharing_.assign(s_.groups.size(), 1.0);
  for (std::size_t g = 0; g < s_.groups.size(); ++g) {
    const auto& grp = s_.groups[g];
    std::unordered_map<std::int64_t, std::vector<std::int64_t>> per_node;  // node -> NICs of members
    for (auto m : grp) {
      per_node[net_[m].node].push_back(nic[m]);
      const std::size_t k = static_cast<std::size_t>(net_[m].nic_out - 2 * n) / 2;
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
    // A group whose every pair of members stays on a GPU copies within it (DeviceSharing::local).
    const bool on_device = !grp.empty() && std::all_of(grp.begin(), grp.end(), [&](auto m) {
      return opt_.sharing.local(static_cast<std::int32_t>(grp.front()), static_cast<std::int32_t>(m));
    });
    if (on_device) {
      std::unordered_map<std::int32_t, std::int64_t> per_device;
      for (auto m : grp) p.on_device = std::max(p.on_device, ++per_device[net_[m].device]);
    }
  }
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
