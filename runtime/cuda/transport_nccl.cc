// The nccl transport: one process per rank (mpirun/srun), NCCL communicators bootstrapped over a ProcessGroup
// (MPI: process_group_mpi.cc; the SIMT emulation's test runs the ranks as threads of one process).
//  - One communicator over all N ranks per IR stream that carries communication on some rank (not the
//    compute stream), so concurrent streams never share a communicator (NCCL requires the operations on
//    one communicator to be issued in one order on every rank, and two streams would interleave them
//    arbitrarily). SendRecv ops are grouped ncclSend/ncclRecv in it.
//  - One communicator per (collective group, stream) pair that the schedule uses, split from the stream's
//    communicator (ncclCommSplit, ranks ordered by their position in the group; disjoint groups in one
//    split, split_layers): AllGather
//    (ncclAllGather), ReduceScatter (ncclReduceScatter, sum) and AllToAll (grouped ncclSend/ncclRecv).
//  - Messages travel in the receiving tensors' type (fp32 for Acc tensors, else the workload dtype);
//    non-contiguous regions are packed into / unpacked from per-stream staging buffers.
// Asynchronous NCCL errors are polled while CudaBackend::synchronize() waits; on an error or the timeout
// every communicator is aborted and the error names the rank and the last op issued.
// The communicators are non-blocking (ncclConfig_t::blocking = 0): a call that must wait for its peers
// (initialisation, a split, ncclGroupEnd while p2p connections are set up, a collective) returns
// ncclInProgress instead of blocking, and ready() polls the communicator's state under the same timeout.
// With blocking communicators a peer that never arrives would hang the rank inside NCCL, beyond the
// reach of any timeout (so NCCL_COMM_BLOCKING=1, which overrides the config, is refused). The price:
// NCCL launches a group's kernels from its own thread, so each ncclGroupEnd runs inside a launch window
// (group_end) for the CUPTI tracer to attribute them. While ready() waits on one communicator it also
// watches the others, so a peer's failure seen on another stream's communicator ends the wait at once.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/cuda/check.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/host_convert.h"
#include "runtime/cuda/transport.h"
#include "runtime/cuda/transport_staging.h"
#include "runtime/instrument/cupti_tracer.h"
#include "sim/error.h"

namespace cpscope::rt {

namespace {

// What the memory check keeps free for NCCL's own buffers (library_bytes): per communicator this rank
// holds, as each gets its own channels, connection buffers and, for collectives on NVSwitch systems,
// NVLS buffers (hundreds of MiB to over a GiB with NVLS); at least the 1 GiB the check kept before.
constexpr std::int64_t kNcclBytesPerComm = std::int64_t{512} << 20;
constexpr std::int64_t kNcclMinBytes = std::int64_t{1} << 30;

// Per stream of the schedule: whether an op of any rank communicates on it (the same answer on every rank).
std::vector<bool> communicating_streams(const Schedule& s) {
  std::vector<bool> talks(s.streams.size(), false);
  for (const RankProgram& p : s.ranks)
    for (const Op& op : p.ops)
      if (is_comm(op.kind)) talks.at(static_cast<std::size_t>(op.stream)) = true;
  return talks;
}

ncclDataType_t nccl_type(kernels::DType dt) {
  switch (dt) {
    case kernels::DType::BF16: return ncclBfloat16;
    case kernels::DType::FP16: return ncclFloat16;
    case kernels::DType::FP32: return ncclFloat32;
  }
  throw InternalError("nccl_type: unknown DType");
}

class NcclTransport final : public CudaTransport {
 public:
  NcclTransport(const Schedule& schedule, ProcessGroup& pg)
      : schedule_(schedule),
        pg_(pg),
        rank_(pg.rank()),
        staging_(pg.rank(), staging_needs(schedule, pg.rank(), false), /*zeroed=*/false),
        splits_(split_layers(schedule)),
        talks_(communicating_streams(schedule)) {}

  ~NcclTransport() override {
    // Normally finalize (flushes, waits for the peers, non-blocking: polled under the timeout) and destroy;
    // when unwinding from an error, or when finalizing does not finish in time, abort instead (a peer may be
    // gone or an operation never complete).
    bool failing = std::uncaught_exceptions() > 0;
    auto close = [&](ncclComm_t c) {
      if (c == nullptr) return;
      if (!failing) {
        const ncclResult_t r = ncclCommFinalize(c);
        if ((r != ncclSuccess && r != ncclInProgress) || settled(c) != ncclSuccess) failing = true;
      }
      (failing ? ncclCommAbort(c) : ncclCommDestroy(c));
    };
    for (auto& [key, c] : group_comms_) close(c);
    for (ncclComm_t c : comms_) close(c);
  }

