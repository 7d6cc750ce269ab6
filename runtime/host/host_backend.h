// The host backend: one rank's tensors in double precision and one worker thread per stream, so
// streams really run concurrently and the schedule's record/wait events are what orders them (a
// missing wait shows up as wrong data, not as a silently serialised run). Transfers go through a
// HostWorld shared by the ranks. Each op's host-clock interval is recorded for the measured Timeline.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/backend.h"
#include "runtime/host/host_world.h"

namespace cpscope::rt {

// One executed op on one stream, host steady-clock nanoseconds.
struct HostInterval {
  std::int32_t op = -1;
  std::int32_t stream = 0;
  std::int64_t start_ns = 0, end_ns = 0;
};

class HostBackend final : public Backend {
 public:
  HostBackend(HostWorld& world, std::int32_t rank, std::int64_t batch);
  ~HostBackend() override;

  void allocate(const RankLayout& layout, std::int32_t num_streams, std::int32_t num_events) override;
  void upload(TensorId t, const std::vector<double>& data) override;
  std::vector<double> download(TensorId t) override;

  void wait_event(const Op& op, std::int32_t stream, std::int32_t event) override;
  void record_event(const Op& op, std::int32_t stream, std::int32_t event) override;
  void fill(const Op& op, std::int32_t stream, const Region& r, double value) override;
  void copy(const Op& op, std::int32_t stream, const Region& src, const Region& dst, bool add,
            const std::vector<std::int64_t>& row_map) override;
  void attend_fwd(const Op& op, std::int32_t stream, const AttendArgs& a, bool merge) override;
  void attend_bwd(const Op& op, std::int32_t stream, const AttendArgs& a) override;
  void exchange(const Op& op, std::int32_t stream, const ExchangeArgs& x) override;
  void all_gather(const Op& op, std::int32_t stream, const AllGatherArgs& x) override;
  void reduce_scatter(const Op& op, std::int32_t stream, const ReduceScatterArgs& x) override;
  void synchronize() override;

  // Intervals of the ops run since the last take (after synchronize()).
  std::vector<HostInterval> take_intervals();

 private:
  struct Task {
    std::int32_t op = -1;
    bool timed = false;  // the op itself (not a fill or an event)
    std::string what;    // "rank r op i (fwd/step3/attend)" for errors
    std::function<void()> run;
  };
  struct Stream {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Task> tasks;
    bool busy = false;
    bool stop = false;
    std::thread thread;
    std::vector<HostInterval> intervals;
  };

  void enqueue(const Op& op, std::int32_t stream, bool timed, std::function<void()> run);
  void worker(std::int32_t stream);
  std::string describe(const Op& op) const;
  std::vector<double>& storage(TensorId t);
  std::vector<double> pack(const std::vector<Region>& regions);
  void unpack(const std::vector<Region>& regions, const std::vector<double>& message, bool add,
              const std::string& what);
  std::int64_t count(const Region& r) const;
  double* plane(TensorId t, std::int32_t p);

  HostWorld& world_;
  std::int32_t rank_;
  std::int64_t batch_;
  const RankLayout* layout_ = nullptr;
  std::array<std::vector<double>, kNumTensors> tensors_;
  std::vector<std::unique_ptr<Stream>> streams_;
  // Events: CUDA semantics, a wait waits for the most recent record enqueued before it.
  std::mutex ev_mu_;
  std::condition_variable ev_cv_;
  std::vector<std::int64_t> ev_enqueued_, ev_done_;
};

}  // namespace cpscope::rt
