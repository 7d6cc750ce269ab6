// Private to the engine: the event queue, a radix heap ordered by (time, insertion order).
//
// A discrete-event simulation only ever schedules at or after the current time, so the queue is
// monotone and a radix heap fits. Times are compared with the last popped time `last` in base-16
// digits: an event lives in bucket (level, digit) where level is the highest hex digit in which its
// time differs from `last` and digit is its own hex digit there; bucket 0 holds the events at exactly
// `last`. Bucket order is time order, so the lowest non-empty bucket (found with a bit mask) holds
// the minimum; popping from an empty bucket 0 moves that bucket down around its minimum. An event
// moves at most once per hex digit (16 times, typically 2 or 3); every operation appends to or scans
// a vector, no comparisons in a tree, no allocation once the buckets have grown. (Base 16 rather than
// the textbook base 2: events of lock-stepped ranks cluster in time and would otherwise move ~10
// times each.)
//
// Ties: events with equal time always share a bucket (a bucket is a function of the time and
// `last`, `last` only moves within the bucket being emptied, and whole buckets move together),
// buckets keep append order, and bucket 0 is consumed front to back, so equal-time events pop in
// insertion order. That is what makes a run deterministic without a sequence number per event.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sim/error.h"
#include "sim/units.h"

namespace cpscope::detail {

template <typename T>
class RadixEventQueue {
 public:
  struct Entry {
    Nanos time;
    T value;
  };

  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }

  // Schedules `value` at `time`, which must not precede the last popped time.
  void push(Nanos time, const T& value) {
    CPSCOPE_CHECK(time >= last_, "event scheduled in the past");
    put(Entry{time, value});
    ++size_;
  }

  // Removes and returns the earliest entry (ties: the first pushed). The queue must not be empty.
  Entry pop() {
    auto& zero = buckets_[0];
    if (head_ == zero.size()) {
      zero.clear();
      head_ = 0;
      std::size_t w = 0;
      while (mask_[w] == 0) ++w;  // size_ > 0, so some bucket holds an entry
      const std::size_t b = w * 64 + static_cast<std::size_t>(std::countr_zero(mask_[w]));
      auto& from = buckets_[b];
      mask_[b >> 6] &= ~(std::uint64_t{1} << (b & 63));
      if (from.size() == 1) {  // the common case once ranks drift apart: no need to move it
        const Entry e = from.front();
        from.clear();
        last_ = e.time;
        --size_;
        return e;
      }
      Nanos least = from.front().time;
      for (const Entry& e : from) least = e.time < least ? e.time : least;
      last_ = least;
      for (const Entry& e : from) put(e);  // all land in lower buckets
      from.clear();
    }
    --size_;
    return zero[head_++];
  }

 private:
  static constexpr int kBits = 4;
  static constexpr int kDigits = 1 << kBits;
  static constexpr int kLevels = 64 / kBits;
  static constexpr std::size_t kBuckets = 1 + kLevels * kDigits;

  void put(const Entry& e) {
    const auto diff = static_cast<std::uint64_t>(e.time ^ last_);
    std::size_t b = 0;
    if (diff != 0) {
      const int level = (63 - std::countl_zero(diff)) / kBits;
      const auto digit = (static_cast<std::uint64_t>(e.time) >> (level * kBits)) & (kDigits - 1);
      b = 1 + static_cast<std::size_t>(level) * kDigits + static_cast<std::size_t>(digit);
      mask_[b >> 6] |= std::uint64_t{1} << (b & 63);
    }
    buckets_[b].push_back(e);
  }

  std::array<std::vector<Entry>, kBuckets> buckets_;
  std::array<std::uint64_t, (kBuckets + 63) / 64> mask_{};  // non-empty buckets other than 0
  std::size_t head_ = 0;  // next entry of bucket 0
  std::size_t size_ = 0;
  Nanos last_ = 0;
};

}  // namespace cpscope::detail
