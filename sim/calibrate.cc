#include "sim/calibrate.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include <Eigen/Dense>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sim/analysis.h"
#include "sim/error.h"
#include "sim/json_number.h"
#include "sim/planner.h"
#include "sim/report.h"
#include "sim/schedule.h"

namespace cpscope {
namespace {

bool is_attention(OpKind k) { return k == OpKind::Attend || k == OpKind::AttendBwd; }

// A rate-table cell: what one fitted rate applies to.
using CellKey = std::tuple<std::string, std::string, std::int64_t, std::int64_t, std::int64_t>;  // pass, mask, D, q, kv

struct ComputeSample {
  double duration = 0;  // ns
  double overlap = 0;   // ns of the op overlapped by communication on its rank
  double flops = 0;     // attention
  double bytes = 0;     // memory ops; for any op also the bytes of the fills before it (Op::fill_bytes)
  double launches = 1;  // kernels: the op's and its fills' (Op::fills), a launch latency each
  int cell = -1;        // attention: index into cells; -1 for memory ops
  std::string category;
};

// What a transfer went over: a link between GPUs of a node, the network, or no link at all (a copy within one
// GPU: loopback's virtual ranks, replay's NCCL sending to itself, a bench's self-transfer).
enum class Path { NvLink, Network, DeviceCopy };

struct LinkSample {
  double duration = 0, bytes = 0;
  Path path = Path::NvLink;
};

struct Samples {
  std::vector<ComputeSample> compute;
  std::vector<LinkSample> links;
  std::vector<CellKey> cells;
  std::map<CellKey, int> cell_index;
};

// The share of its device a compute op had over time, as the engine models it (sim/engine.cc): with k
// compute ops running on a device of `compute_slots`, each advances at s = min(1, slots / k), and at a
// further 1/interference while a communication op of any of the device's ranks runs. A measured op's
// duration then mixes its own work with its neighbours', so the fit takes, for each op, the integral
// of s over its interval (the time it would have taken alone) and the integral of s over its overlap
// with communication: work = integral(s) - (1 - 1/interference) x integral(s over comm). One rank per
// device and no concurrency (s = 1) gives back the plain duration and overlap.
class DeviceShares {
 public:
  DeviceShares(const DeviceSharing& sh, std::int32_t n, const std::vector<std::vector<const Interval*>>& of,
               const Schedule& sched)
      : per_device_(sh.ranks_per_device) {
    const std::int32_t devices = (n + per_device_ - 1) / per_device_;
    dev_.resize(static_cast<std::size_t>(devices));
    std::vector<std::vector<std::pair<Nanos, Nanos>>> compute(dev_.size()), comm(dev_.size());
    for (std::int32_t r = 0; r < n; ++r) {
      const auto d = static_cast<std::size_t>(r / per_device_);
      const auto& ops = of[static_cast<std::size_t>(r)];
      for (std::size_t i = 0; i < ops.size(); ++i) {
        if (!ops[i] || ops[i]->end <= ops[i]->start) continue;
        (is_comm(sched.ranks[static_cast<std::size_t>(r)].ops[i].kind) ? comm : compute)[d].push_back(
            {ops[i]->start, ops[i]->end});
      }
    }
    for (std::size_t d = 0; d < dev_.size(); ++d) {
      Device& dv = dev_[d];
      for (const auto& [a, b] : compute[d]) dv.cuts.insert(dv.cuts.end(), {a, b});
      for (const auto& [a, b] : comm[d]) dv.cuts.insert(dv.cuts.end(), {a, b});
      std::sort(dv.cuts.begin(), dv.cuts.end());
      dv.cuts.erase(std::unique(dv.cuts.begin(), dv.cuts.end()), dv.cuts.end());
      if (dv.cuts.empty()) continue;
      // Per elementary segment [cuts[i], cuts[i+1]): running compute ops and running comm ops, by
      // difference arrays over segment indices.
      const std::size_t segs = dv.cuts.size() - 1;
      std::vector<std::int64_t> k(segs + 1, 0), c(segs + 1, 0);
      const auto at = [&](Nanos t) { return static_cast<std::size_t>(std::lower_bound(dv.cuts.begin(), dv.cuts.end(), t) - dv.cuts.begin()); };
      for (const auto& [a, b] : compute[d]) ++k[at(a)], --k[at(b)];
      for (const auto& [a, b] : comm[d]) ++c[at(a)], --c[at(b)];
      dv.work.assign(dv.cuts.size(), 0.0);
      dv.comm.assign(dv.cuts.size(), 0.0);
      std::int64_t running = 0, comms = 0;
      for (std::size_t i = 0; i < segs; ++i) {
        running += k[i];
        comms += c[i];
        const double len = static_cast<double>(dv.cuts[i + 1] - dv.cuts[i]);
        const double share = static_cast<double>(running) > sh.compute_slots ? sh.compute_slots / static_cast<double>(running) : 1.0;
        dv.work[i + 1] = dv.work[i] + share * len;
        dv.comm[i + 1] = dv.comm[i] + (comms > 0 ? share * len : 0.0);
      }
    }
  }
  // (integral of the share, integral of the share while communication ran) over [a, b), a compute op
  // of rank r.
  std::pair<double, double> integrate(std::int32_t r, Nanos a, Nanos b) const {
    const Device& dv = dev_[static_cast<std::size_t>(r / per_device_)];
    const auto i = static_cast<std::size_t>(std::lower_bound(dv.cuts.begin(), dv.cuts.end(), a) - dv.cuts.begin());
    const auto j = static_cast<std::size_t>(std::lower_bound(dv.cuts.begin(), dv.cuts.end(), b) - dv.cuts.begin());
    return {dv.work[j] - dv.work[i], dv.comm[j] - dv.comm[i]};
  }

