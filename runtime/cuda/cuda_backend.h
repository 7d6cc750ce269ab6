// The CUDA backend: one rank's tensors in device memory, one CUDA stream per IR stream and one CUDA
// event per IR event, attention through the flash kernels of runtime/kernels, and transfers through a
// CudaTransport (loopback, replay or nccl). Mirrors HostBackend's semantics exactly: calls on one stream
// run in order, record/wait order streams, synchronize() waits for everything and reports the first error.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/kernels/attention.h"
#include "runtime/layout.h"
#include "sim/schedule.h"

namespace cpscope::rt {

class CudaTransport;

// One tensor's storage on the device, as the kernels address it. Tensors are
// [plane][batch][tokens][heads][dim]; LSE is stored the way the kernels want it, [plane][batch][heads][tokens].
struct DeviceTensor {
  void* base = nullptr;  // plane 0
  kernels::DType dtype = kernels::DType::FP32;
  std::int64_t tokens = 0;
  std::int32_t heads = 0, dim = 0, planes = 1;
  std::int64_t batch = 1;
  bool lse_layout = false;  // [batch][heads][tokens] instead of [batch][tokens][heads]
  std::int64_t plane_elements() const { return batch * tokens * heads * dim; }
  void* plane(std::int32_t p) const;
};

// A region of a device tensor (the Region's tensor id is only informative).
struct DeviceRegion {
  DeviceTensor t;
  Region r;
  std::int64_t elements() const { return static_cast<std::int64_t>(r.planes) * t.batch * r.rows * r.heads * t.dim; }
};

// Timing GPU work, not the host's launches of it: recorded on an idle stream, a start event completes at once
// and the interval also holds the host's issuing. So the stream is first held busy (kernels::spin; nothing on
// the emulation, whose streams run only when waited on) while the host queues the work. hold_ms_for gives the
// hold for work whose queuing took the host `host_ms` last time: 1.5 x that + 0.1 ms, at most 250 ms (not the
// first time's, which loads modules and makes connections). Used by the timed iterations (cuda_run.cc) and the
// cuda bench's rows.
double hold_ms_for(double host_ms);
// Queues the hold on `s`; a failed launch throws DeviceError naming `what`.
void hold_stream(double ms, cudaStream_t s, const std::string& what);

struct CudaBackendConfig {
  std::int32_t rank = 0;                  // CP rank (messages, errors)
  std::int32_t device = 0;                // CUDA device ordinal
  std::vector<std::string> stream_names;  // Schedule::streams; "compute" gets the low priority
  std::chrono::milliseconds timeout{300000};  // synchronize(): how long to wait for the streams
};

class CudaBackend final : public Backend {
 public:
  // `transport` must outlive the backend. Throws InputError for a dtype or head_dim the kernels lack.
  CudaBackend(CudaBackendConfig config, const Workload& w, CudaTransport& transport);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  // Throws InputError when the kernels cannot run `w` (fp32 dtype, head_dim other than 64/128, batch).
  static void check_workload(const Workload& w);
  // Device bytes allocate() takes for `layout` (tensors, backward delta, scratch), without allocating
  // anything: the run compares it with the free memory first.
  static std::int64_t required_bytes(const RankLayout& layout);

  void allocate(const RankLayout& layout, std::int32_t num_streams, std::int32_t num_events) override;
  void upload(TensorId t, const std::vector<double>& data) override;
  std::vector<double> download(TensorId t) override;

  void wait_event(const Op& op, std::int32_t stream, std::int32_t event) override;
  void record_event(const Op& op, std::int32_t stream, std::int32_t event) override;
  void fill(const Op& op, std::int32_t stream, const Region& r, double value) override;
  void copy(const Op& op, std::int32_t stream, const Region& src, const Region& dst, bool add,
            const std::vector<std::int64_t>& row_map) override;
  // Keeps a device copy of the row map (the executor's permutations), which copy() then finds by the vector.
  void prepare_row_map(const std::vector<std::int64_t>& row_map) override;
  void attend_fwd(const Op& op, std::int32_t stream, const AttendArgs& a, bool merge) override;
  void prepare_backward(const Op& op, std::int32_t stream, const AttendArgs& a) override;
  void attend_bwd(const Op& op, std::int32_t stream, const AttendArgs& a) override;
  void exchange(const Op& op, std::int32_t stream, const ExchangeArgs& x) override;
  void all_gather(const Op& op, std::int32_t stream, const AllGatherArgs& x) override;
  void reduce_scatter(const Op& op, std::int32_t stream, const ReduceScatterArgs& x) override;
  // Polls the streams (and the transport's asynchronous errors) until idle or the timeout, then throws
  // DeviceError naming the rank and the last op issued.
  void synchronize() override;

