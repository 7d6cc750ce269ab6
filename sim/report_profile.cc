#include "sim/profile.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <type_traits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sim/error.h"
#include "sim/json_number.h"

namespace cpscope {
namespace {

constexpr std::array<const char*, 11> kColumns = {"rank", "stream", "kind",    "name",   "op_id", "step",
                                                  "pass", "start_ns", "end_ns", "bytes", "flops"};

IntervalKind parse_kind(const nlohmann::json& v, const std::string& field) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "compute") return IntervalKind::Compute;
    if (s == "comm") return IntervalKind::Comm;
    if (s == "memory") return IntervalKind::Memory;
  }
  throw InputError(field, fmt::format("{} is not one of compute, comm, memory", v.dump()));
}

template <class T>
T get(const nlohmann::json& j, const char* key, const std::string& field) {
  if (!j.is_object() || !j.contains(key)) throw InputError(field + "." + key, "missing");
  const nlohmann::json& v = j.at(key);
  // nlohmann converts any number to any arithmetic type with a plain cast: 1.5 would read as 1, and a float
  // beyond the integer's range is undefined behaviour (found by tests/fuzz/fuzz_profile.cc). So integers must
  // be JSON integers within T's range, and floating values finite.
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    static_assert(std::is_signed_v<T> && sizeof(T) <= sizeof(std::int64_t), "profile integers are signed, <= 64 bits");
    using L = std::numeric_limits<T>;
    const std::optional<std::int64_t> i = json_integer(v);
    if (!i || *i < static_cast<std::int64_t>(L::min()) || *i > static_cast<std::int64_t>(L::max()))
      throw InputError(field + "." + key,
                       fmt::format("{} is not an integer in [{}, {}]", v.dump().substr(0, 40), L::min(), L::max()));
    return static_cast<T>(*i);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number())
      throw InputError(field + "." + key, fmt::format("has the wrong type ({})", v.dump().substr(0, 40)));
    if (!std::isfinite(v.get<double>())) throw InputError(field + "." + key, "is not finite");
    return v.get<T>();
  } else {
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception&) {
      throw InputError(field + "." + key, fmt::format("has the wrong type ({})", v.dump().substr(0, 40)));
    }
  }
}

std::int64_t int_at(const nlohmann::json& row, std::size_t i, const std::string& field) {
  const nlohmann::json& v = row[i];
  const std::optional<std::int64_t> n = json_integer(v);
  if (!n)
    throw InputError(fmt::format("{}[{}] ({})", field, i, kColumns[i]),
                     fmt::format("{} is not an integer within 64 bits", v.dump().substr(0, 40)));
  return *n;
}

// cp-profile's nccl runs record where their ranks ran ("nodes": the job's node count and processes per node,
// rank r on node r / ranks_per_node) beside the workload, whose gpus_per_node tells validate and calibrate
// which transfers crossed the network. The two must place every CP rank alike, or the profile's transfers
// would be simulated, or fitted, on the wrong link. (Runs that shared one GPU, loopback and replay, carry
// device_sharing instead: their transfers are copies within the device, whatever the nodes.)
void check_job_nodes(const nlohmann::json& n, const Workload& w, const std::string& f) {
  if (!n.is_object()) throw InputError(f, "is not an object");
  const auto nodes = get<std::int64_t>(n, "nodes", f);
  const auto per = get<std::int64_t>(n, "ranks_per_node", f);
  if (per < 1 || per > (std::int64_t{1} << 30)) throw InputError(f + ".ranks_per_node", fmt::format("{} is not in [1, 2^30]", per));
  const std::int64_t spanned = (w.cp + per - 1) / per;
  if (nodes != spanned)
    throw InputError(f + ".nodes", fmt::format("{} nodes cannot hold {} ranks at {} per node (that is {})", nodes, w.cp,
                                               per, spanned));
  for (std::int64_t r = 0; r < w.cp; ++r)
    if (w.node_of(r) != r / per)
      throw InputError(f + ".ranks_per_node",
                       fmt::format("the run placed CP rank {} on node {} ({} per node), but the workload puts it on node {} "
                                   "(gpus_per_node {}): correct workload.gpus_per_node to {}, or the profile's transfers "
                                   "are simulated on the wrong link",
                                   r, r / per, per, w.node_of(r), w.gpus_per_node, per));
}

}  // namespace

