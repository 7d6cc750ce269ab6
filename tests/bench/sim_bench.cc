// Simulator speed (Google Benchmark): schedule generation and simulation of a zigzag ring forward +
// backward at N = 128 and N = 1024 ranks (about 6·N² ops), and `plan` over a 1024-GPU cluster.
// Targets: >= 5M simulated ops/s, the N = 1024 step in < 1 s, time per op at N = 1024 within 1.5x of
// N = 128. After the runs a summary prints those figures and says which targets are met.
//
// Every iteration is timed on its own; a repetition's figure is its median iteration (steady state:
// what every config of a sweep or plan costs). Unless told otherwise, each benchmark runs 5
// repetitions in random order among the others' (Google Benchmark's random interleaving), and the
// summary takes the median over repetitions: on a shared virtual machine whose speed drifts for
// seconds at a time, back-to-back iterations measured a row in whichever spell it fell, and two rows
// of one run differed by a third (the engine alone slower than the engine plus summary). The first
// iteration of each row in the process is printed beside it, because in a fresh process it also pays
// the first touch of the records' memory (on virtual machines that costs from nothing to a few tenths
// of a second, depending on the host). The N = 1024 rows run 3 iterations a repetition;
// --benchmark_filter=/128 runs the quick ones, --benchmark_repetitions=1 the old single pass.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include <benchmark/benchmark.h>

#include "sim/analysis.h"
#include "sim/engine.h"
#include "sim/hardware.h"
#include "sim/planner.h"
#include "sim/schedule.h"
#include "sim/workload.h"

namespace {

using namespace cpscope;
using Clock = std::chrono::steady_clock;

Workload ZigzagRing(std::int64_t n) {
  Workload w;  // the default layer: H=32, Hkv=8, D=128, bf16, causal, fwd+bwd, 8 GPUs per node
  w.schedule = ScheduleKind::ZigzagRing;
  w.cp = n;
  w.seq = 1 << 20;  // 1M tokens: divisible by 2N for every N up to 512K
  return w;
}

// Per-iteration wall times of one benchmark run.
class IterationTimes {
 public:
  void start() { t0_ = Clock::now(); }
  void stop() { seconds_.push_back(std::chrono::duration<double>(Clock::now() - t0_).count()); }
  double first() const { return seconds_.empty() ? 0 : seconds_.front(); }
  double median() const {
    if (seconds_.empty()) return 0;
    std::vector<double> v = seconds_;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
  }

