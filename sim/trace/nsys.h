// Nsight Systems SQLite export (`nsys export --type sqlite`) into a Trace.
//
// Read: CUPTI_ACTIVITY_KIND_KERNEL (names through StringIds: shortName, or demangledName with
// --demangled), CUPTI_ACTIVITY_KIND_MEMCPY / _MEMSET (Memory intervals, with bytes), NVTX_EVENTS
// push/pop and start/end ranges (text inline or through textId; domain names from the
// DomainCreate rows, eventType 75), GPU names from TARGET_INFO_CUDA_DEVICE + TARGET_INFO_GPU.
// Ranks: one per (process, CUDA device) pair that ran GPU activity, ordered by pid then device, so a
// report of one rank gives one rank and a report of a whole node (several processes, or one process
// driving several GPUs) gives one rank per GPU.
// NVTX ranges are CPU-side; each is projected onto the GPU as the envelope of the kernels launched
// inside it (CUPTI_ACTIVITY_KIND_RUNTIME correlation ids on the range's thread), the way Nsight's
// "GPU projection" rows do, so per-step numbers count what the GPU did during the step.
// Tables or columns a given nsys version lacks turn the feature off with a warning; a file with no GPU
// activity table at all, or rows with missing or inverted times, is an InputError naming the table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "sim/trace/classify.h"
#include "sim/trace/trace.h"

namespace cpscope::trace {

struct NsysOptions {
  bool demangled_names = false;  // name kernels by demangledName instead of shortName
};

Trace read_nsys_file(const std::string& path, std::int64_t file_order, const Classifier&, const NsysOptions& = {});
// The same from an in-memory copy of the file (fuzzing); `where` names it in errors.
Trace read_nsys_memory(const unsigned char* data, std::size_t size, const std::string& where, const Classifier&,
                       const NsysOptions& = {});

// True when the file starts with "SQLite format 3\0".
bool is_sqlite_file(const std::string& path);

}  // namespace cpscope::trace
