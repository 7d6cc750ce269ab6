#include "runtime/cuda/check.h"

namespace cpscope::rt {

void throw_call_error(const char* library, const char* expr, const char* file, int line, int rank,
                      const std::string& detail) {
  std::string where = rank >= 0 ? "rank " + std::to_string(rank) + ": " : std::string();
  throw DeviceError(where + file + ":" + std::to_string(line) + ": " + library + " call " + expr + " failed: " + detail);
}

std::string nccl_detail(const char* error_string, const char* last_error) {
  std::string d = error_string != nullptr ? error_string : "unknown NCCL error";
  if (last_error != nullptr && *last_error != '\0') d += std::string(" (") + last_error + ")";
  return d;
}

}  // namespace cpscope::rt
