#include "runtime/host_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <random>
#include <thread>

#include "runtime/host/attention.h"
#include "runtime/host/host_world.h"
#include "sim/schedule.h"

namespace cpscope::rt {
namespace {

using Clock = std::chrono::steady_clock;

std::int64_t elapsed_ns(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
}

template <class F>
std::int64_t median_ns(int repeats, F f) {
  std::vector<std::int64_t> t;
  for (int i = 0; i < std::max(1, repeats); ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(elapsed_ns(t0));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Block {
  std::int64_t q, kv;
  bool causal, bwd;
};

// Tensors for one block shape and the call that runs it once.
class AttentionCase {
 public:
  AttentionCase(const BenchOptions& o, const Block& b) : o_(o), b_(b) {
    std::mt19937_64 gen(7);
    std::uniform_real_distribution<double> u(-1, 1);
    auto make = [&](std::int64_t rows, std::int64_t heads) {
      std::vector<double> v(static_cast<std::size_t>(o.batch * rows * heads * o.head_dim));
      for (double& x : v) x = u(gen);
      return v;
    };
    q_ = make(b.q, o.heads);
    k_ = make(b.kv, o.kv_heads);
    v_ = make(b.kv, o.kv_heads);
    do_ = make(b.q, o.heads);
    o_buf_.assign(q_.size(), 0.0);
    dq_.assign(q_.size(), 0.0);
    dk_.assign(k_.size(), 0.0);
    dv_.assign(v_.size(), 0.0);
    lse_.assign(static_cast<std::size_t>(o.batch * b.q * o.heads), -1e300);
    spec_.batch = o.batch;
    spec_.q_len = b.q;
    spec_.kv_len = b.kv;
    spec_.head_count = static_cast<std::int32_t>(o.heads);
    spec_.gqa_ratio = static_cast<std::int32_t>(o.heads / o.kv_heads);
    spec_.causal = b.causal;
    spec_.scale = 0.125;
    if (b.bwd) run_fwd();  // the backward needs a forward's O and LSE
  }
  void run() { b_.bwd ? run_bwd() : run_fwd(); }
 private:
  host::TensorView view(std::vector<double>& v, std::int64_t rows, std::int64_t heads, std::int64_t dim) {
    return {v.data(), rows, static_cast<std::int32_t>(heads), static_cast<std::int32_t>(dim)};
  }
  void run_fwd() {
    std::fill(lse_.begin(), lse_.end(), -std::numeric_limits<double>::infinity());
    host::attend_fwd(spec_, view(q_, b_.q, o_.heads, o_.head_dim), view(k_, b_.kv, o_.kv_heads, o_.head_dim),
                     view(v_, b_.kv, o_.kv_heads, o_.head_dim), view(o_buf_, b_.q, o_.heads, o_.head_dim),
                     view(lse_, b_.q, o_.heads, 1));
  }
  void run_bwd() {
    host::attend_bwd(spec_, view(q_, b_.q, o_.heads, o_.head_dim), view(k_, b_.kv, o_.kv_heads, o_.head_dim),
                     view(v_, b_.kv, o_.kv_heads, o_.head_dim), view(o_buf_, b_.q, o_.heads, o_.head_dim),
                     view(lse_, b_.q, o_.heads, 1), view(do_, b_.q, o_.heads, o_.head_dim),
                     view(dq_, b_.q, o_.heads, o_.head_dim), view(dk_, b_.kv, o_.kv_heads, o_.head_dim),
                     view(dv_, b_.kv, o_.kv_heads, o_.head_dim));
  }
  const BenchOptions& o_;
  Block b_;
  host::BlockSpec spec_;
  std::vector<double> q_, k_, v_, do_, o_buf_, lse_, dq_, dk_, dv_;
};

nlohmann::json attention_row(const BenchOptions& o, const Block& b) {
  return bench_attention_row(b.bwd, b.causal, o.head_dim, b.q, b.kv, o.batch, o.heads);
}

// One message of `bytes` from rank 0 to rank 1 through the host transport: send, then receive.
std::int64_t transfer_ns(HostWorld& world, std::int64_t bytes) {
  std::vector<double> msg(static_cast<std::size_t>(std::max<std::int64_t>(1, bytes / 8)), 1.0);
  const auto t0 = Clock::now();
  std::thread receiver([&] { world.recv(0, 1, 0, "bench receive"); });
  world.send(0, 1, 0, msg);  // copies the message, as a send reads its buffer
  receiver.join();
  return elapsed_ns(t0);
}

}  // namespace

nlohmann::json bench_attention_row(bool backward, bool causal, std::int64_t head_dim, std::int64_t q_tokens,
                                   std::int64_t kv_tokens, std::int64_t batch, std::int64_t heads) {
  AttnBlock a;
  a.q_len = q_tokens;
  a.kv_len = kv_tokens;
  a.mask = causal ? AttnMask::Causal : AttnMask::Full;
  const Flops fwd = 4 * batch * heads * head_dim * block_pairs(a);
  return {{"kind", "attention"}, {"pass", backward ? "bwd" : "fwd"}, {"mask", causal ? "causal" : "full"},
          {"head_dim", head_dim}, {"q_tokens", q_tokens}, {"kv_tokens", kv_tokens}, {"batch", batch},
          {"heads", heads}, {"flops", backward ? fwd * 5 / 2 : fwd}};
}

nlohmann::json run_host_bench(const BenchOptions& o) {
  nlohmann::json rows = nlohmann::json::array();
  std::vector<Block> grid;
  for (bool bwd : {false, true})
    for (std::int64_t q : o.block_tokens)
      for (std::int64_t kv : o.block_tokens) {
        grid.push_back({q, kv, false, bwd});
        if (q == kv) grid.push_back({q, kv, true, bwd});
      }
  for (const Block& b : grid) {
    AttentionCase c(o, b);
    nlohmann::json row = attention_row(o, b);
    row["ns"] = median_ns(o.repeats, [&] { c.run(); });
    rows.push_back(std::move(row));
  }

  HostWorld world(2, std::chrono::seconds(60));
  for (std::int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 4)
    // Two host ranks are threads of one process on one CPU: the message is a copy within that device (as a
    // GPU sending to itself), which calibrate fits as device_copy, never as a link between GPUs.
    rows.push_back({{"kind", "transfer"}, {"link", "self"}, {"bytes", bytes},
                    {"ns", median_ns(o.repeats, [&] { transfer_ns(world, bytes); })}});

  // Interference: the largest square blocks, alone and while another thread keeps transferring.
  const std::int64_t big = o.block_tokens.back();
  for (bool bwd : {false, true}) {
    const Block b{big, big, false, bwd};
    AttentionCase c(o, b);
    const std::int64_t alone = median_ns(o.repeats, [&] { c.run(); });
    std::atomic<bool> stop{false};
    std::thread noise([&] {
      HostWorld w(2, std::chrono::seconds(60));
      while (!stop.load()) transfer_ns(w, 64ll << 20);
    });
    const std::int64_t busy = median_ns(o.repeats, [&] { c.run(); });
    stop = true;
    noise.join();
    nlohmann::json row = attention_row(o, b);
    row["kind"] = "interference";
    row["alone_ns"] = alone;
    row["with_comm_ns"] = busy;
    rows.push_back(std::move(row));
  }
  return {{"schema", "cpscope.bench/1"}, {"backend", "host"}, {"transport", "host"},
          {"options", {{"block_tokens", o.block_tokens}, {"head_dim", o.head_dim}, {"heads", o.heads},
                       {"kv_heads", o.kv_heads}, {"batch", o.batch}, {"repeats", o.repeats}}},
          {"rows", std::move(rows)}};
}

}  // namespace cpscope::rt
