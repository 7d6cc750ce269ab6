// Cost model: the time an op takes on its own, from the hardware profile. Integer nanoseconds,
// rounded up, deterministic. Sharing of links and comm/compute interference are the engine's job.
#include "sim/cost.h"

#include <algorithm>
#include <cmath>

#include "sim/error.h"

namespace cpscope {

namespace {

// ceil(x) for a non-negative duration in ns. The relative slack absorbs the last-bit error of a
// division whose exact result is an integer (e.g. 1e6 bytes / 1 GB/s must give 1'000'000, not 1'000'001).
Nanos ceil_ns(double x) {
  if (!(x > 0)) return 0;
  return static_cast<Nanos>(std::ceil(x * (1.0 - 1e-12)));
}

bool is_collective(OpKind k) {
  return k == OpKind::AllGather || k == OpKind::AllToAll || k == OpKind::ReduceScatter;
}

}  // namespace

Nanos CostModel::compute_ns(const Op& op) const {
  // The memory kernels the runtime adds to the op (Op::fills: its memsets, the backward's delta, a dkv
  // stage's converting add): a launch each, their bytes at HBM bandwidth.
  const Nanos fills =
      op.fills > 0 ? op.fills * hw_.launch_latency_ns +
                         ceil_ns(static_cast<double>(op.fill_bytes) / hw_.memory_bandwidth_GBps)
                   : 0;
  return fills + op_ns(op);
}

Nanos CostModel::op_ns(const Op& op) const {
  switch (op.kind) {
    case OpKind::Attend:
    case OpKind::AttendBwd: {
      if (op.flops <= 0) return hw_.launch_latency_ns;
      const double tflops = hw_.attention_tflops(op.kind == OpKind::AttendBwd, op.attn.mask == AttnMask::Causal,
                                                 w_.head_dim, std::max<std::int64_t>(1, op.attn.q_len),
                                                 std::max<std::int64_t>(1, op.attn.kv_len));
      // flops / (tflops·1e12 FLOP/s) seconds = flops / (tflops·1e3) ns.
      return hw_.launch_latency_ns + ceil_ns(static_cast<double>(op.flops) / (tflops * 1e3));
    }
    case OpKind::DkvAdd:
    case OpKind::Layout:
      // bytes / (GB/s) = bytes / (1e9 B/s) s = bytes ns per (B/ns).
      return hw_.launch_latency_ns + ceil_ns(static_cast<double>(op.bytes) / hw_.memory_bandwidth_GBps);
    default:
      throw InternalError("CostModel::compute_ns called for a communication op (" + std::string(to_string(op.kind)) +
                          ")");
  }
}

Nanos CostModel::staging_ns(const StagedCopies& c) const {
  if (c.copies <= 0) return 0;
  return c.copies * hw_.launch_latency_ns + ceil_ns(static_cast<double>(c.bytes) / hw_.memory_bandwidth_GBps);
}

Nanos CostModel::transfer_ns(Bytes bytes, bool inter_node, double bandwidth_share) const {
  CPSCOPE_CHECK(bandwidth_share > 0, "bandwidth_share must be > 0");
  const LinkClass& link = inter_node ? hw_.network : hw_.nvlink;
  return link.latency_ns + ceil_ns(static_cast<double>(bytes) / (link.bandwidth_GBps * bandwidth_share));
}

std::int64_t CostModel::nic_of_local_gpu(std::int64_t local_gpu) const {
  const std::int64_t gpn = std::max<std::int64_t>(1, w_.gpus_per_node);
  const std::int64_t nics = std::max<std::int64_t>(1, hw_.nics_per_node);
  if (nics >= gpn) return local_gpu;
  return local_gpu * nics / gpn;
}

Nanos CostModel::collective_ns(const Op& op, std::int64_t group_size, bool inter_node, double nic_sharing) const {
  GroupPlacement p;
  p.size = group_size;
  const std::int64_t gpn = std::max<std::int64_t>(1, w_.gpus_per_node);
  p.max_per_node = inter_node ? std::min(group_size, gpn) : group_size;
  p.nodes = inter_node ? std::max<std::int64_t>(2, (group_size + p.max_per_node - 1) / p.max_per_node) : 1;
  // Distinct NICs under p.max_per_node adjacent GPUs starting at local GPU 0.
  p.nics_per_node = nic_of_local_gpu(p.max_per_node - 1) + 1;
  return collective_ns(op, p, nic_sharing);
}

// NCCL's formulas (the bandwidth terms of its tuning model, src/graph/tuning.cc, with the achieved
// link bandwidths of the profile standing in for its per-channel bandwidths):
//  - ring all-gather / reduce-scatter: n-1 steps; in each step every rank passes one per-rank chunk
//    (bytes_per_peer) to its ring neighbour; time = (n-1)·latency + (n-1)·chunk / bus bandwidth.
//    Within a node the bus bandwidth is the NVLink bandwidth. Across nodes every ring crosses each node
//    boundary once per step; NCCL runs one channel per NIC so a node's crossing uses all the NICs its
//    members reach: bus bandwidth = min(NVLink, nics_used·NIC bandwidth / nic_sharing).
//  - all-to-all (direct, grouped send/receive): every rank sends bytes_per_peer to each other member
//    at once; time = latency + max(intra-node volume / NVLink, node's inter-node volume / node NICs).
Nanos CostModel::collective_ns(const Op& op, const GroupPlacement& p, double nic_sharing) const {
  CPSCOPE_CHECK(is_collective(op.kind), "collective_ns called for " + std::string(to_string(op.kind)));
  CPSCOPE_CHECK(nic_sharing >= 1.0, "nic_sharing must be >= 1");
  const std::int64_t n = p.size;
  if (n <= 1) return hw_.launch_latency_ns;  // NCCL with one rank: a local copy
  const double chunk = op.bytes_per_peer > 0 ? static_cast<double>(op.bytes_per_peer)
                                             : static_cast<double>(op.bytes) / static_cast<double>(n - 1);
  if (p.on_device > 0) {
    const LinkClass copy = hw_.device_copy_link();
    const double volume = static_cast<double>(p.on_device) * static_cast<double>(n - 1) * chunk;
    return (p.on_device > 1 ? n - 1 : collective_planes(op)) * copy.latency_ns + ceil_ns(volume / copy.bandwidth_GBps);
  }
  const bool inter = p.nodes > 1;
  const double nvl = hw_.nvlink.bandwidth_GBps;
  const double node_nic = static_cast<double>(std::max<std::int64_t>(1, p.nics_per_node)) *
                          hw_.network.bandwidth_GBps / nic_sharing;
  const Nanos lat = inter ? hw_.network.latency_ns : hw_.nvlink.latency_ns;
  if (op.kind == OpKind::AllToAll) {
    const auto g = static_cast<double>(std::min(p.max_per_node, n));
    const double intra = (g - 1) * chunk / nvl;
    const double remote = inter ? g * (static_cast<double>(n) - g) * chunk / node_nic : 0.0;
    return lat + ceil_ns(std::max(intra, remote));
  }
  const double bus = inter ? std::min(nvl, node_nic) : nvl;
  return static_cast<Nanos>(n - 1) * lat + ceil_ns(static_cast<double>(n - 1) * chunk / bus);
}

}  // namespace cpscope
