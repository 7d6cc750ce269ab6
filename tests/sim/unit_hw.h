// Test helper for sim/: a hardware profile with round numbers, so op times can be checked exactly.
#pragma once

#include "sim/hardware.h"
#include "sim/units.h"

namespace cpscope::test_util {

// 1 TFLOP/s attention (1000 FLOPs per ns), NVLink 1 GB/s (1 byte per ns) with 1 us latency, network
// 0.5 GB/s with 2 us latency, HBM `memory_GBps`, no launch latency, no interference.
inline HardwareProfile unit_hw(double memory_GBps) {
  HardwareProfile hw;
  hw.name = "unit";
  hw.gpus_per_node = 8;
  hw.memory_bytes = 80 * kGiB;
  hw.peak_tflops_bf16 = 1000;
  hw.memory_bandwidth_GBps = memory_GBps;
  hw.launch_latency_ns = 0;
  hw.nvlink = {1.0, 1000};
  hw.network = {0.5, 2000};
  hw.nics_per_node = 8;
  hw.comm_compute_interference = 1.0;
  for (const char* pass : {"fwd", "bwd"})
    for (const char* mask : {"full", "causal"})
      hw.attention.push_back(RateTable{pass, mask, 128, {1024}, {1024}, {{1.0}}});
  return hw;
}

}  // namespace cpscope::test_util
