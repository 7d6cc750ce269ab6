// NVTX ranges in the "cpscope" domain, so Nsight Systems shows the schedule as the simulator sees it:
// one range per op (named like "fwd/step3/attend", payload = the op id), one per iteration, and one for
// the whole run carrying its config. NVTX is header-only and costs a predictable branch when no tool
// (nsys) is attached, so ranges are always on. A range is pushed and popped on one host thread.
#pragma once

#include <cstdint>
#include <string>

namespace cpscope::rt::instrument {

// Pushes on construction, pops on destruction. `message` must outlive the range only until the
// constructor returns (NVTX copies it).
class NvtxRange {
 public:
  explicit NvtxRange(const std::string& message);
  NvtxRange(const char* message, std::uint64_t payload);  // payload shown as the range's value (op id)
  ~NvtxRange();
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace cpscope::rt::instrument