  std::int64_t staging_bytes() const override { return staging_.bytes(); }

  std::int64_t library_bytes() const override {
    std::int64_t comms = 0;
    for (const bool t : talks_) comms += t ? 1 : 0;
    for (const SplitLayer& layer : splits_)
      for (const std::int32_t g : layer.groups) {
        const auto& m = schedule_.groups.at(static_cast<std::size_t>(g));
        if (std::find(m.begin(), m.end(), rank_) != m.end()) ++comms;
      }
    return std::max(kNcclBytesPerComm * comms, kNcclMinBytes);
  }

  void allocate(CudaBackend& b) override {
    CPSCOPE_CHECK(static_cast<std::size_t>(b.num_streams()) == staging_.streams(), "nccl: stream count");
    CPSCOPE_CHECK(talks_.size() == staging_.streams(), "nccl: streams of the schedule and of the staging");
    const auto n = static_cast<int>(schedule_.ranks.size());
    // NCCL lets the environment override a communicator's config; blocking communicators would wait for a
    // missing peer inside NCCL, where no timeout reaches (every rank reads the same job environment).
    if (const char* blocking = std::getenv("NCCL_COMM_BLOCKING"); blocking != nullptr && std::strcmp(blocking, "0") != 0)
      throw InputError("NCCL_COMM_BLOCKING",
                       fmt::format("is '{}' on rank {}, which makes NCCL's communicators blocking: a rank that "
                                   "never arrives would then hang this one inside NCCL, past the --timeout; unset it",
                                   blocking, rank_));
    staging_.allocate();
    timeout_ = b.timeout();
    comms_.assign(staging_.streams(), nullptr);
    for (std::size_t i = 0; i < staging_.streams(); ++i) {
      if (!talks_[i]) continue;  // no op of any rank communicates on it (every rank skips it alike)
      ncclUniqueId id{};
      if (rank_ == 0) CPS_NCCL_CALL(rank_, ncclGetUniqueId(&id));
      pg_.broadcast(&id, sizeof id, 0);
      ncclComm_t c = nullptr;
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;
      const ncclResult_t r = ncclCommInitRankConfig(&c, n, id, rank_, &config);
      comms_[i] = c;
      ready(c, r,
            fmt::format("creating the communicator of stream {} (one GPU per rank: NCCL refuses two ranks on one "
                        "device; see --device and CUDA_VISIBLE_DEVICES)",
                        i));
    }
    for (const SplitLayer& layer : splits_) {
      // The rank's group in this layer (at most one: they are disjoint), and its position there.
      std::int32_t group = -1;
      int key = 0;
      for (const std::int32_t g : layer.groups) {
        const auto& members = schedule_.groups.at(static_cast<std::size_t>(g));
        const auto it = std::find(members.begin(), members.end(), rank_);
        if (it == members.end()) continue;
        group = g;
        key = static_cast<int>(it - members.begin());
        break;
      }
      const bool member = group >= 0;
      const std::int32_t stream = layer.stream;
      ncclComm_t parent = comms_.at(static_cast<std::size_t>(stream));
      CPSCOPE_CHECK(parent != nullptr, fmt::format("nccl: group(s) on stream {}, which has no communicator", stream));
      // (A null config: the split inherits the parent's, non-blocking.) Non-blocking, NCCL writes the new
      // handle only when the parent's state leaves ncclInProgress (its init job fills it later; nccl issue
      // #1472): so it goes to an address that outlives this call (a deque never moves its elements) and
      // is read after the parent is ready.
      ncclComm_t& c = split_handles_.emplace_back(nullptr);
      const ncclResult_t r = ncclCommSplit(parent, member ? group : NCCL_SPLIT_NOCOLOR, key, &c, nullptr);
      const std::string what = fmt::format("splitting group(s) {} from the communicator of stream {}",
                                           fmt::join(layer.groups, ", "), stream);
      ready(parent, r, what);
      if (member) group_comms_[{group, stream}] = c;
      if (c != nullptr) ready(c, ncclInProgress, what);
      if (member) {
        // Peers and in-place offsets in a group are positions in it: NCCL ranks a split by key, so the
        // communicator's rank must be the position (checked once, here, rather than trusted in every op).
        int count = 0, position = -1;
        CPS_NCCL_CALL(rank_, ncclCommCount(c, &count));
        CPS_NCCL_CALL(rank_, ncclCommUserRank(c, &position));
        const auto members = schedule_.groups.at(static_cast<std::size_t>(group)).size();
        if (count != static_cast<int>(members) || position != key)
          throw DeviceError(fmt::format("rank {}: {}: the communicator of group {} has {} ranks and gives this rank "
                                        "rank {}, but the group has {} members and this rank is its member {}",
                                        rank_, what, group, count, position, members, key));
      }
    }
  }

