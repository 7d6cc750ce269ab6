// cp-trace: inspect Nsight Systems SQLite exports, PyTorch profiler (Kineto) traces and cpscope profiles:
// where the GPU time goes per rank, whether communication is hidden, per step, and how two timelines
// differ. A thin main over sim/trace; it alone decides exit codes: 0 success, 2 bad input (flags,
// unreadable or malformed traces, output paths), 1 internal error.
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "sim/error.h"
#include "sim/profile.h"
#include "sim/report.h"
#include "sim/trace/compare.h"
#include "sim/trace/input.h"
#include "sim/trace/op_timeline.h"
#include "sim/trace/trace_analysis.h"
#include "sim/trace/trace_report.h"
#include "sim/workload.h"
#include "tools/cli_common.h"

namespace {

using namespace cpscope;
using namespace cpscope::trace;
using namespace cpscope::cli;

constexpr const char* kMainFooter = R"(Inputs (any subcommand): an nsys SQLite export (nsys export --type sqlite report.nsys-rep), a
PyTorch profiler trace (*.json or *.json.gz, one per rank), a folder of them, or a cpscope profile
(cp-sim run --profile, cp-profile --json). Several inputs are merged: ranks are numbered by
distributedInfo.rank (Kineto) or input order, then process id, then CUDA device.

Examples:
  cp-trace summary report.sqlite                      per-rank busy / exposed comm / overlap / idle
  cp-trace summary traces/ --json s.json --csv s.csv  a folder of per-rank PyTorch traces
  cp-trace steps report.sqlite --range '^(fwd|bwd)/step\d+'
  cp-trace export rank0.pt.trace.json.gz -o perfetto.json
  cp-trace compare measured.sqlite simulated.json     measured vs cp-sim run --profile

Exit codes: 0 success, 2 invalid flags or input (the message names the file, the position and the
rule), 1 internal error.
)";

constexpr const char* kClassFooter = R"(
Kernels are classified by regex (ECMAScript, case-insensitive; comm is tried first, then memory,
then attention; an empty pattern matches nothing): communication (--comm), memory (--memory; memcpy
and memset records always are), attention compute (--attention), and other compute. overlap is
|comm ∩ compute| / |comm| per rank over all streams (Holistic Trace Analysis' definition); exposed
comm is comm time no compute overlaps; idle is the rank's span minus the union of all its work.
)";

struct Common {
  std::vector<std::string> inputs;
  ClassifierPatterns patterns;
  bool demangled = false;
};

void add_common(CLI::App* app, Common& c, const char* inputs_help) {
  app->add_option("inputs", c.inputs, inputs_help)->required()->type_name("TRACE...");
  app->add_option("--comm", c.patterns.comm, "regex of communication kernels")->type_name("REGEX");
  app->add_option("--attention", c.patterns.attention, "regex of attention kernels")->type_name("REGEX");
  app->add_option("--memory", c.patterns.memory, "regex of memory kernels")->type_name("REGEX");
  app->add_flag("--demangled", c.demangled, "nsys: name kernels by demangledName instead of shortName");
}

Trace load(const Common& c, const Classifier& cls) {
  NsysOptions opt;
  opt.demangled_names = c.demangled;
  return read_inputs(c.inputs, cls, opt);
}

void print_warnings(const Trace& t) {
  for (const std::string& w : t.warnings) std::cerr << "cp-trace: warning: " << w << "\n";
}

struct SummaryArgs {
  Common c;
  std::string json, csv;
  std::size_t top = 10;
};

int cmd_summary(const SummaryArgs& a) {
  check_output_path(a.json, "json");
  check_output_path(a.csv, "csv");
  const Classifier cls(a.c.patterns);
  const Trace t = load(a.c, cls);
  const TraceSummary s = summarize_trace(t, cls, a.top);
  write_outputs({{a.json, "json", text_writer(summary_json(t, s).dump(2) + "\n")},
                 {a.csv, "csv", text_writer(summary_csv(s))}});
  std::cout << summary_table(t, s);
  return 0;
}

