// The loopback transport: N virtual ranks in one process on one GPU, each issuing its program from its
// own host thread. Transfers are pulls, NCCL-like in their ordering:
//   sender   records a "ready" event on its stream at the op and posts a ticket (its source regions and
//            the event) to the mailbox (src, dst, channel);
//   receiver (its issuing thread) takes the k-th ticket of that mailbox — the k-th send matches the k-th
//            receive, as in NCCL — makes its stream wait on "ready", copies the sender's regions into its
//            own with copy_block (converting to the receiving tensors' type), records "done", publishes it;
//   sender   before its stream's next use (CudaBackend::defer), waits on the host for "done" to be
//            published and makes its stream wait on it: the send completes only when the data is taken,
//            so the sender cannot overwrite the slot early.
// Within one op all sends are posted before any receive is taken, so matched schedules cannot deadlock.
// Every host-side wait has the run's timeout and wakes up when another rank fails.
#include <cuda_runtime_api.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include <fmt/format.h>

#include "runtime/cuda/check.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/transport.h"
#include "sim/error.h"

namespace cpscope::rt {
namespace {

// Collectives match on their own keys, apart from the IR's point-to-point channels (as HostBackend).
constexpr std::int32_t kGatherChannel = 1 << 20;
constexpr std::int32_t kReduceChannel = 2 << 20;

}  // namespace

class LoopbackWorld {
 public:
  struct Ticket {
    LoopbackWorld* world = nullptr;
    std::int32_t src = 0;
    std::vector<DeviceRegion> regions;  // the sender's, in message order
    cudaEvent_t ready = nullptr;        // recorded by the sender at the op
    cudaEvent_t done = nullptr;         // recorded by the receiver after its copies; guarded by world->mu_
    bool taken = false;                 // `done` published; guarded by world->mu_
    ~Ticket() {
      if (ready) world->release(ready);
      if (done) world->release(done);
    }
  };
  using Key = std::tuple<std::int32_t, std::int32_t, std::int32_t>;  // src, dst, channel

  LoopbackWorld(std::int32_t ranks, std::chrono::milliseconds timeout) : ranks_(ranks), timeout_(timeout) {}
  ~LoopbackWorld() {
    mailboxes_.clear();
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
  }

  std::int32_t ranks() const { return ranks_; }

  // Events are pooled: a ticket's events go back when both sides have enqueued their waits on them
  // (cudaStreamWaitEvent captures the record at call time, so re-recording later cannot affect it).
  cudaEvent_t acquire(std::int32_t rank) {
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      if (!pool_.empty()) {
        cudaEvent_t e = pool_.back();
        pool_.pop_back();
        return e;
      }
    }
    cudaEvent_t e = nullptr;
    CPS_CUDA_CALL(rank, cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void release(cudaEvent_t e) {
    std::lock_guard<std::mutex> lock(pool_mu_);
    pool_.push_back(e);
  }

  void post(const Key& key, std::shared_ptr<Ticket> t) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      mailboxes_[key].push_back(std::move(t));
    }
    cv_.notify_all();
  }

  std::shared_ptr<Ticket> take(const Key& key, const std::string& what) {
    std::unique_lock<std::mutex> lock(mu_);
    wait(lock, [&] { return !mailboxes_[key].empty(); },
         fmt::format("{}: no message from rank {} on channel {}", what, std::get<0>(key), std::get<2>(key)));
    auto& q = mailboxes_[key];
    std::shared_ptr<Ticket> t = std::move(q.front());
    q.pop_front();
    return t;
  }

