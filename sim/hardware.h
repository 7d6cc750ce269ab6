// HardwareProfile: what a node of GPUs can do, as the cost model needs it. Loaded from
// profiles/hardware/*.json (every number with its source); the H100 SXM profile is compiled in.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "sim/units.h"

namespace cpscope {

// One row of the achieved attention rate table: for a pass and a mask, TFLOP/s achieved over a grid
// of query-block and key-block lengths (tokens). Looked up by bilinear interpolation in log2(length),
// clamped at the grid's edges.
struct RateTable {
  std::string pass;   // "fwd" | "bwd"
  std::string mask;   // "full" | "causal"
  std::int64_t head_dim = 128;
  std::vector<std::int64_t> q_tokens;        // ascending
  std::vector<std::int64_t> kv_tokens;       // ascending
  std::vector<std::vector<double>> tflops;   // [q][kv]
};

struct LinkClass {
  double bandwidth_GBps = 0;   // per GPU, per direction (GB = 1e9 bytes)
  Nanos latency_ns = 0;        // per message
};

// The largest comm_compute_interference a profile may hold: beyond it a kernel would run at under 1% of its
// rate beside a transfer, which no GPU does (and simulated times would leave 64-bit nanoseconds).
inline constexpr double kMaxInterference = 100.0;

struct HardwareProfile {
  std::string name;            // "h100-sxm"
  std::string description;
  // Substrings of the CUDA device name (cudaDeviceProp::name, e.g. "NVIDIA H200") of the cards this profile
  // describes: how `--base auto` picks a built-in profile for measured runs (builtin_hardware_for_device).
  std::vector<std::string> device_names;
  std::int64_t gpus_per_node = 8;
  Bytes memory_bytes = 0;      // HBM capacity per GPU
  double peak_tflops_bf16 = 0; // dense, for reference and as an upper bound
  double memory_bandwidth_GBps = 0;  // achieved HBM bandwidth (DkvAdd, Layout ops)
  Nanos launch_latency_ns = 0; // per attention / elementwise kernel
  LinkClass nvlink;            // intra-node, through NVSwitch (full bisection)
  LinkClass network;           // inter-node, per NIC
  // A transfer that stays on one GPU: the loopback transport's copies between virtual ranks, NCCL sending
  // to itself in replay. Not a link: calibration fits it from such runs so that nvlink and network keep
  // describing real links. Unset (bandwidth 0): device_copy_link() derives it.
  LinkClass device_copy;
  std::int64_t nics_per_node = 8;
  // A communication kernel running beside an attention kernel slows it by this factor (in [1, kMaxInterference]).
  double comm_compute_interference = 1.0;
  std::vector<RateTable> attention;

  // device_copy when set; otherwise a copy that reads and writes each byte once at the achieved HBM bandwidth
  // (memory_bandwidth_GBps / 2), started like a kernel (launch_latency_ns).
  LinkClass device_copy_link() const {
    return device_copy.bandwidth_GBps > 0 ? device_copy : LinkClass{memory_bandwidth_GBps / 2, launch_latency_ns};
  }

  // Achieved TFLOP/s for a block; throws InputError if no table covers pass/mask/head_dim.
  double attention_tflops(bool backward, bool causal, std::int64_t head_dim, std::int64_t q_len,
                          std::int64_t kv_len) const;
};

// Parses and validates a profile; InputError names the field (e.g. "nvlink.bandwidth_GBps").
HardwareProfile hardware_from_json(const nlohmann::json&);
// Loads a JSON file path, or a built-in name: every profiles/hardware/*.json is compiled in under its
// "name" (h100-sxm, h200-sxm, a100-sxm-80gb, h800-sxm, b200); h100-sxm is the default.
HardwareProfile load_hardware(const std::string& name_or_path);
// The compiled-in default (H100 SXM, 8 per node, NVLink 4 + 8x400G InfiniBand).
const HardwareProfile& default_hardware();
std::vector<std::string> builtin_hardware_names();
// The built-in profile for a measured device name: the one with the longest device_names entry inside `device_name`
// (case-insensitive), so "NVIDIA H200" gives h200-sxm. Empty when none matches.
std::string builtin_hardware_for_device(const std::string& device_name);
nlohmann::json to_json(const HardwareProfile&);

}  // namespace cpscope
