// From kernels to schedule ops: the seam between traces and calibration/comparison.
//
// A trace has kernel intervals, not op ids. cpscope's runtime wraps every op in an NVTX range (domain
// "cpscope") named like "fwd/step3/attend" (pass/step/kind, sim/schedule.h op_name()); Nsight exports
// these (projected onto the GPU by the nsys reader) and Kineto records them as gpu_user_annotation
// events. op_timeline() turns each such range into one op interval: name = the range's name, step and
// pass parsed from it, kind from the op kind (sendrecv/allgather/alltoall/reduce_scatter are Comm,
// dkv_add/layout Memory, the rest Compute), start/end = the range's GPU envelope, op_id = -1.
//
// Calibration (cp-sim calibrate, sim/calibrate.h) fits a HardwareProfile to cpscope.profile files whose
// intervals carry op ids of the schedule that ran, plus the workload. A trace carries neither. The seam:
// attach_op_ids() matches each op interval to the op of the same rank and name in the schedule of a
// workload the user names (cp-trace export --profile OUT --config WORKLOAD.json), and the result is
// written with profile_json() as a measured profile that cp-sim calibrate / validate read unchanged.
// Kernels outside cpscope ranges (a PyTorch model's own NCCL and flash-attention kernels) have no op to
// map to; their per-kernel durations are in `cp-trace summary --json` (top_kernels) and are not used
// for calibration: fitting them needs a model of PyTorch's schedule, which cpscope does not have.
#pragma once

#include <regex>
#include <string>

#include "sim/schedule.h"
#include "sim/trace/trace.h"

namespace cpscope::trace {

// Matches cpscope op names: "fwd/step3/attend", "bwd/step0/reduce_scatter".
inline constexpr const char* kOpNamePattern = R"(^(fwd|bwd)/step(\d+)/([a-z_]+)$)";

// The op intervals of a trace (see above). A cpscope profile's timeline is already op-level and is
// returned as is. `found` is set to whether any op was found; when none is, the result is empty.
Timeline op_timeline(const Trace&, bool& found);

// Sets op_id of every op interval whose (rank, name) is an op of `schedule` (the k-th occurrence on a
// rank takes the k-th op of that name); returns how many intervals got no op (they keep -1).
std::size_t attach_op_ids(Timeline& ops, const Schedule& schedule);

}  // namespace cpscope::trace