  void exchange(CudaBackend& b, const Op& op, std::int32_t stream, const ExchangeArgs& x) override {
    const std::string what = b.describe(op);
    const cudaStream_t s = b.stream(stream);
    Staging& so = staging_.send(stream);
    Staging& si = staging_.recv(stream);
    so.reset();
    si.reset();
    ncclComm_t comm = x.group < 0 ? comms_.at(static_cast<std::size_t>(stream)) : group_comm(x.group, stream, what);
    CPSCOPE_CHECK(comm != nullptr, fmt::format("{}: no communicator on stream {} (aborted)", what, stream));
    // Point-to-point peers are CP ranks (= ranks of the stream communicator); all-to-all peers are
    // positions in the group (= ranks of the split communicator).
    auto peer_of = [&](std::int32_t cp_rank) {
      if (x.group < 0) return cp_rank;
      const auto& m = schedule_.groups.at(static_cast<std::size_t>(x.group));
      const auto it = std::find(m.begin(), m.end(), cp_rank);
      CPSCOPE_CHECK(it != m.end(), fmt::format("{}: rank {} is not in group {}", what, cp_rank, x.group));
      return static_cast<std::int32_t>(it - m.begin());
    };
    struct Msg {
      void* ptr;
      std::int64_t bytes;
      std::int32_t peer;
      kernels::DType dt;
      bool staged;
      const Part* part;
    };
    std::vector<Msg> sends, recvs;
    // Pack everything first: packing kernels go on the stream ahead of the NCCL group.
    for (const Part& p : x.sends) {
      const std::int64_t bytes = op.kind == OpKind::SendRecv ? op.send.bytes : op.bytes_per_peer;
      const kernels::DType dt = message_dtype(b, p.regions, bytes, what);
      sends.push_back({outgoing(b, p.regions, dt, so, s, what), bytes, peer_of(p.peer), dt, false, &p});
    }
    for (const Part& p : x.recvs) {
      const std::int64_t bytes = op.kind == OpKind::SendRecv ? op.recv.bytes : op.bytes_per_peer;
      const kernels::DType dt = message_dtype(b, p.regions, bytes, what);
      bool staged = false;
      void* ptr = incoming(b, p.regions, dt, si, &staged, what);
      recvs.push_back({ptr, bytes, peer_of(p.peer), dt, staged, &p});
    }
    CPS_NCCL_CALL(rank_, ncclGroupStart());
    for (const Msg& m : sends)
      queued(ncclSend(m.ptr, static_cast<std::size_t>(m.bytes), ncclUint8, m.peer, comm, s), "ncclSend", what);
    for (const Msg& m : recvs)
      queued(ncclRecv(m.ptr, static_cast<std::size_t>(m.bytes), ncclUint8, m.peer, comm, s), "ncclRecv", what);
    group_end(comm, b, op, what);
    for (const Msg& m : recvs)
      if (m.staged) unpack(b, m.ptr, m.dt, m.part->regions, false, s, what);
  }

  // All-gather and reduce-scatter run one NCCL collective per plane of a [K, V] ([dK, dV]) slot, grouped:
  // a member's rows of one plane lie end to end in the gathered slot, so NCCL reads and writes them in
  // place where the two planes together would need staging (per_plane in runtime/backend.h).
  void all_gather(CudaBackend& b, const Op& op, std::int32_t stream, const AllGatherArgs& x) override {
    const std::string what = b.describe(op);
    const cudaStream_t s = b.stream(stream);
    Staging& so = staging_.send(stream);
    Staging& si = staging_.recv(stream);
    so.reset();
    si.reset();
    ncclComm_t comm = group_comm(x.group, stream, what);
    struct Call {
      AllGatherArgs args;
      kernels::DType dt;
      std::int64_t count, P;
      const void* from;
      void* to;
      bool staged;
    };
    std::vector<Call> calls;
    for (AllGatherArgs& a : per_plane(x)) {  // packing kernels go on the stream ahead of the NCCL group
      Call c{std::move(a), {}, 0, 0, nullptr, nullptr, false};
      c.dt = b.tensor(c.args.src.tensor).dtype;
      c.count = region_elements(b, {c.args.src});
      c.P = c.count * element_bytes(c.dt);
      c.from = outgoing(b, {c.args.src}, c.dt, so, s, what);
      c.to = adjacent_spans(b, c.args.dst, c.dt, c.P);
      c.staged = c.to == nullptr;
      if (c.staged) c.to = si.take(static_cast<std::int64_t>(c.args.dst.size()) * c.P, what);
      calls.push_back(std::move(c));
    }
    CPS_NCCL_CALL(rank_, ncclGroupStart());
    for (const Call& c : calls)
      queued(ncclAllGather(c.from, c.to, static_cast<std::size_t>(c.count), nccl_type(c.dt), comm, s), "ncclAllGather",
             what);
    group_end(comm, b, op, what);
    for (const Call& c : calls)
      if (c.staged)
        for (std::size_t i = 0; i < c.args.dst.size(); ++i)
          unpack(b, static_cast<char*>(c.to) + static_cast<std::int64_t>(i) * c.P, c.dt, {c.args.dst[i]}, false, s,
                 what);
  }

