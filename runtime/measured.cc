#include "runtime/measured.h"

#include <algorithm>
#include <limits>

#include "sim/error.h"

namespace cpscope::rt {

Timeline measured_timeline(const Schedule& schedule, const std::vector<OpInterval>& ops) {
  Timeline t;
  t.num_ranks = static_cast<std::int32_t>(schedule.ranks.size());
  t.streams = schedule.streams;
  std::int64_t origin = std::numeric_limits<std::int64_t>::max();
  for (const OpInterval& o : ops) origin = std::min(origin, o.start_ns);
  t.intervals.reserve(ops.size());
  for (const OpInterval& o : ops) {
    CPSCOPE_CHECK(o.rank >= 0 && o.rank < t.num_ranks, "interval of an unknown rank");
    const auto& prog = schedule.ranks[static_cast<std::size_t>(o.rank)].ops;
    CPSCOPE_CHECK(o.op >= 0 && static_cast<std::size_t>(o.op) < prog.size(), "interval of an unknown op");
    const Op& op = prog[static_cast<std::size_t>(o.op)];
    Interval iv;
    iv.rank = o.rank;
    iv.stream = op.stream;
    iv.kind = interval_kind(op.kind);
    iv.name = t.intern(op_name(op));
    iv.op_id = op.id;
    iv.step = op.step;
    iv.pass = op.pass == OpPass::Fwd ? 0 : 1;
    iv.start = o.start_ns - origin;
    iv.end = std::max(o.end_ns, o.start_ns) - origin;
    iv.bytes = op.bytes;
    iv.flops = op.flops;
    t.intervals.push_back(iv);
  }
  t.sort_by_start();
  return t;
}

}  // namespace cpscope::rt
