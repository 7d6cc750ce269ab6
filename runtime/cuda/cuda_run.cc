// run_on_cuda: inputs, the optional GPU reference, warm-up and timed iterations, outputs and --check.
//  - Inputs are random_inputs(workload, seed) rounded to the workload dtype on the host, so the device
//    tensors and the fp32 reference see identical values; each rank uploads its shard through
//    RankLayout::loads(), as host_run does. Runs that need the global tensors (loopback, --check) build
//    them; timing runs (replay, nccl without --check) generate just the rank's shard (input_value).
//  - A backward-only schedule reads the forward's O and LSE: with --check they come from the GPU reference
//    forward; without it (pure timing) they are synthetic but plausible (O = the Q values, LSE = log of the
//    number of visible keys), which avoids an O(S²) reference pass before every timing run.
//  - Step time per iteration: the device is idle at the start (the previous iteration was synchronized);
//    a timing event recorded on rank 0's compute stream is what every stream of every local rank waits
//    for, and the end event follows a join of all those streams. nccl takes the slowest rank.
#include "runtime/cuda/cuda_run.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/cuda/check.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/host_convert.h"
#include "runtime/cuda/transport.h"
#include "runtime/executor.h"
#include "runtime/instrument/cupti_tracer.h"
#include "runtime/instrument/mpi_sync.h"
#include "runtime/instrument/nvtx.h"
#include "runtime/instrument/op_intervals.h"
#include "runtime/kernels/check.h"
#include "runtime/kernels/reference_attention.h"
#include "runtime/layout.h"
#include "runtime/measured.h"
#include "runtime/reference.h"
#include "sim/error.h"

namespace cpscope::rt {
namespace {

kernels::DType input_type(const Workload& w) {
  return w.dtype == DType::FP16 ? kernels::DType::FP16 : kernels::DType::BF16;  // fp32 rejected earlier
}

std::string gib(std::int64_t bytes) { return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1 << 30)); }

// Throws InputError("seq") when `required` bytes do not fit in the device's free memory.
void check_memory(std::int32_t rank, std::int32_t device, std::int64_t required, std::int64_t reserve,
                  const std::string& what) {
  std::size_t free = 0, total = 0;
  CPS_CUDA_CALL(rank, cudaMemGetInfo(&free, &total));
  // Beyond the tensors: cudaMalloc rounds allocations up to 2 MiB pages, and the kernels' modules (loaded
  // lazily, at their first launch) and local memory are allocated later; without this margin a workload sized
  // to just fit would fail with out-of-memory at a launch, reported as a launch error.
  constexpr std::int64_t kHeadroomBytes = std::int64_t{256} << 20;
  if (required + reserve + kHeadroomBytes <= static_cast<std::int64_t>(free)) return;
  throw InputError("seq", fmt::format("{} needs {} bytes ({}) of device memory{} plus {} of headroom on device {}, but only "
                                      "{} bytes ({}) of {} are free; lower seq, batch or heads, or raise cp",
                                      what, required, gib(required),
                                      reserve > 0 ? fmt::format(" plus about {} for NCCL", gib(reserve)) : "",
                                      gib(kHeadroomBytes), device, free, gib(static_cast<std::int64_t>(free)),
                                      gib(static_cast<std::int64_t>(total))));
}

std::string version_string(int v) { return fmt::format("{}.{}", v / 1000, (v % 1000) / 10); }

void describe_device(std::int32_t rank, std::int32_t device, CudaRunResult& r) {
  cudaDeviceProp p{};
  CPS_CUDA_CALL(rank, cudaGetDeviceProperties(&p, device));
  r.device_name = p.name;
  r.sm_count = p.multiProcessorCount;
  int drv = 0, rt = 0, nv = 0;
  CPS_CUDA_CALL(rank, cudaDriverGetVersion(&drv));
  CPS_CUDA_CALL(rank, cudaRuntimeGetVersion(&rt));
  CPS_NCCL_CALL(rank, ncclGetVersion(&nv));
  r.driver_version = version_string(drv);
  r.cuda_version = version_string(rt);
  // NCCL >= 2.9 encodes X.Y.Z as X*10000 + Y*100 + Z.
  r.nccl_version = fmt::format("{}.{}.{}", nv / 10000, (nv % 10000) / 100, nv % 100);
}

std::int32_t device_count() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    throw DeviceError(fmt::format("no usable CUDA device: cudaGetDeviceCount failed: {} ({}); on a machine without "
                                  "a GPU, --backend host runs the same schedules on the CPU",
                                  cudaGetErrorName(e), cudaGetErrorString(e)));
  if (n == 0)
    throw DeviceError("no CUDA device is visible (CUDA_VISIBLE_DEVICES?); --backend host runs on the CPU");
  return n;
}

