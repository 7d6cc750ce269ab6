// The cross-rank steps of a traced nccl run, over MPI: clock offsets measured after a barrier by round
// trips to rank 0, and the
// gather of every rank's op intervals at rank 0 (MPI_Gatherv of the flattened int64 arrays).
// It uses its own duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN (the nccl transport's
// ProcessGroup duplicates the same world, so ranks agree; it has no gather of its own). MPI must be
// initialized (make_mpi_group() does it). In a build without MPI every call throws DeviceError.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/measured.h"

namespace cpscope::rt::instrument {

class MpiSync {
 public:
  // Collective over MPI_COMM_WORLD.
  MpiSync();
  ~MpiSync();
  MpiSync(const MpiSync&) = delete;
  MpiSync& operator=(const MpiSync&) = delete;

  std::int32_t rank() const { return rank_; }
  std::int32_t size() const { return size_; }

  // This rank's clock minus rank 0's (0 on rank 0): after a barrier, `rounds` round trips between this rank
  // and rank 0, each reading `now` on both sides, and clock_offset of them (the shortest round trip's
  // midpoint; error at most half of it). Collective; `rounds` (>= 1) must be the same on every rank.
  std::int64_t clock_offset_ns(const std::function<std::int64_t()>& now, std::int32_t rounds);
  // Every rank's intervals at rank 0 (concatenated in rank order); an empty vector on the other ranks.
  // Collective.
  std::vector<OpInterval> gather_to_root(const std::vector<OpInterval>& mine);

  // A traced run's cross-rank step: measures this rank's clock offset (`rounds` round trips to rank 0),
  // moves `mine` (stamped by that clock) onto rank 0's clock and gathers every rank's intervals at rank 0.
  // Collective.
  struct Gathered {
    std::vector<OpInterval> ops;                // rank 0: every rank's intervals on its clock, in rank order
    std::vector<std::int64_t> clock_offset_ns;  // rank 0: each rank's clock minus rank 0's
    std::int64_t dropped = 0;                   // rank 0: the most records any rank's tracer dropped
  };
  Gathered align_and_gather(const std::function<std::int64_t()>& now, std::vector<OpInterval> mine,
                            std::int64_t dropped, std::int32_t rounds = 7);

 private:
  std::int32_t rank_ = 0, size_ = 1;
  void* comm_ = nullptr;  // MPI_Comm (kept opaque so this header needs no mpi.h)
};

bool mpi_sync_available();  // false in a build without MPI

}  // namespace cpscope::rt::instrument
