// Progress line for sweep and plan (see progress.h).
#include "sim/progress.h"

#include <ostream>
#include <utility>

namespace cpscope {

std::string progress_line(std::size_t index, std::size_t total, const std::string& what) {
  const std::string total_text = std::to_string(total);
  std::string done = std::to_string(index + 1);
  if (done.size() < total_text.size()) done.insert(0, total_text.size() - done.size(), ' ');
  return "[" + done + "/" + total_text + "] simulating " + what + " ...";
}

Progress::Progress(std::ostream& out, bool terminal, NowFn now, std::chrono::nanoseconds delay)
    : out_(out), terminal_(terminal), now_(std::move(now)), start_(now_()), delay_(delay) {}

Progress::~Progress() {
  try {
    finish();
  } catch (...) {  // never throw from a destructor; the line is cosmetic
  }
}

void Progress::update(std::size_t index, std::size_t total, const std::string& what) {
  if (!terminal_) return;
  if (!shown_ && now_() - start_ < delay_) return;
  std::string line = progress_line(index, total, what);
  const std::size_t width = line.size();
  // Pad over the rest of a longer previous line instead of relying on terminal escape codes.
  if (width < last_width_) line.append(last_width_ - width, ' ');
  out_ << '\r' << line << std::flush;
  last_width_ = width;
  shown_ = true;
}

void Progress::finish() {
  if (!shown_) return;
  out_ << '\r' << std::string(last_width_, ' ') << '\r' << std::flush;
  shown_ = false;
  last_width_ = 0;
}

}  // namespace cpscope
