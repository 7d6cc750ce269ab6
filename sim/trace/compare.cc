// Alignment by name: totals and means per op name, spans per (pass, step).
#include "sim/trace/compare.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sim/trace/op_timeline.h"

namespace cpscope::trace {
namespace {

Nanos wall(const Timeline& t) {
  if (t.intervals.empty()) return 0;
  Nanos lo = std::numeric_limits<Nanos>::max(), hi = std::numeric_limits<Nanos>::min();
  for (const Interval& iv : t.intervals) {
    lo = std::min(lo, iv.start);
    hi = std::max(hi, iv.end);
  }
  return hi - lo;
}

void add_side(const Timeline& t, bool side_a, std::map<std::string, OpDiff>& ops,
              std::map<std::pair<int, int>, std::pair<Nanos, Nanos>>& steps) {
  for (const Interval& iv : t.intervals) {
    OpDiff& d = ops[t.name(iv.name)];
    (side_a ? d.count_a : d.count_b) += 1;
    (side_a ? d.total_a_ns : d.total_b_ns) += iv.duration();
    if (iv.step < 0 || iv.pass < 0) continue;
    auto [it, inserted] = steps.try_emplace({iv.pass, iv.step}, iv.start, iv.end);
    if (!inserted) it->second = {std::min(it->second.first, iv.start), std::max(it->second.second, iv.end)};
  }
}

// When one side's ranks are a strict subset of the other's (a replay profile measures one rank of N), the
// other side is compared on those ranks only; otherwise each op's mean would mix ranks that did not run.
void restrict_to_common_ranks(Timeline& a, Timeline& b, std::vector<std::string>& warnings) {
  const std::set<std::int32_t> ra = a.ranks_with_intervals(), rb = b.ranks_with_intervals();
  if (ra.empty() || rb.empty() || ra == rb) return;
  const bool a_in_b = std::includes(rb.begin(), rb.end(), ra.begin(), ra.end());
  const bool b_in_a = std::includes(ra.begin(), ra.end(), rb.begin(), rb.end());
  if (!a_in_b && !b_in_a) return;
  const std::set<std::int32_t>& keep = a_in_b ? ra : rb;
  (a_in_b ? b : a).keep_ranks(keep);
  warnings.push_back(fmt::format("{} has rank(s) {} of {} only (a replay profile?): {} is compared on those ranks",
                                 a_in_b ? "A" : "B", fmt::join(keep, ","), (a_in_b ? rb : ra).size(),
                                 a_in_b ? "B" : "A"));
}

}  // namespace

CompareReport compare_traces(const Trace& a, const Trace& b) {
  CompareReport out;
  bool found_a = false, found_b = false;
  Timeline ops_a = op_timeline(a, found_a), ops_b = op_timeline(b, found_b);
  const Timeline* ta = &ops_a;
  const Timeline* tb = &ops_b;
  out.basis = "ops";
  if (!found_a || !found_b) {
    // Without cpscope op ranges on both sides, names only line up kernel by kernel.
    out.basis = "kernels";
    ta = &a.timeline;
    tb = &b.timeline;
    out.warnings.push_back(fmt::format("{} has no cpscope op ranges (NVTX 'fwd/stepN/kind'): compared kernel by kernel",
                                       !found_a ? "A" : "B"));
  }
  if (out.basis == "ops") restrict_to_common_ranks(ops_a, ops_b, out.warnings);
  out.wall_a_ns = wall(*ta);
  out.wall_b_ns = wall(*tb);
  std::map<std::string, OpDiff> ops;
  std::map<std::pair<int, int>, std::pair<Nanos, Nanos>> steps_a, steps_b;
  add_side(*ta, true, ops, steps_a);
  add_side(*tb, false, ops, steps_b);
  for (auto& [name, d] : ops) {
    d.name = name;
    d.mean_a_ns = d.count_a > 0 ? d.total_a_ns / d.count_a : 0;
    d.mean_b_ns = d.count_b > 0 ? d.total_b_ns / d.count_b : 0;
    out.ops.push_back(d);
  }
  std::map<std::pair<int, int>, StepDiff> steps;
  for (const auto& [k, se] : steps_a) {
    StepDiff& s = steps[k];
    s.in_a = true;
    s.span_a_ns = se.second - se.first;
  }
  for (const auto& [k, se] : steps_b) {
    StepDiff& s = steps[k];
    s.in_b = true;
    s.span_b_ns = se.second - se.first;
  }
  for (auto& [k, s] : steps) {
    s.step = fmt::format("{}/step{}", k.first == 1 ? "bwd" : "fwd", k.second);
    out.steps.push_back(s);
  }
  return out;
}

}  // namespace cpscope::trace
