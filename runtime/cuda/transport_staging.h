// Messages of the NCCL-based transports (replay, nccl): a message is the concatenation of its regions,
// each in [plane][batch][row][head][dim] order (HostBackend's pack order), in one element type. It is
// sent from (or received into) the tensor itself when it is one contiguous span of the right type;
// otherwise copy_block packs it into, or unpacks it from, a per-stream staging buffer.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/backend.h"
#include "runtime/kernels/attention.h"
#include "sim/schedule.h"

namespace cpscope::rt {

class CudaBackend;

// kStagingAlign, staging_align, StagingNeed and staging_needs() are the simulator's (sim/schedule.h),
// which counts these buffers in its peak memory.

// One stream's staging buffers, carved op by op: ops on a stream run in order, so the previous op's
// messages are finished with when the next op's packing kernels run on the same stream.
class Staging {
 public:
  Staging() = default;
  Staging(void* base, std::int64_t bytes) : base_(static_cast<char*>(base)), bytes_(bytes) {}
  void reset() { used_ = 0; }
  // A 256-byte aligned slice; throws InternalError naming `what` when the buffer is too small.
  void* take(std::int64_t bytes, const std::string& what);
  void* base() const { return base_; }
  std::int64_t bytes() const { return bytes_; }

 private:
  char* base_ = nullptr;
  std::int64_t bytes_ = 0, used_ = 0;
};

// The per-stream send and receive staging buffers of an NCCL-based transport, sized by staging_needs()
// and freed with it. `zeroed`: filled with zeros once (replay receives its own bytes; zeros keep NaN out
// of the attention it times).
class StagingBuffers {
 public:
  StagingBuffers(std::int32_t rank, std::vector<StagingNeed> needs, bool zeroed)
      : rank_(rank), needs_(std::move(needs)), zeroed_(zeroed) {}
  ~StagingBuffers();
  StagingBuffers(const StagingBuffers&) = delete;
  StagingBuffers& operator=(const StagingBuffers&) = delete;

  std::size_t streams() const { return needs_.size(); }
  std::int64_t bytes() const;  // what allocate() takes
  void allocate();
  Staging& send(std::int32_t stream) { return send_.at(static_cast<std::size_t>(stream)); }
  Staging& recv(std::int32_t stream) { return recv_.at(static_cast<std::size_t>(stream)); }

 private:
  void* alloc(std::int64_t bytes);
  std::int32_t rank_;
  std::vector<StagingNeed> needs_;
  bool zeroed_;
  std::vector<Staging> send_, recv_;
  std::vector<void*> buffers_;
};

// Elements of the regions (of `b`'s tensors).
std::int64_t region_elements(const CudaBackend& b, const std::vector<Region>& rs);
// The element type of a message of `bytes` over these regions (bytes / elements: 4 fp32, 2 the input
// dtype); throws InternalError when it is neither.
kernels::DType message_dtype(const CudaBackend& b, const std::vector<Region>& rs, std::int64_t bytes,
                             const std::string& what);
// The device address of the regions when they are one contiguous span of element type `dt`, else null.
void* contiguous_span(const CudaBackend& b, const std::vector<Region>& rs, kernels::DType dt);
// The base of the regions when region i is one contiguous span at base + i·P of type dt, else null: a
// collective's per-member buffers that NCCL can read or write in place.
void* adjacent_spans(const CudaBackend& b, const std::vector<Region>& rs, kernels::DType dt, std::int64_t P);
// Packs the regions (converted to `dt`) into msg; unpacks (converting, adding when `add`) msg into them.
// Both return what they copied: the message's bytes, one copy per region (as Op::staged_* count them).
StagedCopies pack(const CudaBackend& b, const std::vector<Region>& rs, void* msg, kernels::DType dt, cudaStream_t s,
                  const std::string& what);
StagedCopies unpack(const CudaBackend& b, const void* msg, kernels::DType dt, const std::vector<Region>& rs, bool add,
                    cudaStream_t s, const std::string& what);
// The buffer to send the regions from: the tensor itself, or a staging slice they were packed into.
void* outgoing(const CudaBackend& b, const std::vector<Region>& rs, kernels::DType dt, Staging& st, cudaStream_t s,
               const std::string& what);
// The buffer to receive into: the tensor itself, or a staging slice (then *staged is set and the caller
// unpacks it after the receive).
void* incoming(const CudaBackend& b, const std::vector<Region>& rs, kernels::DType dt, Staging& st, bool* staged,
               const std::string& what);

}  // namespace cpscope::rt
