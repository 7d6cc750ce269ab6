// A trace read from a foreign format: the Timeline (GPU kernels, copies) plus what the Timeline has no
// place for: annotation ranges (NVTX, gpu_user_annotation) and where each rank came from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sim/timeline.h"

namespace cpscope::trace {

// An annotation range on a rank's GPU timeline (NVTX projected onto the GPU, Kineto
// gpu_user_annotation, or an op interval of a cpscope profile). Names live in timeline.names().
struct Range {
  std::int32_t rank = 0;
  std::uint32_t name = 0;
  std::uint32_t domain = 0;  // NVTX domain name ("" when none)
  Nanos start = 0;
  Nanos end = 0;
};

// Where a rank's intervals came from. Ranks are numbered densely in the order of
// (order, pid, device): `order` is Kineto's distributedInfo.rank when the file has one, else the
// position of the file on the command line (directories expand to their sorted trace files).
struct RankSource {
  std::string file;
  std::int64_t order = 0;
  std::int64_t pid = -1;     // process id (nsys: globalPid >> 24; Kineto: the event's pid), -1 unknown
  std::int64_t device = -1;  // CUDA device id, -1 unknown
  std::string gpu;           // GPU name when the trace says (nsys TARGET_INFO_GPU)
};

struct Trace {
  Timeline timeline;
  std::vector<Range> ranges;
  std::vector<RankSource> ranks;      // index = rank
  std::vector<std::string> warnings;  // optional features turned off, rows skipped
  Nanos origin_ns = 0;  // the readers' clock value of time 0 (merged traces start at 0)
  std::string format;   // "nsys-sqlite" | "kineto-json" | "cpscope-profile" | "mixed"
};

// Interns a stream label ("stream 7") into the shared stream table and returns its index.
std::int32_t stream_index(Timeline& timeline, const std::string& label);

// Joins per-file traces into one: ranks renumbered by the rule above, names and streams re-interned,
// every time shifted so the earliest start is 0 (origin_ns keeps the shift). Files keep their own
// clocks: Kineto and nsys both stamp GPU activity with the host's clock, so ranks on one node align.
Trace merge_traces(std::vector<Trace> parts);

}  // namespace cpscope::trace
