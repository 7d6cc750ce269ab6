// The GPU check script (tools/gpu-check.sh) rehearsed on the CPU SIMT emulation: `rehearse` runs the same
// steps with the same flags as a device session does, at emulation sizes, through cp-profile-emu. A device
// session has 15 minutes and runs the script once; this finds a wrong flag, a schedule the shapes do not
// divide, or a slip in the summary JSON before then. Replay and the bench run on the emulation's one-rank
// NCCL; what it lacks (nvidia-smi, PyTorch on a GPU) is left out by the script, and nothing else may fail.
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;
using cli_test::Quote;
using cli_test::ReadFile;
using cli_test::Result;

class GpuCheckRehearsal : public cli_test::ToolTest {
 protected:
  std::string Binary() const override { return "bash"; }
};

TEST_F(GpuCheckRehearsal, EveryStepRunsAndTheSummaryIsWritten) {
  const fs::path build = fs::path(CP_SIM_PATH).parent_path().parent_path();
  const Result r = Run(Quote(std::string(CPSCOPE_SOURCE_DIR) + "/tools/gpu-check.sh") + " rehearse " +
                       Quote(build.string()) + " out");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const std::string log = ReadFile(Path("out/gpu-check.log"));
  for (const char* step : {"== 1.", "== 2.", "== 3.", "== 4.", "== 5.", "== 6.", "== 7.", "== 8.", "== done"})
    EXPECT_NE(log.find(step), std::string::npos) << step << " missing from the log:\n" << log;
  EXPECT_EQ(log.find("unresolved libraries"), std::string::npos) << log;
  EXPECT_EQ(log.find("does not start"), std::string::npos) << log;
  EXPECT_EQ(log.find("time budget"), std::string::npos) << "a rehearsal has no overall budget:\n" << log;
  // Step 8 needs a GPU's compute-sanitizer: a rehearsal says so and the summary lists no verdict.
  EXPECT_NE(log.find("skipped: a rehearsal has no GPU"), std::string::npos) << log;

  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("out/gpu-check.json")));
  EXPECT_EQ(j["schema"], "cpscope.gpu_check/1");
  EXPECT_TRUE(j["sanitizer"].is_array() && j["sanitizer"].empty()) << j["sanitizer"];

  // Step 3: every schedule forward+backward with both masks, and three backward-only runs, all checked.
  ASSERT_EQ(j["checks"].size(), 17u) << j["checks"].dump().substr(0, 2000);
  for (const auto& c : j["checks"]) {
    EXPECT_EQ(c["exit"], 0) << c.dump().substr(0, 600);
    ASSERT_TRUE(c["result"].is_object()) << c.dump().substr(0, 600);
    EXPECT_TRUE(c["result"]["check"]["passed"].get<bool>()) << c.dump().substr(0, 600);
    EXPECT_FALSE(c["result"].contains("timeline")) << "the summary keeps profiles without their timelines";
  }

  // Step 5: the loopback ring timing and the two replays of one rank of cp=8 (the second forward only).
  ASSERT_EQ(j["timings"].size(), 3u);
  for (const auto& t : j["timings"]) {
    EXPECT_EQ(t["exit"], 0) << t.dump().substr(0, 600);
    EXPECT_EQ(t["result"]["iterations_ms"].size(), 2u) << t.dump().substr(0, 600);
  }
  EXPECT_EQ(j["timings"][1]["result"]["transport"], "replay");

  // Step 6: both overhead runs measured traced against untraced iterations.
  for (const char* t : {"loopback", "replay"})
    EXPECT_GT(j["tracing_overhead"][t]["ratio"].get<double>(), 0.0) << t << ": " << j["tracing_overhead"].dump();

  // Step 7: all 28 traced profiles and the bench ran; calibrate and validate read them all.
  EXPECT_NE(log.find("profiles: 28 ran, 0 failed, 0 skipped"), std::string::npos) << log;
  EXPECT_EQ(log.find("bench: skipped or failed"), std::string::npos) << log;
  EXPECT_NE(log.find("fitted to 28 profile(s) and 1 bench file(s)"), std::string::npos) << log;
  EXPECT_NE(log.find("calibrate: exit 0"), std::string::npos) << log;
  // The fits start from the card's built-in profile (--base auto); the emulation is no card cp-sim knows.
  EXPECT_NE(log.find("--base auto: h100-sxm (no built-in profile describes cpscope SIMT emulation (CPU)"),
            std::string::npos) << log;
  EXPECT_EQ(j["validation"]["hardware"], "h100-sxm") << j["validation"].dump();
  EXPECT_NE(log.find("validate: exit 0"), std::string::npos) << log;
  EXPECT_NE(log.find("over 28 profiles"), std::string::npos) << log;
  EXPECT_NE(log.find("every fit included 1 bench file(s)"), std::string::npos) << log;
  EXPECT_TRUE(j["validation"]["mean_abs_error"].is_number()) << j["validation"].dump();

  // The calibration archive holds the fitted profile, the validation and the three traced profiles.
  ASSERT_EQ(std::system(("tar -tzf " + Quote(Path("out/calibration.tar.gz").string()) + " > " +
                         Quote(Path("list.txt").string()))
                            .c_str()),
            0);
  const std::string list = ReadFile(Path("list.txt"));
  for (const char* f : {"./calibrated.json", "./validation.json", "./validation.txt", "./overhead.json",
                        "./overhead_replay.json", "./bench.json", "./profiles/01-replay-ring-cp2-32-causal-fwd+bwd.json",
                        "./profiles/20-replay-ulysses-cp8-128-causal-fwd+bwd.json",
                        "./profiles/25-replay-hybrid-cp8-128-causal-fwd+bwd.json",
                        "./profiles/26-loopback-zigzag-ring-cp4-64-causal-fwd+bwd.json",
                        "./profiles/27-loopback-ring-cp2-128-full-fwd.json",
                        "./profiles/28-loopback-ulysses-cp4-64-causal-fwd+bwd.json"})
    EXPECT_NE(list.find(f), std::string::npos) << f << " missing from calibration.tar.gz:\n" << list;

  // Nothing of the run's scratch is left beside the results.
  for (const auto& e : fs::directory_iterator(Path("out")))
    EXPECT_NE(e.path().filename().string()[0], '.') << "left behind: " << e.path();

  // tools/gpu/collect.py files the results as a device session commits them: the profiles and the bench as
  // calibration inputs, the rest under check/, the fitted profile, and a README with the tables.
  const Result c = RunBinary("python3", Quote(std::string(CPSCOPE_SOURCE_DIR) + "/tools/gpu/collect.py") +
                                            " out --repo repo --commit 0123abc");
  ASSERT_EQ(c.code, 0) << c.err << c.out;
  const fs::path card = Path("repo/profiles/measured/cpscope-simt-emulation-cpu");
  std::size_t inputs = 0;
  for (const auto& e : fs::directory_iterator(card))
    if (e.path().extension() == ".json") ++inputs;
  EXPECT_EQ(inputs, 29u) << "28 profiles and bench.json";
  for (const char* f : {"check/gpu-check.json", "check/gpu-check.log", "check/validation.json", "check/overhead.json"})
    EXPECT_TRUE(fs::exists(card / f)) << f;
  EXPECT_TRUE(fs::exists(Path("repo/profiles/calibrated/cpscope-simt-emulation-cpu.json")));
  const std::string readme = ReadFile(card / "README.md");
  for (const char* s : {"cpscope commit 0123abc", "| 28-loopback-ulysses-cp4-64-causal-fwd+bwd.json | ulysses | 4 | 64 |",
                        "Mean absolute error", "base h100-sxm", "17 of 17 exit 0", "tracing overhead, loopback: traced/untraced"})
    EXPECT_NE(readme.find(s), std::string::npos) << s << " missing from the README:\n" << readme;
  // Without a run's results it says what is missing and exits 2.
  EXPECT_EQ(RunBinary("python3", Quote(std::string(CPSCOPE_SOURCE_DIR) + "/tools/gpu/collect.py") +
                                     " nowhere --repo repo").code, 2);
}

