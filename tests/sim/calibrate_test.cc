// Calibration recovers planted parameters from synthetic timelines (simulated with a known profile),
// validation of a simulated profile against its own hardware is exact, and bad inputs are refused.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "sim/calibrate.h"
#include "sim/error.h"
#include "sim/hardware.h"
#include "sim/planner.h"

namespace cpscope {
namespace {

// The default H100 profile with every fitted parameter moved away from it.
HardwareProfile planted() {
  HardwareProfile hw = default_hardware();
  hw.name = "planted";
  hw.launch_latency_ns = 9000;
  hw.memory_bandwidth_GBps *= 0.7;
  hw.nvlink.bandwidth_GBps = 310;
  hw.nvlink.latency_ns = 15000;
  hw.comm_compute_interference = 1.25;
  for (RateTable& t : hw.attention)
    for (auto& row : t.tflops)
      for (double& v : row) v *= 0.8;
  return hw;
}

NamedProfile simulated(const Workload& w, const HardwareProfile& hw, const std::string& name,
                       const DeviceSharing& sharing = {}) {
  const SimulatedRun run = simulate_workload(w, hw, true, sharing);
  // Through the file format, as cp-sim calibrate reads it.
  const nlohmann::json j = nlohmann::json::parse(profile_json(run.result, &run.timeline).dump());
  return {name, profile_from_json(j, name), ""};
}

// `sharing`: ranks per device (0: all of a profile's cp ranks on one device, as the loopback transport
// runs them) and compute slots.
std::vector<NamedProfile> calibration_set(const HardwareProfile& hw, std::int32_t ranks_per_device = 1,
                                          double compute_slots = 1) {
  std::vector<NamedProfile> set;
  auto add = [&](ScheduleKind kind, std::int64_t cp, std::int64_t seq, std::int64_t batch, PassSet pass,
                 DkvVariant dkv) {
    Workload w;
    w.schedule = kind;
    w.cp = cp;
    w.seq = seq;
    w.batch = batch;
    w.pass = pass;
    w.dkv = dkv;
    const DeviceSharing sharing{ranks_per_device == 0 ? static_cast<std::int32_t>(cp) : ranks_per_device, compute_slots};
    set.push_back(simulated(w, hw, "p" + std::to_string(set.size()) + ".json", sharing));
  };
  // Batch 1 and 2 of the same blocks separate the launch latency from the rates; fwd-only rings give
  // unshared transfers of two sizes; fp32 backwards give DkvAdd memory ops and comm overlap.
  add(ScheduleKind::ZigzagRing, 4, 32768, 1, PassSet::FwdBwd, DkvVariant::Fp32);
  add(ScheduleKind::ZigzagRing, 4, 32768, 2, PassSet::FwdBwd, DkvVariant::Fp32);
  add(ScheduleKind::Ring, 8, 65536, 1, PassSet::Fwd, DkvVariant::Fp32);
  add(ScheduleKind::Ring, 8, 65536, 2, PassSet::FwdBwd, DkvVariant::Input);
  add(ScheduleKind::ZigzagRing, 2, 16384, 1, PassSet::FwdBwd, DkvVariant::Fp32);
  add(ScheduleKind::ZigzagRing, 2, 16384, 2, PassSet::Fwd, DkvVariant::Fp32);
  return set;
}

void expect_near_rel(double got, double want, double tol, const char* what) {
  EXPECT_LE(std::abs(got - want) / want, tol) << what << ": got " << got << ", planted " << want;
}

TEST(Calibrate, RecoversPlantedParametersWithinOnePercent) {
  const HardwareProfile truth = planted();
  const Calibration cal = calibrate(calibration_set(truth), default_hardware());
  const HardwareProfile& hw = cal.hardware;
  expect_near_rel(static_cast<double>(hw.launch_latency_ns), 9000, 0.01, "launch latency");
  expect_near_rel(hw.memory_bandwidth_GBps, truth.memory_bandwidth_GBps, 0.01, "memory bandwidth");
  expect_near_rel(hw.comm_compute_interference, 1.25, 0.01, "interference");
  expect_near_rel(hw.nvlink.bandwidth_GBps, 310, 0.01, "nvlink bandwidth");
  expect_near_rel(static_cast<double>(hw.nvlink.latency_ns), 15000, 0.01, "nvlink latency");
  const auto& cells = cal.report["fitted"]["attention_cells"];
  ASSERT_GE(cells.size(), 6u);
  for (const auto& c : cells) {
    const double want = truth.attention_tflops(c["pass"] == "bwd", c["mask"] == "causal", c["head_dim"].get<std::int64_t>(),
                                               c["q_tokens"].get<std::int64_t>(), c["kv_tokens"].get<std::int64_t>());
    expect_near_rel(c["tflops"].get<double>(), want, 0.01, c.dump().c_str());
    // The fitted profile answers the same at the measured shape.
    expect_near_rel(hw.attention_tflops(c["pass"] == "bwd", c["mask"] == "causal", c["head_dim"].get<std::int64_t>(),
                                        c["q_tokens"].get<std::int64_t>(), c["kv_tokens"].get<std::int64_t>()),
                    want, 0.01, "table lookup");
  }
  for (const auto& r : cal.report["residuals"]) EXPECT_LE(r["max_relative"].get<double>(), 0.01) << r.dump();
  // No transfer stayed on one GPU: device_copy is not fitted and stays unset (derived from the fitted profile).
  EXPECT_EQ(hw.device_copy.bandwidth_GBps, 0.0);
  bool said = false;
  for (const auto& k : cal.report["kept_from_base"])
    said = said || (k["field"] == "device_copy" && k["why"].get<std::string>().find("left unset") != std::string::npos);
  EXPECT_TRUE(said) << cal.report["kept_from_base"].dump();
  // The written file is a hardware profile again.
  const HardwareProfile back = hardware_from_json(nlohmann::json::parse(calibration_json(cal).dump()));
  EXPECT_EQ(back.launch_latency_ns, hw.launch_latency_ns);
}

TEST(Calibrate, CalibratedProfilePredictsItsInputs) {
  const std::vector<NamedProfile> set = calibration_set(planted());
  const Calibration cal = calibrate(set, default_hardware());
  const Validation v = validate(set, cal.hardware);
  EXPECT_LE(v.mean_abs_error, 0.01);
  const Validation before = validate(set, default_hardware());
  EXPECT_GT(before.mean_abs_error, 0.05);  // the uncalibrated profile is visibly off
}

TEST(Validate, SimulatedProfileAgainstItsOwnHardwareIsExact) {
  Workload w;
  w.seq = 16384;
  w.cp = 4;
  const NamedProfile p = simulated(w, default_hardware(), "self.json");
  const Validation v = validate({p}, default_hardware());
  ASSERT_EQ(v.rows.size(), 1u);
  EXPECT_EQ(v.rows[0].measured_ns, v.rows[0].predicted_ns);
  EXPECT_EQ(v.mean_abs_error, 0.0);
  for (const auto& k : v.rows[0].kinds) EXPECT_EQ(k.error, 0.0) << k.what;
  EXPECT_EQ(v.rows[0].passes.size(), 2u);
  const nlohmann::json j = validation_json(v);
  EXPECT_EQ(j["mean_abs_error"], 0.0);
  EXPECT_NE(validation_table(v).find("mean absolute error 0.00%"), std::string::npos);
}

TEST(Validate, LeaveOneOutPredictsEachFromTheOthers) {
  const std::vector<NamedProfile> set = calibration_set(planted());
  const Validation v = validate(set, default_hardware(), true);
  ASSERT_EQ(v.rows.size(), set.size());
  EXPECT_LE(v.mean_abs_error, 0.05);
}

TEST(Calibrate, RefusesProfilesWithoutTimelineOrForeignOps) {
  Workload w;
  w.seq = 16384;
  w.cp = 4;
  const SimulatedRun run = simulate_workload(w, default_hardware(), true);
  NamedProfile bare{"bare.json", profile_from_json(summary_json(run.result), "bare.json"), ""};
  try {
    calibrate({bare}, default_hardware());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bare.json"), std::string::npos);
  }
  NamedProfile odd = simulated(w, default_hardware(), "odd.json");
  odd.profile.timeline.intervals[0].op_id = 100000;
  EXPECT_THROW(calibrate({odd}, default_hardware()), InputError);
  EXPECT_THROW(calibrate({}, default_hardware()), InputError);
}

// --base auto: the card the inputs name; runs without one (host backend) and unknown cards start from h100-sxm
// and say why; inputs from cards of different profiles are refused, naming the files.
TEST(Calibrate, AutoBaseIsTheCardTheInputsName) {
  std::vector<NamedProfile> profiles;
  std::vector<NamedBench> benches;
  const nlohmann::json j = profile_json(simulate_workload(Workload{}, default_hardware(), false).result, nullptr);
  auto add = [&](const std::string& file, const std::string& device) {
    nlohmann::json k = j;
    if (!device.empty()) k["device"] = {{"name", device}, {"sm_count", 132}};
    classify_calibration_input(file, k, profiles, benches);
  };
  add("host.json", "");
  AutoBase b = auto_base(profiles, benches);
  EXPECT_EQ(b.name, "h100-sxm");
  EXPECT_NE(b.why.find("host-backend"), std::string::npos) << b.why;
  add("a.json", "NVIDIA H200");
  try {  // a host run among GPU runs
    auto_base(profiles, benches);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no card named: host.json"), std::string::npos) << e.what();
  }
  profiles.erase(profiles.begin());
  benches.push_back({"bench.json", {{"schema", "cpscope.bench/1"}, {"device", {{"name", "NVIDIA H200"}}}}});
  b = auto_base(profiles, benches);
  EXPECT_EQ(b.name, "h200-sxm");
  EXPECT_NE(b.why.find("NVIDIA H200"), std::string::npos) << b.why;
  add("b.json", "NVIDIA H100 80GB HBM3");
  try {
    auto_base(profiles, benches);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "base");
    for (const char* part : {"h100-sxm: b.json (NVIDIA H100 80GB HBM3)", "h200-sxm: a.json (NVIDIA H200), bench.json"})
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
  profiles.clear();
  benches.clear();
  add("l.json", "NVIDIA L40S");
  b = auto_base(profiles, benches);
  EXPECT_EQ(b.name, "h100-sxm");
  EXPECT_NE(b.why.find("no built-in profile describes NVIDIA L40S"), std::string::npos) << b.why;
  add("a.json", "NVIDIA H200");
  EXPECT_THROW(auto_base(profiles, benches), InputError);
}

// A document is a bench file by its schema, else read as a profile; a schema of the wrong type is an input error
// naming the field (it was nlohmann's type_error, exit 1, until tests/fuzz/fuzz_profile.cc).
TEST(Calibrate, InputsAreClassifiedByASchemaOfAnyType) {
  std::vector<NamedProfile> profiles;
  std::vector<NamedBench> benches;
  for (const nlohmann::json& j : {nlohmann::json{{"schema", 5}}, nlohmann::json::array(), nlohmann::json{{"rows", 1}}}) {
    try {
      classify_calibration_input("in.json", j, profiles, benches);
      FAIL() << j.dump();
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("in.json", 0), 0u) << e.what();
    }
  }
  classify_calibration_input("b.json", {{"schema", "cpscope.bench/1"}, {"backend", 7}, {"rows", nlohmann::json::array()}},
                             profiles, benches);
  ASSERT_EQ(benches.size(), 1u);
  EXPECT_TRUE(profiles.empty());
  // A backend that is not a string is only left out of the report.
  benches[0].bench["rows"] = {{{"kind", "transfer"}, {"link", "self"}, {"bytes", 1 << 20}, {"ns", 9000}},
                              {{"kind", "transfer"}, {"link", "self"}, {"bytes", 1 << 24}, {"ns", 90000}}};
  const Calibration cal = calibrate({}, default_hardware(), "", benches);
  EXPECT_EQ(cal.report["inputs"][0]["bench"], "");
}

}  // namespace
}  // namespace cpscope

