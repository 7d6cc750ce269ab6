// Kineto reader: a streaming SAX parser (sim/trace/json_scan.h) and a small state machine that keeps
// only the fields of GPU events. The parser keeps its nesting state in a vector (no recursion), so
// hostile nesting cannot overflow the stack.
#include "sim/trace/kineto.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "sim/error.h"
#include "sim/trace/json_scan.h"

namespace cpscope::trace {
namespace {

// |ts| and dur above 9e15 us (285 years) would overflow int64 nanoseconds.
constexpr std::int64_t kMaxMicros = 9'000'000'000'000'000;

enum class Ctx : std::uint8_t { RootObject, Events, Event, Args, DistInfo, Skip };

// Which GPU categories are kept, and as what.
enum class Cat : std::uint8_t { None, Kernel, Memcpy, Memset, Annotation };

Cat category(const std::string& c) {
  if (c == "kernel" || c == "Kernel") return Cat::Kernel;
  if (c == "gpu_memcpy" || c == "Memcpy") return Cat::Memcpy;
  if (c == "gpu_memset" || c == "Memset") return Cat::Memset;
  if (c == "gpu_user_annotation") return Cat::Annotation;
  return Cat::None;
}

struct Event {
  std::string name, ph, cat;
  bool has_ts = false, has_dur = false, ts_bad = false, dur_bad = false;
  Nanos ts = 0, dur = 0;
  std::int64_t device = -1, stream = -1, pid = -1, tid = -1;
  Bytes bytes = 0;
  void reset() {
    name.clear();
    ph.clear();
    cat.clear();
    has_ts = has_dur = ts_bad = dur_bad = false;
    ts = dur = 0;
    device = stream = pid = tid = -1;
    bytes = 0;
  }
};

class Handler {
 public:
  Handler(const JsonReader& buf, const std::string& where, bool compressed, std::int64_t file_order, const Classifier& cls,
          std::uint64_t size_hint)
      : buf_(buf), where_(where), compressed_(compressed), file_order_(file_order), cls_(cls) {
    // Reserve generously: pages never touched are never resident, and a trace that fits avoids the
    // copy (and the transient 1.5x) of a growing vector. A kept GPU event takes >= 250 bytes of JSON.
    trace_.timeline.intervals.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(size_hint / 250, 1u << 28)));
  }

  // --- SAX interface (sim/trace/json_scan.h) ---
  bool null() { return scalar_other(); }
  bool boolean(bool) { return scalar_other(); }
  bool number_integer(std::int64_t v) { return number(static_cast<double>(v), v, true, nullptr); }
  bool number_unsigned(std::uint64_t v) {
    const bool fits = v <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    return number(static_cast<double>(v), fits ? static_cast<std::int64_t>(v) : 0, fits, nullptr);
  }
  bool number_float(double v, const std::string& text) { return number(v, 0, false, &text); }
  bool string(std::string& s) {
    const Ctx c = stack_.empty() ? Ctx::Skip : stack_.back();
    if (c == Ctx::Event) {
      if (key_ == "name") ev_.name.swap(s);  // swap: the lexer reuses our old buffer, no allocation
      else if (key_ == "ph") ev_.ph.swap(s);
      else if (key_ == "cat") ev_.cat.swap(s);
      else if (key_ == "ts" || key_ == "dur") field_error(key_, "must be a number (microseconds), not a string");
    }
    return true;
  }
  bool start_object(std::size_t) {
    if (stack_.empty()) {
      stack_.push_back(Ctx::RootObject);
    } else {
      const Ctx c = stack_.back();
      if (c == Ctx::Events) {
        ev_.reset();
        stack_.push_back(Ctx::Event);
      } else if (c == Ctx::Event && key_ == "args") {
        stack_.push_back(Ctx::Args);
      } else if (c == Ctx::RootObject && key_ == "distributedInfo") {
        stack_.push_back(Ctx::DistInfo);
      } else {
        stack_.push_back(Ctx::Skip);
      }
    }
    key_.clear();
    return true;
  }
  bool end_object() {
    const Ctx c = stack_.back();
    stack_.pop_back();
    if (c == Ctx::Event) finish_event();
    if (c == Ctx::Args) key_ = "args";  // back in the event; "args" was its key
    return true;
  }
  bool start_array(std::size_t) {
    // The JSON Array Format of trace events: the document itself is the list of events.
    if (stack_.empty()) stack_.push_back(Ctx::Events);
    else if (stack_.back() == Ctx::RootObject && key_ == "traceEvents") stack_.push_back(Ctx::Events);
    else stack_.push_back(Ctx::Skip);
    return true;
  }
  bool end_array() {
    stack_.pop_back();
    return true;
  }
  bool key(std::string& k) {
    key_.swap(k);
    return true;
  }
  [[noreturn]] void syntax_error(std::uint64_t position, const std::string& what) const {
    throw InputError("", fmt::format("{}: malformed JSON at byte {}{}: {}", where_, position,
                                     compressed_ ? " of the decompressed data" : "", what));
  }

