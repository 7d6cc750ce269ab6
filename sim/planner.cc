// Planner: flag values, sweep expansion, plan enumeration and ranking, reporters for many runs.
#include "sim/planner.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <exception>
#include <initializer_list>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sim/analysis.h"
#include "sim/error.h"
#include "sim/schedule.h"

namespace cpscope {
namespace {

// ---- small text helpers ----------------------------------------------------------------------------

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t begin = 0;
  while (true) {
    const std::size_t pos = s.find(sep, begin);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(begin));
      return out;
    }
    out.push_back(s.substr(begin, pos - begin));
    begin = pos + 1;
  }
}

// Parses an integer with an optional k/m/g binary suffix; nullopt when malformed or out of range.
std::optional<std::int64_t> try_parse_int(std::string_view text) {
  text = trim(text);
  if (text.empty()) return std::nullopt;
  bool negative = false;
  if (text.front() == '+' || text.front() == '-') {
    negative = text.front() == '-';
    text.remove_prefix(1);
  }
  std::int64_t multiplier = 1;
  if (!text.empty()) {
    switch (text.back()) {
      case 'k': case 'K': multiplier = kKiB; break;
      case 'm': case 'M': multiplier = kMiB; break;
      case 'g': case 'G': multiplier = kGiB; break;
      default: break;
    }
    if (multiplier != 1) text.remove_suffix(1);
  }
  if (text.empty()) return std::nullopt;
  std::int64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    const int digit = c - '0';
    if (value > (std::numeric_limits<std::int64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  if (value > std::numeric_limits<std::int64_t>::max() / multiplier) return std::nullopt;
  value *= multiplier;
  return negative ? -value : value;
}

std::string gib(Bytes b) { return fmt::format("{:.2f} GiB", static_cast<double>(b) / static_cast<double>(kGiB)); }

// A plain aligned text table: text columns left-aligned, numeric columns right-aligned.
struct TextTable {
  std::vector<std::string> header;
  std::vector<bool> right;
  std::vector<std::vector<std::string>> rows;

  std::string render(const std::string& indent = "") const {
    std::vector<std::size_t> width(header.size(), 0);
    for (std::size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
    for (const auto& row : rows)
      for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
    std::string out;
    auto line = [&](const std::vector<std::string>& cells) {
      std::string l = indent;
      for (std::size_t c = 0; c < header.size(); ++c) {
        const std::string& cell = c < cells.size() ? cells[c] : std::string();
        const std::size_t pad = width[c] - cell.size();
        if (c > 0) l += "  ";
        if (right[c]) l.append(pad, ' ');
        l += cell;
        if (!right[c] && c + 1 < header.size()) l.append(pad, ' ');
      }
      while (!l.empty() && l.back() == ' ') l.pop_back();
      out += l + "\n";
    };
    line(header);
    for (const auto& row : rows) line(row);
    return out;
  }
};

// The enum values of each enum field, in declaration order.
template <class E>
std::vector<std::string> names_of(std::initializer_list<E> values) {
  std::vector<std::string> out;
  for (E e : values) out.emplace_back(to_string(e));
  return out;
}

// Runs body(i) for i in [0, n) on `jobs` threads; reports progress under a lock; rethrows the
// exception of the lowest failing index (so errors are deterministic too).
void parallel_for(std::size_t n, int jobs, const std::function<std::string(std::size_t)>& describe_item,
                  const ProgressFn& progress, const std::function<void(std::size_t)>& body) {
  if (jobs <= 1 || n <= 1) {
    for (std::size_t i = 0; i < n; ++i) {
      if (progress) progress(i, n, describe_item(i));
      body(i);
    }
    return;
  }
  std::vector<std::exception_ptr> errors(n);
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex progress_mutex;
  std::size_t started = 0;
  auto worker = [&] {
    while (!failed.load()) {
      const std::size_t i = next.fetch_add(1);
      if (i >= n) return;
      if (progress) {
        const std::string what = describe_item(i);
        std::lock_guard<std::mutex> lock(progress_mutex);
        progress(started++, n, what);
      }
      try {
        body(i);
      } catch (...) {
        errors[i] = std::current_exception();
        failed.store(true);
      }
    }
  };
  std::vector<std::thread> threads;
  const std::size_t count = std::min<std::size_t>(static_cast<std::size_t>(jobs), n);
  threads.reserve(count);
  for (std::size_t t = 0; t < count; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Simulates and summarises one schedule. The engine accumulates every per-rank metric itself
// (summarize(SimResult, Schedule)), so the Timeline (64 bytes per op) is recorded only when the
// caller keeps it (cp-sim run --trace). `threads`: the engine's set-up threads (1 when the caller
// already runs simulations in parallel).
RunResult simulate_schedule(const Schedule& schedule, const HardwareProfile& hw, Timeline* keep, int threads = 0,
                            const DeviceSharing& sharing = {}) {
  SimOptions options;
  options.record_timeline = keep != nullptr;
  options.threads = threads;
  options.sharing = sharing;
  SimResult sim = simulate(schedule, hw, options);
  RunResult run;
  run.workload = schedule.workload;
  run.hardware = hw.name;
  run.source = "simulated";
  run.summary = summarize(sim, schedule);
  run.stats = sim.stats;
  run.sharing = sharing;
  if (keep) *keep = std::move(sim.timeline);
  return run;
}

Bytes schedule_peak_memory(const Schedule& schedule) {
  Bytes peak = 0;
  for (const RankProgram& rank : schedule.ranks) peak = std::max(peak, peak_memory(rank));
  return peak;
}

std::string model_line(const Workload& w) {
  return fmt::format("B={} S={} H={} Hkv={} D={} {} {} {}", w.batch, w.seq, w.heads, w.kv_heads, w.head_dim,
                     to_string(w.dtype), to_string(w.mask), to_string(w.pass));
}

std::string split_text(const Workload& w) {
  switch (w.schedule) {
    case ScheduleKind::Hybrid:
      return w.ulysses > 0 ? fmt::format("{}x{}", w.ulysses, w.cp / w.ulysses) : "-";
    case ScheduleKind::Ulysses: return fmt::format("{}x1", w.cp);
    default: return fmt::format("1x{}", w.cp);
  }
}

std::string balance_text(const Workload& w) {
  switch (w.schedule) {
    case ScheduleKind::Ring: return "contiguous";
    case ScheduleKind::ZigzagRing: return "zigzag";
    case ScheduleKind::Ulysses: return "-";
    default: return std::string(to_string(w.balance));
  }
}

// runs_csv() ends each row with step_time_ns,total_flops,max_exposed_comm_ns,max_peak_memory_bytes,
// achieved_tflops_per_gpu (see report.h).
constexpr int kRunsCsvMetricColumns = 5;

Nanos time_per_sequence(const RunResult& r) {
  const std::int64_t dp = std::max<std::int64_t>(1, r.workload.dp);
  return r.summary.step_time_ns / dp;
}

nlohmann::json rejected_json(const Rejected& r) {
  nlohmann::json j;
  j["workload"] = to_json(r.workload);
  j["hardware"] = r.hardware;
  j["reason"] = r.reason;
  return j;
}

// runs_csv() rows with ",status,reason[,extra...]" appended: the same columns and formatting as every
// other table of runs, plus what sweep and plan add.
std::vector<std::string> csv_lines(const std::vector<RunResult>& runs) {
  std::vector<std::string> lines;
  const std::string csv = runs_csv(runs);
  std::size_t begin = 0;
  while (begin < csv.size()) {
    std::size_t end = csv.find('\n', begin);
    if (end == std::string::npos) end = csv.size();
    lines.push_back(csv.substr(begin, end - begin));
    begin = end + 1;
  }
  return lines;
}

// The config columns of a workload that was not simulated, with the metric columns left empty.
std::string csv_config_only(const Workload& w, const std::string& hardware) {
  RunResult fake;
  fake.workload = w;
  fake.hardware = hardware;
  std::vector<std::string> lines = csv_lines({fake});
  CPSCOPE_CHECK(lines.size() == 2, "runs_csv returned an unexpected number of lines");
  std::string line = lines[1];
  for (int k = 0; k < kRunsCsvMetricColumns; ++k) {
    const std::size_t pos = line.rfind(',');
    CPSCOPE_CHECK(pos != std::string::npos, "runs_csv row has too few columns");
    line.resize(pos);
  }
  return line + std::string(kRunsCsvMetricColumns, ',');
}

std::string csv_text(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

// ---- Workload fields -------------------------------------------------------------------------------

const std::vector<WorkloadField>& workload_fields() {
  static const std::vector<WorkloadField> fields = {
      {"schedule", "schedule", false, "CP schedule: ring|zigzag-ring|allgather|ulysses|hybrid"},
      {"cp", "cp", true, "CP group size N"},
      {"ulysses", "ulysses", true, "Ulysses group size U of hybrid (ring over R = N/U)"},
      {"batch", "batch", true, "batch size B"},
      {"seq", "seq", true, "global sequence length S in tokens (k = 1024, e.g. 128k)"},
      {"heads", "heads", true, "query heads H"},
      {"kv-heads", "kv_heads", true, "key/value heads Hkv (GQA when < H)"},
      {"head-dim", "head_dim", true, "head dimension D"},
      {"dtype", "dtype", false, "element type of Q/K/V: bf16|fp16|fp32"},
      {"mask", "mask", false, "attention mask: causal|full"},
      {"pass", "pass", false, "passes simulated: fwd|bwd|fwd+bwd"},
      {"balance", "balance", false, "sharding of allgather and hybrid's ring: zigzag|contiguous"},
      {"dkv", "dkv", false, "backward dK/dV transport: fp32 (PyTorch) | input (TransformerEngine)"},
      {"kv-head-groups", "kv_head_groups", true, "allgather: pipeline the gather over this many KV-head groups"},
      {"gpus-per-node", "gpus_per_node", true, "GPUs per node (default: the hardware profile's)"},
      {"tp", "tp", true, "tensor-parallel size: placement only (give heads/kv-heads per TP rank)"},
      {"dp", "dp", true, "data-parallel size (other CP groups sharing the NICs)"},
      {"placement", "placement", false, "cp-inner (CP ranks consecutive) | tp-inner (TP innermost)"},
  };
  return fields;
}

const WorkloadField* find_workload_field(std::string_view flag) {
  for (const auto& f : workload_fields())
    if (f.flag == flag) return &f;
  return nullptr;
}

std::int64_t parse_int_value(std::string_view field, std::string_view text) {
  if (auto v = try_parse_int(text)) return *v;
  throw InputError(std::string(field), fmt::format("'{}' is not an integer (digits, optionally with a k = 1024 "
                                                   "or m = 1048576 suffix)",
                                                   text));
}

void set_workload_field(Workload& w, std::string_view flag, std::string_view value) {
  const std::string f(flag);
  value = trim(value);
  if (flag == "schedule") { w.schedule = parse_schedule(value, f); return; }
  if (flag == "dtype") { w.dtype = parse_dtype(value, f); return; }
  if (flag == "mask") { w.mask = parse_mask(value, f); return; }
  if (flag == "pass") { w.pass = parse_pass(value, f); return; }
  if (flag == "balance") { w.balance = parse_balance(value, f); return; }
  if (flag == "dkv") { w.dkv = parse_dkv(value, f); return; }
  if (flag == "placement") { w.placement = parse_placement(value, f); return; }
  std::int64_t* target = nullptr;
  if (flag == "cp") target = &w.cp;
  else if (flag == "ulysses") target = &w.ulysses;
  else if (flag == "batch") target = &w.batch;
  else if (flag == "seq") target = &w.seq;
  else if (flag == "heads") target = &w.heads;
  else if (flag == "kv-heads") target = &w.kv_heads;
  else if (flag == "head-dim") target = &w.head_dim;
  else if (flag == "kv-head-groups") target = &w.kv_head_groups;
  else if (flag == "gpus-per-node") target = &w.gpus_per_node;
  else if (flag == "tp") target = &w.tp;
  else if (flag == "dp") target = &w.dp;
  if (!target) throw InputError(f, "not a workload field");
  *target = parse_int_value(flag, value);
}

std::string get_workload_field(const Workload& w, std::string_view flag) {
  if (flag == "schedule") return std::string(to_string(w.schedule));
  if (flag == "dtype") return std::string(to_string(w.dtype));
  if (flag == "mask") return std::string(to_string(w.mask));
  if (flag == "pass") return std::string(to_string(w.pass));
  if (flag == "balance") return std::string(to_string(w.balance));
  if (flag == "dkv") return std::string(to_string(w.dkv));
  if (flag == "placement") return std::string(to_string(w.placement));
  if (flag == "cp") return std::to_string(w.cp);
  if (flag == "ulysses") return std::to_string(w.ulysses);
  if (flag == "batch") return std::to_string(w.batch);
  if (flag == "seq") return std::to_string(w.seq);
  if (flag == "heads") return std::to_string(w.heads);
  if (flag == "kv-heads") return std::to_string(w.kv_heads);
  if (flag == "head-dim") return std::to_string(w.head_dim);
  if (flag == "kv-head-groups") return std::to_string(w.kv_head_groups);
  if (flag == "gpus-per-node") return std::to_string(w.gpus_per_node);
  if (flag == "tp") return std::to_string(w.tp);
  if (flag == "dp") return std::to_string(w.dp);
  throw InputError(std::string(flag), "not a workload field");
}

std::vector<std::string> enum_field_names(std::string_view flag) {
  if (flag == "schedule") {
    std::vector<std::string> out;
    for (ScheduleKind k : all_schedules()) out.emplace_back(to_string(k));
    return out;
  }
  if (flag == "dtype") return names_of({DType::BF16, DType::FP16, DType::FP32});
  if (flag == "mask") return names_of({Mask::Causal, Mask::Full});
  if (flag == "pass") return names_of({PassSet::Fwd, PassSet::Bwd, PassSet::FwdBwd});
  if (flag == "balance") return names_of({Balance::Zigzag, Balance::Contiguous});
  if (flag == "dkv") return names_of({DkvVariant::Fp32, DkvVariant::Input});
  if (flag == "placement") return names_of({Placement::CpInner, Placement::TpInner});
  throw InputError(std::string(flag), "not an enum field");
}

// ---- Lists and ranges ------------------------------------------------------------------------------

std::vector<std::int64_t> parse_int_values(std::string_view field, std::string_view text) {
  const std::string f(field);
  const std::string rule = "must be START:STOP[:+STEP|:xFACTOR]";
  if (trim(text).empty()) throw InputError(f, "empty list (give a value, a list a,b,c or a range " + rule.substr(8) + ")");
  std::vector<std::int64_t> out;
  std::set<std::int64_t> seen;
  auto add = [&](std::int64_t v) {
    if (seen.insert(v).second) out.push_back(v);
    if (out.size() > kMaxAxisValues)
      throw InputError(f, fmt::format("'{}' expands to more than {} values", text, kMaxAxisValues));
  };
  for (std::string_view raw : split(text, ',')) {
    const std::string_view item = trim(raw);
    if (item.empty()) throw InputError(f, fmt::format("empty item in list '{}'", text));
    if (item.find(':') == std::string_view::npos) {
      add(parse_int_value(field, item));
      continue;
    }
    const auto parts = split(item, ':');
    if (parts.size() != 2 && parts.size() != 3)
      throw InputError(f, fmt::format("range '{}' {}", item, rule));
    const auto start = try_parse_int(parts[0]);
    const auto stop = try_parse_int(parts[1]);
    if (!start || !stop)
      throw InputError(f, fmt::format("range '{}' {} (START and STOP are integers)", item, rule));
    if (*start > *stop) throw InputError(f, fmt::format("range '{}': START must be <= STOP", item));
    bool geometric = false;
    std::int64_t step = 1;
    if (parts.size() == 3) {
      const std::string_view s = trim(parts[2]);
      const char kind = s.empty() ? '\0' : s.front();
      const auto amount = s.size() > 1 ? try_parse_int(s.substr(1)) : std::nullopt;
      if ((kind != '+' && kind != 'x' && kind != 'X' && kind != '*') || !amount || s.substr(1).front() == '-' ||
          s.substr(1).front() == '+')
        throw InputError(f, fmt::format("range '{}' {} (step '{}' must be +STEP or xFACTOR)", item, rule, s));
      geometric = kind != '+';
      step = *amount;
      if (!geometric && step < 1) throw InputError(f, fmt::format("range '{}': +STEP must be >= 1", item));
      if (geometric && step < 2) throw InputError(f, fmt::format("range '{}': xFACTOR must be >= 2", item));
      if (geometric && *start < 1) throw InputError(f, fmt::format("range '{}': a geometric range needs START >= 1", item));
    }
    for (std::int64_t v = *start; v <= *stop;) {
      add(v);
      if (geometric) {
        if (v > *stop / step) break;
        v *= step;
      } else {
        if (v > *stop - step) break;
        v += step;
      }
    }
  }
  return out;
}

std::vector<std::string> parse_enum_values(std::string_view field, std::string_view text) {
  const std::string f(field);
  if (trim(text) == "all") return enum_field_names(field);
  if (trim(text).empty()) throw InputError(f, "empty list (give a name, a list a,b or 'all')");
  std::vector<std::string> out;
  for (std::string_view raw : split(text, ',')) {
    const std::string_view item = trim(raw);
    if (item.empty()) throw InputError(f, fmt::format("empty item in list '{}'", text));
    if (item == "all") throw InputError(f, "'all' cannot be combined with other names");
    Workload scratch;
    set_workload_field(scratch, field, item);  // InputError lists the accepted names
    std::string canonical = get_workload_field(scratch, field);
    if (std::find(out.begin(), out.end(), canonical) == out.end()) out.push_back(std::move(canonical));
  }
  return out;
}

SweepAxis parse_axis(std::string_view field, std::string_view text) {
  const WorkloadField* f = find_workload_field(field);
  if (!f) throw InputError(std::string(field), "not a workload field that sweep can vary");
  SweepAxis axis;
  axis.field = std::string(field);
  if (f->numeric) {
    for (std::int64_t v : parse_int_values(field, text)) axis.values.push_back(std::to_string(v));
  } else {
    axis.values = parse_enum_values(field, text);
  }
  return axis;
}

// ---- One run ---------------------------------------------------------------------------------------

SimulatedRun simulate_workload(const Workload& w, const HardwareProfile& hw, bool keep_timeline,
                               const DeviceSharing& sharing) {
  validate(w);
  Schedule schedule = make_schedule(w);
  SimulatedRun out;
  out.result = simulate_schedule(schedule, hw, keep_timeline ? &out.timeline : nullptr, 0, sharing);
  if (keep_timeline) out.schedule = std::move(schedule);
  return out;
}

std::string describe(const Workload& w) {
  std::string s = fmt::format("{} cp={}", to_string(w.schedule), w.cp);
  if (w.schedule == ScheduleKind::Hybrid) s += " U=" + std::to_string(w.ulysses);
  if (w.schedule == ScheduleKind::AllGather || w.schedule == ScheduleKind::Hybrid)
    s += fmt::format(" balance={}", to_string(w.balance));
  if (w.schedule == ScheduleKind::AllGather && w.kv_head_groups != 1)
    s += fmt::format(" kv_groups={}", w.kv_head_groups);
  s += fmt::format(" seq={}", w.seq);
  return s;
}

// ---- Sweep -----------------------------------------------------------------------------------------

std::vector<Workload> expand_sweep(const SweepSpec& spec) {
  std::size_t total = 1;
  for (const auto& axis : spec.axes) {
    if (axis.values.empty()) throw InputError(axis.field, "no values");
    if (total > kMaxSweepCombinations / axis.values.size())
      throw InputError(axis.field, fmt::format("the sweep has more than {} combinations; narrow a list or range",
                                               kMaxSweepCombinations));
    total *= axis.values.size();
  }
  std::vector<Workload> out;
  out.reserve(total);
  std::vector<std::size_t> index(spec.axes.size(), 0);
  for (std::size_t n = 0; n < total; ++n) {
    Workload w = spec.base;
    for (std::size_t a = 0; a < spec.axes.size(); ++a)
      set_workload_field(w, spec.axes[a].field, spec.axes[a].values[index[a]]);
    out.push_back(std::move(w));
    for (std::size_t a = spec.axes.size(); a-- > 0;) {  // odometer: last axis fastest
      if (++index[a] < spec.axes[a].values.size()) break;
      index[a] = 0;
    }
  }
  return out;
}

SweepResult run_sweep(const SweepSpec& spec, const ProgressFn& progress, int jobs) {
  std::vector<HardwareProfile> profiles;
  if (spec.hardware.empty()) profiles.push_back(default_hardware());
  for (const auto& name : spec.hardware) profiles.push_back(load_hardware(name));

  const std::vector<Workload> workloads = expand_sweep(spec);
  bool axis_sets_gpn = false;
  SweepResult result;
  for (const auto& axis : spec.axes) {
    if (axis.field == "gpus-per-node") axis_sets_gpn = true;
    if (axis.values.size() > 1) result.varying.push_back(axis.field);
  }
  if (profiles.size() > 1) result.varying.push_back("hardware");

  struct Item {
    Workload workload;
    std::size_t profile;
    std::string reason;
    std::optional<RunResult> run;
  };
  std::vector<Item> items;
  items.reserve(workloads.size() * profiles.size());
  std::set<std::pair<std::size_t, std::string>> seen;
  for (std::size_t p = 0; p < profiles.size(); ++p) {
    for (const Workload& base : workloads) {
      Item item{base, p, {}, std::nullopt};
      if (spec.gpus_per_node_from_hardware && !axis_sets_gpn) item.workload.gpus_per_node = profiles[p].gpus_per_node;
      // --ulysses applies to hybrid and --kv-head-groups to allgather only, so `--schedule all
      // --ulysses 2,4` compares hybrid splits with the other schedules instead of rejecting them.
      if (item.workload.schedule != ScheduleKind::Hybrid) item.workload.ulysses = 1;
      if (item.workload.schedule != ScheduleKind::AllGather) item.workload.kv_head_groups = 1;
      if (!seen.insert({p, to_json(item.workload).dump()}).second) continue;  // each combination once
      item.reason = invalid_reason(item.workload);
      items.push_back(std::move(item));
    }
  }
  std::vector<std::size_t> valid;
  for (std::size_t i = 0; i < items.size(); ++i)
    if (items[i].reason.empty()) valid.push_back(i);

  parallel_for(
      valid.size(), jobs, [&](std::size_t k) { return describe(items[valid[k]].workload); }, progress,
      [&](std::size_t k) {
        Item& item = items[valid[k]];
        try {
          const Schedule schedule = make_schedule(item.workload);
          item.run = simulate_schedule(schedule, profiles[item.profile], nullptr, jobs > 1 ? 1 : 0);
        } catch (const InputError& e) {  // a rule only the generator or the cost model checks
          item.reason = e.what();
        }
      });

  for (auto& item : items) {
    if (item.run) result.runs.push_back(std::move(*item.run));
    else result.invalid.push_back({std::move(item.workload), profiles[item.profile].name, std::move(item.reason)});
  }
  return result;
}

// ---- Plan ------------------------------------------------------------------------------------------

RankBy parse_rank_by(std::string_view s, const std::string& field) {
  s = trim(s);
  if (s == "step" || s == "step-time") return RankBy::StepTime;
  if (s == "throughput") return RankBy::Throughput;
  throw InputError(field, fmt::format("'{}' is not one of step|throughput", s));
}

std::string_view to_string(RankBy r) { return r == RankBy::StepTime ? "step" : "throughput"; }

std::vector<Workload> enumerate_plan(const PlanSpec& spec) {
  const Workload& b = spec.base;
  if (spec.gpus < 1) throw InputError("gpus", fmt::format("{} must be >= 1", spec.gpus));
  if (b.tp < 1) throw InputError("tp", fmt::format("{} must be >= 1", b.tp));
  if (spec.gpus % b.tp != 0)
    throw InputError("tp", fmt::format("{} does not divide gpus = {} (the mesh is tp x cp x dp)", b.tp, spec.gpus));
  std::vector<std::int64_t> cps = spec.cp_sizes;
  if (cps.empty()) {
    const std::int64_t per_tp = spec.gpus / b.tp;
    for (std::int64_t d = 1; d <= per_tp; ++d)
      if (per_tp % d == 0) cps.push_back(d);
  }
  std::sort(cps.begin(), cps.end());
  cps.erase(std::unique(cps.begin(), cps.end()), cps.end());
  const std::vector<ScheduleKind> schedules = spec.schedules.empty() ? all_schedules() : spec.schedules;
  const std::vector<Balance> balances =
      spec.balances.empty() ? std::vector<Balance>{Balance::Zigzag, Balance::Contiguous} : spec.balances;
  const std::vector<std::int64_t> groups = spec.kv_head_groups.empty() ? std::vector<std::int64_t>{1} : spec.kv_head_groups;

  std::vector<Workload> out;
  for (std::int64_t cp : cps) {
    Workload w = b;
    w.cp = cp;
    w.ulysses = 1;
    w.kv_head_groups = 1;
    w.dp = (cp > 0 && spec.gpus % (cp * b.tp) == 0) ? spec.gpus / (cp * b.tp) : 1;
    if (cp == 1) {
      // No context parallelism: every schedule degenerates to plain attention on one GPU.
      w.schedule = ScheduleKind::Ring;
      w.balance = Balance::Contiguous;
      out.push_back(w);
      continue;
    }
    for (ScheduleKind kind : schedules) {
      w.schedule = kind;
      w.ulysses = 1;
      w.kv_head_groups = 1;
      switch (kind) {
        case ScheduleKind::Ring:
          w.balance = Balance::Contiguous;
          out.push_back(w);
          break;
        case ScheduleKind::ZigzagRing:
          w.balance = Balance::Zigzag;
          out.push_back(w);
          break;
        case ScheduleKind::Ulysses:
          w.balance = b.balance;
          out.push_back(w);
          break;
        case ScheduleKind::AllGather:
          for (Balance bal : balances) {
            for (std::int64_t g : groups) {
              w.balance = bal;
              w.kv_head_groups = g;
              out.push_back(w);
            }
          }
          break;
        case ScheduleKind::Hybrid: {
          std::vector<std::int64_t> us = spec.ulysses_sizes;
          if (us.empty())
            for (std::int64_t u = 2; u < cp; ++u)
              if (cp % u == 0) us.push_back(u);
          for (std::int64_t u : us) {
            for (Balance bal : balances) {
              w.ulysses = u;
              w.balance = bal;
              out.push_back(w);
            }
          }
          break;
        }
      }
    }
  }
  return out;
}

std::string plan_reason(const PlanSpec& spec, const Workload& w) {
  if (w.cp < 1 || w.tp < 1) return {};  // validate() names these
  if (spec.gpus % (w.cp * w.tp) != 0)
    return fmt::format("cp: cp x tp = {} x {} does not divide gpus = {} (the mesh is tp x cp x dp)", w.cp, w.tp,
                       spec.gpus);
  if (w.schedule == ScheduleKind::Hybrid) {
    if (w.ulysses <= 1 || w.ulysses >= w.cp)
      return fmt::format("ulysses: hybrid needs 1 < U < N (U = {}, N = {}); U = 1 is ring, U = N is ulysses",
                         w.ulysses, w.cp);
    const std::int64_t span = w.ulysses * (w.placement == Placement::TpInner ? w.tp : 1);
    if (w.gpus_per_node % span != 0)
      return fmt::format("ulysses: U = {} ({} GPUs with placement {}) does not divide gpus_per_node = {}: "
                         "the all-to-all would cross nodes (plan keeps Ulysses groups inside one NVSwitch domain)",
                         w.ulysses, span, to_string(w.placement), w.gpus_per_node);
  }
  return {};
}

PlanResult run_plan(const PlanSpec& spec, const HardwareProfile& hw, const ProgressFn& progress, int jobs) {
  if (spec.reserve_bytes < 0) throw InputError("reserve-gib", "must be >= 0");
  const std::vector<Workload> candidates = enumerate_plan(spec);
  PlanResult result;
  result.hardware = hw.name;
  result.hardware_memory_bytes = hw.memory_bytes;
  result.candidates = candidates.size();

  struct Item {
    std::string reason;
    std::optional<PlanEntry> entry;
  };
  std::vector<Item> items(candidates.size());
  std::vector<std::size_t> todo;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    items[i].reason = plan_reason(spec, candidates[i]);
    if (items[i].reason.empty()) items[i].reason = invalid_reason(candidates[i]);
    if (items[i].reason.empty()) todo.push_back(i);
  }

  parallel_for(
      todo.size(), jobs, [&](std::size_t k) { return describe(candidates[todo[k]]); }, progress,
      [&](std::size_t k) {
        const std::size_t i = todo[k];
        Item& item = items[i];
        try {
          const Schedule schedule = make_schedule(candidates[i]);
          const Bytes peak = schedule_peak_memory(schedule);
          if (hw.memory_bytes > 0 && peak + spec.reserve_bytes > hw.memory_bytes) {
            item.reason = fmt::format(
                "memory: attention peak {} + reserve {} = {} > {} per GPU ({})", gib(peak), gib(spec.reserve_bytes),
                gib(peak + spec.reserve_bytes), gib(hw.memory_bytes), hw.name);
            return;
          }
          PlanEntry entry;
          entry.result = simulate_schedule(schedule, hw, nullptr, jobs > 1 ? 1 : 0);
          entry.peak_memory_bytes = peak;
          item.entry = std::move(entry);
        } catch (const InputError& e) {
          item.reason = e.what();
        }
      });

  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].entry) order.push_back(i);
    else result.dropped.push_back({candidates[i], hw.name, items[i].reason});
  }
  auto key_time = [&](std::size_t i) -> long double {
    const RunResult& r = items[i].entry->result;
    if (spec.rank_by == RankBy::Throughput)
      return static_cast<long double>(r.summary.step_time_ns) / static_cast<long double>(std::max<std::int64_t>(1, r.workload.dp));
    return static_cast<long double>(r.summary.step_time_ns);
  };
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const long double ta = key_time(a), tb = key_time(b);
    if (ta != tb) return ta < tb;
    const Summary& sa = items[a].entry->result.summary;
    const Summary& sb = items[b].entry->result.summary;
    if (sa.max_exposed_comm_ns() != sb.max_exposed_comm_ns()) return sa.max_exposed_comm_ns() < sb.max_exposed_comm_ns();
    return items[a].entry->peak_memory_bytes < items[b].entry->peak_memory_bytes;
  });
  for (std::size_t i : order) result.ranked.push_back(std::move(*items[i].entry));
  return result;
}

