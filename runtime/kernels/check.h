// Error checks of the kernels library: CUDA calls and argument checks throw with the expression and file:line.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace cpscope::rt::kernels {

// A failed CUDA runtime call. The first failure throws, so the first error is the one reported; the
// runtime's error state is cleared by cudaGetLastError in the launchers, so a later call does not re-report it.
class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const char* expr, const char* file, int line)
      : std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + expr + " failed: " +
                           cudaGetErrorName(code) + " (" + cudaGetErrorString(code) + ")"),
        code_(code) {}
  cudaError_t code() const { return code_; }

 private:
  cudaError_t code_;
};

[[noreturn]] inline void throw_invalid(const char* cond, const std::string& what, const char* file, int line) {
  throw std::invalid_argument(std::string(file) + ":" + std::to_string(line) + ": " + what + " (" + cond + ")");
}

}  // namespace cpscope::rt::kernels

#define CPS_CUDA_CHECK(expr)                                                               \
  do {                                                                                     \
    const cudaError_t cps_err_ = (expr);                                                   \
    if (cps_err_ != cudaSuccess) throw ::cpscope::rt::kernels::CudaError(cps_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// Checks the launch that was just enqueued (configuration errors surface here, not at the next sync).
#define CPS_CUDA_CHECK_LAUNCH() CPS_CUDA_CHECK(cudaGetLastError())

// Argument invariants: always on, also in release builds.
#define CPS_REQUIRE(cond, what)                                                            \
  do {                                                                                     \
    if (!(cond)) ::cpscope::rt::kernels::throw_invalid(#cond, (what), __FILE__, __LINE__); \
  } while (0)