// --- device memory for the reference ---
class DeviceBuffer {
 public:
  DeviceBuffer(std::int32_t rank, std::int64_t bytes) {
    if (bytes > 0) CPS_CUDA_CALL(rank, cudaMalloc(&p_, static_cast<std::size_t>(bytes)));
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

template <class T>
void to_device(std::int32_t rank, const DeviceBuffer& d, const std::vector<T>& h) {
  if (h.empty()) return;
  CPS_CUDA_CALL(rank, cudaMemcpy(d.as<void>(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}
template <class T>
std::vector<T> to_host(std::int32_t rank, const DeviceBuffer& d, std::int64_t n) {
  std::vector<T> h(static_cast<std::size_t>(n));
  if (n > 0) CPS_CUDA_CALL(rank, cudaMemcpy(h.data(), d.as<void>(), h.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

// Reference results for sets of tokens: forward rows (O, LSE), dQ rows, dK/dV rows.
struct Reference {
  std::vector<std::int64_t> fwd_at, q_at, k_at;  // token -> row of the results below (-1: not computed)
  std::int64_t nf = 0, nq = 0, nk = 0;
  std::vector<float> o, lse;  // o [B][nf][H][D], lse [B][H][nf]
  std::vector<float> dq;      // [B][nq][H][D]
  std::vector<float> dk, dv;  // [B][nk][Hkv][D]
};

std::vector<std::int64_t> index_of(const std::vector<std::int64_t>& rows, std::int64_t seq) {
  std::vector<std::int64_t> at(static_cast<std::size_t>(seq), -1);
  for (std::size_t i = 0; i < rows.size(); ++i) at[static_cast<std::size_t>(rows[i])] = static_cast<std::int64_t>(i);
  return at;
}

std::vector<std::int64_t> sorted_unique(std::vector<std::int64_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

// Runs the fp32 reference on the GPU: the forward of the tokens `q_rows` (of every token when
// `full_forward`), and with `backward` dQ of `q_rows` and dK/dV of `k_rows`. The backward needs the
// forward of every token (dK/dV of a key sum over all later queries), so it requires `full_forward`.
Reference compute_reference(const Workload& w, const AttentionData& in, std::vector<std::int64_t> q_rows,
                            std::vector<std::int64_t> k_rows, bool full_forward, bool backward, std::int32_t rank,
                            std::int32_t device) {
  CPSCOPE_CHECK(full_forward || !backward, "the reference backward needs the forward of every token");
  const bool bwd = backward;
  const std::int64_t B = w.batch, S = w.seq, H = w.heads, Hkv = w.kv_heads, D = w.head_dim;
  std::vector<std::int64_t> f_rows;
  if (full_forward) {
    f_rows.resize(static_cast<std::size_t>(S));
    for (std::int64_t t = 0; t < S; ++t) f_rows[static_cast<std::size_t>(t)] = t;
  } else {
    f_rows = sorted_unique(q_rows);
  }
  q_rows = bwd ? sorted_unique(std::move(q_rows)) : std::vector<std::int64_t>{};
  k_rows = bwd ? sorted_unique(std::move(k_rows)) : std::vector<std::int64_t>{};
  Reference r;
  r.nf = static_cast<std::int64_t>(f_rows.size());
  r.nq = static_cast<std::int64_t>(q_rows.size());
  r.nk = static_cast<std::int64_t>(k_rows.size());
  const std::int64_t qn = B * S * H * D, kvn = B * S * Hkv * D;
  const std::int64_t bytes = 4 * (qn * (bwd ? 2 : 1) + 2 * kvn + B * r.nf * H * (D + 1) + (bwd ? B * H * S : 0) +
                                  B * r.nq * H * D + 2 * B * r.nk * Hkv * D) +
                             8 * (r.nf + r.nq + r.nk);
  check_memory(rank, device, bytes, 0, "the fp32 reference attention (--check, or the forward of a backward-only run)");

  refk::RefShape s;
  s.batch = static_cast<int>(B);
  s.seq = S;
  s.heads = static_cast<int>(H);
  s.kv_heads = static_cast<int>(Hkv);
  s.head_dim = static_cast<int>(D);
  s.causal = w.mask == Mask::Causal;
  s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  DeviceBuffer q(rank, qn * 4), k(rank, kvn * 4), v(rank, kvn * 4);
  to_device(rank, q, to_float(in.q));
  to_device(rank, k, to_float(in.k));
  to_device(rank, v, to_float(in.v));
  DeviceBuffer fr(rank, r.nf * 8), o(rank, B * r.nf * H * D * 4), lse(rank, B * H * r.nf * 4);
  to_device(rank, fr, f_rows);
  const std::string where = fmt::format("rank {}: reference attention", rank);
  auto run = [&](auto&& f) {
    try {
      f();
    } catch (const kernels::CudaError& e) {
      throw DeviceError(where + ": " + e.what());
    } catch (const std::invalid_argument& e) {
      throw InternalError(where + ": " + e.what());
    }
  };
  run([&] { refk::ref_forward(s, q.as<float>(), k.as<float>(), v.as<float>(), fr.as<std::int64_t>(), r.nf, o.as<float>(),
                              lse.as<float>(), nullptr); });
  if (bwd) {
    // The forward covered every token in order, so o and lse are the global tensors.
    DeviceBuffer dout(rank, qn * 4), delta(rank, B * H * S * 4);
    DeviceBuffer qr(rank, r.nq * 8), kr(rank, r.nk * 8);
    DeviceBuffer dq(rank, B * r.nq * H * D * 4), dk(rank, B * r.nk * Hkv * D * 4), dv(rank, B * r.nk * Hkv * D * 4);
    to_device(rank, dout, to_float(in.dout));
    to_device(rank, qr, q_rows);
    to_device(rank, kr, k_rows);
    run([&] { refk::ref_delta(s, o.as<float>(), dout.as<float>(), delta.as<float>(), nullptr); });
    run([&] {
      refk::ref_backward_dq(s, q.as<float>(), k.as<float>(), v.as<float>(), dout.as<float>(), lse.as<float>(),
                            delta.as<float>(), qr.as<std::int64_t>(), r.nq, dq.as<float>(), nullptr);
    });
    run([&] {
      refk::ref_backward_dkv(s, q.as<float>(), k.as<float>(), v.as<float>(), dout.as<float>(), lse.as<float>(),
                             delta.as<float>(), kr.as<std::int64_t>(), r.nk, dk.as<float>(), dv.as<float>(), nullptr);
    });
    CPS_CUDA_CALL(rank, cudaDeviceSynchronize());
    r.dq = to_host<float>(rank, dq, B * r.nq * H * D);
    r.dk = to_host<float>(rank, dk, B * r.nk * Hkv * D);
    r.dv = to_host<float>(rank, dv, B * r.nk * Hkv * D);
  }
  CPS_CUDA_CALL(rank, cudaDeviceSynchronize());
  r.o = to_host<float>(rank, o, B * r.nf * H * D);
  r.lse = to_host<float>(rank, lse, B * H * r.nf);
  r.fwd_at = index_of(f_rows, S);
  r.q_at = index_of(q_rows, S);
  r.k_at = index_of(k_rows, S);
  return r;
}

// The forward's O and LSE in AttentionData's global layout (o [B][S][H][D], lse [B][S][H]) from a
// reference that covered every token.
void set_forward_outputs(const Workload& w, const Reference& r, AttentionData& in) {
  const std::int64_t B = w.batch, S = w.seq, H = w.heads;
  CPSCOPE_CHECK(r.nf == S, "the reference forward must cover every token");
  in.o.assign(r.o.begin(), r.o.end());
  in.lse.assign(static_cast<std::size_t>(B * S * H), 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t t = 0; t < S; ++t)
        in.lse[static_cast<std::size_t>((b * S + t) * H + h)] = r.lse[static_cast<std::size_t>((b * H + h) * S + t)];
}

// Fills the rank's input tensors (host_run's loading, per whole tensor). `value(source, index, token)`
// gives the element at flat `index` of the global tensor `source` ([B][S][heads][D], LSE [B][S][H]),
// whose row is `token`.
template <class Value>
void load_rank_with(CudaBackend& b, const RankLayout& lay, Value value) {
  const Workload& w = lay.workload();
  std::vector<std::vector<double>> staged(kNumTensors);
  for (const RankLayout::Load& l : lay.loads()) {
    const TensorId t = lay.storage(l.tensor);
    const TensorDesc& d = lay.desc(t);
    auto& buf = staged[static_cast<std::size_t>(t)];
    if (buf.empty()) buf.assign(static_cast<std::size_t>(d.elements(w.batch)), 0.0);
    const bool kv = l.source == RankLayout::Source::K || l.source == RankLayout::Source::V;
    const std::int64_t gh = kv ? w.kv_heads : w.heads;
    CPSCOPE_CHECK(static_cast<std::int64_t>(l.tokens.size()) == d.rows, "load tokens do not match the tensor rows");
    for (std::int64_t bi = 0; bi < w.batch; ++bi)
      for (std::int64_t i = 0; i < d.rows; ++i)
        for (std::int32_t h = 0; h < d.heads; ++h) {
          const std::int64_t tok = l.tokens[static_cast<std::size_t>(i)];
          const std::int64_t head = l.head_base + h;
          CPSCOPE_CHECK(tok >= 0 && tok < w.seq && head >= 0 && head < gh, "row or head outside the global tensor");
          const std::int64_t from = ((bi * w.seq + tok) * gh + head) * d.dim;
          double* to = &buf[static_cast<std::size_t>((((l.plane * w.batch + bi) * d.rows + i) * d.heads + h) * d.dim)];
          for (std::int32_t k = 0; k < d.dim; ++k) to[k] = value(l.source, from + k, tok);
        }
  }
  for (int i = 0; i < kNumTensors; ++i)
    if (!staged[static_cast<std::size_t>(i)].empty()) b.upload(static_cast<TensorId>(i), staged[static_cast<std::size_t>(i)]);
}

// From global tensors held in memory (loopback, and any run that computes the reference).
void load_rank(CudaBackend& b, const RankLayout& lay, const AttentionData& in) {
  for (auto s : {RankLayout::Source::Q, RankLayout::Source::K, RankLayout::Source::V})
    CPSCOPE_CHECK(!input_tensor(in, s).empty(), fmt::format("rank {}: an input is missing", lay.rank()));
  load_rank_with(b, lay, [&](RankLayout::Source s, std::int64_t index, std::int64_t) {
    return input_tensor(in, s)[static_cast<std::size_t>(index)];
  });
}

// Generated on the fly for this rank's rows only, so a timing run (replay, nccl without --check) needs
// no global tensors: random_inputs' values rounded to the dtype, and for a backward-only schedule the
// synthetic but plausible forward outputs: O = the Q values, LSE = log of the number of visible keys.
void load_rank_generated(CudaBackend& b, const RankLayout& lay, std::uint64_t seed) {
  const Workload& w = lay.workload();
  const kernels::DType dt = input_type(w);
  load_rank_with(b, lay, [&](RankLayout::Source s, std::int64_t index, std::int64_t token) {
    switch (s) {
      case RankLayout::Source::Q:
      case RankLayout::Source::O:
        return round_to(dt, input_value(seed, InputTensor::Q, index));
      case RankLayout::Source::K:
        return round_to(dt, input_value(seed, InputTensor::K, index));
      case RankLayout::Source::V:
        return round_to(dt, input_value(seed, InputTensor::V, index));
      case RankLayout::Source::Do:
        return round_to(dt, input_value(seed, InputTensor::Do, index));
      case RankLayout::Source::Lse:
        return std::log(static_cast<double>(w.mask == Mask::Causal ? token + 1 : w.seq));
    }
    throw InternalError("unknown source");
  });
}

// max |x - ref| and max |ref| of one output, over the checked ranks.
struct ErrMax {
  double diff = 0, ref = 0;
  void add(double x, double r) {
    diff = std::isfinite(x) ? std::max(diff, std::abs(x - r)) : std::numeric_limits<double>::infinity();
    ref = std::max(ref, std::abs(r));
  }
  double value() const { return ref > 0 ? diff / ref : diff; }
};
struct Errors {
  ErrMax o, lse, dq, dk, dv;
};

// Compares one result region of a rank with the reference rows. `ref_index(b, row, global_head, k)`
// gives the reference element (row: the reference's row of the token).
template <class RefIndex>
void compare(CudaBackend& b, const RankLayout& lay, const RankLayout::Result& x, const std::vector<std::int64_t>& at,
             const std::vector<float>& ref, RefIndex ref_index, ErrMax& e) {
  const TensorId t = lay.storage(x.region.tensor);
  const TensorDesc& d = lay.desc(t);
  const std::vector<double> data = b.download(t);
  const Region& r = x.region;
  const std::int64_t B = lay.workload().batch;
  for (std::int64_t bi = 0; bi < B; ++bi)
    for (std::int64_t i = r.row; i < r.row + r.rows; ++i) {
      const std::int64_t row = at[static_cast<std::size_t>((*x.tokens)[static_cast<std::size_t>(i)])];
      CPSCOPE_CHECK(row >= 0, "the reference did not compute a row this rank owns");
      for (std::int32_t h = r.head; h < r.head + r.heads; ++h)
        for (std::int32_t k = 0; k < d.dim; ++k) {
          const double v = data[static_cast<std::size_t>((((r.plane * B + bi) * d.rows + i) * d.heads + h) * d.dim + k)];
          e.add(v, ref[static_cast<std::size_t>(ref_index(bi, row, x.head_base + h, k))]);
        }
    }
}

void check_rank(CudaBackend& b, const RankLayout& lay, const Reference& ref, Errors& e) {
  const Workload& w = lay.workload();
  const std::int64_t H = w.heads, Hkv = w.kv_heads, D = w.head_dim;
  if (w.pass != PassSet::Bwd) {
    compare(b, lay, lay.out_o(), ref.fwd_at, ref.o,
            [&](std::int64_t bi, std::int64_t row, std::int64_t gh, std::int64_t k) { return ((bi * ref.nf + row) * H + gh) * D + k; },
            e.o);
    compare(b, lay, lay.out_lse(), ref.fwd_at, ref.lse,
            [&](std::int64_t bi, std::int64_t row, std::int64_t gh, std::int64_t) { return (bi * H + gh) * ref.nf + row; },
            e.lse);
  }
  if (w.pass != PassSet::Fwd) {
    compare(b, lay, lay.out_dq(), ref.q_at, ref.dq,
            [&](std::int64_t bi, std::int64_t row, std::int64_t gh, std::int64_t k) { return ((bi * ref.nq + row) * H + gh) * D + k; },
            e.dq);
    auto kv_index = [&](std::int64_t bi, std::int64_t row, std::int64_t gh, std::int64_t k) {
      return ((bi * ref.nk + row) * Hkv + gh) * D + k;
    };
    compare(b, lay, lay.out_dk(), ref.k_at, ref.dk, kv_index, e.dk);
    compare(b, lay, lay.out_dv(), ref.k_at, ref.dv, kv_index, e.dv);
  }
}

// Tokens whose reference results the checked ranks need: query rows (O, LSE, dQ) and key rows (dK/dV).
void wanted_rows(const RankLayout& lay, std::vector<std::int64_t>& q, std::vector<std::int64_t>& k) {
  const Workload& w = lay.workload();
  auto add = [](std::vector<std::int64_t>& to, const RankLayout::Result& x) {
    for (std::int64_t i = x.region.row; i < x.region.row + x.region.rows; ++i)
      to.push_back((*x.tokens)[static_cast<std::size_t>(i)]);
  };
  if (w.pass != PassSet::Bwd) {
    add(q, lay.out_o());
    add(q, lay.out_lse());
  }
  if (w.pass != PassSet::Fwd) {
    add(q, lay.out_dq());
    add(k, lay.out_dk());
  }
}

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// The ranks this process runs: transport, backend, executor (destroyed in the reverse order).
struct LocalRank {
  std::int32_t rank = 0;
  std::unique_ptr<CudaTransport> transport;
  std::unique_ptr<CudaBackend> backend;
  std::unique_ptr<Executor> executor;

  LocalRank() = default;
  LocalRank(LocalRank&&) = default;
  LocalRank& operator=(LocalRank&&) = default;
  // Unwinding from an error, the backend's cudaFree would synchronize the device while this rank's NCCL
  // kernels may still wait for peers that will never come: abort the communicators first (NCCL's
  // recovery), so those kernels exit and the frees return.
  ~LocalRank() {
    if (transport && std::uncaught_exceptions() > 0) transport->abort();
  }
};

class TimingEvents {
 public:
  explicit TimingEvents(std::int32_t rank) : rank_(rank) {
    CPS_CUDA_CALL(rank, cudaEventCreate(&start));
    CPS_CUDA_CALL(rank, cudaEventCreate(&end));
  }
  ~TimingEvents() {
    cudaEventDestroy(start);
    cudaEventDestroy(end);
  }
  float elapsed_ms() const {
    float ms = 0;
    CPS_CUDA_CALL(rank_, cudaEventElapsedTime(&ms, start, end));
    return ms;
  }
  cudaEvent_t start = nullptr, end = nullptr;

 private:
  std::int32_t rank_;
};

// Which iterations a run traces, and what tracing found.
struct Iterated {
  std::vector<double> ms;             // the timed iterations (nccl: slowest rank)
  std::vector<bool> traced;           // per timed iteration (trace_overhead)
  double extra_ms = 0;                // the traced iteration after the timed ones (trace)
  bool captured = false;
  instrument::TraceCapture capture;   // the last traced iteration, this process's ranks, CUPTI clock
};

// Warm-up, timed and (with tracing) traced iterations; `issue_all` issues one iteration of every local
// rank. The tracer is created right before the first traced iteration, so CUPTI is not even attached
// while the untraced iterations before it run (its first activation is slow and off the clock: the
// kinds are enabled before the start event is recorded and disabled after the end event).
//
// What an iteration's time holds: the GPU's work, with the host ahead of it, as in a training loop whose
// CPU runs ahead (hold_ms_for: without the hold, the loopback ranks' threads starting, formatting and
// launches would be timed too, for small shapes mostly that). Each iteration after the first starts with
// the first stream held for the previous iteration's host issue, queued before the start event; the
// interval holds the GPU's work plus any time the host still falls behind mid-iteration (which is real).
// The previous iteration's, not the longest: the first one's issue holds one-time costs (modules loaded,
// NCCL connections made) that would otherwise lengthen every hold of the run. The hold is launched before
// CUPTI is switched on, so no trace holds it; under nccl the ranks agree on the longest hold.
template <class IssueAll>
Iterated iterate(std::vector<LocalRank>& ranks, const Workload& w, const CudaRunOptions& opt, ProcessGroup* pg,
                 IssueAll issue_all) {
  const std::int32_t err_rank = ranks.front().rank;
  TimingEvents ev(err_rank);
  std::optional<instrument::CuptiTracer> tracer;
  Iterated out;
  const bool extra = opt.trace && !opt.trace_overhead;
  const std::int32_t total = opt.warmup + opt.iters + (extra ? 1 : 0);
  std::vector<double> ms;
  double issue_ms = 0;  // the previous iteration's host issue (event record to event record)
  for (std::int32_t it = 0; it < total; ++it) {
    const bool timed = it >= opt.warmup && it < opt.warmup + opt.iters;
    const bool traced = (extra && it == total - 1) || (opt.trace_overhead && timed && (it - opt.warmup) % 2 == 1);
    for (LocalRank& r : ranks) {
      if (w.pass == PassSet::Bwd) r.backend->reload_inputs();
      r.backend->begin_iteration();
    }
    CPS_CUDA_CALL(err_rank, cudaDeviceSynchronize());
    if (pg != nullptr) pg->barrier();
    const cudaStream_t s0 = ranks.front().backend->stream(0);
    double hold_ms = issue_ms > 0 ? hold_ms_for(issue_ms) : 0.0;
    if (pg != nullptr) hold_ms = pg->max({hold_ms}).front();  // every rank's GPU starts at once
    hold_stream(hold_ms, s0, fmt::format("rank {}: holding the first stream before iteration {}", err_rank, it));
    const instrument::NvtxRange range(fmt::format("iteration {}{}{}", it, timed ? "" : " (untimed)",
                                                  traced ? " (CUPTI traced)" : ""));
    if (traced) {
      if (!tracer) tracer.emplace(ranks.size() == 1 ? err_rank : -1);
      tracer->start();
      for (LocalRank& r : ranks) r.backend->set_tracing(true);
    }
    const auto issue_start = std::chrono::steady_clock::now();
    CPS_CUDA_CALL(err_rank, cudaEventRecord(ev.start, s0));
    for (LocalRank& r : ranks) r.backend->streams_wait(ev.start);
    issue_all();
    for (LocalRank& r : ranks) r.backend->join_into(s0);
    CPS_CUDA_CALL(err_rank, cudaEventRecord(ev.end, s0));
    issue_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - issue_start).count();
    if (traced) tracer->end_launches();
    for (LocalRank& r : ranks) r.backend->synchronize();
    if (traced) {
      for (LocalRank& r : ranks) r.backend->set_tracing(false);
      out.capture = tracer->finish();
      out.captured = true;
    }
    if (it >= opt.warmup) {
      ms.push_back(ev.elapsed_ms());
      if (timed) out.traced.push_back(traced);
    }
  }
  if (pg != nullptr) ms = pg->max(ms);
  if (extra) {
    out.extra_ms = ms.back();
    ms.pop_back();
  }
  out.ms = std::move(ms);
  return out;
}

// The Timeline of the traced iteration from the op intervals of `traced_ranks` (already on one clock),
// and the statistics of what was traced.
void set_trace(const Schedule& schedule, const std::vector<std::int32_t>& traced_ranks,
               const std::vector<OpInterval>& ops, CudaRunResult& res) {
  res.traced = true;
  res.timeline = measured_timeline(schedule, ops);
  const auto missing = instrument::missing_ops(schedule, traced_ranks, ops);
  res.trace.missing_ops = static_cast<std::int64_t>(missing.size());
  if (!missing.empty()) {
    const Op& op = schedule.ranks[static_cast<std::size_t>(missing.front().rank)].ops[static_cast<std::size_t>(missing.front().op)];
    res.trace.first_missing = fmt::format("rank {} op {} ({})", missing.front().rank, op.id, op_name(op));
  }
}

// Copies the timed iterations and the capture's counters into the result.
void set_iterations(const Iterated& it, const CudaRunOptions& opt, CudaRunResult& res) {
  res.iteration_ms = it.ms;
  if (opt.trace_overhead)
    for (std::size_t i = 0; i < it.ms.size(); ++i) (it.traced[i] ? res.traced_iteration_ms : res.untraced_ms).push_back(it.ms[i]);
  res.traced_ms = opt.trace_overhead ? (res.traced_iteration_ms.empty() ? 0.0 : res.traced_iteration_ms.back()) : it.extra_ms;
  if (it.captured) {
    res.trace.records = it.capture.records;
    res.trace.unattributed = it.capture.unattributed;
    res.trace.windowed = it.capture.windowed;
    res.trace.untimed = it.capture.untimed;
    res.trace.dropped = it.capture.dropped;
  }
}

void validate_options(const Schedule& schedule, const CudaRunOptions& opt) {
  const Workload& w = schedule.workload;
  CudaBackend::check_workload(w);
  if (opt.iters < 1) throw InputError("iters", fmt::format("{}: at least one timed iteration", opt.iters));
  if (opt.warmup < 0) throw InputError("warmup", fmt::format("{}: must be >= 0", opt.warmup));
  if (opt.timeout.count() <= 0) throw InputError("timeout", fmt::format("{} s: must be positive", opt.timeout.count()));
  CPSCOPE_CHECK(static_cast<std::int64_t>(schedule.ranks.size()) == w.cp, "the schedule has a program per CP rank");
  CPSCOPE_CHECK(!schedule.streams.empty(), "the schedule has no streams");
}

CudaBackendConfig backend_config(const Schedule& schedule, const CudaRunOptions& opt, std::int32_t rank,
                                 std::int32_t device) {
  CudaBackendConfig c;
  c.rank = rank;
  c.device = device;
  c.stream_names = schedule.streams;
  c.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(opt.timeout);
  return c;
}

std::int32_t pick_device(const CudaRunOptions& opt, std::int32_t local_rank) {
  const std::int32_t n = device_count();
  if (opt.device >= n) throw InputError("device", fmt::format("{}: only {} CUDA devices are visible", opt.device, n));
  return opt.device >= 0 ? opt.device : local_rank % n;
}

CudaRunResult run_loopback(const Schedule& schedule, const CudaRunOptions& opt) {
  // N virtual ranks issue on N x (the schedule's streams) streams of one GPU, but the driver maps streams onto
  // 8 hardware queues by default, where streams that share one wait for each other's work: the ranks' overlap
  // would be under-measured. 32 is the most; read when the context is created (a value set by the user stays).
  setenv("CUDA_DEVICE_MAX_CONNECTIONS", "32", 0);
  const Workload& w = schedule.workload;
  const auto n = static_cast<std::int32_t>(schedule.ranks.size());
  const std::int32_t device = pick_device(opt, 0);
  CPS_CUDA_CALL(0, cudaSetDevice(device));
  CudaRunResult res;
  describe_device(0, device, res);

  AttentionData in = random_inputs(w, opt.seed);
  for (auto* v : {&in.q, &in.k, &in.v, &in.dout})
    for (double& x : *v) x = round_to(input_type(w), x);
  // Loopback is the correctness transport: a backward-only run gets the real forward outputs even
  // without --check (the sizes it runs at keep the reference cheap).
  Reference ref;
  const bool bwd = w.pass != PassSet::Fwd;
  if (opt.check || w.pass == PassSet::Bwd) {
    std::vector<std::int64_t> q, k;
    if (opt.check)
      for (std::int32_t r = 0; r < n; ++r) wanted_rows(RankLayout(w, r), q, k);
    ref = compute_reference(w, in, q, k, bwd, bwd && opt.check, 0, device);
    if (w.pass == PassSet::Bwd) set_forward_outputs(w, ref, in);
  }

  std::int64_t required = 0;
  for (std::int32_t r = 0; r < n; ++r) required += CudaBackend::required_bytes(RankLayout(w, r));
  check_memory(0, device, required, 0, fmt::format("loopback with {} virtual ranks", n));

  LoopbackWorldPtr world = make_loopback_world(n, std::chrono::duration_cast<std::chrono::milliseconds>(opt.timeout));
  std::vector<LocalRank> ranks(static_cast<std::size_t>(n));
  for (std::int32_t r = 0; r < n; ++r) {
    LocalRank& lr = ranks[static_cast<std::size_t>(r)];
    lr.rank = r;
    lr.transport = make_loopback_transport(*world, r);
    lr.backend = std::make_unique<CudaBackend>(backend_config(schedule, opt, r, device), w, *lr.transport);
    lr.executor = std::make_unique<Executor>(schedule, r, *lr.backend);
    lr.executor->allocate();
    load_rank(*lr.backend, lr.executor->layout(), in);
    res.device_bytes += lr.backend->allocated_bytes() + lr.transport->staging_bytes();
  }

  // Each virtual rank issues from its own thread: a receive blocks its issuing thread until the peer
  // has posted the matching send, just as the ranks of a real run block independently.
  const Iterated it = iterate(ranks, w, opt, nullptr, [&] {
    std::mutex mu;
    std::exception_ptr first;
    std::vector<std::thread> threads;
    for (LocalRank& lr : ranks) {
      threads.emplace_back([&, r = &lr] {
        try {
          CPS_CUDA_CALL(r->rank, cudaSetDevice(device));  // the current device is per host thread
          r->executor->issue();
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(mu);
          if (!first) first = std::current_exception();
          loopback_abort(*world, e.what());
        }
      });
    }
    for (std::thread& t : threads) t.join();
    if (first) std::rethrow_exception(first);
  });
  set_iterations(it, opt, res);
  if (it.captured) {
    // One process, one CUPTI clock: the keys carry the virtual ranks, nothing to align.
    std::vector<std::int32_t> all(static_cast<std::size_t>(n));
    for (std::int32_t r = 0; r < n; ++r) all[static_cast<std::size_t>(r)] = r;
    set_trace(schedule, all, it.capture.ops, res);
  }

  res.ranks = 1;
  res.rank = 0;
  res.ranks_per_node = n;
  if (opt.check) {
    Errors e;
    for (LocalRank& lr : ranks) check_rank(*lr.backend, lr.executor->layout(), ref, e);
    res.check = {true, e.o.value(), e.lse.value(), e.dq.value(), e.dk.value(), e.dv.value()};
  }
  return res;
}

CudaRunResult run_replay(const Schedule& schedule, const CudaRunOptions& opt) {
  const Workload& w = schedule.workload;
  const auto n = static_cast<std::int32_t>(schedule.ranks.size());
  const std::int32_t r = opt.replay_rank;
  if (r < 0 || r >= n) throw InputError("replay_rank", fmt::format("{}: the schedule has ranks 0..{}", r, n - 1));
  if (opt.check)
    throw InputError("check", "replay moves meaningless data (each transfer is NCCL sending to itself); check "
                              "correctness with the loopback or nccl transport");
  const std::int32_t device = pick_device(opt, 0);
  CPS_CUDA_CALL(r, cudaSetDevice(device));
  CudaRunResult res;
  describe_device(r, device, res);

  std::vector<LocalRank> ranks(1);
  LocalRank& lr = ranks[0];
  lr.rank = r;
  lr.transport = make_replay_transport(schedule, r);
  check_memory(r, device, CudaBackend::required_bytes(RankLayout(w, r)) + lr.transport->staging_bytes(),
               lr.transport->library_bytes(), fmt::format("replay of rank {}", r));
  lr.backend = std::make_unique<CudaBackend>(backend_config(schedule, opt, r, device), w, *lr.transport);
  lr.executor = std::make_unique<Executor>(schedule, r, *lr.backend);
  lr.executor->allocate();
  load_rank_generated(*lr.backend, lr.executor->layout(), opt.seed);  // only this rank's shard
  res.device_bytes = lr.backend->allocated_bytes() + lr.transport->staging_bytes();
  const Iterated it = iterate(ranks, w, opt, nullptr, [&] { lr.executor->issue(); });
  set_iterations(it, opt, res);
  if (it.captured) set_trace(schedule, {r}, it.capture.ops, res);
  res.rank = 0;
  res.ranks = 1;
  return res;
}

void check_process_count(std::int64_t ranks, std::int64_t processes) {
  if (processes != ranks)
    throw InputError("cp", fmt::format("the schedule has {} ranks, but {} processes were started (mpirun -np {})",
                                       ranks, processes, ranks));
}

}  // namespace

void check_node_layout(const Workload& w, const NodeLayout& job) {
  check_process_count(w.cp, static_cast<std::int64_t>(job.local_rank.size()));
  const std::string how = " (the simulator models CP rank r on node r / gpus_per_node): start as many processes on "
                          "every node, in rank order (mpirun --map-by slot, srun -m block)";
  if (const std::string why = job.irregular(); !why.empty()) throw InputError("gpus_per_node", why + how);
  const std::int32_t per = job.ranks_per_node();
  for (std::int64_t r = 0; r < w.cp; ++r)
    if (w.node_of(r) != r / per)
      throw InputError(
          "gpus_per_node",
          fmt::format("the workload puts CP rank {} on node {} ({} GPU{} per node{}), but the job runs it on node {} "
                      "({} processes per node on {} node{}): give --gpus-per-node {} or leave it out (cp-profile "
                      "then records the job's)",
                      r, w.node_of(r), w.gpus_per_node, w.gpus_per_node == 1 ? "" : "s",
                      w.tp > 1 ? fmt::format(", tp {} placed {}", w.tp, to_string(w.placement)) : "", r / per, per,
                      job.nodes(), job.nodes() == 1 ? "" : "s", per));
}

namespace {

CudaRunResult run_nccl(const Schedule& schedule, const CudaRunOptions& opt, ProcessGroup& pg) {
  const Workload& w = schedule.workload;
  const std::int32_t r = pg.rank();
  check_process_count(static_cast<std::int64_t>(schedule.ranks.size()), pg.size());
  // Every rank must run the same schedule and the same number of iterations, or the collectives
  // mismatch and hang: compare a hash of what defines them before the first collective.
  pg.check_same(fnv1a(to_json(w).dump() + fmt::format("|{}|{}|{}|{}|{}|{}", opt.warmup, opt.iters, opt.check, opt.seed,
                                                       opt.trace, opt.trace_overhead)),
                 "the workload or the run options (warmup, iters, check, seed, trace)");
  // After the hash check: every rank then has the same options, so all refuse together (a rank that refused
  // alone would leave the others waiting in a collective).
  if ((opt.trace || opt.trace_overhead) && !pg.is_mpi())
    throw InputError("trace", "a traced nccl run aligns its ranks' clocks and gathers their timelines over MPI: run "
                              "the ranks under mpirun or srun, or pass --no-trace");
  // Collective, and every rank reaches the same verdict from the same layout.
  const NodeLayout job = node_layout(pg);
  check_node_layout(w, job);
  const std::int32_t device = pick_device(opt, pg.local_rank());
  CPS_CUDA_CALL(r, cudaSetDevice(device));
  CudaRunResult res;
  describe_device(r, device, res);
  res.nodes = job.nodes();
  res.ranks_per_node = job.ranks_per_node();

  // Timing runs generate only this rank's shard; --check needs the global tensors for the reference.
  AttentionData in;
  Reference ref;
  const RankLayout mine(w, r);
  if (opt.check) {
    in = random_inputs(w, opt.seed);
    for (auto* v : {&in.q, &in.k, &in.v, &in.dout})
      for (double& x : *v) x = round_to(input_type(w), x);
    std::vector<std::int64_t> q, k;
    wanted_rows(mine, q, k);
    ref = compute_reference(w, in, q, k, w.pass != PassSet::Fwd, w.pass != PassSet::Fwd, r, device);
    if (w.pass == PassSet::Bwd) set_forward_outputs(w, ref, in);
  }

  std::vector<LocalRank> ranks(1);
  LocalRank& lr = ranks[0];
  lr.rank = r;
  lr.transport = make_nccl_transport(schedule, pg);
  // NCCL allocates its own buffers per communicator and peer as it goes: the check keeps the transport's
  // estimate of them free.
  check_memory(r, device, CudaBackend::required_bytes(mine) + lr.transport->staging_bytes(),
               lr.transport->library_bytes(), fmt::format("rank {}", r));
  lr.backend = std::make_unique<CudaBackend>(backend_config(schedule, opt, r, device), w, *lr.transport);
  lr.executor = std::make_unique<Executor>(schedule, r, *lr.backend);
  lr.executor->allocate();  // creates the communicators: collective over the ranks
  if (opt.check)
    load_rank(*lr.backend, lr.executor->layout(), in);
  else
    load_rank_generated(*lr.backend, lr.executor->layout(), opt.seed);
  res.device_bytes = lr.backend->allocated_bytes() + lr.transport->staging_bytes();
  // Collective (MPI_Comm_dup): every rank traces, or none (the options are the same everywhere).
  std::optional<instrument::MpiSync> sync;
  if (opt.trace || opt.trace_overhead) sync.emplace();
  const Iterated it = iterate(ranks, w, opt, &pg, [&] { lr.executor->issue(); });
  set_iterations(it, opt, res);
  res.rank = r;
  res.ranks = pg.size();
  if (it.captured) {
    // Each process stamps with its own CUPTI clock: align them to rank 0's (round trips to it), then
    // gather every rank's intervals at rank 0, which builds the Timeline of all ranks.
    instrument::MpiSync::Gathered all = sync->align_and_gather([&] { return instrument::CuptiTracer::now_ns(r); },
                                                                it.capture.ops, it.capture.dropped);
    if (r == 0) {
      std::vector<std::int32_t> every(static_cast<std::size_t>(pg.size()));
      for (std::int32_t k = 0; k < pg.size(); ++k) every[static_cast<std::size_t>(k)] = k;
      set_trace(schedule, every, all.ops, res);
      res.trace.clock_offset_ns = all.clock_offset_ns;
      res.trace.dropped = all.dropped;
    }
  }
  if (opt.check) {
    Errors e;
    check_rank(*lr.backend, lr.executor->layout(), ref, e);
    // Normwise over all ranks: the largest difference over the largest reference value.
    const std::vector<double> m =
        pg.max({e.o.diff, e.o.ref, e.lse.diff, e.lse.ref, e.dq.diff, e.dq.ref, e.dk.diff, e.dk.ref, e.dv.diff, e.dv.ref});
    auto rel = [](double d, double rv) { return rv > 0 ? d / rv : d; };
    res.check = {true, rel(m[0], m[1]), rel(m[2], m[3]), rel(m[4], m[5]), rel(m[6], m[7]), rel(m[8], m[9])};
  }
  return res;
}

}  // namespace

CudaRunResult run_on_cuda(const Schedule& schedule, const CudaRunOptions& options) {
  validate_options(schedule, options);
  // The whole run as one NVTX range carrying its config, so an Nsight Systems report says what it ran.
  const instrument::NvtxRange run_range("cpscope run " + to_json(schedule.workload).dump());
  switch (options.transport) {
    case Transport::Loopback: return run_loopback(schedule, options);
    case Transport::Replay: return run_replay(schedule, options);
    case Transport::Nccl: {
      const std::unique_ptr<ProcessGroup> pg = make_mpi_group();
      return run_nccl(schedule, options, *pg);
    }
  }
  throw InternalError("run_on_cuda: unknown transport");
}

CudaRunResult run_nccl_rank(const Schedule& schedule, const CudaRunOptions& options, ProcessGroup& group) {
  validate_options(schedule, options);
  if (options.transport != Transport::Nccl)
    throw InternalError("run_nccl_rank: a run of the nccl transport (options.transport)");
  return run_nccl(schedule, options, group);
}

}  // namespace cpscope::rt
