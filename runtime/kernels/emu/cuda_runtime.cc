// The CUDA runtime stand-in of emu/cuda/cuda_runtime_api.h: host memory registered with the SIMT emulation (so
// kernels may read and write it and nothing else), lazy streams, events stamped with the host clock when their
// marker runs. Thread-safe: the loopback transport issues from one thread per virtual rank; queued work runs
// under one lock, one item at a time.
#include "cuda_runtime_api.h"

#include "runtime/kernels/emu/simt.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

namespace {

struct Queue {  // a stream's work: items [done, issued) are queued
  unsigned id = 0;       // the activity records' stream id (0: the legacy default stream)
  bool blocking = true;  // synchronises with the legacy default stream
  std::deque<std::function<void()>> pending;
  std::uint64_t issued = 0, done = 0;
  bool running = false;
};

struct EventState {
  std::shared_ptr<Queue> queue;  // of the last record (null: never recorded, or recorded on stream 0)
  std::uint64_t seq = 0;         // the record's position in it
  std::uint64_t gen = 0;         // bumped by every record: a marker of an older record stamps nothing
  bool recorded = false, done = false;
  double ms = 0;
};

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr std::size_t kDeviceBytes = std::size_t{16} << 30;  // what cudaMemGetInfo reports

std::mutex g_mu;                              // every queue, and the activity state below
std::vector<std::shared_ptr<Queue>> g_live;  // live streams, in creation order
unsigned g_next_stream_id = 1;

// Activity recording (the CUPTI stand-in).
bool g_api_on = false, g_gpu_on = false;
unsigned g_next_correlation = 1;
std::vector<CpsEmuActivity> g_records;
std::vector<CpsEmuCorrelation> g_correlations;
thread_local std::vector<unsigned long long> t_external_ids;

// Runs q's items up to position `upto` (lock held). Items may run other queues' items (stream waits).
void run_until(Queue& q, std::uint64_t upto) {
  if (q.done >= upto) return;
  if (q.running) throw std::logic_error("emulated CUDA streams wait on each other in a cycle (a GPU would hang)");
  q.running = true;
  struct Reset {
    bool& flag;
    ~Reset() { flag = false; }
  } reset{q.running};
  while (q.done < upto) {
    std::function<void()> item = std::move(q.pending.front());
    q.pending.pop_front();
    ++q.done;
    item();
  }
}
void run_all(bool blocking_only) {
  for (const auto& q : std::vector<std::shared_ptr<Queue>>(g_live)) {
    if (!blocking_only || q->blocking) run_until(*q, q->issued);
  }
}

}  // namespace

struct CUstream_st {
  std::shared_ptr<Queue> q = std::make_shared<Queue>();
};
struct CUevent_st {
  std::shared_ptr<EventState> st = std::make_shared<EventState>();
};

namespace {
void enqueue_locked(cudaStream_t stream, std::function<void()> work, CpsEmuWork kind) {
  if (g_api_on && kind != CpsEmuWork::Marker) {  // an activity record when it runs
    const unsigned corr = g_next_correlation++;
    if (!t_external_ids.empty()) g_correlations.push_back({corr, t_external_ids.back()});
    const unsigned sid = stream == nullptr ? 0 : stream->q->id;
    work = [work = std::move(work), kind, corr, sid] {
      const unsigned long long start = cps_emu_now_ns();
      work();
      if (g_gpu_on) g_records.push_back({kind, corr, sid, start, cps_emu_now_ns()});
    };
  }
  if (stream == nullptr) {  // the legacy default stream: after the blocking streams' queued work, at once
    run_all(true);
    work();
    return;
  }
  stream->q->pending.push_back(std::move(work));
  ++stream->q->issued;
}
}  // namespace

void cps_emu_enqueue(cudaStream_t stream, std::function<void()> work, CpsEmuWork kind) {
  const std::lock_guard<std::mutex> lock(g_mu);
  enqueue_locked(stream, std::move(work), kind);
}

