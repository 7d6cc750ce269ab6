// Reporters over RunResult/Timeline: summary JSON, console tables, CSV, streamed Chrome trace JSON,
// and the atomic file writer every output file goes through.
#include "sim/report.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <ostream>
#include <string_view>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sim/error.h"

namespace cpscope {
namespace {

// ---------------------------------------------------------------------------------------------
// Text helpers

// Display width of a UTF-8 string: code points (every character we print is one column wide).
std::size_t display_width(std::string_view s) {
  std::size_t w = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++w;
  return w;
}

// A left/right-aligned text table; columns sized to their widest cell.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header, std::vector<bool> right_align)
      : right_(std::move(right_align)) {
    rows_.push_back(std::move(header));
  }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void add_separator() { rows_.emplace_back(); }
  // A line printed verbatim (not part of any column, not counted in the widths).
  void add_note(std::string text) { notes_.emplace(rows_.size(), std::move(text)); }

  std::string render(std::string_view indent = "") const {
    std::vector<std::size_t> width(rows_.front().size(), 0);
    for (const auto& row : rows_)
      for (std::size_t c = 0; c < row.size() && c < width.size(); ++c)
        width[c] = std::max(width[c], display_width(row[c]));
    std::size_t total = 0;
    for (std::size_t w : width) total += w;
    total += width.empty() ? 0 : 2 * (width.size() - 1);

    std::string out;
    auto emit_row = [&](const std::vector<std::string>& row) {
      std::string line(indent);
      for (std::size_t c = 0; c < width.size(); ++c) {
        const std::string& cell = c < row.size() ? row[c] : std::string();
        const std::size_t pad = width[c] - display_width(cell);
        if (c > 0) line += "  ";
        if (right_[c]) line.append(pad, ' ');
        line += cell;
        if (!right_[c] && c + 1 < width.size()) line.append(pad, ' ');
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out += line;
      out += '\n';
    };
    emit_row(rows_.front());
    out += std::string(indent) + std::string(total, '-') + '\n';
    auto note = notes_.begin();
    for (std::size_t r = 1; r < rows_.size(); ++r) {
      for (; note != notes_.end() && note->first == r; ++note) out += std::string(indent) + note->second + '\n';
      if (rows_[r].empty()) {
        out += std::string(indent) + std::string(total, '-') + '\n';
      } else {
        emit_row(rows_[r]);
      }
    }
    for (; note != notes_.end(); ++note) out += std::string(indent) + note->second + '\n';
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_;
  std::multimap<std::size_t, std::string> notes_;  // printed before the row of that index
};

std::string percent_of(Nanos part, Nanos whole) {
  if (whole <= 0) return "-";
  return fmt::format("{:.1f}%", 100.0 * static_cast<double>(part) / static_cast<double>(whole));
}

std::string format_tflops(double tflops) { return fmt::format("{:.1f}", tflops); }

std::string format_flops(Flops f) {
  const double v = static_cast<double>(f);
  if (v < 1e9) return fmt::format("{:.2f} MFLOP", v / 1e6);
  if (v < 1e12) return fmt::format("{:.2f} GFLOP", v / 1e9);
  if (v < 1e15) return fmt::format("{:.2f} TFLOP", v / 1e12);
  return fmt::format("{:.2f} PFLOP", v / 1e15);
}

// FLOPs per second of step time per GPU, in TFLOP/s.
double tflops_rate(Flops flops, Nanos step) {
  if (step <= 0) return 0.0;
  return static_cast<double>(flops) / static_cast<double>(step) / 1e3;
}

bool has_bwd(PassSet p) { return p != PassSet::Fwd; }
bool uses_balance(ScheduleKind k) { return k == ScheduleKind::AllGather || k == ScheduleKind::Hybrid; }

// One line that says which workload ran.
std::string config_line(const Workload& w) {
  std::string s = fmt::format("{} cp={}", to_string(w.schedule), w.cp);
  if (w.schedule == ScheduleKind::Hybrid) s += fmt::format(" ulysses={}", w.ulysses);
  if (uses_balance(w.schedule)) s += fmt::format(" balance={}", to_string(w.balance));
  if (w.schedule == ScheduleKind::AllGather && w.kv_head_groups > 1)
    s += fmt::format(" kv_head_groups={}", w.kv_head_groups);
  s += fmt::format(" | batch={} seq={} heads={} kv_heads={} head_dim={} {} {} {}", w.batch, w.seq, w.heads,
                   w.kv_heads, w.head_dim, to_string(w.dtype), to_string(w.mask), to_string(w.pass));
  if (has_bwd(w.pass)) s += fmt::format(" dkv={}", to_string(w.dkv));
  s += fmt::format(" | gpus_per_node={}", w.gpus_per_node);
  if (w.tp > 1) s += fmt::format(" tp={}", w.tp);
  if (w.dp > 1) s += fmt::format(" dp={}", w.dp);
  if (w.tp > 1) s += fmt::format(" placement={}", to_string(w.placement));
  return s;
}

// ---------------------------------------------------------------------------------------------
// Streamed JSON output for the Chrome trace

// Appends `s` as a JSON string literal (with quotes). Invalid UTF-8 bytes become U+FFFD so the output
// always parses (kernel names from foreign traces are not guaranteed to be valid UTF-8).
void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20) {
            out += "\\u00";
            out += kHex[c >> 4];
            out += kHex[c & 0xF];
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    // Multi-byte sequence: validate (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    bool ok = len != 0 && i + len <= n;
    if (ok) {
      const unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
      ok = c1 >= lo && c1 <= hi;
      for (std::size_t k = 2; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    }
    if (ok) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\\ufffd";
      ++i;
    }
  }
  out += '"';
}

void append_int(std::string& out, std::int64_t v) {
  char buf[24];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}

// Integer nanoseconds as microseconds with exactly three decimals ("0.001", "-12.500"): exact, no
// floating-point rounding.
void append_micros(std::string& out, Nanos ns) {
  std::uint64_t mag = ns < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(ns) : static_cast<std::uint64_t>(ns);
  if (ns < 0) out += '-';
  char buf[24];
  const auto res = std::to_chars(buf, buf + sizeof buf, mag / 1000);
  out.append(buf, res.ptr);
  const unsigned frac = static_cast<unsigned>(mag % 1000);
  out += '.';
  out += static_cast<char>('0' + frac / 100);
  out += static_cast<char>('0' + frac / 10 % 10);
  out += static_cast<char>('0' + frac % 10);
}

std::string_view pass_name(std::int8_t pass) {
  switch (pass) {
    case 0: return "fwd";
    case 1: return "bwd";
    default: return "unknown";
  }
}

// ---------------------------------------------------------------------------------------------
// Atomic files

[[noreturn]] void fail_write(const std::string& field, const std::string& path, const std::string& tmp,
                             int err) {
  if (!tmp.empty()) std::remove(tmp.c_str());
  const char* reason = err != 0 ? std::strerror(err) : "I/O error";
  throw InputError(field, fmt::format("cannot write '{}': {}", path, reason));
}

std::string temp_name(const std::string& path) {
  // pid + a process-wide counter: unique among concurrent writers in this and other processes.
  static std::atomic<unsigned long long> counter{0};
  return fmt::format("{}.tmp.{}.{}", path, static_cast<long long>(::getpid()), counter.fetch_add(1));
}

// The values a row of runs_csv/runs_table shows for a run's config, in column order.
struct ConfigColumn {
  const char* name;
  std::string (*value)(const RunResult&);
};

const std::vector<ConfigColumn>& config_columns() {
  static const std::vector<ConfigColumn> cols = {
      {"schedule", [](const RunResult& r) { return std::string(to_string(r.workload.schedule)); }},
      {"cp", [](const RunResult& r) { return std::to_string(r.workload.cp); }},
      {"ulysses", [](const RunResult& r) { return std::to_string(r.workload.ulysses); }},
      {"batch", [](const RunResult& r) { return std::to_string(r.workload.batch); }},
      {"seq", [](const RunResult& r) { return std::to_string(r.workload.seq); }},
      {"heads", [](const RunResult& r) { return std::to_string(r.workload.heads); }},
      {"kv_heads", [](const RunResult& r) { return std::to_string(r.workload.kv_heads); }},
      {"head_dim", [](const RunResult& r) { return std::to_string(r.workload.head_dim); }},
      {"dtype", [](const RunResult& r) { return std::string(to_string(r.workload.dtype)); }},
      {"mask", [](const RunResult& r) { return std::string(to_string(r.workload.mask)); }},
      {"pass", [](const RunResult& r) { return std::string(to_string(r.workload.pass)); }},
      {"balance", [](const RunResult& r) { return std::string(to_string(r.workload.balance)); }},
      {"dkv", [](const RunResult& r) { return std::string(to_string(r.workload.dkv)); }},
      {"kv_head_groups", [](const RunResult& r) { return std::to_string(r.workload.kv_head_groups); }},
      {"gpus_per_node", [](const RunResult& r) { return std::to_string(r.workload.gpus_per_node); }},
      {"tp", [](const RunResult& r) { return std::to_string(r.workload.tp); }},
      {"dp", [](const RunResult& r) { return std::to_string(r.workload.dp); }},
      {"placement", [](const RunResult& r) { return std::string(to_string(r.workload.placement)); }},
      {"hardware", [](const RunResult& r) { return r.hardware; }},
      {"source", [](const RunResult& r) { return r.source; }},
  };
  return cols;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace

// -----------------------------------------------------------------------------------------------
// Quantities

std::string format_nanos(Nanos ns) {
  const double v = static_cast<double>(ns);
  const Nanos mag = ns < 0 ? -ns : ns;
  if (mag < 1000) return fmt::format("{} ns", ns);
  if (mag < 1'000'000) return fmt::format("{:.2f} µs", v / 1e3);
  if (mag < 1'000'000'000) return fmt::format("{:.3f} ms", v / 1e6);
  return fmt::format("{:.3f} s", v / 1e9);
}

std::string format_bytes(Bytes b) {
  const double v = static_cast<double>(b);
  const Bytes mag = b < 0 ? -b : b;
  if (mag < kKiB) return fmt::format("{} B", b);
  if (mag < kMiB) return fmt::format("{:.1f} KiB", v / static_cast<double>(kKiB));
  if (mag < kGiB) return fmt::format("{:.1f} MiB", v / static_cast<double>(kMiB));
  return fmt::format("{:.2f} GiB", v / static_cast<double>(kGiB));
}

// -----------------------------------------------------------------------------------------------
// Summary JSON and tables

namespace {
// What each device achieved when ranks shared devices (achieved_tflops_per_gpu is then per rank).
double tflops_per_device(const RunResult& run) {
  const Summary& s = run.summary;
  const auto ranks = static_cast<std::int64_t>(s.ranks.size());
  return s.achieved_tflops_per_gpu() * static_cast<double>(ranks) / static_cast<double>(std::max<std::int64_t>(1, run.sharing.devices(ranks)));
}
}  // namespace

nlohmann::json sharing_json(const DeviceSharing& sh) {
  nlohmann::json j = {{"ranks_per_device", sh.ranks_per_device}, {"compute_slots", sh.compute_slots}};
  if (sh.local_transfers) j["local_transfers"] = true;
  return j;
}

nlohmann::json summary_json(const RunResult& run) {
  const Summary& s = run.summary;
  nlohmann::json j;
  j["schema"] = kProfileSchema;
  j["source"] = run.source;
  j["workload"] = to_json(run.workload);
  j["hardware"] = run.hardware;
  j["step_time_ns"] = s.step_time_ns;
  j["total_flops"] = s.total_flops;
  j["achieved_tflops_per_gpu"] = s.achieved_tflops_per_gpu();
  j["max_exposed_comm_ns"] = s.max_exposed_comm_ns();
  j["max_peak_memory_bytes"] = s.max_peak_memory_bytes();
  if (run.sharing.recorded()) j["device_sharing"] = sharing_json(run.sharing);
  if (run.sharing.shared()) j["achieved_tflops_per_device"] = tflops_per_device(run);
  nlohmann::json ranks = nlohmann::json::array();
  for (const RankMetrics& r : s.ranks) {
    ranks.push_back({{"rank", r.rank},
                     {"compute_ns", r.compute_ns},
                     {"comm_ns", r.comm_ns},
                     {"exposed_comm_ns", r.exposed_comm_ns},
                     {"idle_ns", r.idle_ns},
                     {"peak_memory_bytes", r.peak_memory_bytes},
                     {"bytes_sent", r.bytes_sent},
                     {"flops", r.flops},
                     {"span_ns", r.span_ns}});
  }
  j["ranks"] = std::move(ranks);
  return j;
}

std::string summary_table(const RunResult& run, int max_rows) {
  const Summary& s = run.summary;
  const Nanos step = s.step_time_ns;
  std::string out;
  out += config_line(run.workload) + '\n';
  out += fmt::format("hardware       {} ({})\n", run.hardware, run.source);
  if (run.sharing.shared())
    out += fmt::format("devices        {} rank(s) per device, {:g} compute slot(s) each\n", run.sharing.ranks_per_device,
                       run.sharing.compute_slots);
  if (run.sharing.local_transfers)
    out += "transfers      copies within one GPU, no rank waiting for a peer (as replay's NCCL sends to itself)\n";
  out += fmt::format("step time      {}\n", format_nanos(step));
  if (run.sharing.shared())  // "per GPU" would be per rank: several ranks ran on each device
    out += fmt::format("throughput     {} TFLOP/s per device, {} per rank ({} total over {} ranks on {} device(s))\n",
                       format_tflops(tflops_per_device(run)), format_tflops(s.achieved_tflops_per_gpu()),
                       format_flops(s.total_flops), s.ranks.size(), run.sharing.devices(static_cast<std::int64_t>(s.ranks.size())));
  else
    out += fmt::format("throughput     {} TFLOP/s per GPU ({} total over {} ranks)\n",
                       format_tflops(s.achieved_tflops_per_gpu()), format_flops(s.total_flops), s.ranks.size());
  out += fmt::format("exposed comm   {} max over ranks ({} of step)\n", format_nanos(s.max_exposed_comm_ns()),
                     percent_of(s.max_exposed_comm_ns(), step));
  out += fmt::format("peak memory    {} max per GPU\n", format_bytes(s.max_peak_memory_bytes()));
  out += '\n';

  TextTable table({"rank", "compute", "comm", "exposed", "exposed%", "idle", "idle%", "sent", "peak mem",
                   "TFLOP/s"},
                  {true, true, true, true, true, true, true, true, true, true});
  auto row_of = [&](const std::string& label, const RankMetrics& m) {
    return std::vector<std::string>{label,
                                    format_nanos(m.compute_ns),
                                    format_nanos(m.comm_ns),
                                    format_nanos(m.exposed_comm_ns),
                                    percent_of(m.exposed_comm_ns, step),
                                    format_nanos(m.idle_ns),
                                    percent_of(m.idle_ns, step),
                                    format_bytes(m.bytes_sent),
                                    format_bytes(m.peak_memory_bytes),
                                    format_tflops(tflops_rate(m.flops, step))};
  };
  const std::size_t n = s.ranks.size();
  const std::size_t shown = max_rows <= 0 ? 0 : std::min<std::size_t>(n, static_cast<std::size_t>(max_rows));
  for (std::size_t r = 0; r < shown; ++r) table.add(row_of(std::to_string(s.ranks[r].rank), s.ranks[r]));
  if (shown < n) {
    // Summarise every rank (shown or not) by min / median / max of each column independently.
    table.add_separator();
    table.add_note(shown > 0 ? fmt::format("{} more ranks not shown; over all {} ranks:", n - shown, n)
                             : fmt::format("over all {} ranks:", n));
    auto column = [&](auto member) {
      std::vector<std::int64_t> v;
      v.reserve(n);
      for (const RankMetrics& m : s.ranks) v.push_back(m.*member);
      std::sort(v.begin(), v.end());
      return v;
    };
    const auto compute = column(&RankMetrics::compute_ns);
    const auto comm = column(&RankMetrics::comm_ns);
    const auto exposed = column(&RankMetrics::exposed_comm_ns);
    const auto idle = column(&RankMetrics::idle_ns);
    const auto sent = column(&RankMetrics::bytes_sent);
    const auto mem = column(&RankMetrics::peak_memory_bytes);
    const auto flops = column(&RankMetrics::flops);
    const std::size_t picks[3] = {0, (n - 1) / 2, n - 1};  // lower median for an even count
    const char* labels[3] = {"min", "median", "max"};
    for (int k = 0; k < 3; ++k) {
      RankMetrics m;
      const std::size_t i = picks[k];
      m.compute_ns = compute[i];
      m.comm_ns = comm[i];
      m.exposed_comm_ns = exposed[i];
      m.idle_ns = idle[i];
      m.bytes_sent = sent[i];
      m.peak_memory_bytes = mem[i];
      m.flops = flops[i];
      table.add(row_of(labels[k], m));
    }
  }
  out += table.render();
  return out;
}

// -----------------------------------------------------------------------------------------------
// Chrome trace

void write_chrome_trace(std::ostream& os, const Timeline& timeline) { write_chrome_trace(os, timeline, nullptr); }

void write_chrome_trace(std::ostream& os, const Timeline& timeline, const Schedule* schedule) {
  constexpr std::size_t kFlushBytes = 1 << 20;
  std::string buf;
  buf.reserve(kFlushBytes + 4096);
  auto flush = [&]() {
    os.write(buf.data(), static_cast<std::streamsize>(buf.size()));
    buf.clear();
  };

  // Names are interned: escape each once.
  const std::vector<std::string>& names = timeline.names();
  std::vector<std::string> escaped_names(names.size());
  for (std::size_t i = 0; i < names.size(); ++i) append_json_string(escaped_names[i], names[i]);
  std::string escaped_kind[3];
  for (int k = 0; k < 3; ++k) append_json_string(escaped_kind[k], to_string(static_cast<IntervalKind>(k)));
  static_assert(static_cast<int>(IntervalKind::Memory) == 2, "update escaped_kind[] for the new IntervalKind");

  std::int64_t num_ranks = std::max<std::int64_t>(timeline.num_ranks, 0);
  for (const Interval& iv : timeline.intervals) num_ranks = std::max<std::int64_t>(num_ranks, std::int64_t{iv.rank} + 1);

  buf += "{\"traceEvents\":[\n";
  bool first = true;
  auto begin_event = [&]() {
    if (!first) buf += ",\n";
    first = false;
  };
  for (std::int64_t r = 0; r < num_ranks; ++r) {
    begin_event();
    buf += "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":";
    append_int(buf, r);
    buf += ",\"tid\":0,\"args\":{\"name\":\"rank ";
    append_int(buf, r);
    buf += "\"}},\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":";
    append_int(buf, r);
    buf += ",\"tid\":0,\"args\":{\"sort_index\":";
    append_int(buf, r);
    buf += "}}";
    for (std::size_t t = 0; t < timeline.streams.size(); ++t) {
      buf += ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":";
      append_int(buf, r);
      buf += ",\"tid\":";
      append_int(buf, static_cast<std::int64_t>(t));
      buf += ",\"args\":{\"name\":";
      append_json_string(buf, timeline.streams[t]);
      buf += "}},\n{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":";
      append_int(buf, r);
      buf += ",\"tid\":";
      append_int(buf, static_cast<std::int64_t>(t));
      buf += ",\"args\":{\"sort_index\":";
      append_int(buf, static_cast<std::int64_t>(t));
      buf += "}}";
    }
    if (buf.size() >= kFlushBytes) {
      flush();
      if (!os) return;
    }
  }

  for (const Interval& iv : timeline.intervals) {
    const int kind = static_cast<int>(iv.kind);
    CPSCOPE_CHECK(kind >= 0 && kind < 3, "interval with an unknown kind");
    begin_event();
    buf += "{\"name\":";
    // An interval without an interned name falls back to its kind.
    buf += iv.name < escaped_names.size() ? escaped_names[iv.name] : escaped_kind[kind];
    buf += ",\"cat\":";
    buf += escaped_kind[kind];
    buf += ",\"ph\":\"X\",\"pid\":";
    append_int(buf, iv.rank);
    buf += ",\"tid\":";
    append_int(buf, iv.stream);
    buf += ",\"ts\":";
    append_micros(buf, iv.start);
    buf += ",\"dur\":";
    append_micros(buf, iv.end - iv.start);
    buf += ",\"args\":{\"op_id\":";
    append_int(buf, iv.op_id);
    buf += ",\"step\":";
    append_int(buf, iv.step);
    buf += ",\"pass\":\"";
    buf += pass_name(iv.pass);
    buf += "\",\"bytes\":";
    append_int(buf, iv.bytes);
    buf += ",\"flops\":";
    append_int(buf, iv.flops);
    buf += "}}";
    if (buf.size() >= kFlushBytes) {
      flush();
      if (!os) return;  // the caller (write_file_atomic) reports the stream's failure
    }
  }

  if (schedule != nullptr) {
    // Flow arrows: send op -> receive op, each anchored at the middle of its slice.
    std::unordered_map<std::uint64_t, const Interval*> by_op;
    auto op_key = [](std::int64_t rank, std::int64_t op) { return (static_cast<std::uint64_t>(rank) << 32) | static_cast<std::uint32_t>(op); };
    for (const Interval& iv : timeline.intervals)
      if (iv.op_id >= 0) by_op.emplace(op_key(iv.rank, iv.op_id), &iv);
    std::int64_t id = 0;
    for (const TransferMatch& m : match_transfers(*schedule)) {
      const auto a = by_op.find(op_key(m.src_rank, m.src_op));
      const auto b = by_op.find(op_key(m.dst_rank, m.dst_op));
      if (a == by_op.end() || b == by_op.end()) continue;
      for (int end = 0; end < 2; ++end) {
        const Interval& iv = end == 0 ? *a->second : *b->second;
        begin_event();
        buf += end == 0 ? "{\"name\":\"transfer\",\"cat\":\"flow\",\"ph\":\"s\",\"id\":"
                        : "{\"name\":\"transfer\",\"cat\":\"flow\",\"ph\":\"f\",\"bp\":\"e\",\"id\":";
        append_int(buf, id);
        buf += ",\"pid\":";
        append_int(buf, iv.rank);
        buf += ",\"tid\":";
        append_int(buf, iv.stream);
        buf += ",\"ts\":";
        append_micros(buf, iv.start + (iv.end - iv.start) / 2);
        buf += "}";
      }
      ++id;
      if (buf.size() >= kFlushBytes) {
        flush();
        if (!os) return;
      }
    }
  }

  buf += "\n],\"displayTimeUnit\":\"ns\",\"otherData\":{\"generator\":\"cpscope\",\"num_ranks\":";
  append_int(buf, num_ranks);
  buf += ",\"intervals\":";
  append_int(buf, static_cast<std::int64_t>(timeline.intervals.size()));
  buf += ",\"streams\":[";
  for (std::size_t t = 0; t < timeline.streams.size(); ++t) {
    if (t > 0) buf += ',';
    append_json_string(buf, timeline.streams[t]);
  }
  buf += "]}}\n";
  flush();
}

// -----------------------------------------------------------------------------------------------
// Files

void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer,
                       const std::string& field) {
  if (path.empty()) throw InputError(field, "empty file path");
  const std::string tmp = temp_name(path);
  errno = 0;
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) fail_write(field, path, tmp, errno);
  try {
    writer(out);
  } catch (...) {
    out.close();
    std::remove(tmp.c_str());
    throw;
  }
  errno = 0;
  out.flush();
  if (!out) fail_write(field, path, tmp, errno);
  errno = 0;
  out.close();
  if (out.fail()) fail_write(field, path, tmp, errno);
  // Make the content durable before the rename publishes it, so a crash never leaves a truncated file.
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_write(field, path, tmp, errno);
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail_write(field, path, tmp, err);
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail_write(field, path, tmp, errno);
}

void write_file_atomic(const std::string& path, const std::string& content, const std::string& field) {
  write_file_atomic(path, [&content](std::ostream& os) { os.write(content.data(), static_cast<std::streamsize>(content.size())); },
                    field);
}

void write_file_atomic(const std::string& path, const std::string& content) {
  write_file_atomic(path, content, "path");
}

void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer) {
  write_file_atomic(path, writer, "path");
}

