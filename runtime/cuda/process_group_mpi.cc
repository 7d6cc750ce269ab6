// The MPI process group of the nccl transport (one process per rank, mpirun/srun), MPI's process-wide
// session, and the job abort after a failed rank. A build without MPI throws a clear error when asked for it.
#ifdef CPSCOPE_HAVE_MPI
#include <mpi.h>
#endif

#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/cuda/check.h"
#include "runtime/cuda/transport.h"
#include "sim/error.h"

namespace cpscope::rt {

#ifndef CPSCOPE_HAVE_MPI

bool have_mpi() { return false; }

namespace {
[[noreturn]] void no_mpi() {
  throw DeviceError(
      "the nccl transport needs MPI to start its ranks, and this build has none: install an MPI "
      "(Debian: apt-get install libopenmpi-dev openmpi-bin), reconfigure and rebuild; loopback and replay "
      "work without it");
}
}  // namespace

std::unique_ptr<ProcessGroup> make_mpi_group() { no_mpi(); }
void end_mpi_job(int) {}

#else

bool have_mpi() { return true; }

namespace {

// MPI may be initialized only once per process and must be finalized after the last MPI call of any run,
// so this one process-wide object (MPI itself is process-wide) initializes it on first use and finalizes
// it at exit, unless the application initialized MPI itself.
struct MpiSession {
  bool ours = false;
  MpiSession() {
    int inited = 0, provided = 0;
    CPS_MPI_CALL(-1, MPI_Initialized(&inited));
    if (!inited) {
      // Only the main thread calls MPI (loopback's threads never use the nccl transport), but CUDA, NCCL
      // and CUPTI run threads of their own: FUNNELED is the level that allows that.
      CPS_MPI_CALL(-1, MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
      ours = true;
    } else {
      CPS_MPI_CALL(-1, MPI_Query_thread(&provided));
    }
    if (provided < MPI_THREAD_FUNNELED) {
      int rank = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      if (rank == 0)
        fmt::print(stderr,
                   "cp-profile: warning: this MPI provides thread level {} (MPI_THREAD_SINGLE), below "
                   "MPI_THREAD_FUNNELED: the process has CUDA's and NCCL's threads besides the one that calls MPI. "
                   "Most MPIs work anyway; if ranks hang or crash at start-up, use an MPI built with thread "
                   "support.\n",
                   provided);
    }
  }
  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (ours && !finalized) MPI_Finalize();
  }
};

void mpi_session() { static MpiSession session; }

}  // namespace

void end_mpi_job(int code) {
  int inited = 0, finalized = 0, size = 1;
  if (MPI_Initialized(&inited) != MPI_SUCCESS || !inited) return;
  if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized) return;
  if (MPI_Comm_size(MPI_COMM_WORLD, &size) != MPI_SUCCESS || size <= 1) return;
  MPI_Abort(MPI_COMM_WORLD, code);
}

namespace {

class MpiGroup final : public ProcessGroup {
 public:
  MpiGroup() {
    mpi_session();
    // A private communicator whose errors return codes (MPI_COMM_WORLD's default handler aborts), so the
    // checks can name the rank and the call.
    CPS_MPI_CALL(-1, MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    CPS_MPI_CALL(-1, MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    CPS_MPI_CALL(-1, MPI_Comm_rank(comm_, &rank_));
    CPS_MPI_CALL(rank_, MPI_Comm_size(comm_, &size_));
    MPI_Comm local = MPI_COMM_NULL;
    CPS_MPI_CALL(rank_, MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
    CPS_MPI_CALL(rank_, MPI_Comm_rank(local, &local_rank_));
    CPS_MPI_CALL(rank_, MPI_Comm_free(&local));
  }
  ~MpiGroup() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  std::int32_t rank() const override { return rank_; }
  std::int32_t size() const override { return size_; }
  std::int32_t local_rank() const override { return local_rank_; }
  void barrier() override { CPS_MPI_CALL(rank_, MPI_Barrier(comm_)); }
  void broadcast(void* data, std::int64_t bytes, std::int32_t root) override {
    CPS_MPI_CALL(rank_, MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_));
  }
  std::vector<double> max(const std::vector<double>& v) override {
    std::vector<double> out(v.size());
    CPS_MPI_CALL(rank_, MPI_Allreduce(v.data(), out.data(), static_cast<int>(v.size()), MPI_DOUBLE, MPI_MAX, comm_));
    return out;
  }
  void check_same(std::uint64_t hash, const std::string& what) override {
    std::vector<std::uint64_t> all(static_cast<std::size_t>(size_));
    CPS_MPI_CALL(rank_, MPI_Allgather(&hash, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, comm_));
    std::vector<std::int32_t> differ;
    for (std::int32_t r = 0; r < size_; ++r)
      if (all[static_cast<std::size_t>(r)] != all[0]) differ.push_back(r);
    if (!differ.empty())
      throw InputError("config", fmt::format("{} differs between the ranks: ranks {} do not match rank 0", what,
                                             fmt::join(differ, ", ")));
  }
  bool is_mpi() const override { return true; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

}  // namespace

std::unique_ptr<ProcessGroup> make_mpi_group() { return std::make_unique<MpiGroup>(); }

#endif  // CPSCOPE_HAVE_MPI

}  // namespace cpscope::rt
