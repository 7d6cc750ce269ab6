// Tests for the cp-trace binary: exit codes (0 ok, 2 bad input), JSON/CSV fields, and that an error
// never leaves an output file (or its temp) behind. Fixtures are Kineto JSON written here.
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"

namespace {

using cli_test::ReadFile;
using cli_test::Result;

constexpr const char* kRank0 = R"J({"distributedInfo": {"rank": 0}, "traceEvents": [
{"ph": "X", "cat": "kernel", "name": "flash_fwd_kernel", "ts": 0, "dur": 10, "args": {"device": 0, "stream": 7}},
{"ph": "X", "cat": "kernel", "name": "ncclDevKernel_SendRecv", "ts": 5, "dur": 10, "args": {"device": 0, "stream": 20}},
{"ph": "X", "cat": "gpu_user_annotation", "name": "fwd/step0/attend", "ts": 0, "dur": 15, "args": {"device": 0}}]})J";

class CpTrace : public cli_test::ToolTest {
 protected:
  std::string Binary() const override { return CP_TRACE_PATH; }
  void SetUp() override {
    ToolTest::SetUp();
    std::ofstream(Path("r0.json")) << kRank0;
  }
};

TEST_F(CpTrace, SummaryJsonAndCsv) {
  const Result r = Run("summary r0.json --json s.json --csv s.csv");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(ReadFile(Path("s.json")));
  EXPECT_EQ(j["schema"], "cpscope.trace-summary/1");
  EXPECT_EQ(j["ranks"][0]["exposed_comm_ns"], 5000);
  EXPECT_DOUBLE_EQ(j["ranks"][0]["overlap"].get<double>(), 0.5);
  EXPECT_EQ(ReadFile(Path("s.csv")).substr(0, 5), "rank,");
}

TEST_F(CpTrace, StepsAndExport) {
  ASSERT_EQ(Run("steps r0.json --json st.json").code, 0);
  const auto j = nlohmann::json::parse(ReadFile(Path("st.json")));
  EXPECT_EQ(j["steps"][0]["label"], "fwd/step0");
  const Result e = Run("export r0.json -o t.json");
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_TRUE(nlohmann::json::parse(ReadFile(Path("t.json"))).contains("traceEvents"));
}

TEST_F(CpTrace, BadInputsExitTwoAndWriteNothing) {
  std::ofstream(Path("trunc.json")) << std::string(kRank0).substr(0, 120);
  std::ofstream(Path("neg.json")) << R"({"traceEvents": [{"ph": "X", "cat": "kernel", "ts": 1, "dur": -1}]})";
  std::ofstream(Path("fake.sqlite")) << "SQLite format 3" << std::string(1, '\0') << "garbage garbage garbage";
  std::ofstream(Path("fake.json.gz")) << "\x1f\x8b\x08\x00garbage";
  const char* cases[] = {"summary trunc.json --json o.json",  "summary neg.json --csv o.csv",
                         "summary fake.sqlite --json o.json", "summary fake.json.gz --json o.json",
                         "summary missing.json --json o.json", "steps r0.json --range '(' --json o.json",
                         "steps r0.json --range 'nomatch' --json o.json", "summary r0.json --json nodir/o.json",
                         "summary r0.json --bogus", "compare r0.json --json o.json"};
  for (const char* args : cases) {
    const Result r = Run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find("cp-trace: error:"), std::string::npos) << args << "\n" << r.err;
    for (const auto& f : Files()) EXPECT_TRUE(f.find("o.") != 0 && f.find(".tmp") == std::string::npos) << args << ": " << f;
  }
  EXPECT_NE(Run("summary trunc.json").err.find("trunc.json: malformed JSON at byte"), std::string::npos);
  EXPECT_NE(Run("summary neg.json").err.find("'dur' is negative"), std::string::npos);
  // A name that promises a format the file lacks gets told what to do, not "malformed JSON".
  std::ofstream(Path("notdb.sqlite")) << R"({"traceEvents": []})";
  std::ofstream(Path("report.nsys-rep")) << "binary report";
  ExpectInputError("summary notdb.sqlite", "notdb.sqlite: not an SQLite database");
  ExpectInputError("summary report.nsys-rep", "nsys export --type sqlite report.nsys-rep");
}

}  // namespace