 private:
  struct Device {
    std::vector<Nanos> cuts;           // every start and end of its ops, sorted, distinct
    std::vector<double> work, comm;    // prefix integrals at each cut
  };
  std::int32_t per_device_;
  std::vector<Device> dev_;
};

void collect(const NamedProfile& np, Samples& s) {
  const Profile& p = np.profile;
  if (!p.has_timeline)
    throw InputError(np.name, "has no timeline (write it with cp-profile --json or cp-sim run --profile)");
  const Workload& w = p.run.workload;
  std::string why = invalid_reason(w);
  if (!why.empty()) throw InputError(np.name + ".workload", why);
  const Schedule sched = make_schedule(w);
  const auto n = static_cast<std::int32_t>(sched.ranks.size());
  const Timeline& t = p.timeline;
  if (t.num_ranks != n)
    throw InputError(np.name + ".timeline.num_ranks", fmt::format("{} ranks for cp = {}", t.num_ranks, n));

  // The interval of each (rank, op).
  std::vector<std::vector<const Interval*>> of(static_cast<std::size_t>(n));
  for (std::int32_t r = 0; r < n; ++r) of[static_cast<std::size_t>(r)].assign(sched.ranks[static_cast<std::size_t>(r)].ops.size(), nullptr);
  for (const Interval& iv : t.intervals) {
    auto& ops = of[static_cast<std::size_t>(iv.rank)];
    if (iv.op_id < 0 || static_cast<std::size_t>(iv.op_id) >= ops.size())
      throw InputError(np.name + ".timeline", fmt::format("rank {} has no op {} in the schedule of its workload", iv.rank,
                                                          iv.op_id));
    const Op& op = sched.ranks[static_cast<std::size_t>(iv.rank)].ops[static_cast<std::size_t>(iv.op_id)];
    if (iv.stream != op.stream || ops[static_cast<std::size_t>(iv.op_id)] != nullptr)
      throw InputError(np.name + ".timeline",
                       fmt::format("rank {} op {} ({}): interval on the wrong stream or recorded twice", iv.rank,
                                   iv.op_id, op_name(op)));
    ops[static_cast<std::size_t>(iv.op_id)] = &iv;
  }
  // A transfer is a clean sample when no other communication of its device (its rank, unless ranks
  // shared a device) overlaps it: otherwise the flows shared the link (or the device's copy bandwidth)
  // and its duration says nothing about latency and bandwidth alone.
  std::vector<std::vector<bool>> clean(static_cast<std::size_t>(n));
  for (std::int32_t r = 0; r < n; ++r) clean[static_cast<std::size_t>(r)].assign(of[static_cast<std::size_t>(r)].size(), true);
  const std::int32_t per_device = p.run.sharing.ranks_per_device;
  for (std::int32_t first = 0; first < n; first += per_device) {
    struct Comm {
      const Interval* iv;
      std::int32_t rank, op;
    };
    std::vector<Comm> mine;
    for (std::int32_t r = first; r < std::min(n, first + per_device); ++r)
      for (std::size_t i = 0; i < of[static_cast<std::size_t>(r)].size(); ++i) {
        const Interval* iv = of[static_cast<std::size_t>(r)][i];
        if (iv && is_comm(sched.ranks[static_cast<std::size_t>(r)].ops[i].kind)) mine.push_back({iv, r, static_cast<std::int32_t>(i)});
      }
    std::sort(mine.begin(), mine.end(), [](const Comm& a, const Comm& b) { return a.iv->start < b.iv->start; });
    Nanos reach = std::numeric_limits<Nanos>::min();  // latest end among earlier intervals
    const Comm* reach_op = nullptr;
    for (const Comm& c : mine) {
      if (reach > c.iv->start) {
        clean[static_cast<std::size_t>(c.rank)][static_cast<std::size_t>(c.op)] = false;
        clean[static_cast<std::size_t>(reach_op->rank)][static_cast<std::size_t>(reach_op->op)] = false;
      }
      if (c.iv->end > reach) {
        reach = c.iv->end;
        reach_op = &c;
      }
    }
  }
  const DeviceShares shares(p.run.sharing, n, of, sched);

  // For each SendRecv op: the peer op its send meets and the peer op its receive meets.
  std::map<std::pair<std::int32_t, std::int32_t>, std::pair<std::int32_t, std::int32_t>> send_peer_op, recv_peer_op;
  for (const TransferMatch& m : match_transfers(sched)) {
    send_peer_op[{m.src_rank, m.src_op}] = {m.dst_rank, m.dst_op};
    recv_peer_op[{m.dst_rank, m.dst_op}] = {m.src_rank, m.src_op};
  }

  for (std::int32_t r = 0; r < n; ++r) {
    const auto& prog = sched.ranks[static_cast<std::size_t>(r)].ops;
    for (const Op& op : prog) {
      const Interval* iv = of[static_cast<std::size_t>(r)][static_cast<std::size_t>(op.id)];
      if (op.kind == OpKind::SendRecv) {
        Nanos start = iv ? iv->start : 0;
        bool usable = iv && clean[static_cast<std::size_t>(r)][static_cast<std::size_t>(op.id)];
        bool inter = false, local = true;
        for (const auto* peers : {&send_peer_op, &recv_peer_op}) {
          const auto it = peers->find({r, op.id});
          if (it == peers->end()) continue;
          const auto [pr, pop] = it->second;
          // Replay's ranks wait for no peer (its transfer starts with its op), a cluster's for both.
          if (p.run.sharing.local_transfers) continue;
          if (const Interval* q = of[static_cast<std::size_t>(pr)][static_cast<std::size_t>(pop)]) {
            start = std::max(start, q->start);
            usable = usable && clean[static_cast<std::size_t>(pr)][static_cast<std::size_t>(pop)];
          }
          inter = inter || w.node_of(r) != w.node_of(pr);
          local = local && p.run.sharing.local(r, pr);
        }
        const Bytes bytes = std::max(op.send.peer >= 0 ? op.send.bytes : 0, op.recv.peer >= 0 ? op.recv.bytes : 0);
        if (usable && bytes > 0 && iv->end > start)
          s.links.push_back({static_cast<double>(iv->end - start), static_cast<double>(bytes),
                             local ? Path::DeviceCopy : inter ? Path::Network : Path::NvLink});
        continue;
      }
      if (!iv || is_comm(op.kind) || iv->end <= iv->start) continue;
      ComputeSample c;
      const auto [work, overlap] = shares.integrate(r, iv->start, iv->end);
      c.duration = work;
      c.overlap = overlap;
      if (is_attention(op.kind)) {
        const bool bwd = op.kind == OpKind::AttendBwd;
        const bool causal = op.attn.mask == AttnMask::Causal;
        CellKey key{bwd ? "bwd" : "fwd", causal ? "causal" : "full", w.head_dim, op.attn.q_len, op.attn.kv_len};
        auto [it, fresh] = s.cell_index.emplace(key, static_cast<int>(s.cells.size()));
        if (fresh) s.cells.push_back(key);
        c.cell = it->second;
        c.flops = static_cast<double>(op.flops);
        c.category = fmt::format("attention {} {}", std::get<0>(key), std::get<1>(key));
      } else {
        c.bytes = static_cast<double>(op.bytes);
        c.category = "memory (dkv_add, layout)";
      }
      // The fills the runtime ran right before the op are in its measured interval (CostModel::compute_ns).
      c.bytes += static_cast<double>(op.fill_bytes);
      c.launches += op.fills;
      s.compute.push_back(c);
    }
  }
}

std::int64_t bench_int(const nlohmann::json& row, const char* key, const std::string& where, bool positive = true) {
  const auto it = row.find(key);
  const std::optional<std::int64_t> i = it == row.end() ? std::nullopt : json_integer(*it);
  if (!i) throw InputError(where + "." + key, "missing or not an integer within 64 bits");
  const std::int64_t v = *i;
  if (positive ? v <= 0 : v < 0) throw InputError(where + "." + key, fmt::format("{} must be > 0", v));
  return v;
}

std::string bench_string(const nlohmann::json& row, const char* key, const std::string& where,
                         std::initializer_list<const char*> allowed) {
  const auto it = row.find(key);
  if (it != row.end() && it->is_string())
    for (const char* a : allowed)
      if (it->get<std::string>() == a) return a;
  std::string list;
  for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  throw InputError(where + "." + key, "missing or not one of " + list);
}

void collect_bench(const NamedBench& nb, Samples& s) {
  const nlohmann::json& j = nb.bench;
  if (!j.is_object() || !j.contains("schema") || j["schema"] != "cpscope.bench/1")
    throw InputError(nb.name + ".schema", "is not cpscope.bench/1");
  const auto rows = j.find("rows");
  if (rows == j.end() || !rows->is_array()) throw InputError(nb.name + ".rows", "missing or not an array");
  for (std::size_t i = 0; i < rows->size(); ++i) {
    const nlohmann::json& row = (*rows)[i];
    const std::string where = fmt::format("{}.rows[{}]", nb.name, i);
    if (!row.is_object()) throw InputError(where, "is not an object");
    const std::string kind = bench_string(row, "kind", where, {"attention", "transfer", "interference", "memory"});
    if (kind == "memory") {
      // A memory kernel writing `bytes` (Op::bytes' convention) in `kernels` launches; the CUDA bench's
      // cudaMemcpyAsync baseline is what the runtime's kernels are compared with, not one of them.
      const auto baseline = row.find("baseline");
      if (baseline != row.end() && !baseline->is_boolean()) throw InputError(where + ".baseline", "is not a boolean");
      if (baseline != row.end() && baseline->get<bool>()) continue;
      ComputeSample c;
      c.duration = static_cast<double>(bench_int(row, "ns", where));
      c.bytes = static_cast<double>(bench_int(row, "bytes", where));
      c.launches = row.contains("kernels") ? static_cast<double>(bench_int(row, "kernels", where)) : 1.0;
      c.category = "memory " + (row.contains("op") && row["op"].is_string() ? row["op"].get<std::string>() : "kernel");
      s.compute.push_back(c);
      continue;
    }
    if (kind == "transfer") {
      const std::string link = bench_string(row, "link", where, {"nvlink", "network", "self"});
      // One GPU sending to itself is a copy within it, never a link's sample.
      s.links.push_back({static_cast<double>(bench_int(row, "ns", where)), static_cast<double>(bench_int(row, "bytes", where)),
                         link == "self" ? Path::DeviceCopy : link == "network" ? Path::Network : Path::NvLink});
      continue;
    }
    const std::string pass = bench_string(row, "pass", where, {"fwd", "bwd"});
    const std::string mask = bench_string(row, "mask", where, {"full", "causal"});
    CellKey key{pass, mask, bench_int(row, "head_dim", where), bench_int(row, "q_tokens", where),
                bench_int(row, "kv_tokens", where)};
    auto [it, fresh] = s.cell_index.emplace(key, static_cast<int>(s.cells.size()));
    if (fresh) s.cells.push_back(key);
    ComputeSample c;
    c.cell = it->second;
    c.flops = static_cast<double>(bench_int(row, "flops", where));
    c.category = fmt::format("attention {} {}", pass, mask);
    if (kind == "attention") {
      c.duration = static_cast<double>(bench_int(row, "ns", where));
      s.compute.push_back(c);
      continue;
    }
    c.duration = static_cast<double>(bench_int(row, "alone_ns", where));
    s.compute.push_back(c);
    c.duration = static_cast<double>(bench_int(row, "with_comm_ns", where));
    c.overlap = c.duration;  // the transfer ran for the whole kernel
    s.compute.push_back(c);
  }
}

// Least squares with each column scaled to unit norm first: the columns hold nanoseconds, FLOPs and
// bytes (twelve orders of magnitude apart), which would otherwise defeat the rank test. Returns false
// when `a` (already weighted) lacks full column rank.
bool solve_scaled(const Eigen::MatrixXd& a, const Eigen::VectorXd& b, Eigen::VectorXd& x) {
  Eigen::VectorXd scale(a.cols());
  for (Eigen::Index c = 0; c < a.cols(); ++c) {
    const double nrm = a.col(c).norm();
    if (!(nrm > 0)) return false;
    scale(c) = 1.0 / nrm;
  }
  const Eigen::MatrixXd as = a * scale.asDiagonal();
  Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(as);
  qr.setThreshold(1e-9);
  if (qr.rank() < a.cols()) return false;
  x = scale.asDiagonal() * qr.solve(b);
  return true;
}

// Weighted least squares: minimise sum ((A x - b) / b)^2.
bool solve_relative(Eigen::MatrixXd a, Eigen::VectorXd b, Eigen::VectorXd& x) {
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    const double wgt = 1.0 / b(i);
    a.row(i) *= wgt;
    b(i) *= wgt;
  }
  return solve_scaled(a, b, x);
}

struct Residual {
  int samples = 0;
  double sum_sq = 0, max_abs = 0;
  void add(double rel) {
    ++samples;
    sum_sq += rel * rel;
    max_abs = std::max(max_abs, std::abs(rel));
  }
  nlohmann::json json(const std::string& what) const {
    return {{"category", what},
            {"samples", samples},
            {"rms_relative", samples ? std::sqrt(sum_sq / samples) : 0.0},
            {"max_relative", max_abs}};
  }
};

std::string kind_of(const std::string& name) {
  const auto slash = name.rfind('/');
  return slash == std::string::npos ? name : name.substr(slash + 1);
}

// A measured file's device.name (cp-profile and cp-profile bench on CUDA write it); empty when absent.
std::string device_name_of(const nlohmann::json& j) {
  if (!j.is_object()) return "";
  const auto d = j.find("device");
  if (d == j.end() || !d->is_object()) return "";
  const auto n = d->find("name");
  return n != d->end() && n->is_string() ? n->get<std::string>() : "";
}

}  // namespace

