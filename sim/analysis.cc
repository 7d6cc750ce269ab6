// Analysis of a Timeline: per-rank interval unions (sort + sweep), exposed communication, idle time,
// bytes, FLOPs and peak memory. One bucketing pass over all intervals, then one sort per (rank, kind):
// O(n log n) with flat arrays, so a 5-million-interval timeline takes well under a second.
#include "sim/analysis.h"

#include <algorithm>
#include <cstddef>
#include <limits>

#include "sim/error.h"

namespace cpscope {
namespace {

constexpr int kNumIntervalKinds = 3;  // Compute, Comm, Memory
static_assert(static_cast<int>(IntervalKind::Memory) == kNumIntervalKinds - 1,
              "analysis.cc buckets intervals by IntervalKind: update kNumIntervalKinds");

struct Span {
  Nanos start;
  Nanos end;
};

// Sorts spans[0..n) by start and merges overlapping/touching ones in place; returns the count of the
// resulting disjoint, ascending spans.
std::size_t merge_in_place(Span* spans, std::size_t n) {
  if (n == 0) return 0;
  std::sort(spans, spans + n, [](const Span& a, const Span& b) { return a.start < b.start; });
  std::size_t out = 0;
  for (std::size_t i = 1; i < n; ++i) {
    if (spans[i].start <= spans[out].end) {
      spans[out].end = std::max(spans[out].end, spans[i].end);
    } else {
      spans[++out] = spans[i];
    }
  }
  return out + 1;
}

Nanos total_length(const Span* spans, std::size_t n) {
  Nanos sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += spans[i].end - spans[i].start;
  return sum;
}

// |a ∩ b| for two disjoint ascending span lists (two-pointer sweep).
Nanos intersection_length(const Span* a, std::size_t na, const Span* b, std::size_t nb) {
  Nanos sum = 0;
  std::size_t i = 0, j = 0;
  while (i < na && j < nb) {
    const Nanos lo = std::max(a[i].start, b[j].start);
    const Nanos hi = std::min(a[i].end, b[j].end);
    if (hi > lo) sum += hi - lo;
    if (a[i].end < b[j].end) {
      ++i;
    } else {
      ++j;
    }
  }
  return sum;
}

}  // namespace

Nanos Summary::max_exposed_comm_ns() const {
  Nanos best = 0;
  for (const RankMetrics& r : ranks) best = std::max(best, r.exposed_comm_ns);
  return best;
}

Bytes Summary::max_peak_memory_bytes() const {
  Bytes best = 0;
  for (const RankMetrics& r : ranks) best = std::max(best, r.peak_memory_bytes);
  return best;
}

double Summary::achieved_tflops_per_gpu() const {
  if (ranks.empty() || step_time_ns <= 0) return 0.0;
  // FLOPs / N / (ns · 1e-9) / 1e12 = FLOPs / N / ns / 1e3.
  return static_cast<double>(total_flops) / static_cast<double>(ranks.size()) /
         static_cast<double>(step_time_ns) / 1e3;
}

Bytes peak_memory(const RankProgram& program) {
  Bytes fwd = 0, bwd = 0;
  for (const BufferUse& b : program.buffers) {
    if (b.fwd) fwd += b.bytes;
    if (b.bwd) bwd += b.bytes;
  }
  return std::max(fwd, bwd);
}

Summary summarize(const Timeline& timeline, const Schedule* schedule) {
  const std::vector<Interval>& intervals = timeline.intervals;

  // Rank count: the timeline's, the schedule's, and any rank an interval names.
  std::int64_t num_ranks = std::max<std::int64_t>(timeline.num_ranks, 0);
  if (schedule != nullptr) num_ranks = std::max<std::int64_t>(num_ranks, schedule->ranks.size());
  if (schedule != nullptr) {
    for (const RankProgram& p : schedule->ranks) {
      CPSCOPE_CHECK(p.rank >= 0, "schedule rank program with a negative rank");
      num_ranks = std::max<std::int64_t>(num_ranks, std::int64_t{p.rank} + 1);
    }
  }
  Nanos global_start = std::numeric_limits<Nanos>::max();
  Nanos global_end = std::numeric_limits<Nanos>::min();
  for (const Interval& iv : intervals) {
    CPSCOPE_CHECK(iv.rank >= 0, "interval with a negative rank " + std::to_string(iv.rank));
    CPSCOPE_CHECK(iv.end >= iv.start, "interval ends before it starts (rank " + std::to_string(iv.rank) +
                                          ", start " + std::to_string(iv.start) + ", end " +
                                          std::to_string(iv.end) + ")");
    CPSCOPE_CHECK(static_cast<int>(iv.kind) < kNumIntervalKinds, "interval with an unknown kind");
    num_ranks = std::max<std::int64_t>(num_ranks, std::int64_t{iv.rank} + 1);
    global_start = std::min(global_start, iv.start);
    global_end = std::max(global_end, iv.end);
  }

  Summary summary;
  summary.step_time_ns = intervals.empty() ? 0 : global_end - global_start;
  summary.ranks.resize(static_cast<std::size_t>(num_ranks));
  for (std::int64_t r = 0; r < num_ranks; ++r) summary.ranks[r].rank = static_cast<std::int32_t>(r);

  // Pass 1: counts per (rank, kind), per-rank first start / last end, FLOPs and Comm bytes.
  const std::size_t buckets = static_cast<std::size_t>(num_ranks) * kNumIntervalKinds;
  std::vector<std::size_t> offset(buckets + 1, 0);
  std::vector<Nanos> rank_first(num_ranks, std::numeric_limits<Nanos>::max());
  std::vector<Nanos> rank_last(num_ranks, std::numeric_limits<Nanos>::min());
  std::vector<Bytes> comm_interval_bytes(num_ranks, 0);
  for (const Interval& iv : intervals) {
    const std::size_t r = static_cast<std::size_t>(iv.rank);
    ++offset[r * kNumIntervalKinds + static_cast<std::size_t>(iv.kind) + 1];
    rank_first[r] = std::min(rank_first[r], iv.start);
    rank_last[r] = std::max(rank_last[r], iv.end);
    summary.ranks[r].flops += iv.flops;
    if (iv.kind == IntervalKind::Comm) comm_interval_bytes[r] += iv.bytes;
  }
  for (std::size_t b = 0; b < buckets; ++b) offset[b + 1] += offset[b];

  // Pass 2: scatter spans into their (rank, kind) bucket.
  std::vector<Span> spans(intervals.size());
  {
    std::vector<std::size_t> cursor(offset.begin(), offset.end() - 1);
    for (const Interval& iv : intervals) {
      const std::size_t b = static_cast<std::size_t>(iv.rank) * kNumIntervalKinds + static_cast<std::size_t>(iv.kind);
      spans[cursor[b]++] = Span{iv.start, iv.end};
    }
  }

  // Per rank: union per kind, |comm \ compute|, |union of all kinds|.
  std::vector<Span> all;  // scratch, reused across ranks
  for (std::int64_t r = 0; r < num_ranks; ++r) {
    RankMetrics& m = summary.ranks[r];
    Span* kind_spans[kNumIntervalKinds];
    std::size_t kind_count[kNumIntervalKinds];
    Nanos kind_len[kNumIntervalKinds];
    for (int k = 0; k < kNumIntervalKinds; ++k) {
      const std::size_t b = static_cast<std::size_t>(r) * kNumIntervalKinds + k;
      kind_spans[k] = spans.data() + offset[b];
      kind_count[k] = merge_in_place(kind_spans[k], offset[b + 1] - offset[b]);
      kind_len[k] = total_length(kind_spans[k], kind_count[k]);
    }
    constexpr int kCompute = static_cast<int>(IntervalKind::Compute);
    constexpr int kComm = static_cast<int>(IntervalKind::Comm);
    m.compute_ns = kind_len[kCompute];
    m.comm_ns = kind_len[kComm];
    m.exposed_comm_ns = kind_len[kComm] - intersection_length(kind_spans[kComm], kind_count[kComm],
                                                              kind_spans[kCompute], kind_count[kCompute]);
    all.clear();
    for (int k = 0; k < kNumIntervalKinds; ++k) all.insert(all.end(), kind_spans[k], kind_spans[k] + kind_count[k]);
    const Nanos busy = total_length(all.data(), merge_in_place(all.data(), all.size()));
    m.idle_ns = summary.step_time_ns - busy;
    m.span_ns = rank_first[r] <= rank_last[r] ? rank_last[r] - rank_first[r] : 0;
    m.bytes_sent = comm_interval_bytes[r];
  }

  // Bytes and memory come from the schedule when there is one: the interval bytes of a measured trace
  // may count receives too, the schedule says exactly what each rank sends.
  if (schedule != nullptr) {
    for (const RankProgram& p : schedule->ranks) {
      RankMetrics& m = summary.ranks[p.rank];
      Bytes sent = 0;
      for (const Op& op : p.ops)
        if (is_comm(op.kind)) sent += op.bytes;
      m.bytes_sent = sent;
      m.peak_memory_bytes = peak_memory(p);
    }
  }

  for (const RankMetrics& m : summary.ranks) summary.total_flops += m.flops;
  return summary;
}

Summary summarize(const SimResult& result, const Schedule& schedule) {
  std::int64_t num_ranks = static_cast<std::int64_t>(std::max(result.rank_busy.size(), schedule.ranks.size()));
  for (const RankProgram& p : schedule.ranks) {
    CPSCOPE_CHECK(p.rank >= 0, "schedule rank program with a negative rank");
    num_ranks = std::max<std::int64_t>(num_ranks, std::int64_t{p.rank} + 1);
  }
  // Step time: the earliest start to the latest end over the ranks that ran an op.
  Nanos first = std::numeric_limits<Nanos>::max(), last = std::numeric_limits<Nanos>::min();
  for (const RankBusy& b : result.rank_busy) {
    if (b.first_start < 0) continue;
    first = std::min(first, b.first_start);
    last = std::max(last, b.last_end);
  }
  Summary summary;
  summary.step_time_ns = first <= last ? last - first : 0;
  summary.ranks.resize(static_cast<std::size_t>(num_ranks));
  for (std::int64_t r = 0; r < num_ranks; ++r) {
    RankMetrics& m = summary.ranks[r];
    m.rank = static_cast<std::int32_t>(r);
    m.idle_ns = summary.step_time_ns;
    if (r >= static_cast<std::int64_t>(result.rank_busy.size())) continue;
    const RankBusy& b = result.rank_busy[r];
    m.compute_ns = b.compute_ns;
    m.comm_ns = b.comm_ns;
    m.exposed_comm_ns = b.exposed_comm_ns;
    m.idle_ns = summary.step_time_ns - b.busy_ns;
    m.span_ns = b.first_start >= 0 ? b.last_end - b.first_start : 0;
    m.flops = b.flops;
    m.bytes_sent = b.bytes_sent;
  }
  for (const RankProgram& p : schedule.ranks) summary.ranks[p.rank].peak_memory_bytes = peak_memory(p);
  for (const RankMetrics& m : summary.ranks) summary.total_flops += m.flops;
  return summary;
}

}  // namespace cpscope
