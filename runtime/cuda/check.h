// Error checks of the CUDA runtime library (backend, transports, run_on_cuda): a failed CUDA, NCCL or
// MPI call throws DeviceError naming the rank, file:line, the expression and the library's own message.
// The first failure throws, so the first error is the one reported.
#pragma once

#include <stdexcept>
#include <string>

namespace cpscope::rt {

// A CUDA, NCCL or MPI failure at run time (the tool reports it; it is not an input error).
class DeviceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "rank 3: file.cc:120: cudaStreamCreate(&s) failed: cudaErrorInvalidValue (invalid argument)".
[[noreturn]] void throw_call_error(const char* library, const char* expr, const char* file, int line, int rank,
                                   const std::string& detail);

// NCCL's message for a result code, with ncclGetLastError's reason for this failure when it has one.
std::string nccl_detail(const char* error_string, const char* last_error);

}  // namespace cpscope::rt

// `rank` is the CP rank the call acts for (-1 before one is known). The library headers (cuda_runtime_api.h,
// nccl.h, mpi.h) must be included where the macros are used.
#define CPS_CUDA_CALL(rank, expr)                                                                            \
  do {                                                                                                       \
    const cudaError_t cps_e_ = (expr);                                                                       \
    if (cps_e_ != cudaSuccess)                                                                               \
      ::cpscope::rt::throw_call_error("CUDA", #expr, __FILE__, __LINE__, (rank),                             \
                                      std::string(cudaGetErrorName(cps_e_)) + " (" + cudaGetErrorString(cps_e_) + ")"); \
  } while (0)

#define CPS_NCCL_CALL(rank, expr)                                                                                   \
  do {                                                                                                              \
    const ncclResult_t cps_r_ = (expr);                                                                             \
    if (cps_r_ != ncclSuccess)                                                                                      \
      ::cpscope::rt::throw_call_error("NCCL", #expr, __FILE__, __LINE__, (rank),                                  \
                                      ::cpscope::rt::nccl_detail(ncclGetErrorString(cps_r_), ncclGetLastError(nullptr))); \
  } while (0)

#define CPS_MPI_CALL(rank, expr)                                                                       \
  do {                                                                                                 \
    const int cps_m_ = (expr);                                                                         \
    if (cps_m_ != MPI_SUCCESS) {                                                                       \
      char cps_msg_[MPI_MAX_ERROR_STRING] = {};                                                        \
      int cps_len_ = 0;                                                                                \
      MPI_Error_string(cps_m_, cps_msg_, &cps_len_);                                                   \
      ::cpscope::rt::throw_call_error("MPI", #expr, __FILE__, __LINE__, (rank), std::string(cps_msg_, cps_len_)); \
    }                                                                                                  \
  } while (0)
