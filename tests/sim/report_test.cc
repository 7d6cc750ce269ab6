// Tests for sim/report: summary JSON fields, tables, Chrome trace JSON, CSV, atomic file writes.
#include "sim/report.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sim/error.h"
#include "sim/hardware.h"
#include "sim/schedule.h"

namespace cpscope {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

RankMetrics metrics(std::int32_t rank, Nanos compute, Nanos comm, Nanos exposed, Nanos idle, Bytes sent,
                    Flops flops, Bytes mem, Nanos span) {
  RankMetrics m;
  m.rank = rank;
  m.compute_ns = compute;
  m.comm_ns = comm;
  m.exposed_comm_ns = exposed;
  m.idle_ns = idle;
  m.bytes_sent = sent;
  m.flops = flops;
  m.peak_memory_bytes = mem;
  m.span_ns = span;
  return m;
}

RunResult two_rank_run() {
  RunResult run;
  run.workload.cp = 2;
  run.workload.seq = 4096;
  run.hardware = "h100-sxm";
  run.summary.step_time_ns = 1000;
  run.summary.ranks.push_back(metrics(0, 800, 300, 100, 100, 4096, 2'000'000, 3 * kGiB, 1000));
  run.summary.ranks.push_back(metrics(1, 700, 250, 150, 200, 8192, 2'000'000, 2 * kGiB, 900));
  run.summary.total_flops = 4'000'000;
  return run;
}

std::set<std::string> keys(const json& j) {
  std::set<std::string> k;
  for (auto it = j.begin(); it != j.end(); ++it) k.insert(it.key());
  return k;
}

TEST(SummaryJson, HasExactlyTheDocumentedFieldsWithExactValues) {
  const RunResult run = two_rank_run();
  const json j = summary_json(run);
  EXPECT_EQ(keys(j), (std::set<std::string>{"schema", "source", "workload", "hardware", "step_time_ns",
                                            "total_flops", "achieved_tflops_per_gpu", "max_exposed_comm_ns",
                                            "max_peak_memory_bytes", "ranks"}));
  EXPECT_EQ(j["schema"], "cpscope.profile/1");
  EXPECT_EQ(j["source"], "simulated");
  EXPECT_EQ(j["hardware"], "h100-sxm");
  EXPECT_EQ(j["workload"], to_json(run.workload));
  EXPECT_TRUE(j["step_time_ns"].is_number_integer());
  EXPECT_EQ(j["step_time_ns"].get<std::int64_t>(), 1000);
  EXPECT_TRUE(j["total_flops"].is_number_integer());
  EXPECT_EQ(j["total_flops"].get<std::int64_t>(), 4'000'000);
  EXPECT_DOUBLE_EQ(j["achieved_tflops_per_gpu"].get<double>(), 2.0);
  EXPECT_EQ(j["max_exposed_comm_ns"].get<std::int64_t>(), 150);
  EXPECT_TRUE(j["max_peak_memory_bytes"].is_number_integer());
  EXPECT_EQ(j["max_peak_memory_bytes"].get<std::int64_t>(), 3 * kGiB);
  ASSERT_EQ(j["ranks"].size(), 2u);
  const json& r1 = j["ranks"][1];
  EXPECT_EQ(keys(r1), (std::set<std::string>{"rank", "compute_ns", "comm_ns", "exposed_comm_ns", "idle_ns",
                                             "peak_memory_bytes", "bytes_sent", "flops", "span_ns"}));
  for (auto it = r1.begin(); it != r1.end(); ++it) EXPECT_TRUE(it->is_number_integer()) << it.key();
  EXPECT_EQ(r1["rank"], 1);
  EXPECT_EQ(r1["compute_ns"], 700);
  EXPECT_EQ(r1["comm_ns"], 250);
  EXPECT_EQ(r1["exposed_comm_ns"], 150);
  EXPECT_EQ(r1["idle_ns"], 200);
  EXPECT_EQ(r1["peak_memory_bytes"], 2 * kGiB);
  EXPECT_EQ(r1["bytes_sent"], 8192);
  EXPECT_EQ(r1["flops"], 2'000'000);
  EXPECT_EQ(r1["span_ns"], 900);
}

TEST(SummaryJson, IsDeterministic) {
  EXPECT_EQ(summary_json(two_rank_run()).dump(), summary_json(two_rank_run()).dump());
}

TEST(Format, HumanisedUnits) {
  EXPECT_EQ(format_nanos(0), "0 ns");
  EXPECT_EQ(format_nanos(850), "850 ns");
  EXPECT_EQ(format_nanos(12'345), "12.35 µs");
  EXPECT_EQ(format_nanos(1'234'567), "1.235 ms");
  EXPECT_EQ(format_nanos(2'000'000'000), "2.000 s");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(12 * kMiB), "12.0 MiB");
  EXPECT_EQ(format_bytes(kGiB + kGiB / 4), "1.25 GiB");
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(SummaryTable, OneRowPerRankAndTheHeadlineNumbers) {
  const std::string table = summary_table(two_rank_run());
  EXPECT_NE(table.find("1.00 µs"), std::string::npos);  // step time
  EXPECT_NE(table.find("2.0 TFLOP/s"), std::string::npos);
  EXPECT_NE(table.find("3.00 GiB"), std::string::npos);  // max peak memory
  EXPECT_NE(table.find("15.0%"), std::string::npos);     // max exposed comm as % of step
  EXPECT_NE(table.find("20.0%"), std::string::npos);     // rank 1 idle as % of step
  // Rows are aligned: every row of the rank table has the same display width as its header.
  const auto lines = lines_of(table);
  std::size_t header = 0;
  while (header < lines.size() && lines[header].find("compute") == std::string::npos) ++header;
  ASSERT_LT(header + 3, lines.size());
  EXPECT_EQ(lines.size(), header + 4);  // header, rule, two ranks
  auto width = [](const std::string& s) {
    std::size_t w = 0;
    for (unsigned char c : s) w += (c & 0xC0) != 0x80;
    return w;
  };
  EXPECT_EQ(width(lines[header + 2]), width(lines[header]));
  EXPECT_EQ(width(lines[header + 3]), width(lines[header]));
}

TEST(SummaryTable, ManyRanksAreSummarisedByMinMedianMax) {
  RunResult run;
  run.hardware = "h100-sxm";
  run.workload.cp = 1024;
  run.summary.step_time_ns = 10'000'000;
  for (std::int32_t r = 0; r < 1024; ++r)
    run.summary.ranks.push_back(metrics(r, 1000 * (r + 1), 0, 0, 0, 0, 0, 0, 0));
  const auto lines = lines_of(summary_table(run, 16));
  std::size_t header = 0;
  while (header < lines.size() && lines[header].find("compute") == std::string::npos) ++header;
  // header, rule, 16 ranks, rule, note, min, median, max
  ASSERT_EQ(lines.size(), header + 2 + 16 + 5);
  EXPECT_EQ(lines[header + 19], "1008 more ranks not shown; over all 1024 ranks:");
  EXPECT_EQ(lines[header + 17].substr(lines[header + 17].find_first_not_of(' '), 3), "15 ");
  EXPECT_NE(lines[header + 20].find("min"), std::string::npos);
  EXPECT_NE(lines[header + 20].find("1.00 µs"), std::string::npos);
  EXPECT_NE(lines[header + 21].find("median"), std::string::npos);
  EXPECT_NE(lines[header + 21].find("512.00 µs"), std::string::npos);  // lower median: rank 511
  EXPECT_NE(lines[header + 22].find("max"), std::string::npos);
  EXPECT_NE(lines[header + 22].find("1.024 ms"), std::string::npos);
}

// --- Chrome trace ---------------------------------------------------------------------------

const std::string kNastyName = "say \"hi\"\\path\nnext\ttab\x01 µs";

Interval interval(std::int32_t rank, std::int32_t stream, IntervalKind kind, std::uint32_t name, Nanos start,
                  Nanos end) {
  Interval iv;
  iv.rank = rank;
  iv.stream = stream;
  iv.kind = kind;
  iv.name = name;
  iv.start = start;
  iv.end = end;
  return iv;
}

Timeline trace_timeline() {
  Timeline t;
  t.num_ranks = 2;
  t.streams = {"compute", "comm"};
  const std::uint32_t attend = t.intern("fwd/step0/attend");
  const std::uint32_t nasty = t.intern(kNastyName);
  const std::uint32_t send = t.intern("fwd/step0/sendrecv");
  Interval a = interval(0, 0, IntervalKind::Compute, attend, 1, 1'234'568);
  a.op_id = 0;
  a.step = 0;
  a.pass = 0;
  a.flops = 123'456'789'012;
  t.intervals.push_back(a);
  Interval c = interval(1, 1, IntervalKind::Comm, send, 0, 999);
  c.op_id = 1;
  c.step = 3;
  c.pass = 1;
  c.bytes = 1 << 20;
  t.intervals.push_back(c);
  t.intervals.push_back(interval(1, 0, IntervalKind::Memory, nasty, 2'000'000'000'000, 2'000'000'000'005));
  return t;
}

std::string trace_text(const Timeline& t) {
  std::ostringstream os;
  write_chrome_trace(os, t);
  return os.str();
}

TEST(ChromeTrace, ParsesWithProcessesThreadsAndCompleteEvents) {
  const Timeline t = trace_timeline();
  const json j = json::parse(trace_text(t));
  EXPECT_EQ(j["displayTimeUnit"], "ns");
  EXPECT_TRUE(j["otherData"].is_object());
  const json& events = j["traceEvents"];
  int x = 0, process_names = 0, thread_names = 0, sort_indices = 0;
  std::set<std::pair<int, int>> named_threads;
  for (const json& e : events) {
    if (e["ph"] == "X") {
      ++x;
    } else {
      ASSERT_EQ(e["ph"], "M");
      if (e["name"] == "process_name") {
        ++process_names;
        EXPECT_EQ(e["args"]["name"], "rank " + std::to_string(e["pid"].get<int>()));
      } else if (e["name"] == "thread_name") {
        ++thread_names;
        named_threads.insert({e["pid"].get<int>(), e["tid"].get<int>()});
        EXPECT_EQ(e["args"]["name"], t.streams.at(e["tid"].get<std::size_t>()));
      } else {
        ++sort_indices;
        EXPECT_TRUE(e["name"] == "process_sort_index" || e["name"] == "thread_sort_index");
      }
    }
  }
  EXPECT_EQ(x, 3);
  EXPECT_EQ(process_names, 2);
  EXPECT_EQ(thread_names, 4);
  EXPECT_EQ(sort_indices, 2 + 4);
  EXPECT_EQ(named_threads, (std::set<std::pair<int, int>>{{0, 0}, {0, 1}, {1, 0}, {1, 1}}));
}

json find_x(const json& trace, const std::string& name) {
  for (const json& e : trace["traceEvents"])
    if (e["ph"] == "X" && e["name"] == name) return e;
  ADD_FAILURE() << "no X event named " << name;
  return {};
}

TEST(ChromeTrace, EventFieldsAndArgs) {
  const json j = json::parse(trace_text(trace_timeline()));
  const json a = find_x(j, "fwd/step0/attend");
  EXPECT_EQ(a["pid"], 0);
  EXPECT_EQ(a["tid"], 0);
  EXPECT_EQ(a["cat"], "compute");
  EXPECT_DOUBLE_EQ(a["ts"].get<double>(), 0.001);
  EXPECT_DOUBLE_EQ(a["dur"].get<double>(), 1234.567);
  EXPECT_EQ(a["args"], (json{{"op_id", 0}, {"step", 0}, {"pass", "fwd"}, {"bytes", 0}, {"flops", 123'456'789'012}}));
  const json c = find_x(j, "fwd/step0/sendrecv");
  EXPECT_EQ(c["pid"], 1);
  EXPECT_EQ(c["tid"], 1);
  EXPECT_EQ(c["cat"], "comm");
  EXPECT_EQ(c["args"], (json{{"op_id", 1}, {"step", 3}, {"pass", "bwd"}, {"bytes", 1 << 20}, {"flops", 0}}));
  const json m = find_x(j, kNastyName);  // quotes, backslash, newline, tab, control char, UTF-8
  EXPECT_EQ(m["cat"], "memory");
  EXPECT_EQ(m["args"]["op_id"], -1);
  EXPECT_EQ(m["args"]["pass"], "unknown");
}

TEST(ChromeTrace, MicrosecondsAreExactDecimalsFromIntegerNanoseconds) {
  const std::string text = trace_text(trace_timeline());
  EXPECT_NE(text.find("\"ts\":0.001,\"dur\":1234.567,"), std::string::npos);
  EXPECT_NE(text.find("\"ts\":0.000,\"dur\":0.999,"), std::string::npos);
  EXPECT_NE(text.find("\"ts\":2000000000.000,\"dur\":0.005,"), std::string::npos);
}

TEST(ChromeTrace, InvalidUtf8BecomesReplacementCharacter) {
  Timeline t;
  t.num_ranks = 1;
  t.streams = {"compute"};
  const std::uint32_t bad = t.intern(std::string("kernel\xff\xc3"));
  t.intervals.push_back(interval(0, 0, IntervalKind::Compute, bad, 0, 10));
  const json j = json::parse(trace_text(t));
  EXPECT_NO_THROW(find_x(j, "kernel\xEF\xBF\xBD\xEF\xBF\xBD"));
}

TEST(ChromeTrace, EmptyTimelineIsValidJson) {
  const json j = json::parse(trace_text(Timeline{}));
  EXPECT_TRUE(j["traceEvents"].empty());
}

// --- Files ----------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("cpscope_report_test." + std::to_string(::getpid()) + "." + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  fs::path path_;
  static inline int counter_ = 0;
};

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(WriteFileAtomic, WritesAndReplaces) {
  TempDir dir;
  const std::string path = (dir.path() / "out.json").string();
  write_file_atomic(path, std::string("first"));
  EXPECT_EQ(read_all(path), "first");
  write_file_atomic(path, [](std::ostream& os) { os << "second"; });
  EXPECT_EQ(read_all(path), "second");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.json"});
}

TEST(WriteFileAtomic, MissingDirectoryThrowsAndLeavesNothing) {
  TempDir dir;
  const std::string path = (dir.path() / "no_such_dir" / "out.json").string();
  try {
    write_file_atomic(path, std::string("x"));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "path");
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find(std::strerror(ENOENT)), std::string::npos) << what;
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(dir.entries().empty());
}

TEST(WriteFileAtomic, FieldOverloadNamesTheFlag) {
  TempDir dir;
  const std::string path = (dir.path() / "missing" / "t.json").string();
  try {
    write_file_atomic(path, [](std::ostream& os) { os << "{}"; }, "trace");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "trace");
    EXPECT_EQ(std::string(e.what()).rfind("trace: cannot write '" + path + "': ", 0), 0u) << e.what();
  }
}

TEST(WriteFileAtomic, TargetThatIsADirectoryThrowsAndLeavesNoTemp) {
  TempDir dir;
  fs::create_directory(dir.path() / "taken");
  const std::string path = (dir.path() / "taken").string();
  EXPECT_THROW(write_file_atomic(path, std::string("x")), InputError);
  EXPECT_TRUE(fs::is_directory(path));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"taken"});
}

TEST(WriteFileAtomic, UnwritableLocationThrows) {
  // /proc refuses new files even for root.
  EXPECT_THROW(write_file_atomic("/proc/cpscope_report_test.json", std::string("x")), InputError);
  EXPECT_FALSE(fs::exists("/proc/cpscope_report_test.json"));
}

TEST(WriteFileAtomic, WriterExceptionPropagatesAndKeepsTheOldFile) {
  TempDir dir;
  const std::string path = (dir.path() / "keep.json").string();
  write_file_atomic(path, std::string("old"));
  EXPECT_THROW(write_file_atomic(path,
                                 [](std::ostream& os) {
                                   os << "partial";
                                   throw std::runtime_error("boom");
                                 }),
               std::runtime_error);
  EXPECT_EQ(read_all(path), "old");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"keep.json"});
}

TEST(WriteFileAtomic, ChromeTraceThroughTheAtomicWriterParses) {
  TempDir dir;
  const std::string path = (dir.path() / "trace.json").string();
  const Timeline t = trace_timeline();
  write_file_atomic(path, [&t](std::ostream& os) { write_chrome_trace(os, t); }, "trace");
  const json j = json::parse(read_all(path));
  EXPECT_EQ(j["traceEvents"].size(), 3u + 12u);
}

// --- Many runs ------------------------------------------------------------------------------

TEST(RunsCsv, HeaderAndRowValues) {
  RunResult a = two_rank_run();
  RunResult b = two_rank_run();
  b.workload.schedule = ScheduleKind::Hybrid;
  b.workload.cp = 8;
  b.workload.ulysses = 2;
  b.hardware = "my,\"custom\" gpu";
  b.summary.step_time_ns = 4000;
  const std::string csv = runs_csv({a, b});
  const auto lines = lines_of(csv);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0],
            "schedule,cp,ulysses,batch,seq,heads,kv_heads,head_dim,dtype,mask,pass,balance,dkv,kv_head_groups,"
            "gpus_per_node,tp,dp,placement,hardware,source,step_time_ns,total_flops,max_exposed_comm_ns,"
            "max_peak_memory_bytes,achieved_tflops_per_gpu");
  const Workload& w = a.workload;
  const std::string config_a = fmt::format(
      "{},2,1,1,4096,32,8,128,{},{},{},{},{},1,8,1,1,{}", to_string(w.schedule), to_string(w.dtype),
      to_string(w.mask), to_string(w.pass), to_string(w.balance), to_string(w.dkv), to_string(w.placement));
  EXPECT_EQ(lines[1], config_a + ",h100-sxm,simulated,1000,4000000,150,3221225472,2");
  EXPECT_EQ(lines[2].rfind(std::string(to_string(ScheduleKind::Hybrid)) + ",8,2,", 0), 0u) << lines[2];
  EXPECT_NE(lines[2].find(",\"my,\"\"custom\"\" gpu\",simulated,4000,4000000,150,3221225472,0.5"),
            std::string::npos)
      << lines[2];
}

TEST(RunsJson, SchemaAndOptionalPerRankArrays) {
  const std::vector<RunResult> runs = {two_rank_run(), two_rank_run()};
  const json brief = runs_json(runs);
  EXPECT_EQ(brief["schema"], "cpscope.runs/1");
  ASSERT_EQ(brief["runs"].size(), 2u);
  EXPECT_FALSE(brief["runs"][0].contains("ranks"));
  EXPECT_EQ(brief["runs"][0]["step_time_ns"], 1000);
  const json full = runs_json(runs, true);
  EXPECT_EQ(full["runs"][1], summary_json(runs[1]));
}

TEST(RunsTable, VaryingColumnsAndOneRowPerRun) {
  RunResult a = two_rank_run();
  RunResult b = two_rank_run();
  b.workload.heads = 64;
  const auto lines = lines_of(runs_table({a, b}));
  ASSERT_EQ(lines.size(), 1u + 2u + 2u);  // common line, header, rule, two runs
  EXPECT_EQ(lines[0].rfind("common: ", 0), 0u);
  EXPECT_EQ(lines[0].find("heads=32"), std::string::npos);  // heads varies: it is a column
  EXPECT_NE(lines[1].find("heads"), std::string::npos);
  EXPECT_NE(lines[4].find("64"), std::string::npos);
}

}  // namespace
}  // namespace cpscope

