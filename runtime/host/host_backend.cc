#include "runtime/host/host_backend.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "runtime/host/attention.h"
#include "sim/error.h"

namespace cpscope::rt {
namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Collectives use their own matching keys, apart from the IR's point-to-point channels.
constexpr std::int32_t kGatherChannel = 1 << 20;
constexpr std::int32_t kReduceChannel = 2 << 20;

}  // namespace

HostBackend::HostBackend(HostWorld& world, std::int32_t rank, std::int64_t batch)
    : world_(world), rank_(rank), batch_(batch) {}

HostBackend::~HostBackend() {
  for (auto& s : streams_) {
    {
      std::lock_guard<std::mutex> lock(s->mu);
      s->stop = true;
    }
    s->cv.notify_all();
  }
  for (auto& s : streams_)
    if (s->thread.joinable()) s->thread.join();
}

void HostBackend::allocate(const RankLayout& layout, std::int32_t num_streams, std::int32_t num_events) {
  CPSCOPE_CHECK(streams_.empty(), "allocate called twice");
  layout_ = &layout;
  for (int i = 0; i < kNumTensors; ++i) {
    const auto t = static_cast<TensorId>(i);
    const TensorDesc& d = layout.desc(t);
    if (d.used && d.alias_of == TensorId::kCount) tensors_[static_cast<std::size_t>(i)].assign(
        static_cast<std::size_t>(d.elements(batch_)), 0.0);
  }
  ev_enqueued_.assign(static_cast<std::size_t>(num_events), 0);
  ev_done_.assign(static_cast<std::size_t>(num_events), 0);
  // Every Stream exists before any worker starts: a worker reads streams_, which must not grow under it.
  for (std::int32_t i = 0; i < num_streams; ++i) streams_.push_back(std::make_unique<Stream>());
  for (std::int32_t i = 0; i < num_streams; ++i) {
    Stream& s = *streams_[static_cast<std::size_t>(i)];
    std::lock_guard<std::mutex> lock(s.mu);  // publishes the thread handle to the destructor's join
    s.thread = std::thread([this, i] { worker(i); });
  }
}

std::vector<double>& HostBackend::storage(TensorId t) {
  CPSCOPE_CHECK(layout_ != nullptr, "backend used before allocate");
  const TensorId s = layout_->storage(t);
  std::vector<double>& v = tensors_[static_cast<std::size_t>(s)];
  CPSCOPE_CHECK(!v.empty() || layout_->desc(s).elements(batch_) == 0,
                fmt::format("rank {}: tensor {} is not allocated", rank_, to_string(t)));
  return v;
}

double* HostBackend::plane(TensorId t, std::int32_t p) {
  const TensorDesc& d = layout_->desc(t);
  return storage(t).data() + static_cast<std::int64_t>(p) * batch_ * d.rows * d.heads * d.dim;
}

void HostBackend::upload(TensorId t, const std::vector<double>& data) {
  std::vector<double>& v = storage(t);
  CPSCOPE_CHECK(data.size() == v.size(), fmt::format("upload of {}: {} values for {}", to_string(t), data.size(),
                                                     v.size()));
  std::copy(data.begin(), data.end(), v.begin());
}

std::vector<double> HostBackend::download(TensorId t) { return storage(t); }

std::string HostBackend::describe(const Op& op) const {
  return fmt::format("rank {} op {} ({})", rank_, op.id, op_name(op));
}

void HostBackend::enqueue(const Op& op, std::int32_t stream, bool timed, std::function<void()> run) {
  CPSCOPE_CHECK(stream >= 0 && static_cast<std::size_t>(stream) < streams_.size(), "stream out of range");
  Stream& s = *streams_[static_cast<std::size_t>(stream)];
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.tasks.push_back(Task{op.id, timed, describe(op), std::move(run)});
  }
  s.cv.notify_all();
}

void HostBackend::worker(std::int32_t index) {
  Stream& s = *streams_[static_cast<std::size_t>(index)];
  std::unique_lock<std::mutex> lock(s.mu);
  for (;;) {
    s.cv.wait(lock, [&] { return s.stop || !s.tasks.empty(); });
    if (s.tasks.empty()) return;  // stop requested and nothing left
    Task task = std::move(s.tasks.front());
    s.tasks.pop_front();
    s.busy = true;
    lock.unlock();
    // After a failure anywhere in the world the remaining work is dropped (CUDA: the stream is dead).
    if (!world_.aborted()) {
      const std::int64_t t0 = now_ns();
      try {
        task.run();
      } catch (const std::exception& e) {
        world_.abort(std::string(e.what()).find(task.what) == std::string::npos ? task.what + ": " + e.what()
                                                                                 : std::string(e.what()));
      }
      if (task.timed && !world_.aborted()) {
        // An op's fills run right before it on its stream: one interval from the first fill to the op's end.
        if (!s.intervals.empty() && s.intervals.back().op == task.op)
          s.intervals.back().end_ns = now_ns();
        else
          s.intervals.push_back({task.op, index, t0, now_ns()});
      }
    }
    lock.lock();
    s.busy = false;
    s.cv.notify_all();
  }
}

