// CuptiTracer. The record structs are those of the CUPTI headers this library is compiled against
// (CUDA 13.0: CUpti_ActivityKernel10, CUpti_ActivityMemcpy6, CUpti_ActivityMemset4,
// CUpti_ActivityExternalCorrelation). Layouts change within a major version (13.2 delivers Kernel11),
// but new versions append fields, and the ones read here (kind, start, end, correlationId, streamId)
// sit in the common prefix (Kernel9 and Kernel10 agree up to maxActiveClusters, past all of them), so a newer 13.x libcupti's
// records read correctly through these structs. The constructor refuses another major version.
// The API records (CUpti_ActivityAPI, RUNTIME and DRIVER kinds) give each launch call's correlation id and
// start: with the nccl transport's non-blocking communicators NCCL launches a group's kernels from its own
// thread, outside the op's external correlation (a per-thread push), and the transport's launch window
// claims them (LaunchWindowScope). Not yet run on a cluster: if a launch ever fell outside its window,
// the kernel would count as unattributed again (cp-profile's JSON reports both counts).
#include "runtime/instrument/cupti_tracer.h"

#include <cupti.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>

#include <fmt/format.h>

#include "runtime/instrument/check.h"
#include "runtime/instrument/correlation.h"
#include "runtime/instrument/op_range.h"

namespace cpscope::rt::instrument {
namespace {

// Records are 8-byte aligned (ACTIVITY_RECORD_ALIGNMENT); 8 MiB holds ~25k launches (a 216-byte kernel
// record with its 40-byte API and 24-byte correlation records), more than a traced iteration of the
// largest schedule launches, so a capture normally fills one buffer (CUPTI asks for more when not).
constexpr std::size_t kBufferBytes = std::size_t{8} << 20;
constexpr std::size_t kRecordAlign = ACTIVITY_RECORD_ALIGNMENT;
static_assert(kRecordAlign >= 8 && (kRecordAlign & (kRecordAlign - 1)) == 0, "CUPTI record alignment");
constexpr CUpti_ExternalCorrelationKind kCorrelationKind = CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0;

// Where CUPTI's buffer callbacks deliver records. CUPTI's callback API has no user-data pointer and is
// registered once per process, so this is necessarily process-wide; CuptiTracer guarantees there is at
// most one capture at a time, and records arriving outside a capture are dropped.
struct Sink {
  std::mutex mu;
  bool owned = false;      // a CuptiTracer exists
  bool capturing = false;  // between start() and the end of finish()'s flush
  std::vector<GpuRecord> records;
  std::vector<CorrelationRecord> correlations;
  std::vector<ApiRecord> api;
  std::vector<LaunchWindow> windows;
  std::int64_t dropped = 0;
  std::string first_error;
  std::atomic<bool> capturing_flag{false};  // `capturing`, readable without the lock (LaunchWindowScope)
};

Sink& sink() {
  // Never destroyed: CUPTI's callbacks stay registered until the process ends and may deliver a buffer
  // after static destructors ran.
  static Sink& s = *new Sink;
  return s;
}

void note_error_locked(Sink& s, const std::string& message) {
  if (s.first_error.empty()) s.first_error = message;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(::operator new(kBufferBytes, std::align_val_t{kRecordAlign}, std::nothrow));
  *size = *buffer != nullptr ? kBufferBytes : 0;  // no buffer: CUPTI drops the records and counts them
  *max_records = 0;                               // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream_id, uint8_t* buffer, size_t size, size_t valid) {
  (void)size;
  std::vector<GpuRecord> records;
  std::vector<CorrelationRecord> correlations;
  std::vector<ApiRecord> api;
  std::string error;
  std::int64_t incomplete = 0;
  CUpti_Activity* rec = nullptr;
  while (valid > 0) {
    const CUptiResult r = cuptiActivityGetNextRecord(buffer, valid, &rec);
    if (r == CUPTI_ERROR_MAX_LIMIT_REACHED) break;  // end of the valid records
    if (r == CUPTI_ERROR_INVALID_KIND) {
      // An incomplete record (a forced flush may deliver one; CUPTI's own usage example stops here): the
      // rest of the buffer is lost, counted with the dropped records rather than failing the capture.
      ++incomplete;
      break;
    }
    if (r != CUPTI_SUCCESS) {
      error = format_instrument_error("CUPTI", "cuptiActivityGetNextRecord(buffer, valid, &rec)", __FILE__, __LINE__,
                                      -1, cupti_result_string(r));
      break;
    }
    switch (rec->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
        records.push_back({GpuRecordKind::Kernel, k->correlationId, k->streamId, k->start, k->end});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(rec);
        records.push_back({GpuRecordKind::Memcpy, m->correlationId, m->streamId, m->start, m->end});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(rec);
        records.push_back({GpuRecordKind::Memset, m->correlationId, m->streamId, m->start, m->end});
        break;
      }
      case CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION: {
        const auto* c = reinterpret_cast<const CUpti_ActivityExternalCorrelation*>(rec);
        if (c->externalKind == kCorrelationKind) correlations.push_back({c->correlationId, c->externalId});
        break;
      }
      case CUPTI_ACTIVITY_KIND_RUNTIME:
      case CUPTI_ACTIVITY_KIND_DRIVER: {  // when each call began: for the launch windows
        const auto* c = reinterpret_cast<const CUpti_ActivityAPI*>(rec);
        api.push_back({c->correlationId, c->start});
        break;
      }
      default:
        break;
    }
  }
  size_t dropped = 0;
  const CUptiResult dr = cuptiActivityGetNumDroppedRecords(ctx, stream_id, &dropped);
  if (dr != CUPTI_SUCCESS && error.empty())
    error = format_instrument_error("CUPTI", "cuptiActivityGetNumDroppedRecords(ctx, stream_id, &dropped)", __FILE__,
                                    __LINE__, -1, cupti_result_string(dr));
  ::operator delete(buffer, std::align_val_t{kRecordAlign});

