// Tests for sim/hardware: built-in profiles, strict JSON validation, file loading, rate lookup.
#include "sim/hardware.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sim/error.h"

namespace cpscope {
namespace {

using json = nlohmann::json;

// Expects `f` to throw InputError whose field is `field` and whose message contains `needle`.
template <typename F>
void expect_input_error(F&& f, const std::string& field, const std::string& needle = "") {
  try {
    f();
    FAIL() << "expected InputError on field " << field;
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), field) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

json base_json() { return to_json(default_hardware()); }

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("cpscope_hw_test_" + name)).string();
}

TEST(Hardware, BuiltinNames) {
  const auto names = builtin_hardware_names();
  const std::set<std::string> got(names.begin(), names.end());
  EXPECT_EQ(got, (std::set<std::string>{"a100-sxm-80gb", "b200", "h100-sxm", "h200-sxm", "h800-sxm"}));
}

TEST(Hardware, EveryBuiltinLoadsAndCoversTheAttentionShapes) {
  for (const auto& name : builtin_hardware_names()) {
    SCOPED_TRACE(name);
    const HardwareProfile hw = load_hardware(name);
    EXPECT_EQ(hw.name, name);
    EXPECT_FALSE(hw.description.empty());
    EXPECT_EQ(hw.gpus_per_node, 8);
    EXPECT_GT(hw.memory_bytes, 40 * kGiB);
    EXPECT_GT(hw.nvlink.bandwidth_GBps, hw.network.bandwidth_GBps);
    EXPECT_GE(hw.comm_compute_interference, 1.0);
    for (bool bwd : {false, true})
      for (bool causal : {false, true})
        for (std::int64_t d : {64, 128}) {
          const double r = hw.attention_tflops(bwd, causal, d, 4096, 4096);
          EXPECT_GT(r, 0.0);
          EXPECT_LE(r, hw.peak_tflops_bf16);
          // Longer blocks never run slower in the built-in tables.
          EXPECT_GE(hw.attention_tflops(bwd, causal, d, 8192, 8192), r);
        }
  }
}

TEST(Hardware, DefaultIsH100) {
  const HardwareProfile& hw = default_hardware();
  EXPECT_EQ(hw.name, "h100-sxm");
  EXPECT_DOUBLE_EQ(hw.peak_tflops_bf16, 989.4);
  EXPECT_EQ(hw.nics_per_node, 8);
  EXPECT_EQ(&default_hardware(), &hw);
}

TEST(Hardware, JsonRoundTrip) {
  for (const auto& name : builtin_hardware_names()) {
    SCOPED_TRACE(name);
    const HardwareProfile hw = load_hardware(name);
    const json j = to_json(hw);
    const HardwareProfile back = hardware_from_json(j);
    EXPECT_EQ(to_json(back), j);
    EXPECT_EQ(back.attention.size(), hw.attention.size());
    EXPECT_EQ(back.attention[3].tflops, hw.attention[3].tflops);
  }
}

// cp-sim calibrate --base auto: the card names cudaDeviceProp::name reports pick their built-in profile.
TEST(Hardware, DeviceNamesPickTheBuiltinProfile) {
  EXPECT_EQ(builtin_hardware_for_device("NVIDIA H200"), "h200-sxm");
  EXPECT_EQ(builtin_hardware_for_device("nvidia h200 nvl"), "h200-sxm");
  EXPECT_EQ(builtin_hardware_for_device("NVIDIA H100 80GB HBM3"), "h100-sxm");
  EXPECT_EQ(builtin_hardware_for_device("NVIDIA H800"), "h800-sxm");
  EXPECT_EQ(builtin_hardware_for_device("NVIDIA A100-SXM4-80GB"), "a100-sxm-80gb");
  EXPECT_EQ(builtin_hardware_for_device("NVIDIA B200"), "b200");
  EXPECT_EQ(builtin_hardware_for_device("NVIDIA L40S"), "");
  EXPECT_EQ(builtin_hardware_for_device(""), "");
  for (const auto& name : builtin_hardware_names()) EXPECT_FALSE(load_hardware(name).device_names.empty()) << name;
  // The field is validated like the others and round-trips.
  json j = base_json();
  EXPECT_EQ(j["device_names"], json::array({"H100"}));
  j["device_names"] = "H100";
  expect_input_error([&] { hardware_from_json(j); }, "device_names", "array of strings");
  j["device_names"] = {"H100", ""};
  expect_input_error([&] { hardware_from_json(j); }, "device_names[1]", "would match every device");
  j["device_names"] = {"H100", 7};
  expect_input_error([&] { hardware_from_json(j); }, "device_names[1]");
  j.erase("device_names");
  EXPECT_TRUE(hardware_from_json(j).device_names.empty());
}

TEST(Hardware, SourcesAreAcceptedAndIgnored) {
  json j = base_json();
  j["sources"] = {{"nvlink.bandwidth_GBps", "datasheet"}};
  EXPECT_EQ(to_json(hardware_from_json(j)), base_json());
  j["sources"] = json::array();
  expect_input_error([&] { hardware_from_json(j); }, "sources");
  j["sources"] = {{"x", 3}};
  expect_input_error([&] { hardware_from_json(j); }, "sources.x");
}