void HostBackend::synchronize() {
  for (auto& sp : streams_) {
    Stream& s = *sp;
    std::unique_lock<std::mutex> lock(s.mu);
    s.cv.wait(lock, [&] { return s.tasks.empty() && !s.busy; });
  }
  if (world_.aborted()) throw TransportError(world_.first_error());
}

std::vector<HostInterval> HostBackend::take_intervals() {
  std::vector<HostInterval> out;
  for (auto& sp : streams_) {
    std::lock_guard<std::mutex> lock(sp->mu);
    out.insert(out.end(), sp->intervals.begin(), sp->intervals.end());
    sp->intervals.clear();
  }
  return out;
}

void HostBackend::wait_event(const Op& op, std::int32_t stream, std::int32_t event) {
  CPSCOPE_CHECK(event >= 0 && static_cast<std::size_t>(event) < ev_done_.size(), "event out of range");
  std::int64_t target;
  {
    std::lock_guard<std::mutex> lock(ev_mu_);
    target = ev_enqueued_[static_cast<std::size_t>(event)];
  }
  const std::string what = describe(op) + fmt::format(": wait on event {}", event);
  enqueue(op, stream, false, [this, event, target, what] {
    std::unique_lock<std::mutex> lock(ev_mu_);
    world_.wait(lock, ev_cv_, [&] { return ev_done_[static_cast<std::size_t>(event)] >= target; }, what);
  });
}

void HostBackend::record_event(const Op& op, std::int32_t stream, std::int32_t event) {
  CPSCOPE_CHECK(event >= 0 && static_cast<std::size_t>(event) < ev_done_.size(), "event out of range");
  std::int64_t mark;
  {
    std::lock_guard<std::mutex> lock(ev_mu_);
    mark = ++ev_enqueued_[static_cast<std::size_t>(event)];
  }
  enqueue(op, stream, false, [this, event, mark] {
    {
      std::lock_guard<std::mutex> lock(ev_mu_);
      auto& done = ev_done_[static_cast<std::size_t>(event)];
      done = std::max(done, mark);
    }
    ev_cv_.notify_all();
  });
}

std::int64_t HostBackend::count(const Region& r) const {
  return r.elements(batch_, layout_->desc(r.tensor).dim);
}

// Visits each contiguous run (one head's dim values) of a region in [plane][batch][row][head] order.
template <class F>
static void for_each_run(const TensorDesc& d, std::int64_t batch, const Region& r, double* base, F f,
                         const std::vector<std::int64_t>* row_map = nullptr) {
  const std::int64_t plane_size = batch * d.rows * d.heads * d.dim;
  for (std::int32_t p = r.plane; p < r.plane + r.planes; ++p)
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t i = 0; i < r.rows; ++i) {
        const std::int64_t row = r.row + (row_map ? (*row_map)[static_cast<std::size_t>(i)] : i);
        for (std::int32_t h = r.head; h < r.head + r.heads; ++h)
          f(base + p * plane_size + ((b * d.rows + row) * d.heads + h) * d.dim, d.dim);
      }
}

std::vector<double> HostBackend::pack(const std::vector<Region>& regions) {
  std::vector<double> m;
  for (const Region& r : regions) {
    m.reserve(m.size() + static_cast<std::size_t>(count(r)));
    for_each_run(layout_->desc(r.tensor), batch_, r, storage(r.tensor).data(),
                 [&](const double* p, std::int32_t n) { m.insert(m.end(), p, p + n); });
  }
  return m;
}

void HostBackend::unpack(const std::vector<Region>& regions, const std::vector<double>& message, bool add,
                         const std::string& what) {
  std::int64_t expect = 0;
  for (const Region& r : regions) expect += count(r);
  if (expect != static_cast<std::int64_t>(message.size()))
    throw TransportError(fmt::format("{}: received {} values where the receiving regions hold {}", what,
                                     message.size(), expect));
  const double* src = message.data();
  for (const Region& r : regions)
    for_each_run(layout_->desc(r.tensor), batch_, r, storage(r.tensor).data(), [&](double* p, std::int32_t n) {
      if (add)
        for (std::int32_t i = 0; i < n; ++i) p[i] += src[i];
      else
        std::copy(src, src + n, p);
      src += n;
    });
}

void HostBackend::fill(const Op& op, std::int32_t stream, const Region& r, double value) {
  enqueue(op, stream, true, [this, r, value] {  // timed: part of the op it precedes (Op::fills)
    for_each_run(layout_->desc(r.tensor), batch_, r, storage(r.tensor).data(),
                 [&](double* p, std::int32_t n) { std::fill(p, p + n, value); });
  });
}