struct StepsArgs {
  Common c;
  std::string json, csv, range = R"(^(fwd|bwd)/step\d+)";
};

int cmd_steps(const StepsArgs& a) {
  check_output_path(a.json, "json");
  check_output_path(a.csv, "csv");
  const Classifier cls(a.c.patterns);
  Classifier::compile(a.range, "range");  // a bad regex fails before minutes of reading
  const Trace t = load(a.c, cls);
  print_warnings(t);
  const StepsReport s = summarize_steps(t, cls, a.range);
  if (s.rows.empty())
    throw InputError("range", fmt::format("no annotation range matches '{}' ({} ranges in the input)", a.range,
                                          t.ranges.size()));
  write_outputs({{a.json, "json", text_writer(steps_json(s).dump(2) + "\n")},
                 {a.csv, "csv", text_writer(steps_csv(s))}});
  std::cout << steps_table(s);
  return 0;
}

struct ExportArgs {
  Common c;
  std::string output, profile, config;
};

int cmd_export(const ExportArgs& a) {
  if (a.output.empty() && a.profile.empty()) throw InputError("output", "give -o FILE, --profile FILE or both");
  if (!a.profile.empty() && a.config.empty())
    throw InputError("config", "--profile needs --config WORKLOAD.json: the schedule whose op ids the ranges map to");
  check_output_path(a.output, "output");
  check_output_path(a.profile, "profile");
  const Classifier cls(a.c.patterns);
  const Trace t = load(a.c, cls);
  print_warnings(t);
  std::vector<Output> outputs{{a.output, "output", [&](std::ostream& os) { write_chrome_trace(os, t.timeline); }}};
  std::string note;
  if (!a.profile.empty()) {
    // The calibration seam (sim/trace/op_timeline.h): cpscope op ranges -> op intervals with op ids.
    Workload w;
    load_base(a.config, w);
    validate(w);
    bool found = false;
    Timeline ops = op_timeline(t, found);
    if (!found) throw InputError("profile", "the input has no cpscope op ranges (NVTX 'fwd/stepN/kind') to map to ops");
    const Schedule sched = make_schedule(w);
    const std::size_t unmatched = attach_op_ids(ops, sched);
    if (ops.intervals.empty())
      throw InputError("config", "no op range of the input is an op of this workload's schedule (wrong --config?)");
    RunResult run;
    run.workload = w;
    run.source = "measured";
    run.hardware = t.ranks.empty() ? "" : t.ranks[0].gpu;
    run.summary = summarize(ops, &sched);
    outputs.push_back({a.profile, "profile", text_writer(profile_json(run, &ops).dump() + "\n")});
    note = fmt::format("{} op intervals mapped to the schedule, {} without an op", ops.intervals.size(), unmatched);
  }
  write_outputs(outputs);
  std::cout << fmt::format("{}: {} intervals on {} rank(s)\n", t.format, t.timeline.intervals.size(), t.ranks.size());
  if (!note.empty()) std::cout << note << "\n";
  return 0;
}

struct CompareArgs {
  Common a, b;
  std::string json, csv;
};

int cmd_compare(const CompareArgs& x) {
  check_output_path(x.json, "json");
  check_output_path(x.csv, "csv");
  const Classifier cls(x.a.patterns);
  NsysOptions opt;
  opt.demangled_names = x.a.demangled;
  if (x.a.inputs.size() != 2) throw InputError("inputs", fmt::format("compare takes two inputs, A and B, not {}", x.a.inputs.size()));
  const Trace ta = read_inputs({x.a.inputs[0]}, cls, opt);
  const Trace tb = read_inputs({x.a.inputs[1]}, cls, opt);
  const CompareReport r = compare_traces(ta, tb);
  write_outputs({{x.json, "json", text_writer(compare_json(r).dump(2) + "\n")},
                 {x.csv, "csv", text_writer(compare_csv(r))}});
  std::cout << compare_table(r);
  return 0;
}

