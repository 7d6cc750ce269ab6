// Stand-in for <nccl.h> under the SIMT emulation: NCCL is not emulated (the replay and nccl transports are
// not built there; emu/cuda_stubs.cc says so), only the version query the run reports is.
#pragma once

typedef enum { ncclSuccess = 0, ncclInvalidUsage = 5 } ncclResult_t;  // NOLINT(modernize-use-using)

inline ncclResult_t ncclGetVersion(int* version) {
  *version = 0;  // reported as "0.0.0": no NCCL
  return ncclSuccess;
}
inline const char* ncclGetErrorString(ncclResult_t r) { return r == ncclSuccess ? "no error" : "NCCL is not emulated"; }