// A second call for one step (GPU_CHECK_STEPS): step 1 and that step run, the others say they were not selected,
// and the summary leaves what did not run empty (tests_passed null) rather than failed.
TEST_F(GpuCheckRehearsal, SelectedStepsRunAlone) {
  const fs::path build = fs::path(CP_SIM_PATH).parent_path().parent_path();
  ASSERT_EQ(::setenv("GPU_CHECK_STEPS", "5", 1), 0);
  const Result r = Run(Quote(std::string(CPSCOPE_SOURCE_DIR) + "/tools/gpu-check.sh") + " rehearse " +
                       Quote(build.string()) + " out");
  ::unsetenv("GPU_CHECK_STEPS");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const std::string log = ReadFile(Path("out/gpu-check.log"));
  std::size_t skipped = 0;
  for (std::size_t at = log.find("not selected"); at != std::string::npos; at = log.find("not selected", at + 1))
    ++skipped;
  EXPECT_EQ(skipped, 6u) << log;  // steps 2, 3, 4, 6, 7 and 8
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("out/gpu-check.json")));
  EXPECT_EQ(j["steps"], "5");
  EXPECT_TRUE(j["tests_passed"].is_null()) << j["tests_passed"];
  EXPECT_TRUE(j["checks"].empty());
  ASSERT_EQ(j["timings"].size(), 3u);
  for (const auto& t : j["timings"]) EXPECT_EQ(t["exit"], 0) << t.dump().substr(0, 600);
  EXPECT_FALSE(fs::exists(Path("out/calibration.tar.gz")));
}

}  // namespace