int main_impl(int argc, char** argv) {
  CLI::App app{"cp-trace: where the GPU time of a context-parallel run goes, from Nsight Systems and PyTorch\n"
               "profiler traces (and cpscope profiles): busy, exposed communication, overlap, idle, per step.",
               "cp-trace"};
  app.footer(kMainFooter);
  app.require_subcommand(1);
  app.set_version_flag("--version", "cp-trace 0.1.0");
  app.get_formatter()->column_width(34);

  SummaryArgs sa;
  CLI::App* summary = app.add_subcommand("summary", "per rank: span, compute, comm, exposed comm, overlap, idle; top kernels");
  summary->footer(kClassFooter);
  add_common(summary, sa.c, "trace files or folders, merged into one multi-rank trace");
  summary->add_option("--top", sa.top, "list the K kernels with the most total time (default 10)")->type_name("K");
  summary->add_option("--json", sa.json, "write cpscope.trace-summary/1 JSON")->type_name("FILE");
  summary->add_option("--csv", sa.csv, "write one CSV row per rank")->type_name("FILE");

  StepsArgs st;
  CLI::App* steps = app.add_subcommand("steps", "the summary per annotation range (NVTX, gpu_user_annotation)");
  steps->footer(std::string(R"(
A range is selected when --range matches its name; rows are labelled by the matched text, so the
default '^(fwd|bwd)/step\d+' groups cpscope's "fwd/step3/attend" and "fwd/step3/sendrecv" into
"fwd/step3". Other examples: '^ProfilerStep#\d+' (PyTorch iterations), 'layer\d+'.
)") + kClassFooter);
  add_common(steps, st.c, "trace files or folders");
  steps->add_option("--range", st.range, "regex selecting the ranges; the match is the row label")->type_name("REGEX");
  steps->add_option("--json", st.json, "write cpscope.trace-steps/1 JSON")->type_name("FILE");
  steps->add_option("--csv", st.csv, "write one CSV row per (step, rank)")->type_name("FILE");

  ExportArgs ea;
  CLI::App* exp = app.add_subcommand("export", "Chrome trace JSON of any input (Perfetto UI); a measured profile");
  exp->footer(R"(
--profile writes a cpscope.profile/1 (source "measured") whose intervals are the cpscope op ranges of
the input mapped to the ops of --config's schedule, which `cp-sim calibrate` and `cp-sim validate`
read: the way measured NCCL and attention times become calibration input.

Examples:
  cp-trace export report.sqlite -o trace.json
  cp-trace export report.sqlite --profile measured.json --config layer.json
)");
  add_common(exp, ea.c, "trace files or folders");
  exp->add_option("-o,--output", ea.output, "Chrome trace-event JSON to write")->type_name("FILE");
  exp->add_option("--profile", ea.profile, "measured cpscope profile to write (needs --config)")->type_name("FILE");
  exp->add_option("--config", ea.config, "workload JSON of the traced run (as cp-sim run --config)")->type_name("FILE");

  CompareArgs ca;
  CLI::App* cmp = app.add_subcommand("compare", "two timelines aligned by op name and step: per-op and per-step differences");
  cmp->footer(R"(
A and B are single inputs (a file or a folder). With cpscope op ranges on both sides ("fwd/step3/attend":
cp-profile runs under nsys, cp-sim profiles) ops are compared by name and steps by span; otherwise
kernels are compared by name. Ratios are B / A.

Examples:
  cp-trace compare measured.sqlite simulated.json --json diff.json
)");
  add_common(cmp, ca.a, "A then B");
  cmp->add_option("--json", ca.json, "write cpscope.trace-compare/1 JSON")->type_name("FILE");
  cmp->add_option("--csv", ca.csv, "write the per-op and per-step rows as CSV")->type_name("FILE");

  if (argc <= 1) {
    std::cerr << app.help();
    return 2;
  }
  if (const int code = parse_args(app, argc, argv, "cp-trace"); code >= 0) return code;
  if (summary->parsed()) return cmd_summary(sa);
  if (steps->parsed()) return cmd_steps(st);
  if (exp->parsed()) return cmd_export(ea);
  if (cmp->parsed()) return cmd_compare(ca);
  std::cerr << app.help();
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  return cpscope::cli::run_tool("cp-trace", [&] { return main_impl(argc, argv); });
}
