// The replay transport: one rank of an N-rank schedule on one GPU. Each IR stream gets a 1-rank NCCL
// communicator, and every transfer becomes an NCCL send to itself of the bytes the rank would move:
//   SendRecv       one grouped ncclSend + ncclRecv to peer 0 of max(send, receive) bytes;
//   AllToAll       (members-1) x bytes per peer (the own part is a local copy in the real run);
//   AllGather      (members-1) x bytes per peer in, the same out;
//   ReduceScatter  (members-1) x bytes per peer out, the same in.
// Packing and unpacking of non-contiguous regions run as in the nccl transport, so the replay pays the
// same copy kernels (Op::staged_send/recv), with two exceptions (sim transport_staging(), which the
// simulator times and every op here is checked against): an all-to-all's parts are always packed (they
// go out as one self-send), and a reduce-scatter always unpacks its result (the self-send brings back
// (members-1) parts, not the sum). The data moved is not meaningful (a
// rank receives its own bytes); only the timing is: it measures one rank's real compute/communication
// overlap without the other N-1 GPUs.
// What it cannot show: the peers' skew, link contention and the real network's bandwidth (NCCL's
// self-copy runs at device-memory speed).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "runtime/cuda/check.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/host_convert.h"
#include "runtime/cuda/transport.h"
#include "runtime/cuda/transport_staging.h"
#include "sim/error.h"

namespace cpscope::rt {
namespace {

class ReplayTransport final : public CudaTransport {
 public:
  ReplayTransport(const Schedule& schedule, std::int32_t rank)
      : rank_(rank), staging_(rank, staging_needs(schedule, rank, true), /*zeroed=*/true) {
    for (const auto& g : schedule.groups) group_sizes_.push_back(static_cast<std::int64_t>(g.size()));
  }

  ~ReplayTransport() override {
    // Destroy normally; abort when unwinding from an error (destroy could wait on a broken operation).
    for (ncclComm_t c : comms_)
      if (c != nullptr) (std::uncaught_exceptions() > 0 ? ncclCommAbort(c) : ncclCommDestroy(c));
  }

  std::int64_t staging_bytes() const override { return staging_.bytes(); }
  // One-rank communicators: no peers, no connections; the 1 GiB the memory check always kept for NCCL.
  std::int64_t library_bytes() const override { return std::int64_t{1} << 30; }

  void allocate(CudaBackend& b) override {
    CPSCOPE_CHECK(static_cast<std::size_t>(b.num_streams()) == staging_.streams(), "replay: stream count");
    staging_.allocate();
    for (std::size_t i = 0; i < staging_.streams(); ++i) {
      // One communicator per stream: operations on one communicator must not run concurrently.
      ncclUniqueId id;
      CPS_NCCL_CALL(rank_, ncclGetUniqueId(&id));
      ncclComm_t c = nullptr;
      CPS_NCCL_CALL(rank_, ncclCommInitRank(&c, 1, id, 0));
      comms_.push_back(c);
    }
  }

