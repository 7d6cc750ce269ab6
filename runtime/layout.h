// Where a rank's data lives: the tensors a rank of a schedule allocates, which tensor each Schedule IR
// operand (BufferKind, slot) names, and which global tokens and heads each tensor's rows hold.
// Shared by every backend, so the host and CUDA backends run the same schedule the same way.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "sim/schedule.h"
#include "sim/workload.h"

namespace cpscope::rt {

// Every tensor is [plane][batch][rows][heads][dim] (BSHD per plane). Planes: 1 (Q, O, dO, dQ, LSE),
// 2 (K, V or dK, dV), 4 (TransformerEngine's packed [K, V, dK, dV]).
// clang-format off
enum class TensorId : std::uint8_t {
  QIn, KvIn, DoIn,             // inputs in the rank's sequence layout (s rows, all heads)
  OOut, DqOut, DkvOut,         // outputs a collective writes in sequence layout (all-to-all, reduce-scatter)
  Q, O, Lse, Do, Dq,           // what attention reads and writes (head layout after a Ulysses all-to-all)
  Kv0, Kv1, Kv2,               // ring K/V slots (0: own block), or gathered K/V slots 0, 1 (allgather)
  Dkv0, Dkv1,                  // dK/dV accumulators (ring fp32 slots, allgather's gathered-range dK/dV)
  KvDkv0, KvDkv1,              // TransformerEngine packed slots
  DkvScratch,                  // one backward block's dK/dV before DkvAdd
  DkvStage,                    // allgather, dK/dV in the input dtype: a block's fp32 dK/dV before it is added
  DkvReplicas,                 // Ulysses with r = U/Hkv > 1: copies 1..r-1 of each KV head's dK/dV from the
                               // backward all-to-all (sequence layout, head (i-1)·Hkv + j = copy i of head j)
  kCount
};
// clang-format on
inline constexpr int kNumTensors = static_cast<int>(TensorId::kCount);
std::string_view to_string(TensorId);

// Element class of a tensor. On the GPU, Input tensors hold the workload dtype and Acc tensors fp32;
// the host backend keeps everything in double.
enum class Precision : std::uint8_t { Input, Acc };

struct TensorDesc {
  bool used = false;       // allocated by this rank
  TensorId alias_of = TensorId::kCount;  // this id names another tensor's storage (kCount: none)
  std::int64_t rows = 0;   // tokens
  std::int32_t heads = 0;
  std::int32_t head_base = 0;  // global head of tensor head 0 (query heads, or KV heads for K/V; for the
                               // working K/V of a Ulysses rank with repeated KV heads, among the Hkv·r)
  std::int32_t dim = 0;        // head_dim, or 1 for LSE
  std::int32_t planes = 1;
  Precision precision = Precision::Input;
  bool kv_heads = false;   // heads are KV heads (K/V, dK/dV)
  // Element count of the tensor, batch included.
  std::int64_t elements(std::int64_t batch) const { return planes * batch * rows * heads * dim; }
};

// A rectangular part of a tensor: planes × rows × heads (all of dim), every batch entry.
struct Region {
  TensorId tensor = TensorId::kCount;
  std::int32_t plane = 0, planes = 1;
  std::int64_t row = 0, rows = 0;
  std::int32_t head = 0, heads = 0;
  std::int64_t elements(std::int64_t batch, std::int32_t dim) const { return planes * batch * rows * heads * dim; }
};

// Global token of each sequence-layout row of CP rank r (what the rank's inputs and outputs hold).
std::vector<std::int64_t> seq_tokens(const Workload& w, std::int64_t rank);

class RankLayout {
 public:
  RankLayout(const Workload& w, std::int32_t rank);

  const Workload& workload() const { return w_; }
  std::int32_t rank() const { return rank_; }
  const TensorDesc& desc(TensorId t) const { return desc_[static_cast<int>(t)]; }
  // The tensor whose storage `t` uses (itself unless it is an alias).
  TensorId storage(TensorId t) const;
  // Whether a message over `rs` (their concatenation, elements of `message_elem_bytes`) is one contiguous
  // span of its tensor in [plane][batch][rows][heads][dim] order: one region, every head, every row unless
  // it is one plane of batch 1, and the tensor's own element size (Acc tensors: 4, else the workload
  // dtype's). A transport sends such a message from, or receives it into, the tensor itself; any other it
  // packs into or unpacks from a staging buffer (Op::staged_send/recv count those copies for the
  // simulator).
  bool one_span(const std::vector<Region>& rs, std::int64_t message_elem_bytes) const;

