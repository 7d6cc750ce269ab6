// cp-profile: runs a CP attention schedule for real and reports per-iteration step time and achieved
// TFLOP/s, optionally checked against plain attention. Backends: host (ranks as CPU threads, double
// precision: laptops and CI) and cuda (one GPU with the loopback or replay transport, or a cluster
// with NCCL under mpirun/srun). A thin main over runtime/; it alone decides exit codes: 0 success,
// 2 bad input (flags, config, a size the backend cannot run), 3 --check mismatch, 1 runtime or
// internal error.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/host_bench.h"
#include "runtime/host_run.h"
#include "runtime/measured.h"
#include "runtime/reference.h"
#include "sim/analysis.h"
#include "sim/error.h"
#include "sim/profile.h"
#include "sim/report.h"
#include "sim/schedule.h"
#include "tools/cli_common.h"
#if defined(CPSCOPE_HAVE_CUDA_RUNTIME)
#include "runtime/cuda/cuda_bench.h"
#include "runtime/cuda/cuda_run.h"
#include "runtime/cuda/transport.h"
#endif

namespace {

using namespace cpscope;
using namespace cpscope::cli;

constexpr const char* kFooter = R"(Examples:
  cp-profile --backend host --seq 4096 --heads 8 --kv-heads 2 --head-dim 64 --cp 4 --check
                                        a laptop: 4 ranks as threads, checked in double precision
  cp-profile --schedule zigzag-ring --cp 8 --seq 131072 --check
                                        one GPU: 8 virtual ranks (loopback), checked against fp32
  cp-profile --transport replay --replay-rank 3 --cp 8 --seq 1M
                                        one GPU runs rank 3 of 8 with real NCCL traffic to itself
  mpirun -np 16 cp-profile --transport nccl --cp 16 --seq 1M --json run.json
  srun -N 2 --ntasks-per-node 8 --gpus-per-task 1 cp-profile --transport nccl --cp 16 --seq 1M

The workload flags are cp-sim's (defaults: a Llama-3-8B-like layer, 131072 tokens, zigzag-ring cp=8,
fwd+bwd). The host backend runs O(seq^2) double-precision math on the CPU: keep --seq small there.
--check compares with plain attention: double precision on the host (relative error <= 1e-10),
fp32 on the GPU (<= 2e-2 for bf16/fp16) and exits 3 on a mismatch.
Exit codes: 0 success, 2 invalid flags/config/values, 3 --check mismatch, 1 runtime error.
)";

// The host backend's work is O(S^2) on one CPU core per rank in double precision; beyond this many
// FLOPs per iteration (a minute or so) it refuses rather than appear to hang.
constexpr double kHostFlopLimit = 2e11;

struct Args {
  WorkloadFlags flags;
  std::string config, backend, transport = "loopback", json, trace;
  std::optional<int> warmup, iters;  // defaults depend on the backend
  int replay_rank = 0, timeout_s = 300;
  bool check = false, no_trace = false, tracing_overhead = false;
  std::uint64_t seed = 1234;
};

struct Checked {
  bool ran = false;
  double tolerance = 0;
  std::vector<std::pair<std::string, double>> errors;  // output name, relative error
  bool ok() const {
    for (const auto& [name, e] : errors)
      if (!(e <= tolerance)) return false;
    return true;
  }
};

nlohmann::json check_json(const Checked& c) {
  nlohmann::json j = {{"ran", c.ran}};
  if (!c.ran) return j;
  j["tolerance"] = c.tolerance;
  j["passed"] = c.ok();
  for (const auto& [name, e] : c.errors) j["relative_error"][name] = std::isfinite(e) ? nlohmann::json(e) : "inf";
  return j;
}

