// Internal to libcpsim: one generator per schedule family, dispatched by make_schedule() after
// validate(). Each may assume a valid workload; each file's header comment documents its structure.
#pragma once

#include <string>
#include <vector>

#include "sim/schedule.h"

namespace cpscope::gen {

Schedule make_ring(const Workload& w);       // ScheduleKind::Ring and ZigzagRing (ring.cc)
Schedule make_allgather(const Workload& w);  // ScheduleKind::AllGather (allgather.cc)
Schedule make_ulysses(const Workload& w);    // ScheduleKind::Ulysses (hybrid.cc: hybrid with U = N, R = 1)
Schedule make_hybrid(const Workload& w);     // ScheduleKind::Hybrid (hybrid.cc)

// An empty schedule for `w`: the workload, its streams, N rank programs with their ids, no groups.
// Streams are {"compute", "comm"}, plus "comm_dkv" when a ring backward uses fp32 dK/dV.
Schedule empty_schedule(const Workload& w);

}  // namespace cpscope::gen