void read_calibration_inputs(const std::vector<std::string>& paths, std::vector<NamedProfile>& profiles,
                             std::vector<NamedBench>& benches) {
  for (const std::string& path : paths) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw InputError(path, "cannot open");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::parse_error& e) {
      throw InputError(path, fmt::format("is not valid JSON (byte {}): {}", e.byte, e.what()));
    }
    classify_calibration_input(path, std::move(j), profiles, benches);
  }
}

void classify_calibration_input(const std::string& name, nlohmann::json j, std::vector<NamedProfile>& profiles,
                                std::vector<NamedBench>& benches) {
  const auto schema = j.is_object() ? j.find("schema") : j.end();
  if (schema != j.end() && schema->is_string() && schema->get<std::string>() == "cpscope.bench/1") {
    benches.push_back({name, std::move(j)});
  } else {
    Profile p = profile_from_json(j, name);
    profiles.push_back({name, std::move(p), device_name_of(j)});
  }
}

AutoBase auto_base(const std::vector<NamedProfile>& profiles, const std::vector<NamedBench>& benches) {
  std::vector<std::pair<std::string, std::string>> devices;  // (file, device name)
  for (const NamedProfile& p : profiles) devices.emplace_back(p.name, p.device);
  for (const NamedBench& b : benches) devices.emplace_back(b.name, device_name_of(b.bench));
  std::map<std::string, std::set<std::string>> cards;  // built-in profile ("" for none) -> device names
  std::map<std::string, std::vector<std::string>> files;
  std::vector<std::string> unnamed;  // host-backend and simulated runs: no card
  for (const auto& [file, device] : devices) {
    if (device.empty()) {
      unnamed.push_back(file);
      continue;
    }
    const std::string base = builtin_hardware_for_device(device);
    cards[base].insert(device);
    files[base].push_back(fmt::format("{} ({})", file, device));
  }
  if (cards.size() > 1 || (!cards.empty() && !unnamed.empty())) {
    std::vector<std::string> parts;
    for (const auto& [base, list] : files)
      parts.push_back(fmt::format("{}: {}", base.empty() ? "no built-in profile" : base, fmt::join(list, ", ")));
    if (!unnamed.empty()) parts.push_back(fmt::format("no card named: {}", fmt::join(unnamed, ", ")));
    throw InputError("base", fmt::format("auto: the inputs come from different cards ({}); one fit describes one "
                                         "card, so calibrate each card's runs separately",
                                         fmt::join(parts, "; ")));
  }
  const std::string fallback = default_hardware().name;
  if (cards.empty()) return {fallback, "no input names the card it ran on: host-backend or simulated runs"};
  const auto& [base, names] = *cards.begin();
  if (base.empty())
    return {fallback, fmt::format("no built-in profile describes {} ({}); pass --base to choose one",
                                  fmt::join(names, ", "), fmt::join(builtin_hardware_names(), ", "))};
  return {base, fmt::format("the card the inputs were measured on: {}", fmt::join(names, ", "))};
}