// ---- Reporters -------------------------------------------------------------------------------------

std::string sweep_table(const SweepResult& r) {
  std::string out = fmt::format("{} run{} simulated", r.runs.size(), r.runs.size() == 1 ? "" : "s");
  if (!r.invalid.empty()) out += fmt::format(", {} invalid", r.invalid.size());
  out += "\n";
  if (!r.runs.empty()) out += runs_table(r.runs);
  if (!r.invalid.empty()) {
    // Name each invalid combination by the flags that vary (schedule and cp always).
    std::vector<std::string> keys;
    for (const auto& f : workload_fields()) {
      const bool varying = std::find(r.varying.begin(), r.varying.end(), f.flag) != r.varying.end();
      if (varying || f.flag == "schedule" || f.flag == "cp") keys.emplace_back(f.flag);
    }
    const bool hw_varies = std::find(r.varying.begin(), r.varying.end(), "hardware") != r.varying.end();
    out += fmt::format("\ninvalid combinations ({}):\n", r.invalid.size());
    for (const auto& inv : r.invalid) {
      std::string key;
      for (const auto& k : keys) key += (key.empty() ? "" : " ") + k + "=" + get_workload_field(inv.workload, k);
      if (hw_varies) key += " hardware=" + inv.hardware;
      out += "  " + key + ": " + inv.reason + "\n";
    }
  }
  return out;
}

