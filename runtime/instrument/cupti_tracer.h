// The CUPTI activity tracer: GPU timestamps of every kernel, memcpy and memset an op launched, turned
// into one interval per op (runtime/measured.h's OpInterval, then measured_timeline()).
//   - Activity kinds: CONCURRENT_KERNEL (never KERNEL, which serializes kernels and would hide the very
//     overlap being measured), MEMCPY, MEMSET, EXTERNAL_CORRELATION, plus RUNTIME and DRIVER: CUPTI
//     emits external correlation records only for API calls it records.
//   - Every main call of an op pushes the op's key (correlation.h) as a CUSTOM0 external correlation id
//     on its issuing thread (OpRange, op_range.h), so the records of everything launched inside it —
//     NCCL kernels launched inside ncclGroupEnd on a blocking communicator included — map back to
//     (rank, op). A library that launches from threads of its own (NCCL's group job on the nccl
//     transport's non-blocking communicators) is covered by a LaunchWindowScope around the hand-over:
//     the RUNTIME/DRIVER records say when each launch call began, and a call that began inside the
//     window is the op's (op_intervals.h).
//   - Buffers are requested and completed asynchronously by CUPTI (aligned, 8 MiB each) and flushed at
//     the end of each traced iteration.
// CUPTI's buffer callbacks are plain C functions without a user pointer, registered once per process, so
// at most one CuptiTracer exists at a time (the constructor throws otherwise). A run traces one
// iteration (or alternate iterations for the overhead benchmark):
//   start()  before the iteration is issued;  end_launches() once every launch is issued (stops API
//   records: synchronize()'s event polling would otherwise fill buffers);  finish() after the device is
//   synchronized.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/instrument/op_intervals.h"
#include "runtime/measured.h"

namespace cpscope::rt::instrument {

struct TraceCapture {
  std::vector<OpInterval> ops;    // CUPTI clock (ns since an arbitrary origin), sorted by (rank, op)
  std::int64_t records = 0;       // kernel/memcpy/memset records delivered
  std::int64_t unattributed = 0;  // launched outside any op or launch window (other libraries)
  std::int64_t windowed = 0;      // attributed through a launch window (NCCL's own thread)
  std::int64_t untimed = 0;       // records without timestamps
  std::int64_t dropped = 0;       // records CUPTI dropped (buffer allocation failed), plus buffers cut
                                  // short by an incomplete record
};

class CuptiTracer {
 public:
  // `rank` names the process's rank in error messages (-1 for loopback's several). Registers the buffer
  // callbacks (once per process) and checks that the loaded libcupti delivers the record layouts this
  // build was compiled for. Throws DeviceError.
  explicit CuptiTracer(std::int32_t rank);
  ~CuptiTracer();
  CuptiTracer(const CuptiTracer&) = delete;
  CuptiTracer& operator=(const CuptiTracer&) = delete;

  void start();
  void end_launches();
  // Disables the GPU activity kinds, flushes every buffer (forced: the caller has synchronized the
  // device, so every record is complete) and attributes the records to ops. Throws the first error a
  // callback or an OpRange hit since start().
  TraceCapture finish();
  bool capturing() const { return capturing_; }

  // CUPTI's clock, the one activity records are stamped with (cuptiGetTimestamp).
  static std::int64_t now_ns(std::int32_t rank);

 private:
  void set_kinds(bool enable, bool api, bool gpu);
  std::int32_t rank_;
  bool capturing_ = false;
  bool api_on_ = false;
};

// A launch window (op_intervals.h) of op `op` of `rank`, from construction to destruction, noted while a
// capture runs (otherwise it does nothing): construct it right before the call that hands the op's work
// to a library's own thread and let it end once that work is launched. Errors go to note_trace_error.
class LaunchWindowScope {
 public:
  LaunchWindowScope(std::int32_t rank, std::int32_t op);
  ~LaunchWindowScope();
  LaunchWindowScope(const LaunchWindowScope&) = delete;
  LaunchWindowScope& operator=(const LaunchWindowScope&) = delete;

 private:
  std::uint64_t key_ = 0;
  std::uint64_t begin_ns_ = 0;
  bool active_ = false;
};

// Records an error found where throwing is impossible (an OpRange destructor, a CUPTI callback); the
// running capture's finish() throws the first one. Thread-safe.
void note_trace_error(const std::string& message);

}  // namespace cpscope::rt::instrument
