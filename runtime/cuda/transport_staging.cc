#include "runtime/cuda/transport_staging.h"

#include <algorithm>

#include <fmt/format.h>

#include "runtime/cuda/check.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/host_convert.h"
#include "sim/error.h"

namespace cpscope::rt {

void* Staging::take(std::int64_t bytes, const std::string& what) {
  const std::int64_t n = staging_align(bytes);
  if (used_ + n > bytes_)
    throw InternalError(fmt::format("{}: the staging buffer holds {} bytes, this op needs {} more after {}", what,
                                    bytes_, n, used_));
  void* p = base_ + used_;
  used_ += n;
  return p;
}

std::int64_t region_elements(const CudaBackend& b, const std::vector<Region>& rs) {
  std::int64_t n = 0;
  for (const Region& r : rs) n += r.elements(b.batch(), b.layout().desc(r.tensor).dim);
  return n;
}

kernels::DType message_dtype(const CudaBackend& b, const std::vector<Region>& rs, std::int64_t bytes,
                             const std::string& what) {
  const std::int64_t n = region_elements(b, rs);
  if (n > 0 && bytes == n * 4) return kernels::DType::FP32;
  if (n > 0 && bytes == n * element_bytes(b.input_dtype())) return b.input_dtype();
  if (n == 0 && bytes == 0) return b.input_dtype();
  throw InternalError(fmt::format("{}: a message of {} bytes over {} elements is neither fp32 nor the input dtype",
                                  what, bytes, n));
}

void* contiguous_span(const CudaBackend& b, const std::vector<Region>& rs, kernels::DType dt) {
  // The layout's rule (which the executor also checks the IR's Op::staged_send/recv against), and LSE, which this
  // backend keeps as [batch][heads][tokens], never.
  if (!b.layout().one_span(rs, element_bytes(dt))) return nullptr;
  const Region& r = rs[0];
  const DeviceTensor t = b.tensor(r.tensor);
  if (t.dtype != dt || t.lse_layout) return nullptr;
  return static_cast<char*>(t.plane(r.plane)) + r.row * t.heads * t.dim * element_bytes(dt);
}

void* adjacent_spans(const CudaBackend& b, const std::vector<Region>& rs, kernels::DType dt, std::int64_t P) {
  if (rs.empty()) return nullptr;
  char* base = static_cast<char*>(contiguous_span(b, {rs[0]}, dt));
  if (base == nullptr) return nullptr;
  for (std::size_t i = 1; i < rs.size(); ++i)
    if (contiguous_span(b, {rs[i]}, dt) != base + static_cast<std::int64_t>(i) * P) return nullptr;
  return base;
}

namespace {
// A message slice viewed as a dense tensor with the region's shape.
DeviceRegion message_view(const CudaBackend& b, const Region& r, void* at, kernels::DType dt) {
  DeviceTensor m;
  m.base = at;
  m.dtype = dt;
  m.tokens = r.rows;
  m.heads = r.heads;
  m.dim = b.layout().desc(r.tensor).dim;
  m.planes = r.planes;
  m.batch = b.batch();
  return DeviceRegion{m, Region{r.tensor, 0, r.planes, 0, r.rows, 0, r.heads}};
}
}  // namespace

StagedCopies pack(const CudaBackend& b, const std::vector<Region>& rs, void* msg, kernels::DType dt, cudaStream_t s,
                  const std::string& what) {
  char* at = static_cast<char*>(msg);
  for (const Region& r : rs) {
    const DeviceRegion m = message_view(b, r, at, dt);
    b.copy_region(b.region(r), m, false, nullptr, s, what);
    at += m.elements() * element_bytes(dt);
  }
  return {at - static_cast<char*>(msg), static_cast<std::int32_t>(rs.size())};
}

StagedCopies unpack(const CudaBackend& b, const void* msg, kernels::DType dt, const std::vector<Region>& rs, bool add,
                    cudaStream_t s, const std::string& what) {
  char* at = const_cast<char*>(static_cast<const char*>(msg));  // read only: the view is the copy's source
  for (const Region& r : rs) {
    const DeviceRegion m = message_view(b, r, at, dt);
    b.copy_region(m, b.region(r), add, nullptr, s, what);
    at += m.elements() * element_bytes(dt);
  }
  return {at - static_cast<const char*>(msg), static_cast<std::int32_t>(rs.size())};
}

void* outgoing(const CudaBackend& b, const std::vector<Region>& rs, kernels::DType dt, Staging& st, cudaStream_t s,
               const std::string& what) {
  if (void* p = contiguous_span(b, rs, dt)) return p;
  void* slice = st.take(region_elements(b, rs) * element_bytes(dt), what);
  pack(b, rs, slice, dt, s, what);
  return slice;
}

void* incoming(const CudaBackend& b, const std::vector<Region>& rs, kernels::DType dt, Staging& st, bool* staged,
               const std::string& what) {
  if (void* p = contiguous_span(b, rs, dt)) {
    *staged = false;
    return p;
  }
  *staged = true;
  return st.take(region_elements(b, rs) * element_bytes(dt), what);
}

StagingBuffers::~StagingBuffers() {
  for (void* p : buffers_) cudaFree(p);
}

std::int64_t StagingBuffers::bytes() const {
  std::int64_t n = 0;
  for (const StagingNeed& s : needs_) n += s.send + s.recv;
  return n;
}

void StagingBuffers::allocate() {
  CPSCOPE_CHECK(send_.empty(), "staging buffers allocated twice");
  for (const StagingNeed& need : needs_) {
    send_.emplace_back(alloc(need.send), need.send);
    recv_.emplace_back(alloc(need.recv), need.recv);
  }
}

void* StagingBuffers::alloc(std::int64_t bytes) {
  if (bytes <= 0) return nullptr;
  void* p = nullptr;
  CPS_CUDA_CALL(rank_, cudaMalloc(&p, static_cast<std::size_t>(bytes)));
  buffers_.push_back(p);
  if (zeroed_) CPS_CUDA_CALL(rank_, cudaMemset(p, 0, static_cast<std::size_t>(bytes)));
  return p;
}

}  // namespace cpscope::rt
