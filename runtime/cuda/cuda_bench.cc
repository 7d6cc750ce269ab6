#include "runtime/cuda/cuda_bench.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <vector>

#include <fmt/format.h>

#include "runtime/cuda/check.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/host_bench.h"
#include "runtime/kernels/attention.h"
#include "runtime/kernels/host_dtype.h"
#include "sim/error.h"

namespace cpscope::rt {
namespace {

namespace k = kernels;
constexpr std::int32_t kRank = 0;  // errors name rank 0: the bench is one process on one GPU

// Device memory freed on scope exit (the bench allocates a handful of large buffers).
class DeviceMem {
 public:
  explicit DeviceMem(std::int64_t bytes) {
    CPS_CUDA_CALL(kRank, cudaMalloc(&p_, static_cast<std::size_t>(std::max<std::int64_t>(bytes, 256))));
  }
  ~DeviceMem() { cudaFree(p_); }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  template <class T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

class Events {
 public:
  Events() {
    CPS_CUDA_CALL(kRank, cudaEventCreate(&a_));
    CPS_CUDA_CALL(kRank, cudaEventCreate(&b_));
  }
  ~Events() {
    cudaEventDestroy(a_);
    cudaEventDestroy(b_);
  }
  // Median time of `f` enqueued on `s` over `repeats` runs (after two warm-ups), in ns: the GPU's time, without
  // the host's launches (NCCL's group launch, a backward's four kernels: for a 1K block or a small transfer,
  // most of the interval, which calibration would fit as kernel and link time). So after the warm-ups `s` is
  // first held (hold_ms_for) for the time the host took to enqueue `f` the run before. Not with `before`, nor
  // with `hold` false
  // (the interference rows, alone and beside transfers alike, so their ratio compares like with like): the
  // transfers on another stream would run during the hold instead of beside the kernel, whose size makes
  // launch time negligible there.
  template <class F>
  std::int64_t median_ns(cudaStream_t s, int repeats, F f, const std::function<void()>& before = {},
                         bool hold = true) {
    std::vector<float> ms;
    double enqueue_ms = 0;
    for (int i = 0; i < repeats + 2; ++i) {
      if (before) before();
      if (hold && !before && i >= 2) hold_stream(hold_ms_for(enqueue_ms), s, "cuda bench: holding the stream");
      const auto t0 = std::chrono::steady_clock::now();
      CPS_CUDA_CALL(kRank, cudaEventRecord(a_, s));
      f();
      CPS_CUDA_CALL(kRank, cudaEventRecord(b_, s));
      enqueue_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      CPS_CUDA_CALL(kRank, cudaDeviceSynchronize());
      float t = 0;
      CPS_CUDA_CALL(kRank, cudaEventElapsedTime(&t, a_, b_));
      if (i >= 2) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return std::llround(static_cast<double>(ms[ms.size() / 2]) * 1e6);
  }

 private:
  cudaEvent_t a_ = nullptr, b_ = nullptr;
};

// Pseudo-random bf16 in [-1, 1) (a small LCG: the values only need to be ordinary numbers).
void fill_bf16(void* dst, std::int64_t n) {
  std::vector<std::uint16_t> h(static_cast<std::size_t>(n));
  std::uint64_t x = 88172645463325252ull;
  for (auto& v : h) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v = k::host::f32_to_bf16(static_cast<float>(static_cast<double>(x >> 11) * 0x1.0p-52 - 1.0));
  }
  CPS_CUDA_CALL(kRank, cudaMemcpy(dst, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
}

}  // namespace

nlohmann::json run_cuda_bench(const CudaBenchOptions& o) {
  if (o.transport == Transport::Nccl)
    throw InputError("transport", "the bench runs on one GPU: loopback or replay (measure a cluster's links with "
                                  "cp-profile --transport nccl runs and calibrate on their profiles)");
  if (o.head_dim != 64 && o.head_dim != 128)
    throw InputError("head-dim", fmt::format("{}: the kernels take 64 or 128", o.head_dim));
  if (o.heads % o.kv_heads != 0) throw InputError("kv-heads", "must divide heads");
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    throw DeviceError("no usable CUDA device; cp-profile bench --backend host runs on the CPU");
  CPS_CUDA_CALL(kRank, cudaSetDevice(std::max(0, o.device)));
  cudaDeviceProp prop{};
  CPS_CUDA_CALL(kRank, cudaGetDeviceProperties(&prop, std::max(0, o.device)));

  const std::int64_t T = *std::max_element(o.block_tokens.begin(), o.block_tokens.end());
  const std::int64_t H = o.heads, Hk = o.kv_heads, D = o.head_dim;
  DeviceMem q(T * H * D * 2), kk(T * Hk * D * 2), v(T * Hk * D * 2), dout(T * H * D * 2);
  DeviceMem out(T * H * D * 4), lse(H * T * 4), delta(H * T * 4), dq(T * H * D * 4), dk(T * Hk * D * 4),
      dv(T * Hk * D * 4);
  fill_bf16(q.get(), T * H * D);
  fill_bf16(kk.get(), T * Hk * D);
  fill_bf16(v.get(), T * Hk * D);
  fill_bf16(dout.get(), T * H * D);
  cudaStream_t s = nullptr, noise = nullptr;
  CPS_CUDA_CALL(kRank, cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CPS_CUDA_CALL(kRank, cudaStreamCreateWithFlags(&noise, cudaStreamNonBlocking));
  Events ev;

  auto block = [&](std::int64_t ql, std::int64_t kl, bool causal) {
    k::AttnBlockArgs b{};
    b.q_len = ql;
    b.kv_len = kl;
    b.head_count = static_cast<int>(H);
    b.gqa_ratio = static_cast<int>(H / Hk);
    b.causal = causal;
    b.scale = 1.0f / std::sqrt(static_cast<float>(D));
    return b;
  };
  // The bf16 inputs both passes read.
  auto inputs = [&](std::int64_t ql, std::int64_t kl) {
    return k::AttnInputs{k::DType::BF16, static_cast<int>(D), 1, q.get(), ql, static_cast<int>(H),
                         kk.get(), v.get(), kl, static_cast<int>(Hk)};
  };
  auto fwd = [&](std::int64_t ql, std::int64_t kl, bool causal) {
    k::attn_fwd(k::AttnFwdArgs{inputs(ql, kl), out.get<float>(), lse.get<float>(), false, block(ql, kl, causal)}, s);
  };
  auto bwd = [&](std::int64_t ql, std::int64_t kl, bool causal) {
    k::attn_bwd_preprocess(k::DType::FP32, k::DType::BF16, out.get(), dout.get(), delta.get<float>(), 1, ql,
                           static_cast<int>(H), static_cast<int>(D), s);
    k::attn_bwd(k::AttnBwdArgs{inputs(ql, kl), dout.get(), lse.get<float>(), delta.get<float>(), dq.get<float>(),
                               dk.get<float>(), dv.get<float>(), block(ql, kl, causal)},
                s);
  };

  nlohmann::json rows = nlohmann::json::array();
  auto attention_row = [&](std::int64_t ql, std::int64_t kl, bool causal, bool backward) {
    return bench_attention_row(backward, causal, D, ql, kl, 1, H);
  };
  for (const bool backward : {false, true})
    for (std::int64_t ql : o.block_tokens)
      for (std::int64_t kl : o.block_tokens)
        for (const bool causal : {false, true}) {
          if (causal && ql != kl) continue;  // causal blocks of a ring step are its diagonal: square
          if (backward) fwd(ql, kl, causal);  // the backward reads this block's forward O and LSE
          nlohmann::json row = attention_row(ql, kl, causal, backward);
          row["ns"] = ev.median_ns(s, o.repeats, [&] { backward ? bwd(ql, kl, causal) : fwd(ql, kl, causal); });
          rows.push_back(std::move(row));
        }

  // The buffers of the memory kernels, the transfers and the comm load of the interference rows.
  DeviceMem src(o.max_bytes), dst(o.max_bytes);
  // Memory kernels, as Layout, DkvAdd, the transports' packing and the fills run them: rows of Hkv heads of
  // head_dim, as many as fit the buffers in fp32, each row giving the bytes the kernel writes (the simulator's
  // Op::bytes convention) and one kernel. cudaMemcpyAsync of the bf16 copy's bytes is the baseline, in the same
  // run ("baseline": true: calibrate never fits it, the ratio says how far copy_block is from it).
  const std::int64_t mem_rows = o.max_bytes / 4 / (Hk * D);
  if (mem_rows > 0) {
    const std::int64_t elems = mem_rows * Hk * D;
    k::fill_f32(src.get<float>(), elems, 1.f, s);  // finite values in every dtype
    k::fill_f32(dst.get<float>(), elems, 1.f, s);
    auto copy = [&](k::DType from, k::DType to, bool add) {
      const k::CopyBlockArgs c{from, to, src.get(), dst.get(), 1, mem_rows, static_cast<int>(Hk), mem_rows,
                               static_cast<int>(Hk), static_cast<int>(D), 0, 0, mem_rows, 0, 0, static_cast<int>(Hk),
                               add};
      k::copy_block(c, s);
    };
    auto memory_row = [&](const char* op, std::int64_t bytes, const std::function<void()>& f) {
      nlohmann::json row = {{"kind", "memory"}, {"op", op}, {"bytes", bytes}, {"kernels", 1},
                            {"ns", ev.median_ns(s, o.repeats, f)}};
      return row;
    };
    rows.push_back(memory_row("copy bf16", elems * 2, [&] { copy(k::DType::BF16, k::DType::BF16, false); }));
    rows.push_back(memory_row("add fp32", elems * 4, [&] { copy(k::DType::FP32, k::DType::FP32, true); }));
    rows.push_back(memory_row("add fp32 into bf16", elems * 2, [&] { copy(k::DType::FP32, k::DType::BF16, true); }));
    rows.push_back(memory_row("fill fp32", elems * 4, [&] { k::fill_f32(dst.get<float>(), elems, 0.f, s); }));
    nlohmann::json base = memory_row("memcpy", elems * 2, [&] {
      CPS_CUDA_CALL(kRank, cudaMemcpyAsync(dst.get(), src.get(), static_cast<std::size_t>(elems * 2),
                                           cudaMemcpyDeviceToDevice, s));
    });
    base["baseline"] = true;
    rows.push_back(std::move(base));
  }
  ncclComm_t comm = nullptr;
  if (o.transport == Transport::Replay) {
    ncclUniqueId id;
    CPS_NCCL_CALL(kRank, ncclGetUniqueId(&id));
    CPS_NCCL_CALL(kRank, ncclCommInitRank(&comm, 1, id, 0));
  }
  auto send = [&](std::int64_t bytes, cudaStream_t on) {
    if (comm == nullptr) {
      CPS_CUDA_CALL(kRank, cudaMemcpyAsync(dst.get(), src.get(), static_cast<std::size_t>(bytes),
                                           cudaMemcpyDeviceToDevice, on));
      return;
    }
    CPS_NCCL_CALL(kRank, ncclGroupStart());
    CPS_NCCL_CALL(kRank, ncclSend(src.get(), static_cast<std::size_t>(bytes), ncclUint8, 0, comm, on));
    CPS_NCCL_CALL(kRank, ncclRecv(dst.get(), static_cast<std::size_t>(bytes), ncclUint8, 0, comm, on));
    CPS_NCCL_CALL(kRank, ncclGroupEnd());
  };
  try {
    for (std::int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 4)
      rows.push_back({{"kind", "transfer"}, {"link", "self"}, {"bytes", bytes},
                      {"ns", ev.median_ns(s, o.repeats, [&] { send(bytes, s); })}});
    // The comm load: the largest message measured (the last transfer row, read before the interference rows
    // follow it), back to back.
    const std::int64_t message = rows.back()["bytes"].get<std::int64_t>();
    const auto per_message_ns = std::max<std::int64_t>(1, rows.back()["ns"].get<std::int64_t>());
    const std::int64_t big = T;
    for (const bool backward : {false, true}) {
      if (backward) fwd(big, big, false);
      auto run = [&] { backward ? bwd(big, big, false) : fwd(big, big, false); };
      const std::int64_t alone = ev.median_ns(s, o.repeats, run, {}, /*hold=*/false);
      // Enough back-to-back messages on the other stream to outlast the kernel several times.
      const std::int64_t count = std::clamp<std::int64_t>(4 * alone / per_message_ns + 1, 2, 2000);
      const std::int64_t with = ev.median_ns(s, o.repeats, run, [&] {
        for (std::int64_t i = 0; i < count; ++i) send(message, noise);
      });
      nlohmann::json row = attention_row(big, big, false, backward);
      row["kind"] = "interference";
      row["alone_ns"] = alone;
      row["with_comm_ns"] = with;
      rows.push_back(std::move(row));
    }
  } catch (...) {
    if (comm != nullptr) ncclCommAbort(comm);
    cudaStreamDestroy(s);
    cudaStreamDestroy(noise);
    throw;
  }
  if (comm != nullptr) CPS_NCCL_CALL(kRank, ncclCommDestroy(comm));
  CPS_CUDA_CALL(kRank, cudaStreamDestroy(s));
  CPS_CUDA_CALL(kRank, cudaStreamDestroy(noise));
  int nccl_version = 0;
  ncclGetVersion(&nccl_version);
  return {{"schema", "cpscope.bench/1"},
          {"backend", "cuda"},
          {"transport", o.transport == Transport::Replay ? "replay" : "loopback"},
          {"device", {{"name", prop.name}, {"sm_count", prop.multiProcessorCount}, {"nccl", nccl_version}}},
          {"options",
           {{"block_tokens", o.block_tokens}, {"head_dim", D}, {"heads", H}, {"kv_heads", Hk}, {"repeats", o.repeats}}},
          {"rows", std::move(rows)}};
}

}  // namespace cpscope::rt