// Per GPU when each rank had one; per device (the one GPU of loopback, the CPU of the host backend) when the
// ranks shared it: N ranks' work on one GPU divided by N would understate what the GPU did N times.
void print_iterations(const Workload& w, const std::vector<double>& ms, const DeviceSharing& sharing) {
  const double flops = static_cast<double>(w.total_flops());
  const double devices = static_cast<double>(sharing.devices(w.cp));
  const std::string per = sharing.shared() ? "device" : "GPU";
  for (std::size_t i = 0; i < ms.size(); ++i)
    std::cout << fmt::format("iteration {:>3}: {:>12.3f} ms   {:>10.4f} TFLOP/s per {}\n", i + 1, ms[i],
                             flops / devices / (ms[i] * 1e-3) / 1e12, per);
  if (ms.empty()) return;
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  std::cout << fmt::format("median {:.3f} ms, min {:.3f} ms, max {:.3f} ms over {} iterations; {:.4f} TFLOP/s per "
                           "{} at the median{}\n",
                           median, sorted.front(), sorted.back(), ms.size(), flops / devices / (median * 1e-3) / 1e12, per,
                           sharing.shared() ? fmt::format(" ({} ranks on it)", sharing.ranks_per_device) : "");
}

void print_check(const Checked& c) {
  if (!c.ran) return;
  for (const auto& [name, e] : c.errors)
    std::cout << fmt::format("check {:<3}: relative error {:.3e} (limit {:.0e}) {}\n", name, e, c.tolerance,
                             e <= c.tolerance ? "ok" : "MISMATCH");
}

int run_host(const Args& a, const Workload& w, const Schedule& s) {
  const double flops = static_cast<double>(w.total_flops()) * (a.check || w.pass == PassSet::Bwd ? 2.0 : 1.0);
  if (flops > kHostFlopLimit)
    throw InputError("seq", fmt::format("the host backend would need {:.0f} GFLOP of double-precision CPU work per "
                                        "iteration (limit {:.0f}); use a shorter --seq (e.g. 4096) or --backend cuda",
                                        flops / 1e9, kHostFlopLimit / 1e9));
  const int warmup = a.warmup.value_or(1);
  const int iters = a.iters.value_or(3);
  rt::AttentionData in = rt::random_inputs(w, a.seed);
  rt::AttentionData ref;
  if (a.check || w.pass == PassSet::Bwd) {
    ref = in;
    rt::reference_forward(w, ref);
    if (w.pass != PassSet::Fwd) rt::reference_backward(w, ref);
    in.o = ref.o;
    in.lse = ref.lse;
  }
  rt::HostRunOptions opt;
  opt.iterations = warmup + iters;
  opt.timeout = std::chrono::seconds(a.timeout_s);
  const rt::HostRunResult r = rt::run_on_host(s, in, opt);

  std::vector<double> ms;
  for (std::size_t i = static_cast<std::size_t>(warmup); i < r.iteration_ns.size(); ++i)
    ms.push_back(static_cast<double>(r.iteration_ns[i]) * 1e-6);
  Checked c;
  if (a.check) {
    c.ran = true;
    c.tolerance = 1e-10;
    if (w.pass != PassSet::Bwd) {
      c.errors.push_back({"o", rt::relative_error(r.out.o, ref.o)});
      c.errors.push_back({"lse", rt::relative_error(r.out.lse, ref.lse)});
    }
    if (w.pass != PassSet::Fwd) {
      c.errors.push_back({"dq", rt::relative_error(r.out.dq, ref.dq)});
      c.errors.push_back({"dk", rt::relative_error(r.out.dk, ref.dk)});
      c.errors.push_back({"dv", rt::relative_error(r.out.dv, ref.dv)});
    }
  }

  // The last iteration's ops as a measured Timeline: the simulator's analysis and reporters apply.
  std::vector<rt::OpInterval> ops;
  for (std::size_t rank = 0; rank < r.intervals.size(); ++rank)
    for (const rt::HostInterval& h : r.intervals[rank])
      ops.push_back({static_cast<std::int32_t>(rank), h.op, h.start_ns, h.end_ns});
  const Timeline timeline = rt::measured_timeline(s, ops);
  RunResult run;
  run.workload = w;
  run.hardware = "host-cpu";
  run.source = "measured";
  run.summary = summarize(timeline, &s);
  // Every rank ran on this CPU, its compute ops on however many cores it has: the simulator must share
  // one device among them to predict this run (cp-sim validate), not give each rank a GPU of its own.
  run.sharing = {static_cast<std::int32_t>(w.cp), static_cast<double>(std::max(1u, std::thread::hardware_concurrency()))};

  print_iterations(w, ms, run.sharing);
  print_check(c);
  std::cout << "\nlast iteration, per rank (host clocks):\n" << summary_table(run);

  nlohmann::json j = profile_json(run, &timeline);  // summary + the last iteration's Timeline
  j["backend"] = "host";
  j["iterations_ms"] = ms;
  j["warmup"] = warmup;
  j["check"] = check_json(c);
  write_outputs({{a.json, "json", text_writer(j.dump(2) + "\n")},
                 {a.trace, "trace", [&](std::ostream& os) { write_chrome_trace(os, timeline, &s); }}});
  return c.ran && !c.ok() ? 3 : 0;
}

