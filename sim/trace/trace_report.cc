// JSON, CSV and tables for cp-trace. Integers stay exact; ratios are the only floating-point fields.
#include "sim/trace/trace_report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sim/report.h"

namespace cpscope::trace {
namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

nlohmann::json overlap_json(double o) { return o < 0 ? nlohmann::json(nullptr) : nlohmann::json(o); }
std::string overlap_csv(double o) { return o < 0 ? "" : fmt::format("{:.6f}", o); }
std::string overlap_text(double o) { return o < 0 ? "-" : fmt::format("{:.1f}%", 100.0 * o); }

void metrics_into(nlohmann::json& j, const RankReport& m) {
  j["span_ns"] = m.span_ns;
  j["busy_ns"] = m.busy_ns;
  j["idle_ns"] = m.idle_ns;
  j["compute_ns"] = m.compute_ns;
  j["attention_ns"] = m.attention_ns;
  j["comm_ns"] = m.comm_ns;
  j["memory_ns"] = m.memory_ns;
  j["exposed_comm_ns"] = m.exposed_comm_ns;
  j["overlap"] = overlap_json(m.overlap);
  j["kernels"] = m.kernels;
}

std::string metrics_csv(const RankReport& m) {
  return fmt::format("{},{},{},{},{},{},{},{},{}", m.span_ns, m.busy_ns, m.idle_ns, m.compute_ns, m.attention_ns,
                     m.comm_ns, m.memory_ns, m.exposed_comm_ns, overlap_csv(m.overlap));
}

std::string metrics_row(const RankReport& m) {
  return fmt::format("{:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>8} {:>11}", format_nanos(m.span_ns),
                     format_nanos(m.compute_ns), format_nanos(m.attention_ns), format_nanos(m.comm_ns),
                     format_nanos(m.exposed_comm_ns), format_nanos(m.memory_ns), overlap_text(m.overlap),
                     format_nanos(m.idle_ns));
}
constexpr const char* kMetricsHeader = "{:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>8} {:>11}";

nlohmann::json ratio(Nanos a, Nanos b, bool both) {
  if (!both || a == 0) return nullptr;
  return static_cast<double>(b) / static_cast<double>(a);
}
std::string ratio_text(const nlohmann::json& r) { return r.is_null() ? "-" : fmt::format("{:.3f}", r.get<double>()); }

}  // namespace

nlohmann::json summary_json(const Trace& t, const TraceSummary& s) {
  nlohmann::json j;
  j["schema"] = kTraceSummarySchema;
  j["format"] = t.format;
  j["origin_ns"] = t.origin_ns;
  j["wall_ns"] = s.wall_ns;
  j["warnings"] = t.warnings;
  j["ranks"] = nlohmann::json::array();
  for (const RankReport& m : s.ranks) {
    nlohmann::json r;
    r["rank"] = m.rank;
    if (static_cast<std::size_t>(m.rank) < t.ranks.size()) {
      const RankSource& src = t.ranks[m.rank];
      r["file"] = src.file;
      r["pid"] = src.pid;
      r["device"] = src.device;
      r["gpu"] = src.gpu;
    }
    metrics_into(r, m);
    j["ranks"].push_back(std::move(r));
  }
  if (!s.untraced_ranks.empty()) j["untraced_ranks"] = s.untraced_ranks;
  j["top_kernels"] = nlohmann::json::array();
  for (const KernelStat& k : s.top_kernels)
    j["top_kernels"].push_back({{"name", k.name}, {"class", std::string(to_string(k.cls))}, {"count", k.count},
                                {"total_ns", k.total_ns}, {"max_ns", k.max_ns}});
  return j;
}

std::string summary_csv(const TraceSummary& s) {
  std::string out = "rank,span_ns,busy_ns,idle_ns,compute_ns,attention_ns,comm_ns,memory_ns,exposed_comm_ns,overlap,kernels\n";
  for (const RankReport& m : s.ranks) out += fmt::format("{},{},{}\n", m.rank, metrics_csv(m), m.kernels);
  return out;
}

