// Tests for sim/workload: validation rules (each rejection names its field), JSON round trip, sizes.
#include "sim/workload.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sim/error.h"
#include "sim/json_number.h"

namespace cpscope {
namespace {

// Expects validate() to throw InputError for `field` with `fragment` in the message.
void expect_rejected(const Workload& w, const std::string& field, const std::string& fragment) {
  try {
    validate(w);
    FAIL() << "expected rejection of " << field;
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), field) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
  EXPECT_FALSE(invalid_reason(w).empty());
}

TEST(Workload, DefaultsAreValidLlama8bOnOneNode) {
  Workload w;
  EXPECT_NO_THROW(validate(w));
  EXPECT_EQ(w.seq, 131072);
  EXPECT_EQ(w.heads, 32);
  EXPECT_EQ(w.kv_heads, 8);
  EXPECT_EQ(w.head_dim, 128);
  EXPECT_EQ(w.cp, 8);
  EXPECT_EQ(w.gpus_per_node, 8);
  EXPECT_EQ(invalid_reason(w), "");
}

TEST(Workload, TotalFlopsCountsPairsExactly) {
  Workload w;
  w.batch = 2;
  w.seq = 10;
  w.heads = 4;
  w.kv_heads = 2;
  w.head_dim = 8;
  w.cp = 2;
  w.mask = Mask::Causal;
  w.pass = PassSet::Fwd;
  EXPECT_EQ(w.total_pairs(), 55);
  EXPECT_EQ(w.total_flops(), 4 * 2 * 4 * 8 * 55);
  w.pass = PassSet::Bwd;
  EXPECT_EQ(w.total_flops(), 10 * 2 * 4 * 8 * 55);
  w.pass = PassSet::FwdBwd;
  EXPECT_EQ(w.total_flops(), 14 * 2 * 4 * 8 * 55);
  w.mask = Mask::Full;
  EXPECT_EQ(w.total_pairs(), 100);
}

TEST(Workload, RejectsNonPositiveSizes) {
  for (auto [field, setter] : std::vector<std::pair<std::string, void (*)(Workload&)>>{
           {"batch", [](Workload& w) { w.batch = 0; }},
           {"seq", [](Workload& w) { w.seq = -5; }},
           {"heads", [](Workload& w) { w.heads = 0; }},
           {"kv_heads", [](Workload& w) { w.kv_heads = -1; }},
           {"head_dim", [](Workload& w) { w.head_dim = 0; }},
           {"cp", [](Workload& w) { w.cp = 0; }},
           {"gpus_per_node", [](Workload& w) { w.gpus_per_node = 0; }}}) {
    Workload w;
    setter(w);
    expect_rejected(w, field, "must be a positive integer");
  }
}

TEST(Workload, RejectsZigzagWhenSeqNotDivisibleBy2N) {
  Workload w;
  w.schedule = ScheduleKind::ZigzagRing;
  w.cp = 8;
  w.seq = 8 * 1001;  // divisible by N, not by 2N
  expect_rejected(w, "seq", "2·cp");
  w.schedule = ScheduleKind::Ring;
  EXPECT_NO_THROW(validate(w));
}

TEST(Workload, RejectsSeqNotDivisibleByCp) {
  Workload w;
  w.schedule = ScheduleKind::Ring;
  w.seq = 1001;
  expect_rejected(w, "seq", "not divisible by cp");
}

TEST(Workload, RejectsGqaMismatch) {
  Workload w;
  w.heads = 32;
  w.kv_heads = 6;
  expect_rejected(w, "kv_heads", "H % Hkv");
}

TEST(Workload, RejectsUlyssesHeadSplits) {
  Workload w;
  w.schedule = ScheduleKind::Ulysses;
  w.cp = 8;
  w.heads = 12;
  w.kv_heads = 4;
  expect_rejected(w, "heads", "Ulysses group size 8");
  // Fewer KV heads than the group: each is repeated U/Hkv times (one per rank), as DeepSpeed-Ulysses and
  // USP do; that needs Hkv | U.
  w.heads = 32;
  w.kv_heads = 4;
  EXPECT_NO_THROW(validate(w));
  EXPECT_EQ(w.kv_replicas(), 2);
  EXPECT_EQ(w.ulysses_kv_heads(), 1);
  w.kv_heads = 1;
  EXPECT_NO_THROW(validate(w));
  EXPECT_EQ(w.kv_replicas(), 8);
  w.kv_heads = 16;  // more KV heads than the group: split, not repeated
  EXPECT_NO_THROW(validate(w));
  EXPECT_EQ(w.kv_replicas(), 1);
  EXPECT_EQ(w.ulysses_kv_heads(), 2);
  w.heads = 48;
  w.kv_heads = 6;  // neither divides the other
  expect_rejected(w, "kv_heads", "Ulysses group size 8 do not divide one another");
  w.schedule = ScheduleKind::Ring;  // no all-to-all: nothing to repeat
  w.kv_heads = 2;
  w.heads = 32;
  EXPECT_EQ(w.kv_replicas(), 1);
  EXPECT_EQ(w.ulysses_kv_heads(), 2);
}

TEST(Workload, RejectsHybridWhenUDoesNotDivideN) {
  Workload w;
  w.schedule = ScheduleKind::Hybrid;
  w.cp = 8;
  w.ulysses = 3;
  w.heads = 24;
  w.kv_heads = 3;
  expect_rejected(w, "ulysses", "N = U·R");
  w.ulysses = 2;
  w.heads = 32;
  w.kv_heads = 8;
  EXPECT_NO_THROW(validate(w));
  EXPECT_EQ(w.ring_size(), 4);
  EXPECT_EQ(w.ulysses_size(), 2);
}

TEST(Workload, NotesTpGroupsSpanningNodes) {
  Workload w;  // 8 GPUs per node
  w.cp = 4;
  w.tp = 2;
  EXPECT_FALSE(tp_spans_nodes(w));  // cp-inner: CP ranks c and their TP peers c + 4 share a node
  EXPECT_EQ(placement_note(w), "");
  w.cp = 8;
  EXPECT_TRUE(tp_spans_nodes(w));
  EXPECT_NE(placement_note(w).find("--placement tp-inner"), std::string::npos);
  w.placement = Placement::TpInner;
  EXPECT_FALSE(tp_spans_nodes(w));
  w.placement = Placement::CpInner;
  w.tp = 1;
  EXPECT_FALSE(tp_spans_nodes(w));
}

TEST(Workload, RejectsOptionsOfOtherSchedules) {
  Workload w;
  w.schedule = ScheduleKind::Ring;
  w.ulysses = 2;
  expect_rejected(w, "ulysses", "only meaningful for the hybrid");
  w.ulysses = 1;
  w.kv_head_groups = 2;
  expect_rejected(w, "kv_head_groups", "only meaningful for the allgather");
  w.schedule = ScheduleKind::AllGather;
  w.kv_head_groups = 3;
  expect_rejected(w, "kv_head_groups", "not divisible");
}

TEST(Workload, RejectsCpThatDoesNotTileNodes) {
  Workload w;
  w.schedule = ScheduleKind::Ring;
  w.cp = 12;
  w.seq = 12 * 1024;
  expect_rejected(w, "cp", "multiple");
  w.cp = 3;
  w.seq = 3 * 1024;
  expect_rejected(w, "cp", "tile nodes");
}

TEST(Workload, RejectsAbsurdSizes) {
  Workload w;
  w.seq = std::int64_t{1} << 40;
  w.cp = 8;
  expect_rejected(w, "seq", "too large");
}

TEST(Workload, EnumParsersNameTheFieldAndTheChoices) {
  EXPECT_EQ(parse_schedule("zigzag-ring"), ScheduleKind::ZigzagRing);
  EXPECT_EQ(parse_pass("fwd+bwd"), PassSet::FwdBwd);
  try {
    parse_mask("sliding", "mask");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "mask");
    EXPECT_NE(std::string(e.what()).find("causal, full"), std::string::npos);
  }
  for (ScheduleKind k : all_schedules()) EXPECT_EQ(parse_schedule(to_string(k)), k);
}

