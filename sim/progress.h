// Progress: a one-line "[ 37/120] simulating zigzag-ring cp=16 ..." status for long sweeps and plans,
// drawn only on a terminal and only once the work has run longer than a delay (1 s by default).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <iosfwd>
#include <string>

namespace cpscope {

class Progress {
 public:
  using Clock = std::chrono::steady_clock;
  using NowFn = std::function<Clock::time_point()>;

  // `terminal`: whether `out` is a terminal (the CLI passes isatty(STDERR_FILENO)); when false nothing
  // is ever written. `now` is injectable for tests. The delay counts from construction.
  Progress(std::ostream& out, bool terminal, NowFn now = &Clock::now,
           std::chrono::nanoseconds delay = std::chrono::seconds(1));
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Reports that item `index` (0-based) of `total` is starting. Redraws the line in place ("\r").
  void update(std::size_t index, std::size_t total, const std::string& what);
  // Erases the line if one was drawn (so the table that follows starts clean). Idempotent.
  void finish();

  bool shown() const { return shown_; }

 private:
  std::ostream& out_;
  bool terminal_;
  NowFn now_;
  Clock::time_point start_;
  std::chrono::nanoseconds delay_;
  bool shown_ = false;
  std::size_t last_width_ = 0;
};

// The line Progress draws, without "\r" or padding: "[ 37/120] simulating zigzag-ring cp=16 ...".
std::string progress_line(std::size_t index, std::size_t total, const std::string& what);

}  // namespace cpscope
