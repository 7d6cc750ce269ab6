#include "runtime/cuda/check.h"

namespace cpscope::rt {

void throw_call_error(const char* library, const char* expr, const char* file, int line, int rank,
                      const std::string& detail) {
  std::string where = rank >= 0 ? "rank " + std::to_string(rank) + ": " : std::string();
  throw DeviceError(where + file + ":" + std::to_string(line) + ": " + library + " call " + expr + " failed: " + detail);
}

}  // namespace cpscope::rt