TEST(Workload, JsonRoundTripAndUnknownFields) {
  Workload w;
  w.schedule = ScheduleKind::Hybrid;
  w.ulysses = 2;
  w.mask = Mask::Full;
  w.dkv = DkvVariant::Input;
  const auto j = to_json(w);
  const Workload back = workload_from_json(j);
  EXPECT_EQ(to_json(back), j);

  try {
    workload_from_json(nlohmann::json{{"seq", 1024}, {"sequence", 5}});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "sequence");
    EXPECT_NE(std::string(e.what()).find("unknown field"), std::string::npos);
  }
  EXPECT_THROW(workload_from_json(nlohmann::json{{"seq", "big"}}), InputError);
  EXPECT_THROW(workload_from_json(nlohmann::json{{"seq", 1.5}}), InputError);
  EXPECT_THROW(workload_from_json(nlohmann::json::array()), InputError);
}

TEST(Workload, Placement) {
  Workload w;
  w.schedule = ScheduleKind::Ring;
  w.cp = 16;
  w.gpus_per_node = 8;
  w.seq = 16 * 1024;
  EXPECT_EQ(w.node_of(7), 0);
  EXPECT_EQ(w.node_of(8), 1);
  w.placement = Placement::TpInner;
  w.tp = 4;
  EXPECT_EQ(w.global_rank(3), 12);
  EXPECT_EQ(w.node_of(1), 0);
  EXPECT_EQ(w.node_of(2), 1);
}

// One rule for integers in every JSON reader: integral values within int64, as JSON integers or floats.
TEST(JsonInteger, IntegralValuesWithin64Bits) {
  using nlohmann::json;
  EXPECT_EQ(json_integer(json(2)), 2);
  EXPECT_EQ(json_integer(json(-3)), -3);
  EXPECT_EQ(json_integer(json(2.0)), 2);
  EXPECT_EQ(json_integer(json::parse("9223372036854775807")), INT64_MAX);
  EXPECT_EQ(json_integer(json(-9223372036854775808.0)), INT64_MIN);
  for (const json& bad : {json(2.5), json(1e30), json(9223372036854775808.0), json::parse("18446744073709551615"),
                          json(std::nan("")), json("2"), json(true), json(nullptr), json::array({1})})
    EXPECT_FALSE(json_integer(bad).has_value()) << bad.dump();
  // The workload reader takes the rule: 2.0 is 2; a value beyond 64 bits is refused, not wrapped.
  EXPECT_EQ(workload_from_json(json::parse(R"({"cp": 4.0})")).cp, 4);
  try {
    workload_from_json(json::parse(R"({"seq": 18446744073709551615})"));
    ADD_FAILURE() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("seq: must be an integer"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cpscope