  void reduce_scatter(CudaBackend& b, const Op& op, std::int32_t stream, const ReduceScatterArgs& x) override {
    const std::string what = b.describe(op);
    const cudaStream_t s = b.stream(stream);
    Staging& so = staging_.send(stream);  // no receive staging: see below
    so.reset();
    ncclComm_t comm = group_comm(x.group, stream, what);
    struct Call {
      ReduceScatterArgs args;
      kernels::DType dt;  // the sum runs in the source type (fp32 for dkv=fp32, else the input dtype)
      std::int64_t count;
      const void* from;
      void* to;
      bool staged;
    };
    std::vector<Call> calls;
    for (ReduceScatterArgs& a : per_plane(x)) {
      Call c{std::move(a), {}, 0, nullptr, nullptr, false};
      c.dt = b.tensor(c.args.src.at(0).tensor).dtype;
      c.count = region_elements(b, {c.args.src[0]});
      const std::int64_t P = c.count * element_bytes(c.dt);
      c.from = adjacent_spans(b, c.args.src, c.dt, P);
      if (c.from == nullptr) {
        void* slice = so.take(static_cast<std::int64_t>(c.args.src.size()) * P, what);
        pack(b, c.args.src, slice, c.dt, s, what);  // member i's segment at i·P: every src region is P bytes
        c.from = slice;
      }
      // Where the sum cannot land in the destination itself (a head slice of the output, or an fp32 sum for an
      // output in the input dtype), NCCL reduces in place, into this rank's segment of what it sends, and the
      // unpack reads it there: no receive staging (1 GiB at 1M tokens for all-gather's fp32 dK/dV).
      c.to = contiguous_span(b, {c.args.dst}, c.dt);
      c.staged = c.to == nullptr;
      if (c.staged) c.to = static_cast<char*>(const_cast<void*>(c.from)) + c.args.position * P;
      calls.push_back(std::move(c));
    }
    CPS_NCCL_CALL(rank_, ncclGroupStart());
    for (const Call& c : calls)
      queued(ncclReduceScatter(c.from, c.to, static_cast<std::size_t>(c.count), nccl_type(c.dt), ncclSum, comm, s),
             "ncclReduceScatter", what);
    group_end(comm, b, op, what);
    for (const Call& c : calls)
      if (c.staged) unpack(b, c.to, c.dt, {c.args.dst}, false, s, what);
  }

  void poll(const std::string& last_op) override {
    auto check = [&](ncclComm_t c) {
      if (c == nullptr) return;
      ncclResult_t state = ncclSuccess;
      CPS_NCCL_CALL(rank_, ncclCommGetAsyncError(c, &state));
      if (state == ncclSuccess || state == ncclInProgress) return;
      const std::string detail = last_message(c);
      abort();
      throw DeviceError(fmt::format("rank {}: NCCL reported {}{} while running the ops issued up to {}", rank_,
                                    ncclGetErrorString(state), detail, last_op));
    };
    for (ncclComm_t c : comms_) check(c);
    for (auto& [key, c] : group_comms_) check(c);
  }

  void abort() override {
    for (auto& [key, c] : group_comms_)
      if (c != nullptr) ncclCommAbort(std::exchange(c, nullptr));
    for (ncclComm_t& c : comms_)
      if (c != nullptr) ncclCommAbort(std::exchange(c, nullptr));
  }

 private:
  // Closes an op's group and waits until NCCL has launched it. NCCL's group job launches the kernels from
  // a thread of its own on a non-blocking communicator, out of reach of the op's external correlation
  // (a per-thread push): the launch window tells the tracer that what it launches meanwhile is the op's.
  void group_end(ncclComm_t comm, const CudaBackend& b, const Op& op, const std::string& what) {
    const instrument::LaunchWindowScope window(b.rank(), op.id);
    ready(comm, ncclGroupEnd(), what);
  }