// -----------------------------------------------------------------------------------------------
// Many runs

std::string runs_csv(const std::vector<RunResult>& runs) {
  std::string out;
  for (const ConfigColumn& c : config_columns()) {
    out += c.name;
    out += ',';
  }
  out += "step_time_ns,total_flops,max_exposed_comm_ns,max_peak_memory_bytes,achieved_tflops_per_gpu\n";
  for (const RunResult& run : runs) {
    for (const ConfigColumn& c : config_columns()) {
      out += csv_field(c.value(run));
      out += ',';
    }
    const Summary& s = run.summary;
    // Shortest round-trip representation for the one floating-point column.
    out += fmt::format("{},{},{},{},{}\n", s.step_time_ns, s.total_flops, s.max_exposed_comm_ns(),
                       s.max_peak_memory_bytes(), s.achieved_tflops_per_gpu());
  }
  return out;
}

nlohmann::json runs_json(const std::vector<RunResult>& runs, bool per_rank) {
  nlohmann::json list = nlohmann::json::array();
  for (const RunResult& run : runs) {
    nlohmann::json j = summary_json(run);
    if (!per_rank) j.erase("ranks");
    list.push_back(std::move(j));
  }
  return {{"schema", kRunsSchema}, {"runs", std::move(list)}};
}

