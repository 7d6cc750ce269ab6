// Tests for sim/progress: drawn only on a terminal, only after the delay, erased by finish().
#include "sim/progress.h"

#include <chrono>
#include <sstream>

#include <gtest/gtest.h>

namespace cpscope {
namespace {

using namespace std::chrono_literals;

struct FakeClock {
  Progress::Clock::time_point now{};
  Progress::NowFn fn() {
    return [this] { return now; };
  }
};

TEST(Progress, LineFormat) {
  EXPECT_EQ(progress_line(36, 120, "zigzag-ring cp=16"), "[ 37/120] simulating zigzag-ring cp=16 ...");
  EXPECT_EQ(progress_line(0, 5, "ring cp=2"), "[1/5] simulating ring cp=2 ...");
}

TEST(Progress, SilentWhenNotATerminal) {
  std::ostringstream out;
  FakeClock clock;
  {
    Progress p(out, /*terminal=*/false, clock.fn());
    clock.now += 5s;
    p.update(0, 2, "a");
    p.update(1, 2, "b");
    EXPECT_FALSE(p.shown());
    p.finish();
  }
  EXPECT_EQ(out.str(), "");
}

TEST(Progress, SilentDuringTheFirstSecond) {
  std::ostringstream out;
  FakeClock clock;
  Progress p(out, true, clock.fn());
  clock.now += 999ms;
  p.update(0, 3, "a");
  EXPECT_EQ(out.str(), "");
  p.finish();
  EXPECT_EQ(out.str(), "");
}

TEST(Progress, DrawsInPlaceAfterTheDelayAndErases) {
  std::ostringstream out;
  FakeClock clock;
  Progress p(out, true, clock.fn());
  clock.now += 1s;
  p.update(0, 10, "zigzag-ring cp=16 seq=8192");
  EXPECT_TRUE(p.shown());
  const std::string first = "[ 1/10] simulating zigzag-ring cp=16 seq=8192 ...";
  EXPECT_EQ(out.str(), "\r" + first);
  p.update(1, 10, "ring cp=2");  // shorter: padded over the previous line
  const std::string second = "[ 2/10] simulating ring cp=2 ...";
  EXPECT_EQ(out.str(), "\r" + first + "\r" + second + std::string(first.size() - second.size(), ' '));
  out.str("");
  p.finish();
  std::string erase = "\r";
  erase.append(second.size(), ' ');
  erase += '\r';
  EXPECT_EQ(out.str(), erase);
  EXPECT_FALSE(p.shown());
  out.str("");
  p.finish();  // idempotent
  EXPECT_EQ(out.str(), "");
}

TEST(Progress, DestructorErasesTheLine) {
  std::ostringstream out;
  FakeClock clock;
  {
    Progress p(out, true, clock.fn(), 0ns);
    p.update(0, 1, "x");
  }
  const std::string line = "[1/1] simulating x ...";
  EXPECT_EQ(out.str(), "\r" + line + "\r" + std::string(line.size(), ' ') + "\r");
}

}  // namespace
}  // namespace cpscope
