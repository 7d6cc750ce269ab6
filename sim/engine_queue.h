// Private to the engine: the event queue, a radix heap ordered by (time, insertion order).
//
// A discrete-event simulation only ever schedules at or after the current time, so the queue is
// monotone and a radix heap fits. Times are compared with the last popped time `last` in base-256
// digits: an event lives in bucket (level, digit) where level is the highest byte in which its time
// differs from `last` and digit is its own byte there; bucket 0 holds the events at exactly `last`
// (or a sorted run, below). Bucket order is time order, so the lowest non-empty bucket (found with a
// two-level bit mask) holds the minimum; popping from an empty bucket 0 moves that bucket down around
// its minimum. An event moves at most once per byte (8 times, typically once); every operation
// appends to or scans a bucket (a plain growable array), no comparisons in a tree, no allocation once
// the buckets have grown. A bucket whose entries all have one time (always so at the lowest level,
// and for groups of ties) becomes bucket 0 by a swap instead of moving its entries. (Base 256 rather
// than the textbook base 2: events of lock-stepped ranks cluster in time and would otherwise move ~10
// times each, and at base 16 still twice.)
//
// Small buckets: when ranks drift apart most times are distinct, and a bucket of a few events would
// be moved down level by level, one refill per pop. Instead a bucket of at most kRunMax entries is
// sorted by time, stably (each entry's place is counted from keys of time and bucket position, with no
// branch on the data: an insertion sort mispredicts about once per entry, and this took 3% off a run
// at N = 128; a small bucket spanning 2^26 ns or more, rare, moves down like a large one) and becomes
// bucket 0 as a run: `last` is its first time and it is popped
// front to back. While a run lasts, an event pushed before its last time is inserted into it (it
// cannot belong anywhere else: every other bucket lies after the run); later ones go to the buckets
// as usual (they are at or after `last`, so the buckets stay consistent).
//
// Ties: events with equal time always share a bucket (a bucket is a function of the time and
// `last`, `last` only moves within the bucket being emptied, and whole buckets move together),
// buckets keep append order, runs are sorted stably and insert after equal times, and bucket 0 is
// consumed front to back, so equal-time events pop in insertion order. That is what makes a run
// deterministic without a sequence number per event.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
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
    if (time < run_last_)
      insert_in_run(Entry{time, value});
    else
      put(Entry{time, value});
    ++size_;
  }

  // Removes and returns the earliest entry (ties: the first pushed). The queue must not be empty.
  Entry pop() {
    Bucket& zero = buckets_[0];
    if (head_ == zero.size) {
      zero.size = 0;
      head_ = 0;
      // size_ > 0, so some bucket holds an entry.
      const auto w = static_cast<std::size_t>(std::countr_zero(summary_));
      const std::size_t b = w * 64 + static_cast<std::size_t>(std::countr_zero(mask_[w]));
      Bucket& from = buckets_[b];
      mask_[w] &= mask_[w] - 1;  // b is the lowest set bit of its word
      if (mask_[w] == 0) summary_ &= summary_ - 1;
      if (from.size == 1) {  // no need to move it
        from.size = 0;
        last_ = run_last_ = from.data[0].time;
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
        run_last_ = least;
        std::swap(zero, from);
      } else if (from.size <= kRunMax && most - least < kRankSpan) {
        // A run. Each entry's place is the number of entries before it in (time, bucket order), counted
        // without a branch on the data (an insertion sort mispredicts about once per entry).
        const std::uint32_t n = from.size;
        const std::uint32_t m = (n + 7) & ~7u;  // padded: the counting loop runs whole vectors
        std::int32_t key[kRunMax];
        for (std::uint32_t i = 0; i < n; ++i)
          key[i] = static_cast<std::int32_t>(static_cast<std::uint32_t>(first[i].time - least) << 5 | i);
        for (std::uint32_t i = n; i < m; ++i) key[i] = std::numeric_limits<std::int32_t>::max();
        while (zero.capacity < n) grow(zero);
        Entry* const d = zero.data;
        for (std::uint32_t i = 0; i < n; ++i) {
          std::int32_t place = 0;
          for (std::uint32_t j = 0; j < m; ++j) place += key[j] < key[i];
          d[place] = first[i];
        }
        zero.size = n;
        from.size = 0;
        run_last_ = most;
      } else {
        run_last_ = least;
        for (const Entry* e = first; e != end; ++e) put(*e);  // all land in lower buckets
        from.size = 0;
      }
    }
    --size_;
    return zero.data[head_++];
  }

 private:
  static constexpr int kBits = 8;
  static constexpr std::uint32_t kRunMax = 32;
  static constexpr Nanos kRankSpan = Nanos{1} << 26;  // (time - least) << 5 | index fits an int32
  static_assert(kRunMax <= 32, "a run's index takes 5 bits of its sort key");
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
    summary_ |= static_cast<std::uint64_t>(diff != 0) << (b >> 6);
    Bucket& bk = buckets_[b];
    if (bk.size == bk.capacity) grow(bk);
    bk.data[bk.size++] = e;
  }

  // Into the run in bucket 0, after every entry at or before its time. The search stops at the
  // latest at the entry popped last (a push is never earlier than the current time).
  void insert_in_run(const Entry& e) {
    Bucket& zero = buckets_[0];
    if (zero.size == zero.capacity) grow(zero);
    std::uint32_t j = zero.size++;
    for (; zero.data[j - 1].time > e.time; --j) zero.data[j] = zero.data[j - 1];
    zero.data[j] = e;
  }

  static void grow(Bucket& bk) {
    const std::uint32_t cap = bk.capacity == 0 ? 16 : bk.capacity * 2;
    auto* data = static_cast<Entry*>(std::realloc(bk.data, sizeof(Entry) * cap));
    if (data == nullptr) throw std::bad_alloc();
    bk.data = data;
    bk.capacity = cap;
  }

  std::array<Bucket, kBuckets> buckets_{};
  static constexpr std::size_t kMaskWords = (kBuckets + 63) / 64;
  static_assert(kMaskWords <= 64, "one summary word");
  std::array<std::uint64_t, kMaskWords> mask_{};  // non-empty buckets other than 0
  std::uint64_t summary_ = 0;                     // non-zero words of mask_
  std::size_t head_ = 0;  // next entry of bucket 0
  std::size_t size_ = 0;
  Nanos last_ = 0;
  Nanos run_last_ = 0;  // the last time in bucket 0 (pushes before it join the run)
};

}  // namespace cpscope::detail
