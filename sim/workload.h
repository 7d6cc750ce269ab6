// Workload: the attention layer, the CP schedule and the mesh placement to simulate or run.
// Parsed once (flags or JSON) into this immutable value and validated by validate().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "sim/units.h"

namespace cpscope {

enum class ScheduleKind : std::uint8_t { Ring, ZigzagRing, AllGather, Ulysses, Hybrid };
enum class Mask : std::uint8_t { Causal, Full };
// Which passes a schedule contains. Ops carry OpPass (Fwd or Bwd).
enum class PassSet : std::uint8_t { Fwd, Bwd, FwdBwd };
enum class DType : std::uint8_t { BF16, FP16, FP32 };
// How the sequence is sharded over the ring (ring is always contiguous, zigzag-ring always zigzag).
// Applies to allgather and to the ring part of hybrid.
enum class Balance : std::uint8_t { Contiguous, Zigzag };
// How dK/dV travel in the backward of ring schedules:
//  Fp32:  PyTorch context_parallel / ring-flash-attention: forward ring direction, dK/dV accumulators
//         in fp32 on their own stream, N transfers (the last brings each accumulator home).
//  Input: TransformerEngine: the ring reversed, starting from forward's last K/V block; each step's
//         message carries [K/V of this step; dK/dV accumulator of the previous step] in the input dtype,
//         N-1 K/V transfers and N-1 dK/dV transfers. For allgather this picks the reduce-scatter dtype.
enum class DkvVariant : std::uint8_t { Fp32, Input };
// How a CP group sits on the nodes. CpInner: CP ranks are consecutive GPUs (fill a node first).
// TpInner: the TP group is innermost, so CP neighbours are `tp` GPUs apart and up to tp CP groups
// share each node's NICs.
enum class Placement : std::uint8_t { CpInner, TpInner };

std::string_view to_string(ScheduleKind);
std::string_view to_string(Mask);
std::string_view to_string(PassSet);
std::string_view to_string(DType);
std::string_view to_string(Balance);
std::string_view to_string(DkvVariant);
std::string_view to_string(Placement);
// Parsers throw InputError(field, ...) listing the accepted names.
ScheduleKind parse_schedule(std::string_view s, const std::string& field = "schedule");
Mask parse_mask(std::string_view s, const std::string& field = "mask");
PassSet parse_pass(std::string_view s, const std::string& field = "pass");
DType parse_dtype(std::string_view s, const std::string& field = "dtype");
Balance parse_balance(std::string_view s, const std::string& field = "balance");
DkvVariant parse_dkv(std::string_view s, const std::string& field = "dkv");
Placement parse_placement(std::string_view s, const std::string& field = "placement");
int dtype_bytes(DType);
const std::vector<ScheduleKind>& all_schedules();

struct Workload {
  // Attention layer (defaults: a Llama-3-8B-like layer, 128K tokens).
  std::int64_t batch = 1;
  std::int64_t seq = 131072;   // S, global sequence length in tokens
  std::int64_t heads = 32;     // H, query heads
  std::int64_t kv_heads = 8;   // Hkv, key/value heads (GQA when < heads)
  std::int64_t head_dim = 128; // D
  DType dtype = DType::BF16;
  Mask mask = Mask::Causal;
  PassSet pass = PassSet::FwdBwd;

  // Schedule.
  ScheduleKind schedule = ScheduleKind::ZigzagRing;
  std::int64_t cp = 8;        // N, CP group size
  std::int64_t ulysses = 1;   // U, Ulysses group size (hybrid; ulysses uses U = N)
  Balance balance = Balance::Zigzag;  // allgather and hybrid's ring
  DkvVariant dkv = DkvVariant::Fp32;
  std::int64_t kv_head_groups = 1;  // allgather: pipeline the gather over this many KV-head groups

  // Mesh placement (the CP group is simulated in full; other groups only load shared NICs).
  std::int64_t gpus_per_node = 8;
  std::int64_t tp = 1;
  std::int64_t dp = 1;
  Placement placement = Placement::CpInner;

  // Derived sizes (valid after validate()).
  std::int64_t ring_size() const;      // R: ranks in the ring (N for ring kinds, N/U for hybrid, 1 for ulysses)
  std::int64_t ulysses_size() const;   // U: N for ulysses, `ulysses` for hybrid, 1 otherwise
  // r: how many copies of each KV head a Ulysses all-to-all moves. U / Hkv when the group is larger than
  // the KV heads (DeepSpeed-Ulysses and USP repeat each KV head up to U, so every rank holds one; needs
  // Hkv | U), else 1. The backward sums the r copies of each head's dK/dV after its all-to-all.
  std::int64_t kv_replicas() const;
  // KV heads per rank after a Ulysses all-to-all: Hkv·r/U (Hkv for the other schedules, where U = 1).
  std::int64_t ulysses_kv_heads() const { return kv_heads * kv_replicas() / ulysses_size(); }
  std::int64_t local_tokens() const { return seq / cp; }  // s
  Bytes elem_bytes() const { return dtype_bytes(dtype); }
  // Unmasked query-key pairs of the whole (single-device) attention, per batch and head.
  std::int64_t total_pairs() const;
  // 4·B·H·D per pair forward, 2.5x that backward, summed over the passes in `pass`.
  Flops total_flops() const;
  // Global rank of CP rank r in the first CP group, and its node, under `placement`.
  std::int64_t global_rank(std::int64_t cp_rank) const;
  std::int64_t node_of(std::int64_t cp_rank) const { return global_rank(cp_rank) / gpus_per_node; }
};

// Every rule a workload must satisfy; throws InputError naming the first field that breaks one.
// (E.g. "seq: 1000 is not divisible by 2·cp = 16 (zigzag puts two chunks on each rank)".)
void validate(const Workload&);
// Same rules, returning the message instead (empty when valid). Used by sweep/plan to list rejects.
std::string invalid_reason(const Workload&);
// Whether each TP group spans nodes: placement cp-inner with cp·tp > gpus_per_node puts a CP rank's TP
// peers cp GPUs apart. Valid, but TP traffic (not simulated) then crosses the network.
bool tp_spans_nodes(const Workload&);
// The advice the tools print for such a workload (empty otherwise).
std::string placement_note(const Workload&);

// JSON round trip. from_json rejects unknown fields and wrong types with the field name.
nlohmann::json to_json(const Workload&);
Workload workload_from_json(const nlohmann::json&, Workload base = {});

}  // namespace cpscope