  void publish_done(Ticket& t, cudaEvent_t done) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      t.done = done;
      t.taken = true;
    }
    cv_.notify_all();
  }

  // A send waits twice the timeout: when a peer never receives, that peer is stuck in a wait of its own,
  // and its error (the cause) is the one to report first.
  void wait_taken(Ticket& t, std::int32_t dst, const std::string& what) {
    std::unique_lock<std::mutex> lock(mu_);
    wait(lock, [&] { return t.taken; }, fmt::format("{}: rank {} did not receive the message", what, dst), 2);
  }

  void abort(const std::string& why) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!aborted_) first_error_ = why;
      aborted_ = true;
    }
    cv_.notify_all();
  }

 private:
  // Waits for pred() under `lock`. A timeout aborts the world with a message that also lists every other
  // wait still pending, oldest first: when one unmatched receive stalls several ranks, their timeouts fall
  // close together and any of them may expire first, but the stalled op is among the pending waits.
  template <class Pred>
  void wait(std::unique_lock<std::mutex>& lock, Pred pred, const std::string& what, int timeouts = 1) {
    if (pred()) return;
    const auto limit = timeout_ * timeouts;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    const std::uint64_t id = next_wait_++;
    pending_[id] = what;
    struct Done {
      std::map<std::uint64_t, std::string>& pending;
      std::uint64_t id;
      ~Done() { pending.erase(id); }  // `lock` is held again on every way out
    } done{pending_, id};
    while (!pred()) {
      if (aborted_) throw DeviceError(what + ": aborted (" + first_error_ + ")");
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && !pred()) {
        if (aborted_) throw DeviceError(what + ": aborted (" + first_error_ + ")");
        std::string error = fmt::format("{}: timed out after {} ms", what, limit.count());
        std::string others;
        for (const auto& [other, w] : pending_)
          if (other != id) others += (others.empty() ? "" : "; ") + w;
        if (!others.empty()) error += "; still waiting then: " + others;
        first_error_ = error;  // recorded under the lock, before any other waiter can time out
        aborted_ = true;
        cv_.notify_all();
        throw DeviceError(error);
      }
    }
  }

  std::int32_t ranks_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, std::deque<std::shared_ptr<Ticket>>> mailboxes_;
  bool aborted_ = false;
  std::string first_error_;
  std::map<std::uint64_t, std::string> pending_;  // waits in progress, by start order: what each waits for
  std::uint64_t next_wait_ = 0;
  std::mutex pool_mu_;
  std::vector<cudaEvent_t> pool_;
};

void LoopbackWorldDeleter::operator()(LoopbackWorld* w) const { delete w; }

LoopbackWorldPtr make_loopback_world(std::int32_t ranks, std::chrono::milliseconds timeout) {
  return LoopbackWorldPtr(new LoopbackWorld(ranks, timeout));
}

void loopback_abort(LoopbackWorld& world, const std::string& why) { world.abort(why); }

namespace {

class LoopbackTransport final : public CudaTransport {
 public:
  LoopbackTransport(LoopbackWorld& world, std::int32_t rank) : world_(world), rank_(rank) {}

  std::int64_t staging_bytes() const override { return 0; }  // copies go straight between the ranks' tensors
  void allocate(CudaBackend&) override {}

  void exchange(CudaBackend& b, const Op& op, std::int32_t stream, const ExchangeArgs& x) override {
    const std::string what = b.describe(op);
    const cudaStream_t s = b.stream(stream);
    std::vector<std::pair<std::shared_ptr<LoopbackWorld::Ticket>, std::int32_t>> sent;
    for (const Part& p : x.sends) sent.emplace_back(post(b, s, p.peer, x.channel, p.regions), p.peer);
    for (const Part& p : x.recvs) receive(b, s, p.peer, x.channel, p.regions, false, what);
    for (auto& [t, peer] : sent) complete_later(b, stream, t, peer, what);
  }

  void all_gather(CudaBackend& b, const Op& op, std::int32_t stream, const AllGatherArgs& x) override {
    const std::string what = b.describe(op);
    const cudaStream_t s = b.stream(stream);
    const std::int32_t ch = kGatherChannel + x.group;
    CPSCOPE_CHECK(x.dst.size() == x.members.size(), what + ": one destination per member");
    std::vector<std::pair<std::shared_ptr<LoopbackWorld::Ticket>, std::int32_t>> sent;
    for (std::int32_t m : x.members)
      if (m != rank_) sent.emplace_back(post(b, s, m, ch, {x.src}), m);
    for (std::size_t i = 0; i < x.members.size(); ++i) {
      if (x.members[i] == rank_)
        b.copy_region(b.region(x.src), b.region(x.dst[i]), false, nullptr, s, what);
      else
        receive(b, s, x.members[i], ch, {x.dst[i]}, false, what);
    }
    for (auto& [t, peer] : sent) complete_later(b, stream, t, peer, what);
  }

