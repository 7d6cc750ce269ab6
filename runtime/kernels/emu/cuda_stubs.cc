// What the CUDA runtime library (runtime/cuda) needs beyond the CUDA runtime API, under the SIMT emulation:
// MPI is not emulated and says so (the nccl transport runs on the stand-in NCCL of emu/nccl_emu.cc with its ranks
// as threads, through run_nccl_rank); NVTX ranges do nothing; the CUPTI tracer is rebuilt on the stand-in
// runtime's activity records (cuda_runtime_api.h), so a traced run yields one interval per op through the same
// attribution (op_intervals.cc) as on a GPU, timed by the host clock. It has no API records, so launch windows
// (LaunchWindowScope) do nothing: the stand-in NCCL launches from the issuing thread, inside the op's range.
#include <cuda_runtime_api.h>  // the emulation's stand-in

#include <fmt/format.h>

#include <string>
#include <vector>

#include "runtime/cuda/check.h"
#include "runtime/cuda/transport.h"
#include "runtime/instrument/correlation.h"
#include "runtime/instrument/cupti_tracer.h"
#include "runtime/instrument/nvtx.h"
#include "runtime/instrument/op_range.h"
#include "sim/error.h"

namespace cpscope::rt {

namespace {
[[noreturn]] void not_emulated(const char* transport) {
  throw InputError("transport", std::string(transport) +
                                    " needs MPI to start its ranks, which the SIMT emulation does not have; the "
                                    "emulation runs loopback and replay (and the nccl transport's ranks as threads "
                                    "in its tests)");
}
}  // namespace

bool have_mpi() { return false; }
std::unique_ptr<ProcessGroup> make_mpi_group() { not_emulated("nccl"); }
void end_mpi_job(int) {}

namespace instrument {

NvtxRange::NvtxRange(const std::string&) {}
NvtxRange::NvtxRange(const char*, std::uint64_t) {}
NvtxRange::~NvtxRange() = default;

OpRange::OpRange(const std::string& name, std::int32_t rank, std::int32_t op, bool correlate)
    : nvtx_(name.c_str(), static_cast<std::uint64_t>(op)), rank_(rank), op_(op), correlated_(false) {
  if (!correlate) return;
  if (!key_packable(rank, op))
    throw DeviceError(fmt::format("rank {} op {}: does not fit a correlation key (rank <= {})", rank, op, kMaxKeyRank));
  cps_emu_push_external_id(pack_key(rank, op));
  correlated_ = true;
}
OpRange::~OpRange() {
  if (correlated_) cps_emu_pop_external_id();
}

namespace {
bool g_tracer_exists = false;  // one tracer per process, as with CUPTI
}  // namespace

CuptiTracer::CuptiTracer(std::int32_t rank) : rank_(rank) {
  if (g_tracer_exists) throw DeviceError(fmt::format("rank {}: a tracer is already active in this process", rank_));
  g_tracer_exists = true;
}
CuptiTracer::~CuptiTracer() {
  if (capturing_) cps_emu_activity(false, false);
  g_tracer_exists = false;
}
void CuptiTracer::set_kinds(bool enable, bool api, bool gpu) {
  if (api) api_on_ = enable;
  cps_emu_activity(api_on_, gpu ? enable : capturing_);
}
void CuptiTracer::start() {
  if (capturing_) throw DeviceError(fmt::format("rank {}: CuptiTracer::start() while a capture runs", rank_));
  std::vector<CpsEmuActivity> stale;
  std::vector<CpsEmuCorrelation> stale_corr;
  cps_emu_activity_take(stale, stale_corr);
  capturing_ = true;
  set_kinds(true, true, true);
}
void CuptiTracer::end_launches() {
  if (!capturing_ || !api_on_) return;
  set_kinds(false, true, false);
}
TraceCapture CuptiTracer::finish() {
  if (!capturing_) throw DeviceError(fmt::format("rank {}: CuptiTracer::finish() without start()", rank_));
  end_launches();
  cps_emu_activity(false, false);
  capturing_ = false;
  std::vector<CpsEmuActivity> emu;
  std::vector<CpsEmuCorrelation> emu_corr;
  cps_emu_activity_take(emu, emu_corr);
  std::vector<GpuRecord> records;
  for (const CpsEmuActivity& a : emu) {
    const GpuRecordKind kind = a.kind == CpsEmuWork::Memcpy   ? GpuRecordKind::Memcpy
                               : a.kind == CpsEmuWork::Memset ? GpuRecordKind::Memset
                                                              : GpuRecordKind::Kernel;
    records.push_back({kind, a.correlation, a.stream, a.start_ns, a.end_ns});
  }
  std::vector<CorrelationRecord> correlations;
  for (const CpsEmuCorrelation& c : emu_corr) correlations.push_back({c.correlation, c.external_id});
  Attribution a = attribute_records(records, correlations);
  TraceCapture c;
  c.ops = std::move(a.ops);
  c.records = static_cast<std::int64_t>(records.size());
  c.unattributed = a.unattributed;
  c.untimed = a.untimed;
  return c;
}
std::int64_t CuptiTracer::now_ns(std::int32_t) { return static_cast<std::int64_t>(cps_emu_now_ns()); }
void note_trace_error(const std::string&) {}
LaunchWindowScope::LaunchWindowScope(std::int32_t, std::int32_t) {}
LaunchWindowScope::~LaunchWindowScope() = default;

}  // namespace instrument
}  // namespace cpscope::rt
