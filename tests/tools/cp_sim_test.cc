// Tests for the cp-sim binary: exit codes, files written (and never left behind on error), JSON and CSV
// contents, determinism. Runs the built executable (CP_SIM_PATH) with small workloads so it is fast.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;
using cli_test::ReadFile;
using cli_test::Result;

class CpSim : public cli_test::ToolTest {
 protected:
  std::string Binary() const override { return CP_SIM_PATH; }
};

constexpr const char* kSmall = "--seq 8192";

TEST_F(CpSim, RunDefaultsExitZeroAndPrintTable) {
  const Result r = Run("run");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  EXPECT_EQ(r.err, "");  // nothing on stderr when all is well (and never progress when piped)
}

TEST_F(CpSim, RunJsonHasTheSummaryFields) {
  const Result r = Run(std::string("run ") + kSmall + " --json out.json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("out.json")));
  ASSERT_TRUE(j.contains("step_time_ns"));
  ASSERT_TRUE(j.contains("total_flops"));
  EXPECT_GT(j["step_time_ns"].get<std::int64_t>(), 0);
  // Causal fwd+bwd: 4·B·H·D·S(S+1)/2 forward, 2.5x backward.
  const std::int64_t S = 8192, pairs = S * (S + 1) / 2, fwd = 4LL * 1 * 32 * 128 * pairs;
  EXPECT_EQ(j["total_flops"].get<std::int64_t>(), fwd + fwd * 5 / 2);
  ASSERT_TRUE(j["ranks"].is_array());
  ASSERT_EQ(j["ranks"].size(), 8u);  // the default zigzag-ring cp=8
  for (std::size_t i = 0; i < j["ranks"].size(); ++i) {
    const auto& rank = j["ranks"][i];
    for (const char* field :
         {"rank", "compute_ns", "comm_ns", "exposed_comm_ns", "idle_ns", "peak_memory_bytes", "bytes_sent"})
      EXPECT_TRUE(rank.contains(field)) << "ranks[" << i << "]." << field;
    EXPECT_EQ(rank["rank"].get<std::int64_t>(), static_cast<std::int64_t>(i));
    EXPECT_GT(rank["compute_ns"].get<std::int64_t>(), 0);
    EXPECT_GT(rank["bytes_sent"].get<std::int64_t>(), 0);
    EXPECT_GT(rank["peak_memory_bytes"].get<std::int64_t>(), 0);
  }
  EXPECT_EQ(j["workload"]["seq"], 8192);
}

TEST_F(CpSim, RunTraceIsChromeTraceJson) {
  const Result r = Run(std::string("run ") + kSmall + " --cp 4 --trace trace.json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("trace.json")));
  ASSERT_TRUE(j.contains("traceEvents"));
  ASSERT_TRUE(j["traceEvents"].is_array());
  EXPECT_FALSE(j["traceEvents"].empty());
  bool complete = false;
  for (const auto& e : j["traceEvents"]) complete |= e.value("ph", "") == "X";
  EXPECT_TRUE(complete);
}

TEST_F(CpSim, RunJsonIsByteIdenticalTwice) {
  const std::string args = std::string("run ") + kSmall + " --schedule hybrid --cp 8 --ulysses 2 --json ";
  ASSERT_EQ(Run(args + "a.json").code, 0);
  ASSERT_EQ(Run(args + "b.json").code, 0);
  const std::string a = ReadFile(Path("a.json"));
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, ReadFile(Path("b.json")));
}

TEST_F(CpSim, ConfigFileWithFlagsOverriding) {
  std::ofstream(Path("layer.json")) << R"({"seq": 16384, "cp": 4, "schedule": "ring"})";
  const Result r = Run("run --config layer.json --cp 2 --json out.json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("out.json")));
  EXPECT_EQ(j["workload"]["seq"], 16384);
  EXPECT_EQ(j["workload"]["cp"], 2);
  EXPECT_EQ(j["workload"]["schedule"], "ring");
}

TEST_F(CpSim, UnknownFlagExits2) {
  const Result r = Run("run --no-such-flag 3 --json out.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--no-such-flag"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(Path("out.json")));
}

TEST_F(CpSim, ConfigWithUnknownFieldExits2NamingIt) {
  std::ofstream(Path("bad.json")) << R"({"seq": 8192, "sequence_length": 4096})";
  const Result r = Run("run --config bad.json --json out.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("sequence_length"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(Path("out.json")));
}

TEST_F(CpSim, MalformedOrMissingConfigExits2) {
  std::ofstream(Path("broken.json")) << R"({"seq": 8192,)";
  ExpectInputError("run --config broken.json", "config");
  ExpectInputError("run --config missing.json", "missing.json");
}

TEST_F(CpSim, InvalidValueExits2NamingTheFieldAndLeavesNoFile) {
  const Result r = Run("run --schedule zigzag-ring --cp 3 --seq 1000 --json out.json --trace trace.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(r.err.find("seq") != std::string::npos || r.err.find("cp") != std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(Files(), std::vector<std::string>{});  // no output, no temp file
}

TEST_F(CpSim, MalformedValuesExit2NamingTheFlag) {
  Result r = Run("run --cp abc");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("cp: 'abc' is not an integer"), std::string::npos) << r.err;
  r = Run("run --schedule spiral");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("schedule"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("spiral"), std::string::npos) << r.err;
  r = Run("run --cp 2,4");  // lists belong to sweep
  EXPECT_EQ(r.code, 2);
  ExpectInputError("run --hardware no-such-gpu", "no-such-gpu");
  ExpectInputError("plan --gpus 0", "gpus: 0 must be >= 1");  // given, so not the one-node default
  // Too large to simulate: refused before the schedule is generated, naming cp and the op count.
  ExpectInputError("run --cp 65536 --seq 4m", "cp: 65536 ranks of zigzag-ring give about");
}

TEST_F(CpSim, UnwritableOutputExits2AndLeavesNothing) {
  const Result r = Run(std::string("run ") + kSmall + " --json out.json --trace no/such/folder/t.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("trace"), std::string::npos) << r.err;
  EXPECT_EQ(Files(), std::vector<std::string>{});
}

TEST_F(CpSim, HelpExitsZeroWithExamples) {
  for (const char* args : {"--help", "run --help", "sweep --help", "plan --help"}) {
    const Result r = Run(args);
    EXPECT_EQ(r.code, 0) << args;
    EXPECT_NE(r.out.find("Examples"), std::string::npos) << args;
  }
  const Result none = Run("");
  EXPECT_EQ(none.code, 2);
  const Result bogus = Run("frobnicate");
  EXPECT_EQ(bogus.code, 2);
}

TEST_F(CpSim, SweepWritesJsonAndCsv) {
  const Result r = Run(std::string("sweep ") + kSmall +
                       " --schedule ring,zigzag-ring --cp 2,3,4 --json sweep.json --csv sweep.csv");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");  // no progress line when stderr is not a terminal
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("sweep.json")));
  ASSERT_EQ(j["runs"].size(), 4u);
  ASSERT_EQ(j["invalid"].size(), 2u);
  for (const auto& run : j["runs"]) {
    EXPECT_GT(run["step_time_ns"].get<std::int64_t>(), 0);
    EXPECT_NE(run["workload"]["cp"], 3);
  }
  for (const auto& inv : j["invalid"]) {
    EXPECT_EQ(inv["workload"]["cp"], 3);
    EXPECT_FALSE(inv["reason"].get<std::string>().empty());
  }
  const std::string csv = ReadFile(Path("sweep.csv"));
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 4 + 2);
  EXPECT_EQ(csv.rfind("schedule,cp,", 0), 0u);
  EXPECT_NE(csv.find(",invalid,"), std::string::npos);
  EXPECT_NE(r.out.find("invalid combinations (2)"), std::string::npos);
}

TEST_F(CpSim, SweepRangesAndAll) {
  const Result r = Run("sweep --schedule all --cp 2:8:x2 --seq 8k:16k:x2 --ulysses 2 --json s.json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("s.json")));
  EXPECT_EQ(j["runs"].size() + j["invalid"].size(), 5u * 3u * 2u);
}

TEST_F(CpSim, SweepBadRangeExits2WithTheRule) {
  const Result r = Run("sweep --seq 1:x --json s.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("seq: range '1:x' must be START:STOP[:+STEP|:xFACTOR]"), std::string::npos) << r.err;
  EXPECT_EQ(Files(), std::vector<std::string>{});
}

TEST_F(CpSim, SweepWithNothingValidExits2AndWritesNothing) {
  const Result r = Run("sweep --cp 3,5 --seq 1000 --json s.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("invalid combinations (2)"), std::string::npos) << r.out;
  EXPECT_EQ(Files(), std::vector<std::string>{});
}

TEST_F(CpSim, PlanRanksAndWritesEverything) {
  const Result r = Run(std::string("plan ") + kSmall + " --top 3 --json plan.json --csv plan.csv");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("plan.json")));
  EXPECT_EQ(j["gpus"], 8);
  ASSERT_FALSE(j["runs"].empty());
  std::int64_t last = 0;
  for (const auto& run : j["runs"]) {
    EXPECT_GE(run["step_time_ns"].get<std::int64_t>(), last);
    last = run["step_time_ns"].get<std::int64_t>();
    EXPECT_EQ(run["dp"].get<std::int64_t>() * run["workload"]["cp"].get<std::int64_t>(), 8);
  }
  EXPECT_EQ(j["runs"].size() + j["dropped"].size(), j["candidates"].get<std::size_t>());
  const std::string csv = ReadFile(Path("plan.csv"));
  EXPECT_EQ(static_cast<std::size_t>(std::count(csv.begin(), csv.end(), '\n')), 1 + j["candidates"].get<std::size_t>());
  EXPECT_NE(r.out.find("step time"), std::string::npos);
}

// TP groups that cross nodes (placement cp-inner with cp·tp > gpus per node) are valid but worth a word: the
// simulator times only the CP group, while a real TP group needs NVLink.
TEST_F(CpSim, TpGroupsSpanningNodesAreNoted) {
  const Result plan = Run(std::string("plan ") + kSmall + " --gpus 16 --tp 2");
  ASSERT_EQ(plan.code, 0) << plan.err;
  EXPECT_NE(plan.out.find("candidates (cp >= 8) have TP groups spanning nodes: placement cp-inner puts each TP group "
                          "of 2 GPUs 8 GPUs apart"),
            std::string::npos)
      << plan.out;
  const Result inner = Run(std::string("plan ") + kSmall + " --gpus 16 --tp 2 --placement tp-inner");
  ASSERT_EQ(inner.code, 0) << inner.err;
  EXPECT_EQ(inner.out.find("spanning nodes"), std::string::npos) << inner.out;
  const Result run = Run(std::string("run ") + kSmall + " --cp 8 --tp 2");
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.err.find("cp-sim: note: placement cp-inner puts each TP group of 2 GPUs 8 GPUs apart"),
            std::string::npos)
      << run.err;
  const Result fits = Run(std::string("run ") + kSmall + " --cp 4 --tp 2");  // 4 x 2 GPUs: one node
  ASSERT_EQ(fits.code, 0) << fits.err;
  EXPECT_EQ(fits.err, "");
}

TEST_F(CpSim, PlanMemoryReserveDropsWithReasonOrFailsWhenNothingFits) {
  Result r = Run(std::string("plan ") + kSmall + " --reserve-gib 100000 --json plan.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("memory: attention peak"), std::string::npos) << r.out;
  EXPECT_EQ(Files(), std::vector<std::string>{});
  r = Run(std::string("plan ") + kSmall + " --gpus 16 --gpus-per-node 4 --cp 16 --schedule hybrid --verbose");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("does not divide gpus_per_node"), std::string::npos) << r.out;
}

}  // namespace