 private:
  Clock::time_point t0_;
  std::vector<double> seconds_;
};

// ops; ops/s and ns/op of the median iteration; the median and the seconds of the row's first iteration
// in the process (`row` names it, with its N: its first repetition keeps it).
void SetOpCounters(benchmark::State& state, const std::string& row, std::int64_t ops_per_iteration,
                   const IterationTimes& times) {
  static std::map<std::string, double> first_in_process;
  const double first = first_in_process.try_emplace(row, times.first()).first->second;
  const double ops = static_cast<double>(ops_per_iteration);
  const double median = times.median();
  state.counters["ops"] = benchmark::Counter(ops);
  state.counters["ops/s"] = benchmark::Counter(median > 0 ? ops / median : 0);
  state.counters["ns/op"] = benchmark::Counter(ops > 0 ? median * 1e9 / ops : 0);
  state.counters["median_s"] = benchmark::Counter(median);
  state.counters["first_s"] = benchmark::Counter(first);
  state.counters["iterations"] = benchmark::Counter(static_cast<double>(state.iterations()));
}

void BM_ZigzagGenerate(benchmark::State& state) {
  const Workload w = ZigzagRing(state.range(0));
  std::int64_t ops = 0;
  IterationTimes times;
  for (auto _ : state) {
    times.start();
    Schedule s = make_schedule(w);
    times.stop();
    ops = s.num_ops();
    benchmark::DoNotOptimize(s.ranks.data());
  }
  SetOpCounters(state, "generate/" + std::to_string(state.range(0)), ops, times);
}

// Simulation without a Timeline (record_timeline = false), and with `summarize` the summary of the
// engine's per-rank totals after it.
void SimulateStatistics(benchmark::State& state, bool summarize_too) {
  const Schedule s = make_schedule(ZigzagRing(state.range(0)));
  const HardwareProfile& hw = default_hardware();
  SimOptions options;
  options.record_timeline = false;
  std::int64_t ops = 0;
  IterationTimes times;
  for (auto _ : state) {
    times.start();
    SimResult r = simulate(s, hw, options);
    if (summarize_too) benchmark::DoNotOptimize(summarize(r, s).step_time_ns);
    times.stop();
    ops = r.stats.ops_executed;
    benchmark::DoNotOptimize(r.stats.makespan);
  }
  SetOpCounters(state, (summarize_too ? "simulate+summarize/" : "simulate/") + std::to_string(state.range(0)), ops,
                times);
}

// The engine alone.
void BM_ZigzagSimulate(benchmark::State& state) { SimulateStatistics(state, false); }

// What cp-sim run/sweep/plan do per config: simulate without a Timeline, then summarize.
void BM_ZigzagSimulateAndSummarize(benchmark::State& state) { SimulateStatistics(state, true); }

// The Timeline path (cp-sim run --trace): record every interval, then summarize the Timeline.
void BM_ZigzagSimulateTimelineAndSummarize(benchmark::State& state) {
  const Schedule s = make_schedule(ZigzagRing(state.range(0)));
  const HardwareProfile& hw = default_hardware();
  std::int64_t ops = 0;
  IterationTimes times;
  for (auto _ : state) {
    times.start();
    SimResult r = simulate(s, hw, {});
    Summary sum = summarize(r.timeline, &s);
    times.stop();
    ops = r.stats.ops_executed;
    benchmark::DoNotOptimize(sum.step_time_ns);
  }
  SetOpCounters(state, "timeline/" + std::to_string(state.range(0)), ops, times);
}

// `cp-sim plan --gpus 1024 --gpus-per-node 8` on the default layer (131072 tokens).
void BM_Plan1024Gpus(benchmark::State& state) {
  PlanSpec spec;
  spec.gpus = 1024;
  spec.base.gpus_per_node = 8;
  std::int64_t ops = 0, simulated = 0, candidates = 0;
  IterationTimes times;
  for (auto _ : state) {
    times.start();
    PlanResult r = run_plan(spec, default_hardware());
    times.stop();
    ops = 0;
    for (const PlanEntry& e : r.ranked) ops += e.result.stats.ops_executed;
    simulated = static_cast<std::int64_t>(r.ranked.size());
    candidates = static_cast<std::int64_t>(r.candidates);
    benchmark::DoNotOptimize(r.ranked.data());
  }
  SetOpCounters(state, "plan", ops, times);
  state.counters["candidates"] = benchmark::Counter(static_cast<double>(candidates));
  state.counters["simulated"] = benchmark::Counter(static_cast<double>(simulated));
}

// N = 1024 takes about a second per iteration: a fixed count a repetition (3 x 5 repetitions).
constexpr int kLargeIterations = 3;
BENCHMARK(BM_ZigzagGenerate)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ZigzagGenerate)->Arg(1024)->Iterations(kLargeIterations)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ZigzagSimulate)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ZigzagSimulate)->Arg(1024)->Iterations(kLargeIterations)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ZigzagSimulateAndSummarize)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ZigzagSimulateAndSummarize)
    ->Arg(1024)
    ->Iterations(kLargeIterations)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ZigzagSimulateTimelineAndSummarize)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ZigzagSimulateTimelineAndSummarize)
    ->Arg(1024)
    ->Iterations(kLargeIterations)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Plan1024Gpus)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// Prints the console output as usual and remembers each run's counters for the summary.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  explicit SummaryReporter(bool color) : ConsoleReporter(color ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    // One repetition: its run. Several: their median (an aggregate takes the place of the runs).
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      if (run.run_type == Run::RT_Aggregate && !median) continue;
      Figures& f = figures_[run.run_name.str()];
      if (f.from_median && !median) continue;
      for (const auto& [name, counter] : run.counters) f.counters[name] = counter.value;
      f.from_median = median;
      f.repetitions = median ? static_cast<double>(run.repetitions) : 1;
    }
  }

  void PrintSummary() const {
    std::printf("\nSummary. Targets (issue 2, on this machine): >= 5M simulated ops/s at N=128 and N=1024; the N=1024\n"
                "step (simulate() with its set-up) in < 1 s; ns/op at N=1024 within 1.5x of N=128.\n"
                "Target rows: BM_ZigzagSimulate (the engine) and BM_ZigzagSimulateAndSummarize (what cp-sim\n"
                "run/sweep/plan do per config); the Timeline row is for reference (cp-sim run --trace).\n"
                "Figures: the median over repetitions of each repetition's median iteration (repetitions\n"
                "interleaved at random); `first`: the row's first iteration in this process, which also pays\n"
                "the first touch of its memory.\n");
    struct Row {
      const char* name;
      bool target;
    };
    for (const Row row : {Row{"BM_ZigzagSimulate", true}, Row{"BM_ZigzagSimulateAndSummarize", true},
                          Row{"BM_ZigzagSimulateTimelineAndSummarize", false}, Row{"BM_ZigzagGenerate", false}}) {
      const Figures* small = find(std::string(row.name) + "/128/");
      const Figures* large = find(std::string(row.name) + "/1024/");
      if (!small && !large) continue;
      std::printf("  %s\n", row.name);
      for (const auto& [n, f] : {std::pair<int, const Figures*>{128, small}, {1024, large}}) {
        if (!f) continue;
        std::printf("    N=%-4d %8.0f ops  %5.2f M ops/s  %6.1f ns/op  %.3f s per step (%.0f x %.0f iterations; first %.3f s)\n",
                    n, f->counters.at("ops"), f->counters.at("ops/s") / 1e6, f->counters.at("ns/op"),
                    f->counters.at("median_s"), f->repetitions, f->counters.at("iterations"), f->counters.at("first_s"));
      }
      const double ratio = small && large ? large->counters.at("ns/op") / small->counters.at("ns/op") : 0;
      if (small && large) std::printf("    ns/op ratio N=1024 / N=128: %.2fx\n", ratio);
      if (!row.target) continue;
      auto verdict = [](bool met) { return met ? "MET" : "NOT MET"; };
      if (small) {
        const double rate = small->counters.at("ops/s");
        std::printf("    target >= 5M ops/s at N=128:   %-7s (%.2f M ops/s)\n", verdict(rate >= 5e6), rate / 1e6);
      }
      if (large) {
        const double rate = large->counters.at("ops/s");
        std::printf("    target >= 5M ops/s at N=1024:  %-7s (%.2f M ops/s)\n", verdict(rate >= 5e6), rate / 1e6);
        const double step = large->counters.at("median_s"), first = large->counters.at("first_s");
        std::printf("    target N=1024 step < 1 s:      %-7s (%.3f s median; the first run %.3f s: %s)\n",
                    verdict(step < 1.0), step, first, first < 1.0 ? "under" : "over");
      }
      if (small && large)
        std::printf("    target ns/op ratio <= 1.5x:    %-7s (%.2fx)\n", verdict(ratio <= 1.5), ratio);
    }
    if (const Figures* plan = find("BM_Plan1024Gpus/")) {
      std::printf("  BM_Plan1024Gpus: %.0f candidates, %.0f simulated, %.0f ops in %.3f s (%.1f M ops/s)\n",
                  plan->counters.at("candidates"), plan->counters.at("simulated"), plan->counters.at("ops"),
                  plan->counters.at("median_s"), plan->counters.at("ops/s") / 1e6);
    }
  }

 private:
  struct Figures {
    std::map<std::string, double> counters;
    double repetitions = 0;
    bool from_median = false;
  };
  // The run whose name starts with `prefix` (names carry /iterations:K/ or /real_time after it).
  const Figures* find(const std::string& prefix) const {
    const auto it = figures_.lower_bound(prefix);
    return it != figures_.end() && it->first.rfind(prefix, 0) == 0 ? &it->second : nullptr;
  }
  std::map<std::string, Figures> figures_;
};

}  // namespace

