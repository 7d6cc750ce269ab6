// Tests for sim/engine: exact simulated times on hand-built schedules with round-number hardware.
#include "sim/engine.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "sim/cost.h"
#include "sim/engine_queue.h"
#include "sim/error.h"
#include "sim/schedule.h"
#include "tests/sim/unit_hw.h"

namespace cpscope {
namespace {

// The round-number profile of tests/sim/unit_hw.h, HBM 1 GB/s.
HardwareProfile unit_hw() { return test_util::unit_hw(1.0); }

constexpr std::uint8_t kCompute = 0, kComm = 1, kComm2 = 2;

// Builds a Schedule by hand: ops are appended per rank in issue order.
struct Builder {
  Schedule s;
  explicit Builder(std::int32_t n, std::int64_t gpus_per_node = 8) {
    s.workload.cp = n;
    s.workload.gpus_per_node = gpus_per_node;
    s.workload.head_dim = 128;
    s.streams = {"compute", "comm", "comm2"};
    s.ranks.resize(static_cast<std::size_t>(n));
    for (std::int32_t r = 0; r < n; ++r) s.ranks[r].rank = r;
  }
  std::int32_t add(std::int32_t rank, Op op) {
    auto& ops = s.ranks[rank].ops;
    op.id = static_cast<std::int32_t>(ops.size());
    ops.push_back(op);
    return op.id;
  }
  std::int32_t event(std::int32_t rank) { return s.ranks[rank].num_events++; }
  // A compute op of `ns` nanoseconds at 1 TFLOP/s.
  std::int32_t attend(std::int32_t rank, Nanos ns, std::int32_t step = 0, std::int32_t wait = kNoEvent,
                      std::int32_t record = kNoEvent, std::uint8_t stream = kCompute) {
    Op op;
    op.kind = OpKind::Attend;
    op.step = step;
    op.stream = stream;
    op.flops = ns * 1000;
    op.attn.q_len = 1024;
    op.attn.kv_len = 1024;
    op.attn.mask = AttnMask::Full;
    op.wait[0] = wait;
    op.record = record;
    return add(rank, op);
  }
  std::int32_t sendrecv(std::int32_t rank, std::int32_t to, std::int32_t from, Bytes bytes, std::int32_t step = 0,
                        std::int32_t wait = kNoEvent, std::int32_t record = kNoEvent, std::uint8_t stream = kComm,
                        std::uint8_t channel = 0) {
    Op op;
    op.kind = OpKind::SendRecv;
    op.step = step;
    op.stream = stream;
    op.send.peer = to;
    op.send.bytes = to >= 0 ? bytes : 0;
    op.send.channel = channel;
    op.recv.peer = from;
    op.recv.bytes = from >= 0 ? bytes : 0;
    op.recv.channel = channel;
    op.bytes = op.send.bytes;
    op.wait[0] = wait;
    op.record = record;
    return add(rank, op);
  }
  std::int32_t group(std::vector<std::int32_t> members) {
    s.groups.push_back(std::move(members));
    return static_cast<std::int32_t>(s.groups.size()) - 1;
  }
  std::int32_t collective(std::int32_t rank, OpKind kind, std::int32_t group, Bytes per_peer,
                          std::uint8_t stream = kComm) {
    Op op;
    op.kind = kind;
    op.stream = stream;
    op.group = group;
    op.bytes_per_peer = per_peer;
    op.bytes = per_peer * static_cast<Bytes>(s.groups[group].size() - 1);
    return add(rank, op);
  }
};

// The interval of (rank, op id).
const Interval& find(const SimResult& r, std::int32_t rank, std::int64_t op) {
  for (const auto& iv : r.timeline.intervals)
    if (iv.rank == rank && iv.op_id == op) return iv;
  throw std::runtime_error("no interval for rank " + std::to_string(rank) + " op " + std::to_string(op));
}

// A double-buffered ring: at step i every rank attends the block it holds (compute stream) while the
// comm stream passes it on to r+1 and receives the next from r-1. Attention of step i waits for the
// receive of step i-1; the send of step i waits until the attention of step i-1 freed the slot.
Schedule ring(std::int32_t n, Nanos compute_ns, Bytes bytes, std::int64_t gpus_per_node = 8) {
  Builder b(n, gpus_per_node);
  for (std::int32_t r = 0; r < n; ++r) {
    std::int32_t recv_ev = kNoEvent, free_ev = kNoEvent;
    for (std::int32_t i = 0; i < n; ++i) {
      const std::int32_t attended = b.event(r);
      b.attend(r, compute_ns, i, recv_ev, attended);
      if (i + 1 < n) {
        recv_ev = b.event(r);
        b.sendrecv(r, (r + 1) % n, (r + n - 1) % n, bytes, i, free_ev, recv_ev);
      }
      free_ev = attended;
    }
  }
  return b.s;
}

TEST(Engine, TwoRankExchangeIsLatencyPlusBytesOverBandwidth) {
  Builder b(2);
  b.sendrecv(0, 1, 1, 1'000'000);
  b.sendrecv(1, 0, 0, 1'000'000);
  const SimResult r = simulate(b.s, unit_hw());
  EXPECT_EQ(find(r, 0, 0).start, 0);
  EXPECT_EQ(find(r, 0, 0).end, 1000 + 1'000'000);
  EXPECT_EQ(find(r, 1, 0).end, 1000 + 1'000'000);
  EXPECT_EQ(r.stats.makespan, 1'001'000);
  EXPECT_EQ(r.stats.ops_executed, 2);
  EXPECT_EQ(r.rank_end, (std::vector<Nanos>{1'001'000, 1'001'000}));
}

TEST(Engine, TransferStartsWhenTheReceiverHasStarted) {
  Builder b(2);
  b.sendrecv(0, 1, -1, 1'000'000);                 // send only, at t=0
  const std::int32_t ev = b.event(1);
  b.attend(1, 5000, 0, kNoEvent, ev);               // rank 1 computes 5 us first
  b.sendrecv(1, -1, 0, 1'000'000, 0, ev);           // then receives
  const SimResult r = simulate(b.s, unit_hw());
  EXPECT_EQ(find(r, 0, 0).start, 0);
  EXPECT_EQ(find(r, 0, 0).end, 5000 + 1000 + 1'000'000);
  EXPECT_EQ(find(r, 1, 1).start, 5000);
  EXPECT_EQ(find(r, 1, 1).end, 5000 + 1000 + 1'000'000);
}

TEST(Engine, InterNodeTransfersUseTheNetwork) {
  Builder b(4, /*gpus_per_node=*/2);  // ranks 0,1 on node 0; 2,3 on node 1
  b.sendrecv(1, 2, -1, 1'000'000);
  b.sendrecv(2, -1, 1, 1'000'000);
  b.sendrecv(0, 1, -1, 1'000'000, 0, kNoEvent, kNoEvent, kComm2);
  b.sendrecv(1, -1, 0, 1'000'000, 0, kNoEvent, kNoEvent, kComm2);
  const SimResult r = simulate(b.s, unit_hw());
  EXPECT_EQ(find(r, 1, 0).end, 2000 + 2'000'000);  // 0.5 GB/s, 2 us
  EXPECT_EQ(find(r, 0, 0).end, 1000 + 1'000'000);  // NVLink
}

TEST(Engine, OtherGroupsBehindTheSameNicShareIt) {
  // TpInner with tp=2 on 2-GPU nodes with one NIC: CP rank r is GPU 0 of node r, and GPU 1 (the other
  // TP rank's CP group, sending the same traffic) shares the NIC: half of 0.5 GB/s.
  Builder b(2, 2);
  b.s.workload.placement = Placement::TpInner;
  b.s.workload.tp = 2;
  b.sendrecv(0, 1, -1, 1'000'000);
  b.sendrecv(1, -1, 0, 1'000'000);
  HardwareProfile hw = unit_hw();
  hw.nics_per_node = 1;
  EXPECT_EQ(simulate(b.s, hw).stats.makespan, 2000 + 4'000'000);
  // With a NIC per GPU the groups do not share.
  hw.nics_per_node = 2;
  EXPECT_EQ(simulate(b.s, hw).stats.makespan, 2000 + 2'000'000);
}

TEST(Engine, RingComputeBoundHidesCommunication) {
  const std::int32_t n = 4;
  const Nanos c = 3'000'000;
  const SimResult r = simulate(ring(n, c, 1'000'000), unit_hw());
  EXPECT_EQ(r.stats.makespan, n * c);  // every transfer (1.001 ms) finishes under a step's compute
  for (std::int32_t rank = 0; rank < n; ++rank) EXPECT_EQ(r.rank_end[rank], n * c);
}

TEST(Engine, RingCommBoundIsTheSumOfTransfers) {
  const std::int32_t n = 4;
  const Nanos c = 1000, t = 1000 + 1'000'000;
  const SimResult r = simulate(ring(n, c, 1'000'000), unit_hw());
  // Step i's attention waits for the (i-1)-th transfer; transfers run back to back.
  EXPECT_EQ(r.stats.makespan, (n - 1) * t + c);
  EXPECT_EQ(find(r, 2, 2).start, t);  // op 2 = attention of step 1
}

TEST(Engine, RingAcrossNodesIsBoundByTheSlowestLink) {
  // 4 ranks on 2-GPU nodes: transfers 1->2 and 3->0 cross nodes (2 us + 2 ms), the others 1.001 ms.
  const std::int32_t n = 4;
  const Nanos c = 1000, slow = 2000 + 2'000'000;
  const SimResult r = simulate(ring(n, c, 1'000'000, 2), unit_hw());
  EXPECT_EQ(r.stats.makespan, (n - 1) * slow + c);
}

TEST(Engine, TwoFlowsOnOneEgressShareIt) {
  Builder b(3);
  b.sendrecv(0, 1, -1, 1'000'000, 0, kNoEvent, kNoEvent, kComm);
  b.sendrecv(0, 2, -1, 1'000'000, 0, kNoEvent, kNoEvent, kComm2);
  b.sendrecv(1, -1, 0, 1'000'000);
  b.sendrecv(2, -1, 0, 1'000'000);
  const SimResult r = simulate(b.s, unit_hw());
  EXPECT_EQ(find(r, 0, 0).end, 1000 + 2'000'000);  // twice as long as alone
  EXPECT_EQ(find(r, 0, 1).end, 1000 + 2'000'000);
}

TEST(Engine, FlowSpeedsUpWhenItsNeighbourEnds) {
  Builder b(3);
  b.sendrecv(0, 1, -1, 1'000'000, 0, kNoEvent, kNoEvent, kComm);
  b.sendrecv(0, 2, -1, 500'000, 0, kNoEvent, kNoEvent, kComm2);
  b.sendrecv(1, -1, 0, 1'000'000);
  b.sendrecv(2, -1, 0, 500'000);
  const SimResult r = simulate(b.s, unit_hw());
  // Both flow at 0.5 B/ns from t=1000; the short one ends after 1 ms, then the long one has 500 KB left
  // at the full 1 B/ns.
  EXPECT_EQ(find(r, 0, 1).end, 1000 + 1'000'000);
  EXPECT_EQ(find(r, 0, 0).end, 1000 + 1'000'000 + 500'000);
  EXPECT_EQ(find(r, 2, 0).end, 1000 + 1'000'000);
}

// A flow that begins with its resources free is registered ahead of its latency (engine.cc,
// begin_transfer()); one that arrives later must see it as flowing from the end of its latency.
TEST(Engine, FlowArrivingAfterAnothersLatencySharesFromThen) {
  Builder b(3);
  const std::int32_t ready = b.event(0);
  b.attend(0, 500, 0, kNoEvent, ready);
  b.sendrecv(0, 1, -1, 1'000'000, 0, kNoEvent, kNoEvent, kComm);       // begins at 0, flows from 1000
  b.sendrecv(0, 2, -1, 1'000'000, 0, ready, kNoEvent, kComm2);         // begins at 500, flows from 1500
  b.sendrecv(1, -1, 0, 1'000'000);
  b.sendrecv(2, -1, 0, 1'000'000);
  const SimResult r = simulate(b.s, unit_hw());
  // The first alone for 500 ns (500 B), then both at 0.5 B/ns: it ends after 2 x 999,500 ns more,
  // and the second has 500 B left at the full rate.
  EXPECT_EQ(find(r, 0, 1).end, 1500 + 1'999'000);
  EXPECT_EQ(find(r, 0, 2).end, 1500 + 1'999'000 + 500);
}

// ... and one registered ahead whose latency has not ended when another starts flowing does not
// share yet: it joins when its latency ends.
TEST(Engine, FlowStillInItsLatencyDoesNotShareYet) {
  Builder b(4);
  const std::int32_t ready = b.event(0);
  b.attend(0, 500, 0, kNoEvent, ready);
  b.sendrecv(0, 1, -1, 100, 0, kNoEvent, kNoEvent, kComm);              // flows [1000, 1100)
  b.sendrecv(0, 3, -1, 1'000'000, 0, kNoEvent, kNoEvent, kComm);        // begins at 1100, alone
  b.sendrecv(0, 2, -1, 1'000'000, 0, ready, kNoEvent, kComm2);          // begins at 500, flows from 1500
  b.sendrecv(1, -1, 0, 100);
  b.sendrecv(2, -1, 0, 1'000'000);
  b.sendrecv(3, -1, 0, 1'000'000);
  const SimResult r = simulate(b.s, unit_hw());
  EXPECT_EQ(find(r, 0, 1).end, 1100);
  // The one to rank 2 alone over [1500, 2100) (600 B), then both at 0.5 B/ns until it ends; the one
  // to rank 3 then has 600 B left at the full rate.
  EXPECT_EQ(find(r, 0, 3).end, 2100 + 1'998'800);
  EXPECT_EQ(find(r, 0, 2).end, 2100 + 1'998'800 + 600);
}

TEST(Engine, TwoFlowsIntoOneIngressShareIt) {
  Builder b(3);
  b.sendrecv(1, 0, -1, 1'000'000);
  b.sendrecv(2, 0, -1, 1'000'000);
  b.sendrecv(0, -1, 1, 1'000'000, 0, kNoEvent, kNoEvent, kComm);
  b.sendrecv(0, -1, 2, 1'000'000, 0, kNoEvent, kNoEvent, kComm2);
  const SimResult r = simulate(b.s, unit_hw());
  EXPECT_EQ(r.stats.makespan, 1000 + 2'000'000);
}

TEST(Engine, ComputeIsSlowedWhileCommunicationRuns) {
  Builder b(2);
  b.attend(0, 10'000);
  b.sendrecv(0, 1, -1, 3000);  // 1 us + 3 us: comm active on rank 0 during [0, 4000)
  b.sendrecv(1, -1, 0, 3000);
  HardwareProfile hw = unit_hw();
  hw.comm_compute_interference = 2.0;
  const SimResult r = simulate(b.s, hw);
  // [0, 4000): half rate, 2000 ns of work done; the remaining 8000 at full rate.
  EXPECT_EQ(find(r, 0, 1).end, 4000);
  EXPECT_EQ(find(r, 0, 0).end, 12'000);
  hw.comm_compute_interference = 1.0;
  EXPECT_EQ(find(simulate(b.s, hw), 0, 0).end, 10'000);
}

TEST(Engine, ConcurrentComputeOpsShareTheGpu) {
  Builder b(1);
  b.attend(0, 1000, 0, kNoEvent, kNoEvent, kCompute);
  b.attend(0, 3000, 0, kNoEvent, kNoEvent, kComm2);
  const SimResult r = simulate(b.s, unit_hw());
  EXPECT_EQ(find(r, 0, 0).end, 2000);           // both at half rate until the first ends
  EXPECT_EQ(find(r, 0, 1).end, 2000 + 2000);   // then 2000 ns of work left at full rate
}

// Ranks sharing a device (loopback: every rank on one GPU) share its compute: two ranks' ops at once
// each run at half rate, as two streams of one rank do.
TEST(Engine, RanksOnOneDeviceShareItsCompute) {
  Builder b(2);
  b.attend(0, 1000);
  b.attend(1, 3000);
  SimOptions opt;
  const SimResult own = simulate(b.s, unit_hw(), opt);  // a GPU each
  EXPECT_EQ(find(own, 0, 0).end, 1000);
  EXPECT_EQ(find(own, 1, 0).end, 3000);
  opt.sharing = {2, 1.0};
  const SimResult shared = simulate(b.s, unit_hw(), opt);
  EXPECT_EQ(find(shared, 0, 0).end, 2000);          // both at half rate until the first ends
  EXPECT_EQ(find(shared, 1, 0).end, 2000 + 2000);   // then the rest alone
  // Two compute slots (a 2-core CPU): both at full rate.
  opt.sharing = {2, 2.0};
  EXPECT_EQ(find(simulate(b.s, unit_hw(), opt), 1, 0).end, 3000);
  // Three ops on two slots: each at 2/3 until the first (1500 ns of work) ends at 2250.
  Builder c(3);
  c.attend(0, 1500);
  c.attend(1, 3000);
  c.attend(2, 3000);
  opt.sharing = {3, 2.0};
  const SimResult three = simulate(c.s, unit_hw(), opt);
  EXPECT_EQ(find(three, 0, 0).end, 2250);
  EXPECT_EQ(find(three, 1, 0).end, 2250 + 1500);  // 1500 left each, now at full rate
  // Ranks 0-1 and 2-3 on two devices: each pair shares, the pairs do not.
  Builder d(4);
  for (std::int32_t r = 0; r < 4; ++r) d.attend(r, 1000);
  opt.sharing = {2, 1.0};
  const SimResult pairs = simulate(d.s, unit_hw(), opt);
  for (std::int32_t r = 0; r < 4; ++r) EXPECT_EQ(find(pairs, r, 0).end, 2000) << r;
}

TEST(Engine, CommunicationOfAnotherRankOnTheDeviceSlowsItsCompute) {
  Builder b(2);
  b.attend(0, 10'000);
  b.sendrecv(1, 1, 1, 3000);  // rank 1 copies to itself: 1 us + 3 us of communication on the device
  HardwareProfile hw = unit_hw();
  hw.comm_compute_interference = 2.0;
  hw.device_copy = {1.0, 1000};
  SimOptions opt;
  EXPECT_EQ(find(simulate(b.s, hw, opt), 0, 0).end, 10'000);  // rank 1's own GPU
  opt.sharing = {2, 1.0};
  EXPECT_EQ(find(simulate(b.s, hw, opt), 0, 0).end, 12'000);  // [0, 4000) at half rate
}

TEST(Engine, TransfersWithinADeviceShareItsCopyBandwidth) {
  // Ranks 0 and 1 each send 1 MB to rank 2, on separate GPUs in separate nodes (1 GPU per node): the
  // network, each flow on its own NIC but into one ingress.
  Builder b(4, 1);
  b.sendrecv(0, 2, -1, 1'000'000);
  b.sendrecv(1, 3, -1, 1'000'000);
  b.sendrecv(2, -1, 0, 1'000'000);
  b.sendrecv(3, -1, 1, 1'000'000);
  SimOptions opt;
  EXPECT_EQ(simulate(b.s, unit_hw(), opt).stats.makespan, 2000 + 2'000'000);  // 0.5 GB/s each, in parallel
  // On one device the same two transfers are copies within it: the device_copy link's latency and
  // bandwidth, one egress for both, so each flows at half of it.
  HardwareProfile hw = unit_hw();
  hw.device_copy = {2.0, 500};
  opt.sharing = {4, 1.0};
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, 500 + 1'000'000);
  // Unset, device_copy is a copy at the HBM bandwidth (1 GB/s here: each byte read and written, 0.5 GB/s)
  // started like a kernel (no launch latency here).
  EXPECT_EQ(simulate(b.s, unit_hw(), opt).stats.makespan, 4'000'000);
  // Two devices of two ranks: 0 -> 2 and 1 -> 3 cross devices, over the links as before.
  opt.sharing = {2, 1.0};
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, 2000 + 2'000'000);
}

// Replay: the one rank that runs sends to itself, so every transfer is a copy within a GPU, each rank's
// through its own device.
TEST(Engine, LocalTransfersAreDeviceCopies) {
  Builder b(2, 1);  // one GPU per node: over the network unless local
  b.sendrecv(0, 1, -1, 1'000'000);
  b.sendrecv(1, -1, 0, 1'000'000);
  HardwareProfile hw = unit_hw();
  hw.device_copy = {4.0, 300};
  SimOptions opt;
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, 2000 + 2'000'000);
  opt.sharing.local_transfers = true;
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, 300 + 250'000);
}

// Replay runs one rank alone: its transfers and collectives begin when it issues them, whatever its
// peers would be doing, and a SendRecv is one send to itself of the larger side.
TEST(Engine, LocalTransfersWaitForNoPeer) {
  Builder b(2, 1);
  const std::int32_t ready = b.event(1);
  b.sendrecv(0, 1, 1, 1'000'000);            // rank 0 exchanges at once
  b.attend(1, 5'000'000, 0, kNoEvent, ready);  // rank 1 computes first
  b.sendrecv(1, 0, 0, 1'000'000, 0, ready);
  const std::int32_t g = b.group({0, 1});
  b.collective(0, OpKind::AllGather, g, 2'000'000);  // rank 0's gather comes straight after
  b.collective(1, OpKind::AllGather, g, 2'000'000);  // rank 1's after its exchange
  HardwareProfile hw = unit_hw();
  hw.device_copy = {4.0, 300};
  SimOptions opt;
  const SimResult cluster = simulate(b.s, hw, opt);
  EXPECT_GE(find(cluster, 0, 0).end, 5'000'000);  // on a cluster rank 0 waits for rank 1's send
  opt.sharing.local_transfers = true;
  const SimResult replay = simulate(b.s, hw, opt);
  EXPECT_EQ(find(replay, 0, 0).end, 300 + 250'000);  // 1 MB to itself at 4 GB/s
  // Then its gather, not waiting: 2 MB to itself, a self-send per plane (K, V).
  EXPECT_EQ(find(replay, 0, 1).end, 300 + 250'000 + 2 * 300 + 500'000);
  EXPECT_EQ(find(replay, 1, 1).end, 5'000'000 + 300 + 250'000);

  Builder one_sided(2, 1);  // send 1 MB, receive 3 MB: replay moves the larger side once
  one_sided.sendrecv(0, 1, 1, 1'000'000);
  one_sided.s.ranks[0].ops[0].recv.bytes = 3'000'000;
  one_sided.sendrecv(1, 0, 0, 3'000'000);
  one_sided.s.ranks[1].ops[0].recv.bytes = 1'000'000;
  one_sided.s.ranks[1].ops[0].bytes = 3'000'000;
  EXPECT_EQ(simulate(one_sided.s, hw, opt).stats.makespan, 300 + 750'000);
}

// A collective none of whose bytes leave a GPU is copies within it: replay's one NCCL send to itself of the
// (n-1) chunks a rank moves, or loopback's copy per peer with every member's copies through the one device.
TEST(Engine, CollectivesThatStayOnAGpuAreDeviceCopies) {
  Builder b(3, 1);  // one GPU per node: over the network otherwise
  const std::int32_t g = b.group({0, 1, 2});
  for (std::int32_t r = 0; r < 3; ++r) b.collective(r, OpKind::AllGather, g, 1'000'000);
  HardwareProfile hw = unit_hw();
  hw.device_copy = {4.0, 300};
  SimOptions opt;
  const Nanos network = simulate(b.s, hw, opt).stats.makespan;
  EXPECT_GT(network, 2'000'000);
  opt.sharing.local_transfers = true;  // each rank on its own GPU, sending to itself: 2 MB at 4 GB/s,
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, 2 * 300 + 500'000);  // a self-send per plane (K, V)
  opt.sharing = {3, 1.0};  // all three on one GPU: 2 copies of 1 MB each, three ranks' worth through it
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, 2 * 300 + 1'500'000);
  opt.sharing = {2, 1.0};  // ranks 0 and 1 on one GPU, rank 2 on another: the group crosses a link
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, network);
}

// A collective's packing and unpacking copies (Op::staged) run on its stream where each rank has its GPU
// (a cluster, replay); loopback's ranks on one GPU copy region to region, without staging.
TEST(Engine, CollectivesPayTheirStagingCopiesWhereARankHasItsGpu) {
  Builder b(3, 1);
  const std::int32_t g = b.group({0, 1, 2});
  for (std::int32_t r = 0; r < 3; ++r) {
    Op& op = b.s.ranks[static_cast<std::size_t>(r)].ops[static_cast<std::size_t>(
        b.collective(r, OpKind::AllToAll, g, 1'000'000))];
    op.staged_send = op.staged_recv = 3'000'000;  // 3 parts each way
    op.staged_copies = 6;
  }
  HardwareProfile hw = unit_hw();  // HBM 1 GB/s
  hw.launch_latency_ns = 100;
  hw.device_copy = {4.0, 300};
  const Nanos staging = 6 * 100 + 6'000'000;
  SimOptions opt;
  const Nanos cluster = simulate(b.s, hw, opt).stats.makespan;
  Schedule plain = b.s;
  for (auto& prog : plain.ranks)
    for (Op& op : prog.ops) op.staged_send = op.staged_recv = op.staged_copies = 0;
  EXPECT_EQ(cluster, simulate(plain, hw, opt).stats.makespan + staging);
  opt.sharing.local_transfers = true;  // replay: 2 MB to itself at 4 GB/s, plus the copies
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, 300 + 500'000 + staging);
  opt.sharing = {3, 1.0};  // loopback: no staging
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, simulate(plain, hw, opt).stats.makespan);
}

// Replay's self-send brings back members-1 parts, not their sum: a reduce-scatter always unpacks its result
// there (one copy per plane), even where the IR (the nccl transport) works in place.
TEST(Engine, ReplayUnpacksEveryReduceScatter) {
  Builder b(3, 1);
  const std::int32_t g = b.group({0, 1, 2});
  for (std::int32_t r = 0; r < 3; ++r) b.collective(r, OpKind::ReduceScatter, g, 1'000'000);
  HardwareProfile hw = unit_hw();  // HBM 1 GB/s
  hw.launch_latency_ns = 100;
  hw.device_copy = {4.0, 300};
  SimOptions opt;
  opt.sharing.local_transfers = true;  // 2 MB to itself at 4 GB/s (per plane), then 1 MB unpacked in 2 copies
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, 2 * 300 + 500'000 + 2 * 100 + 1'000'000);
  opt.sharing.local_transfers = false;  // a cluster: in place
  SimOptions plain;
  EXPECT_EQ(simulate(b.s, hw, opt).stats.makespan, simulate(b.s, hw, plain).stats.makespan);
}

TEST(Engine, DeviceSharingOutOfRangeIsAnInputError) {
  Builder b(2);
  b.attend(0, 1000);
  SimOptions opt;
  for (const DeviceSharing bad : {DeviceSharing{0, 1.0}, DeviceSharing{2, 0.0}, DeviceSharing{2, std::nan("")}}) {
    opt.sharing = bad;
    EXPECT_THROW(simulate(b.s, unit_hw(), opt), InputError);
  }
}

TEST(Engine, MemoryOpsRunAtHbmBandwidth) {
  Builder b(1);
  Op add;
  add.kind = OpKind::DkvAdd;
  add.bytes = 5000;
  b.add(0, add);
  const SimResult r = simulate(b.s, unit_hw());
  EXPECT_EQ(r.timeline.intervals.at(0).end, 5000);
  EXPECT_EQ(r.timeline.intervals.at(0).kind, IntervalKind::Memory);
}

TEST(Engine, CollectiveStartsWhenTheLastMemberArrives) {
  Builder b(3);
  const std::int32_t g = b.group({0, 1, 2});
  b.collective(0, OpKind::AllGather, g, 1'000'000);
  b.collective(1, OpKind::AllGather, g, 1'000'000);
  b.attend(2, 5000, 0, kNoEvent, kNoEvent, kComm);  // rank 2 reaches its all-gather after 5 us
  b.collective(2, OpKind::AllGather, g, 1'000'000);
  const HardwareProfile hw = unit_hw();
  const SimResult r = simulate(b.s, hw);
  const Nanos ring = 2 * 1000 + 2 * 1'000'000;  // (n-1) x (latency + chunk / bandwidth)
  EXPECT_EQ(find(r, 0, 0).start, 0);
  EXPECT_EQ(find(r, 0, 0).end, 5000 + ring);
  EXPECT_EQ(find(r, 1, 0).end, 5000 + ring);
  EXPECT_EQ(find(r, 2, 1).start, 5000);
  EXPECT_EQ(find(r, 2, 1).end, 5000 + ring);
  EXPECT_EQ(find(r, 0, 0).kind, IntervalKind::Comm);
  EXPECT_EQ(r.timeline.name(find(r, 0, 0).name), "fwd/step0/allgather");
}

TEST(Engine, SecondCollectiveOnAGroupMatchesTheSecond) {
  Builder b(2);
  const std::int32_t g = b.group({0, 1});
  b.collective(0, OpKind::AllToAll, g, 1000);
  b.collective(0, OpKind::AllToAll, g, 1000);
  b.attend(1, 50'000, 0, kNoEvent, kNoEvent, kComm);
  b.collective(1, OpKind::AllToAll, g, 1000);
  b.collective(1, OpKind::AllToAll, g, 1000);
  const SimResult r = simulate(b.s, unit_hw());
  const Nanos a2a = 1000 + 1000;
  EXPECT_EQ(find(r, 0, 0).end, 50'000 + a2a);
  EXPECT_EQ(find(r, 0, 1).end, 50'000 + 2 * a2a);
  EXPECT_EQ(find(r, 1, 2).end, 50'000 + 2 * a2a);
}

TEST(Engine, CollectivesSlowConcurrentCompute) {
  Builder b(2);
  const std::int32_t g = b.group({0, 1});
  b.attend(0, 10'000);
  b.collective(0, OpKind::AllGather, g, 3000);  // 1 us + 3 us
  b.collective(1, OpKind::AllGather, g, 3000);
  HardwareProfile hw = unit_hw();
  hw.comm_compute_interference = 2.0;
  EXPECT_EQ(find(simulate(b.s, hw), 0, 0).end, 12'000);
}

TEST(Engine, EmptyAndZeroByteTransfersComplete) {
  HardwareProfile hw = unit_hw();
  hw.nvlink.latency_ns = 0;
  Builder b(2);
  // A long chain of zero-byte, zero-latency exchanges must neither recurse deeply nor stall.
  for (int i = 0; i < 20000; ++i) {
    b.sendrecv(0, 1, 1, 0, i);
    b.sendrecv(1, 0, 0, 0, i);
  }
  b.sendrecv(0, -1, -1, 0);
  const SimResult r = simulate(b.s, hw);
  EXPECT_EQ(r.stats.ops_executed, 40001);
  EXPECT_EQ(r.stats.makespan, 0);
}

TEST(Engine, EmptyScheduleRuns) {
  Builder b(3);
  b.attend(1, 500);  // ranks 0 and 2 have no ops at all
  const SimResult r = simulate(b.s, unit_hw());
  EXPECT_EQ(r.stats.ops_executed, 1);
  EXPECT_EQ(r.rank_end, (std::vector<Nanos>{0, 500, 0}));
  Builder empty(2);
  const SimResult e = simulate(empty.s, unit_hw());
  EXPECT_EQ(e.stats.makespan, 0);
  EXPECT_TRUE(e.timeline.intervals.empty());
  EXPECT_EQ(e.timeline.num_ranks, 2);
}

TEST(Engine, MalformedSchedulesAreInternalErrors) {
  Builder b(2);
  b.attend(0, 100);
  b.s.ranks[0].ops[0].stream = 7;  // only 3 streams
  EXPECT_THROW(simulate(b.s, unit_hw()), InternalError);
  Builder c(2);
  c.attend(0, 100, 0, /*wait=*/5);  // event never declared
  EXPECT_THROW(simulate(c.s, unit_hw()), InternalError);
  Builder d(2);
  const std::int32_t g = d.group({1});
  d.collective(0, OpKind::AllGather, g, 10);  // rank 0 is not in the group
  EXPECT_THROW(simulate(d.s, unit_hw()), InternalError);
}

TEST(Engine, DeadlockIsReportedNotHung) {
  // Both ranks receive before they send, on one stream: neither send is ever reached.
  Builder b(2);
  b.sendrecv(0, -1, 1, 1000, 0);
  b.sendrecv(0, 1, -1, 1000, 1);
  b.sendrecv(1, -1, 0, 1000, 0);
  b.sendrecv(1, 0, -1, 1000, 1);
  try {
    simulate(b.s, unit_hw());
    FAIL() << "expected InternalError";
  } catch (const InternalError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("deadlock"), std::string::npos) << what;
    EXPECT_NE(what.find("rank 0: op 0 fwd/step0/sendrecv"), std::string::npos) << what;
    EXPECT_NE(what.find("rank 1: op 0"), std::string::npos) << what;
    EXPECT_NE(what.find("matching send"), std::string::npos) << what;
  }
}

TEST(Engine, DeadlockNamesTheMissingEventAndPeer) {
  Builder b(2);
  const std::int32_t ev = b.event(0);
  b.attend(0, 100, 0, ev);                            // waits for an event recorded later on its own stream
  b.attend(0, 100, 1, kNoEvent, ev);
  b.sendrecv(1, 0, -1, 1000);                         // rank 0 never receives
  try {
    simulate(b.s, unit_hw());
    FAIL() << "expected InternalError";
  } catch (const InternalError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("waits for event 0, recorded by op 1"), std::string::npos) << what;
    EXPECT_NE(what.find("no matching receive"), std::string::npos) << what;
  }
}

TEST(Engine, DeadlockInACollectiveNamesTheMissingRanks) {
  Builder b(3);
  const std::int32_t g = b.group({0, 1, 2});
  b.collective(0, OpKind::AllGather, g, 10);
  b.collective(1, OpKind::AllGather, g, 10);
  b.attend(2, 10);
  try {
    simulate(b.s, unit_hw());
    FAIL() << "expected InternalError";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("waits for ranks [2]"), std::string::npos) << e.what();
  }
}

TEST(Engine, TimelineFields) {
  const Schedule s = ring(3, 5000, 1000);
  const SimResult r = simulate(s, unit_hw());
  EXPECT_EQ(r.timeline.num_ranks, 3);
  EXPECT_EQ(r.timeline.streams, s.streams);
  EXPECT_EQ(static_cast<std::int64_t>(r.timeline.intervals.size()), s.num_ops());
  const Interval& a = find(r, 1, 2);  // attention of step 1
  EXPECT_EQ(a.kind, IntervalKind::Compute);
  EXPECT_EQ(a.stream, kCompute);
  EXPECT_EQ(a.step, 1);
  EXPECT_EQ(a.pass, 0);
  EXPECT_EQ(a.flops, 5'000'000);
  EXPECT_EQ(r.timeline.name(a.name), "fwd/step1/attend");
  const Interval& c = find(r, 1, 1);
  EXPECT_EQ(c.kind, IntervalKind::Comm);
  EXPECT_EQ(c.stream, kComm);
  EXPECT_EQ(c.bytes, 1000);
  EXPECT_EQ(r.timeline.name(c.name), "fwd/step0/sendrecv");
  for (const auto& iv : r.timeline.intervals) EXPECT_LE(iv.start, iv.end);
}

TEST(Engine, NoTimelineKeepsStatistics) {
  const Schedule s = ring(4, 5000, 1000);
  const SimResult full = simulate(s, unit_hw());
  const SimResult bare = simulate(s, unit_hw(), SimOptions{false, 0, {}});
  EXPECT_TRUE(bare.timeline.intervals.empty());
  EXPECT_EQ(bare.stats.makespan, full.stats.makespan);
  EXPECT_EQ(bare.stats.ops_executed, full.stats.ops_executed);
  EXPECT_EQ(bare.rank_end, full.rank_end);
}

// A ring with uneven per-rank compute, across nodes, with interference: every feature at once.
Schedule busy_schedule(std::int32_t n, Nanos base, Bytes bytes) {
  Schedule s = ring(n, base, bytes, 4);
  for (auto& p : s.ranks)
    for (auto& op : p.ops)
      if (op.kind == OpKind::Attend) op.flops += 1000 * (p.rank * 137 + op.step * 71);
  return s;
}

TEST(Engine, Deterministic) {
  const Schedule s = busy_schedule(8, 200'000, 300'000);
  HardwareProfile hw = unit_hw();
  hw.comm_compute_interference = 1.3;
  const SimResult a = simulate(s, hw), b = simulate(s, hw);
  ASSERT_EQ(a.timeline.intervals.size(), b.timeline.intervals.size());
  for (std::size_t i = 0; i < a.timeline.intervals.size(); ++i) {
    const Interval &x = a.timeline.intervals[i], &y = b.timeline.intervals[i];
    EXPECT_EQ(std::tie(x.rank, x.stream, x.op_id, x.start, x.end, x.name),
              std::tie(y.rank, y.stream, y.op_id, y.start, y.end, y.name));
  }
  EXPECT_EQ(a.stats.events_processed, b.stats.events_processed);
}

// The record array is reused by the next simulation in the process (engine_sim.h, take_records()):
// what a larger run, or one that failed in set-up, left in it must not leak into the next.
TEST(Engine, ASimulationAfterALargerOneGivesTheSameResult) {
  const Schedule small = busy_schedule(8, 200'000, 300'000);
  Workload w;
  w.schedule = ScheduleKind::ZigzagRing;
  w.seq = 65536;
  w.cp = 32;
  const Schedule large = make_schedule(w);
  Schedule broken = busy_schedule(8, 1000, 1000);
  broken.ranks[5].ops.back().wait[0] = 999;  // an event the rank does not have: fails in set-up
  HardwareProfile hw = unit_hw();
  hw.comm_compute_interference = 1.3;
  const SimResult a = simulate(small, hw);
  simulate(large, default_hardware(), SimOptions{false, 0, {}});
  EXPECT_THROW(simulate(broken, hw), InternalError);
  const SimResult b = simulate(small, hw);
  ASSERT_EQ(a.timeline.intervals.size(), b.timeline.intervals.size());
  for (std::size_t i = 0; i < a.timeline.intervals.size(); ++i) {
    const Interval &x = a.timeline.intervals[i], &y = b.timeline.intervals[i];
    EXPECT_EQ(std::tie(x.rank, x.stream, x.op_id, x.start, x.end), std::tie(y.rank, y.stream, y.op_id, y.start, y.end));
  }
  EXPECT_EQ(a.stats.events_processed, b.stats.events_processed);
  EXPECT_EQ(a.rank_end, b.rank_end);
}

TEST(Engine, SlowerLinksNeverShortenTheStep) {
  std::vector<Schedule> schedules = {ring(4, 1000, 1'000'000), ring(4, 3'000'000, 1'000'000),
                                     busy_schedule(8, 200'000, 300'000), busy_schedule(8, 2000, 300'000)};
  {
    Builder b(3);
    const std::int32_t g = b.group({0, 1, 2});
    for (std::int32_t r = 0; r < 3; ++r) {
      b.attend(r, 100'000 * (r + 1));
      b.collective(r, OpKind::AllGather, g, 200'000);
      b.sendrecv(r, (r + 1) % 3, (r + 2) % 3, 100'000, 1, kNoEvent, kNoEvent, kComm2);
    }
    schedules.push_back(b.s);
  }
  for (std::size_t i = 0; i < schedules.size(); ++i) {
    SCOPED_TRACE(i);
    HardwareProfile hw = unit_hw();
    hw.comm_compute_interference = 1.2;
    Nanos prev = simulate(schedules[i], hw).stats.makespan;
    for (int k = 0; k < 4; ++k) {
      hw.nvlink.bandwidth_GBps /= 2;
      hw.network.bandwidth_GBps /= 2;
      const Nanos next = simulate(schedules[i], hw).stats.makespan;
      EXPECT_GE(next, prev);
      prev = next;
    }
  }
}

TEST(Engine, BuiltinProfileRingIsPlausible) {
  // 8 H100s, 16K tokens per rank, 32 heads x 128: forward full blocks ~8.6 TFLOP each, ~14 ms at
  // ~620 TFLOP/s; K/V of 8 KV heads = 2 x 16384 x 8 x 128 x 2 B = 64 MiB per step, ~0.2 ms on NVLink.
  const Flops flops = 4LL * 32 * 128 * 16384 * 16384;
  Schedule s = ring(8, 1, 64 * kMiB);
  for (auto& p : s.ranks)
    for (auto& op : p.ops)
      if (op.kind == OpKind::Attend) {
        op.flops = flops;
        op.attn.q_len = op.attn.kv_len = 16384;
      }
  const HardwareProfile& hw = default_hardware();
  const SimResult r = simulate(s, hw);
  const CostModel cost(hw, s.workload);
  const Nanos step = cost.compute_ns(s.ranks[0].ops[0]);
  // Compute bound: 8 steps, each slowed while its overlapped transfer runs.
  EXPECT_GE(r.stats.makespan, 8 * step);
  EXPECT_LE(r.stats.makespan, 8 * step + 8 * cost.transfer_ns(64 * kMiB, false));
}

// ---------------------------------------------------------------------------------------------
// Per-rank totals (SimResult::rank_busy), set-up threads, malformed schedules.

TEST(Engine, RankBusyTotalsOnAHandComputedCase) {
  // Rank 0: attention [0, 5000) beside a send [0, 1000 + 10000); rank 1: the matching receive, then a
  // 2000 ns DkvAdd-like memory op (1 GB/s HBM: 2000 bytes) after it.
  Builder b(2);
  b.attend(0, 5000);
  b.sendrecv(0, 1, -1, 10'000);
  const std::int32_t ev = b.event(1);
  b.sendrecv(1, -1, 0, 10'000, 0, kNoEvent, ev);
  Op add;
  add.kind = OpKind::DkvAdd;
  add.stream = kCompute;
  add.bytes = 2000;
  add.wait[0] = ev;
  b.add(1, add);
  const SimResult r = simulate(b.s, unit_hw(), SimOptions{false, 0, {}});
  ASSERT_EQ(r.rank_busy.size(), 2u);
  const RankBusy& a = r.rank_busy[0];
  EXPECT_EQ(a.first_start, 0);
  EXPECT_EQ(a.last_end, 11'000);
  EXPECT_EQ(a.compute_ns, 5000);
  EXPECT_EQ(a.comm_ns, 11'000);
  EXPECT_EQ(a.exposed_comm_ns, 6000);
  EXPECT_EQ(a.busy_ns, 11'000);
  EXPECT_EQ(a.flops, 5'000'000);
  EXPECT_EQ(a.bytes_sent, 10'000);
  const RankBusy& c = r.rank_busy[1];
  EXPECT_EQ(c.first_start, 0);
  EXPECT_EQ(c.last_end, 13'000);
  EXPECT_EQ(c.compute_ns, 0);  // DkvAdd is memory, not compute
  EXPECT_EQ(c.comm_ns, 11'000);
  EXPECT_EQ(c.exposed_comm_ns, 11'000);
  EXPECT_EQ(c.busy_ns, 13'000);
  EXPECT_EQ(c.bytes_sent, 0);  // a receive sends nothing
  EXPECT_EQ(r.rank_end, (std::vector<Nanos>{11'000, 13'000}));
}

TEST(Engine, RankBusyOfARankWithoutOps) {
  Builder b(3);
  b.attend(0, 100);
  b.attend(2, 300);
  const SimResult r = simulate(b.s, unit_hw(), SimOptions{false, 0, {}});
  EXPECT_EQ(r.rank_busy[1].first_start, -1);
  EXPECT_EQ(r.rank_busy[1].busy_ns, 0);
  EXPECT_EQ(r.rank_busy[2].compute_ns, 300);
}

TEST(Engine, AnOpMaySendToItsOwnRank) {
  Builder b(1);
  b.sendrecv(0, 0, 0, 1'000'000);
  b.attend(0, 100, 1);
  const SimResult r = simulate(b.s, unit_hw());
  EXPECT_EQ(find(r, 0, 0).end, 1000 + 1'000'000);
  EXPECT_EQ(r.stats.ops_executed, 2);
}

TEST(Engine, AnEventRecordedTwiceIsAnError) {
  Builder b(1);
  const std::int32_t ev = b.event(0);
  b.attend(0, 100, 0, kNoEvent, ev);
  b.attend(0, 100, 1, kNoEvent, ev);
  try {
    simulate(b.s, unit_hw());
    FAIL() << "expected InternalError";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("records event 0, which op 0 already records"), std::string::npos)
        << e.what();
  }
}

// Results do not depend on how many threads set the run up: ranks split between threads, with
// transfers, collectives and events crossing the split.
TEST(Engine, SetupThreadsGiveIdenticalResults) {
  std::vector<Schedule> schedules = {busy_schedule(8, 200'000, 300'000)};
  {
    Builder b(5, 2);
    const std::int32_t all = b.group({0, 1, 2, 3, 4}), pair = b.group({1, 3});
    for (std::int32_t r = 0; r < 5; ++r) {
      const std::int32_t ev = b.event(r);
      b.attend(r, 1000 * (r + 1), 0, kNoEvent, ev);
      b.sendrecv(r, (r + 2) % 5, (r + 3) % 5, 50'000 * (r + 1), 0, ev, kNoEvent, kComm2);
      b.collective(r, OpKind::AllGather, all, 10'000);
      if (r == 1 || r == 3) b.collective(r, OpKind::AllToAll, pair, 5000);
      b.sendrecv(r, r, r, 1000, 1);  // to itself
    }
    schedules.push_back(b.s);
  }
  for (ScheduleKind kind : all_schedules()) {
    Workload w;
    w.schedule = kind;
    w.seq = 16384;
    w.cp = 8;
    w.gpus_per_node = 4;
    if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
    if (invalid_reason(w).empty()) schedules.push_back(make_schedule(w));
  }
  HardwareProfile hw = default_hardware();
  for (std::size_t i = 0; i < schedules.size(); ++i) {
    SCOPED_TRACE(i);
    SimOptions one{false, 1, {}}, two{false, 2, {}};
    const SimResult a = simulate(schedules[i], hw, one), b = simulate(schedules[i], hw, two);
    const SimResult t = simulate(schedules[i], hw);  // with a Timeline (set up by one thread)
    EXPECT_EQ(a.stats.makespan, b.stats.makespan);
    EXPECT_EQ(a.stats.events_processed, b.stats.events_processed);
    EXPECT_EQ(a.stats.events_processed, t.stats.events_processed);
    EXPECT_EQ(a.rank_end, b.rank_end);
    EXPECT_EQ(a.rank_end, t.rank_end);
    ASSERT_EQ(a.rank_busy.size(), b.rank_busy.size());
    for (std::size_t r = 0; r < a.rank_busy.size(); ++r) {
      const RankBusy &x = a.rank_busy[r], &y = b.rank_busy[r], &z = t.rank_busy[r];
      EXPECT_EQ(std::tie(x.first_start, x.last_end, x.compute_ns, x.comm_ns, x.exposed_comm_ns, x.busy_ns, x.flops,
                         x.bytes_sent),
                std::tie(y.first_start, y.last_end, y.compute_ns, y.comm_ns, y.exposed_comm_ns, y.busy_ns, y.flops,
                         y.bytes_sent));
      EXPECT_EQ(std::tie(x.first_start, x.last_end, x.compute_ns, x.comm_ns, x.exposed_comm_ns, x.busy_ns),
                std::tie(z.first_start, z.last_end, z.compute_ns, z.comm_ns, z.exposed_comm_ns, z.busy_ns));
    }
  }
}

TEST(Engine, SetupErrorsDoNotDependOnThreads) {
  // Two bad ops on different ranks: the first in rank order is reported, whatever the threads.
  Builder b(4);
  for (std::int32_t r = 0; r < 4; ++r) b.attend(r, 100);
  b.s.ranks[1].ops[0].stream = 9;
  b.s.ranks[3].ops[0].stream = 7;
  for (int threads : {1, 2}) {
    try {
      simulate(b.s, unit_hw(), SimOptions{false, threads, {}});
      FAIL() << "expected InternalError";
    } catch (const InternalError& e) {
      EXPECT_NE(std::string(e.what()).find("rank 1 op 0 uses stream 9"), std::string::npos) << e.what();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The event queue (private to the engine, sim/engine_queue.h).

// Small buckets become runs sorted by counting when they span under 2^26 ns and move down a level
// otherwise: `far` covers both.
TEST(EngineQueue, PopsByTimeThenInsertionOrder) {
  for (const Nanos far : {Nanos{1'000'000}, Nanos{1'000'000'000}}) {
    SCOPED_TRACE(far);
    detail::RadixEventQueue<int> q;
    std::mt19937_64 rng(7);
    std::vector<std::pair<Nanos, int>> pushed;  // (time, insertion index)
    Nanos now = 0;
    int next = 0;
    std::vector<std::pair<Nanos, int>> popped;
    for (int round = 0; round < 2000; ++round) {
      const int adds = static_cast<int>(rng() % 4);
      for (int k = 0; k < adds; ++k) {
        // Many ties (small offsets, often zero), some far events.
        const Nanos t = now + (rng() % 3 == 0 ? 0 : static_cast<Nanos>(rng() % (rng() % 2 ? 8 : far)));
        q.push(t, next);
        pushed.emplace_back(t, next++);
      }
      if (!q.empty() && rng() % 2) {
        const auto e = q.pop();
        EXPECT_GE(e.time, now);
        now = e.time;
        popped.emplace_back(e.time, e.value);
      }
    }
    while (!q.empty()) {
      const auto e = q.pop();
      popped.emplace_back(e.time, e.value);
    }
    ASSERT_EQ(popped.size(), pushed.size());
    for (std::size_t i = 1; i < popped.size(); ++i) {
      EXPECT_LE(popped[i - 1].first, popped[i].first);
      if (popped[i - 1].first == popped[i].first) {
        EXPECT_LT(popped[i - 1].second, popped[i].second);
      }
    }
    EXPECT_THROW(q.push(now - 1, 0), InternalError);
  }
}

// Ties inside a small bucket, as a sorted run and as one that moves down a level: pushed out of order,
// popped by time and, at equal times, in push order.
TEST(EngineQueue, SmallBucketsKeepPushOrderAmongTies) {
  for (const Nanos base : {Nanos{300}, (Nanos{1} << 32)}) {  // span 5 ns (a run), 2^27 ns (moves down)
    SCOPED_TRACE(base);
    const Nanos span = base < (Nanos{1} << 32) ? 5 : (Nanos{1} << 27);
    detail::RadixEventQueue<int> q;
    const Nanos times[] = {base + span, base, base + span, base + 2, base, base + span, base + 2};
    for (int i = 0; i < 7; ++i) q.push(times[i], i);
    const std::pair<Nanos, int> expected[] = {{base, 1},     {base, 4},        {base + 2, 3},   {base + 2, 6},
                                              {base + span, 0}, {base + span, 2}, {base + span, 5}};
    for (const auto& [t, v] : expected) {
      ASSERT_FALSE(q.empty());
      const auto e = q.pop();
      EXPECT_EQ(e.time, t);
      EXPECT_EQ(e.value, v);
    }
    EXPECT_TRUE(q.empty());
  }
}

// ---------------------------------------------------------------------------------------------
// The generators' schedules: every kind runs to completion and obeys the IR's semantics.

std::vector<Workload> generated_workloads() {
  std::vector<Workload> out;
  for (ScheduleKind kind : all_schedules())
    for (PassSet pass : {PassSet::Fwd, PassSet::FwdBwd})
      for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
        Workload w;
        w.schedule = kind;
        w.pass = pass;
        w.dkv = dkv;
        w.seq = 16384;
        w.cp = 8;
        w.gpus_per_node = 4;  // two nodes: NVLink and network transfers
        if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
        if (kind == ScheduleKind::AllGather) w.kv_head_groups = 2;
        if (kind == ScheduleKind::AllGather || kind == ScheduleKind::Hybrid) w.balance = Balance::Zigzag;
        if (invalid_reason(w).empty()) out.push_back(w);
      }
  return out;
}

TEST(EngineOnGenerators, EveryScheduleRunsAndObeysStreamsAndEvents) {
  const HardwareProfile& hw = default_hardware();
  const auto workloads = generated_workloads();
  ASSERT_GE(workloads.size(), 10u);
  for (const Workload& w : workloads) {
    SCOPED_TRACE(std::string(to_string(w.schedule)) + " " + std::string(to_string(w.pass)) + " " +
                 std::string(to_string(w.dkv)));
    const Schedule s = make_schedule(w);
    const SimResult r = simulate(s, hw);
    EXPECT_EQ(r.stats.ops_executed, s.num_ops());
    ASSERT_EQ(static_cast<std::int64_t>(r.timeline.intervals.size()), s.num_ops());
    Flops flops = 0;
    for (const auto& iv : r.timeline.intervals) flops += iv.flops;
    EXPECT_EQ(flops, w.total_flops());

    // Per rank: intervals by op id; streams run one op at a time in issue order; waits respected.
    const CostModel cost(hw, s.workload);
    for (const RankProgram& p : s.ranks) {
      std::vector<const Interval*> by_op(p.ops.size(), nullptr);
      for (const auto& iv : r.timeline.intervals)
        if (iv.rank == p.rank) by_op[static_cast<std::size_t>(iv.op_id)] = &iv;
      std::vector<Nanos> last_end(s.streams.size(), 0), recorded(static_cast<std::size_t>(p.num_events), -1);
      Nanos compute = 0;
      for (const Op& op : p.ops) {
        const Interval* iv = by_op[static_cast<std::size_t>(op.id)];
        ASSERT_NE(iv, nullptr);
        EXPECT_LE(iv->start, iv->end);
        EXPECT_GE(iv->start, last_end[op.stream]) << "rank " << p.rank << " op " << op.id;
        last_end[op.stream] = iv->end;
        for (auto e : op.wait) {
          if (e != kNoEvent) {
            EXPECT_GE(iv->start, recorded[static_cast<std::size_t>(e)]);
          }
        }
        if (op.record != kNoEvent) recorded[static_cast<std::size_t>(op.record)] = iv->end;
        if (op.kind == OpKind::Attend || op.kind == OpKind::AttendBwd || op.kind == OpKind::DkvAdd ||
            op.kind == OpKind::Layout) {
          EXPECT_GE(iv->duration(), cost.compute_ns(op));  // sharing and interference only slow it
          compute += cost.compute_ns(op);
        }
      }
      // A GPU never computes faster than its rate: the rank's compute alone bounds its span.
      EXPECT_GE(r.rank_end[static_cast<std::size_t>(p.rank)], compute);
    }
    // Deterministic.
    const SimResult again = simulate(s, hw, SimOptions{false, 0, {}});
    EXPECT_EQ(again.rank_end, r.rank_end);
    EXPECT_EQ(again.stats.events_processed, r.stats.events_processed);
  }
}

TEST(EngineOnGenerators, ZigzagBeatsContiguousRingOnCausal) {
  Workload w;
  w.seq = 65536;
  w.cp = 8;
  w.pass = PassSet::Fwd;
  w.schedule = ScheduleKind::Ring;
  const Nanos ring = simulate(make_schedule(w), default_hardware(), SimOptions{false, 0, {}}).stats.makespan;
  w.schedule = ScheduleKind::ZigzagRing;
  const Nanos zigzag = simulate(make_schedule(w), default_hardware(), SimOptions{false, 0, {}}).stats.makespan;
  // Contiguous sharding leaves rank N-1 with (2N-1)/N of the balanced work.
  EXPECT_LT(zigzag, ring);
  EXPECT_GT(static_cast<double>(ring) / static_cast<double>(zigzag), 1.4);
}

TEST(EngineOnGenerators, SlowerNetworkNeverHelps) {
  for (ScheduleKind kind : all_schedules()) {
    SCOPED_TRACE(std::string(to_string(kind)));
    Workload w;
    w.schedule = kind;
    w.seq = 32768;
    w.cp = 8;
    w.gpus_per_node = 2;
    if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
    if (!invalid_reason(w).empty()) continue;
    const Schedule s = make_schedule(w);
    HardwareProfile hw = default_hardware();
    Nanos prev = simulate(s, hw, SimOptions{false, 0, {}}).stats.makespan;
    for (int k = 0; k < 3; ++k) {
      hw.network.bandwidth_GBps /= 4;
      hw.nvlink.bandwidth_GBps /= 2;
      const Nanos next = simulate(s, hw, SimOptions{false, 0, {}}).stats.makespan;
      EXPECT_GE(next, prev);
      prev = next;
    }
  }
}

}  // namespace
}  // namespace cpscope