TEST(Hardware, UnknownFieldsAreRejectedByName) {
  json j = base_json();
  j["bandwith_GBps"] = 3;
  expect_input_error([&] { hardware_from_json(j); }, "bandwith_GBps", "unknown field");
  j = base_json();
  j["nvlink"]["bandwidth"] = 3;
  expect_input_error([&] { hardware_from_json(j); }, "nvlink.bandwidth", "unknown field");
  j = base_json();
  j["attention"][2]["dtype"] = "bf16";
  expect_input_error([&] { hardware_from_json(j); }, "attention[2].dtype", "unknown field");
}

TEST(Hardware, RangesAreValidated) {
  json j = base_json();
  j["nvlink"]["bandwidth_GBps"] = -5;
  expect_input_error([&] { hardware_from_json(j); }, "nvlink.bandwidth_GBps", "> 0");
  j = base_json();
  j["network"]["bandwidth_GBps"] = 0;
  expect_input_error([&] { hardware_from_json(j); }, "network.bandwidth_GBps", "> 0");
  j = base_json();
  j["network"]["latency_ns"] = -1;
  expect_input_error([&] { hardware_from_json(j); }, "network.latency_ns", ">= 0");
  j = base_json();
  j["device_copy"] = {{"bandwidth_GBps", 0}, {"latency_ns", 100}};
  expect_input_error([&] { hardware_from_json(j); }, "device_copy.bandwidth_GBps", "> 0");
  j = base_json();
  j["device_copy"] = 5;
  expect_input_error([&] { hardware_from_json(j); }, "device_copy");
  j = base_json();
  j["comm_compute_interference"] = 0.9;
  expect_input_error([&] { hardware_from_json(j); }, "comm_compute_interference", "in [1, 100]");
  j = base_json();
  // A factor a fit once gave on noise: every overlapped kernel 1e15 times slower, times past 2^63 ns.
  j["comm_compute_interference"] = 1.8e15;
  expect_input_error([&] { hardware_from_json(j); }, "comm_compute_interference", "in [1, 100]");
  j = base_json();
  j["peak_tflops_bf16"] = 0;
  expect_input_error([&] { hardware_from_json(j); }, "peak_tflops_bf16");
  j = base_json();
  j["nics_per_node"] = 0;
  expect_input_error([&] { hardware_from_json(j); }, "nics_per_node");
  j = base_json();
  j["gpus_per_node"] = 2.5;
  expect_input_error([&] { hardware_from_json(j); }, "gpus_per_node", "not an integer");
  j = base_json();
  j["memory_bytes"] = "80GB";
  expect_input_error([&] { hardware_from_json(j); }, "memory_bytes", "expected an integer");
  j = base_json();
  j.erase("launch_latency_ns");
  expect_input_error([&] { hardware_from_json(j); }, "launch_latency_ns", "missing");
  j = base_json();
  j["attention"] = json::array();
  expect_input_error([&] { hardware_from_json(j); }, "attention");
}

TEST(Hardware, RateTablesAreValidated) {
  json j = base_json();
  j["attention"][0]["q_tokens"][1] = 64;
  expect_input_error([&] { hardware_from_json(j); }, "attention[0].q_tokens[1]", "ascending");
  j = base_json();
  j["attention"][1]["tflops"][3].erase(0);
  expect_input_error([&] { hardware_from_json(j); }, "attention[1].tflops[3]", "rectangular");
  j = base_json();
  j["attention"][1]["tflops"].erase(0);
  expect_input_error([&] { hardware_from_json(j); }, "attention[1].tflops", "rows");
  j = base_json();
  j["attention"][0]["tflops"][2][4] = 1200.0;  // > 1.05 x 989.4
  expect_input_error([&] { hardware_from_json(j); }, "attention[0].tflops[2][4]", "peak");
  j = base_json();
  j["attention"][0]["tflops"][2][4] = -1.0;
  expect_input_error([&] { hardware_from_json(j); }, "attention[0].tflops[2][4]", "> 0");
  j = base_json();
  j["attention"][0]["pass"] = "forward";
  expect_input_error([&] { hardware_from_json(j); }, "attention[0].pass", "fwd, bwd");
  j = base_json();
  j["attention"][0]["mask"] = "sliding";
  expect_input_error([&] { hardware_from_json(j); }, "attention[0].mask", "full, causal");
  j = base_json();
  j["attention"].push_back(j["attention"][0]);
  expect_input_error([&] { hardware_from_json(j); }, "attention[8]", "duplicate");
}

RateTable table_2x2() {
  RateTable t;
  t.pass = "fwd";
  t.mask = "full";
  t.head_dim = 128;
  t.q_tokens = {1024, 4096};
  t.kv_tokens = {1024, 4096};
  t.tflops = {{100, 200}, {300, 400}};
  return t;
}