#if defined(CPSCOPE_HAVE_CUDA_RUNTIME)
double median_of(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
#endif

int run_cuda(const Args& a, const Workload& w, const Schedule& s) {
#if defined(CPSCOPE_HAVE_CUDA_RUNTIME)
  rt::CudaRunOptions opt;
  if (a.transport == "loopback")
    opt.transport = rt::Transport::Loopback;
  else if (a.transport == "replay")
    opt.transport = rt::Transport::Replay;
  else
    opt.transport = rt::Transport::Nccl;
  if (a.replay_rank < 0 || a.replay_rank >= w.cp)
    throw InputError("replay-rank", fmt::format("{} is not a rank of cp = {}", a.replay_rank, w.cp));
  if (a.no_trace && (!a.trace.empty() || a.tracing_overhead))
    throw InputError("no-trace", "--trace and --tracing-overhead need the CUPTI-traced iteration that --no-trace turns off");
  opt.replay_rank = a.replay_rank;
  opt.warmup = a.warmup.value_or(3);
  opt.iters = a.iters.value_or(10);
  if (a.tracing_overhead && opt.iters < 2)
    throw InputError("iters", fmt::format("{}: --tracing-overhead alternates untraced and traced iterations; give at "
                                          "least 2 (e.g. 20)", opt.iters));
  opt.timeout = std::chrono::seconds(a.timeout_s);
  opt.check = a.check;
  opt.seed = a.seed;
  opt.trace = !a.no_trace;
  opt.trace_overhead = a.tracing_overhead;
  const rt::CudaRunResult r = rt::run_on_cuda(s, opt);
  Checked c;
  if (r.check.ran) {
    c.ran = true;
    c.tolerance = 2e-2;
    if (w.pass != PassSet::Bwd) c.errors = {{"o", r.check.o}, {"lse", r.check.lse}};
    if (w.pass != PassSet::Fwd) {
      c.errors.push_back({"dq", r.check.dq});
      c.errors.push_back({"dk", r.check.dk});
      c.errors.push_back({"dv", r.check.dv});
    }
  }
  if (r.rank != 0) return c.ran && !c.ok() ? 3 : 0;  // nccl: rank 0 reports for every rank

  std::cout << fmt::format("{} ({} SMs), driver {}, CUDA {}, NCCL {}; {} transport, {} of device memory\n",
                           r.device_name, r.sm_count, r.driver_version, r.cuda_version, r.nccl_version, a.transport,
                           format_bytes(r.device_bytes));
  // How the run sat on the hardware, so that validate simulates it as it ran. Loopback: all N virtual ranks on
  // this one GPU, their kernels sharing its SMs and their transfers copies within it. Replay: one rank alone
  // on the GPU, every transfer NCCL sending to itself (a copy within the GPU, not a link). nccl: a GPU per
  // rank over real links (the default).
  const DeviceSharing sharing = opt.transport == rt::Transport::Loopback ? DeviceSharing{static_cast<std::int32_t>(w.cp), 1.0}
                                : opt.transport == rt::Transport::Replay ? DeviceSharing{1, 1.0, true}
                                                                         : DeviceSharing{};
  print_iterations(w, r.iteration_ms, sharing);
  print_check(c);
  nlohmann::json overhead;
  if (a.tracing_overhead) {
    const double off = median_of(r.untraced_ms), on = median_of(r.traced_iteration_ms);
    const double ratio = off > 0 ? on / off : 0.0;
    std::cout << fmt::format("tracing overhead: median {:.3f} ms traced ({} iterations) vs {:.3f} ms untraced ({}): "
                             "x{:.4f} ({:+.2f}%)\n",
                             on, r.traced_iteration_ms.size(), off, r.untraced_ms.size(), ratio, 100.0 * (ratio - 1.0));
    overhead = {{"traced_ms", r.traced_iteration_ms},
                {"untraced_ms", r.untraced_ms},
                {"median_traced_ms", on},
                {"median_untraced_ms", off},
                {"ratio", ratio}};
  }

  // The traced iteration's GPU timeline: the simulator's analysis and reporters apply to it as to a
  // simulated run; the event-timed iterations stay alongside.
  RunResult run;
  run.workload = w;
  run.hardware = r.device_name;
  run.source = "measured";
  run.sharing = sharing;
  if (r.traced) {
    run.summary = summarize(r.timeline, &s);
    // Replay: the other ranks did not run. The summary (table and JSON) has the one that did, and its FLOPs are
    // the total the per-GPU throughput divides; with every rank listed, the others read 100% idle and the
    // throughput came out N times too low.
    if (opt.transport == rt::Transport::Replay) {
      std::erase_if(run.summary.ranks, [&](const RankMetrics& m) { return m.rank != a.replay_rank; });
      if (!run.summary.ranks.empty()) run.summary.total_flops = run.summary.ranks.front().flops;
    }
    std::cout << fmt::format("\ntraced iteration ({:.3f} ms event-timed), per rank (CUPTI GPU timestamps{}):\n",
                             r.traced_ms, opt.transport == rt::Transport::Replay
                                              ? fmt::format("; replay: rank {} only", a.replay_rank)
                                              : "")
              << summary_table(run);
    if (r.trace.missing_ops > 0 || r.trace.dropped > 0)
      std::cout << fmt::format("warning: {} ops without GPU records (first: {}), {} records dropped by CUPTI\n",
                               r.trace.missing_ops, r.trace.first_missing.empty() ? "-" : r.trace.first_missing,
                               r.trace.dropped);
  }
  nlohmann::json j;
  if (r.traced) {
    j = profile_json(run, &r.timeline);
  } else {
    // No timeline (--no-trace): the summary is the median event-timed step.
    const double median = median_of(r.iteration_ms);
    j = {{"schema", kProfileSchema},
         {"source", "measured"},
         {"workload", to_json(w)},
         {"hardware", r.device_name},
         {"step_time_ns", static_cast<std::int64_t>(std::llround(median * 1e6))},
         {"total_flops", w.total_flops()},
         {"achieved_tflops_per_gpu",
          median > 0 ? static_cast<double>(w.total_flops()) / static_cast<double>(w.cp) / (median * 1e-3) / 1e12 : 0.0},
         {"ranks", nlohmann::json::array()}};
    if (run.sharing.recorded()) j["device_sharing"] = sharing_json(run.sharing);
    if (run.sharing.shared()) {
      j["achieved_tflops_per_device"] =
          median > 0 ? static_cast<double>(w.total_flops()) / static_cast<double>(run.sharing.devices(w.cp)) / (median * 1e-3) / 1e12
                     : 0.0;
    }
  }
  j["backend"] = "cuda";
  j["transport"] = a.transport;
  j["iterations_ms"] = r.iteration_ms;
  j["warmup"] = opt.warmup;
  j["device"] = {{"name", r.device_name},
                 {"sm_count", r.sm_count},
                 {"driver", r.driver_version},
                 {"cuda", r.cuda_version},
                 {"nccl", r.nccl_version},
                 {"device_bytes", r.device_bytes}};
  j["nodes"] = {{"nodes", r.nodes}, {"ranks_per_node", r.ranks_per_node}, {"processes", r.ranks}};
  j["check"] = check_json(c);
  if (r.traced)
    j["trace"] = {{"tracer", "cupti"},
                  {"iteration_ms", r.traced_ms},
                  {"traced_ranks", opt.transport == rt::Transport::Replay ? nlohmann::json::array({a.replay_rank})
                                                                           : nlohmann::json("all")},
                  {"records", r.trace.records},
                  {"unattributed_records", r.trace.unattributed},
                  {"windowed_records", r.trace.windowed},
                  {"untimed_records", r.trace.untimed},
                  {"dropped_records", r.trace.dropped},
                  {"ops_without_records", r.trace.missing_ops},
                  {"clock_offset_ns", r.trace.clock_offset_ns}};
  if (!overhead.is_null()) j["tracing_overhead"] = std::move(overhead);
  if (opt.transport == rt::Transport::Replay) j["replay_rank"] = a.replay_rank;
  write_outputs({{a.json, "json", text_writer(j.dump(2) + "\n")},
                 {a.trace, "trace", [&](std::ostream& os) { write_chrome_trace(os, r.timeline, &s); }}});
  return c.ran && !c.ok() ? 3 : 0;
#else
  (void)a;
  (void)w;
  (void)s;
  throw InputError("backend", "this cp-profile was built without the CUDA toolkit; use --backend host, or rebuild on "
                              "a machine with CUDA (nvcc on PATH or CUDACXX set)");
#endif
}

struct BenchArgs {
  std::string backend = "host", transport = "loopback", json;
  rt::BenchOptions options;  // host defaults; the cuda bench takes --blocks/--head-dim/--max-bytes when given
  bool quick = false, blocks_given = false, max_bytes_given = false, head_dim_given = false, heads_given = false,
       kv_heads_given = false;
};

// One line per bench row: what calibration will fit.
void print_bench(const nlohmann::json& j) {
  std::int64_t memcpy_ns = 0;  // the memory kernels' baseline, when the bench ran one
  for (const auto& r : j["rows"])
    if (r["kind"] == "memory" && r.value("baseline", false)) memcpy_ns = r["ns"].get<std::int64_t>();
  for (const auto& r : j["rows"]) {
    if (r["kind"] == "memory") {
      const auto ns = r["ns"].get<std::int64_t>();
      std::string vs;
      if (r.value("baseline", false))
        vs = "  (baseline)";
      else if (memcpy_ns > 0 && r["op"] == "copy bf16")
        vs = fmt::format("  {:.2f}x cudaMemcpy's rate", static_cast<double>(memcpy_ns) / static_cast<double>(ns));
      std::cout << fmt::format("memory       {:<19} {:>12}  {:>12}  {:.1f} GB/s written{}\n", r["op"].get<std::string>(),
                               format_bytes(r["bytes"].get<std::int64_t>()), format_nanos(ns),
                               r["bytes"].get<double>() / static_cast<double>(ns), vs);
    } else if (r["kind"] == "transfer")
      std::cout << fmt::format("transfer     {:>12}  {:>12}\n", format_bytes(r["bytes"].get<std::int64_t>()),
                               format_nanos(r["ns"].get<std::int64_t>()));
    else if (r["kind"] == "attention")
      std::cout << fmt::format("attention    {} {:<6} q={:<5} kv={:<5} {:>12}  {:.3f} GFLOP/s\n", r["pass"].get<std::string>(),
                               r["mask"].get<std::string>(), r["q_tokens"].get<std::int64_t>(),
                               r["kv_tokens"].get<std::int64_t>(), format_nanos(r["ns"].get<std::int64_t>()),
                               r["flops"].get<double>() / r["ns"].get<double>());
    else
      std::cout << fmt::format("interference {} q=kv={}: alone {}, beside a transfer {} ({:.2f}x)\n",
                               r["pass"].get<std::string>(), r["q_tokens"].get<std::int64_t>(),
                               format_nanos(r["alone_ns"].get<std::int64_t>()),
                               format_nanos(r["with_comm_ns"].get<std::int64_t>()),
                               r["with_comm_ns"].get<double>() / r["alone_ns"].get<double>());
  }
}

// The bench options both backends share, each with the backend's own upper bounds (`which` names it).
template <class O>
void check_bench_options(const O& o, std::int64_t max_heads, std::int64_t max_block, std::int64_t min_bytes,
                         const char* which) {
  if (o.repeats < 1) throw InputError("repeats", fmt::format("{} must be >= 1", o.repeats));
  if (o.heads < 1 || o.heads > max_heads || o.kv_heads < 1 || o.heads % o.kv_heads != 0)
    throw InputError("kv-heads", fmt::format("{} KV heads for {} heads: heads within 1..{} ({} backend), KV heads "
                                             ">= 1 and dividing them", o.kv_heads, o.heads, max_heads, which));
  if (o.min_bytes < min_bytes || o.min_bytes > o.max_bytes || o.max_bytes > (4ll << 30))
    throw InputError("max-bytes", fmt::format("{} must be within {}..4 GiB", o.max_bytes, o.min_bytes));
  if (o.block_tokens.empty()) throw InputError("blocks", "no block lengths given");
  for (std::int64_t t : o.block_tokens)
    if (t < 1 || t > max_block)
      throw InputError("blocks", fmt::format("{} is outside 1..{} tokens ({} backend)", t, max_block, which));
}

int run_bench(const BenchArgs& a) {
  check_output_path(a.json, "json");
  nlohmann::json j;
  if (a.backend == "cuda") {
#if defined(CPSCOPE_HAVE_CUDA_RUNTIME)
    rt::CudaBenchOptions o;
    if (a.transport == "replay") o.transport = rt::Transport::Replay;
    if (a.blocks_given) o.block_tokens = a.options.block_tokens;
    if (a.quick) o.block_tokens = {1024, 4096};
    if (a.head_dim_given) o.head_dim = a.options.head_dim;
    if (a.heads_given) o.heads = a.options.heads;
    if (a.kv_heads_given) o.kv_heads = a.options.kv_heads;
    o.repeats = a.options.repeats;
    if (a.max_bytes_given) o.max_bytes = a.options.max_bytes;
    check_bench_options(o, 1024, 65536, 1, "cuda");  // head_dim (64 or 128) is the kernels' own check
    j = rt::run_cuda_bench(o);
#else
    throw InputError("backend", "this cp-profile was built without the CUDA toolkit; use --backend host");
#endif
  } else {
    rt::BenchOptions o = a.options;
    if (a.quick) {
      o.block_tokens = {64, 128};
      o.max_bytes = 4ll << 20;
      o.repeats = 3;
    }
    if (o.head_dim < 1 || o.head_dim > 512) throw InputError("head-dim", fmt::format("{} is outside 1..512", o.head_dim));
    check_bench_options(o, 256, 8192, 8, "host");
    j = rt::run_host_bench(o);
  }
  print_bench(j);
  write_outputs({{a.json, "json", text_writer(j.dump(2) + "\n")}});
  return 0;
}

int main_impl(int argc, char** argv) {
  CLI::App app{"cp-profile: run a context-parallel attention schedule and measure it"};
  app.footer(kFooter);
  app.get_formatter()->column_width(34);
  Args a;
#if defined(CPSCOPE_HAVE_CUDA_RUNTIME)
  a.backend = "cuda";
#else
  a.backend = "host";
#endif
  app.add_option("--backend", a.backend, "host (CPU threads, double precision) or cuda")
      ->check(CLI::IsMember({"host", "cuda"}))
      ->capture_default_str();
  app.add_option("--transport", a.transport,
                 "cuda: loopback (N virtual ranks on one GPU), replay (one rank, NCCL to itself), nccl (mpirun/srun)")
      ->check(CLI::IsMember({"loopback", "replay", "nccl"}))
      ->capture_default_str();
  app.add_option("--replay-rank", a.replay_rank, "replay: the rank of the schedule to run")->capture_default_str();
  app.add_option("--config", a.config, "workload JSON (cp-sim's fields); flags override it")->type_name("FILE");
  add_workload_flags(&app, a.flags, FlagMode::Single,
                     {"schedule", "cp", "ulysses", "batch", "seq", "heads", "kv-heads", "head-dim", "dtype", "mask",
                      "pass", "balance", "dkv", "kv-head-groups", "gpus-per-node"});
  app.get_option("--gpus-per-node")
      ->description("GPUs per node the profile records (default: nccl, the job's processes per node from MPI; "
                    "otherwise N, the whole group on this machine)");
  app.add_option("--warmup", a.warmup, "untimed iterations first (default 1 host, 3 cuda)");
  app.add_option("--iters", a.iters, "timed iterations (default 3 host, 10 cuda)");
  app.add_flag("--check", a.check, "compare the outputs with plain attention; exit 3 on a mismatch");
  app.add_option("--seed", a.seed, "seed of the pseudo-random inputs")->capture_default_str();
  app.add_option("--timeout", a.timeout_s, "seconds a rank waits for a peer before it aborts with the op it waits in")
      ->capture_default_str();
  app.add_option("--json", a.json,
                 "write the results: cpscope.profile/1 JSON with the timeline of the last (host) or the CUPTI-traced "
                 "(cuda) iteration")
      ->type_name("FILE");
  app.add_option("--trace", a.trace, "write that iteration as a Chrome trace (Perfetto UI), sends -> receives as flows")
      ->type_name("FILE");
  app.add_flag("--no-trace", a.no_trace, "cuda: skip the CUPTI-traced iteration (the JSON then has no timeline)");
  app.add_flag("--tracing-overhead", a.tracing_overhead,
               "cuda: alternate untraced and CUPTI-traced timed iterations and report the step-time ratio");
  BenchArgs bench_args;
  CLI::App* bench = app.add_subcommand("bench", "microbenchmarks for cp-sim calibrate: transfers, attention blocks, "
                                                "interference");
  bench->footer(R"(Writes a cpscope.bench/1 JSON that cp-sim calibrate takes next to measured profiles:
  cp-profile bench --backend host --json bench.json && cp-sim calibrate bench.json run*.json -o fitted.json
  cp-profile bench --backend cuda --transport replay --json gpu-bench.json
On one GPU the transfer rows are the transport sending to itself (link "self"): calibration keeps
the link parameters of its base profile and fits them from multi-GPU cp-profile runs instead.)");
  bench->add_option("--backend", bench_args.backend, "host or cuda")
      ->check(CLI::IsMember({"host", "cuda"}))
      ->capture_default_str();
  bench->add_option("--transport", bench_args.transport, "cuda: loopback (device copies) or replay (NCCL to itself)")
      ->check(CLI::IsMember({"loopback", "replay"}))
      ->capture_default_str();
  bench->add_option("--json", bench_args.json, "write the results (cpscope.bench/1)")->type_name("FILE");
  CLI::Option* blocks_opt =
      bench->add_option("--blocks", bench_args.options.block_tokens,
                        "q and kv block lengths of the attention grid (default host 64..512, cuda 1K..16K)")
          ->delimiter(',');
  CLI::Option* head_dim_opt =
      bench->add_option("--head-dim", bench_args.options.head_dim, "head dimension (default host 32, cuda 128)");
  CLI::Option* heads_opt = bench->add_option("--heads", bench_args.options.heads, "query heads (default host 4, cuda 32)");
  CLI::Option* kv_heads_opt =
      bench->add_option("--kv-heads", bench_args.options.kv_heads, "key/value heads (default host 2, cuda 8)");
  CLI::Option* max_bytes_opt =
      bench->add_option("--max-bytes", bench_args.options.max_bytes, "largest transfer (from 1 KiB, x4 steps)")
          ->capture_default_str();
  bench->add_option("--repeats", bench_args.options.repeats, "median of this many runs")->capture_default_str();
  bench->add_flag("--quick", bench_args.quick, "a small grid (tests, smoke runs)");

  if (const int code = parse_args(app, argc, argv, "cp-profile"); code >= 0) return code;
  if (bench->parsed()) {
    bench_args.blocks_given = blocks_opt->count() > 0;
    bench_args.head_dim_given = head_dim_opt->count() > 0;
    bench_args.heads_given = heads_opt->count() > 0;
    bench_args.kv_heads_given = kv_heads_opt->count() > 0;
    bench_args.max_bytes_given = max_bytes_opt->count() > 0;
    return run_bench(bench_args);
  }
  if (a.warmup && *a.warmup < 0) throw InputError("warmup", fmt::format("{} must be >= 0", *a.warmup));
  if (a.iters && *a.iters < 1) throw InputError("iters", fmt::format("{} must be >= 1", *a.iters));
  if (a.timeout_s < 1) throw InputError("timeout", fmt::format("{} must be >= 1 second", a.timeout_s));

  Workload w;
  bool gpn_given = load_base(a.config, w);
  gpn_given = apply_workload_flags(a.flags, w) || gpn_given;
  // The profile's workload says where the ranks ran, so that validate and calibrate tell NVLink transfers from
  // network ones: a cluster job's nodes (check_node_layout refuses a workload that contradicts them), else one
  // machine that holds the whole group.
  if (!gpn_given) w.gpus_per_node = std::max<std::int64_t>(1, w.cp);
  validate(w);  // before MPI starts: a bad flag is refused at once
#if defined(CPSCOPE_HAVE_CUDA_RUNTIME)
  if (a.backend == "cuda" && a.transport == "nccl") {
    const rt::NodeLayout job = rt::node_layout(*rt::make_mpi_group());
    if (!gpn_given) w.gpus_per_node = job.ranks_per_node();
    rt::check_node_layout(w, job);  // the process count, their placement, the workload's nodes against them
    validate(w);
  }
#endif
  check_output_path(a.json, "json");
  check_output_path(a.trace, "trace");
  if (a.backend == "host" && (a.no_trace || a.tracing_overhead))
    throw InputError(a.no_trace ? "no-trace" : "tracing-overhead",
                     "CUPTI tracing is for --backend cuda (the host backend always records its last iteration)");
  if (a.backend == "host" && a.transport != "loopback")
    throw InputError("transport", "the host backend has its own in-process transport; --transport is for --backend cuda");
  const Schedule s = make_schedule(w);
  std::cout << fmt::format("{} cp={}{} seq={} heads={}/{} head_dim={} {} {} {}, backend {}\n", to_string(w.schedule),
                           w.cp, w.schedule == ScheduleKind::Hybrid ? fmt::format(" ulysses={}", w.ulysses) : "",
                           w.seq, w.heads, w.kv_heads, w.head_dim, to_string(w.dtype), to_string(w.mask),
                           to_string(w.pass), a.backend);
  return a.backend == "host" ? run_host(a, w, s) : run_cuda(a, w, s);
}

}  // namespace

int main(int argc, char** argv) {
  const int rc = cpscope::cli::run_tool("cp-profile", [&] { return main_impl(argc, argv); });
#if defined(CPSCOPE_HAVE_CUDA_RUNTIME)
  // A failed rank of an mpirun/srun job (the error is printed above) ends the job: the other ranks may
  // wait for it in a barrier or collective that has no timeout.
  if (rc != 0) cpscope::rt::end_mpi_job(rc);
#endif
  return rc;
}