void HostBackend::copy(const Op& op, std::int32_t stream, const Region& src, const Region& dst, bool add,
                       const std::vector<std::int64_t>& row_map) {
  CPSCOPE_CHECK(src.planes == dst.planes && src.rows == dst.rows && src.heads == dst.heads &&
                    layout_->desc(src.tensor).dim == layout_->desc(dst.tensor).dim,
                describe(op) + ": copy between regions of different shape");
  CPSCOPE_CHECK(row_map.empty() || static_cast<std::int64_t>(row_map.size()) == src.rows,
                describe(op) + ": row map of the wrong length");
  enqueue(op, stream, true, [this, src, dst, add, row_map, what = describe(op)] {
    // Read the source (through the row map) into a message first: the copy may be in place.
    std::vector<double> m;
    m.reserve(static_cast<std::size_t>(count(src)));
    for_each_run(layout_->desc(src.tensor), batch_, src, storage(src.tensor).data(),
                 [&](const double* p, std::int32_t n) { m.insert(m.end(), p, p + n); },
                 row_map.empty() ? nullptr : &row_map);
    unpack({dst}, m, add, what);
  });
}

namespace {
host::TensorView view(const TensorDesc& d, double* plane) { return {plane, d.rows, d.heads, d.dim}; }
}  // namespace

void HostBackend::attend_fwd(const Op& op, std::int32_t stream, const AttendArgs& a, bool merge) {
  CPSCOPE_CHECK(merge, "the host backend always merges (O and LSE start at 0 and -inf)");
  enqueue(op, stream, true, [this, a] {
    host::BlockSpec s{batch_, a.q_off, a.q_len, a.kv_off, a.kv_len, a.head_begin, a.head_count,
                      a.gqa_ratio, a.kv_head_shift, a.causal, a.causal_offset, a.scale};
    const TensorDesc& kv = layout_->desc(a.kv);
    host::attend_fwd(s, view(layout_->desc(a.q), plane(a.q, 0)), view(kv, plane(a.kv, 0)), view(kv, plane(a.kv, 1)),
                     view(layout_->desc(a.o), plane(a.o, 0)), view(layout_->desc(a.lse), plane(a.lse, 0)));
  });
}

void HostBackend::attend_bwd(const Op& op, std::int32_t stream, const AttendArgs& a) {
  enqueue(op, stream, true, [this, a] {
    host::BlockSpec s{batch_, a.q_off, a.q_len, a.kv_off, a.kv_len, a.head_begin, a.head_count,
                      a.gqa_ratio, a.kv_head_shift, a.causal, a.causal_offset, a.scale};
    const TensorDesc& kv = layout_->desc(a.kv);
    const TensorDesc& dkv = layout_->desc(a.dkv);
    host::attend_bwd(s, view(layout_->desc(a.q), plane(a.q, 0)), view(kv, plane(a.kv, 0)), view(kv, plane(a.kv, 1)),
                     view(layout_->desc(a.o), plane(a.o, 0)), view(layout_->desc(a.lse), plane(a.lse, 0)),
                     view(layout_->desc(a.dout), plane(a.dout, 0)), view(layout_->desc(a.dq), plane(a.dq, 0)),
                     view(dkv, plane(a.dkv, a.dkv_plane)), view(dkv, plane(a.dkv, a.dkv_plane + 1)));
  });
}

void HostBackend::exchange(const Op& op, std::int32_t stream, const ExchangeArgs& x) {
  enqueue(op, stream, true, [this, x, what = describe(op)] {
    for (const Part& p : x.sends) world_.send(rank_, p.peer, x.channel, pack(p.regions));
    for (const Part& p : x.recvs) unpack(p.regions, world_.recv(p.peer, rank_, x.channel, what), false, what);
  });
}

void HostBackend::all_gather(const Op& op, std::int32_t stream, const AllGatherArgs& x) {
  enqueue(op, stream, true, [this, x, what = describe(op)] {
    const std::int32_t ch = kGatherChannel + x.group;
    const std::vector<double> mine = pack({x.src});
    for (std::int32_t m : x.members) world_.send(rank_, m, ch, mine);
    for (std::size_t i = 0; i < x.members.size(); ++i)
      unpack({x.dst[i]}, world_.recv(x.members[i], rank_, ch, what), false, what);
  });
}

void HostBackend::reduce_scatter(const Op& op, std::int32_t stream, const ReduceScatterArgs& x) {
  enqueue(op, stream, true, [this, x, what = describe(op)] {
    const std::int32_t ch = kReduceChannel + x.group;
    for (std::size_t i = 0; i < x.members.size(); ++i) world_.send(rank_, x.members[i], ch, pack({x.src[i]}));
    for (std::size_t i = 0; i < x.members.size(); ++i)
      unpack({x.dst}, world_.recv(x.members[i], rank_, ch, what), i > 0, what);
  });
}

}  // namespace cpscope::rt