namespace {

TEST_F(CpSim, ProfileCalibrateAndValidateRoundTrip) {
  Result r = Run("run --seq 16384 --cp 4 --profile a.json");
  ASSERT_EQ(r.code, 0) << r.err;
  r = Run("run --seq 16384 --cp 4 --batch 2 --schedule ring --profile b.json");
  ASSERT_EQ(r.code, 0) << r.err;
  r = Run("calibrate a.json b.json -o fitted.json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json fitted = nlohmann::json::parse(ReadFile(Path("fitted.json")));
  EXPECT_EQ(fitted["name"], "h100-sxm-calibrated");
  EXPECT_TRUE(fitted["calibration"]["residuals"].is_array());
  // Simulated profiles validated against the hardware that made them: no error at all.
  r = Run("validate a.json b.json --json v.json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json v = nlohmann::json::parse(ReadFile(Path("v.json")));
  EXPECT_EQ(v["mean_abs_error"], 0.0);
  // The fitted profile loads as --hardware.
  r = Run("validate --hardware fitted.json --leave-one-out a.json b.json");
  EXPECT_EQ(r.code, 0) << r.err;
  // A bench file joins each leave-one-out fit, and is refused where nothing is fitted.
  std::ofstream(Path("bench.json")) << R"({"schema": "cpscope.bench/1", "backend": "synthetic", "rows": [
    {"kind": "transfer", "link": "nvlink", "bytes": 1048576, "ns": 9000},
    {"kind": "transfer", "link": "nvlink", "bytes": 16777216, "ns": 60000}]})";
  r = Run("validate --leave-one-out a.json b.json bench.json --json v2.json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("every fit included 1 bench file(s): bench.json"), std::string::npos) << r.out;
  EXPECT_EQ(nlohmann::json::parse(ReadFile(Path("v2.json")))["rows"].size(), 2u);
  r = Run("validate a.json b.json bench.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("bench.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--leave-one-out"), std::string::npos) << r.err;
}

TEST_F(CpSim, CalibrateRejectsBadProfilesWithExitTwo) {
  std::ofstream(Path("bad.json")) << R"({"schema": "cpscope.profile/1", "source": "measured"})";
  Result r = Run("calibrate bad.json -o out.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("bad.json"), std::string::npos) << r.err;
  std::ofstream(Path("trunc.json")) << R"({"schema": "cpscope.prof)";
  r = Run("validate trunc.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("not valid JSON"), std::string::npos) << r.err;
  r = Run("calibrate missing.json -o out.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_FALSE(fs::exists(Path("out.json")));
}

}  // namespace