  Sink& s = sink();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.capturing) return;  // a late buffer of an earlier capture, or another tool's activity
  s.records.insert(s.records.end(), records.begin(), records.end());
  s.correlations.insert(s.correlations.end(), correlations.begin(), correlations.end());
  s.api.insert(s.api.end(), api.begin(), api.end());
  s.dropped += static_cast<std::int64_t>(dropped) + incomplete;
  if (!error.empty()) note_error_locked(s, error);
}

// CUPTI 13.0 serves one activity subscriber per process, so a tool that traces CUDA itself (Nsight
// Systems with CUDA tracing on, a profiler's CUPTI collector) makes registration or enabling fail.
constexpr const char* kOneSubscriber =
    " (CUPTI serves one activity tracer per process: under nsys with CUDA tracing, or another CUPTI tool, pass "
    "--no-trace; the NVTX ranges still name every op)";

constexpr CUpti_ActivityKind kApiKinds[] = {CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION, CUPTI_ACTIVITY_KIND_RUNTIME,
                                            CUPTI_ACTIVITY_KIND_DRIVER};
constexpr CUpti_ActivityKind kGpuKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                            CUPTI_ACTIVITY_KIND_MEMSET};

}  // namespace

void note_trace_error(const std::string& message) {
  Sink& s = sink();
  std::lock_guard<std::mutex> lock(s.mu);
  note_error_locked(s, message);
}

CuptiTracer::CuptiTracer(std::int32_t rank) : rank_(rank) {
  uint32_t version = 0;
  CPS_CUPTI_CALL(rank_, cuptiGetVersion(&version));
  if (version / 10000 != CUPTI_API_VERSION / 10000 || version < 10000)
    throw DeviceError(fmt::format("rank {}: the loaded libcupti has API version {}, but cpscope was built against "
                                  "CUPTI API version {} (its activity record layouts); put the CUDA toolkit's "
                                  "libcupti (lib64 or extras/CUPTI/lib64) first on LD_LIBRARY_PATH",
                                  rank_, version, CUPTI_API_VERSION));
  {
    Sink& s = sink();
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.owned)
      throw DeviceError(fmt::format("rank {}: a CUPTI tracer is already active in this process (CUPTI delivers "
                                    "activity buffers to one process-wide callback)", rank_));
    s.owned = true;
  }
  // Registration is process-wide and must precede enabling any kind; registering the same functions
  // again would be harmless, but once is enough.
  static std::once_flag registered;
  try {
    std::call_once(registered, [&] {
      const CUptiResult r = cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
      if (r != CUPTI_SUCCESS)
        throw_instrument_error("CUPTI", "cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed)", __FILE__,
                               __LINE__, rank_, cupti_result_string(r) + kOneSubscriber);
    });
  } catch (...) {
    std::lock_guard<std::mutex> lock(sink().mu);
    sink().owned = false;
    throw;
  }
}

