#include "runtime/instrument/mpi_sync.h"

#include <limits>
#include <numeric>

#include <fmt/format.h>

#include "runtime/instrument/check.h"
#include "runtime/instrument/op_intervals.h"

#if defined(CPSCOPE_HAVE_MPI)
#include <mpi.h>
#endif

namespace cpscope::rt::instrument {

#if defined(CPSCOPE_HAVE_MPI)

namespace {
MPI_Comm& as_comm(void*& p) { return *static_cast<MPI_Comm*>(p); }
}  // namespace

bool mpi_sync_available() { return true; }

MpiSync::MpiSync() {
  int inited = 0;
  CPS_INSTR_MPI_CALL(-1, MPI_Initialized(&inited));
  if (!inited) throw DeviceError("MpiSync: MPI is not initialized (the nccl transport initializes it)");
  comm_ = new MPI_Comm(MPI_COMM_NULL);
  try {
    CPS_INSTR_MPI_CALL(-1, MPI_Comm_dup(MPI_COMM_WORLD, &as_comm(comm_)));
    CPS_INSTR_MPI_CALL(-1, MPI_Comm_set_errhandler(as_comm(comm_), MPI_ERRORS_RETURN));
    CPS_INSTR_MPI_CALL(-1, MPI_Comm_rank(as_comm(comm_), &rank_));
    CPS_INSTR_MPI_CALL(rank_, MPI_Comm_size(as_comm(comm_), &size_));
  } catch (...) {
    if (as_comm(comm_) != MPI_COMM_NULL) MPI_Comm_free(&as_comm(comm_));
    delete static_cast<MPI_Comm*>(comm_);
    throw;
  }
}

MpiSync::~MpiSync() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && as_comm(comm_) != MPI_COMM_NULL) MPI_Comm_free(&as_comm(comm_));
  delete static_cast<MPI_Comm*>(comm_);
}

std::int64_t MpiSync::clock_offset_ns(const std::function<std::int64_t()>& now, std::int32_t rounds) {
  if (rounds < 1) throw DeviceError(fmt::format("rank {}: a clock offset needs at least one round trip, not {}", rank_, rounds));
  // Every rank arrives from its own traced iteration: start the exchanges together.
  CPS_INSTR_MPI_CALL(rank_, MPI_Barrier(as_comm(comm_)));
  // Rank 0 answers each other rank in turn, `rounds` round trips each (a few microseconds apiece within a
  // node, tens across the network: well under a second for a thousand ranks); a rank waits for its turn.
  constexpr int kTag = 0x6370;  // its own communicator, so any tag; one that reads "cp"
  std::int64_t t = 0;
  if (rank_ == 0) {
    for (int peer = 1; peer < size_; ++peer)
      for (std::int32_t i = 0; i < rounds; ++i) {
        CPS_INSTR_MPI_CALL(rank_, MPI_Recv(&t, 1, MPI_INT64_T, peer, kTag, as_comm(comm_), MPI_STATUS_IGNORE));
        t = now();
        CPS_INSTR_MPI_CALL(rank_, MPI_Send(&t, 1, MPI_INT64_T, peer, kTag, as_comm(comm_)));
      }
    return 0;
  }
  std::vector<ClockPing> pings(static_cast<std::size_t>(rounds));
  for (ClockPing& p : pings) {
    p.sent = now();
    CPS_INSTR_MPI_CALL(rank_, MPI_Send(&p.sent, 1, MPI_INT64_T, 0, kTag, as_comm(comm_)));
    CPS_INSTR_MPI_CALL(rank_, MPI_Recv(&p.reference, 1, MPI_INT64_T, 0, kTag, as_comm(comm_), MPI_STATUS_IGNORE));
    p.received = now();
  }
  return clock_offset(pings);
}

std::vector<OpInterval> MpiSync::gather_to_root(const std::vector<OpInterval>& mine) {
  const std::vector<std::int64_t> flat = flatten(mine);
  // MPI counts are int: a rank's intervals would need ~500M ops to overflow, far beyond any schedule.
  if (flat.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw DeviceError(fmt::format("rank {}: {} interval values exceed an MPI count", rank_, flat.size()));
  const int n = static_cast<int>(flat.size());
  std::vector<int> counts(rank_ == 0 ? static_cast<std::size_t>(size_) : 0);
  CPS_INSTR_MPI_CALL(rank_, MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, as_comm(comm_)));
  std::vector<int> displs;
  std::vector<std::int64_t> all;
  if (rank_ == 0) {
    displs.resize(counts.size());
    std::int64_t total = 0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
      displs[i] = static_cast<int>(total);
      total += counts[i];
      if (total > std::numeric_limits<int>::max())
        throw DeviceError(fmt::format("rank 0: {} gathered interval values exceed an MPI displacement", total));
    }
    all.resize(static_cast<std::size_t>(total));
  }
  CPS_INSTR_MPI_CALL(rank_, MPI_Gatherv(flat.data(), n, MPI_INT64_T, all.data(), counts.data(), displs.data(),
                                        MPI_INT64_T, 0, as_comm(comm_)));
  return rank_ == 0 ? unflatten(all) : std::vector<OpInterval>{};
}

MpiSync::Gathered MpiSync::align_and_gather(const std::function<std::int64_t()>& now, std::vector<OpInterval> mine,
                                            std::int64_t dropped, std::int32_t rounds) {
  Gathered g;
  std::int64_t offset = clock_offset_ns(now, rounds);
  shift_clock(mine, offset);
  if (rank_ == 0) g.clock_offset_ns.resize(static_cast<std::size_t>(size_));
  CPS_INSTR_MPI_CALL(rank_, MPI_Gather(&offset, 1, MPI_INT64_T, g.clock_offset_ns.data(), 1, MPI_INT64_T, 0,
                                       as_comm(comm_)));
  CPS_INSTR_MPI_CALL(rank_, MPI_Reduce(&dropped, &g.dropped, 1, MPI_INT64_T, MPI_MAX, 0, as_comm(comm_)));
  g.ops = gather_to_root(mine);
  return g;
}

#else  // no MPI

namespace {
[[noreturn]] void no_mpi() {
  throw DeviceError("this build has no MPI (install an MPI, e.g. libopenmpi-dev, and reconfigure): the nccl "
                    "transport's clock alignment and interval gather need it");
}
}  // namespace

bool mpi_sync_available() { return false; }
MpiSync::MpiSync() { no_mpi(); }
MpiSync::~MpiSync() = default;
std::int64_t MpiSync::clock_offset_ns(const std::function<std::int64_t()>&, std::int32_t) { no_mpi(); }
std::vector<OpInterval> MpiSync::gather_to_root(const std::vector<OpInterval>&) { no_mpi(); }
MpiSync::Gathered MpiSync::align_and_gather(const std::function<std::int64_t()>&, std::vector<OpInterval>,
                                            std::int64_t, std::int32_t) {
  no_mpi();
}

#endif

}  // namespace cpscope::rt::instrument
