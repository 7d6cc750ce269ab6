// CudaBackend. Notes on the choices that are not obvious from the header:
//  - Every storage tensor is its own cudaMalloc (256-byte aligned), zeroed once, so the kernels' 16-byte
//    alignment holds for every plane (plane sizes are multiples of head_dim 64/128 elements).
//  - LSE lives as [batch][heads][tokens] (what attn_fwd/attn_bwd take); upload/download transpose, and
//    copies and fills address it through a transposed view (tokens in the role of heads).
//  - The backward's delta = rowsum(dO·O) is computed once per backward pass, by the pass's first AttendBwd,
//    on that op's stream; every later AttendBwd of the pass must run on the same stream (they do: the
//    generators put attention on the compute stream), so stream order covers the dependency.
//  - Attention adds dK/dV in fp32 (atomics). Allgather with dkv=input keeps its gathered dK/dV in the input
//    dtype: the executor takes each block's through the fp32 dkv stage (a layout tensor, in the IR's fills).
//  - In-place row permutations (allgather's zigzag Layout) go through a scratch buffer sized up front.
//  - Each op's main call (copy for DkvAdd/Layout, attention, exchange, collectives) is an
//    instrument::OpRange: an NVTX range, and while tracing the op's CUPTI correlation id, so every GPU
//    record of its launches maps back to the op. So is each fill the executor issues right before an op
//    (Op::fills: the simulator times them with the op); its waits and records launch nothing.
#include "runtime/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "runtime/cuda/check.h"
#include "runtime/cuda/host_convert.h"
#include "runtime/cuda/transport.h"
#include "runtime/instrument/op_range.h"
#include "runtime/kernels/check.h"
#include "sim/error.h"