  // The tensor an IR operand names. Throws InternalError for an operand this schedule never uses.
  TensorId operand(BufferKind kind, std::int32_t slot) const;
  // Global KV head of head 0 of the K/V tensor `t` as op `op` sees it (gathered allgather slots hold
  // the KV heads of the op's head group). With KV heads repeated for Ulysses (r > 1) the working K/V
  // tensors count among the Hkv·r repeated heads, the ones attention indexes with the ratio
  // attention_gqa_ratio(): rank u's head is u, a copy of input head u/r.
  std::int32_t kv_head_base(TensorId t, const Op& op) const;
  // Query heads per KV head as attention sees them: H / (Hkv·r).
  std::int32_t attention_gqa_ratio() const {
    return static_cast<std::int32_t>(w_.heads / (w_.kv_heads * replicas_));
  }

  // Global tokens of the rows of the working tensors Q, O, Lse, Do, Dq (the ring's local sequence).
  const std::vector<std::int64_t>& work_tokens() const { return work_tokens_; }
  // Global tokens of the rows of the sequence-layout tensors (QIn, KvIn, DoIn, OOut, DqOut, DkvOut).
  const std::vector<std::int64_t>& io_tokens() const { return io_tokens_; }
  // Global tokens of the rows of the ring block of ring position j (hybrid: a group's sequence).
  std::vector<std::int64_t> block_tokens(std::int64_t ring_pos) const;

  // Where the results of each pass end up.
  struct Result {
    Region region;                       // rows × heads of the result
    const std::vector<std::int64_t>* tokens;  // global token of each row of the region
    std::int32_t head_base;              // global head of the region's first head
  };
  Result out_o() const;
  Result out_lse() const;
  Result out_dq() const;
  Result out_dk() const;  // plane of K in the dK/dV tensor
  Result out_dv() const;

  // Tensors a backward-only schedule reads that a forward would have left: (tensor, tokens of its rows,
  // global head base, plane meaning: 0 = O/Q/K, 1 = V). Filled from the reference by the loaders.
  enum class Source : std::uint8_t { Q, K, V, O, Lse, Do };
  struct Load {
    TensorId tensor;
    std::int32_t plane;
    Source source;
    std::vector<std::int64_t> tokens;
    std::int32_t head_base;
  };
  // Inputs of pass set `passes`: sequence-layout Q, K, V (and dO, plus everything a backward-only run
  // needs: O and LSE where attention reads them, the head-layout Q/K/V of a Ulysses group, the saved
  // K/V block of the TransformerEngine backward).
  std::vector<Load> loads() const;

  // Ulysses: copies of each KV head the all-to-all moves (Workload::kv_replicas), and the input KV head
  // the rank packs for group position v (head (v·hk)/r of hk heads).
  std::int64_t kv_replicas() const { return replicas_; }
  std::int32_t packed_kv_head(std::int64_t v) const;
  // Input KV head of which a repeated head (one of the Hkv·r) is a copy.
  std::int32_t input_kv_head(std::int64_t repeated) const;

  std::int64_t ring_size() const { return R_; }
  std::int64_t ring_pos() const { return k_; }
  std::int32_t ring_member(std::int64_t j) const;

 private:
  void use(TensorId t, std::int64_t rows, std::int32_t heads, std::int32_t head_base, std::int32_t planes,
           Precision p, bool kv, std::int32_t dim = -1);
  void alias(TensorId t, TensorId of);

  Workload w_;
  std::int32_t rank_;
  std::int64_t U_ = 1, R_ = 1, k_ = 0, u_ = 0, replicas_ = 1;
  std::array<TensorDesc, kNumTensors> desc_{};
  std::vector<std::int64_t> io_tokens_, work_tokens_;
};

}  // namespace cpscope::rt