nlohmann::json sweep_json(const SweepResult& r, bool per_rank) {
  nlohmann::json j = runs_json(r.runs, per_rank);
  j["varying"] = r.varying;
  j["invalid"] = nlohmann::json::array();
  for (const auto& inv : r.invalid) j["invalid"].push_back(rejected_json(inv));
  return j;
}

std::string sweep_csv(const SweepResult& r) {
  const std::vector<std::string> lines = csv_lines(r.runs);
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i) out += lines[i] + (i == 0 ? ",status,reason\n" : ",ok,\n");
  for (const auto& inv : r.invalid)
    out += csv_config_only(inv.workload, inv.hardware) + ",invalid," + csv_text(inv.reason) + "\n";
  return out;
}

std::string plan_table(const PlanSpec& spec, const PlanResult& r, std::size_t top, bool verbose) {
  const Workload& b = spec.base;
  std::string out = fmt::format("cp-sim plan: {} GPUs ({} per node, tp={}, placement {}) of {} ({} each)\n", spec.gpus,
                                b.gpus_per_node, b.tp, to_string(b.placement), r.hardware, gib(r.hardware_memory_bytes));
  out += fmt::format("layer: {}, dK/dV {}\n", model_line(b), to_string(b.dkv));
  out += fmt::format("ranked by {}, then exposed comm, then peak memory; memory reserve {} per GPU\n\n",
                     spec.rank_by == RankBy::StepTime ? "step time of one CP group"
                                                      : "time per sequence (step time / dp)",
                     gib(spec.reserve_bytes));
  TextTable t;
  t.header = {"#", "schedule", "cp", "dp", "UxR", "balance", "kv_groups", "step time", "TFLOP/s/GPU", "exposed comm",
              "peak memory"};
  t.right = {true, false, true, true, true, false, true, true, true, true, true};
  if (spec.rank_by == RankBy::Throughput) {
    t.header.insert(t.header.begin() + 8, "time/seq");
    t.right.insert(t.right.begin() + 8, true);
  }
  const std::size_t shown = std::min(top, r.ranked.size());
  for (std::size_t i = 0; i < shown; ++i) {
    const RunResult& run = r.ranked[i].result;
    const Workload& w = run.workload;
    std::vector<std::string> row = {std::to_string(i + 1),
                                    std::string(to_string(w.schedule)),
                                    std::to_string(w.cp),
                                    std::to_string(w.dp),
                                    split_text(w),
                                    balance_text(w),
                                    w.schedule == ScheduleKind::AllGather ? std::to_string(w.kv_head_groups) : "-",
                                    format_nanos(run.summary.step_time_ns),
                                    fmt::format("{:.1f}", run.summary.achieved_tflops_per_gpu()),
                                    format_nanos(run.summary.max_exposed_comm_ns()),
                                    format_bytes(r.ranked[i].peak_memory_bytes)};
    if (spec.rank_by == RankBy::Throughput) row.insert(row.begin() + 8, format_nanos(time_per_sequence(run)));
    t.rows.push_back(std::move(row));
  }
  if (r.ranked.empty()) out += "no candidate is valid and fits in memory\n";
  else out += t.render();
  std::int64_t spanning = 0;
  const Workload* least = nullptr;  // of the ranked candidates whose TP groups cross nodes, one of the least cp
  for (const PlanEntry& e : r.ranked)
    if (tp_spans_nodes(e.result.workload)) {
      ++spanning;
      if (least == nullptr || e.result.workload.cp < least->cp) least = &e.result.workload;
    }
  if (least != nullptr)
    out += fmt::format("\nnote: {} of the {} simulated candidates (cp >= {}) have TP groups spanning nodes: {}\n",
                       spanning, r.ranked.size(), least->cp, placement_note(*least));
  out += fmt::format("\n{} candidates: {} simulated (top {} shown), {} dropped\n", r.candidates, r.ranked.size(),
                     shown, r.dropped.size());
  const std::size_t limit = verbose ? r.dropped.size() : std::min<std::size_t>(r.dropped.size(), 5);
  for (std::size_t i = 0; i < limit; ++i)
    out += "  " + describe(r.dropped[i].workload) + ": " + r.dropped[i].reason + "\n";
  if (limit < r.dropped.size())
    out += fmt::format("  ... and {} more (--verbose lists every dropped candidate)\n", r.dropped.size() - limit);
  return out;
}

