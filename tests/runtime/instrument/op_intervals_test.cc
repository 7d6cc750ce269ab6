// Host-side tests of the instrumentation's plain-C++ steps (runtime/instrument/correlation.h,
// op_intervals.h): correlation keys, synthetic CUPTI records -> op intervals, clock offsets and shifts,
// the gather's flattening, and the missing-op report. No GPU or CUDA library is needed.
#include <gtest/gtest.h>

#include <limits>

#include "runtime/instrument/correlation.h"
#include "runtime/instrument/op_intervals.h"
#include "sim/error.h"
#include "sim/schedule.h"

namespace cpscope::rt::instrument {
namespace {

bool same(const OpInterval& a, const OpInterval& b) {
  return a.rank == b.rank && a.op == b.op && a.start_ns == b.start_ns && a.end_ns == b.end_ns;
}

// `a` holds exactly `ops` (in order) and counts `attributed` and `unattributed` records.
void expect_attribution(const Attribution& a, const std::vector<OpInterval>& ops, std::int64_t attributed,
                        std::int64_t unattributed) {
  ASSERT_EQ(a.ops.size(), ops.size());
  for (std::size_t i = 0; i < ops.size(); ++i) EXPECT_TRUE(same(a.ops[i], ops[i])) << "interval " << i;
  EXPECT_EQ(a.attributed, attributed);
  EXPECT_EQ(a.unattributed, unattributed);
}

TEST(CorrelationKey, RoundTripsRankAndOp) {
  for (std::int32_t rank : {0, 1, 7, 4095, kMaxKeyRank})
    for (std::int32_t op : {0, 1, 1000, std::numeric_limits<std::int32_t>::max()}) {
      ASSERT_TRUE(key_packable(rank, op));
      const auto k = unpack_key(pack_key(rank, op));
      ASSERT_TRUE(k.has_value());
      EXPECT_EQ(k->rank, rank);
      EXPECT_EQ(k->op, op);
    }
}

TEST(CorrelationKey, DistinctRanksGiveDistinctKeys) {
  // Loopback: virtual ranks share one process, so (rank, op) must be what tells records apart.
  EXPECT_NE(pack_key(0, 5), pack_key(1, 5));
  EXPECT_NE(pack_key(1, 0), pack_key(0, 1));
}

TEST(CorrelationKey, RejectsForeignIdsAndOutOfRangeParts) {
  EXPECT_FALSE(unpack_key(0).has_value());
  EXPECT_FALSE(unpack_key(12345).has_value());            // another tool's small ids
  EXPECT_FALSE(unpack_key(pack_key(3, 4) ^ (1ull << 60)).has_value());  // wrong tag
  EXPECT_FALSE(key_packable(-1, 0));
  EXPECT_FALSE(key_packable(kMaxKeyRank + 1, 0));
  EXPECT_FALSE(key_packable(0, -1));
}

TEST(AttributeRecords, OpIntervalIsTheHullOfItsRecordsOnEveryStream) {
  // Op 3 of rank 1 launched a preprocess, a kernel and a memset (correlations 10, 11, 12) on two streams;
  // op 4 of rank 0 one NCCL kernel (20); correlation 30 has no cpscope id (a pass-start fill).
  const std::vector<GpuRecord> records = {
      {GpuRecordKind::Kernel, 11, 7, 1'500, 4'000},
      {GpuRecordKind::Kernel, 10, 7, 1'000, 1'400},
      {GpuRecordKind::Memset, 12, 9, 3'900, 4'200},
      {GpuRecordKind::Kernel, 20, 8, 2'000, 9'000},
      {GpuRecordKind::Memcpy, 30, 7, 500, 600},
      {GpuRecordKind::Kernel, 11, 7, 0, 0},  // untimed
  };
  const std::vector<CorrelationRecord> corr = {
      {10, pack_key(1, 3)}, {11, pack_key(1, 3)}, {12, pack_key(1, 3)}, {20, pack_key(0, 4)}, {30, 99}};
  const Attribution a = attribute_records(records, corr);
  expect_attribution(a, {{0, 4, 2'000, 9'000}, {1, 3, 1'000, 4'200}}, 4, 1);
  EXPECT_EQ(a.untimed, 1);
}

TEST(AttributeRecords, CorrelationRecordsMayArriveInAnyOrderOrBuffer) {
  // CUPTI writes the external correlation record before the API record, but buffers complete in any
  // order: attribution must not depend on the order of the two lists.
  const std::vector<GpuRecord> records = {{GpuRecordKind::Kernel, 2, 1, 10, 20}, {GpuRecordKind::Kernel, 1, 1, 30, 40}};
  const std::vector<CorrelationRecord> corr = {{1, pack_key(0, 0)}, {2, pack_key(0, 1)}};
  const Attribution a = attribute_records(records, corr);
  ASSERT_EQ(a.ops.size(), 2u);
  EXPECT_TRUE(same(a.ops[0], OpInterval{0, 0, 30, 40}));
  EXPECT_TRUE(same(a.ops[1], OpInterval{0, 1, 10, 20}));
}

TEST(AttributeRecords, RecordWithoutCorrelationIsUnattributed) {
  const Attribution a = attribute_records({{GpuRecordKind::Kernel, 5, 1, 10, 20}}, {});
  EXPECT_TRUE(a.ops.empty());
  EXPECT_EQ(a.unattributed, 1);
}

// The nccl transport's non-blocking communicators: NCCL launches a group's kernels from its own thread,
// where the op's external correlation (pushed on the issuing thread) does not reach. The launch window
// the transport notes around ncclGroupEnd claims the API calls that began inside it.
TEST(AttributeRecords, LaunchWindowsClaimCallsFromOtherThreads) {
  const std::uint64_t op5 = pack_key(2, 5), op6 = pack_key(2, 6);
  const std::vector<GpuRecord> records = {
      {GpuRecordKind::Kernel, 40, 3, 2'000, 9'000},   // NCCL kernel of op 5 (no external correlation)
      {GpuRecordKind::Kernel, 41, 4, 12'000, 15'000},  // NCCL kernel of op 6, launched at the window's end
      {GpuRecordKind::Memcpy, 42, 3, 1'000, 1'100},    // op 5's own packing copy: external correlation
      {GpuRecordKind::Kernel, 43, 3, 20'000, 21'000},  // launched outside any window: unattributed
      {GpuRecordKind::Kernel, 44, 3, 30'000, 31'000},  // launched where two windows overlap: unknown
  };
  const std::vector<CorrelationRecord> corr = {{42, op5}};
  const std::vector<ApiRecord> api = {{40, 1'500}, {41, 11'000}, {42, 1'050}, {43, 10'500}, {44, 25'500}};
  const std::vector<LaunchWindow> windows = {{op6, 10'600, 11'000}, {op5, 1'200, 1'600},
                                             {pack_key(2, 7), 24'000, 26'000}, {pack_key(2, 8), 25'000, 25'600}};
  const Attribution a = attribute_records(records, corr, api, windows);
  expect_attribution(a, {{2, 5, 1'000, 9'000}, {2, 6, 12'000, 15'000}}, 3, 2);
  EXPECT_EQ(a.windowed, 2);

  // Without the windows (or without the API records) the NCCL kernels are what they used to be: unattributed.
  EXPECT_EQ(attribute_records(records, corr).unattributed, 4);
  EXPECT_EQ(attribute_records(records, corr, {}, windows).unattributed, 4);
}

// A call with an external correlation keeps it even inside another op's window (the issuing thread's own
// launches: a transport's unpack right after the group).
TEST(AttributeRecords, ExternalCorrelationWinsOverAWindow) {
  const std::vector<GpuRecord> records = {{GpuRecordKind::Kernel, 7, 1, 100, 200}};
  const Attribution a = attribute_records(records, {{7, pack_key(0, 1)}}, {{7, 50}}, {{pack_key(0, 2), 0, 100}});
  ASSERT_EQ(a.ops.size(), 1u);
  EXPECT_EQ(a.ops[0].op, 1);
  EXPECT_EQ(a.windowed, 0);
}

TEST(ClockOffset, TheShortestRoundTripsMidpoint) {
  // True offset 1000 ns (this rank's clock ahead). Round 1: 4 us each way, the reference answering at
  // once. Round 2: a 300 ns round trip. Round 3: the reply held up 80 us (a descheduled rank), which a
  // mean or a median of the three would carry as error.
  const std::vector<ClockPing> rounds = {{10'000, 13'000, 18'000}, {30'000, 29'150, 30'300}, {50'000, 49'100, 130'000}};
  EXPECT_EQ(clock_offset(rounds), 1'000);
  // The answer is exact for a symmetric path and off by at most half the round trip for any other.
  EXPECT_EQ(clock_offset({{100, 5'050, 200}}), -4'900);
  EXPECT_EQ(clock_offset({{100, 100, 200}}), 50);
  // Near the end of the 64-bit range the midpoint does not overflow.
  constexpr std::int64_t big = std::numeric_limits<std::int64_t>::max() - 10;
  EXPECT_EQ(clock_offset({{big - 4, big - 2, big}}), 0);
  EXPECT_THROW(clock_offset({}), InternalError);
  EXPECT_THROW(clock_offset({{200, 150, 100}}), InternalError);  // a reply before its message
}

TEST(ClockOffset, ShiftMovesIntervalsOntoTheReferenceClock) {
  std::vector<OpInterval> ops = {{2, 0, 5'000, 6'000}, {2, 1, 5'500, 7'000}};
  shift_clock(ops, 1'000);  // this rank's clock runs 1000 ns ahead of rank 0's
  EXPECT_TRUE(same(ops[0], OpInterval{2, 0, 4'000, 5'000}));
  EXPECT_TRUE(same(ops[1], OpInterval{2, 1, 4'500, 6'000}));
}

TEST(Flatten, RoundTripsAndConcatenatesLikeAGather) {
  const std::vector<OpInterval> r0 = {{0, 0, 1, 2}, {0, 1, 3, 4}};
  const std::vector<OpInterval> r1 = {{1, 0, std::numeric_limits<std::int64_t>::max() - 1,
                                       std::numeric_limits<std::int64_t>::max()}};
  std::vector<std::int64_t> all = flatten(r0);
  EXPECT_EQ(all.size(), r0.size() * kFlatFields);
  const std::vector<std::int64_t> f1 = flatten(r1);
  all.insert(all.end(), f1.begin(), f1.end());  // what MPI_Gatherv assembles at rank 0
  const std::vector<OpInterval> back = unflatten(all);
  ASSERT_EQ(back.size(), 3u);
  EXPECT_TRUE(same(back[0], r0[0]));
  EXPECT_TRUE(same(back[1], r0[1]));
  EXPECT_TRUE(same(back[2], r1[0]));
  EXPECT_TRUE(unflatten({}).empty());
}

TEST(Flatten, RejectsMalformedArrays) {
  EXPECT_THROW(unflatten({0, 1, 2}), InternalError);
  EXPECT_THROW(unflatten({-1, 0, 0, 0}), InternalError);
  EXPECT_THROW(unflatten({0, std::int64_t{1} << 40, 0, 0}), InternalError);
}

TEST(MissingOps, ListsOpsOfTracedRanksWithoutIntervals) {
  Workload w;
  w.schedule = ScheduleKind::Ring;
  w.cp = 2;
  w.seq = 1024;
  w.heads = 4;
  w.kv_heads = 2;
  w.head_dim = 64;
  w.pass = PassSet::Fwd;
  validate(w);
  const Schedule s = make_schedule(w);
  std::vector<OpInterval> ops;
  for (const Op& op : s.ranks[1].ops) ops.push_back({1, op.id, 0, 1});
  EXPECT_TRUE(missing_ops(s, {1}, ops).empty());  // replay of rank 1: rank 0 is not expected
  const auto m = missing_ops(s, {0, 1}, ops);
  EXPECT_EQ(m.size(), s.ranks[0].ops.size());
  ops.erase(ops.begin());
  const auto m1 = missing_ops(s, {1}, ops);
  ASSERT_EQ(m1.size(), 1u);
  EXPECT_EQ(m1[0].rank, 1);
  EXPECT_EQ(m1[0].op, 0);
}

}  // namespace
}  // namespace cpscope::rt::instrument
