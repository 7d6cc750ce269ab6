// The GPU check script (tools/gpu-check.sh) rehearsed on the CPU SIMT emulation: `rehearse` runs the same
// steps with the same flags as a device session does, at emulation sizes, through cp-profile-emu. A device
// session has 15 minutes and runs the script once; this finds a wrong flag, a schedule the shapes do not
// divide, or a slip in the summary JSON before then. What the emulation lacks (nvidia-smi, PyTorch on a GPU,
// NCCL for replay and bench) is expected to fail, and the test checks that it fails only there.
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
  for (const char* step : {"== 1.", "== 2.", "== 3.", "== 4.", "== 5.", "== 6.", "== 7.", "== done"})
    EXPECT_NE(log.find(step), std::string::npos) << step << " missing from the log:\n" << log;
  EXPECT_EQ(log.find("unresolved libraries"), std::string::npos) << log;
  EXPECT_EQ(log.find("time budget"), std::string::npos) << "a rehearsal has no overall budget:\n" << log;

  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("out/gpu-check.json")));
  EXPECT_EQ(j["schema"], "cpscope.gpu_check/1");

  // Step 3: every schedule forward+backward with both masks, and three backward-only runs, all checked.
  ASSERT_EQ(j["checks"].size(), 17u) << j["checks"].dump().substr(0, 2000);
  for (const auto& c : j["checks"]) {
    EXPECT_EQ(c["exit"], 0) << c.dump().substr(0, 600);
    ASSERT_TRUE(c["result"].is_object()) << c.dump().substr(0, 600);
    EXPECT_TRUE(c["result"]["check"]["passed"].get<bool>()) << c.dump().substr(0, 600);
    EXPECT_FALSE(c["result"].contains("timeline")) << "the summary keeps profiles without their timelines";
  }

  // Step 5: the loopback ring timing ran; the two replay ones need NCCL (exit 2 on the emulation).
  ASSERT_EQ(j["timings"].size(), 3u);
  EXPECT_EQ(j["timings"][0]["exit"], 0) << j["timings"][0].dump().substr(0, 600);
  EXPECT_EQ(j["timings"][0]["result"]["iterations_ms"].size(), 2u);
  for (int i : {1, 2}) {
    EXPECT_EQ(j["timings"][i]["exit"], 2);
    EXPECT_TRUE(j["timings"][i]["result"].is_null());
  }

  // Step 6: the loopback overhead run measured traced against untraced iterations.
  EXPECT_GT(j["tracing_overhead"]["loopback"]["ratio"].get<double>(), 0.0) << j["tracing_overhead"].dump();
  EXPECT_TRUE(j["tracing_overhead"]["replay"].contains("error"));

  // Step 7: the three loopback profiles ran (the replay ones need NCCL), calibrate and validate read them.
  EXPECT_NE(log.find("profiles: 3 ran, 25 failed, 0 skipped"), std::string::npos) << log;
  EXPECT_NE(log.find("calibrate: exit 0"), std::string::npos) << log;
  EXPECT_NE(log.find("validate: exit 0"), std::string::npos) << log;
  EXPECT_TRUE(j["validation"]["mean_abs_error"].is_number()) << j["validation"].dump();

  // The calibration archive holds the fitted profile, the validation and the three traced profiles.
  ASSERT_EQ(std::system(("tar -tzf " + Quote(Path("out/calibration.tar.gz").string()) + " > " +
                         Quote(Path("list.txt").string()))
                            .c_str()),
            0);
  const std::string list = ReadFile(Path("list.txt"));
  for (const char* f : {"./calibrated.json", "./validation.json", "./validation.txt", "./overhead.json",
                        "./profiles/26-loopback-zigzag-ring-cp4-64-causal-fwd+bwd.json",
                        "./profiles/27-loopback-ring-cp2-128-full-fwd.json",
                        "./profiles/28-loopback-ulysses-cp4-64-causal-fwd+bwd.json"})
    EXPECT_NE(list.find(f), std::string::npos) << f << " missing from calibration.tar.gz:\n" << list;

  // Nothing of the run's scratch is left beside the results.
  for (const auto& e : fs::directory_iterator(Path("out")))
    EXPECT_NE(e.path().filename().string()[0], '.') << "left behind: " << e.path();
}

}  // namespace