Calibration calibrate(const std::vector<NamedProfile>& profiles, const HardwareProfile& base, const std::string& name,
                      const std::vector<NamedBench>& benches) {
  if (profiles.empty() && benches.empty())
    throw InputError("profiles", "calibration needs at least one measured profile or bench file");
  Samples s;
  for (const NamedBench& nb : benches) collect_bench(nb, s);
  nlohmann::json inputs = nlohmann::json::array();
  for (const NamedProfile& np : profiles) {
    collect(np, s);
    inputs.push_back({{"file", np.name},
                      {"source", np.profile.run.source},
                      {"hardware", np.profile.run.hardware},
                      {"workload", to_json(np.profile.run.workload)}});
  }
  Calibration cal;
  cal.hardware = base;
  cal.hardware.name = name.empty() ? base.name + "-calibrated" : name;
  cal.hardware.description = fmt::format("{} fitted to {} measured profile(s) and {} bench file(s) by cp-sim calibrate",
                                         base.name, profiles.size(), benches.size());
  nlohmann::json kept = nlohmann::json::array();
  nlohmann::json residuals = nlohmann::json::array();

  // ---- compute ops: [latency | one column per cell | memory | beta] ----
  const auto n_cells = static_cast<int>(s.cells.size());
  bool any_memory = false, any_overlap = false;
  for (const auto& c : s.compute) {
    any_memory = any_memory || c.bytes > 0;  // a DkvAdd or Layout, or the fills before any op
    any_overlap = any_overlap || c.overlap > 0;
  }
  bool any_memory_op = false;  // a DkvAdd or Layout: bytes apart from any attention
  for (const auto& c : s.compute) any_memory_op = any_memory_op || c.cell < 0;
  bool fit_latency = true, fit_beta = any_overlap, fit_memory = any_memory;
  Eigen::VectorXd x;
  double latency = static_cast<double>(base.launch_latency_ns);
  double beta = 1.0 - 1.0 / base.comm_compute_interference;
  std::vector<double> ns_per_flop(static_cast<std::size_t>(n_cells), 0.0);
  double ns_per_byte = 1.0 / base.memory_bandwidth_GBps;
  bool solved = s.compute.empty();
  for (int attempt = 0; attempt < 5 && !solved; ++attempt) {
    const int col_mem = (fit_latency ? 1 : 0) + n_cells;
    const int col_beta = col_mem + (fit_memory ? 1 : 0);
    const int cols = col_beta + (fit_beta ? 1 : 0);
    Eigen::MatrixXd a = Eigen::MatrixXd::Zero(static_cast<Eigen::Index>(s.compute.size()), cols);
    Eigen::VectorXd b(static_cast<Eigen::Index>(s.compute.size()));
    for (std::size_t i = 0; i < s.compute.size(); ++i) {
      const ComputeSample& c = s.compute[i];
      const auto r = static_cast<Eigen::Index>(i);
      double rhs = c.duration;
      if (fit_latency) a(r, 0) = c.launches; else rhs -= c.launches * latency;
      if (c.cell >= 0) a(r, (fit_latency ? 1 : 0) + c.cell) = c.flops;
      if (fit_memory) a(r, col_mem) = c.bytes; else rhs -= c.bytes * ns_per_byte;
      if (fit_beta) a(r, col_beta) = c.overlap; else rhs -= beta * c.overlap;
      b(r) = rhs;  // the parts not fitted move to the right side
    }
    // Weight by the measured duration (relative error), not by the right side that fixed parts reduced.
    for (std::size_t i = 0; i < s.compute.size(); ++i) {
      const double wgt = 1.0 / s.compute[i].duration;
      a.row(static_cast<Eigen::Index>(i)) *= wgt;
      b(static_cast<Eigen::Index>(i)) *= wgt;
    }
    if (solve_scaled(a, b, x)) {
      if (fit_latency) latency = x(0);
      for (int c = 0; c < n_cells; ++c) ns_per_flop[static_cast<std::size_t>(c)] = x((fit_latency ? 1 : 0) + c);
      if (fit_memory) ns_per_byte = x(col_mem);
      if (fit_beta) beta = x(col_beta);
      const bool sane_latency = latency >= 0;
      if (fit_memory && !(ns_per_byte > 0)) {
        fit_memory = false;
        ns_per_byte = 1.0 / base.memory_bandwidth_GBps;
        kept.push_back({{"field", "memory_bandwidth_GBps"}, {"why", "the fit gave no positive bandwidth"}});
        continue;
      }
      // A factor above 10 (a kernel at a tenth of its rate beside a transfer) is no GPU's: the fit has
      // read something else (noise, ops that wait rather than copy) as interference.
      const bool sane_beta = !fit_beta || (beta >= 0 && beta <= 0.9);
      if (sane_latency && sane_beta) {
        solved = true;
        break;
      }
      if (!sane_latency) {
        fit_latency = false;
        latency = static_cast<double>(base.launch_latency_ns);
        kept.push_back({{"field", "launch_latency_ns"}, {"why", "the fit gave a negative latency"}});
      }
      if (!sane_beta) {
        fit_beta = false;
        kept.push_back({{"field", "comm_compute_interference"},
                        {"why", beta >= 1 ? std::string("the fit left overlapped kernels no progress at all (no finite "
                                                        "factor; a plausible one is in [1, 10])")
                                          : fmt::format("the fit gave a factor of {:.3g}, outside [1, 10]", 1.0 / (1.0 - beta))}});
        beta = 1.0 - 1.0 / base.comm_compute_interference;
      }
      continue;
    }
    if (fit_memory && !any_memory_op) {
      fit_memory = false;
      ns_per_byte = 1.0 / base.memory_bandwidth_GBps;
      kept.push_back({{"field", "memory_bandwidth_GBps"},
                      {"why", "not identifiable: only the fills before attention ops touched memory, each beside a "
                              "block shape of its own"}});
    } else if (fit_latency) {
      fit_latency = false;
      kept.push_back({{"field", "launch_latency_ns"},
                      {"why", "not identifiable: each block shape was measured at one size and no memory op "
                              "separates latency from rate"}});
    } else if (fit_beta) {
      fit_beta = false;
      kept.push_back({{"field", "comm_compute_interference"}, {"why", "not identifiable from these profiles"}});
    } else {
      throw InputError("profiles", "the compute samples do not determine the rates (rank-deficient fit)");
    }
  }
  if (!any_overlap) kept.push_back({{"field", "comm_compute_interference"}, {"why", "no attention op overlapped communication"}});
  if (!any_memory) kept.push_back({{"field", "memory_bandwidth_GBps"}, {"why", "no DkvAdd, Layout or fill was measured"}});
  if (s.compute.empty()) kept.push_back({{"field", "attention"}, {"why", "no compute op was measured"}});

  HardwareProfile& hw = cal.hardware;
  hw.launch_latency_ns = static_cast<Nanos>(std::llround(latency));
  if (fit_memory && ns_per_byte > 0) hw.memory_bandwidth_GBps = 1.0 / ns_per_byte;
  hw.comm_compute_interference = 1.0 / (1.0 - beta);
  // Rates: TFLOP/s = 1e-3 / (ns per FLOP). One table per measured (pass, mask, head_dim) over the
  // measured q and kv lengths, widened by the base table's lengths beyond them. A grid point nobody
  // measured takes the base rate scaled as at the nearest measured cell (fitted/base there; distance in
  // log2 of q plus log2 of kv, ties averaged geometrically): inside the measured range it follows the
  // base's shape between measurements, and beyond it the base's trend from the edge, where clamping at
  // the edge would hold a causal or small block at its neighbour's rate (a GPU's rate still moves there).
  nlohmann::json cells = nlohmann::json::array();
  std::map<std::tuple<std::string, std::string, std::int64_t>, std::vector<int>> tables;
  for (int c = 0; c < n_cells; ++c) {
    const auto& [pass, mask, d, q, kv] = s.cells[static_cast<std::size_t>(c)];
    tables[{pass, mask, d}].push_back(c);
  }
  for (const auto& [tkey, members] : tables) {
    // Named copies, not a structured binding: the lambdas below capture them, which clang before 16 refuses
    // (tests/fuzz/run.sh builds this file with Debian's clang 14).
    const std::string& pass = std::get<0>(tkey);
    const std::string& mask = std::get<1>(tkey);
    const std::int64_t d = std::get<2>(tkey);
    RateTable t;
    t.pass = pass;
    t.mask = mask;
    t.head_dim = d;
    auto base_rate = [&](std::int64_t q, std::int64_t kv) {
      try {
        return base.attention_tflops(pass == "bwd", mask == "causal", d, q, kv);
      } catch (const InputError&) {
        return 0.0;  // the base has no table for this pass, mask and head_dim
      }
    };
    struct Measured {
      std::int64_t q, kv;
      double tflops, ratio;  // ratio: fitted / base (0 without a base rate)
    };
    std::vector<Measured> measured;
    std::set<std::int64_t> qs, kvs;
    for (int c : members) {
      const auto& key = s.cells[static_cast<std::size_t>(c)];
      const std::int64_t q = std::get<3>(key), kv = std::get<4>(key);
      const double npf = ns_per_flop[static_cast<std::size_t>(c)];
      if (!(npf > 0)) {
        kept.push_back({{"field", fmt::format("attention {}/{} q={} kv={}", pass, mask, q, kv)},
                        {"why", "the fit gave a non-positive time per FLOP"}});
        continue;
      }
      const double tf = 1e-3 / npf;
      const double b = base_rate(q, kv);
      measured.push_back({q, kv, tf, b > 0 ? tf / b : 0.0});
      qs.insert(q);
      kvs.insert(kv);
      cells.push_back({{"pass", pass}, {"mask", mask}, {"head_dim", d}, {"q_tokens", q}, {"kv_tokens", kv}, {"tflops", tf}});
    }
    if (measured.empty()) continue;
    // The base table's lengths outside the measured range, so that lookups there follow its trend.
    auto base_table = std::find_if(base.attention.begin(), base.attention.end(), [&](const RateTable& r) {
      return r.pass == pass && r.mask == mask && r.head_dim == d;
    });
    if (base_table != base.attention.end()) {
      const auto [q_lo, q_hi] = std::pair{*qs.begin(), *qs.rbegin()};
      const auto [kv_lo, kv_hi] = std::pair{*kvs.begin(), *kvs.rbegin()};
      for (std::int64_t q : base_table->q_tokens)
        if (q < q_lo || q > q_hi) qs.insert(q);
      for (std::int64_t kv : base_table->kv_tokens)
        if (kv < kv_lo || kv > kv_hi) kvs.insert(kv);
    }
    auto fill = [&](std::int64_t q, std::int64_t kv) {
      double best = std::numeric_limits<double>::infinity(), log_sum = 0;
      int n = 0;
      const bool scale = base_rate(q, kv) > 0 && measured.front().ratio > 0;
      for (const Measured& m : measured) {
        const double dist = std::abs(std::log2(static_cast<double>(q) / static_cast<double>(m.q))) +
                            std::abs(std::log2(static_cast<double>(kv) / static_cast<double>(m.kv)));
        const double v = std::log(scale ? m.ratio : m.tflops);
        if (dist < best - 1e-9) {
          best = dist;
          log_sum = v;
          n = 1;
        } else if (dist <= best + 1e-9) {
          log_sum += v;
          ++n;
        }
      }
      const double nearest = std::exp(log_sum / n);
      return scale ? base_rate(q, kv) * nearest : nearest;
    };
    std::map<std::pair<std::int64_t, std::int64_t>, double> fitted;
    for (const Measured& m : measured) fitted[{m.q, m.kv}] = m.tflops;
    t.q_tokens.assign(qs.begin(), qs.end());
    t.kv_tokens.assign(kvs.begin(), kvs.end());
    for (std::int64_t q : t.q_tokens) {
      std::vector<double> row;
      for (std::int64_t kv : t.kv_tokens) {
        auto it = fitted.find({q, kv});
        row.push_back(it != fitted.end() ? it->second : fill(q, kv));
      }
      t.tflops.push_back(std::move(row));
    }
    auto existing = std::find_if(hw.attention.begin(), hw.attention.end(), [&](const RateTable& r) {
      return r.pass == t.pass && r.mask == t.mask && r.head_dim == t.head_dim;
    });
    if (existing != hw.attention.end())
      *existing = std::move(t);
    else
      hw.attention.push_back(std::move(t));
  }
  hw.peak_tflops_bf16 = std::max(hw.peak_tflops_bf16, [&] {
    double m = 0;
    for (const auto& t : hw.attention)
      for (const auto& row : t.tflops)
        for (double v : row) m = std::max(m, v);
    return m;
  }());

  // Compute residuals of the final model.
  std::map<std::string, Residual> by_cat;
  for (const ComputeSample& c : s.compute) {
    double pred = c.launches * latency + beta * c.overlap + c.bytes / hw.memory_bandwidth_GBps;
    if (c.cell >= 0) {
      const double npf = ns_per_flop[static_cast<std::size_t>(c.cell)];
      if (!(npf > 0)) continue;
      pred += c.flops * npf;
    }
    by_cat[c.category].add((pred - c.duration) / c.duration);
  }

  // ---- links ----
  nlohmann::json links = nlohmann::json::object();
  for (const Path path : {Path::NvLink, Path::Network, Path::DeviceCopy}) {
    const char* label = path == Path::Network ? "network" : path == Path::NvLink ? "nvlink" : "device_copy";
    std::vector<const LinkSample*> ls;
    std::set<double> sizes;
    for (const LinkSample& l : s.links)
      if (l.path == path) {
        ls.push_back(&l);
        sizes.insert(l.bytes);
      }
    // The base's device_copy when it has one; otherwise none, and the engine derives it from the fitted profile.
    const char* unset_copy = path == Path::DeviceCopy && !(base.device_copy.bandwidth_GBps > 0)
                                 ? " (left unset: half the fitted memory bandwidth, the launch latency)"
                                 : "";
    if (ls.empty()) {
      kept.push_back({{"field", label},
                      {"why", path == Path::DeviceCopy
                                  ? std::string("no transfer within one GPU was measured") + unset_copy
                                  : std::string("no point-to-point transfer on this link class was measured")}});
      continue;
    }
    // An unset device_copy starts from what the engine would use for it (from the fitted memory bandwidth).
    LinkClass fit = path == Path::Network ? hw.network : path == Path::NvLink ? hw.nvlink : hw.device_copy_link();
    LinkClass& lc = fit;
    Eigen::MatrixXd a(static_cast<Eigen::Index>(ls.size()), sizes.size() > 1 ? 2 : 1);
    Eigen::VectorXd b(static_cast<Eigen::Index>(ls.size()));
    const double lat0 = static_cast<double>(lc.latency_ns);
    for (std::size_t i = 0; i < ls.size(); ++i) {
      const auto r = static_cast<Eigen::Index>(i);
      if (sizes.size() > 1) {
        a(r, 0) = 1.0;
        a(r, 1) = ls[i]->bytes;
        b(r) = ls[i]->duration;
      } else {
        a(r, 0) = ls[i]->bytes;
        b(r) = ls[i]->duration - lat0;
      }
    }
    Eigen::VectorXd lx;
    double lat = lat0, npb = 0;
    if (sizes.size() > 1 && solve_relative(a, b, lx) && lx(0) >= 0 && lx(1) > 0) {
      lat = lx(0);
      npb = lx(1);
    } else {
      if (sizes.size() <= 1)
        kept.push_back({{"field", std::string(label) + ".latency_ns"}, {"why", "one message size: latency kept"}});
      // Bandwidth only, latency kept: sum of (d - lat) / sum of bytes (least squares on bytes alone).
      double num = 0, den = 0;
      for (const LinkSample* l : ls) {
        num += (l->duration - lat0) * l->bytes / (l->duration * l->duration);
        den += l->bytes * l->bytes / (l->duration * l->duration);
      }
      npb = den > 0 ? num / den : 0;
    }
    if (npb > 0) {
      lc.bandwidth_GBps = 1.0 / npb;
      lc.latency_ns = static_cast<Nanos>(std::llround(lat));
    } else {
      kept.push_back({{"field", label}, {"why", std::string("the fit gave a non-positive time per byte") + unset_copy}});
    }
    Residual res;
    for (const LinkSample* l : ls) {
      const double pred = static_cast<double>(lc.latency_ns) + l->bytes / lc.bandwidth_GBps;
      res.add((pred - l->duration) / l->duration);
    }
    if (npb > 0) (path == Path::Network ? hw.network : path == Path::NvLink ? hw.nvlink : hw.device_copy) = fit;
    links[label] = {{"bandwidth_GBps", lc.bandwidth_GBps}, {"latency_ns", lc.latency_ns}, {"samples", ls.size()}};
    by_cat[std::string("transfer ") + label] = res;
  }
  for (const auto& [cat, r] : by_cat) residuals.push_back(r.json(cat));

  for (const NamedBench& nb : benches) {
    const auto backend = nb.bench.find("backend");  // informative only: kept when it is a string
    inputs.push_back({{"file", nb.name},
                      {"bench", backend != nb.bench.end() && backend->is_string() ? backend->get<std::string>() : ""}});
  }
  cal.report = {{"base", base.name},
                {"inputs", std::move(inputs)},
                {"fitted",
                 {{"launch_latency_ns", hw.launch_latency_ns},
                  {"memory_bandwidth_GBps", hw.memory_bandwidth_GBps},
                  {"comm_compute_interference", hw.comm_compute_interference},
                  {"links", std::move(links)},
                  {"attention_cells", std::move(cells)}}},
                {"residuals", std::move(residuals)},
                {"kept_from_base", std::move(kept)},
                {"model", "compute: latency + flops/rate(shape) or bytes/memory_bandwidth, + (1-1/interference) x comm "
                          "overlap, with durations and overlaps weighted by the op's share of its device (ops "
                          "running at once on a device share it); transfers: latency + bytes/bandwidth per path (nvlink, network, device_copy: within one GPU) from the "
                          "last endpoint's start"}};
  return cal;
}