  void reduce_scatter(CudaBackend& b, const Op& op, std::int32_t stream, const ReduceScatterArgs& x) override {
    const std::string what = b.describe(op);
    const cudaStream_t s = b.stream(stream);
    const std::int32_t ch = kReduceChannel + x.group;
    CPSCOPE_CHECK(x.src.size() == x.members.size(), what + ": one source per member");
    std::vector<std::pair<std::shared_ptr<LoopbackWorld::Ticket>, std::int32_t>> sent;
    for (std::size_t i = 0; i < x.members.size(); ++i)
      if (x.members[i] != rank_) sent.emplace_back(post(b, s, x.members[i], ch, {x.src[i]}), x.members[i]);
    // Sum in member order, the first overwriting (HostBackend's order, so both round alike).
    for (std::size_t i = 0; i < x.members.size(); ++i) {
      const bool add = i > 0;
      if (x.members[i] == rank_)
        b.copy_region(b.region(x.src[static_cast<std::size_t>(x.position)]), b.region(x.dst), add, nullptr, s, what);
      else
        receive(b, s, x.members[i], ch, {x.dst}, add, what);
    }
    for (auto& [t, peer] : sent) complete_later(b, stream, t, peer, what);
  }

 private:
  std::shared_ptr<LoopbackWorld::Ticket> post(CudaBackend& b, cudaStream_t s, std::int32_t peer, std::int32_t channel,
                                              const std::vector<Region>& regions) {
    auto t = std::make_shared<LoopbackWorld::Ticket>();
    t->world = &world_;
    t->src = rank_;
    for (const Region& r : regions) t->regions.push_back(b.region(r));
    t->ready = world_.acquire(rank_);
    CPS_CUDA_CALL(rank_, cudaEventRecord(t->ready, s));
    world_.post({rank_, peer, channel}, t);
    return t;
  }

  void receive(CudaBackend& b, cudaStream_t s, std::int32_t peer, std::int32_t channel,
               const std::vector<Region>& regions, bool add, const std::string& what) {
    std::shared_ptr<LoopbackWorld::Ticket> t = world_.take({peer, rank_, channel}, what);
    // Copies go region by region, so the sender's and the receiver's regions must pair up in shape (they
    // do for every IR operand; a mismatch is an executor bug, reported as such by copy_region).
    CPSCOPE_CHECK(t->regions.size() == regions.size(),
                  fmt::format("{}: rank {} sent {} regions, this receive has {}", what, peer, t->regions.size(),
                              regions.size()));
    CPS_CUDA_CALL(rank_, cudaStreamWaitEvent(s, t->ready, 0));
    for (std::size_t i = 0; i < regions.size(); ++i)
      b.copy_region(t->regions[i], b.region(regions[i]), add, nullptr, s, what);
    cudaEvent_t done = world_.acquire(rank_);
    CPS_CUDA_CALL(rank_, cudaEventRecord(done, s));
    world_.publish_done(*t, done);
  }

  void complete_later(CudaBackend& b, std::int32_t stream, std::shared_ptr<LoopbackWorld::Ticket> t, std::int32_t peer,
                      const std::string& what) {
    const cudaStream_t s = b.stream(stream);
    b.defer(stream, [this, t = std::move(t), peer, s, what] {
      world_.wait_taken(*t, peer, what);
      CPS_CUDA_CALL(rank_, cudaStreamWaitEvent(s, t->done, 0));
    });
  }

  LoopbackWorld& world_;
  std::int32_t rank_;
};

}  // namespace

std::unique_ptr<CudaTransport> make_loopback_transport(LoopbackWorld& world, std::int32_t rank) {
  return std::make_unique<LoopbackTransport>(world, rank);
}

}  // namespace cpscope::rt
