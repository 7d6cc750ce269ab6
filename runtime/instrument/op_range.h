// The instrumentation of one op's backend calls (attention, copy, exchange, collective, and the fills and
// backward delta before it, Op::fills; not its waits and records): an NVTX range named op_name(op) with the op
// id as payload, and, while a CUPTI capture runs, the op's external correlation id (correlation.h)
// pushed for the launches in between. Constructed and destroyed on the issuing host thread.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/instrument/nvtx.h"

namespace cpscope::rt::instrument {

class OpRange {
 public:
  // Throws DeviceError when the push fails or (rank, op) does not fit a key.
  OpRange(const std::string& name, std::int32_t rank, std::int32_t op, bool correlate);
  // Pops; a failed pop, or one that removes another id than this range pushed (someone else's push left
  // on this thread), is reported through note_trace_error (the capture's finish() throws it).
  ~OpRange();
  OpRange(const OpRange&) = delete;
  OpRange& operator=(const OpRange&) = delete;

 private:
  NvtxRange nvtx_;
  std::int32_t rank_, op_;
  bool correlated_;
};

}  // namespace cpscope::rt::instrument
