// Cost model: how long an op takes on its own (the engine adds sharing and interference).
#pragma once

#include "sim/hardware.h"
#include "sim/schedule.h"

namespace cpscope {

// Added (engine/cost): where a collective's members sit on the mesh, for the NIC side of the formulas.
struct GroupPlacement {
  std::int64_t size = 1;          // members
  std::int64_t nodes = 1;         // distinct nodes the members span
  std::int64_t max_per_node = 1;  // most members on one node
  std::int64_t nics_per_node = 1; // distinct NICs the members use on a node (minimum over the nodes)
  // Added: > 0 when no byte of the collective leaves a GPU (DeviceSharing: the members share one device,
  // or every transfer is local, as in replay): the most members on one device, whose copies share it.
  std::int64_t on_device = 0;
};

class CostModel {
 public:
  CostModel(const HardwareProfile& hw, const Workload& w) : hw_(hw), w_(w) {}
  // Attention (Attend/AttendBwd): launch latency + flops / achieved rate for the block shape.
  // DkvAdd / Layout: launch latency + bytes / memory bandwidth.
  // Plus the fills before the op (Op::fills): a launch latency each + fill bytes / memory bandwidth.
  Nanos compute_ns(const Op&) const;
  // One point-to-point message of `bytes` over a link class: latency + bytes / bandwidth.
  Nanos transfer_ns(Bytes bytes, bool inter_node, double bandwidth_share = 1.0) const;
  // Collectives by NCCL's formulas (ring all-gather / reduce-scatter: (n-1) steps of bytes/n;
  // all-to-all direct: (n-1) messages sharing the sender's egress), on the slowest link class the
  // group spans, with `nic_sharing` groups loading the NICs.
  Nanos collective_ns(const Op&, std::int64_t group_size, bool inter_node, double nic_sharing) const;
  // Added: the same formulas for a known placement (the engine computes it from the group's ranks). With
  // p.on_device, copies within a GPU instead (device_copy_link()): each member moves its (n-1) chunks, the
  // on_device members of a device one after another through its copy bandwidth; one copy latency per
  // plane when a member is alone on its device (replay: one NCCL send to itself of all its bytes per
  // plane, collective_planes()), n-1 when members share one (loopback: a copy per peer).
  // The overload above assumes members packed onto nodes (CpInner): min(size, gpus_per_node) per node.
  Nanos collective_ns(const Op&, const GroupPlacement&, double nic_sharing) const;
  // Added: the copies a collective's transport makes through its staging buffers (transport_staging()):
  // a launch latency per copy + staged bytes / memory bandwidth, as for a Layout op. 0 when it stages
  // nothing.
  Nanos staging_ns(const StagedCopies&) const;
  // Added: the NIC a GPU uses, from its index inside the node. Adjacent GPUs share a NIC when a node
  // has fewer NICs than GPUs (they sit under the same PCIe switch on DGX/HGX boards).
  std::int64_t nic_of_local_gpu(std::int64_t local_gpu) const;

  const HardwareProfile& hardware() const { return hw_; }

 private:
  Nanos op_ns(const Op&) const;  // compute_ns without the fills
  const HardwareProfile& hw_;
  const Workload& w_;
};

}  // namespace cpscope