TEST(Hardware, InterpolationIsBilinearInLog2AndClamped) {
  HardwareProfile hw;
  hw.name = "t";
  hw.attention = {table_2x2()};
  // Exact at grid points.
  EXPECT_EQ(hw.attention_tflops(false, false, 128, 1024, 1024), 100.0);
  EXPECT_EQ(hw.attention_tflops(false, false, 128, 1024, 4096), 200.0);
  EXPECT_EQ(hw.attention_tflops(false, false, 128, 4096, 1024), 300.0);
  EXPECT_EQ(hw.attention_tflops(false, false, 128, 4096, 4096), 400.0);
  // 2048 is half way in log2 between 1024 and 4096.
  EXPECT_DOUBLE_EQ(hw.attention_tflops(false, false, 128, 2048, 1024), 200.0);
  EXPECT_DOUBLE_EQ(hw.attention_tflops(false, false, 128, 1024, 2048), 150.0);
  EXPECT_DOUBLE_EQ(hw.attention_tflops(false, false, 128, 2048, 2048), 250.0);
  EXPECT_DOUBLE_EQ(hw.attention_tflops(false, false, 128, 4096, 2048), 350.0);
  // A quarter of the way: 1024·2^(0.5) ≈ 1448 is not a power of two; use the exact log2 weight.
  const double w = (std::log2(1448.0) - 10.0) / 2.0;
  EXPECT_NEAR(hw.attention_tflops(false, false, 128, 1448, 1024), 100 + w * 200, 1e-9);
  // Clamped outside the grid.
  EXPECT_EQ(hw.attention_tflops(false, false, 128, 16, 1 << 20), 200.0);
  EXPECT_EQ(hw.attention_tflops(false, false, 128, 1 << 20, 16), 300.0);
}

TEST(Hardware, MissingHeadDimIsAnErrorNamingTheAvailableOnes) {
  HardwareProfile hw;
  hw.name = "t";
  RateTable a = table_2x2(), b = table_2x2();
  b.head_dim = 64;
  hw.attention = {a, b};
  expect_input_error([&] { hw.attention_tflops(false, false, 96, 1024, 1024); }, "head_dim", "64, 128");
  expect_input_error([&] { hw.attention_tflops(true, false, 128, 1024, 1024); }, "head_dim", "none");
}

TEST(Hardware, LoadFromFile) {
  const std::string path = temp_path("ok.json");
  json j = base_json();
  j["name"] = "my-cluster";
  j["network"]["bandwidth_GBps"] = 25.0;
  std::ofstream(path) << j.dump(2);
  const HardwareProfile hw = load_hardware(path);
  EXPECT_EQ(hw.name, "my-cluster");
  EXPECT_EQ(hw.network.bandwidth_GBps, 25.0);
  std::remove(path.c_str());
}

TEST(Hardware, FileErrorsNameTheFile) {
  const std::string bad = temp_path("malformed.json");
  std::ofstream(bad) << "{\n  \"name\": \"x\",\n  \"gpus_per_node\": 8,,\n}";
  try {
    load_hardware(bad);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(bad), std::string::npos) << what;
    EXPECT_NE(what.find("malformed JSON"), std::string::npos) << what;
    EXPECT_NE(what.find("line 3"), std::string::npos) << what;
  }
  std::remove(bad.c_str());

  const std::string invalid = temp_path("invalid.json");
  json j = base_json();
  j["nvlink"]["bandwidth_GBps"] = -1;
  std::ofstream(invalid) << j.dump();
  try {
    load_hardware(invalid);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "nvlink.bandwidth_GBps");
    EXPECT_NE(std::string(e.what()).find(invalid), std::string::npos) << e.what();
  }
  std::remove(invalid.c_str());
}

TEST(Hardware, UnknownNameListsTheBuiltins) {
  expect_input_error([] { load_hardware("h100-sxm5-typo"); }, "hardware", "h100-sxm, h200-sxm");
}

}  // namespace
}  // namespace cpscope

namespace cpscope {
namespace {

// device_copy (a transfer within one GPU) is optional: unset, it is a copy at the HBM bandwidth (each byte
// read and written) started like a kernel; set, it is written back and read again.
TEST(Hardware, DeviceCopyDefaultsFromMemoryBandwidth) {
  const HardwareProfile& h100 = default_hardware();
  EXPECT_EQ(h100.device_copy.bandwidth_GBps, 0.0);
  EXPECT_EQ(h100.device_copy_link().bandwidth_GBps, h100.memory_bandwidth_GBps / 2);
  EXPECT_EQ(h100.device_copy_link().latency_ns, h100.launch_latency_ns);
  EXPECT_FALSE(to_json(h100).contains("device_copy"));
  HardwareProfile hw = h100;
  hw.device_copy = {1234.5, 6789};
  const HardwareProfile back = hardware_from_json(to_json(hw));
  EXPECT_EQ(back.device_copy_link().bandwidth_GBps, 1234.5);
  EXPECT_EQ(back.device_copy_link().latency_ns, 6789);
}

}  // namespace
}  // namespace cpscope