namespace cpscope::rt {
namespace {

constexpr std::int64_t kAlign = 256;
std::int64_t align_up(std::int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

kernels::DType input_dtype_of(const Workload& w) {
  switch (w.dtype) {
    case DType::BF16: return kernels::DType::BF16;
    case DType::FP16: return kernels::DType::FP16;
    case DType::FP32: break;
  }
  throw InputError("dtype", "fp32 is not supported by the CUDA attention kernels (they take bf16 or fp16)");
}

void check_kernel_limits(const Workload& w) {
  input_dtype_of(w);
  if (w.head_dim != 64 && w.head_dim != 128)
    throw InputError("head_dim", fmt::format("{}: the CUDA attention kernels take head_dim 64 or 128", w.head_dim));
  if (w.batch > 65535) throw InputError("batch", fmt::format("{}: the CUDA kernels take at most 65535", w.batch));
}

std::int64_t tensor_elem_bytes(const TensorDesc& d, kernels::DType in) {
  return d.precision == Precision::Acc ? 4 : element_bytes(in);
}

// Runs a kernels launcher, adding the rank and op to its error (the launchers know neither). A rejected
// argument is a cpscope bug (InternalError); a failed launch is a device error.
template <class F>
void launch(const std::string& where, F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    throw InternalError(where + ": " + e.what());
  } catch (const kernels::CudaError& e) {
    throw DeviceError(where + ": " + e.what());
  }
}

bool ranges_overlap(std::int64_t a, std::int64_t an, std::int64_t b, std::int64_t bn) {
  return a < b + bn && b < a + an;
}

}  // namespace

void CudaBackend::check_workload(const Workload& w) { check_kernel_limits(w); }

void* DeviceTensor::plane(std::int32_t p) const {
  return static_cast<char*>(base) + static_cast<std::int64_t>(p) * plane_elements() * element_bytes(dtype);
}

std::int64_t CudaBackend::Plan::total() const {
  std::int64_t t = align_up(delta_bytes) + align_up(scratch_bytes) + align_up(row_map_bytes);
  for (std::int64_t b : tensor_bytes) t += align_up(b);
  return t;
}

CudaBackend::CudaBackend(CudaBackendConfig config, const Workload& w, CudaTransport& transport)
    : cfg_(std::move(config)), batch_(w.batch), input_(kernels::DType::BF16), transport_(transport) {
  check_workload(w);
  input_ = input_dtype_of(w);
}

CudaBackend::~CudaBackend() {
  // Best effort: a destructor must not throw, and after a device error every call fails anyway.
  // cudaFree synchronizes the device, so nothing still running reads freed memory.
  cudaSetDevice(cfg_.device);
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
  for (cudaEvent_t e : sync_events_) cudaEventDestroy(e);
  for (void* p : allocations_) cudaFree(p);
  for (cudaStream_t s : streams_) cudaStreamDestroy(s);
}

CudaBackend::Plan CudaBackend::plan(const RankLayout& layout) {
  const Workload& w = layout.workload();
  check_workload(w);
  const kernels::DType in = input_dtype_of(w);
  Plan p;
  for (int i = 0; i < kNumTensors; ++i) {
    const TensorDesc& d = layout.desc(static_cast<TensorId>(i));
    if (d.used && d.alias_of == TensorId::kCount)
      p.tensor_bytes[static_cast<std::size_t>(i)] = d.elements(w.batch) * tensor_elem_bytes(d, in);
  }
  if (w.pass != PassSet::Fwd) {
    const TensorDesc& o = layout.desc(TensorId::O);
    p.delta_bytes = w.batch * o.heads * o.rows * 4;
  }
  if (w.schedule == ScheduleKind::AllGather && w.cp > 1) {
    for (TensorId t : {TensorId::Kv0, TensorId::Kv1, TensorId::Dkv0, TensorId::Dkv1}) {
      if (!layout.desc(t).used) continue;
      const TensorId s = layout.storage(t);
      p.scratch_bytes = std::max(p.scratch_bytes, p.tensor_bytes[static_cast<std::size_t>(s)]);
    }
    p.row_map_bytes = 2 * layout.desc(TensorId::Kv0).rows * 8;  // to token order and back
  }
  return p;
}

std::int64_t CudaBackend::required_bytes(const RankLayout& layout) { return plan(layout).total(); }

void* CudaBackend::device_alloc(std::int64_t bytes, const std::string& what) {
  if (bytes <= 0) return nullptr;
  void* p = nullptr;
  try {
    CPS_CUDA_CALL(cfg_.rank, cudaMalloc(&p, static_cast<std::size_t>(bytes)));
  } catch (const DeviceError& e) {
    throw DeviceError(fmt::format("{} (allocating {}: {} bytes; {} bytes allocated before)", e.what(), what, bytes,
                                  allocated_bytes_));
  }
  allocations_.push_back(p);
  allocated_bytes_ += align_up(bytes);
  CPS_CUDA_CALL(cfg_.rank, cudaMemset(p, 0, static_cast<std::size_t>(bytes)));
  return p;
}

void CudaBackend::allocate(const RankLayout& layout, std::int32_t num_streams, std::int32_t num_events) {
  CPSCOPE_CHECK(layout_ == nullptr, fmt::format("rank {}: allocate called twice", cfg_.rank));
  CPSCOPE_CHECK(static_cast<std::size_t>(num_streams) == cfg_.stream_names.size(),
                fmt::format("rank {}: {} streams, {} stream names", cfg_.rank, num_streams, cfg_.stream_names.size()));
  layout_ = &layout;
  CPS_CUDA_CALL(cfg_.rank, cudaSetDevice(cfg_.device));
  const Plan p = plan(layout);
  for (int i = 0; i < kNumTensors; ++i)
    storage_[static_cast<std::size_t>(i)] =
        device_alloc(p.tensor_bytes[static_cast<std::size_t>(i)], std::string(to_string(static_cast<TensorId>(i))));
  delta_ = static_cast<float*>(device_alloc(p.delta_bytes, "backward delta"));
  scratch_ = device_alloc(p.scratch_bytes, "permutation scratch");
  scratch_bytes_ = p.scratch_bytes;
  row_maps_ = static_cast<std::int64_t*>(device_alloc(p.row_map_bytes, "permutation row maps"));
  row_map_capacity_ = p.row_map_bytes / 8;

  // Communication streams get the higher priority so a transfer is not queued behind attention blocks
  // (what NCCL users do); the compute stream keeps the default (lowest) priority.
  int least = 0, greatest = 0;
  CPS_CUDA_CALL(cfg_.rank, cudaDeviceGetStreamPriorityRange(&least, &greatest));
  for (std::int32_t i = 0; i < num_streams; ++i) {
    cudaStream_t s = nullptr;
    const int prio = cfg_.stream_names[static_cast<std::size_t>(i)] == "compute" ? least : greatest;
    CPS_CUDA_CALL(cfg_.rank, cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, prio));
    streams_.push_back(s);
    cudaEvent_t e = nullptr;
    CPS_CUDA_CALL(cfg_.rank, cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    sync_events_.push_back(e);
  }
  for (std::int32_t i = 0; i < num_events; ++i) {
    cudaEvent_t e = nullptr;
    CPS_CUDA_CALL(cfg_.rank, cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    events_.push_back(e);
  }
  deferred_.resize(static_cast<std::size_t>(num_streams));
  transport_.allocate(*this);
  // cudaMemset runs on the legacy default stream, which our non-blocking streams do not wait for.
  CPS_CUDA_CALL(cfg_.rank, cudaDeviceSynchronize());
}

cudaStream_t CudaBackend::stream(std::int32_t i) const {
  CPSCOPE_CHECK(i >= 0 && static_cast<std::size_t>(i) < streams_.size(),
                fmt::format("rank {}: stream {} out of range ({} streams)", cfg_.rank, i, streams_.size()));
  return streams_[static_cast<std::size_t>(i)];
}

DeviceTensor CudaBackend::tensor(TensorId t) const {
  CPSCOPE_CHECK(layout_ != nullptr, fmt::format("rank {}: backend used before allocate", cfg_.rank));
  const TensorId s = layout_->storage(t);
  const TensorDesc& d = layout_->desc(s);
  CPSCOPE_CHECK(d.used && storage_[static_cast<std::size_t>(s)] != nullptr,
                fmt::format("rank {}: tensor {} is not allocated", cfg_.rank, to_string(t)));
  DeviceTensor x;
  x.base = storage_[static_cast<std::size_t>(s)];
  x.dtype = d.precision == Precision::Acc ? kernels::DType::FP32 : input_;
  x.tokens = d.rows;
  x.heads = d.heads;
  x.dim = d.dim;
  x.planes = d.planes;
  x.batch = batch_;
  x.lse_layout = s == TensorId::Lse;
  return x;
}

std::string CudaBackend::describe(const Op& op) const {
  return fmt::format("rank {} op {} ({})", cfg_.rank, op.id, op_name(op));
}

void CudaBackend::note(const Op& op) { last_op_ = describe(op); }

const std::string& CudaBackend::op_label(const Op& op) {
  CPSCOPE_CHECK(op.id >= 0, describe(op) + ": negative op id");
  const auto i = static_cast<std::size_t>(op.id);
  if (i >= op_labels_.size()) op_labels_.resize(i + 1);
  if (op_labels_[i].empty()) op_labels_[i] = op_name(op);
  return op_labels_[i];
}

void CudaBackend::check_stream(std::int32_t stream, const Op& op) const {
  CPSCOPE_CHECK(stream >= 0 && static_cast<std::size_t>(stream) < streams_.size(),
                fmt::format("{}: stream {} out of range", describe(op), stream));
}

void CudaBackend::defer(std::int32_t stream, std::function<void()> settle) {
  deferred_.at(static_cast<std::size_t>(stream)).push_back(std::move(settle));
}

void CudaBackend::settle(std::int32_t stream) {
  auto& list = deferred_[static_cast<std::size_t>(stream)];
  if (list.empty()) return;
  std::vector<std::function<void()>> run;
  run.swap(list);
  for (auto& f : run) f();
}

void CudaBackend::touched(TensorId t) {
  const TensorId s = layout_->storage(t);
  if (s == layout_->storage(TensorId::O) || (layout_->desc(TensorId::Do).used && s == layout_->storage(TensorId::Do)))
    delta_valid_ = false;
}

void CudaBackend::upload(TensorId t, const std::vector<double>& data) {
  const TensorId s = layout_ ? layout_->storage(t) : t;
  const DeviceTensor x = tensor(s);
  const std::int64_t n = x.planes * x.plane_elements();
  CPSCOPE_CHECK(static_cast<std::int64_t>(data.size()) == n,
                fmt::format("rank {}: upload of {}: {} values for {}", cfg_.rank, to_string(t), data.size(), n));
  auto& bytes = uploaded_[static_cast<std::size_t>(s)];
  if (!x.lse_layout) {
    encode(x.dtype, data, bytes);
  } else {
    // [plane][batch][tokens][heads] -> [plane][batch][heads][tokens] (dim 1)
    std::vector<double> tr(data.size());
    const std::int64_t T = x.tokens, H = x.heads;
    for (std::int64_t pb = 0; pb < x.planes * x.batch; ++pb)
      for (std::int64_t i = 0; i < T; ++i)
        for (std::int64_t h = 0; h < H; ++h)
          tr[static_cast<std::size_t>((pb * H + h) * T + i)] = data[static_cast<std::size_t>((pb * T + i) * H + h)];
    encode(x.dtype, tr, bytes);
  }
  CPS_CUDA_CALL(cfg_.rank, cudaMemcpyAsync(x.base, bytes.data(), bytes.size(), cudaMemcpyHostToDevice, stream(0)));
  CPS_CUDA_CALL(cfg_.rank, cudaStreamSynchronize(stream(0)));
  touched(s);
}

void CudaBackend::reload_inputs() {
  for (int i = 0; i < kNumTensors; ++i) {
    const auto& bytes = uploaded_[static_cast<std::size_t>(i)];
    if (bytes.empty()) continue;
    CPS_CUDA_CALL(cfg_.rank, cudaMemcpyAsync(storage_[static_cast<std::size_t>(i)], bytes.data(), bytes.size(),
                                             cudaMemcpyHostToDevice, stream(0)));
    touched(static_cast<TensorId>(i));
  }
  CPS_CUDA_CALL(cfg_.rank, cudaStreamSynchronize(stream(0)));
}

std::vector<double> CudaBackend::download(TensorId t) {
  const DeviceTensor x = tensor(t);
  const std::int64_t n = x.planes * x.plane_elements();
  std::vector<unsigned char> bytes(static_cast<std::size_t>(n * element_bytes(x.dtype)));
  CPS_CUDA_CALL(cfg_.rank, cudaMemcpyAsync(bytes.data(), x.base, bytes.size(), cudaMemcpyDeviceToHost, stream(0)));
  CPS_CUDA_CALL(cfg_.rank, cudaStreamSynchronize(stream(0)));
  std::vector<double> v = decode(x.dtype, bytes.data(), n);
  if (!x.lse_layout) return v;
  std::vector<double> out(v.size());
  const std::int64_t T = x.tokens, H = x.heads;
  for (std::int64_t pb = 0; pb < x.planes * x.batch; ++pb)
    for (std::int64_t i = 0; i < T; ++i)
      for (std::int64_t h = 0; h < H; ++h)
        out[static_cast<std::size_t>((pb * T + i) * H + h)] = v[static_cast<std::size_t>((pb * H + h) * T + i)];
  return out;
}

void CudaBackend::wait_event(const Op& op, std::int32_t stream, std::int32_t event) {
  check_stream(stream, op);
  CPSCOPE_CHECK(event >= 0 && static_cast<std::size_t>(event) < events_.size(),
                fmt::format("{}: event {} out of range", describe(op), event));
  // No settle(): a wait may go ahead of a deferred send completion (both only hold the stream back).
  CPS_CUDA_CALL(cfg_.rank, cudaStreamWaitEvent(streams_[static_cast<std::size_t>(stream)],
                                               events_[static_cast<std::size_t>(event)], 0));
}

void CudaBackend::record_event(const Op& op, std::int32_t stream, std::int32_t event) {
  check_stream(stream, op);
  CPSCOPE_CHECK(event >= 0 && static_cast<std::size_t>(event) < events_.size(),
                fmt::format("{}: event {} out of range", describe(op), event));
  settle(stream);
  CPS_CUDA_CALL(cfg_.rank, cudaEventRecord(events_[static_cast<std::size_t>(event)],
                                           streams_[static_cast<std::size_t>(stream)]));
}

void CudaBackend::fill_region(const DeviceRegion& d, double value, cudaStream_t s, const std::string& where) {
  const DeviceTensor& t = d.t;
  const Region& r = d.r;
  // The region in the storage order: LSE swaps tokens and heads.
  const std::int64_t VT = t.lse_layout ? t.heads : t.tokens;
  const std::int64_t VH = t.lse_layout ? t.tokens : t.heads;
  const std::int64_t vr = t.lse_layout ? r.head : r.row, vn = t.lse_layout ? r.heads : r.rows;
  const std::int64_t vh = t.lse_layout ? r.row : r.head, vm = t.lse_layout ? r.rows : r.heads;
  const std::int64_t D = t.dim;
  CPSCOPE_CHECK(r.plane >= 0 && r.plane + r.planes <= t.planes && vr >= 0 && vr + vn <= VT && vh >= 0 && vh + vm <= VH,
                where + ": fill region outside its tensor");
  std::vector<std::pair<std::int64_t, std::int64_t>> runs;  // (offset, count) in elements, merged
  auto add = [&](std::int64_t off, std::int64_t n) {
    if (n <= 0) return;
    if (!runs.empty() && runs.back().first + runs.back().second == off)
      runs.back().second += n;
    else
      runs.emplace_back(off, n);
  };
  for (std::int64_t p = 0; p < r.planes; ++p)
    for (std::int64_t b = 0; b < t.batch; ++b) {
      const std::int64_t base = (r.plane + p) * t.plane_elements() + b * VT * VH * D;
      if (vm == VH) {
        add(base + vr * VH * D, vn * VH * D);
      } else {
        for (std::int64_t i = 0; i < vn; ++i) add(base + ((vr + i) * VH + vh) * D, vm * D);
      }
    }
  for (const auto& [off, n] : runs) {
    if (t.dtype == kernels::DType::FP32) {
      launch(where, [&] { kernels::fill_f32(static_cast<float*>(t.base) + off, n, static_cast<float>(value), s); });
    } else {
      // The executor only ever zero-fills input-precision tensors (dK/dV halves of packed slots).
      CPSCOPE_CHECK(value == 0.0, where + ": a non-zero fill of an input-precision tensor");
      const std::int64_t eb = element_bytes(t.dtype);
      CPS_CUDA_CALL(cfg_.rank, cudaMemsetAsync(static_cast<char*>(t.base) + off * eb, 0, static_cast<std::size_t>(n * eb), s));
    }
  }
}

void CudaBackend::fill(const Op& op, std::int32_t stream, const Region& r, double value) {
  check_stream(stream, op);
  settle(stream);
  note(op);
  const instrument::OpRange range(op_label(op), cfg_.rank, op.id, tracing_);  // part of the op it precedes
  fill_region(region(r), value, streams_[static_cast<std::size_t>(stream)], describe(op));
  touched(r.tensor);
}

void CudaBackend::prepare_row_map(const std::vector<std::int64_t>& row_map) {
  CPSCOPE_CHECK(layout_ != nullptr, fmt::format("rank {}: a row map before allocate", cfg_.rank));
  const auto n = static_cast<std::int64_t>(row_map.size());
  std::int64_t used = 0;
  for (const RowMap& m : row_maps_used_) used += m.size;
  CPSCOPE_CHECK(used + n <= row_map_capacity_,
                fmt::format("rank {}: row maps of {} entries, room for {}", cfg_.rank, used + n, row_map_capacity_));
  for (std::int64_t i = 0; i < n; ++i)
    CPSCOPE_CHECK(row_map[static_cast<std::size_t>(i)] >= 0 && row_map[static_cast<std::size_t>(i)] < n,
                  fmt::format("rank {}: row map entry {} out of range", cfg_.rank, i));
  std::int64_t* dev = row_maps_ + used;
  CPS_CUDA_CALL(cfg_.rank, cudaMemcpy(dev, row_map.data(), static_cast<std::size_t>(n) * 8, cudaMemcpyHostToDevice));
  CPS_CUDA_CALL(cfg_.rank, cudaDeviceSynchronize());  // before any stream's kernel reads it
  row_maps_used_.push_back({row_map.data(), n, dev});
}

const std::int64_t* CudaBackend::device_row_map(const std::vector<std::int64_t>& row_map, const std::string& where) const {
  for (const RowMap& m : row_maps_used_)
    if (m.host == row_map.data() && m.size == static_cast<std::int64_t>(row_map.size())) return m.device;
  throw InternalError(where + ": a copy through a row map that prepare_row_map() was not given");
}

void CudaBackend::copy_region(const DeviceRegion& src, const DeviceRegion& dst, bool add,
                              const std::vector<std::int64_t>* row_map, cudaStream_t s,
                              const std::string& where) const {
  const Region& a = src.r;
  const Region& b = dst.r;
  CPSCOPE_CHECK(a.planes == b.planes && a.rows == b.rows && a.heads == b.heads && src.t.dim == dst.t.dim &&
                    src.t.batch == dst.t.batch,
                fmt::format("{}: copy between regions of different shape ({}x{}x{}x{} and {}x{}x{}x{})", where, a.planes,
                            a.rows, a.heads, src.t.dim, b.planes, b.rows, b.heads, dst.t.dim));
  CPSCOPE_CHECK(src.t.lse_layout == dst.t.lse_layout, where + ": copy between an LSE tensor and another layout");
  CPSCOPE_CHECK(a.plane >= 0 && a.plane + a.planes <= src.t.planes && b.plane >= 0 && b.plane + b.planes <= dst.t.planes,
                where + ": copy planes outside the tensors");
  // A row map is the device copy prepare_row_map() made of it: one kernel per plane permutes the rows.
  const std::int64_t* map = nullptr;
  if (row_map != nullptr) {
    CPSCOPE_CHECK(static_cast<std::int64_t>(row_map->size()) == a.rows, where + ": row map of the wrong length");
    CPSCOPE_CHECK(!src.t.lse_layout, where + ": a row map over an LSE tensor");
    map = device_row_map(*row_map, where);
  }
  for (std::int32_t p = 0; p < a.planes; ++p) {
    if (a.rows == 0) continue;
    kernels::CopyBlockArgs c{};
    c.src_dtype = src.t.dtype;
    c.dst_dtype = dst.t.dtype;
    c.src = src.t.plane(a.plane + p);
    c.dst = dst.t.plane(b.plane + p);
    c.batch = static_cast<int>(src.t.batch);
    c.head_dim = src.t.dim;
    c.add = add;
    c.row_map = map;
    if (!src.t.lse_layout) {
      c.src_tokens = src.t.tokens;
      c.src_heads = src.t.heads;
      c.dst_tokens = dst.t.tokens;
      c.dst_heads = dst.t.heads;
      c.src_row = a.row;
      c.dst_row = b.row;
      c.rows = a.rows;
      c.src_head = a.head;
      c.dst_head = b.head;
      c.heads = a.heads;
    } else {
      // [batch][heads][tokens]: heads are the "rows" of copy_block and tokens its "heads".
      CPSCOPE_CHECK(src.t.tokens <= 0x7fffffff && dst.t.tokens <= 0x7fffffff, where + ": LSE too long");
      c.src_tokens = src.t.heads;
      c.src_heads = static_cast<int>(src.t.tokens);
      c.dst_tokens = dst.t.heads;
      c.dst_heads = static_cast<int>(dst.t.tokens);
      c.src_row = a.head;
      c.dst_row = b.head;
      c.rows = a.heads;
      c.src_head = static_cast<int>(a.row);
      c.dst_head = static_cast<int>(b.row);
      c.heads = static_cast<int>(a.rows);
    }
    launch(where, [&] { kernels::copy_block(c, s); });
  }
}

void CudaBackend::copy(const Op& op, std::int32_t stream, const Region& src, const Region& dst, bool add,
                       const std::vector<std::int64_t>& row_map) {
  check_stream(stream, op);
  settle(stream);
  note(op);
  const instrument::OpRange range(op_label(op), cfg_.rank, op.id, tracing_);  // the op's main call
  const std::string where = describe(op);
  const cudaStream_t s = streams_[static_cast<std::size_t>(stream)];
  const DeviceRegion from = region(src), to = region(dst);
  const std::vector<std::int64_t>* map = row_map.empty() ? nullptr : &row_map;
  const bool overlap = layout_->storage(src.tensor) == layout_->storage(dst.tensor) &&
                       ranges_overlap(src.plane, src.planes, dst.plane, dst.planes) &&
                       ranges_overlap(src.row, src.rows, dst.row, dst.rows) &&
                       ranges_overlap(src.head, src.heads, dst.head, dst.heads);
  if (!overlap) {
    copy_region(from, to, add, map, s, where);
  } else {
    // In place: gather the source (through the row map) into the scratch buffer, then copy it over.
    DeviceTensor tmp = from.t;
    tmp.base = scratch_;
    tmp.tokens = src.rows;
    tmp.heads = src.heads;
    tmp.planes = src.planes;
    const std::int64_t bytes = tmp.planes * tmp.plane_elements() * element_bytes(tmp.dtype);
    CPSCOPE_CHECK(bytes <= scratch_bytes_, fmt::format("{}: an in-place copy of {} bytes, but the scratch buffer holds {}",
                                                       where, bytes, scratch_bytes_));
    const DeviceRegion mid{tmp, Region{src.tensor, 0, src.planes, 0, src.rows, 0, src.heads}};
    copy_region(from, mid, false, map, s, where);
    copy_region(mid, to, add, nullptr, s, where);
  }
  touched(dst.tensor);
}

namespace {
kernels::AttnBlockArgs block_args(const AttendArgs& a) {
  kernels::AttnBlockArgs b{};
  b.q_off = a.q_off;
  b.q_len = a.q_len;
  b.kv_off = a.kv_off;
  b.kv_len = a.kv_len;
  b.head_begin = a.head_begin;
  b.head_count = a.head_count;
  b.gqa_ratio = a.gqa_ratio;
  b.kv_head_shift = a.kv_head_shift;
  b.causal = a.causal;
  b.causal_offset = a.causal_offset;
  b.scale = static_cast<float>(a.scale);
  return b;
}

// Q and K/V of an attention call: the K/V tensor holds K in plane 0 and V in plane 1.
kernels::AttnInputs attn_inputs(kernels::DType dtype, std::int64_t batch, const DeviceTensor& q,
                                const DeviceTensor& kv) {
  return {dtype, q.dim, static_cast<int>(batch), q.base, q.tokens, q.heads, kv.plane(0), kv.plane(1), kv.tokens,
          kv.heads};
}
}  // namespace

void CudaBackend::attend_fwd(const Op& op, std::int32_t stream, const AttendArgs& a, bool merge) {
  check_stream(stream, op);
  settle(stream);
  note(op);
  const instrument::OpRange range(op_label(op), cfg_.rank, op.id, tracing_);  // the op's main call
  const std::string where = describe(op);
  const DeviceTensor q = tensor(a.q), kv = tensor(a.kv), o = tensor(a.o), lse = tensor(a.lse);
  CPSCOPE_CHECK(q.dtype == input_ && kv.dtype == input_ && kv.planes >= 2,
                where + ": attention reads Q and K/V in the input dtype");
  CPSCOPE_CHECK(o.dtype == kernels::DType::FP32 && lse.dtype == kernels::DType::FP32 && o.tokens == q.tokens &&
                    o.heads == q.heads && lse.tokens == q.tokens && lse.heads == q.heads,
                where + ": O and LSE must be fp32 with Q's rows and heads");
  const kernels::AttnFwdArgs k{attn_inputs(input_, batch_, q, kv), static_cast<float*>(o.base),
                               static_cast<float*>(lse.base), merge, block_args(a)};
  launch(where, [&] { kernels::attn_fwd(k, streams_[static_cast<std::size_t>(stream)]); });
  touched(a.o);
}

void CudaBackend::prepare_backward(const Op& op, std::int32_t stream, const AttendArgs& a) {
  check_stream(stream, op);
  settle(stream);
  note(op);
  const instrument::OpRange range(op_label(op), cfg_.rank, op.id, tracing_);  // part of the op
  const std::string where = describe(op);
  const DeviceTensor o = tensor(a.o), dout = tensor(a.dout);
  CPSCOPE_CHECK(dout.tokens == o.tokens && dout.heads == o.heads, where + ": O and dO must have the same rows and heads");
  const cudaStream_t s = streams_[static_cast<std::size_t>(stream)];
  launch(where, [&] {
    kernels::attn_bwd_preprocess(o.dtype, dout.dtype, o.base, dout.base, delta_, static_cast<int>(batch_), o.tokens,
                                 o.heads, o.dim, s);
  });
  delta_valid_ = true;
  delta_stream_ = stream;
}

void CudaBackend::attend_bwd(const Op& op, std::int32_t stream, const AttendArgs& a) {
  check_stream(stream, op);
  settle(stream);
  note(op);
  const instrument::OpRange range(op_label(op), cfg_.rank, op.id, tracing_);  // the op's main call
  const std::string where = describe(op);
  const cudaStream_t s = streams_[static_cast<std::size_t>(stream)];
  const DeviceTensor q = tensor(a.q), kv = tensor(a.kv), o = tensor(a.o), lse = tensor(a.lse);
  const DeviceTensor dout = tensor(a.dout), dq = tensor(a.dq), dkv = tensor(a.dkv);
  CPSCOPE_CHECK(q.dtype == input_ && kv.dtype == input_ && dout.dtype == input_ && kv.planes >= 2,
                where + ": attention reads Q, K/V and dO in the input dtype");
  CPSCOPE_CHECK(dout.tokens == q.tokens && dout.heads == q.heads && o.tokens == q.tokens && o.heads == q.heads &&
                    dq.dtype == kernels::DType::FP32 && dq.tokens == q.tokens && dq.heads == q.heads,
                where + ": O, dO and dQ (fp32) must have Q's rows and heads");
  CPSCOPE_CHECK(dkv.tokens == kv.tokens && dkv.heads == kv.heads && a.dkv_plane + 2 <= dkv.planes,
                where + ": the dK/dV destination must have the K/V tensor's rows and heads");
  CPSCOPE_CHECK(delta_valid_, where + ": backward attention before the pass's prepare_backward");
  CPSCOPE_CHECK(delta_stream_ == stream,
                fmt::format("{}: backward attention on stream {}, but the pass's delta was computed on stream {}", where,
                            stream, delta_stream_));
  CPSCOPE_CHECK(dkv.dtype == kernels::DType::FP32,
                where + ": attention adds dK/dV in fp32 (the executor stages an input-dtype destination)");
  const kernels::AttnBwdArgs k{attn_inputs(input_, batch_, q, kv), dout.base, static_cast<const float*>(lse.base),
                               delta_, static_cast<float*>(dq.base), static_cast<float*>(dkv.plane(a.dkv_plane)),
                               static_cast<float*>(dkv.plane(a.dkv_plane + 1)), block_args(a)};
  launch(where, [&] { kernels::attn_bwd(k, s); });
}

void CudaBackend::exchange(const Op& op, std::int32_t stream, const ExchangeArgs& x) {
  check_stream(stream, op);
  settle(stream);
  note(op);
  const instrument::OpRange range(op_label(op), cfg_.rank, op.id, tracing_);  // the op's main call
  transport_.exchange(*this, op, stream, x);
  for (const Part& p : x.recvs)
    for (const Region& r : p.regions) touched(r.tensor);
}

void CudaBackend::all_gather(const Op& op, std::int32_t stream, const AllGatherArgs& x) {
  check_stream(stream, op);
  settle(stream);
  note(op);
  const instrument::OpRange range(op_label(op), cfg_.rank, op.id, tracing_);  // the op's main call
  transport_.all_gather(*this, op, stream, x);
  for (const Region& r : x.dst) touched(r.tensor);
}

void CudaBackend::reduce_scatter(const Op& op, std::int32_t stream, const ReduceScatterArgs& x) {
  check_stream(stream, op);
  settle(stream);
  note(op);
  const instrument::OpRange range(op_label(op), cfg_.rank, op.id, tracing_);  // the op's main call
  transport_.reduce_scatter(*this, op, stream, x);
  touched(x.dst.tensor);
}

void CudaBackend::begin_iteration() { delta_valid_ = false; }

void CudaBackend::streams_wait(cudaEvent_t ev) {
  for (cudaStream_t s : streams_) CPS_CUDA_CALL(cfg_.rank, cudaStreamWaitEvent(s, ev, 0));
}

void CudaBackend::join_into(cudaStream_t into) {
  for (std::size_t i = 0; i < streams_.size(); ++i) {
    settle(static_cast<std::int32_t>(i));
    CPS_CUDA_CALL(cfg_.rank, cudaEventRecord(sync_events_[i], streams_[i]));
    CPS_CUDA_CALL(cfg_.rank, cudaStreamWaitEvent(into, sync_events_[i], 0));
  }
}

void CudaBackend::synchronize() {
  if (layout_ == nullptr) return;
  CPS_CUDA_CALL(cfg_.rank, cudaSetDevice(cfg_.device));
  for (std::size_t i = 0; i < streams_.size(); ++i) {
    settle(static_cast<std::int32_t>(i));
    CPS_CUDA_CALL(cfg_.rank, cudaEventRecord(sync_events_[i], streams_[i]));
  }
  // Poll instead of blocking in cudaStreamSynchronize, so a hung transfer becomes an error naming the
  // rank and op after the timeout, and the transport can check for asynchronous NCCL errors meanwhile.
  const auto deadline = std::chrono::steady_clock::now() + cfg_.timeout;
  for (;;) {
    bool idle = true;
    for (cudaEvent_t e : sync_events_) {
      const cudaError_t r = cudaEventQuery(e);
      if (r == cudaErrorNotReady) {
        idle = false;
      } else if (r != cudaSuccess) {
        throw DeviceError(fmt::format("rank {}: the device reported {} ({}) while running the ops issued up to {}",
                                      cfg_.rank, cudaGetErrorName(r), cudaGetErrorString(r), last_op_));
      }
    }
    if (idle) break;
    transport_.poll(last_op_);
    if (std::chrono::steady_clock::now() >= deadline) {
      transport_.abort();
      throw DeviceError(fmt::format("rank {}: the streams did not finish within {} ms; last op issued: {}", cfg_.rank,
                                    cfg_.timeout.count(), last_op_));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  // A polled cudaErrorNotReady must not linger as this thread's last error: the kernel launchers check
  // cudaGetLastError after each launch.
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess && e != cudaErrorNotReady)
    throw DeviceError(fmt::format("rank {}: {} ({}) after the ops issued up to {}", cfg_.rank, cudaGetErrorName(e),
                                  cudaGetErrorString(e), last_op_));
}

double hold_ms_for(double host_ms) { return std::min(1.5 * host_ms + 0.1, 250.0); }

void hold_stream(double ms, cudaStream_t s, const std::string& what) {
  launch(what, [&] { kernels::spin(std::llround(ms * 1e6), s); });
}

}  // namespace cpscope::rt