  // A call on a non-blocking communicator returned `r`: on ncclInProgress, polls the communicator until the
  // call has finished (its kernels enqueued), its peers permitting, for at most the timeout; then aborts
  // every communicator and throws DeviceError naming the rank and `what` if it failed or did not finish.
  // Meanwhile it watches the rank's other communicators: a peer that failed or left is often seen first on
  // another stream's, and waiting out the timeout here would then blame the wrong op.
  void ready(ncclComm_t c, ncclResult_t r, const std::string& what) {
    if (r != ncclSuccess && r != ncclInProgress) fail(c, r, what);
    if (r == ncclSuccess || c == nullptr) return;
    auto other = [&](ncclComm_t o) {
      if (o == nullptr || o == c) return;
      ncclResult_t s = ncclSuccess;
      if (ncclCommGetAsyncError(o, &s) == ncclSuccess && s != ncclSuccess && s != ncclInProgress)
        fail(o, s, what + " (reported by another of this rank's communicators)");
    };
    const ncclResult_t state = settled(c, [&] {
      for (ncclComm_t o : comms_) other(o);
      for (auto& [key, o] : group_comms_) other(o);
    });
    if (state == ncclInProgress) {
      abort();
      throw DeviceError(fmt::format("rank {}: NCCL was still waiting for the other ranks after {} ms while {}: is a "
                                    "rank missing, stopped or running another schedule?",
                                    rank_, timeout_.count(), what));
    }
    if (state != ncclSuccess) fail(c, state, what);
  }
  // A call inside a group (ncclGroupStart is open): queued (ncclSuccess, or ncclInProgress on a
  // non-blocking communicator) or an error. On an error the group is closed first: NCCL only queues
  // work while a group is open, aborts included, and cleans a failed group up in ncclGroupEnd.
  void queued(ncclResult_t r, const char* call, const std::string& what) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    (void)ncclGroupEnd();
    fail(nullptr, r, fmt::format("{} ({})", what, call));
  }
  [[noreturn]] void fail(ncclComm_t c, ncclResult_t r, const std::string& what) {
    const std::string detail = last_message(c);
    abort();
    throw DeviceError(fmt::format("rank {}: NCCL reported {}{} while {}", rank_, ncclGetErrorString(r), detail, what));
  }
  // NCCL's last error message (process-wide, never cleared, so possibly about an earlier call: labelled so),
  // or nothing when it has none.
  static std::string last_message(ncclComm_t c) {
    const char* m = ncclGetLastError(c);
    return m != nullptr && *m != '\0' ? fmt::format(" (NCCL's last message: {})", m) : std::string();
  }
  // The communicator's state once it is no longer ncclInProgress, or ncclInProgress after the timeout.
  // `between` runs after each poll that found it still in progress (ready() watches the other communicators).
  ncclResult_t settled(ncclComm_t c, const std::function<void()>& between = {}) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t q = ncclCommGetAsyncError(c, &state);
      if (q != ncclSuccess) return q;
      if (state != ncclInProgress || std::chrono::steady_clock::now() >= deadline) return state;
      if (between) between();
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  ncclComm_t group_comm(std::int32_t group, std::int32_t stream, const std::string& what) const {
    const auto it = group_comms_.find({group, stream});
    CPSCOPE_CHECK(it != group_comms_.end() && it->second != nullptr,
                  fmt::format("{}: no communicator for group {} on stream {} (aborted, or not a member)", what, group,
                              stream));
    return it->second;
  }

  const Schedule& schedule_;
  ProcessGroup& pg_;
  std::int32_t rank_;
  std::chrono::milliseconds timeout_{300000};  // the backend's (allocate())
  StagingBuffers staging_;  // before the communicators: destroyed after them
  std::vector<SplitLayer> splits_;  // one ncclCommSplit each (split_layers)
  std::vector<bool> talks_;         // per stream: does any rank communicate on it (communicating_streams)
  std::vector<ncclComm_t> comms_;   // per stream; null where nothing communicates
  std::map<std::pair<std::int32_t, std::int32_t>, ncclComm_t> group_comms_;
  std::deque<ncclComm_t> split_handles_;  // where ncclCommSplit writes each new handle (see allocate)
};

}  // namespace

std::unique_ptr<CudaTransport> make_nccl_transport(const Schedule& schedule, ProcessGroup& group) {
  return std::make_unique<NcclTransport>(schedule, group);
}

}  // namespace cpscope::rt