std::string summary_table(const Trace& t, const TraceSummary& s) {
  std::string out = fmt::format("{} trace: {} rank(s), wall {}\n", t.format, s.ranks.size(), format_nanos(s.wall_ns));
  if (!s.untraced_ranks.empty())
    out += fmt::format("(rank(s) {} of the schedule have no intervals: a replay profile traces one rank)\n",
                       fmt::join(s.untraced_ranks, ","));
  out += fmt::format(fmt::runtime("{:>5} " + std::string(kMetricsHeader) + "\n"), "rank", "span", "compute", "attention", "comm",
                     "exposed", "memory", "overlap", "idle");
  for (const RankReport& m : s.ranks) out += fmt::format("{:>5} {}\n", m.rank, metrics_row(m));
  if (!s.top_kernels.empty()) {
    out += "top kernels by total time:\n";
    for (const KernelStat& k : s.top_kernels) {
      std::string name = k.name.size() > 70 ? k.name.substr(0, 67) + "..." : k.name;
      out += fmt::format("  {:>11} {:>8}x {:<13} {}\n", format_nanos(k.total_ns), k.count, to_string(k.cls), name);
    }
  }
  for (const std::string& w : t.warnings) out += "warning: " + w + "\n";
  return out;
}

nlohmann::json steps_json(const StepsReport& s) {
  nlohmann::json j;
  j["schema"] = kTraceStepsSchema;
  j["pattern"] = s.pattern;
  j["steps"] = nlohmann::json::array();
  for (const StepRow& r : s.rows) {
    nlohmann::json row{{"label", r.label}, {"rank", r.metrics.rank}, {"ranges", r.ranges}, {"start_ns", r.first_start_ns}};
    metrics_into(row, r.metrics);
    j["steps"].push_back(std::move(row));
  }
  return j;
}

std::string steps_csv(const StepsReport& s) {
  std::string out =
      "label,rank,ranges,start_ns,span_ns,busy_ns,idle_ns,compute_ns,attention_ns,comm_ns,memory_ns,exposed_comm_ns,overlap\n";
  for (const StepRow& r : s.rows)
    out += fmt::format("{},{},{},{},{}\n", csv_field(r.label), r.metrics.rank, r.ranges, r.first_start_ns,
                       metrics_csv(r.metrics));
  return out;
}

std::string steps_table(const StepsReport& s) {
  std::string out = fmt::format("{} step row(s) for ranges matching '{}'\n", s.rows.size(), s.pattern);
  out += fmt::format(fmt::runtime("{:<24} {:>5} " + std::string(kMetricsHeader) + "\n"), "step", "rank", "span", "compute",
                     "attention", "comm", "exposed", "memory", "overlap", "idle");
  for (const StepRow& r : s.rows) out += fmt::format("{:<24} {:>5} {}\n", r.label, r.metrics.rank, metrics_row(r.metrics));
  return out;
}

nlohmann::json compare_json(const CompareReport& c) {
  nlohmann::json j;
  j["schema"] = kTraceCompareSchema;
  j["basis"] = c.basis;
  j["wall_a_ns"] = c.wall_a_ns;
  j["wall_b_ns"] = c.wall_b_ns;
  j["warnings"] = c.warnings;
  j["ops"] = nlohmann::json::array();
  for (const OpDiff& d : c.ops)
    j["ops"].push_back({{"name", d.name}, {"count_a", d.count_a}, {"count_b", d.count_b}, {"total_a_ns", d.total_a_ns},
                        {"total_b_ns", d.total_b_ns}, {"mean_a_ns", d.mean_a_ns}, {"mean_b_ns", d.mean_b_ns},
                        {"diff_mean_ns", d.mean_b_ns - d.mean_a_ns},
                        {"ratio", ratio(d.mean_a_ns, d.mean_b_ns, d.count_a > 0 && d.count_b > 0)}});
  j["steps"] = nlohmann::json::array();
  for (const StepDiff& s : c.steps)
    j["steps"].push_back({{"step", s.step}, {"span_a_ns", s.in_a ? nlohmann::json(s.span_a_ns) : nlohmann::json(nullptr)},
                          {"span_b_ns", s.in_b ? nlohmann::json(s.span_b_ns) : nlohmann::json(nullptr)},
                          {"diff_ns", s.span_b_ns - s.span_a_ns},
                          {"ratio", ratio(s.span_a_ns, s.span_b_ns, s.in_a && s.in_b)}});
  return j;
}