nlohmann::json calibration_json(const Calibration& c) {
  nlohmann::json j = to_json(c.hardware);
  j["calibration"] = c.report;
  return j;
}

namespace {

struct Aggregates {
  Nanos step = 0;
  std::map<int, std::pair<Nanos, Nanos>> pass_span;    // pass -> (min start, max end)
  std::map<std::string, std::pair<double, int>> kind;  // op kind -> (sum ns, count)
};

Aggregates aggregate(const Timeline& t) {
  Aggregates a;
  a.step = summarize(t).step_time_ns;
  for (const Interval& iv : t.intervals) {
    if (iv.pass >= 0) {
      auto [it, fresh] = a.pass_span.emplace(iv.pass, std::make_pair(iv.start, iv.end));
      if (!fresh) it->second = {std::min(it->second.first, iv.start), std::max(it->second.second, iv.end)};
    }
    auto& k = a.kind[kind_of(t.name(iv.name))];
    k.first += static_cast<double>(iv.end - iv.start);
    ++k.second;
  }
  return a;
}

double rel(double pred, double meas) { return meas > 0 ? (pred - meas) / meas : 0.0; }

}  // namespace

Validation validate(const std::vector<NamedProfile>& profiles, const HardwareProfile& hardware, bool leave_one_out,
                    const std::vector<NamedBench>& benches) {
  if (profiles.empty()) throw InputError("profiles", "validation needs at least one measured profile");
  if (!leave_one_out && !benches.empty())
    throw InputError(benches.front().name, "is a cpscope.bench/1 file: bench rows join the fits of --leave-one-out "
                                           "only; validate --hardware FILE predicts profiles without fitting");
  if (leave_one_out && profiles.size() < 2 && benches.empty())
    throw InputError("leave-one-out", "needs at least two profiles, or one and a bench file, to fit on the others");
  Validation v;
  v.hardware = hardware.name;
  v.leave_one_out = leave_one_out;
  for (const NamedBench& nb : benches) v.bench_files.push_back(nb.name);
  double sum = 0;
  for (std::size_t i = 0; i < profiles.size(); ++i) {
    const NamedProfile& np = profiles[i];
    if (!np.profile.has_timeline)
      throw InputError(np.name, "has no timeline (write it with cp-profile --json or cp-sim run --profile)");
    HardwareProfile hw = hardware;
    if (leave_one_out) {
      std::vector<NamedProfile> rest;
      for (std::size_t k = 0; k < profiles.size(); ++k)
        if (k != i) rest.push_back(profiles[k]);
      hw = calibrate(rest, hardware, "", benches).hardware;
    }
    // Ranks that shared a device when measured (loopback, host backend) share it in the simulation too.
    const SimulatedRun sim = simulate_workload(np.profile.run.workload, hw, true, np.profile.run.sharing);
    const Aggregates m = aggregate(np.profile.timeline);
    // A replay profile measures one rank of the N-rank schedule, so its step time is that rank's span; the
    // prediction must then be the same rank's span in the simulated timeline, not the slowest of all N ranks.
    const std::set<std::int32_t> ranks = np.profile.timeline.ranks_with_intervals();
    const bool partial = !ranks.empty() && static_cast<std::int32_t>(ranks.size()) < sim.timeline.num_ranks;
    Timeline cut;
    if (partial) {
      cut = sim.timeline;
      cut.keep_ranks(ranks);
    }
    const Aggregates p = aggregate(partial ? cut : sim.timeline);
    Comparison c;
    c.name = np.name;
    c.workload = np.profile.run.workload;
    c.measured_ns = m.step;
    c.predicted_ns = p.step;
    c.error = rel(static_cast<double>(p.step), static_cast<double>(m.step));
    for (const auto& [pass, span] : m.pass_span) {
      auto it = p.pass_span.find(pass);
      if (it == p.pass_span.end()) continue;
      const double ms = static_cast<double>(span.second - span.first);
      const double ps = static_cast<double>(it->second.second - it->second.first);
      c.passes.push_back({pass == 0 ? "fwd" : "bwd", ms, ps, rel(ps, ms)});
    }
    for (const auto& [kind, agg] : m.kind) {
      auto it = p.kind.find(kind);
      if (it == p.kind.end()) continue;
      const double mm = agg.first / agg.second;
      const double pm = it->second.first / it->second.second;
      c.kinds.push_back({kind, mm, pm, rel(pm, mm)});
    }
    sum += std::abs(c.error);
    if (std::abs(c.error) >= v.max_abs_error) {
      v.max_abs_error = std::abs(c.error);
      v.worst = c.name;
    }
    v.rows.push_back(std::move(c));
  }
  v.mean_abs_error = sum / static_cast<double>(v.rows.size());
  return v;
}

