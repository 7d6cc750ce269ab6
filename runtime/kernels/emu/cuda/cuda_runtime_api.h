// Stand-in for the CUDA runtime API under the SIMT emulation (runtime/kernels/emu/simt.h): what the kernels'
// launchers, the CUDA backend, the loopback transport and their tests call. There is one "device", and device
// memory is host memory (poisoned with 0xff bytes when allocated). Streams are lazy: work queued on a stream
// runs only when something needs it (a stream or event synchronisation or query, a cudaStreamWaitEvent whose
// stream runs, cudaDeviceSynchronize, cudaFree), so a consumer that does not wait for its producer's event
// runs before the producer and reads stale bytes, as it may on a GPU. The legacy default stream (0) runs at
// once, after the blocking streams' queued work, as do cudaMemcpy and cudaMemset. Events carry the host clock
// of when their marker ran, so elapsed times measure the emulation.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

typedef struct CUstream_st* cudaStream_t;  // NOLINT(modernize-use-using): as in the real header
typedef struct CUevent_st* cudaEvent_t;    // NOLINT(modernize-use-using)

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorNotReady = 600 };
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
constexpr unsigned cudaStreamNonBlocking = 0x01;
constexpr unsigned cudaEventDisableTiming = 0x02;

struct cudaDeviceProp {
  char name[256];
  int multiProcessorCount;
};

cudaError_t cudaMalloc(void** p, std::size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t stream);
cudaError_t cudaMemset(void* p, int value, std::size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t stream);
cudaError_t cudaMemGetInfo(std::size_t* free, std::size_t* total);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDriverGetVersion(int* version);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned flags, int priority);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);

// What a queued item is, for the activity records below.
enum class CpsEmuWork : int { Kernel = 0, Memcpy = 1, Memset = 2, Marker = 3 };
// Queues `work` on `stream` like a kernel launch (runtime/kernels/launch.h).
void cps_emu_enqueue(cudaStream_t stream, std::function<void()> work, CpsEmuWork kind = CpsEmuWork::Kernel);

// The emulation's stand-in for CUPTI activity tracing (emu/cuda_stubs.cc builds the CuptiTracer on it). While
// API recording is on, every kernel, copy and set issued gets a correlation id, and one issued inside a pushed
// external id (per host thread, like cuptiActivityPushExternalCorrelationId) also a correlation record; while
// GPU recording is on, each records the host-clock interval it ran in (a lazy stream runs it later).
struct CpsEmuActivity {
  CpsEmuWork kind;
  unsigned correlation, stream;
  unsigned long long start_ns, end_ns;
};
struct CpsEmuCorrelation {
  unsigned correlation;
  unsigned long long external_id;
};
void cps_emu_activity(bool api, bool gpu);
void cps_emu_activity_take(std::vector<CpsEmuActivity>& records, std::vector<CpsEmuCorrelation>& correlations);
void cps_emu_push_external_id(unsigned long long id);
void cps_emu_pop_external_id();
unsigned long long cps_emu_now_ns();  // the clock of the records

// Dynamic shared memory above 48 KB must be opted into, as on the GPU; the emulation allows up to the 227 KB
// of an sm_90 block. The opt-in is kept per kernel, and CPS_LAUNCH (runtime/kernels/launch.h) refuses a launch
// that asks for more than its kernel's (cudaGetLastError then returns cudaErrorInvalidValue, as the GPU's would).
void cps_emu_set_max_dynamic_smem(const void* kernel, int bytes);
bool cps_emu_launch_refused(const void* kernel, std::size_t dynamic_smem_bytes);
template <typename F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > 227 * 1024)
    return cudaErrorInvalidValue;
  cps_emu_set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}
