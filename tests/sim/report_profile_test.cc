// cpscope.profile round trip: a simulated run written with its timeline reads back equal, and broken
// files are rejected naming the field.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include <nlohmann/json.hpp>

#include "sim/error.h"
#include "sim/hardware.h"
#include "sim/planner.h"
#include "sim/profile.h"

namespace cpscope {
namespace {

SimulatedRun small_run() {
  Workload w;
  w.seq = 8192;
  w.cp = 4;
  return simulate_workload(w, default_hardware(), true);
}

TEST(Profile, RoundTripKeepsSummaryAndTimeline) {
  const SimulatedRun run = small_run();
  const nlohmann::json j = profile_json(run.result, &run.timeline);
  const Profile p = profile_from_json(nlohmann::json::parse(j.dump()), "p.json");
  ASSERT_TRUE(p.has_timeline);
  EXPECT_EQ(p.run.source, "simulated");
  EXPECT_EQ(p.run.summary.step_time_ns, run.result.summary.step_time_ns);
  EXPECT_EQ(p.run.summary.ranks.size(), 4u);
  EXPECT_EQ(to_json(p.run.workload), to_json(run.result.workload));
  ASSERT_EQ(p.timeline.intervals.size(), run.timeline.intervals.size());
  for (std::size_t i = 0; i < p.timeline.intervals.size(); ++i) {
    const Interval& a = p.timeline.intervals[i];
    const Interval& b = run.timeline.intervals[i];
    EXPECT_EQ(std::tie(a.rank, a.stream, a.kind, a.op_id, a.step, a.pass, a.start, a.end, a.bytes, a.flops),
              std::tie(b.rank, b.stream, b.kind, b.op_id, b.step, b.pass, b.start, b.end, b.bytes, b.flops));
    EXPECT_EQ(p.timeline.name(a.name), run.timeline.name(b.name));
  }
  // Re-summarizing the read timeline gives the file's summary.
  const Summary again = summarize(p.timeline);
  EXPECT_EQ(again.step_time_ns, p.run.summary.step_time_ns);
}

TEST(Profile, WithoutTimelineReadsTheSummary) {
  const SimulatedRun run = small_run();
  const Profile p = profile_from_json(summary_json(run.result), "s.json");
  EXPECT_FALSE(p.has_timeline);
  EXPECT_EQ(p.run.summary.total_flops, run.result.summary.total_flops);
}

std::string error_of(const nlohmann::json& j) {
  try {
    profile_from_json(j, "bad.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(Profile, RejectsBrokenFilesNamingTheField) {
  const SimulatedRun run = small_run();
  const nlohmann::json good = profile_json(run.result, &run.timeline);
  nlohmann::json j = good;
  j["schema"] = "something/2";
  EXPECT_NE(error_of(j).find("bad.json.schema"), std::string::npos);
  j = good;
  j.erase("step_time_ns");
  EXPECT_NE(error_of(j).find("step_time_ns: missing"), std::string::npos);
  j = good;
  j["timeline"]["intervals"][3][7] = 10;
  j["timeline"]["intervals"][3][8] = 5;  // end before start
  EXPECT_NE(error_of(j).find("intervals[3]"), std::string::npos);
  j = good;
  j["timeline"]["intervals"][0][0] = 99;  // rank
  EXPECT_NE(error_of(j).find("(rank)"), std::string::npos);
  j = good;
  j["timeline"]["intervals"][0][2] = "gpu";  // kind
  EXPECT_NE(error_of(j).find("(kind)"), std::string::npos);
  j = good;
  j["timeline"]["intervals"][1] = {1, 2};
  EXPECT_NE(error_of(j).find("intervals[1]"), std::string::npos);
  j = good;
  j["workload"]["cp"] = "eight";
  EXPECT_NE(error_of(j).find("workload"), std::string::npos);
  EXPECT_THROW(read_profile("/nonexistent/p.json"), InputError);
  // Numbers that nlohmann would cast silently (or, beyond the range, with undefined behaviour): found by
  // tests/fuzz/fuzz_profile.cc, whose crasher is kept under tests/fuzz/crashers/profile/.
  j = good;
  j["ranks"][0]["flops"] = 1.38889e76;
  EXPECT_NE(error_of(j).find("bad.json.ranks[0].flops: 1.38889e+76 is not an integer"), std::string::npos) << error_of(j);
  j = good;
  j["step_time_ns"] = 2.5;
  EXPECT_NE(error_of(j).find("step_time_ns: 2.5 is not an integer"), std::string::npos) << error_of(j);
  j = good;
  j["ranks"][1]["rank"] = std::int64_t{1} << 40;
  EXPECT_NE(error_of(j).find("ranks[1].rank: 1099511627776 is not an integer in [-2147483648, 2147483647]"),
            std::string::npos) << error_of(j);
  j = good;
  j["total_flops"] = std::numeric_limits<std::uint64_t>::max();
  EXPECT_NE(error_of(j).find("total_flops: 18446744073709551615 is not an integer"), std::string::npos) << error_of(j);
  for (const auto& [sharing, field] : std::vector<std::pair<nlohmann::json, std::string>>{
           {nlohmann::json::array(), "device_sharing: is not an object"},
           {{{"compute_slots", 1.0}}, "device_sharing.ranks_per_device: missing"},
           {{{"ranks_per_device", 0}, {"compute_slots", 1.0}}, "device_sharing.ranks_per_device: 0 must be >= 1"},
           {{{"ranks_per_device", 4}, {"compute_slots", -2.0}}, "device_sharing.compute_slots: -2 must be in (0, 65536]"},
           {{{"ranks_per_device", 4}, {"compute_slots", "two"}}, "device_sharing.compute_slots: has the wrong type"},
           {{{"ranks_per_device", 1}, {"compute_slots", 1}, {"local_transfers", "yes"}},
            "device_sharing.local_transfers: has the wrong type"}}) {
    j = good;
    j["device_sharing"] = sharing;
    EXPECT_NE(error_of(j).find(field), std::string::npos) << error_of(j);
  }
}

// A run whose ranks shared a device (loopback, host backend) says so in its file, and reads back so;
// a run with a GPU per rank writes nothing, so such files are as before.
TEST(Profile, DeviceSharingRoundTrips) {
  Workload w;
  w.seq = 16384;
  w.cp = 4;
  const SimulatedRun shared = simulate_workload(w, default_hardware(), true, {4, 2.0});
  const nlohmann::json j = profile_json(shared.result, &shared.timeline);
  EXPECT_EQ(j["device_sharing"], (nlohmann::json{{"ranks_per_device", 4}, {"compute_slots", 2.0}}));
  EXPECT_EQ(profile_from_json(nlohmann::json::parse(j.dump()), "p.json").run.sharing, (DeviceSharing{4, 2.0}));
  EXPECT_NE(summary_table(shared.result).find("4 rank(s) per device, 2 compute slot(s) each"), std::string::npos);
  // Four ranks on one device: it did four ranks' work, and the table says per device, not per GPU.
  EXPECT_DOUBLE_EQ(j["achieved_tflops_per_device"].get<double>(), 4 * j["achieved_tflops_per_gpu"].get<double>());
  EXPECT_NE(summary_table(shared.result).find("TFLOP/s per device"), std::string::npos);
  EXPECT_EQ(summary_table(shared.result).find("per GPU ("), std::string::npos);
  const SimulatedRun own = small_run();
  EXPECT_FALSE(profile_json(own.result, &own.timeline).contains("device_sharing"));
  EXPECT_FALSE(profile_json(own.result, &own.timeline).contains("achieved_tflops_per_device"));
  // Replay: a GPU per rank, transfers that stay on it.
  const SimulatedRun replay = simulate_workload(w, default_hardware(), true, {1, 1.0, true});
  const nlohmann::json r = profile_json(replay.result, &replay.timeline);
  EXPECT_EQ(r["device_sharing"]["local_transfers"], true);
  EXPECT_FALSE(r.contains("achieved_tflops_per_device"));
  EXPECT_EQ(profile_from_json(nlohmann::json::parse(r.dump()), "r.json").run.sharing, (DeviceSharing{1, 1.0, true}));
  EXPECT_NE(summary_table(replay.result).find("copies within one GPU"), std::string::npos);
  EXPECT_EQ(profile_from_json(summary_json(own.result), "s.json").run.sharing, DeviceSharing{});
}

// An nccl run's file records the job's nodes beside the workload; calibrate and validate go by the
// workload's gpus_per_node, so a file whose two disagree (edited by hand, or assembled from two runs) is
// refused naming the rank, not fitted on the wrong link. Runs that shared a GPU are not checked.
TEST(Profile, TheJobsNodesMustPlaceRanksAsTheWorkloadDoes) {
  Workload w;
  w.seq = 8192;
  w.cp = 8;
  w.gpus_per_node = 4;
  const SimulatedRun run = simulate_workload(w, default_hardware(), false);
  nlohmann::json j = summary_json(run.result);
  j["nodes"] = {{"nodes", 2}, {"ranks_per_node", 4}, {"processes", 8}};
  EXPECT_EQ(error_of(j), "");
  j["nodes"] = {{"nodes", 1}, {"ranks_per_node", 8}, {"processes", 8}};
  EXPECT_NE(error_of(j).find("nodes.ranks_per_node: the run placed CP rank 4 on node 0 (8 per node), but the workload "
                             "puts it on node 1 (gpus_per_node 4): correct workload.gpus_per_node to 8"),
            std::string::npos)
      << error_of(j);
  j["nodes"] = {{"nodes", 4}, {"ranks_per_node", 2}, {"processes", 8}};
  EXPECT_NE(error_of(j).find("CP rank 2 on node 1 (2 per node), but the workload puts it on node 0"), std::string::npos)
      << error_of(j);
  j["nodes"] = {{"nodes", 3}, {"ranks_per_node", 4}, {"processes", 8}};
  EXPECT_NE(error_of(j).find("nodes.nodes: 3 nodes cannot hold 8 ranks at 4 per node (that is 2)"), std::string::npos)
      << error_of(j);
  j["nodes"] = {{"nodes", 2}, {"ranks_per_node", 0}, {"processes", 8}};
  EXPECT_NE(error_of(j).find("nodes.ranks_per_node: 0 is not in [1, 2^30]"), std::string::npos) << error_of(j);
  j["nodes"] = {{"nodes", 2}};
  EXPECT_NE(error_of(j).find("nodes.ranks_per_node"), std::string::npos) << error_of(j);
  j["nodes"] = 2;
  EXPECT_NE(error_of(j).find("nodes: is not an object"), std::string::npos) << error_of(j);
  // One node holds any number of GPUs the workload gives it room for.
  j["nodes"] = {{"nodes", 1}, {"ranks_per_node", 8}, {"processes", 8}};
  j["workload"]["gpus_per_node"] = 16;
  EXPECT_EQ(error_of(j), "");
  // Loopback: eight ranks on one GPU; the workload's nodes do not matter to copies within it.
  j["workload"]["gpus_per_node"] = 4;
  j["device_sharing"] = {{"ranks_per_device", 8}, {"compute_slots", 1}};
  EXPECT_EQ(error_of(j), "");
}

}  // namespace
}  // namespace cpscope