std::string runs_table(const std::vector<RunResult>& runs) {
  if (runs.empty()) return "(no runs)\n";
  // Config columns that differ between runs get their own column; the rest go in one "common" line.
  // schedule, cp and seq are always columns: they are what a reader scans for.
  const auto& cols = config_columns();
  std::vector<std::size_t> varying;
  std::string common;
  for (std::size_t c = 0; c < cols.size(); ++c) {
    const std::string first = cols[c].value(runs.front());
    bool differs = false;
    for (const RunResult& r : runs) {
      if (cols[c].value(r) != first) {
        differs = true;
        break;
      }
    }
    const std::string_view name = cols[c].name;
    if (differs || name == "schedule" || name == "cp" || name == "seq") {
      varying.push_back(c);
    } else {
      if (!common.empty()) common += ' ';
      common += fmt::format("{}={}", name, first);
    }
  }
  std::vector<std::string> header;
  std::vector<bool> right;
  for (std::size_t c : varying) {
    header.emplace_back(cols[c].name);
    const std::string_view name = cols[c].name;
    right.push_back(!(name == "schedule" || name == "dtype" || name == "mask" || name == "pass" ||
                      name == "balance" || name == "dkv" || name == "placement" || name == "hardware" ||
                      name == "source"));
  }
  for (const char* h : {"step time", "TFLOP/s/GPU", "exposed comm", "exposed%", "peak mem"}) {
    header.emplace_back(h);
    right.push_back(true);
  }
  TextTable table(std::move(header), std::move(right));
  for (const RunResult& run : runs) {
    std::vector<std::string> row;
    for (std::size_t c : varying) row.push_back(cols[c].value(run));
    const Summary& s = run.summary;
    row.push_back(format_nanos(s.step_time_ns));
    row.push_back(format_tflops(s.achieved_tflops_per_gpu()));
    row.push_back(format_nanos(s.max_exposed_comm_ns()));
    row.push_back(percent_of(s.max_exposed_comm_ns(), s.step_time_ns));
    row.push_back(format_bytes(s.max_peak_memory_bytes()));
    table.add(std::move(row));
  }
  std::string out;
  if (!common.empty()) out += "common: " + common + '\n';
  out += table.render();
  return out;
}

}  // namespace cpscope
