// From GPU activity records to per-op intervals, and the host-side steps around it: attributing records
// to ops through their external correlation ids, shifting a rank's clock onto rank 0's, and flattening
// intervals into one int64 array for the gather to rank 0. Plain C++ (no CUPTI types), so every step is
// unit-tested on a machine without a GPU; cupti_tracer.cc fills these structs from CUPTI's records.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/measured.h"
#include "sim/schedule.h"

namespace cpscope::rt::instrument {

enum class GpuRecordKind : std::uint8_t { Kernel, Memcpy, Memset };

// One kernel, memcpy or memset execution (CUPTI CONCURRENT_KERNEL / MEMCPY / MEMSET record).
struct GpuRecord {
  GpuRecordKind kind = GpuRecordKind::Kernel;
  std::uint32_t correlation = 0;  // CUPTI correlation id of the API call that launched it
  std::uint32_t stream = 0;       // CUPTI stream id
  std::uint64_t start_ns = 0, end_ns = 0;  // CUPTI clock; both 0 when CUPTI could not time it
};

// CUPTI EXTERNAL_CORRELATION record of kind CUSTOM0: the id cpscope pushed when `correlation` was issued.
struct CorrelationRecord {
  std::uint32_t correlation = 0;
  std::uint64_t key = 0;
};

// CUPTI RUNTIME or DRIVER record: an API call (a kernel launch among them) and when it began, CUPTI clock.
struct ApiRecord {
  std::uint32_t correlation = 0;
  std::uint64_t start_ns = 0;
};

// A span of an op's issuing thread (CUPTI clock) in which a library launches the op's work from threads
// of its own: NCCL's group job thread on a non-blocking communicator, between ncclGroupEnd and the
// communicator leaving ncclInProgress. External correlation ids are per thread, so those launches carry
// none; an API call that began inside exactly one window, and that no external correlation claims, is
// that window's op.
struct LaunchWindow {
  std::uint64_t key = 0;  // correlation.h
  std::uint64_t begin_ns = 0, end_ns = 0;
};

struct Attribution {
  std::vector<OpInterval> ops;    // one per (rank, op) with records, sorted by (rank, op)
  std::int64_t attributed = 0;    // records that landed in an op
  std::int64_t windowed = 0;      // of those, through a launch window (NCCL's own thread)
  std::int64_t unattributed = 0;  // records launched outside any op or window (other libraries)
  std::int64_t untimed = 0;       // records CUPTI could not time (start = end = 0): ignored
};

// An op's interval is [min start, max end] over every record its calls launched, on any stream (an NCCL
// exchange launches kernels; a backward attention its fills, the pass's delta and the kernel). A record's
// op comes from the external correlation of the call that launched it, else from the launch window that
// call began in (`api` gives when each call began).
Attribution attribute_records(const std::vector<GpuRecord>& records, const std::vector<CorrelationRecord>& correlations,
                              const std::vector<ApiRecord>& api = {}, const std::vector<LaunchWindow>& windows = {});

// Moves intervals from a rank's clock onto the reference clock: t - offset_ns, where offset_ns is the
// rank's clock minus the reference's (clock_offset below).
void shift_clock(std::vector<OpInterval>& ops, std::int64_t offset_ns);

// One round trip of a clock exchange with the reference rank (Cristian's method): this rank read `sent`,
// sent a message, the reference read `reference` on receiving it and replied, and this rank read
// `received` on the reply, `sent` and `received` on this rank's clock.
struct ClockPing {
  std::int64_t sent = 0, reference = 0, received = 0;
};
// The offset of this rank's clock from the reference rank's: from the round with the shortest round trip,
// the midpoint of `sent` and `received` minus `reference`. The reference read its clock somewhere inside
// that round trip, so the error is at most half of it, and nothing in it depends on the order in which
// ranks leave a barrier (readings taken after a barrier carry that order as a bias of microseconds).
// Throws InternalError on no rounds or a round whose reply came before its message.
std::int64_t clock_offset(const std::vector<ClockPing>& rounds);

// [rank, op, start_ns, end_ns] per interval, for MPI_Gatherv; unflatten throws InternalError on an
// array whose length is not a multiple of kFlatFields.
inline constexpr std::size_t kFlatFields = 4;
std::vector<std::int64_t> flatten(const std::vector<OpInterval>& ops);
std::vector<OpInterval> unflatten(const std::vector<std::int64_t>& flat);

// The (rank, op) pairs of `ranks` that the schedule runs but `ops` has no interval for (an op whose
// main call launched nothing on the GPU, or records CUPTI dropped).
struct MissingOp {
  std::int32_t rank = 0, op = 0;
};
std::vector<MissingOp> missing_ops(const Schedule& schedule, const std::vector<std::int32_t>& ranks,
                                   const std::vector<OpInterval>& ops);

}  // namespace cpscope::rt::instrument
