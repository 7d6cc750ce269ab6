// Shared by the GPU tests (label gpu): skip, not pass, when no CUDA device is usable, and say why.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include <gtest/gtest.h>

namespace cpscope::rt::testing {

// Empty when a CUDA device is usable, else why not (driver missing, no device visible).
inline std::string no_device_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(e);
  if (n == 0) return "no CUDA device is visible";
  return {};
}

}  // namespace cpscope::rt::testing

// In a TEST body: GTEST_SKIP with the reason when there is no device.
#define CPS_REQUIRE_GPU()                                                       \
  do {                                                                          \
    const std::string cps_why_ = ::cpscope::rt::testing::no_device_reason();    \
    if (!cps_why_.empty()) GTEST_SKIP() << cps_why_;                            \
  } while (0)