int main(int argc, char** argv) {
  // Honour --benchmark_format=json|csv (the library's own reporter, no summary) and
  // --benchmark_color (colour only on a terminal unless asked).
  bool console = true, color = isatty(STDOUT_FILENO) != 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--benchmark_format=", 0) == 0 && arg != "--benchmark_format=console") console = false;
    if (arg == "--benchmark_color=false" || arg == "--benchmark_color=no") color = false;
    if (arg == "--benchmark_color=true" || arg == "--benchmark_color=yes") color = true;
  }
  // Defaults (a flag given on the command line wins): 5 repetitions interleaved at random, the console
  // showing their aggregates.
  std::vector<char*> args(argv, argv + argc);
  std::string defaults[] = {"--benchmark_repetitions=5", "--benchmark_enable_random_interleaving=true",
                            "--benchmark_display_aggregates_only=true"};
  for (std::string& d : defaults) {
    const std::string flag = d.substr(0, d.find('=') + 1);
    if (std::none_of(argv + 1, argv + argc, [&](const char* a) { return std::string(a).rfind(flag, 0) == 0; }))
      args.insert(args.begin() + 1, d.data());
  }
  argc = static_cast<int>(args.size());
  args.push_back(nullptr);
  argv = args.data();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (!console) {
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
  }
  SummaryReporter reporter(color);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSummary();
  benchmark::Shutdown();
  return 0;
}
