// Cost model: how long an op takes on its own (the engine adds sharing and interference).
#pragma once

#include "sim/hardware.h"
#include "sim/schedule.h"

namespace cpscope {

class CostModel {
 public:
  CostModel(const HardwareProfile& hw, const Workload& w) : hw_(hw), w_(w) {}
  // Attention (Attend/AttendBwd): launch latency + flops / achieved rate for the block shape.
  // DkvAdd / Layout: launch latency + bytes / memory bandwidth.
  Nanos compute_ns(const Op&) const;
  // One point-to-point message of `bytes` over a link class: latency + bytes / bandwidth.
  Nanos transfer_ns(Bytes bytes, bool inter_node, double bandwidth_share = 1.0) const;
  // Collectives by NCCL's formulas (ring all-gather / reduce-scatter: (n-1) steps of bytes/n;
  // all-to-all direct: (n-1) messages sharing the sender's egress), on the slowest link class the
  // group spans, with `nic_sharing` groups loading the NICs.
  Nanos collective_ns(const Op&, std::int64_t group_size, bool inter_node, double nic_sharing) const;

  const HardwareProfile& hardware() const { return hw_; }

 private:
  const HardwareProfile& hw_;
  const Workload& w_;
};

}  // namespace cpscope
