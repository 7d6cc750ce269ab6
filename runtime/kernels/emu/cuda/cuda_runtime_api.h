// Stand-in for the CUDA runtime API under the SIMT emulation (runtime/kernels/emu/simt.h): only what the
// kernels' launchers and their tests call. Device memory is host memory, every call is synchronous, and
// there is one "device".
#pragma once

#include <cstddef>

typedef struct CUstream_st* cudaStream_t;  // NOLINT(modernize-use-using): as in the real header

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

cudaError_t cudaMalloc(void** p, std::size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);

// Dynamic shared memory above 48 KB must be opted into, as on the GPU; the emulation allows up to the 227 KB
// of an sm_90 block.
template <typename F>
cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute attr, int value) {
  return attr == cudaFuncAttributeMaxDynamicSharedMemorySize && value >= 0 && value <= 227 * 1024
             ? cudaSuccess
             : cudaErrorInvalidValue;
}
