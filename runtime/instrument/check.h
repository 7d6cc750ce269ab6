// Error checks of the instrumentation library: a failed CUPTI or MPI call throws DeviceError (the CUDA
// runtime library's error type, so the tools report it like any other device failure) naming the rank,
// file:line, the expression and the library's message. The first failure throws.
#pragma once

#include <string>

#include "runtime/cuda/check.h"  // DeviceError only (header-only type; this library does not link cprt_cuda)

namespace cpscope::rt::instrument {

// "rank 3: cupti_tracer.cc:120: CUPTI call cuptiActivityEnable(k) failed: CUPTI_ERROR_... (...)".
[[noreturn]] void throw_instrument_error(const char* library, const char* expr, const char* file, int line, int rank,
                                         const std::string& detail);
// The message of a CUPTI result code ("CUPTI_ERROR_INVALID_PARAMETER"); works for any value.
std::string cupti_result_string(int result);
// Formats a failure without throwing, for places that must not throw (destructors, CUPTI's callbacks).
std::string format_instrument_error(const char* library, const char* expr, const char* file, int line, int rank,
                                    const std::string& detail);

}  // namespace cpscope::rt::instrument

// `rank` is the CP rank the call acts for (-1 when none). cupti.h / mpi.h must be included where used.
#define CPS_CUPTI_CALL(rank, expr)                                                                            \
  do {                                                                                                        \
    const CUptiResult cps_c_ = (expr);                                                                        \
    if (cps_c_ != CUPTI_SUCCESS)                                                                              \
      ::cpscope::rt::instrument::throw_instrument_error("CUPTI", #expr, __FILE__, __LINE__, (rank),           \
                                                        ::cpscope::rt::instrument::cupti_result_string(cps_c_)); \
  } while (0)

#define CPS_INSTR_MPI_CALL(rank, expr)                                                                  \
  do {                                                                                                  \
    const int cps_m_ = (expr);                                                                          \
    if (cps_m_ != MPI_SUCCESS) {                                                                        \
      char cps_msg_[MPI_MAX_ERROR_STRING] = {};                                                         \
      int cps_len_ = 0;                                                                                 \
      MPI_Error_string(cps_m_, cps_msg_, &cps_len_);                                                    \
      ::cpscope::rt::instrument::throw_instrument_error("MPI", #expr, __FILE__, __LINE__, (rank),       \
                                                        std::string(cps_msg_, static_cast<std::size_t>(cps_len_))); \
    }                                                                                                   \
  } while (0)
