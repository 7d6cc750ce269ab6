// summary and steps: sim/analysis.h's summarize() gives the unions per kind; the attention share and
// per-rank idle are added here. Steps clip intervals to range windows and summarize the clipped set.
#include "sim/trace/trace_analysis.h"

#include <algorithm>
#include <limits>
#include <map>
#include <regex>
#include <unordered_map>

#include "sim/analysis.h"
#include "sim/error.h"

namespace cpscope::trace {
namespace {

struct Span {
  Nanos start, end;
};

Nanos union_length(std::vector<Span>& spans) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.start < b.start; });
  Nanos total = 0, cur_s = 0, cur_e = 0;
  bool open = false;
  for (const Span& s : spans) {
    if (open && s.start <= cur_e) {
      cur_e = std::max(cur_e, s.end);
      continue;
    }
    if (open) total += cur_e - cur_s;
    cur_s = s.start;
    cur_e = s.end;
    open = true;
  }
  return open ? total + (cur_e - cur_s) : total;
}

// Per-rank reports of `t` (every interval's rank < num_ranks), attention from `classes`.
std::vector<RankReport> rank_reports(const Timeline& t, std::int32_t num_ranks, const std::vector<KernelClass>& classes) {
  const Summary s = summarize(t);
  std::vector<RankReport> out(static_cast<std::size_t>(num_ranks));
  std::vector<std::vector<Span>> attention(out.size()), memory(out.size());
  for (const Interval& iv : t.intervals) {
    RankReport& r = out[iv.rank];
    ++r.kernels;
    if (iv.kind == IntervalKind::Memory) memory[iv.rank].push_back({iv.start, iv.end});
    else if (classes[iv.name] == KernelClass::Attention) attention[iv.rank].push_back({iv.start, iv.end});
  }
  for (std::size_t r = 0; r < out.size(); ++r) {
    RankReport& o = out[r];
    o.rank = static_cast<std::int32_t>(r);
    if (r >= s.ranks.size()) continue;
    const RankMetrics& m = s.ranks[r];
    o.span_ns = m.span_ns;
    o.compute_ns = m.compute_ns;
    o.comm_ns = m.comm_ns;
    o.exposed_comm_ns = m.exposed_comm_ns;
    o.busy_ns = s.step_time_ns - m.idle_ns;  // summarize's idle is against the global step time
    o.idle_ns = o.span_ns - o.busy_ns;
    o.overlap = m.comm_ns > 0 ? static_cast<double>(m.comm_ns - m.exposed_comm_ns) / static_cast<double>(m.comm_ns) : -1.0;
    o.attention_ns = union_length(attention[r]);
    o.memory_ns = union_length(memory[r]);
  }
  return out;
}

}  // namespace

std::vector<KernelClass> classify_names(const Timeline& t, const Classifier& cls) {
  std::vector<KernelClass> out(t.names().size(), KernelClass::OtherCompute);
  std::vector<bool> used(out.size(), false);
  for (const Interval& iv : t.intervals) {
    if (used[iv.name]) continue;
    used[iv.name] = true;
    const KernelClass c = cls.classify(t.name(iv.name));
    // The reader's kind wins: a memcpy record is Memory whatever it is called, and a cpscope profile's
    // op names ("fwd/step0/sendrecv") carry their kind in the interval, not in a kernel name.
    switch (iv.kind) {
      case IntervalKind::Memory: out[iv.name] = KernelClass::Memory; break;
      case IntervalKind::Comm: out[iv.name] = KernelClass::Comm; break;
      case IntervalKind::Compute:
        out[iv.name] = c == KernelClass::Attention ? c : KernelClass::OtherCompute;
        break;
    }
  }
  return out;
}

TraceSummary summarize_trace(const Trace& trace, const Classifier& cls, std::size_t top) {
  const Timeline& t = trace.timeline;
  const std::vector<KernelClass> classes = classify_names(t, cls);
  TraceSummary out;
  std::int32_t num_ranks = std::max<std::int32_t>(t.num_ranks, static_cast<std::int32_t>(trace.ranks.size()));
  Nanos lo = std::numeric_limits<Nanos>::max(), hi = std::numeric_limits<Nanos>::min();
  std::vector<KernelStat> stats(t.names().size());
  for (const Interval& iv : t.intervals) {
    num_ranks = std::max(num_ranks, iv.rank + 1);
    lo = std::min(lo, iv.start);
    hi = std::max(hi, iv.end);
    KernelStat& k = stats[iv.name];
    ++k.count;
    k.total_ns += iv.duration();
    k.max_ns = std::max(k.max_ns, iv.duration());
  }
  out.wall_ns = t.intervals.empty() ? 0 : hi - lo;
  out.ranks = rank_reports(t, num_ranks, classes);
  if (trace.format == "cpscope-profile") {
    for (const RankReport& r : out.ranks)
      if (r.kernels == 0) out.untraced_ranks.push_back(r.rank);
    std::erase_if(out.ranks, [](const RankReport& r) { return r.kernels == 0; });
  }
  for (std::size_t i = 0; i < stats.size(); ++i) {
    if (stats[i].count == 0) continue;
    stats[i].name = t.name(static_cast<std::uint32_t>(i));
    stats[i].cls = classes[i];
    out.top_kernels.push_back(std::move(stats[i]));
  }
  std::sort(out.top_kernels.begin(), out.top_kernels.end(), [](const KernelStat& a, const KernelStat& b) {
    return a.total_ns != b.total_ns ? a.total_ns > b.total_ns : a.name < b.name;
  });
  if (out.top_kernels.size() > top) out.top_kernels.resize(top);
  return out;
}

