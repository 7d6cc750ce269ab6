// Workload: enum names, validation rules, JSON round trip and derived sizes.
#include "sim/workload.h"

#include <array>
#include <limits>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sim/error.h"
#include "sim/json_number.h"

namespace cpscope {
namespace {

// One table per enum: the spelling users type and the value.
template <class E>
using Names = std::vector<std::pair<std::string_view, E>>;

const Names<ScheduleKind>& schedule_names() {
  static const Names<ScheduleKind> n = {{"ring", ScheduleKind::Ring},
                                        {"zigzag-ring", ScheduleKind::ZigzagRing},
                                        {"allgather", ScheduleKind::AllGather},
                                        {"ulysses", ScheduleKind::Ulysses},
                                        {"hybrid", ScheduleKind::Hybrid}};
  return n;
}
const Names<Mask>& mask_names() {
  static const Names<Mask> n = {{"causal", Mask::Causal}, {"full", Mask::Full}};
  return n;
}
const Names<PassSet>& pass_names() {
  static const Names<PassSet> n = {{"fwd", PassSet::Fwd}, {"bwd", PassSet::Bwd}, {"fwd+bwd", PassSet::FwdBwd}};
  return n;
}
const Names<DType>& dtype_names() {
  static const Names<DType> n = {{"bf16", DType::BF16}, {"fp16", DType::FP16}, {"fp32", DType::FP32}};
  return n;
}
const Names<Balance>& balance_names() {
  static const Names<Balance> n = {{"zigzag", Balance::Zigzag}, {"contiguous", Balance::Contiguous}};
  return n;
}
const Names<DkvVariant>& dkv_names() {
  static const Names<DkvVariant> n = {{"fp32", DkvVariant::Fp32}, {"input", DkvVariant::Input}};
  return n;
}
const Names<Placement>& placement_names() {
  static const Names<Placement> n = {{"cp-inner", Placement::CpInner}, {"tp-inner", Placement::TpInner}};
  return n;
}

template <class E>
std::string_view name_of(const Names<E>& names, E e) {
  for (const auto& [s, v] : names)
    if (v == e) return s;
  throw InternalError("enum value without a name");
}

template <class E>
E parse_enum(const Names<E>& names, std::string_view s, const std::string& field) {
  std::string accepted;
  for (const auto& [n, v] : names) {
    if (n == s) return v;
    accepted += accepted.empty() ? "" : ", ";
    accepted += n;
  }
  throw InputError(field, fmt::format("'{}' is not one of: {}", s, accepted));
}

// Saturating helpers for the absurd-size check: products are computed in long double first so an
// overflow is reported instead of wrapping.
long double ld(std::int64_t v) { return static_cast<long double>(v); }

}  // namespace

std::string_view to_string(ScheduleKind e) { return name_of(schedule_names(), e); }
std::string_view to_string(Mask e) { return name_of(mask_names(), e); }
std::string_view to_string(PassSet e) { return name_of(pass_names(), e); }
std::string_view to_string(DType e) { return name_of(dtype_names(), e); }
std::string_view to_string(Balance e) { return name_of(balance_names(), e); }
std::string_view to_string(DkvVariant e) { return name_of(dkv_names(), e); }
std::string_view to_string(Placement e) { return name_of(placement_names(), e); }
ScheduleKind parse_schedule(std::string_view s, const std::string& f) { return parse_enum(schedule_names(), s, f); }
Mask parse_mask(std::string_view s, const std::string& f) { return parse_enum(mask_names(), s, f); }
PassSet parse_pass(std::string_view s, const std::string& f) { return parse_enum(pass_names(), s, f); }
DType parse_dtype(std::string_view s, const std::string& f) { return parse_enum(dtype_names(), s, f); }
Balance parse_balance(std::string_view s, const std::string& f) { return parse_enum(balance_names(), s, f); }
DkvVariant parse_dkv(std::string_view s, const std::string& f) { return parse_enum(dkv_names(), s, f); }
Placement parse_placement(std::string_view s, const std::string& f) { return parse_enum(placement_names(), s, f); }

int dtype_bytes(DType d) {
  switch (d) {
    case DType::BF16:
    case DType::FP16: return 2;
    case DType::FP32: return 4;
  }
  throw InternalError("unknown dtype");
}

const std::vector<ScheduleKind>& all_schedules() {
  static const std::vector<ScheduleKind> all = {ScheduleKind::Ring, ScheduleKind::ZigzagRing, ScheduleKind::AllGather,
                                                ScheduleKind::Ulysses, ScheduleKind::Hybrid};
  return all;
}

std::int64_t Workload::ulysses_size() const {
  switch (schedule) {
    case ScheduleKind::Ulysses: return cp;
    case ScheduleKind::Hybrid: return ulysses;
    default: return 1;
  }
}

std::int64_t Workload::kv_replicas() const {
  const std::int64_t U = ulysses_size();
  return U > kv_heads && kv_heads > 0 && U % kv_heads == 0 ? U / kv_heads : 1;
}

std::int64_t Workload::ring_size() const {
  switch (schedule) {
    case ScheduleKind::Ulysses: return 1;
    case ScheduleKind::Hybrid: return cp / ulysses;
    default: return cp;
  }
}

std::int64_t Workload::total_pairs() const {
  return mask == Mask::Causal ? seq * (seq + 1) / 2 : seq * seq;
}

Flops Workload::total_flops() const {
  const Flops fwd = 4 * batch * heads * head_dim * total_pairs();
  switch (pass) {
    case PassSet::Fwd: return fwd;
    case PassSet::Bwd: return fwd / 2 * 5;  // 2.5x; fwd is a multiple of 4, so exact
    case PassSet::FwdBwd: return fwd + fwd / 2 * 5;
  }
  throw InternalError("unknown pass");
}

std::int64_t Workload::global_rank(std::int64_t cp_rank) const {
  // CpInner: CP ranks are consecutive GPUs. TpInner: the TP group is innermost, so consecutive CP
  // ranks are `tp` GPUs apart.
  return placement == Placement::CpInner ? cp_rank : cp_rank * tp;
}

bool tp_spans_nodes(const Workload& w) {
  return w.tp > 1 && w.placement == Placement::CpInner && w.cp * w.tp > w.gpus_per_node;
}

std::string placement_note(const Workload& w) {
  if (!tp_spans_nodes(w)) return {};
  return fmt::format("placement cp-inner puts each TP group of {} GPUs {} GPUs apart, across nodes of {}: the "
                     "simulator times the CP group only, but TP traffic would cross the network; Megatron places TP "
                     "innermost (--placement tp-inner)",
                     w.tp, w.cp, w.gpus_per_node);
}

std::string invalid_reason(const Workload& w) {
  try {
    validate(w);
  } catch (const InputError& e) {
    return e.what();
  }
  return {};
}

void validate(const Workload& w) {
  auto positive = [](const char* field, std::int64_t v) {
    if (v <= 0) throw InputError(field, fmt::format("{} must be a positive integer", v));
  };
  positive("batch", w.batch);
  positive("seq", w.seq);
  positive("heads", w.heads);
  positive("kv_heads", w.kv_heads);
  positive("head_dim", w.head_dim);
  positive("cp", w.cp);
  positive("ulysses", w.ulysses);
  positive("kv_head_groups", w.kv_head_groups);
  positive("gpus_per_node", w.gpus_per_node);
  positive("tp", w.tp);
  positive("dp", w.dp);

  // Absurd sizes: everything downstream counts in int64 (FLOPs, bytes). Refuse what would overflow.
  // Forward + backward FLOPs are 14·B·H·D·pairs with pairs <= S².
  constexpr long double kMax = static_cast<long double>(std::numeric_limits<std::int64_t>::max());
  if (ld(w.seq) * ld(w.seq) * ld(w.batch) * ld(w.heads) * ld(w.head_dim) * 14 > kMax)
    throw InputError("seq", fmt::format("batch·heads·head_dim·seq² = {}·{}·{}·{}² is too large to count in 64-bit FLOPs",
                                        w.batch, w.heads, w.head_dim, w.seq));
  if (w.cp > 65536) throw InputError("cp", fmt::format("{} exceeds the largest supported CP group (65536)", w.cp));
  if (w.seq < w.cp)
    throw InputError("seq", fmt::format("{} tokens cannot be split over cp = {} ranks (need at least one token each)",
                                        w.seq, w.cp));

  if (w.heads % w.kv_heads != 0)
    throw InputError("kv_heads", fmt::format("heads = {} is not divisible by kv_heads = {} (GQA needs H % Hkv == 0)",
                                             w.heads, w.kv_heads));
  if (w.seq % w.cp != 0)
    throw InputError("seq", fmt::format("{} is not divisible by cp = {} (every rank holds S/N tokens)", w.seq, w.cp));

  if (w.schedule != ScheduleKind::Hybrid && w.ulysses != 1 &&
      !(w.schedule == ScheduleKind::Ulysses && w.ulysses == w.cp))
    throw InputError("ulysses", fmt::format("{} is only meaningful for the hybrid schedule (ulysses uses U = cp)", w.ulysses));
  if (w.schedule != ScheduleKind::AllGather && w.kv_head_groups != 1)
    throw InputError("kv_head_groups", fmt::format("{} is only meaningful for the allgather schedule", w.kv_head_groups));

  const std::int64_t U = w.ulysses_size();
  if (w.schedule == ScheduleKind::Ulysses || w.schedule == ScheduleKind::Hybrid) {
    if (w.cp % U != 0)
      throw InputError("ulysses", fmt::format("cp = {} is not divisible by ulysses = {} (N = U·R)", w.cp, U));
    if (w.heads % U != 0)
      throw InputError("heads", fmt::format("{} is not divisible by the Ulysses group size {} (heads are split over it)",
                                            w.heads, U));
    if (w.kv_heads % U != 0 && U % w.kv_heads != 0)
      throw InputError("kv_heads",
                       fmt::format("{} and the Ulysses group size {} do not divide one another (KV heads are split "
                                   "over the group, or repeated up to it when there are fewer)",
                                   w.kv_heads, U));
  }
  const std::int64_t R = w.ring_size();
  const bool zigzag = w.schedule == ScheduleKind::ZigzagRing ||
                      ((w.schedule == ScheduleKind::AllGather || w.schedule == ScheduleKind::Hybrid) &&
                       w.balance == Balance::Zigzag);
  if (zigzag && w.schedule == ScheduleKind::Hybrid && w.seq % (2 * R * U) != 0)
    throw InputError("seq", fmt::format("{} is not divisible by 2·R·U = 2·{}·{} = {} (zigzag puts two chunks on each ring "
                                        "rank, split over its Ulysses group)",
                                        w.seq, R, U, 2 * R * U));
  if (zigzag && w.seq % (2 * R) != 0)
    throw InputError("seq", fmt::format("{} is not divisible by 2·cp = {} (zigzag puts two chunks of S/(2N) on each rank)",
                                        w.seq, 2 * R));
  if (w.schedule == ScheduleKind::AllGather && w.kv_heads % w.kv_head_groups != 0)
    throw InputError("kv_head_groups",
                     fmt::format("kv_heads = {} is not divisible by kv_head_groups = {}", w.kv_heads, w.kv_head_groups));

  if (w.placement == Placement::TpInner && w.tp > 1 && w.gpus_per_node % std::min(w.tp, w.gpus_per_node) != 0)
    throw InputError("tp", fmt::format("{} does not tile a node of {} GPUs", w.tp, w.gpus_per_node));
  if (w.cp > w.gpus_per_node && w.placement == Placement::CpInner && w.cp % w.gpus_per_node != 0)
    throw InputError("cp", fmt::format("{} is larger than a node ({} GPUs) but not a multiple of it (CP groups fill whole "
                                       "nodes)",
                                       w.cp, w.gpus_per_node));
  if (w.cp <= w.gpus_per_node && w.placement == Placement::CpInner && w.gpus_per_node % w.cp != 0)
    throw InputError("cp", fmt::format("{} does not divide the node size {} (CP groups must tile nodes)", w.cp,
                                       w.gpus_per_node));
}

nlohmann::json to_json(const Workload& w) {
  return nlohmann::json{
      {"batch", w.batch},
      {"seq", w.seq},
      {"heads", w.heads},
      {"kv_heads", w.kv_heads},
      {"head_dim", w.head_dim},
      {"dtype", to_string(w.dtype)},
      {"mask", to_string(w.mask)},
      {"pass", to_string(w.pass)},
      {"schedule", to_string(w.schedule)},
      {"cp", w.cp},
      {"ulysses", w.ulysses},
      {"balance", to_string(w.balance)},
      {"dkv", to_string(w.dkv)},
      {"kv_head_groups", w.kv_head_groups},
      {"gpus_per_node", w.gpus_per_node},
      {"tp", w.tp},
      {"dp", w.dp},
      {"placement", to_string(w.placement)},
  };
}

Workload workload_from_json(const nlohmann::json& j, Workload w) {
  if (!j.is_object()) throw InputError("config", "must be a JSON object of workload fields");
  auto integer = [](const std::string& key, const nlohmann::json& v) -> std::int64_t {
    const std::optional<std::int64_t> i = json_integer(v);
    if (!i) throw InputError(key, fmt::format("must be an integer (within 64 bits), got {}", v.dump().substr(0, 40)));
    return *i;
  };
  auto text = [](const std::string& key, const nlohmann::json& v) -> std::string {
    if (!v.is_string()) throw InputError(key, fmt::format("must be a string, got {}", v.dump()));
    return v.get<std::string>();
  };
  for (const auto& [key, v] : j.items()) {
    if (key == "batch") w.batch = integer(key, v);
    else if (key == "seq") w.seq = integer(key, v);
    else if (key == "heads") w.heads = integer(key, v);
    else if (key == "kv_heads") w.kv_heads = integer(key, v);
    else if (key == "head_dim") w.head_dim = integer(key, v);
    else if (key == "cp") w.cp = integer(key, v);
    else if (key == "ulysses") w.ulysses = integer(key, v);
    else if (key == "kv_head_groups") w.kv_head_groups = integer(key, v);
    else if (key == "gpus_per_node") w.gpus_per_node = integer(key, v);
    else if (key == "tp") w.tp = integer(key, v);
    else if (key == "dp") w.dp = integer(key, v);
    else if (key == "dtype") w.dtype = parse_dtype(text(key, v), key);
    else if (key == "mask") w.mask = parse_mask(text(key, v), key);
    else if (key == "pass") w.pass = parse_pass(text(key, v), key);
    else if (key == "schedule") w.schedule = parse_schedule(text(key, v), key);
    else if (key == "balance") w.balance = parse_balance(text(key, v), key);
    else if (key == "dkv") w.dkv = parse_dkv(text(key, v), key);
    else if (key == "placement") w.placement = parse_placement(text(key, v), key);
    else
      throw InputError(key, "unknown field (known: batch, seq, heads, kv_heads, head_dim, dtype, mask, pass, schedule, "
                            "cp, ulysses, balance, dkv, kv_head_groups, gpus_per_node, tp, dp, placement)");
  }
  return w;
}

}  // namespace cpscope