nlohmann::json timeline_json(const Timeline& t) {
  nlohmann::json rows = nlohmann::json::array();
  for (const Interval& iv : t.intervals)
    rows.push_back({iv.rank, iv.stream, std::string(to_string(iv.kind)), iv.name, iv.op_id, iv.step, iv.pass, iv.start,
                    iv.end, iv.bytes, iv.flops});
  return {{"num_ranks", t.num_ranks}, {"streams", t.streams}, {"names", t.names()}, {"columns", kColumns},
          {"intervals", std::move(rows)}};
}

nlohmann::json profile_json(const RunResult& run, const Timeline* timeline) {
  nlohmann::json j = summary_json(run);
  if (timeline) j["timeline"] = timeline_json(*timeline);
  return j;
}

Profile profile_from_json(const nlohmann::json& j, const std::string& where) {
  const std::string f = where.empty() ? std::string("profile") : where;
  if (!j.is_object()) throw InputError(f, "is not a JSON object");
  const auto schema = get<std::string>(j, "schema", f);
  if (schema != kProfileSchema)
    throw InputError(f + ".schema", fmt::format("'{}' is not {} (a cpscope profile)", schema, kProfileSchema));
  Profile p;
  p.run.source = get<std::string>(j, "source", f);
  p.run.hardware = get<std::string>(j, "hardware", f);
  if (!j.contains("workload")) throw InputError(f + ".workload", "missing");
  try {
    p.run.workload = workload_from_json(j.at("workload"));
  } catch (const InputError& e) {
    throw InputError(f + ".workload." + e.field(), e.what());
  }
  Summary& s = p.run.summary;
  s.step_time_ns = get<std::int64_t>(j, "step_time_ns", f);
  s.total_flops = get<std::int64_t>(j, "total_flops", f);
  if (s.step_time_ns < 0) throw InputError(f + ".step_time_ns", "is negative");
  if (j.contains("device_sharing")) {
    const nlohmann::json& d = j.at("device_sharing");
    const std::string df = f + ".device_sharing";
    if (!d.is_object()) throw InputError(df, "is not an object");
    const auto rpd = get<std::int64_t>(d, "ranks_per_device", df);
    const auto slots = get<double>(d, "compute_slots", df);
    if (rpd > (std::int64_t{1} << 30)) throw InputError(df + ".ranks_per_device", fmt::format("{} is absurd", rpd));
    bool local = false;
    if (d.contains("local_transfers")) local = get<bool>(d, "local_transfers", df);
    p.run.sharing = {static_cast<std::int32_t>(std::max<std::int64_t>(rpd, 0)), slots, local};
    check_sharing(p.run.sharing, df + ".ranks_per_device", df + ".compute_slots");
  }
  if (j.contains("nodes") && !j.contains("device_sharing")) check_job_nodes(j.at("nodes"), p.run.workload, f + ".nodes");
  if (j.contains("ranks")) {
    const auto& ranks = j.at("ranks");
    if (!ranks.is_array()) throw InputError(f + ".ranks", "is not an array");
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      const std::string rf = fmt::format("{}.ranks[{}]", f, i);
      RankMetrics m;
      m.rank = get<std::int32_t>(ranks[i], "rank", rf);
      m.compute_ns = get<std::int64_t>(ranks[i], "compute_ns", rf);
      m.comm_ns = get<std::int64_t>(ranks[i], "comm_ns", rf);
      m.exposed_comm_ns = get<std::int64_t>(ranks[i], "exposed_comm_ns", rf);
      m.idle_ns = get<std::int64_t>(ranks[i], "idle_ns", rf);
      m.peak_memory_bytes = get<std::int64_t>(ranks[i], "peak_memory_bytes", rf);
      m.bytes_sent = get<std::int64_t>(ranks[i], "bytes_sent", rf);
      m.flops = get<std::int64_t>(ranks[i], "flops", rf);
      m.span_ns = get<std::int64_t>(ranks[i], "span_ns", rf);
      s.ranks.push_back(m);
    }
  }
  if (!j.contains("timeline")) return p;
  const nlohmann::json& t = j.at("timeline");
  const std::string tf = f + ".timeline";
  if (!t.is_object()) throw InputError(tf, "is not an object");
  p.has_timeline = true;
  p.timeline.num_ranks = get<std::int32_t>(t, "num_ranks", tf);
  p.timeline.streams = get<std::vector<std::string>>(t, "streams", tf);
  const auto names = get<std::vector<std::string>>(t, "names", tf);
  for (const auto& n : names) p.timeline.intern(n);
  if (p.timeline.names().size() != names.size()) throw InputError(tf + ".names", "has repeated names");
  if (p.timeline.num_ranks < 1) throw InputError(tf + ".num_ranks", "must be >= 1");
  if (!t.contains("intervals")) throw InputError(tf + ".intervals", "missing");
  const nlohmann::json& rows = t.at("intervals");
  if (!rows.is_array()) throw InputError(tf + ".intervals", "is not an array");
  p.timeline.intervals.reserve(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const std::string rf = fmt::format("{}.intervals[{}]", tf, i);
    const nlohmann::json& row = rows[i];
    if (!row.is_array() || row.size() != kColumns.size())
      throw InputError(rf, fmt::format("is not an array of {} values ({})", kColumns.size(), "rank, stream, ..."));
    Interval iv;
    iv.rank = static_cast<std::int32_t>(int_at(row, 0, rf));
    iv.stream = static_cast<std::int32_t>(int_at(row, 1, rf));
    iv.kind = parse_kind(row[2], rf + "[2] (kind)");
    const std::int64_t name = int_at(row, 3, rf);
    iv.op_id = int_at(row, 4, rf);
    iv.step = static_cast<std::int32_t>(int_at(row, 5, rf));
    iv.pass = static_cast<std::int8_t>(int_at(row, 6, rf));
    iv.start = int_at(row, 7, rf);
    iv.end = int_at(row, 8, rf);
    iv.bytes = int_at(row, 9, rf);
    iv.flops = int_at(row, 10, rf);
    if (iv.rank < 0 || iv.rank >= p.timeline.num_ranks)
      throw InputError(rf + "[0] (rank)", fmt::format("{} is outside 0..{}", iv.rank, p.timeline.num_ranks - 1));
    if (iv.stream < 0 || static_cast<std::size_t>(iv.stream) >= p.timeline.streams.size())
      throw InputError(rf + "[1] (stream)", fmt::format("{} is not a stream index", iv.stream));
    if (name < 0 || static_cast<std::size_t>(name) >= names.size())
      throw InputError(rf + "[3] (name)", fmt::format("{} is not a name index", name));
    iv.name = static_cast<std::uint32_t>(name);
    if (iv.pass < -1 || iv.pass > 1) throw InputError(rf + "[6] (pass)", "must be 0 (fwd), 1 (bwd) or -1");
    if (iv.start < 0 || iv.end < iv.start)
      throw InputError(rf + "[7..8] (start_ns, end_ns)", fmt::format("[{}, {}] is negative or inverted", iv.start, iv.end));
    if (iv.bytes < 0 || iv.flops < 0) throw InputError(rf, "bytes and flops must be >= 0");
    p.timeline.intervals.push_back(iv);
  }
  return p;
}

Profile read_profile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path, "cannot open the profile");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw InputError(path, fmt::format("is not valid JSON (byte {}): {}", e.byte, e.what()));
  }
  return profile_from_json(j, path);
}

}  // namespace cpscope
