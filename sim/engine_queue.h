// Private to the engine: the event queue, a radix heap ordered by (time, insertion order).
//
// A discrete-event simulation only ever schedules at or after the current time, so the queue is
// monotone and a radix heap fits. Times are compared with the last popped time `last` in base-16
// digits: an event lives in bucket (level, digit) where level is the highest hex digit in which its
// time differs from `last` and digit is its own hex digit there; bucket 0 holds the events at exactly
// `last`. Bucket order is time order, so the lowest non-empty bucket (found with a bit mask) holds
// the minimum; popping from an empty bucket 0 moves that bucket down around its minimum. An event
// moves at most once per hex digit (16 times, typically 1 or 2); every operation appends to or scans
// a bucket (a plain growable array), no comparisons in a tree, no allocation once the buckets have
// grown. A bucket whose entries all have one time (always so at the lowest level, and for groups of
// ties) becomes bucket 0 by a swap instead of moving its entries. (Base 16 rather than
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
#include <cstdlib>
#include <new>
#include <type_traits>
#include <utility>

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
  static_assert(std::is_trivially_copyable_v<Entry>, "buckets grow by realloc");
  RadixEventQueue() = default;
  RadixEventQueue(const RadixEventQueue&) = delete;
  RadixEventQueue& operator=(const RadixEventQueue&) = delete;
  ~RadixEventQueue() {
    for (Bucket& b : buckets_) std::free(b.data);
  }

  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }

  // Schedules `value` at `time`, which must not precede the last popped time.
  __attribute__((always_inline)) void push(Nanos time, const T& value) {
    CPSCOPE_CHECK(time >= last_, "event scheduled in the past");
    put(Entry{time, value});
    ++size_;
  }

  // Removes and returns the earliest entry (ties: the first pushed). The queue must not be empty.
  Entry pop() {
    Bucket& zero = buckets_[0];
    if (head_ == zero.size) {
      zero.size = 0;
      head_ = 0;
      std::size_t w = 0;
      while (mask_[w] == 0) ++w;  // size_ > 0, so some bucket holds an entry
      const std::size_t b = w * 64 + static_cast<std::size_t>(std::countr_zero(mask_[w]));
      Bucket& from = buckets_[b];
      mask_[w] &= mask_[w] - 1;  // b is the lowest set bit of its word
      if (from.size == 1) {  // the common case once ranks drift apart: no need to move it
        from.size = 0;
        last_ = from.data[0].time;
        --size_;
        return from.data[0];
      }
      const Entry* const first = from.data;
      const Entry* const end = first + from.size;
      Nanos least = first->time, most = least;
      for (const Entry* e = first; e != end; ++e) {
        least = e->time < least ? e->time : least;
        most = e->time > most ? e->time : most;
      }
      last_ = least;
      if (least == most) {
        // One time (always so at the lowest level, and for groups of ties): the bucket, in its order,
        // becomes bucket 0 as it is.
        std::swap(zero, from);
      } else {
        for (const Entry* e = first; e != end; ++e) put(*e);  // all land in lower buckets
        from.size = 0;
      }
    }
    --size_;
    return zero.data[head_++];
  }

 private:
  static constexpr int kBits = 4;
  static constexpr int kDigits = 1 << kBits;
  static constexpr int kLevels = (64 + kBits - 1) / kBits;
  static constexpr std::size_t kBuckets = 1 + kLevels * kDigits;

  struct Bucket {
    Entry* data = nullptr;
    std::uint32_t size = 0, capacity = 0;
  };

  __attribute__((always_inline)) void put(const Entry& e) {
    const auto diff = static_cast<std::uint64_t>(e.time ^ last_);
    // shift = kBits x the level (the highest digit in which e.time differs from last_); bucket 0
    // when it equals last_. Branch-free: the level of a time is unpredictable.
    const int shift = (63 - std::countl_zero(diff | 1)) / kBits * kBits;
    const auto digit = (static_cast<std::uint64_t>(e.time) >> shift) & (kDigits - 1);
    const std::size_t b = diff != 0 ? 1 + static_cast<std::size_t>(shift) / kBits * kDigits + digit : 0;
    mask_[b >> 6] |= static_cast<std::uint64_t>(diff != 0) << (b & 63);
    Bucket& bk = buckets_[b];
    if (bk.size == bk.capacity) grow(bk);
    bk.data[bk.size++] = e;
  }

  static void grow(Bucket& bk) {
    const std::uint32_t cap = bk.capacity == 0 ? 16 : bk.capacity * 2;
    auto* data = static_cast<Entry*>(std::realloc(bk.data, sizeof(Entry) * cap));
    if (data == nullptr) throw std::bad_alloc();
    bk.data = data;
    bk.capacity = cap;
  }

  std::array<Bucket, kBuckets> buckets_{};
  std::array<std::uint64_t, (kBuckets + 63) / 64> mask_{};  // non-empty buckets other than 0
  std::size_t head_ = 0;  // next entry of bucket 0
  std::size_t size_ = 0;
  Nanos last_ = 0;
};

}  // namespace cpscope::detail
