#include "runtime/host/host_world.h"

#include <fmt/format.h>

namespace cpscope::rt {

HostWorld::HostWorld(std::int32_t ranks, std::chrono::milliseconds timeout) : ranks_(ranks), timeout_(timeout) {}

void HostWorld::send(std::int32_t src, std::int32_t dst, std::int32_t channel, std::vector<double> message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queues_[{src, dst, channel}].push_back(std::move(message));
  }
  cv_.notify_all();
}

std::vector<double> HostWorld::recv(std::int32_t src, std::int32_t dst, std::int32_t channel,
                                    const std::string& what) {
  std::unique_lock<std::mutex> lock(mu_);
  auto& q = queues_[{src, dst, channel}];
  wait(lock, cv_, [&] { return !q.empty(); },
       fmt::format("{}: receive from rank {} on channel {}", what, src, channel));
  std::vector<double> m = std::move(q.front());
  q.pop_front();
  return m;
}

void HostWorld::abort(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(err_mu_);
    if (!aborted_.load()) first_error_ = why;
    aborted_.store(true, std::memory_order_release);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);  // a waiter between its check and its wait sees the flag
  }
  cv_.notify_all();
}

std::string HostWorld::first_error() const {
  std::lock_guard<std::mutex> lock(err_mu_);
  return first_error_;
}

}  // namespace cpscope::rt