// --- End to end over the real generator and engine --------------------------------------------

namespace cpscope {
namespace {

RunResult simulate_run(const Workload& w, Timeline* keep = nullptr) {
  const Schedule schedule = make_schedule(w);
  SimResult sim = simulate(schedule, default_hardware());
  RunResult run;
  run.workload = w;
  run.hardware = default_hardware().name;
  run.summary = summarize(sim.timeline, &schedule);
  run.stats = sim.stats;
  if (keep) *keep = std::move(sim.timeline);
  return run;
}

TEST(EndToEnd, SimulatedRunSummaryConservesFlopsAndIsDeterministic) {
  Workload w;
  w.seq = 16384;
  w.cp = 4;
  Timeline timeline;
  const RunResult run = simulate_run(w, &timeline);
  EXPECT_EQ(run.summary.total_flops, w.total_flops());
  ASSERT_EQ(run.summary.ranks.size(), 4u);
  EXPECT_EQ(run.summary.step_time_ns, run.stats.makespan);
  for (const RankMetrics& m : run.summary.ranks) {
    EXPECT_GT(m.compute_ns, 0);
    EXPECT_GT(m.bytes_sent, 0);
    EXPECT_GT(m.peak_memory_bytes, 0);
    EXPECT_LE(m.exposed_comm_ns, m.comm_ns);
    EXPECT_GE(m.idle_ns, 0);
    EXPECT_LE(m.span_ns, run.summary.step_time_ns);
  }
  EXPECT_EQ(summary_json(run).dump(), summary_json(simulate_run(w)).dump());
  // The trace has one X event per interval.
  const json trace = json::parse(trace_text(timeline));
  std::size_t x = 0;
  for (const json& e : trace["traceEvents"]) x += e["ph"] == "X";
  EXPECT_EQ(x, timeline.intervals.size());
}

}  // namespace
}  // namespace cpscope
