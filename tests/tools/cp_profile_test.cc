// Tests for the cp-profile binary on the host backend: a checked run exits 0 with the documented JSON,
// bad input exits 2 naming the field and leaves no file behind, and a config the host cannot run in
// reasonable time is refused instead of hanging.
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"

namespace {

namespace fs = std::filesystem;
using cli_test::ReadFile;
using cli_test::Result;

class CpProfile : public cli_test::ToolTest {
 protected:
  std::string Binary() const override { return CP_PROFILE_PATH; }
};

constexpr const char* kSmall = "--backend host --seq 256 --heads 4 --kv-heads 2 --head-dim 16 --warmup 0 --iters 2";

TEST_F(CpProfile, CheckedHostRunWritesTheProfileJson) {
  const Result r = Run(std::string(kSmall) + " --schedule hybrid --cp 4 --ulysses 2 --check --json p.json --trace t.json");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("p.json")));
  EXPECT_EQ(j["schema"], "cpscope.profile/1");
  EXPECT_EQ(j["source"], "measured");
  EXPECT_EQ(j["backend"], "host");
  EXPECT_EQ(j["iterations_ms"].size(), 2u);
  EXPECT_EQ(j["workload"]["schedule"], "hybrid");
  // All four ranks ran on this CPU: the simulator must share one device among them to predict the run.
  EXPECT_EQ(j["device_sharing"]["ranks_per_device"], 4);
  EXPECT_GE(j["device_sharing"]["compute_slots"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["achieved_tflops_per_device"].get<double>(), 4 * j["achieved_tflops_per_gpu"].get<double>());
  EXPECT_NE(r.out.find("TFLOP/s per device at the median (4 ranks on it)"), std::string::npos) << r.out;
  EXPECT_TRUE(j["check"]["passed"].get<bool>());
  for (const char* out : {"o", "lse", "dq", "dk", "dv"}) EXPECT_LE(j["check"]["relative_error"][out].get<double>(), 1e-10);
  ASSERT_EQ(j["ranks"].size(), 4u);
  for (const auto& rank : j["ranks"]) {
    EXPECT_GT(rank["compute_ns"].get<std::int64_t>(), 0);
    EXPECT_GT(rank["bytes_sent"].get<std::int64_t>(), 0);
  }
  const nlohmann::json t = nlohmann::json::parse(ReadFile(Path("t.json")));
  int slices = 0, flow_starts = 0, flow_ends = 0;
  for (const auto& e : t["traceEvents"]) {
    slices += e["ph"] == "X";
    flow_starts += e["ph"] == "s";
    flow_ends += e["ph"] == "f";
  }
  // hybrid 2x2, fwd+bwd: every op one slice; ring transfers (fwd K/V, bwd K/V and dK/dV) as flows.
  EXPECT_EQ(static_cast<std::size_t>(slices), j["timeline"]["intervals"].size());
  EXPECT_GT(flow_starts, 0);
  EXPECT_EQ(flow_starts, flow_ends);
}

TEST_F(CpProfile, EveryScheduleChecksOnTheHost) {
  for (const char* s : {"ring", "zigzag-ring", "allgather", "ulysses", "hybrid --ulysses 2"}) {
    const Result r = Run(std::string(kSmall) + " --cp 2 --check --schedule " + s);
    EXPECT_EQ(r.code, 0) << s << ": " << r.err << r.out;
  }
}

TEST_F(CpProfile, BadInputExitsTwoAndLeavesNoFile) {
  Result r = Run(std::string(kSmall) + " --cp 3 --json p.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("seq"), std::string::npos) << r.err;
  r = Run(std::string(kSmall) + " --iters 0 --json p.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("iters"), std::string::npos) << r.err;
  ExpectInputError("--backend host --seq 256 --heads 4 --kv-heads 2 --head-dim 16 --warmup -1 --json p.json",
                   "warmup: -1 must be >= 0");  // given, so not the backend's default
  r = Run(std::string(kSmall) + " --no-such-flag");
  EXPECT_EQ(r.code, 2);
  r = Run(std::string(kSmall) + " --transport replay");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("transport"), std::string::npos) << r.err;
  EXPECT_TRUE(Files().empty());
}

// The profile records where the ranks ran: the host backend's whole group on this machine, so a CP size that tiles
// no 8-GPU node runs; --gpus-per-node records another layout, and one the group cannot tile is refused.
TEST_F(CpProfile, RecordsTheGroupOnOneMachineUnlessToldOtherwise) {
  const std::string base = "--backend host --seq 192 --heads 4 --kv-heads 2 --head-dim 16 --warmup 0 --iters 1";
  Result r = Run(base + " --cp 3 --check --json three.json");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  nlohmann::json j = nlohmann::json::parse(ReadFile(Path("three.json")));
  EXPECT_EQ(j["workload"]["cp"], 3);
  EXPECT_EQ(j["workload"]["gpus_per_node"], 3);
  EXPECT_TRUE(j["check"]["passed"].get<bool>());
  r = Run(base + " --cp 4 --gpus-per-node 2 --json two.json");
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  j = nlohmann::json::parse(ReadFile(Path("two.json")));
  EXPECT_EQ(j["workload"]["gpus_per_node"], 2);
  ExpectInputError(base + " --cp 4 --gpus-per-node 3", "cp: 4 is larger than a node (3 GPUs) but not a multiple of it");
}

TEST_F(CpProfile, RefusesAHostRunThatWouldTakeHours) {
  const Result r = Run("--backend host --seq 131072 --json p.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("GFLOP"), std::string::npos) << r.err;
  EXPECT_TRUE(Files().empty());
}

}  // namespace

namespace {

TEST_F(CpProfile, BenchWritesRowsThatCalibrationReads) {
  Result r = Run("bench --quick --json b.json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(ReadFile(Path("b.json")));
  EXPECT_EQ(j["schema"], "cpscope.bench/1");
  int attention = 0, transfer = 0, interference = 0;
  for (const auto& row : j["rows"]) {
    attention += row["kind"] == "attention";
    transfer += row["kind"] == "transfer";
    interference += row["kind"] == "interference";
  }
  EXPECT_EQ(attention, 2 * (4 + 2));  // fwd and bwd over q, kv in {64, 128}, causal on the diagonal
  EXPECT_EQ(transfer, 7);             // 1 KiB .. 4 MiB in x4 steps
  EXPECT_EQ(interference, 2);
  const std::string cmd = std::string(CP_SIM_PATH) + " calibrate " + Path("b.json").string() + " -o " +
                          Path("fitted.json").string() + " >/dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_TRUE(fs::exists(Path("fitted.json")));
  // Host ranks are threads on one CPU: their messages are copies within a device, fitted as device_copy.
  for (const auto& row : j["rows"]) {
    if (row["kind"] == "transfer") {
      EXPECT_EQ(row["link"], "self") << row.dump();
    }
  }
  const nlohmann::json fitted = nlohmann::json::parse(ReadFile(Path("fitted.json")));
  EXPECT_TRUE(fitted["calibration"]["fitted"]["links"].contains("device_copy")) << fitted["calibration"].dump();
  EXPECT_FALSE(fitted["calibration"]["fitted"]["links"].contains("nvlink")) << fitted["calibration"].dump();
  r = Run("bench --backend host --repeats 0 --json b2.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_FALSE(fs::exists(Path("b2.json")));
}

}  // namespace