nlohmann::json validation_json(const Validation& v) {
  nlohmann::json rows = nlohmann::json::array();
  for (const Comparison& c : v.rows) {
    nlohmann::json passes = nlohmann::json::array(), kinds = nlohmann::json::array();
    for (const auto& p : c.passes)
      passes.push_back({{"pass", p.what}, {"measured_ns", p.measured_ns}, {"predicted_ns", p.predicted_ns}, {"error", p.error}});
    for (const auto& k : c.kinds)
      kinds.push_back({{"kind", k.what}, {"measured_mean_ns", k.measured_ns}, {"predicted_mean_ns", k.predicted_ns},
                       {"error", k.error}});
    rows.push_back({{"profile", c.name},
                    {"workload", to_json(c.workload)},
                    {"measured_ns", c.measured_ns},
                    {"predicted_ns", c.predicted_ns},
                    {"error", c.error},
                    {"passes", std::move(passes)},
                    {"op_kinds", std::move(kinds)}});
  }
  return {{"schema", "cpscope.validation/1"},
          {"hardware", v.hardware},
          {"leave_one_out", v.leave_one_out},
          {"rows", std::move(rows)},
          {"mean_abs_error", v.mean_abs_error},
          {"max_abs_error", v.max_abs_error},
          {"worst", v.worst},
          {"bench_files", v.bench_files}};
}