std::string compare_csv(const CompareReport& c) {
  std::string out = "section,name,count_a,count_b,a_ns,b_ns,diff_ns,ratio\n";
  auto r = [](const nlohmann::json& x) { return x.is_null() ? std::string() : fmt::format("{:.6f}", x.get<double>()); };
  out += fmt::format("wall,,,,{},{},{},{}\n", c.wall_a_ns, c.wall_b_ns, c.wall_b_ns - c.wall_a_ns,
                     r(ratio(c.wall_a_ns, c.wall_b_ns, true)));
  for (const OpDiff& d : c.ops)
    out += fmt::format("op,{},{},{},{},{},{},{}\n", csv_field(d.name), d.count_a, d.count_b, d.mean_a_ns, d.mean_b_ns,
                       d.mean_b_ns - d.mean_a_ns, r(ratio(d.mean_a_ns, d.mean_b_ns, d.count_a > 0 && d.count_b > 0)));
  for (const StepDiff& s : c.steps)
    out += fmt::format("step,{},{},{},{},{},{},{}\n", s.step, s.in_a ? 1 : 0, s.in_b ? 1 : 0, s.span_a_ns, s.span_b_ns,
                       s.span_b_ns - s.span_a_ns, r(ratio(s.span_a_ns, s.span_b_ns, s.in_a && s.in_b)));
  return out;
}

std::string compare_table(const CompareReport& c, std::size_t max_rows) {
  std::string out = fmt::format("compared by {}: wall A {}  B {}  (B/A {})\n", c.basis, format_nanos(c.wall_a_ns),
                                format_nanos(c.wall_b_ns), ratio_text(ratio(c.wall_a_ns, c.wall_b_ns, true)));
  if (!c.steps.empty()) {
    out += fmt::format("{:<16} {:>11} {:>11} {:>7}\n", "step", "span A", "span B", "B/A");
    for (const StepDiff& s : c.steps)
      out += fmt::format("{:<16} {:>11} {:>11} {:>7}\n", s.step, s.in_a ? format_nanos(s.span_a_ns) : "-",
                         s.in_b ? format_nanos(s.span_b_ns) : "-", ratio_text(ratio(s.span_a_ns, s.span_b_ns, s.in_a && s.in_b)));
  }
  out += fmt::format("{:<40} {:>6} {:>6} {:>11} {:>11} {:>7}\n", c.basis == "ops" ? "op" : "kernel", "n A", "n B",
                     "mean A", "mean B", "B/A");
  std::size_t shown = 0;
  for (const OpDiff& d : c.ops) {
    if (shown++ == max_rows) {
      out += fmt::format("... {} more in --json/--csv\n", c.ops.size() - max_rows);
      break;
    }
    std::string name = d.name.size() > 40 ? d.name.substr(0, 37) + "..." : d.name;
    out += fmt::format("{:<40} {:>6} {:>6} {:>11} {:>11} {:>7}\n", name, d.count_a, d.count_b, format_nanos(d.mean_a_ns),
                       format_nanos(d.mean_b_ns), ratio_text(ratio(d.mean_a_ns, d.mean_b_ns, d.count_a > 0 && d.count_b > 0)));
  }
  for (const std::string& w : c.warnings) out += "warning: " + w + "\n";
  return out;
}

}  // namespace cpscope::trace