  void exchange(CudaBackend& b, const Op& op, std::int32_t stream, const ExchangeArgs& x) override {
    const std::string what = b.describe(op);
    const cudaStream_t s = b.stream(stream);
    Staging& so = staging_.send(stream);
    Staging& si = staging_.recv(stream);
    so.reset();
    si.reset();
    // Bytes on the wire: what goes to (comes from) other ranks.
    std::int64_t out = 0, in = 0;
    struct Msg {
      const Part* part;
      kernels::DType dt;
      std::int64_t bytes;
    };
    std::vector<Msg> sends, recvs;
    for (const Part& p : x.sends) {
      const std::int64_t bytes = part_bytes(op, true);
      sends.push_back({&p, message_dtype(b, p.regions, bytes, what), bytes});
      if (p.peer != rank_) out += bytes;
    }
    for (const Part& p : x.recvs) {
      const std::int64_t bytes = part_bytes(op, false);
      recvs.push_back({&p, message_dtype(b, p.regions, bytes, what), bytes});
      if (p.peer != rank_) in += bytes;
    }
    const std::int64_t wire = std::max(out, in);
    // Send side: a single contiguous message of the full size goes from the tensor, else everything is
    // packed into the staging buffer (whose size covers `wire`) and the self-send reads from there.
    const void* sptr = nullptr;
    if (sends.size() == 1 && sends[0].bytes == wire) sptr = contiguous_span(b, sends[0].part->regions, sends[0].dt);
    StagedCopies made;
    if (sptr == nullptr) {
      sptr = so.base();
      for (const Msg& m : sends) made += pack(b, m.part->regions, so.take(m.bytes, what), m.dt, s, what);
    }
    void* rptr = nullptr;
    if (recvs.size() == 1 && recvs[0].bytes == wire) {
      rptr = contiguous_span(b, recvs[0].part->regions, recvs[0].dt);
    } else if (!recvs.empty()) {
      // An all-to-all's parts lying end to end (the nccl transport receives each in place, unpacking nothing).
      std::vector<Region> parts;
      bool uniform = true;
      for (const Msg& m : recvs) {
        uniform = uniform && m.part->regions.size() == 1 && m.dt == recvs[0].dt && m.bytes == recvs[0].bytes;
        if (uniform) parts.push_back(m.part->regions[0]);
      }
      if (uniform && static_cast<std::int64_t>(recvs.size()) * recvs[0].bytes >= wire)
        rptr = adjacent_spans(b, parts, recvs[0].dt, recvs[0].bytes);
    }
    const bool staged = rptr == nullptr;
    if (staged) rptr = si.base();
    CPSCOPE_CHECK(wire <= so.bytes() && wire <= si.bytes(), what + ": replay staging too small");
    self_send(stream, s, sptr, rptr, wire);
    if (staged) {
      // Unpack every part from its slice, as the nccl transport does after its receives.
      for (const Msg& m : recvs) made += unpack(b, si.take(m.bytes, what), m.dt, m.part->regions, false, s, what);
    }
    check_copies(op, made, what);
  }

  // Plane by plane, as the nccl transport (per_plane): each plane's self-send and copies run in stream
  // order, so the planes reuse the staging buffers one after the other.
  void all_gather(CudaBackend& b, const Op& op, std::int32_t stream, const AllGatherArgs& whole) override {
    const std::string what = b.describe(op);
    const cudaStream_t s = b.stream(stream);
    Staging& so = staging_.send(stream);
    Staging& si = staging_.recv(stream);
    StagedCopies made;
    for (const AllGatherArgs& x : per_plane(whole)) {
      so.reset();
      si.reset();
      const auto n = static_cast<std::int64_t>(x.members.size());
      const kernels::DType dt = b.tensor(x.src.tensor).dtype;
      const std::int64_t P = region_elements(b, {x.src}) * element_bytes(dt);
      if (contiguous_span(b, {x.src}, dt) == nullptr) made += pack(b, {x.src}, so.base(), dt, s, what);
      CPSCOPE_CHECK((n - 1) * P <= so.bytes() && n * P <= si.bytes(), what + ": replay staging too small");
      // As the nccl transport: into the destinations when they lie end to end, else staged and unpacked.
      void* to = adjacent_spans(b, x.dst, dt, P);
      const bool staged = to == nullptr;
      self_send(stream, s, so.base(), staged ? si.base() : to, (n - 1) * P);
      if (staged)
        for (std::int64_t i = 0; i < n; ++i)
          made += unpack(b, static_cast<char*>(si.base()) + i * P, dt, {x.dst[static_cast<std::size_t>(i)]}, false, s,
                         what);
    }
    check_copies(op, made, what);
  }