std::string validation_table(const Validation& v) {
  std::string out = fmt::format("{:<32} {:<12} {:>4} {:>8} {:<7} {:>12} {:>12} {:>8}\n", "profile", "schedule", "cp",
                                "seq", "pass", "measured", "predicted", "error");
  for (const Comparison& c : v.rows) {
    std::string name = c.name;
    if (name.size() > 32) name = "..." + name.substr(name.size() - 29);
    out += fmt::format("{:<32} {:<12} {:>4} {:>8} {:<7} {:>12} {:>12} {:>+7.1f}%\n", name, to_string(c.workload.schedule),
                       c.workload.cp, c.workload.seq, to_string(c.workload.pass), format_nanos(c.measured_ns),
                       format_nanos(c.predicted_ns), 100.0 * c.error);
    for (const auto& k : c.kinds)
      out += fmt::format("{:<32}   {:<28} mean {:>12} {:>12} {:>+7.1f}%\n", "", k.what,
                         format_nanos(static_cast<Nanos>(k.measured_ns)), format_nanos(static_cast<Nanos>(k.predicted_ns)),
                         100.0 * k.error);
  }
  out += fmt::format("mean absolute error {:.2f}%, max {:.2f}% ({}) over {} profiles\n", 100.0 * v.mean_abs_error,
                     100.0 * v.max_abs_error, v.worst, v.rows.size());
  if (!v.bench_files.empty())
    out += fmt::format("every fit included {} bench file(s): {}\n", v.bench_files.size(), fmt::join(v.bench_files, ", "));
  return out;
}

}  // namespace cpscope