nlohmann::json plan_json(const PlanSpec& spec, const PlanResult& r, bool per_rank) {
  std::vector<RunResult> runs;
  runs.reserve(r.ranked.size());
  for (const auto& e : r.ranked) runs.push_back(e.result);
  nlohmann::json j = runs_json(runs, per_rank);
  j["schema"] = kPlanSchema;
  j["gpus"] = spec.gpus;
  j["gpus_per_node"] = spec.base.gpus_per_node;
  j["reserve_bytes"] = spec.reserve_bytes;
  j["hardware"] = r.hardware;
  j["hardware_memory_bytes"] = r.hardware_memory_bytes;
  j["rank_by"] = std::string(to_string(spec.rank_by));
  j["base"] = to_json(spec.base);
  j["candidates"] = r.candidates;
  nlohmann::json& list = j["runs"];
  for (std::size_t i = 0; i < r.ranked.size(); ++i) {
    list[i]["place"] = i + 1;
    list[i]["dp"] = r.ranked[i].result.workload.dp;
    list[i]["time_per_sequence_ns"] = time_per_sequence(r.ranked[i].result);
    list[i]["description"] = describe(r.ranked[i].result.workload);
  }
  j["dropped"] = nlohmann::json::array();
  for (const auto& d : r.dropped) {
    nlohmann::json e = rejected_json(d);
    e["description"] = describe(d.workload);
    j["dropped"].push_back(std::move(e));
  }
  return j;
}

std::string plan_csv(const PlanResult& r) {
  std::vector<RunResult> runs;
  runs.reserve(r.ranked.size());
  for (const auto& e : r.ranked) runs.push_back(e.result);
  const std::vector<std::string> lines = csv_lines(runs);
  std::string out = lines.at(0) + ",time_per_sequence_ns,place,status,reason\n";
  for (std::size_t i = 1; i < lines.size(); ++i)
    out += lines[i] + fmt::format(",{},{},ok,\n", time_per_sequence(r.ranked[i - 1].result), i);
  for (const auto& d : r.dropped)
    out += csv_config_only(d.workload, d.hardware) + ",,,dropped," + csv_text(d.reason) + "\n";
  return out;
}

}  // namespace cpscope
