// Tests for sim/cost: exact op times from a hand-made profile with round numbers.
#include "sim/cost.h"

#include <gtest/gtest.h>

#include "sim/error.h"
#include "tests/sim/unit_hw.h"

namespace cpscope {
namespace {

// The round-number profile of tests/sim/unit_hw.h, HBM 2 GB/s.
HardwareProfile unit_hw() { return test_util::unit_hw(2.0); }

Op attend(Flops flops, std::int64_t q = 1024, std::int64_t kv = 1024, OpKind kind = OpKind::Attend) {
  Op op;
  op.kind = kind;
  op.flops = flops;
  op.attn.q_len = q;
  op.attn.kv_len = kv;
  op.attn.mask = AttnMask::Full;
  return op;
}

Op collective(OpKind kind, Bytes per_peer) {
  Op op;
  op.kind = kind;
  op.bytes_per_peer = per_peer;
  op.group = 0;
  return op;
}

TEST(Cost, AttentionIsFlopsOverRatePlusLaunch) {
  HardwareProfile hw = unit_hw();
  Workload w;
  const CostModel cost(hw, w);
  EXPECT_EQ(cost.compute_ns(attend(1'000'000)), 1000);
  EXPECT_EQ(cost.compute_ns(attend(1'000'000, 1024, 1024, OpKind::AttendBwd)), 1000);
  EXPECT_EQ(cost.compute_ns(attend(1001)), 2);  // 1.001 ns rounds up
  EXPECT_EQ(cost.compute_ns(attend(0)), 0);
  hw.launch_latency_ns = 500;
  EXPECT_EQ(cost.compute_ns(attend(1'000'000)), 1500);
  EXPECT_EQ(cost.compute_ns(attend(0)), 500);
}

TEST(Cost, AttentionUsesTheBlockShapeRate) {
  HardwareProfile hw = unit_hw();
  hw.attention[0] = RateTable{"fwd", "full", 128, {1024, 4096}, {1024, 4096}, {{100, 200}, {300, 400}}};
  Workload w;
  const CostModel cost(hw, w);
  // 2048x1024 is half way between 100 and 300 TFLOP/s: 3e8 FLOPs / 200e12 FLOP/s = 1500 ns.
  EXPECT_EQ(cost.compute_ns(attend(300'000'000, 2048, 1024)), 1500);
  EXPECT_EQ(cost.compute_ns(attend(400'000'000, 4096, 4096)), 1000);
  // Causal blocks use the causal table (1 TFLOP/s here).
  Op causal = attend(1'000'000, 4096, 4096);
  causal.attn.mask = AttnMask::Causal;
  EXPECT_EQ(cost.compute_ns(causal), 1000);
}

TEST(Cost, AttentionNeedsATableForTheHeadDim) {
  const HardwareProfile hw = unit_hw();
  Workload w;
  w.head_dim = 96;
  const CostModel cost(hw, w);
  try {
    cost.compute_ns(attend(1000));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "head_dim");
    EXPECT_NE(std::string(e.what()).find("96"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("128"), std::string::npos);
  }
}

TEST(Cost, MemoryOpsAreBytesOverHbmBandwidth) {
  HardwareProfile hw = unit_hw();
  hw.launch_latency_ns = 300;
  Workload w;
  const CostModel cost(hw, w);
  Op add;
  add.kind = OpKind::DkvAdd;
  add.bytes = 1'000'000;
  EXPECT_EQ(cost.compute_ns(add), 300 + 500'000);
  add.kind = OpKind::Layout;
  EXPECT_EQ(cost.compute_ns(add), 300 + 500'000);
  // The fills the runtime makes before an op (Op::fills): a launch each + their bytes at HBM bandwidth.
  add.fills = 2;
  add.fill_bytes = 4'000'000;
  EXPECT_EQ(cost.compute_ns(add), 300 + 500'000 + 2 * 300 + 2'000'000);
  Op sr;
  sr.kind = OpKind::SendRecv;
  EXPECT_THROW(cost.compute_ns(sr), InternalError);
}

TEST(Cost, TransferIsLatencyPlusBytesOverBandwidth) {
  const HardwareProfile hw = unit_hw();
  Workload w;
  const CostModel cost(hw, w);
  EXPECT_EQ(cost.transfer_ns(1'000'000, false), 1000 + 1'000'000);
  EXPECT_EQ(cost.transfer_ns(1'000'000, true), 2000 + 2'000'000);
  EXPECT_EQ(cost.transfer_ns(1'000'000, false, 0.5), 1000 + 2'000'000);
  EXPECT_EQ(cost.transfer_ns(0, false), 1000);
}

TEST(Cost, RingCollectivesWithinANode) {
  const HardwareProfile hw = unit_hw();
  Workload w;
  const CostModel cost(hw, w);
  // 4 ranks, 1 MB per rank: 3 steps of 1 us latency + 1 MB at 1 GB/s.
  for (OpKind k : {OpKind::AllGather, OpKind::ReduceScatter}) {
    EXPECT_EQ(cost.collective_ns(collective(k, 1'000'000), 4, false, 1.0), 3 * 1000 + 3'000'000);
    GroupPlacement p{4, 1, 4, 4};
    EXPECT_EQ(cost.collective_ns(collective(k, 1'000'000), p, 1.0), 3 * 1000 + 3'000'000);
  }
  // Without bytes_per_peer the per-peer size is bytes / (n - 1).
  Op op = collective(OpKind::AllGather, 0);
  op.bytes = 3'000'000;
  EXPECT_EQ(cost.collective_ns(op, 4, false, 1.0), 3 * 1000 + 3'000'000);
  EXPECT_EQ(cost.collective_ns(op, 1, false, 1.0), hw.launch_latency_ns);
}

TEST(Cost, RingCollectivesAcrossNodes) {
  const HardwareProfile hw = unit_hw();
  Workload w;
  const CostModel cost(hw, w);
  const Op ag = collective(OpKind::AllGather, 1'000'000);
  // 2 nodes x 2 ranks, 2 NICs each: node NIC bandwidth 2 x 0.5 = 1 GB/s = NVLink, so the bus is 1 GB/s.
  EXPECT_EQ(cost.collective_ns(ag, GroupPlacement{4, 2, 2, 2}, 1.0), 3 * 2000 + 3'000'000);
  // Another group on the same NICs halves it.
  EXPECT_EQ(cost.collective_ns(ag, GroupPlacement{4, 2, 2, 2}, 2.0), 3 * 2000 + 6'000'000);
  // One rank per node: one NIC.
  EXPECT_EQ(cost.collective_ns(ag, GroupPlacement{4, 4, 1, 1}, 1.0), 3 * 2000 + 6'000'000);
  // Packed placement from the simple overload: 16 ranks on 8-GPU nodes use 8 NICs (4 GB/s), NVLink bound.
  EXPECT_EQ(cost.collective_ns(ag, 16, true, 1.0), 15 * 2000 + 15'000'000);
}

TEST(Cost, AllToAll) {
  const HardwareProfile hw = unit_hw();
  Workload w;
  const CostModel cost(hw, w);
  const Op a2a = collective(OpKind::AllToAll, 1'000'000);
  // Intra-node: 3 peers x 1 MB through the sender's NVLink egress.
  EXPECT_EQ(cost.collective_ns(a2a, GroupPlacement{4, 1, 4, 4}, 1.0), 1000 + 3'000'000);
  // 2 nodes x 2: intra 1 MB over NVLink; each node sends 2 ranks x 2 remote peers x 1 MB over
  // 2 NICs x 0.5 GB/s = 4 ms, the bottleneck.
  EXPECT_EQ(cost.collective_ns(a2a, GroupPlacement{4, 2, 2, 2}, 1.0), 2000 + 4'000'000);
}

TEST(Cost, StagingIsACopyPerRegionAtHbmBandwidth) {
  HardwareProfile hw = unit_hw();
  hw.launch_latency_ns = 300;
  Workload w;
  const CostModel cost(hw, w);
  Op a2a = collective(OpKind::AllToAll, 1'000'000);
  EXPECT_EQ(cost.staging_ns(transport_staging(a2a, 4, false)), 0);
  a2a.staged_send = a2a.staged_recv = 4'000'000;  // 4 parts packed and 4 unpacked, one region each
  a2a.staged_copies = 8;
  EXPECT_EQ(cost.staging_ns(transport_staging(a2a, 4, false)), 8 * 300 + 4'000'000);
  // The transfer itself is unchanged: the engine adds the copies where a rank has its GPU alone.
  EXPECT_EQ(cost.collective_ns(a2a, GroupPlacement{4, 1, 4, 4}, 1.0), 1000 + 3'000'000);
}

TEST(Cost, NicOfLocalGpu) {
  HardwareProfile hw = unit_hw();
  Workload w;
  w.gpus_per_node = 8;
  {
    const CostModel cost(hw, w);
    for (int g = 0; g < 8; ++g) EXPECT_EQ(cost.nic_of_local_gpu(g), g);
  }
  hw.nics_per_node = 4;
  {
    const CostModel cost(hw, w);
    EXPECT_EQ(cost.nic_of_local_gpu(0), 0);
    EXPECT_EQ(cost.nic_of_local_gpu(1), 0);
    EXPECT_EQ(cost.nic_of_local_gpu(2), 1);
    EXPECT_EQ(cost.nic_of_local_gpu(7), 3);
  }
}

TEST(Cost, BuiltinProfileGivesPlausibleAttentionTimes) {
  // Llama-3-8B-like block on H100: 32 heads, D=128, 8192x8192 full block, forward.
  const HardwareProfile& hw = default_hardware();
  Workload w;
  const CostModel cost(hw, w);
  const Flops flops = 4LL * 32 * 128 * 8192 * 8192;
  const Nanos ns = cost.compute_ns(attend(flops, 8192, 8192));
  const double tflops = static_cast<double>(flops) / static_cast<double>(ns - hw.launch_latency_ns) / 1e3;
  EXPECT_GT(tflops, 500.0);
  EXPECT_LT(tflops, 700.0);
}

}  // namespace
}  // namespace cpscope