  void reduce_scatter(CudaBackend& b, const Op& op, std::int32_t stream, const ReduceScatterArgs& whole) override {
    const std::string what = b.describe(op);
    const cudaStream_t s = b.stream(stream);
    Staging& so = staging_.send(stream);
    Staging& si = staging_.recv(stream);
    StagedCopies made;
    for (const ReduceScatterArgs& x : per_plane(whole)) {
      so.reset();
      si.reset();
      const auto n = static_cast<std::int64_t>(x.members.size());
      const kernels::DType dt = b.tensor(x.src[0].tensor).dtype;  // reduce-scatter sums in the source type
      const std::int64_t P = region_elements(b, {x.src[0]}) * element_bytes(dt);
      CPSCOPE_CHECK(n * P <= so.bytes() && std::max(P, (n - 1) * P) <= si.bytes(), what + ": replay staging too small");
      // As the nccl transport: from the sources when they lie end to end, else packed first.
      const void* from = adjacent_spans(b, x.src, dt, P);
      if (from == nullptr) {
        for (std::int64_t i = 0; i < n; ++i)
          made += pack(b, {x.src[static_cast<std::size_t>(i)]}, static_cast<char*>(so.base()) + i * P, dt, s, what);
        from = so.base();
      }
      self_send(stream, s, from, si.base(), (n - 1) * P);
      made += unpack(b, si.base(), dt, {x.dst}, false, s, what);
    }
    check_copies(op, made, what);
  }

 private:
  // IR bytes of a message: SendRecv carries its own; all-to-all parts are bytes_per_peer each.
  static std::int64_t part_bytes(const Op& op, bool send) {
    if (op.kind == OpKind::SendRecv) return send ? op.send.bytes : op.recv.bytes;
    return op.bytes_per_peer;
  }

  // What an op copied must be what the simulator times for replay, or its predictions of replay runs drift.
  void check_copies(const Op& op, const StagedCopies& made, const std::string& what) const {
    const std::int64_t members = op.group >= 0 ? group_sizes_.at(static_cast<std::size_t>(op.group)) : 0;
    const StagedCopies want = transport_staging(op, members, true);
    CPSCOPE_CHECK(made == want, fmt::format("{}: replay copied {} bytes in {} copies; the simulator times {} bytes in "
                                            "{} copies (transport_staging)",
                                            what, made.bytes, made.copies, want.bytes, want.copies));
  }

  void self_send(std::int32_t stream, cudaStream_t s, const void* from, void* to, std::int64_t bytes) {
    if (bytes <= 0) return;
    ncclComm_t c = comms_.at(static_cast<std::size_t>(stream));
    CPS_NCCL_CALL(rank_, ncclGroupStart());
    // The group is closed before any error is thrown: while it is open NCCL only queues work, the
    // destructor's ncclCommAbort included, which would then never run.
    const char* call = "ncclSend(from, bytes, ncclUint8, 0, c, s)";
    ncclResult_t r = ncclSend(from, static_cast<std::size_t>(bytes), ncclUint8, 0, c, s);
    if (r == ncclSuccess) {
      call = "ncclRecv(to, bytes, ncclUint8, 0, c, s)";
      r = ncclRecv(to, static_cast<std::size_t>(bytes), ncclUint8, 0, c, s);
    }
    const ncclResult_t end = ncclGroupEnd();
    if (r != ncclSuccess)
      throw_call_error("NCCL", call, __FILE__, __LINE__, rank_, nccl_detail(ncclGetErrorString(r), ncclGetLastError(c)));
    if (end != ncclSuccess)
      throw_call_error("NCCL", "ncclGroupEnd()", __FILE__, __LINE__, rank_,
                       nccl_detail(ncclGetErrorString(end), ncclGetLastError(c)));
  }

  std::int32_t rank_;
  // Zeroed so a replayed receive never brings NaNs into the tensors (the data is not meaningful, but
  // attention on NaN/Inf must not change what is timed). Declared before comms_: destroyed after them.
  StagingBuffers staging_;
  std::vector<ncclComm_t> comms_;
  std::vector<std::int64_t> group_sizes_;
};

}  // namespace

std::unique_ptr<CudaTransport> make_replay_transport(const Schedule& schedule, std::int32_t rank) {
  return std::make_unique<ReplayTransport>(schedule, rank);
}

}  // namespace cpscope::rt
