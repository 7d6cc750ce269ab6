// What the CUDA runtime library (runtime/cuda) needs beyond the CUDA runtime API, under the SIMT emulation:
// the NCCL transports (replay, nccl) and MPI are not emulated and say so; NVTX ranges do nothing; the CUPTI
// tracer cannot be created (runs under the emulation set trace = false).
#include "runtime/cuda/check.h"
#include "runtime/cuda/transport.h"
#include "runtime/instrument/cupti_tracer.h"
#include "runtime/instrument/nvtx.h"
#include "runtime/instrument/op_range.h"
#include "sim/error.h"

#include <chrono>

namespace cpscope::rt {

namespace {
[[noreturn]] void not_emulated(const char* transport) {
  throw InputError("transport", std::string(transport) +
                                    " needs NCCL, which the SIMT emulation does not have; the emulation runs loopback");
}
}  // namespace

std::unique_ptr<CudaTransport> make_replay_transport(const Schedule&, std::int32_t) { not_emulated("replay"); }
std::unique_ptr<CudaTransport> make_nccl_transport(const Schedule&, ProcessGroup&) { not_emulated("nccl"); }
bool have_mpi() { return false; }
std::unique_ptr<ProcessGroup> make_mpi_group() { not_emulated("nccl"); }

namespace instrument {

NvtxRange::NvtxRange(const std::string&) {}
NvtxRange::NvtxRange(const char*, std::uint64_t) {}
NvtxRange::~NvtxRange() = default;

OpRange::OpRange(const std::string& name, std::int32_t rank, std::int32_t op, bool correlate)
    : nvtx_(name.c_str(), static_cast<std::uint64_t>(op)), rank_(rank), correlated_(false) {
  if (correlate) throw DeviceError("CUPTI correlation is not part of the SIMT emulation");
}
OpRange::~OpRange() = default;

CuptiTracer::CuptiTracer(std::int32_t rank) : rank_(rank) {
  throw DeviceError("CUPTI tracing is not part of the SIMT emulation: run with trace off (--no-trace)");
}
CuptiTracer::~CuptiTracer() = default;
void CuptiTracer::start() {}
void CuptiTracer::end_launches() {}
TraceCapture CuptiTracer::finish() { return {}; }
void CuptiTracer::set_kinds(bool, bool, bool) {}
std::int64_t CuptiTracer::now_ns(std::int32_t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
void note_trace_error(const std::string&) {}

}  // namespace instrument
}  // namespace cpscope::rt
