// The host transport: N ranks as threads of one process exchanging messages through in-process
// queues. Messages from rank a to rank b on channel c are delivered in send order (NCCL's matching of
// the k-th send with the k-th receive). Every blocking wait has a deadline and wakes when any rank
// aborts, so a broken schedule fails with a message instead of hanging.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace cpscope::rt {

// Thrown by a wait that ran past its deadline or was woken by another rank's failure.
class TransportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class HostWorld {
 public:
  HostWorld(std::int32_t ranks, std::chrono::milliseconds timeout);

  std::int32_t ranks() const { return ranks_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  void send(std::int32_t src, std::int32_t dst, std::int32_t channel, std::vector<double> message);
  // Blocks until the next message from src to dst on channel arrives; `what` names the waiting op in
  // the error a timeout raises.
  std::vector<double> recv(std::int32_t src, std::int32_t dst, std::int32_t channel, const std::string& what);

  // Records the first failure and wakes every waiter in the world (they throw TransportError).
  void abort(const std::string& why);
  bool aborted() const { return aborted_.load(std::memory_order_acquire); }
  std::string first_error() const;

  // Blocks on `cv` until pred() holds, the deadline passes or the world aborts (throws on the last two).
  template <class Pred>
  void wait(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Pred pred, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (!pred()) {
      if (aborted()) throw TransportError(what + ": aborted (" + first_error() + ")");
      if (std::chrono::steady_clock::now() >= deadline)
        throw TransportError(what + ": timed out after " + std::to_string(timeout_.count()) + " ms");
      cv.wait_for(lock, std::chrono::milliseconds(5));
    }
  }

 private:
  std::int32_t ranks_;
  std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::tuple<std::int32_t, std::int32_t, std::int32_t>, std::deque<std::vector<double>>> queues_;
  std::atomic<bool> aborted_{false};
  mutable std::mutex err_mu_;  // first_error_ only (a waiter holding mu_ may read it)
  std::string first_error_;
};

}  // namespace cpscope::rt