  Trace finish() {
    if (stack_.size() != 0) throw InputError("", fmt::format("{}: truncated JSON at byte {}", where_, buf_.position()));
    // Relative timestamps (newer Kineto): every |ts| is far below the base, which is wall-clock ns.
    if (base_time_ns_ > 0 && max_abs_ts_ < base_time_ns_ / 2) {
      for (Interval& iv : trace_.timeline.intervals) {
        iv.start += base_time_ns_;
        iv.end += base_time_ns_;
      }
      for (Range& r : trace_.ranges) {
        r.start += base_time_ns_;
        r.end += base_time_ns_;
      }
    }
    const std::int64_t order = dist_rank_ >= 0 ? dist_rank_ : file_order_;
    for (RankSource& s : trace_.ranks) s.order = order;
    if (skipped_zero_ > 0)
      trace_.warnings.push_back(fmt::format("{}: {} GPU events without a device (args.device or pid) were kept on "
                                            "device 0",
                                            where_, skipped_zero_));
    trace_.timeline.num_ranks = static_cast<std::int32_t>(trace_.ranks.size());
    trace_.format = "kineto-json";
    return std::move(trace_);
  }

 private:
  bool scalar_other() {
    if (!stack_.empty() && stack_.back() == Ctx::Event && (key_ == "ts" || key_ == "dur"))
      field_error(key_, "must be a number (microseconds)");
    return true;
  }

  // A number; `exact` when `i` holds it as an int64, `text` the literal of a float.
  bool number(double d, std::int64_t i, bool exact, const std::string* text) {
    if (stack_.empty()) return true;
    const Ctx c = stack_.back();
    auto as_int = [&](std::int64_t& out) {
      if (exact) out = i;
      else if (std::isfinite(d) && d >= -9e18 && d <= 9e18 && d == std::floor(d)) out = static_cast<std::int64_t>(d);
    };
    if (c == Ctx::Event) {
      if (key_ == "ts" || key_ == "dur") {
        Nanos ns = 0;
        bool ok;
        if (exact) {
          ok = i > -kMaxMicros && i < kMaxMicros;
          ns = i * 1000;
        } else {
          ok = micros_text_to_nanos(*text, ns);
        }
        if (key_ == "ts") {
          ev_.has_ts = true;
          ev_.ts_bad = !ok;
          ev_.ts = ns;
        } else {
          ev_.has_dur = true;
          ev_.dur_bad = !ok;
          ev_.dur = ns;
        }
      } else if (key_ == "pid") {
        as_int(ev_.pid);
      } else if (key_ == "tid") {
        as_int(ev_.tid);
      }
    } else if (c == Ctx::Args) {
      if (key_ == "device") as_int(ev_.device);
      else if (key_ == "stream") as_int(ev_.stream);
      else if (key_ == "bytes") as_int(ev_.bytes);
    } else if (c == Ctx::DistInfo) {
      if (key_ == "rank") {
        std::int64_t r = -1;
        as_int(r);
        if (r < 0) field_error("distributedInfo.rank", fmt::format("{} must be an integer >= 0", d));
        dist_rank_ = r;
      }
    } else if (c == Ctx::RootObject && key_ == "baseTimeNanoseconds") {
      as_int(base_time_ns_);
    }
    return true;
  }

  [[noreturn]] void field_error(const std::string& field, const std::string& rule) const {
    throw InputError("", fmt::format("{}: event #{} near byte {}{}: '{}' {}", where_, events_, buf_.position(),
                                     compressed_ ? " of the decompressed data" : "", field, rule));
  }