  // --- for run_on_cuda ---
  // Starts a new iteration: the backward's delta (rowsum(dO·O)) is computed again by its first AttendBwd.
  void begin_iteration();
  // Copies the uploaded inputs back into their tensors (a backward-only schedule may overwrite the saved
  // forward state, e.g. TransformerEngine's K/V slot; the next iteration must start from the same data).
  void reload_inputs();
  // Every stream of this rank waits for `ev` (the iteration's start event).
  void streams_wait(cudaEvent_t ev);
  // `into` waits for everything issued so far on this rank's streams.
  void join_into(cudaStream_t into);
  // While on, each op's main call pushes the op's CUPTI external correlation id (a CuptiTracer capture
  // must be running: runtime/instrument/cupti_tracer.h). NVTX ranges are always on.
  void set_tracing(bool on) { tracing_ = on; }
  std::int64_t allocated_bytes() const { return allocated_bytes_; }

  // --- for transports ---
  std::int32_t rank() const { return cfg_.rank; }
  std::int32_t device() const { return cfg_.device; }
  // How long a host-side wait (the streams, a peer, an NCCL call in progress) may last.
  std::chrono::milliseconds timeout() const { return cfg_.timeout; }
  std::int64_t batch() const { return batch_; }
  kernels::DType input_dtype() const { return input_; }
  std::int32_t num_streams() const { return static_cast<std::int32_t>(streams_.size()); }
  cudaStream_t stream(std::int32_t i) const;
  const RankLayout& layout() const { return *layout_; }
  DeviceTensor tensor(TensorId t) const;
  DeviceRegion region(const Region& r) const { return DeviceRegion{tensor(r.tensor), r}; }
  // "rank r op i (fwd/step3/attend)".
  std::string describe(const Op& op) const;
  // dst (+)= src through copy_block, converting element types; row i of dst takes row row_map[i] of src
  // (null: identity; else a map prepare_row_map() was given, one kernel per plane). The regions must have
  // equal shape and must not overlap (copy() handles in place).
  void copy_region(const DeviceRegion& src, const DeviceRegion& dst, bool add, const std::vector<std::int64_t>* row_map,
                   cudaStream_t s, const std::string& where) const;
  // Runs `settle` before the next call that enqueues on `stream` (a send completes only when its receiver
  // has taken the data, like NCCL; deferring the host-side wait to the stream's next use lets ops on other
  // streams be issued meanwhile).
  void defer(std::int32_t stream, std::function<void()> settle);
  // Marks that `t`'s storage was written (the backward delta depends on O and dO).
  void touched(TensorId t);

 private:
  struct Plan {
    std::array<std::int64_t, kNumTensors> tensor_bytes{};  // storage tensors only
    std::int64_t delta_bytes = 0;     // fp32 [batch][heads][rows] of O (backward)
    std::int64_t scratch_bytes = 0;   // in-place permutations (allgather's zigzag Layout)
    std::int64_t row_map_bytes = 0;   // their row maps on the device (int64 per gathered row, both ways)
    std::int64_t total() const;
  };
  static Plan plan(const RankLayout& layout);
  void* device_alloc(std::int64_t bytes, const std::string& what);
  void settle(std::int32_t stream);
  void note(const Op& op);
  // op_name(op), computed once per op id (the NVTX range's name; formatting it per launch would cost
  // host time in the issue loop).
  const std::string& op_label(const Op& op);
  void check_stream(std::int32_t stream, const Op& op) const;
  void fill_region(const DeviceRegion& d, double value, cudaStream_t s, const std::string& where);

  CudaBackendConfig cfg_;
  std::int64_t batch_;
  kernels::DType input_;
  CudaTransport& transport_;
  const RankLayout* layout_ = nullptr;
  std::array<void*, kNumTensors> storage_{};
  std::array<std::vector<unsigned char>, kNumTensors> uploaded_;  // host copies of the inputs (reload_inputs)
  std::vector<void*> allocations_;
  std::int64_t allocated_bytes_ = 0;
  float* delta_ = nullptr;
  void* scratch_ = nullptr;
  std::int64_t scratch_bytes_ = 0;
  struct RowMap {
    const std::int64_t* host;  // the vector's data, as copy() is given it
    std::int64_t size;
    std::int64_t* device;
  };
  const std::int64_t* device_row_map(const std::vector<std::int64_t>& row_map, const std::string& where) const;
  std::int64_t* row_maps_ = nullptr;
  std::int64_t row_map_capacity_ = 0;  // entries
  std::vector<RowMap> row_maps_used_;
  std::vector<cudaStream_t> streams_;
  std::vector<cudaEvent_t> events_;       // IR events
  std::vector<cudaEvent_t> sync_events_;  // synchronize() and join_into(), one per stream
  std::vector<std::vector<std::function<void()>>> deferred_;
  bool delta_valid_ = false;
  std::int32_t delta_stream_ = -1;
  std::string last_op_ = "no op issued yet";
  bool tracing_ = false;
  std::vector<std::string> op_labels_;  // by op id; empty string: not yet computed
};

}  // namespace cpscope::rt
