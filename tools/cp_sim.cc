// cp-sim: what-if planning for context-parallel attention: simulate one config (run), a grid of configs
// (sweep), or every way to lay out a cluster (plan). A thin main over sim/planner.h; it alone decides
// exit codes: 0 success, 2 bad input (flags, config, values, output paths), 1 internal error.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sim/calibrate.h"
#include "sim/error.h"
#include "sim/hardware.h"
#include "sim/planner.h"
#include "sim/profile.h"
#include "sim/progress.h"
#include "sim/report.h"
#include "sim/schedule.h"
#include "sim/workload.h"
#include "tools/cli_common.h"

namespace {

using namespace cpscope;
using namespace cpscope::cli;

constexpr const char* kMainFooter = R"(Examples:
  cp-sim plan                                   best layout for the defaults (8 H100 SXM, 128K tokens)
  cp-sim plan --gpus 64 --seq 1M --top 5        a 64-GPU cluster, 1M-token sequences
  cp-sim run --schedule ring --cp 8 --json out.json --trace trace.json
  cp-sim sweep --schedule all --cp 2,4,8,16 --seq 32k:1M:x2 --csv sweep.csv
  cp-sim calibrate measured/*.json -o fitted.json   fit a hardware profile to cp-profile runs
  cp-sim validate --leave-one-out measured/*.json     how well the simulator predicts them

Defaults: a Llama-3-8B-like attention layer (H=32, Hkv=8, D=128, bf16, causal, fwd+bwd, 131072
tokens) with zigzag-ring cp=8 on one node of 8 H100 SXM (the embedded h100-sxm profile).
Exit codes: 0 success, 2 invalid flags/config/values (the message names the field and the rule),
1 internal error.
)";

constexpr const char* kRunFooter = R"(Examples:
  cp-sim run                                            the defaults: zigzag-ring cp=8, 128K tokens
  cp-sim run --schedule hybrid --cp 16 --ulysses 8 --seq 256k
  cp-sim run --schedule allgather --kv-head-groups 4 --balance zigzag --json run.json
  cp-sim run --config layer.json --cp 16 --trace trace.json   (flags override the file)
  cp-sim run --hardware h200-sxm --gpus-per-node 8 --seq 1M --cp 32
  cp-sim run --cp 8 --ranks-per-device 8                (all 8 ranks on one GPU, as cp-profile loopback)

--config takes a JSON object of workload fields (batch, seq, heads, kv_heads, head_dim, dtype, mask,
pass, schedule, cp, ulysses, balance, dkv, kv_head_groups, gpus_per_node, tp, dp, placement); unknown
fields are rejected. --trace opens in https://ui.perfetto.dev or chrome://tracing.
)";

constexpr const char* kSweepFooter = R"(Every workload flag takes a list or a range:
  numbers: 2,4,8,16 | START:STOP (step 1) | START:STOP:+STEP | START:STOP:xFACTOR, mixable: 1,2,8:64:x2
           (k = 1024 and m = 1048576 suffixes: 32k:1m:x2)
  names:   ring,zigzag-ring | all
Every valid combination is simulated; invalid ones are listed with the rule they break.

Examples:
  cp-sim sweep --schedule all --cp 2,4,8,16 --seq 32768:1048576:x2
  cp-sim sweep --schedule ring,zigzag-ring --mask causal,full --cp 8 --json sweep.json
  cp-sim sweep --hardware h100-sxm,h200-sxm --cp 8:64:x2 --seq 1M --csv sweep.csv
)";

constexpr const char* kPlanFooter = R"(Enumerates CP sizes (divisors of gpus / tp; dp = gpus / (cp * tp)), all five schedules,
hybrid U x R splits (1 < U < N; U must divide gpus-per-node so the all-to-all stays in one node),
zigzag/contiguous balance for allgather and hybrid, and allgather KV-head groups 1, 2, 4 (where
they divide kv-heads); cp=1 is the plain single-GPU baseline. Drops what breaks a rule or does not
fit: attention peak memory + --reserve-gib (weights, optimizer state, other activations) > the GPU's
memory. --schedule, --cp, --ulysses, --balance and --kv-head-groups take lists to narrow the
enumeration. Ranked by the step time of one CP group (a larger CP group always does less work per
step); --rank-by throughput ranks by step time / dp, the cluster's time per sequence.

Examples:
  cp-sim plan                                 one node of 8 H100 SXM, 131072 tokens (the defaults)
  cp-sim plan --gpus 64 --seq 1M --top 5 --verbose
  cp-sim plan --gpus 1024 --seq 512k --rank-by throughput --json plan.json
  cp-sim plan --gpus 16 --schedule ring,hybrid --reserve-gib 60 --csv plan.csv
)";


int parse_jobs(int jobs) {
  if (jobs < 1) throw InputError("jobs", fmt::format("{} must be >= 1", jobs));
  return jobs;
}

// ---- run -------------------------------------------------------------------------------------------

constexpr std::int64_t kRunProgressOps = 2'000'000;  // about a second of generation and simulation

struct RunArgs {
  WorkloadFlags flags;
  std::string config, hardware, json, trace, profile;
  DeviceSharing sharing;
};

int cmd_run(const RunArgs& a) {
  const HardwareProfile hw = hardware_of(a.hardware);
  Workload w;
  bool gpn_set = load_base(a.config, w);
  gpn_set = apply_workload_flags(a.flags, w) || gpn_set;
  if (!gpn_set) w.gpus_per_node = hw.gpus_per_node;
  validate(w);
  if (const std::string note = placement_note(w); !note.empty()) std::cerr << "cp-sim: note: " << note << "\n";
  check_sharing(a.sharing, "ranks-per-device", "compute-slots");
  check_output_path(a.json, "json");
  check_output_path(a.trace, "trace");
  check_output_path(a.profile, "profile");

  // A large schedule takes seconds (a 2048-rank ring, 25M ops, about 16 s on 2 cores): say so on a
  // terminal, from the start, rather than after the usual one-second delay.
  const std::int64_t ops = schedule_ops_estimate(w);
  Progress progress(std::cerr, ops >= kRunProgressOps && isatty(STDERR_FILENO) != 0, &Progress::Clock::now,
                    std::chrono::nanoseconds(0));
  progress.update(0, 1, fmt::format("{}: about {:.1f}M ops", describe(w), static_cast<double>(ops) / 1e6));
  const SimulatedRun run = simulate_workload(w, hw, !a.trace.empty() || !a.profile.empty(), a.sharing);
  progress.finish();
  std::vector<Output> outputs;
  outputs.push_back({a.json, "json", text_writer(summary_json(run.result).dump(2) + "\n")});
  outputs.push_back({a.trace, "trace", [&](std::ostream& os) { write_chrome_trace(os, run.timeline, &run.schedule); }});
  if (!a.profile.empty())
    outputs.push_back({a.profile, "profile", text_writer(profile_json(run.result, &run.timeline).dump() + "\n")});
  write_outputs(outputs);
  std::cout << summary_table(run.result);
  return 0;
}

// ---- sweep -----------------------------------------------------------------------------------------

struct SweepArgs {
  WorkloadFlags flags;
  std::string config, hardware, json, csv;
  int jobs = 1;
  bool per_rank = false;
};

int cmd_sweep(const SweepArgs& a) {
  SweepSpec spec;
  const bool gpn_set = load_base(a.config, spec.base);
  for (const WorkloadField& f : workload_fields()) {
    const std::string flag(f.flag);
    if (a.flags.given(flag)) spec.axes.push_back(parse_axis(flag, a.flags.values.at(flag)));
  }
  if (!a.hardware.empty()) {
    // Hardware takes a comma-separated list of names or files ("all" = every built-in profile).
    if (a.hardware == "all") {
      spec.hardware = builtin_hardware_names();
    } else {
      std::string item;
      for (char c : a.hardware + ",") {
        if (c != ',') { item += c; continue; }
        if (item.empty()) throw InputError("hardware", fmt::format("empty item in list '{}'", a.hardware));
        spec.hardware.push_back(item);
        item.clear();
      }
    }
  }
  spec.gpus_per_node_from_hardware = !gpn_set;
  check_output_path(a.json, "json");
  check_output_path(a.csv, "csv");

  Progress progress(std::cerr, isatty(STDERR_FILENO) != 0);
  const SweepResult result =
      run_sweep(spec, [&](std::size_t i, std::size_t n, const std::string& what) { progress.update(i, n, what); },
                parse_jobs(a.jobs));
  progress.finish();
  if (result.runs.empty()) {
    std::cout << sweep_table(result);
    throw InputError("", fmt::format("sweep: none of the {} combinations is valid (reasons above); nothing written",
                                     result.invalid.size()));
  }
  write_outputs({{a.json, "json", text_writer(sweep_json(result, a.per_rank).dump(2) + "\n")},
                 {a.csv, "csv", text_writer(sweep_csv(result))}});
  std::cout << sweep_table(result);
  return 0;
}

// ---- plan ------------------------------------------------------------------------------------------

struct PlanArgs {
  WorkloadFlags flags;
  std::string config, hardware, json, csv, rank_by = "step";
  std::optional<std::int64_t> gpus;  // default: one node
  double reserve_gib = kDefaultReserveGiB;
  std::size_t top = 10;
  bool verbose = false, per_rank = false;
  int jobs = 1;
};

const std::vector<std::string_view> kPlanListFlags = {"schedule", "cp", "ulysses", "balance", "kv-head-groups"};

int cmd_plan(const PlanArgs& a) {
  const HardwareProfile hw = hardware_of(a.hardware);
  PlanSpec spec;
  bool gpn_set = load_base(a.config, spec.base);
  for (const WorkloadField& f : workload_fields()) {
    const std::string flag(f.flag);
    if (!a.flags.given(flag)) continue;
    const std::string& value = a.flags.values.at(flag);
    if (std::find(kPlanListFlags.begin(), kPlanListFlags.end(), f.flag) == kPlanListFlags.end()) {
      set_workload_field(spec.base, flag, value);
      if (flag == "gpus-per-node") gpn_set = true;
      continue;
    }
    // A list narrows the enumeration of that dimension.
    const SweepAxis axis = parse_axis(flag, value);
    if (flag == "kv-head-groups") spec.kv_head_groups.clear();
    for (const std::string& v : axis.values) {
      Workload scratch;
      set_workload_field(scratch, flag, v);
      if (flag == "schedule") spec.schedules.push_back(scratch.schedule);
      if (flag == "cp") spec.cp_sizes.push_back(scratch.cp);
      if (flag == "ulysses") spec.ulysses_sizes.push_back(scratch.ulysses);
      if (flag == "balance") spec.balances.push_back(scratch.balance);
      if (flag == "kv-head-groups") spec.kv_head_groups.push_back(scratch.kv_head_groups);
    }
  }
  if (!gpn_set) spec.base.gpus_per_node = hw.gpus_per_node;
  if (spec.base.gpus_per_node < 1)
    throw InputError("gpus-per-node", fmt::format("{} must be >= 1", spec.base.gpus_per_node));
  if (a.gpus && *a.gpus < 1) throw InputError("gpus", fmt::format("{} must be >= 1", *a.gpus));
  spec.gpus = a.gpus.value_or(spec.base.gpus_per_node);
  if (!(a.reserve_gib >= 0) || a.reserve_gib > 1e6)
    throw InputError("reserve-gib", fmt::format("{} must be between 0 and 1e6 GiB", a.reserve_gib));
  spec.reserve_bytes = static_cast<Bytes>(a.reserve_gib * static_cast<double>(kGiB));
  spec.rank_by = parse_rank_by(a.rank_by);
  if (a.top < 1) throw InputError("top", "must be >= 1");
  check_output_path(a.json, "json");
  check_output_path(a.csv, "csv");

  Progress progress(std::cerr, isatty(STDERR_FILENO) != 0);
  const PlanResult result =
      run_plan(spec, hw, [&](std::size_t i, std::size_t n, const std::string& what) { progress.update(i, n, what); },
               parse_jobs(a.jobs));
  progress.finish();
  if (result.ranked.empty()) {
    std::cout << plan_table(spec, result, a.top, true);
    throw InputError("", "plan: no candidate is valid and fits in memory (reasons above); nothing written");
  }
  write_outputs({{a.json, "json", text_writer(plan_json(spec, result, a.per_rank).dump(2) + "\n")},
                 {a.csv, "csv", text_writer(plan_csv(result))}});
  std::cout << plan_table(spec, result, a.top, a.verbose);
  return 0;
}

// ---- calibrate / validate --------------------------------------------------------------------------

constexpr const char* kCalibrateFooter = R"(Fits the hardware profile's attention rates (one per measured block shape), launch latency, memory
bandwidth, comm/compute interference and link latency/bandwidth to the op intervals of measured
profiles (cp-profile --json) and the rows of microbenchmark files (cp-profile bench), by least squares; what the profiles cannot determine keeps the base
profile's value, and the output's "calibration" object says which and why, with the residuals. The base
is by default the built-in profile of the card the runs name (cp-profile records the device): runs of
cards of different profiles are refused, since one fit describes one card.

Examples:
  cp-sim calibrate profiles/measured/h200/*.json -o profiles/calibrated/h200.json
  cp-sim calibrate --base h200-sxm run1.json run2.json bench.json -o h200-fitted.json
)";

constexpr const char* kValidateFooter = R"(Simulates each profile's workload on --hardware and prints measured against predicted step time,
per pass and per op kind, with the mean absolute and the maximum error. --leave-one-out predicts
each profile from a calibration on all the others (starting from --hardware, by default the built-in
profile of the card the runs name): the honest figure.
Bench files (cp-profile bench) given with --leave-one-out join every fit, as in cp-sim calibrate.

Examples:
  cp-sim validate --hardware profiles/calibrated/h100-sxm.json profiles/measured/*.json
  cp-sim validate --leave-one-out --json validation.json profiles/measured/*.json bench.json
)";

struct CalibrateArgs {
  std::vector<std::string> profiles;
  std::string base = "auto", output, name;
};

// --base of calibrate, --hardware of validate: a built-in name or a file, or "auto" (the default): the built-in
// profile of the card the inputs name (cp-profile records it), else h100-sxm. Says which, and why.
HardwareProfile base_of(const std::string& arg, const std::vector<NamedProfile>& profiles,
                        const std::vector<NamedBench>& benches, const char* option) {
  if (arg != "auto") return load_hardware(arg);
  const AutoBase base = auto_base(profiles, benches);
  std::cout << fmt::format("{} auto: {} ({})\n", option, base.name, base.why);
  return load_hardware(base.name);
}

int cmd_calibrate(const CalibrateArgs& a) {
  check_output_path(a.output, "output");
  std::vector<NamedProfile> profiles;
  std::vector<NamedBench> benches;
  read_calibration_inputs(a.profiles, profiles, benches);
  const Calibration cal = calibrate(profiles, base_of(a.base, profiles, benches, "--base"), a.name, benches);
  write_outputs({{a.output, "output", text_writer(calibration_json(cal).dump(2) + "\n")}});
  std::cout << fmt::format("{}: fitted to {} profile(s) and {} bench file(s)\n", cal.hardware.name, profiles.size(),
                           benches.size());
  for (const auto& r : cal.report["residuals"])
    std::cout << fmt::format("  {:<28} {:>6} samples  rms {:>7.3f}%  max {:>7.3f}%\n", r["category"].get<std::string>(),
                             r["samples"].get<int>(), 100.0 * r["rms_relative"].get<double>(),
                             100.0 * r["max_relative"].get<double>());
  for (const auto& k : cal.report["kept_from_base"])
    std::cout << fmt::format("  kept from {}: {} ({})\n", cal.report["base"].get<std::string>(),
                             k["field"].get<std::string>(), k["why"].get<std::string>());
  std::cout << "wrote " << a.output << "\n";
  return 0;
}

struct ValidateArgs {
  std::vector<std::string> profiles;
  std::string hardware = "auto", json;
  bool leave_one_out = false;
};

int cmd_validate(const ValidateArgs& a) {
  check_output_path(a.json, "json");
  std::vector<NamedProfile> profiles;
  std::vector<NamedBench> benches;
  read_calibration_inputs(a.profiles, profiles, benches);
  const Validation v = validate(profiles, base_of(a.hardware, profiles, benches, "--hardware"), a.leave_one_out, benches);
  write_outputs({{a.json, "json", text_writer(validation_json(v).dump(2) + "\n")}});
  std::cout << validation_table(v);
  return 0;
}

int main_impl(int argc, char** argv) {
  CLI::App app{"cp-sim: simulate context-parallel attention schedules (ring, zigzag-ring, allgather, ulysses,\n"
               "hybrid) on a GPU mesh: step time, exposed communication, memory; pick the best layout.",
               "cp-sim"};
  app.footer(kMainFooter);
  app.require_subcommand(1);
  app.set_version_flag("--version", "cp-sim 0.1.0");
  app.get_formatter()->column_width(34);

  RunArgs run_args;
  CLI::App* run = app.add_subcommand("run", "simulate one configuration; print a per-rank table");
  run->footer(kRunFooter);
  add_workload_flags(run, run_args.flags, FlagMode::Single);
  run->add_option("--hardware", run_args.hardware, "built-in profile name (h100-sxm, h200-sxm, a100-sxm-80gb, "
                                                   "h800-sxm, b200) or a profile JSON file")
      ->type_name("NAME|FILE");
  run->add_option("--config", run_args.config, "workload JSON file; flags override its fields")->type_name("FILE");
  run->add_option("--json", run_args.json, "write the summary JSON (step_time_ns, total_flops, ranks[...])")
      ->type_name("FILE");
  run->add_option("--trace", run_args.trace, "write a Chrome trace-event JSON (Perfetto UI)")->type_name("FILE");
  run->add_option("--profile", run_args.profile,
                  "write the summary with the simulated timeline (cpscope.profile/1, as cp-profile --json)")
      ->type_name("FILE");
  run->add_option("--ranks-per-device", run_args.sharing.ranks_per_device,
                  "ranks sharing one device, as cp-profile's loopback transport (all cp ranks on one GPU) or host "
                  "backend runs them: their kernels share it, their transfers are copies within it (default 1: a GPU "
                  "per rank)")
      ->type_name("N");
  run->add_option("--compute-slots", run_args.sharing.compute_slots,
                  "compute ops one device runs at full rate at once (1 for a GPU; a CPU's core count for the host "
                  "backend)")
      ->type_name("C");
  run->add_flag("--local-transfers", run_args.sharing.local_transfers,
                "every rank runs as cp-profile's replay transport runs one: each transfer is a send to itself (a copy "
                "within its GPU at the hardware profile's device_copy), and no rank waits for a peer");

  SweepArgs sweep_args;
  CLI::App* sweep = app.add_subcommand("sweep", "simulate every valid combination of lists/ranges of flags");
  sweep->footer(kSweepFooter);
  add_workload_flags(sweep, sweep_args.flags, FlagMode::List);
  sweep->add_option("--hardware", sweep_args.hardware, "profile names or files, comma-separated, or 'all'")
      ->type_name("NAMES|FILES|all");
  sweep->add_option("--config", sweep_args.config, "base workload JSON file; flags override its fields")
      ->type_name("FILE");
  sweep->add_option("--json", sweep_args.json, "write every run and every invalid combination as JSON")
      ->type_name("FILE");
  sweep->add_option("--csv", sweep_args.csv, "write one CSV row per combination (status ok|invalid)")
      ->type_name("FILE");
  sweep->add_flag("--per-rank", sweep_args.per_rank, "include each run's per-rank metrics in --json");
  sweep->add_option("--jobs", sweep_args.jobs, "simulate this many combinations in parallel (default 1)")
      ->type_name("N");

  PlanArgs plan_args;
  CLI::App* plan = app.add_subcommand("plan", "rank every CP layout of a cluster for one model and sequence");
  plan->footer(kPlanFooter);
  plan->add_option("--gpus", plan_args.gpus, "GPUs in the cluster (default: one node = gpus-per-node)")
      ->type_name("N");
  add_workload_flags(plan, plan_args.flags, FlagMode::Single,
                     {"schedule", "cp", "ulysses", "batch", "seq", "heads", "kv-heads", "head-dim", "dtype", "mask",
                      "pass", "balance", "dkv", "kv-head-groups", "gpus-per-node", "tp", "placement"},
                     kPlanListFlags);
  for (auto& [name, opt] : plan_args.flags.options) {
    if (name == "schedule") opt->description("narrow the schedules (default all)");
    if (name == "cp") opt->description("narrow the CP sizes (default: every divisor of gpus / tp)");
    if (name == "ulysses") opt->description("narrow hybrid's U (default: every 1 < U < cp dividing cp)");
    if (name == "balance") opt->description("narrow allgather/hybrid balance (default zigzag,contiguous)");
    if (name == "kv-head-groups") opt->description("allgather KV-head-group variants (default 1,2,4)");
  }
  plan->add_option("--hardware", plan_args.hardware, "built-in profile name or a profile JSON file")
      ->type_name("NAME|FILE");
  plan->add_option("--config", plan_args.config, "base workload JSON file (model fields); flags override it")
      ->type_name("FILE");
  plan->add_option("--reserve-gib", plan_args.reserve_gib,
                   "GiB per GPU kept for weights, optimizer state and other activations (default 40)")
      ->type_name("GIB");
  plan->add_option("--top", plan_args.top, "show the best K (default 10)")->type_name("K");
  plan->add_option("--rank-by", plan_args.rank_by,
                   "step: one CP group's step time (default); throughput: step time / dp (time per sequence)")
      ->type_name("step|throughput");
  plan->add_flag("--verbose,-v", plan_args.verbose, "list every dropped candidate with its reason");
  plan->add_option("--json", plan_args.json, "write ranked and dropped candidates as JSON")->type_name("FILE");
  plan->add_option("--csv", plan_args.csv, "write one CSV row per candidate (status ok|dropped)")->type_name("FILE");
  plan->add_flag("--per-rank", plan_args.per_rank, "include each run's per-rank metrics in --json");
  plan->add_option("--jobs", plan_args.jobs, "simulate this many candidates in parallel (default 1)")
      ->type_name("N");

  CalibrateArgs cal_args;
  CLI::App* cal = app.add_subcommand("calibrate", "fit a hardware profile to measured profiles");
  cal->footer(kCalibrateFooter);
  cal->add_option("profiles", cal_args.profiles,
                  "cpscope.profile JSON files with timelines, and cp-profile bench files (cpscope.bench/1)")
      ->required()
      ->check(CLI::ExistingFile)
      ->type_name("PROFILE...");
  cal->add_option("-o,--output", cal_args.output, "the calibrated hardware profile to write")->required()->type_name("FILE");
  cal->add_option("--base", cal_args.base,
                  "profile to start from: a built-in name, a file, or auto: the built-in profile of the card the "
                  "inputs were measured on (h100-sxm for host-backend runs)")
      ->type_name("NAME|FILE|auto")
      ->default_str("auto");
  cal->add_option("--name", cal_args.name, "name of the fitted profile (default <base>-calibrated)");

  ValidateArgs val_args;
  CLI::App* val = app.add_subcommand("validate", "predict measured profiles and report the error");
  val->footer(kValidateFooter);
  val->add_option("profiles", val_args.profiles,
                  "cpscope.profile JSON files with timelines (with --leave-one-out also cpscope.bench/1 files)")
      ->required()
      ->check(CLI::ExistingFile)
      ->type_name("PROFILE...");
  val->add_option("--hardware", val_args.hardware,
                  "profile to validate (with --leave-one-out, to start each fit from): a built-in name, a file, or "
                  "auto, as calibrate's --base")
      ->type_name("NAME|FILE|auto")
      ->default_str("auto");
  val->add_flag("--leave-one-out", val_args.leave_one_out, "predict each profile from a fit to all the others");
  val->add_option("--json", val_args.json, "write the comparison (cpscope.validation/1)")->type_name("FILE");

  if (argc <= 1) {  // no subcommand: show what there is
    std::cerr << app.help();
    return 2;
  }
  if (const int code = parse_args(app, argc, argv, "cp-sim"); code >= 0) return code;
  if (run->parsed()) return cmd_run(run_args);
  if (sweep->parsed()) return cmd_sweep(sweep_args);
  if (plan->parsed()) return cmd_plan(plan_args);
  if (cal->parsed()) return cmd_calibrate(cal_args);
  if (val->parsed()) return cmd_validate(val_args);
  std::cerr << app.help();
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  return cpscope::cli::run_tool("cp-sim", [&] { return main_impl(argc, argv); });
}
