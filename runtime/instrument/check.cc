#include "runtime/instrument/check.h"

#include <cupti.h>

namespace cpscope::rt::instrument {

std::string format_instrument_error(const char* library, const char* expr, const char* file, int line, int rank,
                                    const std::string& detail) {
  std::string where = rank >= 0 ? "rank " + std::to_string(rank) + ": " : std::string();
  return where + file + ":" + std::to_string(line) + ": " + library + " call " + expr + " failed: " + detail;
}

void throw_instrument_error(const char* library, const char* expr, const char* file, int line, int rank,
                            const std::string& detail) {
  throw DeviceError(format_instrument_error(library, expr, file, line, rank, detail));
}

std::string cupti_result_string(int result) {
  const char* s = nullptr;
  if (cuptiGetResultString(static_cast<CUptiResult>(result), &s) == CUPTI_SUCCESS && s != nullptr) return s;
  return "CUPTI result " + std::to_string(result);
}

}  // namespace cpscope::rt::instrument