namespace cpscope {
namespace {

// Bench rows computed from the planted profile with the engine's formulas recover it too.
TEST(Calibrate, BenchRowsRecoverPlantedParameters) {
  const HardwareProfile truth = planted();
  nlohmann::json rows = nlohmann::json::array();
  for (const char* pass : {"fwd", "bwd"})
    for (std::int64_t q : {1024, 4096})
      for (std::int64_t kv : {1024, 4096})
        for (std::int64_t batch : {1, 2}) {
          const std::int64_t flops = 4 * batch * 32 * 128 * q * kv * (pass[0] == 'b' ? 5 : 2) / 2;
          const double rate = truth.attention_tflops(pass[0] == 'b', false, 128, q, kv);
          const double ns = 9000 + static_cast<double>(flops) / (rate * 1e3);
          rows.push_back({{"kind", "attention"}, {"pass", pass}, {"mask", "full"}, {"head_dim", 128},
                          {"q_tokens", q}, {"kv_tokens", kv}, {"batch", batch}, {"heads", 32}, {"flops", flops},
                          {"ns", std::llround(ns)}});
          if (q == 4096 && kv == 4096 && batch == 1) {
            nlohmann::json row = rows.back();
            row["kind"] = "interference";
            row["alone_ns"] = std::llround(ns);
            row["with_comm_ns"] = std::llround(ns * 1.25);
            row.erase("ns");
            rows.push_back(row);
          }
        }
  for (std::int64_t bytes = 1 << 20; bytes <= (256 << 20); bytes *= 4)
    rows.push_back({{"kind", "transfer"}, {"link", "nvlink"}, {"bytes", bytes},
                    {"ns", std::llround(15000 + static_cast<double>(bytes) / 310.0)}});
  // One GPU sending to itself says nothing about a link: it is a copy within the GPU, fitted as device_copy.
  for (std::int64_t bytes : {std::int64_t{1} << 20, std::int64_t{64} << 20})
    rows.push_back({{"kind", "transfer"}, {"link", "self"}, {"bytes", bytes},
                    {"ns", std::llround(8000 + static_cast<double>(bytes) / 1500.0)}});
  // Memory kernels (the CUDA bench's copy, add and fill rows): latency per kernel + bytes written / bandwidth.
  // The cudaMemcpyAsync baseline is never fitted: its rate here is far from the kernels' on purpose.
  for (std::int64_t bytes = 4 << 20; bytes <= (256 << 20); bytes *= 4)
    for (std::int64_t kernels : {1, 3})
      rows.push_back({{"kind", "memory"}, {"op", "add fp32"}, {"bytes", bytes}, {"kernels", kernels},
                      {"ns", std::llround(9000.0 * kernels + static_cast<double>(bytes) / 2600.0)}});
  rows.push_back({{"kind", "memory"}, {"op", "memcpy"}, {"bytes", 64 << 20}, {"kernels", 1}, {"baseline", true},
                  {"ns", std::llround(static_cast<double>(64 << 20) / 26000.0)}});
  const NamedBench bench{"bench.json", {{"schema", "cpscope.bench/1"}, {"backend", "synthetic"}, {"rows", rows}}};
  const Calibration cal = calibrate({}, default_hardware(), "", {bench});
  expect_near_rel(cal.hardware.memory_bandwidth_GBps, 2600, 0.01, "memory bandwidth");
  expect_near_rel(static_cast<double>(cal.hardware.launch_latency_ns), 9000, 0.01, "launch latency");
  expect_near_rel(cal.hardware.comm_compute_interference, 1.25, 0.01, "interference");
  expect_near_rel(cal.hardware.nvlink.bandwidth_GBps, 310, 0.01, "nvlink bandwidth");
  expect_near_rel(static_cast<double>(cal.hardware.nvlink.latency_ns), 15000, 0.01, "nvlink latency");
  expect_near_rel(cal.hardware.device_copy.bandwidth_GBps, 1500, 0.01, "device copy bandwidth");
  expect_near_rel(static_cast<double>(cal.hardware.device_copy.latency_ns), 8000, 0.01, "device copy latency");
  expect_near_rel(cal.hardware.attention_tflops(true, false, 128, 4096, 1024),
                  truth.attention_tflops(true, false, 128, 4096, 1024), 0.01, "bwd rate");
  // Malformed rows name the file and the row.
  nlohmann::json bad = bench.bench;
  bad["rows"][3]["ns"] = -5;
  try {
    calibrate({}, default_hardware(), "", {{"b.json", bad}});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("b.json.rows[3].ns"), std::string::npos) << e.what();
  }
  bad = bench.bench;
  bad["rows"].back()["baseline"] = "yes";
  try {
    calibrate({}, default_hardware(), "", {{"b.json", bad}});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(fmt::format("b.json.rows[{}].baseline", bad["rows"].size() - 1)),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace cpscope

namespace cpscope {
namespace {

// A replay profile measures one rank of the schedule: it is compared with that rank of the simulation.
TEST(Validate, SingleRankProfileIsComparedWithThatRank) {
  Workload w;
  w.seq = 16384;
  w.cp = 4;
  NamedProfile p = simulated(w, default_hardware(), "replay.json");
  Timeline& t = p.profile.timeline;
  std::erase_if(t.intervals, [](const Interval& iv) { return iv.rank != 2; });
  const Validation v = validate({p}, default_hardware());
  ASSERT_EQ(v.rows.size(), 1u);
  EXPECT_EQ(v.rows[0].measured_ns, v.rows[0].predicted_ns);
  EXPECT_EQ(v.mean_abs_error, 0.0);
}

}  // namespace
}  // namespace cpscope

namespace cpscope {
namespace {

// Bench rows from the planted profile at every block shape the calibration set measured, two batch sizes each
// (so the fit separates the launch latency from the rate), as cp-profile bench writes them.
NamedBench planted_bench_for(const std::vector<NamedProfile>& set, const HardwareProfile& truth) {
  nlohmann::json rows = nlohmann::json::array();
  const Calibration measured = calibrate(set, default_hardware());
  for (const auto& c : measured.report["fitted"]["attention_cells"]) {
    const bool bwd = c["pass"] == "bwd", causal = c["mask"] == "causal";
    const std::int64_t d = c["head_dim"], q = c["q_tokens"], kv = c["kv_tokens"];
    for (std::int64_t batch : {1, 2}) {
      const std::int64_t flops = 4 * batch * 32 * d * q * kv * (bwd ? 5 : 2) / 2 / (causal ? 2 : 1);
      const double ns = 9000 + static_cast<double>(flops) / (truth.attention_tflops(bwd, causal, d, q, kv) * 1e3);
      rows.push_back({{"kind", "attention"}, {"pass", c["pass"]}, {"mask", c["mask"]}, {"head_dim", d},
                      {"q_tokens", q}, {"kv_tokens", kv}, {"batch", batch}, {"heads", 32}, {"flops", flops},
                      {"ns", std::llround(ns)}});
    }
  }
  return {"bench.json", {{"schema", "cpscope.bench/1"}, {"backend", "synthetic"}, {"rows", rows}}};
}

// A profile whose block shapes no other profile has is predicted from base rates in a leave-one-out fit; the
// bench file's rows at those shapes join every fit and close that gap.
TEST(Validate, LeaveOneOutFitsIncludeBenchFiles) {
  // Rates that do not follow the base table's shape: from the other profiles' cells alone, a fit can only
  // carry the base's trend to a shape none of them measured.
  HardwareProfile truth = planted();
  for (RateTable& t : truth.attention)
    for (std::size_t i = 0; i < t.q_tokens.size(); ++i)
      for (std::size_t j = 0; j < t.kv_tokens.size(); ++j)
        t.tflops[i][j] *= 0.6 + 0.02 * std::log2(static_cast<double>(t.q_tokens[i] * t.kv_tokens[j]));
  std::vector<NamedProfile> set = calibration_set(truth);
  Workload odd;  // 32K-token blocks: longer than any other profile of the set has
  odd.schedule = ScheduleKind::Ring;
  odd.cp = 2;
  odd.seq = 65536;
  set.push_back(simulated(odd, truth, "odd.json"));
  const NamedBench bench = planted_bench_for(set, truth);
  const Validation without = validate(set, default_hardware(), true);
  const Validation with = validate(set, default_hardware(), true, {bench});
  ASSERT_EQ(with.rows.size(), set.size());  // the bench file is fitted on, never predicted
  EXPECT_LE(with.mean_abs_error, 0.01) << "without the bench file: " << without.mean_abs_error;
  EXPECT_GT(without.max_abs_error, 0.03) << "the odd profile should need the bench";
  EXPECT_LT(with.mean_abs_error, without.mean_abs_error);
  EXPECT_EQ(with.bench_files, std::vector<std::string>{"bench.json"});
  EXPECT_EQ(validation_json(with)["bench_files"][0], "bench.json");
  EXPECT_NE(validation_table(with).find("every fit included 1 bench file(s): bench.json"), std::string::npos);
  // One profile and a bench file are enough to leave that profile out.
  EXPECT_EQ(validate({set[0]}, default_hardware(), true, {bench}).rows.size(), 1u);
  // Without --leave-one-out nothing is fitted, so a bench file would be silently unused: refused, named.
  try {
    validate(set, default_hardware(), false, {bench});
    FAIL() << "a bench file without leave-one-out was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bench.json"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cpscope

namespace cpscope {
namespace {

// Loopback and host-backend runs put every rank on one device: their kernels share it, so a measured op
// lasts longer than its own work whenever another rank computes beside it. Calibration weighs each op by
// its share of the device and recovers the planted rates; ignoring the sharing does not.
TEST(Calibrate, SharedDeviceProfilesRecoverPlantedParameters) {
  const HardwareProfile truth = planted();
  for (const double slots : {1.0, 2.0}) {
    SCOPED_TRACE(::testing::Message() << "compute slots " << slots);
    std::vector<NamedProfile> set = calibration_set(truth, 0, slots);
    ASSERT_EQ(set.front().profile.run.sharing.ranks_per_device, 4);  // read back from the file
    ASSERT_EQ(set.front().profile.run.sharing.compute_slots, slots);
    // Copies within a device overlap each other (every rank sends at each step), so these profiles hold
    // no clean transfer sample: the link comes from a run with a GPU per rank, as the GPU check's
    // replay runs give it.
    Workload solo;
    solo.schedule = ScheduleKind::Ring;
    solo.cp = 8;
    solo.seq = 65536;
    solo.pass = PassSet::Fwd;
    set.push_back(simulated(solo, truth, "own-gpus.json"));
    solo.batch = 2;  // a second message size separates latency from bandwidth
    set.push_back(simulated(solo, truth, "own-gpus-2.json"));
    const Calibration cal = calibrate(set, default_hardware());
    expect_near_rel(cal.hardware.nvlink.bandwidth_GBps, 310, 0.01, "nvlink bandwidth");
    for (const auto& c : cal.report["fitted"]["attention_cells"]) {
      const double want = truth.attention_tflops(c["pass"] == "bwd", c["mask"] == "causal",
                                                 c["head_dim"].get<std::int64_t>(), c["q_tokens"].get<std::int64_t>(),
                                                 c["kv_tokens"].get<std::int64_t>());
      expect_near_rel(c["tflops"].get<double>(), want, 0.01, c.dump().c_str());
    }
    expect_near_rel(static_cast<double>(cal.hardware.launch_latency_ns), 9000, 0.01, "launch latency");
    expect_near_rel(cal.hardware.memory_bandwidth_GBps, truth.memory_bandwidth_GBps, 0.01, "memory bandwidth");
    // Validated as measured (shared), the fitted profile predicts its inputs.
    EXPECT_LE(validate(set, cal.hardware).mean_abs_error, 0.01);

    // The same timelines read as if each rank had had a device of its own: the fitted rates come out
    // far too low (each op's duration includes its neighbours' work).
    for (NamedProfile& p : set) p.profile.run.sharing = {};
    set.resize(set.size() - 2);
    const Calibration naive = calibrate(set, default_hardware());
    double worst = 0;
    for (const auto& c : naive.report["fitted"]["attention_cells"]) {
      const double want = truth.attention_tflops(c["pass"] == "bwd", c["mask"] == "causal",
                                                 c["head_dim"].get<std::int64_t>(), c["q_tokens"].get<std::int64_t>(),
                                                 c["kv_tokens"].get<std::int64_t>());
      worst = std::max(worst, std::abs(c["tflops"].get<double>() - want) / want);
    }
    EXPECT_GT(worst, 0.2);
  }
}

TEST(Validate, SharedDeviceProfileIsSimulatedShared) {
  Workload w;
  w.seq = 16384;
  w.cp = 4;
  const NamedProfile p = simulated(w, default_hardware(), "loopback.json", {4, 1.0});
  const Validation v = validate({p}, default_hardware());
  ASSERT_EQ(v.rows.size(), 1u);
  EXPECT_EQ(v.rows[0].measured_ns, v.rows[0].predicted_ns);
  EXPECT_EQ(v.mean_abs_error, 0.0);
  // Four ranks' work on one GPU takes well over the time of one rank's on its own GPU.
  NamedProfile own = p;
  own.profile.run.sharing = {};
  EXPECT_LT(validate({own}, default_hardware()).rows[0].error, -0.5);
}

}  // namespace
}  // namespace cpscope

namespace cpscope {
namespace {

// Replay profiles: every transfer was NCCL sending to itself on one GPU. They fit device_copy, and nvlink keeps
// the base profile's numbers, so a profile calibrated on one GPU still plans an 8-GPU node with real links.
TEST(Calibrate, CopiesWithinAGpuFitDeviceCopyNotNvlink) {
  HardwareProfile truth = planted();
  truth.device_copy = {1500, 8000};
  std::vector<NamedProfile> set;
  for (const std::int64_t batch : {1, 2}) {
    Workload w;
    w.schedule = ScheduleKind::Ring;
    w.cp = 8;
    w.seq = 65536;
    w.batch = batch;
    w.pass = PassSet::Fwd;
    set.push_back(simulated(w, truth, "replay" + std::to_string(batch) + ".json", {1, 1.0, true}));
  }
  ASSERT_TRUE(set.front().profile.run.sharing.local_transfers);  // read back from the file
  const Calibration cal = calibrate(set, default_hardware());
  expect_near_rel(cal.hardware.device_copy.bandwidth_GBps, 1500, 0.01, "device copy bandwidth");
  expect_near_rel(static_cast<double>(cal.hardware.device_copy.latency_ns), 8000, 0.01, "device copy latency");
  EXPECT_EQ(cal.hardware.nvlink.bandwidth_GBps, default_hardware().nvlink.bandwidth_GBps);
  EXPECT_EQ(cal.hardware.nvlink.latency_ns, default_hardware().nvlink.latency_ns);
  // Validated as it ran (copies within the GPU), the calibrated profile predicts the runs.
  EXPECT_LE(validate(set, cal.hardware).mean_abs_error, 0.01);
  // The fitted file carries device_copy, and reads back.
  const HardwareProfile back = hardware_from_json(nlohmann::json::parse(calibration_json(cal).dump()));
  EXPECT_EQ(back.device_copy.bandwidth_GBps, cal.hardware.device_copy.bandwidth_GBps);
}

}  // namespace
}  // namespace cpscope