  void finish_event() {
    ++events_;
    if (ev_.ph != "X") return;
    const Cat cat = category(ev_.cat);
    if (cat == Cat::None) return;
    if (!ev_.has_ts) field_error("ts", "is missing");
    if (!ev_.has_dur) field_error("dur", "is missing");
    if (ev_.ts_bad) field_error("ts", "is not a finite number of microseconds within +-9e12 s");
    if (ev_.dur_bad) field_error("dur", "is not a finite number of microseconds within +-9e12 s");
    if (ev_.dur < 0) field_error("dur", fmt::format("is negative ({} ns); a GPU event cannot end before it starts", ev_.dur));
    if (ev_.ts > std::numeric_limits<Nanos>::max() - ev_.dur) field_error("ts", "plus dur overflows");
    max_abs_ts_ = std::max(max_abs_ts_, ev_.ts < 0 ? -ev_.ts : ev_.ts);

    std::int64_t device = ev_.device >= 0 ? ev_.device : ev_.pid;
    if (device < 0) {
      ++skipped_zero_;
      device = 0;
    }
    const std::int32_t rank = local_rank(device);
    const std::uint32_t name = trace_.timeline.intern(ev_.name);
    if (cat == Cat::Annotation) {
      trace_.ranges.push_back({rank, name, empty_name(), ev_.ts, ev_.ts + ev_.dur});
      return;
    }
    Interval iv;
    iv.rank = rank;
    iv.stream = stream_of(ev_.stream >= 0 ? ev_.stream : ev_.tid);
    iv.name = name;
    iv.kind = cat == Cat::Kernel ? interval_kind(class_of(name)) : IntervalKind::Memory;
    iv.start = ev_.ts;
    iv.end = ev_.ts + ev_.dur;
    iv.bytes = ev_.bytes;
    trace_.timeline.intervals.push_back(iv);
  }

  KernelClass class_of(std::uint32_t name) {
    if (name >= classes_.size()) classes_.resize(name + 1, -1);
    if (classes_[name] < 0) classes_[name] = static_cast<int>(cls_.classify(trace_.timeline.name(name)));
    return static_cast<KernelClass>(classes_[name]);
  }
  std::int32_t local_rank(std::int64_t device) {
    auto [it, inserted] = rank_of_device_.try_emplace(device, static_cast<std::int32_t>(trace_.ranks.size()));
    if (inserted) trace_.ranks.push_back({where_, 0, -1, device, ""});
    return it->second;
  }
  std::int32_t stream_of(std::int64_t stream) {
    auto it = stream_ids_.find(stream);
    if (it != stream_ids_.end()) return it->second;
    const std::int32_t id = stream_index(trace_.timeline, fmt::format("stream {}", stream));
    stream_ids_.emplace(stream, id);
    return id;
  }
  std::uint32_t empty_name() { return trace_.timeline.intern(""); }

  const JsonReader& buf_;
  std::string where_;
  bool compressed_;
  std::int64_t file_order_;
  const Classifier& cls_;
  Trace trace_;
  std::vector<Ctx> stack_;
  std::string key_;
  Event ev_;
  std::uint64_t events_ = 0, skipped_zero_ = 0;
  std::int64_t dist_rank_ = -1;
  Nanos base_time_ns_ = 0, max_abs_ts_ = 0;
  std::vector<int> classes_;
  std::unordered_map<std::int64_t, std::int32_t> rank_of_device_, stream_ids_;
};

}  // namespace

bool micros_text_to_nanos(const std::string& text, Nanos& out) {
  // [-]digits[.digits][e[+-]digits]; exponents are rare in traces: fall back to long double for them.
  std::size_t i = 0;
  const bool neg = i < text.size() && text[i] == '-';
  if (neg) ++i;
  __int128 micros = 0;
  int digits = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i, ++digits) {
    micros = micros * 10 + (text[i] - '0');
    if (micros > kMaxMicros) return false;
  }
  __int128 frac_ns = 0;
  int frac_digits = 0;
  bool round_up = false;
  if (i < text.size() && text[i] == '.') {
    for (++i; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      if (frac_digits < 3) frac_ns = frac_ns * 10 + (text[i] - '0');
      else if (frac_digits == 3) round_up = text[i] >= '5';
      ++frac_digits;
    }
  }
  if (i < text.size()) {  // an exponent
    const long double v = std::strtold(text.c_str(), nullptr) * 1000.0L;
    if (!std::isfinite(static_cast<double>(v)) || v > 9e18L || v < -9e18L) return false;
    out = static_cast<Nanos>(std::llround(static_cast<double>(v)));
    return true;
  }
  if (digits == 0 && frac_digits == 0) return false;
  for (int k = frac_digits; k < 3; ++k) frac_ns *= 10;
  __int128 ns = micros * 1000 + frac_ns + (round_up ? 1 : 0);
  if (ns > static_cast<__int128>(std::numeric_limits<Nanos>::max())) return false;
  out = static_cast<Nanos>(neg ? -ns : ns);
  return true;
}

Trace read_kineto(ByteSource& in, const std::string& where, std::int64_t file_order, const Classifier& cls) {
  JsonReader reader(in);
  Handler handler(reader, where, in.compressed(), file_order, cls, in.size_hint());
  // Strict: trailing bytes after the document are an error (a concatenation of two traces, a partial
  // overwrite), not silently ignored.
  reader.parse(handler);
  return handler.finish();
}

Trace read_kineto_file(const std::string& path, std::int64_t file_order, const Classifier& cls) {
  auto src = open_file_source(path);
  return read_kineto(*src, path, file_order, cls);
}

}  // namespace cpscope::trace
