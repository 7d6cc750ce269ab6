// How the CUDA backend moves data between ranks: the interface CudaBackend::exchange / all_gather /
// reduce_scatter forward to, and the three implementations (loopback, replay, nccl; see cuda_run.h).
// A transport call runs on the rank's issuing host thread and enqueues its work on the op's stream.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "sim/schedule.h"

namespace cpscope::rt {

class CudaBackend;

class CudaTransport {
 public:
  virtual ~CudaTransport() = default;
  // Device bytes allocate() will take for this rank (staging buffers); known before anything is allocated.
  virtual std::int64_t staging_bytes() const = 0;
  // Device memory to keep free for the communication library's own buffers (NCCL's), which it allocates
  // as it goes: an estimate, also known before anything is allocated. None for copies within a device.
  virtual std::int64_t library_bytes() const { return 0; }
  // Called once by CudaBackend::allocate, after its streams exist, on the rank's device.
  virtual void allocate(CudaBackend& b) = 0;
  virtual void exchange(CudaBackend& b, const Op& op, std::int32_t stream, const ExchangeArgs& x) = 0;
  virtual void all_gather(CudaBackend& b, const Op& op, std::int32_t stream, const AllGatherArgs& x) = 0;
  virtual void reduce_scatter(CudaBackend& b, const Op& op, std::int32_t stream, const ReduceScatterArgs& x) = 0;
  // Polled while synchronize() waits: throws DeviceError on an asynchronous communication error
  // (`last_op` names the op issued last).
  virtual void poll(const std::string& last_op) {}
  // synchronize() timed out: abort what can be aborted (NCCL communicators) before it throws.
  virtual void abort() {}
};

// --- loopback: all ranks in this process on one device ---
class LoopbackWorld;
struct LoopbackWorldDeleter {
  void operator()(LoopbackWorld* w) const;  // LoopbackWorld is complete only in transport_loopback.cc
};
using LoopbackWorldPtr = std::unique_ptr<LoopbackWorld, LoopbackWorldDeleter>;
// Shared by the ranks' transports; `timeout` bounds every host-side wait for a peer.
LoopbackWorldPtr make_loopback_world(std::int32_t ranks, std::chrono::milliseconds timeout);
std::unique_ptr<CudaTransport> make_loopback_transport(LoopbackWorld& world, std::int32_t rank);
// Records the first failure of any rank and wakes every waiter (they throw naming it).
void loopback_abort(LoopbackWorld& world, const std::string& why);

// --- replay: one rank of the schedule, NCCL sending every message to itself ---
std::unique_ptr<CudaTransport> make_replay_transport(const Schedule& schedule, std::int32_t rank);

// --- nccl: one process per rank, bootstrapped over MPI ---
// The process group the nccl transport and the run use for their host-side collectives (MPI; threads of one
// process in the emulation's test).
class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual std::int32_t rank() const = 0;
  virtual std::int32_t size() const = 0;
  virtual std::int32_t local_rank() const = 0;  // rank among the processes of this node
  virtual void barrier() = 0;
  // Root's `bytes` at `data` to every rank.
  virtual void broadcast(void* data, std::int64_t bytes, std::int32_t root) = 0;
  // Element-wise maximum over the ranks.
  virtual std::vector<double> max(const std::vector<double>& v) = 0;
  // Throws InputError naming the ranks whose `hash` differs from rank 0's (`what` says what was hashed).
  virtual void check_same(std::uint64_t hash, const std::string& what) = 0;
  // MPI's group (make_mpi_group): a traced run aligns clocks and gathers timelines over MPI itself.
  virtual bool is_mpi() const { return false; }
};
// Where a job's processes run, from each one's node-local rank (the processes of a node numbered in rank order,
// as MPI_COMM_TYPE_SHARED numbers them).
struct NodeLayout {
  std::vector<std::int32_t> local_rank;  // per process, in rank order
  std::int32_t nodes() const;            // processes with local rank 0
  std::int32_t ranks_per_node() const;   // the most on one node
  // Empty when the processes fill their nodes in rank order, ranks_per_node() to each (process r on node
  // r / ranks_per_node(): mpirun's and srun's default placement); else how they sit instead.
  std::string irregular() const;
};
// Collective over `group`: every process's node-local rank.
NodeLayout node_layout(ProcessGroup& group);

// True when this build has MPI (the nccl transport).
bool have_mpi();
// Initializes MPI once per process (finalized at exit). Throws DeviceError in a build without MPI.
std::unique_ptr<ProcessGroup> make_mpi_group();
// Communicators are created by allocate() (collective over the ranks); the rank is group.rank(). Built
// wherever NCCL is (the SIMT emulation's stand-in included); only make_mpi_group() needs MPI.
std::unique_ptr<CudaTransport> make_nccl_transport(const Schedule& schedule, ProcessGroup& group);
// Ends the whole MPI job with `code` (MPI_Abort) when this process runs MPI with other ranks: after a
// failed run, finalizing would wait for ranks stuck in a barrier or collective that wait for this one.
// Does nothing without MPI, before MPI_Init or after MPI_Finalize, or for a job of one rank.
void end_mpi_job(int code);

}  // namespace cpscope::rt
