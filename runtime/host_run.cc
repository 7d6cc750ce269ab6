#include "runtime/host_run.h"

#include <chrono>
#include <cmath>
#include <exception>
#include <limits>

#include <fmt/format.h>

#include "runtime/executor.h"
#include "sim/error.h"

namespace cpscope::rt {
namespace {

// Copies global rows/heads into (or out of) one plane of a rank tensor. Global tensors are
// [batch][seq][global_heads][dim]; the tensor is [plane][batch][rows][heads][dim].
void move_rows(const TensorDesc& d, std::int64_t batch, std::int64_t seq, std::int32_t global_heads,
               std::vector<double>& tensor, std::int32_t plane, const Region& r, const std::vector<std::int64_t>& tokens,
               std::int32_t head_base, std::vector<double>& global, bool to_tensor) {
  const std::int64_t dim = d.dim;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t i = r.row; i < r.row + r.rows; ++i)
      for (std::int32_t h = r.head; h < r.head + r.heads; ++h) {
        const std::int64_t t = tokens[static_cast<std::size_t>(i)];
        const std::int64_t gh = head_base + h;
        CPSCOPE_CHECK(t >= 0 && t < seq && gh >= 0 && gh < global_heads, "row or head outside the global tensor");
        double* g = &global[static_cast<std::size_t>(((b * seq + t) * global_heads + gh) * dim)];
        double* x = &tensor[static_cast<std::size_t>((((plane * batch + b) * d.rows + i) * d.heads + h) * dim)];
        for (std::int64_t k = 0; k < dim; ++k) (to_tensor ? x[k] : g[k]) = to_tensor ? g[k] : x[k];
      }
}

}  // namespace

HostRunResult run_on_host(const Schedule& schedule, const AttentionData& in, const HostRunOptions& options) {
  const Workload& w = schedule.workload;
  const auto n = static_cast<std::int32_t>(schedule.ranks.size());
  const bool fwd = w.pass != PassSet::Bwd;
  const bool bwd = w.pass != PassSet::Fwd;
  if (w.pass == PassSet::Bwd)
    CPSCOPE_CHECK(!in.o.empty() && !in.lse.empty(), "a backward-only run needs the forward's o and lse");
  HostWorld world(n, options.timeout);
  std::vector<std::unique_ptr<HostBackend>> backends;
  std::vector<std::unique_ptr<Backend>> wrapped;
  std::vector<std::unique_ptr<Executor>> executors;
  for (std::int32_t r = 0; r < n; ++r) {
    backends.push_back(std::make_unique<HostBackend>(world, r, w.batch));
    Backend* b = backends.back().get();
    if (options.wrap) {
      wrapped.push_back(options.wrap(*b, r));
      b = wrapped.back().get();
    }
    executors.push_back(std::make_unique<Executor>(schedule, r, *b));
    executors.back()->allocate();
  }

  // Inputs.
  for (std::int32_t r = 0; r < n; ++r) {
    const RankLayout& lay = executors[static_cast<std::size_t>(r)]->layout();
    std::vector<std::vector<double>> staged(kNumTensors);
    for (const RankLayout::Load& l : lay.loads()) {
      const TensorId t = lay.storage(l.tensor);
      const TensorDesc& d = lay.desc(t);
      auto& buf = staged[static_cast<std::size_t>(t)];
      if (buf.empty()) buf = backends[static_cast<std::size_t>(r)]->download(t);
      const bool kv = l.source == RankLayout::Source::K || l.source == RankLayout::Source::V;
      const auto gh = static_cast<std::int32_t>(kv ? w.kv_heads : w.heads);
      const Region all{t, l.plane, 1, 0, d.rows, 0, d.heads};
      move_rows(d, w.batch, w.seq, gh, buf, l.plane, all, l.tokens, l.head_base,
                const_cast<std::vector<double>&>(input_tensor(in, l.source)), true);
    }
    for (int i = 0; i < kNumTensors; ++i)
      if (!staged[static_cast<std::size_t>(i)].empty())
        backends[static_cast<std::size_t>(r)]->upload(static_cast<TensorId>(i), staged[static_cast<std::size_t>(i)]);
  }

  // Every backend is drained before anything is unwound: a failing rank aborts the world, and the
  // other ranks' stream threads must stop touching the executors' layouts before those are destroyed.
  auto synchronize_all = [&] {
    std::exception_ptr first;
    for (auto& b : backends) {
      try {
        b->synchronize();
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
  };
  HostRunResult res;
  for (std::int32_t it = 0; it < std::max(1, options.iterations); ++it) {
    for (auto& b : backends) b->take_intervals();
    const auto t0 = std::chrono::steady_clock::now();
    try {
      for (auto& e : executors) e->issue();
    } catch (const std::exception& e) {
      world.abort(e.what());  // wakes whatever the ranks issued so far waits on
      try {
        synchronize_all();
      } catch (...) {
      }
      throw;
    }
    synchronize_all();
    res.iteration_ns.push_back(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  }
  for (auto& b : backends) res.intervals.push_back(b->take_intervals());

  // Outputs: NaN where no rank wrote, so a gap fails the comparison.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto q_size = static_cast<std::size_t>(w.batch * w.seq * w.heads * w.head_dim);
  const auto kv_size = static_cast<std::size_t>(w.batch * w.seq * w.kv_heads * w.head_dim);
  if (fwd) {
    res.out.o.assign(q_size, nan);
    res.out.lse.assign(static_cast<std::size_t>(w.batch * w.seq * w.heads), nan);
  }
  if (bwd) {
    res.out.dq.assign(q_size, nan);
    res.out.dk.assign(kv_size, nan);
    res.out.dv.assign(kv_size, nan);
  }
  for (std::int32_t r = 0; r < n; ++r) {
    const RankLayout& lay = executors[static_cast<std::size_t>(r)]->layout();
    HostBackend& b = *backends[static_cast<std::size_t>(r)];
    auto take = [&](const RankLayout::Result& x, std::vector<double>& global, std::int64_t heads) {
      const TensorId t = lay.storage(x.region.tensor);
      std::vector<double> data = b.download(t);
      move_rows(lay.desc(t), w.batch, w.seq, static_cast<std::int32_t>(heads), data, x.region.plane, x.region,
                *x.tokens, x.head_base, global, false);
    };
    if (fwd) {
      take(lay.out_o(), res.out.o, w.heads);
      take(lay.out_lse(), res.out.lse, w.heads);
    }
    if (bwd) {
      take(lay.out_dq(), res.out.dq, w.heads);
      take(lay.out_dk(), res.out.dk, w.kv_heads);
      take(lay.out_dv(), res.out.dv, w.kv_heads);
    }
  }
  return res;
}

}  // namespace cpscope::rt
