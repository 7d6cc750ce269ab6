// Tests for sim/timeline: name interning and interval ordering.
#include "sim/timeline.h"

#include <gtest/gtest.h>

namespace cpscope {
namespace {

TEST(Timeline, InternIsStableAndDeduplicates) {
  Timeline t;
  const auto a = t.intern("fwd/step0/attend");
  const auto b = t.intern("fwd/step0/sendrecv");
  EXPECT_EQ(a, 0u);
  EXPECT_EQ(b, 1u);
  EXPECT_EQ(t.intern("fwd/step0/attend"), a);
  EXPECT_EQ(t.name(a), "fwd/step0/attend");
  EXPECT_EQ(t.name(b), "fwd/step0/sendrecv");
  EXPECT_EQ(t.names().size(), 2u);
}

TEST(Timeline, CopiesKeepNames) {
  Timeline t;
  t.intern("x");
  Timeline u = t;
  EXPECT_EQ(u.intern("x"), 0u);
  EXPECT_EQ(u.intern("y"), 1u);
  EXPECT_EQ(t.names().size(), 1u);
}

TEST(Timeline, SortByStartOrdersByRankStartStreamStably) {
  Timeline t;
  auto iv = [](std::int32_t rank, Nanos start, std::int32_t stream, std::int64_t op) {
    Interval i;
    i.rank = rank;
    i.start = start;
    i.end = start + 1;
    i.stream = stream;
    i.op_id = op;
    return i;
  };
  t.intervals = {iv(1, 0, 0, 10), iv(0, 5, 1, 11), iv(0, 5, 0, 12), iv(0, 1, 1, 13), iv(0, 5, 0, 14)};
  t.sort_by_start();
  std::vector<std::int64_t> ops;
  for (const auto& i : t.intervals) ops.push_back(i.op_id);
  EXPECT_EQ(ops, (std::vector<std::int64_t>{13, 12, 14, 11, 10}));
}

TEST(Timeline, KindNames) {
  EXPECT_EQ(to_string(IntervalKind::Compute), "compute");
  EXPECT_EQ(to_string(IntervalKind::Comm), "comm");
  EXPECT_EQ(to_string(IntervalKind::Memory), "memory");
}

TEST(Timeline, IntervalDuration) {
  Interval i;
  i.start = 100;
  i.end = 350;
  EXPECT_EQ(i.duration(), 250);
}

}  // namespace
}  // namespace cpscope
