// Discrete-event engine: runs a Schedule on a HardwareProfile and produces the simulated Timeline.
// Deterministic: integer nanoseconds, ties broken by insertion sequence, no globals (a Simulation
// owns its clock, queue and statistics).
#pragma once

#include <cstdint>
#include <string>

#include "sim/hardware.h"
#include "sim/schedule.h"
#include "sim/timeline.h"

namespace cpscope {

// Ranks that share one device, as cp-profile runs a group on one machine: the loopback transport puts
// every rank of the group on one GPU, the host backend every rank on the CPU. Ranks r with equal
// r / ranks_per_device share the device: its compute ops share it (processor sharing: k of them each
// advance at min(1, compute_slots / k)), a communication op of any of its ranks slows all of them
// (comm_compute_interference), and transfers between its ranks are copies within it
// (HardwareProfile::device_copy_link(), through one egress and one ingress per device, whatever the node
// layout says). local_transfers: every rank runs as replay runs one rank alone, sending to itself through
// NCCL: a transfer or collective begins when the rank issues it (no peer to wait for), every transfer is
// such a copy (a SendRecv one copy of its larger side), and collectives also pay replay's extra staging
// (transport_staging). The default (one rank per device, transfers over the links) is a real cluster:
// one GPU per rank.
struct DeviceSharing {
  std::int32_t ranks_per_device = 1;
  double compute_slots = 1;  // compute ops the device runs at full rate at once: 1 for a GPU, its cores for a CPU
  bool local_transfers = false;
  bool shared() const { return ranks_per_device > 1 || compute_slots != 1; }  // ranks share compute
  bool recorded() const { return shared() || local_transfers; }              // differs from a real cluster
  bool local(std::int32_t a, std::int32_t b) const {  // does a transfer from rank a to rank b stay on a GPU?
    return local_transfers || (ranks_per_device > 1 && a / ranks_per_device == b / ranks_per_device);
  }
  std::int64_t devices(std::int64_t ranks) const { return (ranks + ranks_per_device - 1) / ranks_per_device; }
  bool operator==(const DeviceSharing&) const = default;
};

// Throws InputError naming `ranks_field` or `slots_field` when ranks_per_device < 1 or compute_slots is not in
// (0, 65536] (the engine, the profile reader and cp-sim's flags share this rule, each with its own field names).
void check_sharing(const DeviceSharing&, const std::string& ranks_field, const std::string& slots_field);

struct SimOptions {
  bool record_timeline = true;   // false: only statistics (faster for sweeps and plan)
  // Threads that set the run up (the event loop itself is sequential): 0 picks by the schedule's
  // size and the machine's cores (2 at most); 1 for none. Results are the same either way.
  int threads = 0;
  DeviceSharing sharing;
};

struct SimStats {
  std::int64_t ops_executed = 0;
  std::int64_t events_processed = 0;
  Nanos makespan = 0;  // end of the last op on any rank
};

// What one rank did, accumulated by the engine as its ops start and end (O(1) per op, no Timeline
// needed): exactly the quantities summarize() derives from the rank's intervals (see analysis.h).
// Kinds as in the Timeline: compute = Attend/AttendBwd, memory = DkvAdd/Layout, comm = SendRecv and
// the collectives. Unions are measures of sets of time, so touching or nested ops count once.
struct RankBusy {
  Nanos first_start = -1;     // when the rank's first op started; -1 when it has no ops
  Nanos last_end = 0;         // when its last op ended
  Nanos compute_ns = 0;       // |union of its compute ops|
  Nanos comm_ns = 0;          // |union of its comm ops|
  Nanos exposed_comm_ns = 0;  // |comm \ compute|
  Nanos busy_ns = 0;          // |union of its compute, comm and memory ops|
  Flops flops = 0;            // sum over its ops
  Bytes bytes_sent = 0;       // sum of the bytes of its comm ops (Op::bytes)
};

struct SimResult {
  Timeline timeline;   // empty when !record_timeline
  SimStats stats;
  // Per CP rank totals (always filled): see analysis.h for their definitions.
  std::vector<Nanos> rank_end;          // when the rank's last op ended
  std::vector<RankBusy> rank_busy;      // per CP rank, with or without a Timeline
};

// Simulates one CP group in full. Throws InternalError on a deadlock (ops left that can never start),
// naming the first blocked op of each rank, and on a malformed schedule (an op on a stream or event
// out of range, an event recorded by two ops, a peer or group that does not exist); InputError when
// the hardware profile cannot time an op (no attention rate table for its pass, mask and head_dim), and
// when options.sharing is out of range (ranks_per_device < 1, compute_slots not in (0, 65536]).
SimResult simulate(const Schedule&, const HardwareProfile&, const SimOptions& = {});

}  // namespace cpscope
