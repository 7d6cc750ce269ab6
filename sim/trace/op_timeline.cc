// Op intervals from cpscope NVTX ranges, and op ids from the schedule they ran (the calibration seam).
#include "sim/trace/op_timeline.h"

#include <map>
#include <unordered_map>

#include "sim/error.h"

namespace cpscope::trace {
namespace {

IntervalKind kind_of_op(const std::string& kind) {
  if (kind == "sendrecv" || kind == "allgather" || kind == "alltoall" || kind == "reduce_scatter")
    return IntervalKind::Comm;
  if (kind == "dkv_add" || kind == "layout") return IntervalKind::Memory;
  return IntervalKind::Compute;
}

}  // namespace

Timeline op_timeline(const Trace& trace, bool& found) {
  if (trace.format == "cpscope-profile") {
    found = !trace.timeline.intervals.empty();
    return trace.timeline;
  }
  const std::regex re(kOpNamePattern);
  Timeline out;
  out.num_ranks = trace.timeline.num_ranks;
  out.streams = {"ops"};
  struct Parsed {
    bool ok;
    std::int8_t pass;
    std::int32_t step;
    IntervalKind kind;
  };
  std::unordered_map<std::uint32_t, Parsed> parsed;
  for (const Range& r : trace.ranges) {
    auto it = parsed.find(r.name);
    if (it == parsed.end()) {
      std::smatch m;
      const std::string& name = trace.timeline.name(r.name);
      Parsed p{false, -1, -1, IntervalKind::Compute};
      if (std::regex_match(name, m, re)) {
        try {
          p = {true, static_cast<std::int8_t>(m.str(1) == "bwd" ? 1 : 0), std::stoi(m.str(2)), kind_of_op(m.str(3))};
        } catch (const std::out_of_range&) {
          // a step number beyond int: not one of ours
        }
      }
      it = parsed.emplace(r.name, p).first;
    }
    if (!it->second.ok) continue;
    Interval iv;
    iv.rank = r.rank;
    iv.stream = 0;
    iv.kind = it->second.kind;
    iv.name = out.intern(trace.timeline.name(r.name));
    iv.step = it->second.step;
    iv.pass = it->second.pass;
    iv.start = r.start;
    iv.end = r.end;
    out.intervals.push_back(iv);
  }
  found = !out.intervals.empty();
  out.sort_by_start();
  return out;
}

std::size_t attach_op_ids(Timeline& ops, const Schedule& schedule) {
  ops.sort_by_start();
  // (rank, name) -> the schedule's ops of that name, in program order.
  std::map<std::pair<std::int32_t, std::string>, std::vector<const Op*>> by_name;
  for (std::size_t r = 0; r < schedule.ranks.size(); ++r)
    for (const Op& op : schedule.ranks[r].ops) by_name[{static_cast<std::int32_t>(r), op_name(op)}].push_back(&op);
  std::map<std::pair<std::int32_t, std::string>, std::size_t> used;
  std::vector<Interval> kept;
  std::size_t unmatched = 0;
  for (Interval iv : ops.intervals) {
    const std::pair<std::int32_t, std::string> key{iv.rank, ops.name(iv.name)};
    auto it = by_name.find(key);
    std::size_t& k = used[key];
    if (it == by_name.end() || k >= it->second.size()) {
      ++unmatched;
      continue;
    }
    const Op& op = *it->second[k++];
    iv.op_id = op.id;
    iv.stream = op.stream;
    iv.step = op.step;
    iv.pass = static_cast<std::int8_t>(op.pass == OpPass::Bwd ? 1 : 0);
    iv.bytes = op.bytes;
    iv.flops = op.flops;
    kept.push_back(iv);
  }
  ops.intervals = std::move(kept);
  ops.streams = schedule.streams;
  ops.num_ranks = static_cast<std::int32_t>(schedule.ranks.size());
  return unmatched;
}

}  // namespace cpscope::trace