void cps_emu_activity(bool api, bool gpu) {
  const std::lock_guard<std::mutex> lock(g_mu);
  g_api_on = api;
  g_gpu_on = gpu;
}
void cps_emu_activity_take(std::vector<CpsEmuActivity>& records, std::vector<CpsEmuCorrelation>& correlations) {
  const std::lock_guard<std::mutex> lock(g_mu);
  records.swap(g_records);
  correlations.swap(g_correlations);
  g_records.clear();
  g_correlations.clear();
}
void cps_emu_push_external_id(unsigned long long id) { t_external_ids.push_back(id); }
void cps_emu_pop_external_id() {
  if (!t_external_ids.empty()) t_external_ids.pop_back();
}
unsigned long long cps_emu_now_ns() {
  return static_cast<unsigned long long>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  if (p == nullptr) return cudaErrorInvalidValue;
  const std::size_t rounded = bytes == 0 ? 256 : (bytes + 255) / 256 * 256;  // cudaMalloc aligns to 256 bytes
  *p = std::aligned_alloc(256, rounded);
  if (*p == nullptr) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xff, rounded);  // uninitialised device memory: NaN, not zero
  cpscope::simt::register_global(*p, bytes);
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (p == nullptr) return cudaSuccess;
  {
    const std::lock_guard<std::mutex> lock(g_mu);  // cudaFree synchronises the device
    run_all(false);
  }
  cpscope::simt::unregister_global(p);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind) {
  cps_emu_enqueue(
      nullptr, [=] {
        if (bytes > 0) std::memmove(dst, src, bytes);
      },
      CpsEmuWork::Memcpy);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
  if (bytes == 0) return cudaSuccess;
  if (kind == cudaMemcpyHostToDevice || (kind == cudaMemcpyDefault && !cpscope::simt::is_global(src))) {
    // From pageable host memory the copy takes the bytes before it returns.
    auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                               static_cast<const unsigned char*>(src) + bytes);
    cps_emu_enqueue(s, [=] { std::memcpy(dst, staged->data(), bytes); }, CpsEmuWork::Memcpy);
  } else {
    cps_emu_enqueue(s, [=] { std::memmove(dst, src, bytes); }, CpsEmuWork::Memcpy);
  }
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, std::size_t bytes) { return cudaMemsetAsync(p, value, bytes, nullptr); }
cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t s) {
  cps_emu_enqueue(
      s, [=] {
        if (bytes > 0) std::memset(p, value, bytes);
      },
      CpsEmuWork::Memset);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(std::size_t* free, std::size_t* total) {
  *free = *total = kDeviceBytes;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  const std::lock_guard<std::mutex> lock(g_mu);
  run_all(false);
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  *prop = cudaDeviceProp{};
  std::strncpy(prop->name, "cpscope SIMT emulation (CPU)", sizeof prop->name - 1);
  prop->multiProcessorCount = 1;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* version) {
  *version = 0;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  *least = 0;
  *greatest = -5;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithPriority(s, 0, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) { return cudaStreamCreateWithPriority(s, flags, 0); }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned flags, int) {
  *s = new CUstream_st;
  (*s)->q->blocking = (flags & cudaStreamNonBlocking) == 0;
  const std::lock_guard<std::mutex> lock(g_mu);
  (*s)->q->id = g_next_stream_id++;
  g_live.push_back((*s)->q);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (s == nullptr) return cudaErrorInvalidValue;
  {
    const std::lock_guard<std::mutex> lock(g_mu);  // queued work still completes
    run_until(*s->q, s->q->issued);
    g_live.erase(std::find(g_live.begin(), g_live.end(), s->q));
  }
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  const std::lock_guard<std::mutex> lock(g_mu);
  if (s == nullptr) {
    run_all(true);
  } else {
    run_until(*s->q, s->q->issued);
  }
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  if (e == nullptr) return cudaErrorInvalidValue;
  const std::lock_guard<std::mutex> lock(g_mu);
  if (e->st->queue == nullptr) return cudaSuccess;  // never recorded (or on stream 0, done): nothing to wait for
  enqueue_locked(s, [q = e->st->queue, seq = e->st->seq] { run_until(*q, seq); }, CpsEmuWork::Marker);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;  // a queued marker keeps the state alive
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (e == nullptr) return cudaErrorInvalidValue;
  const std::lock_guard<std::mutex> lock(g_mu);
  std::shared_ptr<EventState> st = e->st;
  const std::uint64_t gen = ++st->gen;
  st->recorded = true;
  st->done = false;
  st->queue = s == nullptr ? nullptr : s->q;
  st->seq = s == nullptr ? 0 : s->q->issued + 1;  // the marker queued below
  enqueue_locked(
      s,
      [st, gen] {
        if (st->gen != gen) return;
        st->ms = now_ms();
        st->done = true;
      },
      CpsEmuWork::Marker);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {  // runs what the event waits for: polling ends at once
  if (e == nullptr) return cudaErrorInvalidValue;
  const std::lock_guard<std::mutex> lock(g_mu);
  if (e->st->queue != nullptr) run_until(*e->st->queue, e->st->seq);
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) { return cudaEventQuery(e); }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (start == nullptr || end == nullptr) return cudaErrorInvalidValue;
  const std::lock_guard<std::mutex> lock(g_mu);
  if (!start->st->recorded || !end->st->recorded) return cudaErrorInvalidValue;
  if (!start->st->done || !end->st->done) return cudaErrorNotReady;  // not synchronised yet
  *ms = static_cast<float>(end->st->ms - start->st->ms);
  return cudaSuccess;
}
namespace {
std::mutex g_smem_mu;
std::map<const void*, int> g_max_dynamic_smem;  // per kernel: its cudaFuncSetAttribute opt-in
thread_local cudaError_t t_launch_error = cudaSuccess;  // the last refused launch's, until cudaGetLastError
constexpr std::size_t kDefaultDynamicSmem = 48 * 1024;
}  // namespace

void cps_emu_set_max_dynamic_smem(const void* kernel, int bytes) {
  const std::lock_guard<std::mutex> lock(g_smem_mu);
  g_max_dynamic_smem[kernel] = bytes;
}

bool cps_emu_launch_refused(const void* kernel, std::size_t dynamic_smem_bytes) {
  if (dynamic_smem_bytes <= kDefaultDynamicSmem) return false;
  const std::lock_guard<std::mutex> lock(g_smem_mu);
  const auto it = g_max_dynamic_smem.find(kernel);
  if (it != g_max_dynamic_smem.end() && dynamic_smem_bytes <= static_cast<std::size_t>(it->second)) return false;
  t_launch_error = cudaErrorInvalidValue;
  return true;
}

cudaError_t cudaGetLastError() { return std::exchange(t_launch_error, cudaSuccess); }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorNotReady: return "cudaErrorNotReady";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }
