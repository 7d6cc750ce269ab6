// Readers and analyses of sim/trace on fixtures written by the test (fixtures.h): both formats give
// the hand-computed busy / exposed / overlap / idle numbers, per rank and per step.
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "fixtures.h"
#include "sim/error.h"
#include "sim/hardware.h"
#include "sim/planner.h"
#include "sim/profile.h"
#include "sim/trace/compare.h"
#include "sim/trace/input.h"
#include "sim/trace/kineto.h"
#include "sim/trace/nsys.h"
#include "sim/trace/trace_analysis.h"

namespace {

namespace fs = std::filesystem;
using namespace cpscope;
using namespace cpscope::trace;

class TraceReaders : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("trace_test_" + std::to_string(::getpid()) + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string P(const std::string& n) const { return (dir_ / n).string(); }
  fs::path dir_;
  Classifier cls_;
};

void ExpectFixtureSummary(const TraceSummary& s) {
  ASSERT_EQ(s.ranks.size(), 2u);
  const RankReport& r0 = s.ranks[0];
  EXPECT_EQ(r0.compute_ns, 15000);
  EXPECT_EQ(r0.attention_ns, 10000);
  EXPECT_EQ(r0.comm_ns, 10000);
  EXPECT_EQ(r0.exposed_comm_ns, 5000);
  EXPECT_DOUBLE_EQ(r0.overlap, 0.5);
  EXPECT_EQ(r0.memory_ns, 1500);
  EXPECT_EQ(r0.busy_ns, 21500);
  EXPECT_EQ(r0.span_ns, 28000);
  EXPECT_EQ(r0.idle_ns, 6500);
  const RankReport& r1 = s.ranks[1];
  EXPECT_EQ(r1.comm_ns, 4000);
  EXPECT_EQ(r1.exposed_comm_ns, 4000);
  EXPECT_DOUBLE_EQ(r1.overlap, 0.0);
  EXPECT_EQ(r1.attention_ns, 6000);
  EXPECT_EQ(r1.idle_ns, 0);
}

void ExpectFixtureSteps(const StepsReport& s) {
  ASSERT_EQ(s.rows.size(), 2u);
  EXPECT_EQ(s.rows[0].label, "fwd/step0");
  EXPECT_EQ(s.rows[0].metrics.span_ns, 15000);
  EXPECT_EQ(s.rows[0].metrics.comm_ns, 10000);
  EXPECT_EQ(s.rows[0].metrics.exposed_comm_ns, 5000);
  EXPECT_EQ(s.rows[0].metrics.idle_ns, 0);
  EXPECT_EQ(s.rows[1].label, "fwd/step1");
  EXPECT_EQ(s.rows[1].metrics.span_ns, 8000);
  EXPECT_EQ(s.rows[1].metrics.compute_ns, 5000);
  EXPECT_EQ(s.rows[1].metrics.memory_ns, 1500);
  EXPECT_EQ(s.rows[1].metrics.idle_ns, 1500);
  EXPECT_LT(s.rows[1].metrics.overlap, 0);  // no comm in step 1
}

TEST_F(TraceReaders, KinetoFilesGiveHandComputedNumbers) {
  trace_fixtures::write_text(P("r1.json"), trace_fixtures::kKinetoRank1);  // listed first: rank comes from distributedInfo
  trace_fixtures::write_text(P("r0.json"), trace_fixtures::kKinetoRank0);
  const Trace t = read_inputs({P("r1.json"), P("r0.json")}, cls_);
  EXPECT_EQ(t.format, "kineto-json");
  EXPECT_EQ(t.origin_ns, 1'000'000);
  EXPECT_EQ(t.ranks[0].file, P("r0.json"));
  ExpectFixtureSummary(summarize_trace(t, cls_));
  ExpectFixtureSteps(summarize_steps(t, cls_, R"(^(fwd|bwd)/step\d+)"));
}

TEST_F(TraceReaders, KinetoGzipAndFolder) {
  fs::create_directories(dir_ / "traces");
  for (auto [name, text] : {std::pair{"rank0.json.gz", trace_fixtures::kKinetoRank0},
                            std::pair{"rank1.json.gz", trace_fixtures::kKinetoRank1}}) {
    gzFile gz = gzopen((dir_ / "traces" / name).c_str(), "wb");
    gzwrite(gz, text, static_cast<unsigned>(std::strlen(text)));
    gzclose(gz);
  }
  const Trace t = read_inputs({P("traces")}, cls_);
  ExpectFixtureSummary(summarize_trace(t, cls_));
}

TEST_F(TraceReaders, NsysExportGivesTheSameNumbers) {
  trace_fixtures::write_nsys(P("report.sqlite"));
  const Trace t = read_inputs({P("report.sqlite")}, cls_);
  EXPECT_EQ(t.format, "nsys-sqlite");
  ASSERT_EQ(t.ranks.size(), 2u);
  EXPECT_EQ(t.ranks[0].pid, 100);
  EXPECT_EQ(t.ranks[1].device, 1);
  EXPECT_EQ(t.ranks[0].gpu, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(t.timeline.name(t.timeline.intervals[0].name), "flash_fwd_kernel");  // shortName by default
  ExpectFixtureSummary(summarize_trace(t, cls_));
  // NVTX ranges projected onto the GPU through the runtime launches' correlation ids.
  ExpectFixtureSteps(summarize_steps(t, cls_, R"(^(fwd|bwd)/step\d+)"));
  bool unprojected_warned = false;
  for (const auto& w : t.warnings) unprojected_warned |= w.find("launched no GPU work") != std::string::npos;
  EXPECT_TRUE(unprojected_warned);
}

TEST_F(TraceReaders, NsysMissingOptionalTablesWarnInsteadOfFailing) {
  trace_fixtures::NsysParts parts;
  parts.strings = parts.runtime = parts.target_info = parts.memcpy = false;
  trace_fixtures::write_nsys(P("old.sqlite"), parts);
  const Trace t = read_nsys_file(P("old.sqlite"), 0, cls_);
  EXPECT_EQ(t.timeline.intervals.size(), 5u);
  EXPECT_GE(t.warnings.size(), 3u);  // StringIds, TARGET_INFO, RUNTIME
  // Without StringIds the NCCL kernels are unnamed: they count as compute, which the warning explains.
  EXPECT_EQ(t.timeline.name(t.timeline.intervals[0].name), "string#1");
}

TEST_F(TraceReaders, NsysWithoutActivityTablesIsAnInputError) {
  trace_fixtures::NsysParts parts;
  parts.kernels = parts.memcpy = false;
  trace_fixtures::write_nsys(P("empty.sqlite"), parts);
  try {
    read_nsys_file(P("empty.sqlite"), 0, cls_);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("empty.sqlite: no GPU activity"), std::string::npos) << e.what();
  }
}

TEST_F(TraceReaders, NsysInvertedRowNamesTableAndRow) {
  trace_fixtures::write_nsys(P("bad.sqlite"));
  sqlite3* db = nullptr;
  sqlite3_open(P("bad.sqlite").c_str(), &db);
  trace_fixtures::exec(db, "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (5000,4000,0,1,7,99,0,1,1,1)");
  sqlite3_close(db);
  try {
    read_nsys_file(P("bad.sqlite"), 0, cls_);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("CUPTI_ACTIVITY_KIND_KERNEL row 6: end 4000 is before start 5000"),
              std::string::npos)
        << e.what();
  }
}

// Malformed Kineto input: an InputError naming the file and the rule, never a crash.
TEST_F(TraceReaders, KinetoMalformedInputs) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"traceEvents": [{"ph": "X", "cat": "kernel", "ts": 1, "dur": -2, "args": {}}]})", "'dur' is negative"},
      {R"({"traceEvents": [{"ph": "X", "cat": "kernel", "ts": 1}]})", "'dur' is missing"},
      {R"({"traceEvents": [{"ph": "X", "cat": "kernel", "ts": "1", "dur": 2}]})", "'ts' must be a number"},
      {R"({"traceEvents": [{"ph": "X", "cat": "kernel", "ts": NaN, "dur": 2}]})", "malformed JSON at byte"},
      {R"({"traceEvents": [{"ph": "X", "cat": "kernel", "ts": 1e400, "dur": 2}]})", "malformed JSON at byte"},
      {R"({"traceEvents": [{"ph": "X", "cat": "kernel", "ts": 1, "dur": 2})", "malformed JSON at byte"},
      {R"({"traceEvents": []} {})", "malformed JSON at byte"},
      {R"({"distributedInfo": {"rank": -1}, "traceEvents": []})", "distributedInfo.rank"},
      {R"({"traceEvents": [{"ph": "X", "cat": "kernel", "ts": 9e20, "dur": 2}]})", "'ts' is not a finite number"},
  };
  for (const auto& [text, expect] : cases) {
    auto src = memory_source(text, std::strlen(text));
    try {
      read_kineto(*src, "mem.json", 0, cls_);
      ADD_FAILURE() << "no error for " << text;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("mem.json"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << text << " -> " << e.what();
    }
  }
}

TEST(KinetoTime, MicrosTextIsExactToTheNanosecond) {
  Nanos ns = 0;
  ASSERT_TRUE(micros_text_to_nanos("1693516539123456.789", ns));
  EXPECT_EQ(ns, 1693516539123456789);  // a double would lose the last digits
  ASSERT_TRUE(micros_text_to_nanos("0.0005", ns));
  EXPECT_EQ(ns, 1);
  ASSERT_TRUE(micros_text_to_nanos("-2.5", ns));
  EXPECT_EQ(ns, -2500);
  ASSERT_TRUE(micros_text_to_nanos("1.5e3", ns));
  EXPECT_EQ(ns, 1500000);
  EXPECT_FALSE(micros_text_to_nanos("9e30", ns));
}

TEST_F(TraceReaders, KinetoRelativeTimestampsGetTheBase) {
  const std::string text = R"({"baseTimeNanoseconds": 1700000000000000000, "traceEvents": [
    {"ph": "X", "cat": "kernel", "name": "k", "ts": 1.5, "dur": 1, "args": {"device": 0, "stream": 7}}]})";
  auto src = memory_source(text.data(), text.size());
  const Trace t = read_kineto(*src, "rel.json", 0, cls_);
  ASSERT_EQ(t.timeline.intervals.size(), 1u);
  EXPECT_EQ(t.timeline.intervals[0].start, 1700000000000001500);
}

TEST_F(TraceReaders, ClassifierPatternsAreOverridable) {
  ClassifierPatterns p;
  p.comm = "elementwise";
  const Classifier c(p);
  EXPECT_EQ(c.classify("elementwise"), KernelClass::Comm);
  EXPECT_EQ(c.classify("ncclDevKernel_AllGather"), KernelClass::OtherCompute);
  EXPECT_EQ(Classifier().classify("cudnn_generated_fort_native_sdpa_sm90_flash_fprop"), KernelClass::Attention);
  EXPECT_EQ(Classifier().classify("ncclKernel_AllReduce_RING_LL_Sum_float"), KernelClass::Comm);
  p.comm = "(";
  EXPECT_THROW(Classifier{p}, InputError);
}

TEST_F(TraceReaders, CompareAlignsOpsByNameAndStep) {
  trace_fixtures::write_text(P("r0.json"), trace_fixtures::kKinetoRank0);
  trace_fixtures::write_nsys(P("report.sqlite"));
  const Trace a = read_inputs({P("r0.json")}, cls_);
  const Trace b = read_inputs({P("report.sqlite")}, cls_);
  const CompareReport r = compare_traces(a, b);
  EXPECT_EQ(r.basis, "ops");
  ASSERT_EQ(r.steps.size(), 2u);
  EXPECT_EQ(r.steps[0].step, "fwd/step0");
  EXPECT_EQ(r.steps[0].span_a_ns, 15000);
  EXPECT_EQ(r.steps[0].span_b_ns, 15000);
  ASSERT_EQ(r.ops.size(), 2u);
  EXPECT_EQ(r.ops[1].name, "fwd/step1/attend");
  EXPECT_EQ(r.ops[1].mean_a_ns, 8000);
  EXPECT_EQ(r.ops[1].mean_b_ns, 8000);
}

// A replay profile holds one rank of N: compared with a profile of all N, the other side is cut to that rank,
// so each op is matched with the same rank's op (the same simulated run on both sides: identical numbers).
TEST_F(TraceReaders, CompareCutsTheFullSideToTheRanksAReplayMeasured) {
  Workload w;
  w.schedule = ScheduleKind::ZigzagRing;
  w.cp = 4;
  w.seq = 16384;
  const SimulatedRun run = simulate_workload(w, default_hardware(), true);
  nlohmann::json full = profile_json(run.result, &run.timeline);
  nlohmann::json replay = full;
  nlohmann::json kept = nlohmann::json::array();
  for (const auto& row : replay["timeline"]["intervals"])
    if (row[0] == 2) kept.push_back(row);
  replay["timeline"]["intervals"] = kept;
  std::ofstream(P("full.json")) << full.dump();
  std::ofstream(P("replay.json")) << replay.dump();
  const Trace a = read_inputs({P("replay.json")}, cls_);
  const Trace b = read_inputs({P("full.json")}, cls_);
  const CompareReport r = compare_traces(a, b);
  ASSERT_EQ(r.basis, "ops");
  ASSERT_FALSE(r.ops.empty());
  for (const OpDiff& d : r.ops) {
    EXPECT_EQ(d.count_a, d.count_b) << d.name;
    EXPECT_EQ(d.mean_a_ns, d.mean_b_ns) << d.name;
  }
  for (const StepDiff& st : r.steps) EXPECT_EQ(st.span_a_ns, st.span_b_ns) << st.step;
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("A has rank(s) 2 of 4 only"), std::string::npos) << r.warnings[0];
  // The other way round, the cut is on A.
  const CompareReport back = compare_traces(b, a);
  ASSERT_EQ(back.warnings.size(), 1u);
  EXPECT_NE(back.warnings[0].find("B has rank(s) 2 of 4 only"), std::string::npos) << back.warnings[0];
  // A cpscope profile's attention ops count as attention.
  EXPECT_EQ(cls_.classify("fwd/step3/attend"), KernelClass::Attention);
  EXPECT_EQ(cls_.classify("bwd/step2/attend_bwd"), KernelClass::Attention);
  EXPECT_EQ(cls_.classify("bwd/step2/dkv_add"), KernelClass::OtherCompute);
  const TraceSummary sum = summarize_trace(b, cls_, 5);
  ASSERT_EQ(sum.ranks.size(), 4u);
  EXPECT_GT(sum.ranks[0].attention_ns, 0);
  EXPECT_TRUE(sum.untraced_ranks.empty());
  // The replay profile's summary has its one rank; the others are named as untraced, not shown as idle.
  const TraceSummary one = summarize_trace(a, cls_, 5);
  ASSERT_EQ(one.ranks.size(), 1u);
  EXPECT_EQ(one.ranks[0].rank, 2);
  EXPECT_EQ(one.untraced_ranks, (std::vector<std::int32_t>{0, 1, 3}));
}

}  // namespace
