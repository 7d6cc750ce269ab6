// Tests for cp-profile --backend cuda, built on the CPU SIMT emulation (cp-profile-emu, runtime/kernels/emu/):
// the tool's CUDA path (loopback run, --check against the reference kernels, the traced iteration's timeline,
// the profile JSON and the Perfetto trace) and the calibration pipeline the GPU check script runs on those
// profiles (cp-sim calibrate, cp-sim validate --leave-one-out) work end to end, replay and the cuda bench run on
// its one-rank NCCL, and what the emulation does not have (the nccl transport: MPI) is refused with exit 2.
// Timings are the emulation's, meaningless as numbers.
#include <map>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"

namespace {

using cli_test::ReadFile;
using cli_test::Result;

class CpProfileEmu : public cli_test::ToolTest {
 protected:
  std::string Binary() const override { return CP_PROFILE_EMU_PATH; }
  Result Sim(const std::string& args) { return RunBinary(CP_SIM_PATH, args); }
};

constexpr const char* kSmall = "--backend cuda --seq 256 --heads 4 --kv-heads 2 --head-dim 64 --warmup 1 --iters 2";

TEST_F(CpProfileEmu, CheckedCudaRunWritesTheTracedProfileAndTrace) {
  const Result r =
      Run(std::string(kSmall) + " --transport loopback --schedule zigzag-ring --cp 2 --check --json p.json --trace t.json");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("SIMT emulation"), std::string::npos) << r.out;
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("p.json")));
  EXPECT_EQ(j["schema"], "cpscope.profile/1");
  EXPECT_EQ(j["backend"], "cuda");
  EXPECT_EQ(j["transport"], "loopback");
  // Both virtual ranks ran on the one GPU: its SMs are one compute slot.
  EXPECT_EQ(j["device_sharing"], (nlohmann::json{{"ranks_per_device", 2}, {"compute_slots", 1.0}}));
  EXPECT_EQ(j["iterations_ms"].size(), 2u);
  EXPECT_TRUE(j["check"]["passed"].get<bool>());
  for (const char* out : {"o", "lse", "dq", "dk", "dv"}) EXPECT_LE(j["check"]["relative_error"][out].get<double>(), 2e-2);
  EXPECT_EQ(j["trace"]["ops_without_records"], 0);
  EXPECT_GT(j["trace"]["records"].get<std::int64_t>(), 0);
  ASSERT_EQ(j["ranks"].size(), 2u);
  for (const auto& rank : j["ranks"]) EXPECT_GT(rank["compute_ns"].get<std::int64_t>(), 0);
  const nlohmann::json t = nlohmann::json::parse(ReadFile(Path("t.json")));
  EXPECT_GT(t["traceEvents"].size(), 0u);
}

// The GPU check's calibration step, on profiles the CUDA path wrote: calibrate fits, validate predicts each
// run from the others; both read every file and exit 0.
TEST_F(CpProfileEmu, CalibrateAndValidateReadTheCudaProfiles) {
  const char* runs[] = {"--schedule ring --cp 2 --pass fwd", "--schedule ulysses --cp 2",
                        "--schedule allgather --cp 2 --mask full"};
  const std::string files = " p0.json p1.json p2.json";
  for (int i = 0; i < 3; ++i) {
    std::string args = kSmall;
    args.append(" ").append(runs[i]).append(" --json p").append(std::to_string(i)).append(".json");
    const Result r = Run(args);
    ASSERT_EQ(r.code, 0) << runs[i] << "\n" << r.err << r.out;
  }
  const Result cal = Sim("calibrate" + files + " -o fitted.json");
  ASSERT_EQ(cal.code, 0) << cal.err << cal.out;
  const nlohmann::json fitted = nlohmann::json::parse(ReadFile(Path("fitted.json")));
  EXPECT_TRUE(fitted.contains("calibration")) << fitted.dump().substr(0, 400);
  const Result val = Sim("validate --hardware fitted.json --leave-one-out --json v.json" + files);
  ASSERT_EQ(val.code, 0) << val.err << val.out;
  const nlohmann::json v = nlohmann::json::parse(ReadFile(Path("v.json")));
  EXPECT_EQ(v["rows"].size(), 3u) << v.dump().substr(0, 400);
}

// Replay runs on the emulation's one-rank NCCL: one rank of the schedule, its profile naming that rank only.
TEST_F(CpProfileEmu, ReplayRunsOneRankOnTheStandInNccl) {
  const Result r = Run(std::string(kSmall) + " --schedule zigzag-ring --cp 4 --transport replay --replay-rank 2 --json p.json");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("p.json")));
  EXPECT_EQ(j["transport"], "replay");
  // One rank alone on the GPU, as on a cluster, but its transfers NCCL sending to itself: copies within the GPU.
  EXPECT_EQ(j["device_sharing"],
            (nlohmann::json{{"ranks_per_device", 1}, {"compute_slots", 1.0}, {"local_transfers", true}}));
  EXPECT_FALSE(j.contains("achieved_tflops_per_device"));
  EXPECT_EQ(j["trace"]["ops_without_records"], 0);
  std::set<std::int64_t> ranks;
  for (const auto& iv : j["timeline"]["intervals"]) ranks.insert(iv[0].get<std::int64_t>());
  EXPECT_EQ(ranks, std::set<std::int64_t>{2});
  // The summary is that rank's: its FLOPs over the step, not the N ranks' share of them.
  ASSERT_EQ(j["ranks"].size(), 1u);
  EXPECT_EQ(j["ranks"][0]["rank"], 2);
  EXPECT_EQ(j["total_flops"], j["ranks"][0]["flops"]);
  EXPECT_GT(j["total_flops"].get<double>(), 0.0);
  EXPECT_NEAR(j["achieved_tflops_per_gpu"].get<double>(),
              j["total_flops"].get<double>() / j["step_time_ns"].get<double>() / 1e3,
              1e-9 * j["achieved_tflops_per_gpu"].get<double>());
  EXPECT_EQ(r.out.find("\n   0 "), std::string::npos) << "a rank that did not run is in the table:\n" << r.out;
}

// The cuda bench on it: attention rows over the grid, self transfers, and the two interference rows (the
// second of which used to read the first's missing "ns" and throw).
TEST_F(CpProfileEmu, CudaBenchWritesEveryKindOfRow) {
  const Result r = Run("bench --backend cuda --transport replay --blocks 32,64 --heads 4 --kv-heads 2 --head-dim 64 "
                       "--max-bytes 65536 --repeats 1 --json b.json");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("b.json")));
  std::map<std::string, int> kinds;
  for (const auto& row : j["rows"]) ++kinds[row["kind"].get<std::string>()];
  EXPECT_EQ(kinds["attention"], 12);  // fwd and bwd: 4 shapes full, 2 square causal
  EXPECT_EQ(kinds["transfer"], 4);    // 1, 4, 16 and 64 KiB
  EXPECT_EQ(kinds["interference"], 2);
  ExpectInputError("bench --backend cuda --heads 8 --kv-heads 3", "kv-heads");
  ExpectInputError("bench --backend cuda --blocks 0", "blocks");
  ExpectInputError("bench --backend cuda --max-bytes 10", "max-bytes");
}

// What the emulation does not have: the nccl transport needs MPI and one process per GPU.
TEST_F(CpProfileEmu, NcclTransportIsRefused) {
  ExpectInputError(std::string(kSmall) + " --schedule ring --cp 2 --transport nccl", "needs MPI to start its ranks");
}

}  // namespace
