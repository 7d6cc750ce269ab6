// Device memory for tests/tools/fake_torch (the PyTorch stand-in that runs tools/gpu/sdpa_compare.py without a
// GPU): the emulation's cudaMalloc through a C ABI, so the buffers the fake tensors hand to cpscope's kernels are
// ones the emulated kernels may touch. Linked into libcpscope_kernels_capi_emu.so next to tools/gpu/kernels_capi.cc.
#include <cstddef>

#include <cuda_runtime_api.h>

extern "C" void* cps_emu_malloc(std::size_t bytes) {
  void* p = nullptr;
  return cudaMalloc(&p, bytes) == cudaSuccess ? p : nullptr;
}
