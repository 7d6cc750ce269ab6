// The library-independent half of check.h: formatting and throwing a failed call. Plain C++ (the CUPTI half,
// cupti_result_string, is in check.cc), so the MPI code that uses CPS_INSTR_MPI_CALL builds without CUDA.
#include "runtime/instrument/check.h"

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

}  // namespace cpscope::rt::instrument