StepsReport summarize_steps(const Trace& trace, const Classifier& cls, const std::string& pattern) {
  const std::regex re = Classifier::compile(pattern, "range");
  const Timeline& t = trace.timeline;
  const std::vector<KernelClass> classes = classify_names(t, cls);

  // Label of each range name (matched text), computed once per name.
  std::unordered_map<std::uint32_t, std::string> label_of;
  std::map<std::pair<std::string, std::int32_t>, std::vector<Span>> windows;
  std::map<std::pair<std::string, std::int32_t>, std::int64_t> counts;
  for (const Range& r : trace.ranges) {
    auto it = label_of.find(r.name);
    if (it == label_of.end()) {
      std::smatch m;
      const std::string& name = t.name(r.name);
      it = label_of.emplace(r.name, std::regex_search(name, m, re) && m.length(0) > 0 ? m.str(0) : std::string()).first;
    }
    if (it->second.empty()) continue;
    windows[{it->second, r.rank}].push_back({r.start, r.end});
    ++counts[{it->second, r.rank}];
  }

  // Intervals per rank by start, and the longest one, to find those overlapping a window quickly.
  std::int32_t num_ranks = std::max<std::int32_t>(t.num_ranks, static_cast<std::int32_t>(trace.ranks.size()));
  for (const Interval& iv : t.intervals) num_ranks = std::max(num_ranks, iv.rank + 1);
  std::vector<std::vector<std::size_t>> by_rank(static_cast<std::size_t>(num_ranks));
  std::vector<Nanos> longest(by_rank.size(), 0);
  for (std::size_t i = 0; i < t.intervals.size(); ++i) {
    by_rank[t.intervals[i].rank].push_back(i);
    longest[t.intervals[i].rank] = std::max(longest[t.intervals[i].rank], t.intervals[i].duration());
  }
  for (auto& v : by_rank)
    std::sort(v.begin(), v.end(), [&](std::size_t a, std::size_t b) { return t.intervals[a].start < t.intervals[b].start; });

  StepsReport out;
  out.pattern = pattern;
  for (auto& [key, spans] : windows) {
    // Merge the windows so concurrent ranges of one label (attend and sendrecv of a step) count once.
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.start < b.start; });
    std::vector<Span> merged;
    for (const Span& s : spans) {
      if (!merged.empty() && s.start <= merged.back().end) merged.back().end = std::max(merged.back().end, s.end);
      else merged.push_back(s);
    }
    const std::int32_t rank = key.second;
    Timeline clipped;
    clipped.streams = t.streams;
    clipped.num_ranks = 1;
    std::vector<KernelClass> clipped_classes;
    const auto& idx = by_rank[rank];
    for (const Span& w : merged) {
      // First interval that may reach into the window starts at or after w.start - longest.
      auto it = std::lower_bound(idx.begin(), idx.end(), w.start - longest[rank],
                                 [&](std::size_t i, Nanos v) { return t.intervals[i].start < v; });
      for (; it != idx.end() && t.intervals[*it].start < w.end; ++it) {
        Interval iv = t.intervals[*it];
        iv.start = std::max(iv.start, w.start);
        iv.end = std::min(iv.end, w.end);
        if (iv.end <= iv.start) continue;
        iv.rank = 0;
        iv.name = static_cast<std::uint32_t>(clipped_classes.size());  // only its class matters below
        clipped_classes.push_back(classes[t.intervals[*it].name]);
        clipped.intervals.push_back(iv);
      }
    }
    StepRow row;
    row.label = key.first;
    row.ranges = counts[key];
    row.first_start_ns = merged.front().start;
    row.metrics = rank_reports(clipped, 1, clipped_classes)[0];
    row.metrics.rank = rank;
    // The window, not the first-to-last kernel, is the step's span: idle includes its gaps.
    Nanos span = 0;
    for (const Span& w : merged) span += w.end - w.start;
    row.metrics.span_ns = span;
    row.metrics.idle_ns = span - row.metrics.busy_ns;
    out.rows.push_back(std::move(row));
  }
  // Steps in time order (a label's earliest start over all ranks), the ranks of one step together.
  std::map<std::string, Nanos> label_first;
  for (const StepRow& r : out.rows) {
    auto [it, inserted] = label_first.try_emplace(r.label, r.first_start_ns);
    if (!inserted) it->second = std::min(it->second, r.first_start_ns);
  }
  std::sort(out.rows.begin(), out.rows.end(), [&](const StepRow& a, const StepRow& b) {
    const Nanos fa = label_first[a.label], fb = label_first[b.label];
    if (fa != fb) return fa < fb;
    return a.label != b.label ? a.label < b.label : a.metrics.rank < b.metrics.rank;
  });
  return out;
}

}  // namespace cpscope::trace