CuptiTracer::~CuptiTracer() {
  // Best effort: a destructor must not throw. A capture still running (an exception unwound through
  // the traced iteration) is switched off and its records discarded.
  if (capturing_) {
    for (CUpti_ActivityKind k : kApiKinds) cuptiActivityDisable(k);
    for (CUpti_ActivityKind k : kGpuKinds) cuptiActivityDisable(k);
    {
      std::lock_guard<std::mutex> lock(sink().mu);
      sink().capturing = false;
      sink().capturing_flag = false;
    }
  }
  // Also after a finished capture: buffers CUPTI still holds (requested, not yet filled) come back and are
  // freed (the sink drops their records outside a capture).
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  Sink& s = sink();
  std::lock_guard<std::mutex> lock(s.mu);
  s.records.clear();
  s.correlations.clear();
  s.api.clear();
  s.windows.clear();
  s.first_error.clear();
  s.dropped = 0;
  s.owned = false;
}

void CuptiTracer::set_kinds(bool enable, bool api, bool gpu) {
  auto set = [&](CUpti_ActivityKind k) {
    if (!enable) {
      CPS_CUPTI_CALL(rank_, cuptiActivityDisable(k));
      return;
    }
    const CUptiResult r = cuptiActivityEnable(k);
    if (r != CUPTI_SUCCESS)
      throw_instrument_error("CUPTI", "cuptiActivityEnable(k)", __FILE__, __LINE__, rank_,
                             fmt::format("{} for kind {}{}", cupti_result_string(r), static_cast<int>(k), kOneSubscriber));
  };
  if (api)
    for (CUpti_ActivityKind k : kApiKinds) set(k);
  if (gpu)
    for (CUpti_ActivityKind k : kGpuKinds) set(k);
}

void CuptiTracer::start() {
  if (capturing_) throw DeviceError(fmt::format("rank {}: CuptiTracer::start() while a capture runs", rank_));
  // The global queue's count of records lost while CUPTI had no buffer (reading it resets it; the buffer
  // callback reads it too, but only when a buffer completes): what an earlier capture or another tool lost
  // is not this capture's. finish() reads it again. Both reads are best effort: a count that cannot be read
  // is not a reason to lose the capture (the buffer callback's own reads fail it).
  size_t stale = 0;
  (void)cuptiActivityGetNumDroppedRecords(nullptr, 0, &stale);
  {
    Sink& s = sink();
    std::lock_guard<std::mutex> lock(s.mu);
    s.records.clear();
    s.correlations.clear();
    s.api.clear();
    s.windows.clear();
    s.dropped = 0;
    s.first_error.clear();
    s.capturing = true;
    s.capturing_flag = true;
  }
  capturing_ = true;
  set_kinds(true, true, true);
  api_on_ = true;
}

void CuptiTracer::end_launches() {
  if (!capturing_ || !api_on_) return;
  set_kinds(false, true, false);
  api_on_ = false;
}

TraceCapture CuptiTracer::finish() {
  if (!capturing_) throw DeviceError(fmt::format("rank {}: CuptiTracer::finish() without start()", rank_));
  end_launches();
  set_kinds(false, false, true);
  // Forced: the caller synchronized the device, so every record is complete; a default flush would keep
  // a buffer back until it is full.
  CPS_CUPTI_CALL(rank_, cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED));
  capturing_ = false;
  size_t unbuffered = 0;  // lost after the last buffer that completed (see start())
  if (cuptiActivityGetNumDroppedRecords(nullptr, 0, &unbuffered) != CUPTI_SUCCESS) unbuffered = 0;
  std::vector<GpuRecord> records;
  std::vector<CorrelationRecord> correlations;
  std::vector<ApiRecord> api;
  std::vector<LaunchWindow> windows;
  TraceCapture c;
  std::string error;
  {
    Sink& s = sink();
    std::lock_guard<std::mutex> lock(s.mu);
    s.capturing = false;
    s.capturing_flag = false;
    records.swap(s.records);
    correlations.swap(s.correlations);
    api.swap(s.api);
    windows.swap(s.windows);
    c.dropped = s.dropped + static_cast<std::int64_t>(unbuffered);
    error.swap(s.first_error);
  }
  if (!error.empty()) throw DeviceError(error);
  Attribution a = attribute_records(records, correlations, api, windows);
  c.ops = std::move(a.ops);
  c.records = static_cast<std::int64_t>(records.size());
  c.unattributed = a.unattributed;
  c.windowed = a.windowed;
  c.untimed = a.untimed;
  return c;
}

std::int64_t CuptiTracer::now_ns(std::int32_t rank) {
  uint64_t t = 0;
  CPS_CUPTI_CALL(rank, cuptiGetTimestamp(&t));
  return static_cast<std::int64_t>(t);
}

// --- OpRange ---

LaunchWindowScope::LaunchWindowScope(std::int32_t rank, std::int32_t op) {
  if (!sink().capturing_flag.load() || !key_packable(rank, op)) return;  // OpRange reports a bad key
  const CUptiResult r = cuptiGetTimestamp(&begin_ns_);
  if (r != CUPTI_SUCCESS) {
    note_trace_error(format_instrument_error("CUPTI", "cuptiGetTimestamp(&begin_ns_)", __FILE__, __LINE__, rank,
                                             cupti_result_string(r)));
    return;
  }
  key_ = pack_key(rank, op);
  active_ = true;
}

LaunchWindowScope::~LaunchWindowScope() {
  if (!active_) return;
  uint64_t end = 0;
  const CUptiResult r = cuptiGetTimestamp(&end);
  Sink& s = sink();
  std::lock_guard<std::mutex> lock(s.mu);
  if (r != CUPTI_SUCCESS)
    note_error_locked(s, format_instrument_error("CUPTI", "cuptiGetTimestamp(&end)", __FILE__, __LINE__, -1,
                                                 cupti_result_string(r)));
  else if (s.capturing)
    s.windows.push_back({key_, begin_ns_, end});
}

OpRange::OpRange(const std::string& name, std::int32_t rank, std::int32_t op, bool correlate)
    : nvtx_(name.c_str(), static_cast<std::uint64_t>(op)), rank_(rank), op_(op), correlated_(false) {
  if (!correlate) return;
  if (!key_packable(rank, op))
    throw DeviceError(fmt::format("rank {} op {}: does not fit a CUPTI correlation key (rank <= {})", rank, op,
                                  kMaxKeyRank));
  CPS_CUPTI_CALL(rank, cuptiActivityPushExternalCorrelationId(kCorrelationKind, pack_key(rank, op)));
  correlated_ = true;
}

OpRange::~OpRange() {
  if (!correlated_) return;
  uint64_t last = 0;
  const CUptiResult r = cuptiActivityPopExternalCorrelationId(kCorrelationKind, &last);
  if (r != CUPTI_SUCCESS)
    note_trace_error(format_instrument_error("CUPTI", "cuptiActivityPopExternalCorrelationId(kCorrelationKind, &last)",
                                             __FILE__, __LINE__, rank_, cupti_result_string(r)));
  else if (last != pack_key(rank_, op_))
    note_trace_error(fmt::format("rank {} op {}: popped external correlation id {} instead of the op's {} (another "
                                 "push of kind CUSTOM0 on this thread was left open)",
                                 rank_, op_, last, pack_key(rank_, op_)));
}

}  // namespace cpscope::rt::instrument
