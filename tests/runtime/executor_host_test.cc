// Every schedule, run by the executor on the host backend (ranks as threads, double precision), must
// reproduce plain single-device attention: forward O and LSE, backward dQ, dK, dV, to 1e-10 relative.
// And the check must be able to fail: a broken LSE merge, a skipped step, a receive that never matches
// and a transfer whose bytes disagree with the tensors are all caught.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <limits>
#include <map>
#include <regex>
#include <memory>
#include <set>
#include <tuple>

#include "runtime/executor.h"
#include "runtime/host_run.h"
#include "runtime/layout.h"
#include "runtime/reference.h"
#include "sim/error.h"
#include "sim/schedule.h"

namespace cpscope::rt {
namespace {

constexpr double kTolerance = 1e-10;

Workload base_workload(ScheduleKind kind, std::int64_t cp, bool gqa, Mask mask, PassSet pass) {
  Workload w;
  w.schedule = kind;
  w.cp = cp;
  w.batch = 1;
  w.seq = 64;
  w.heads = 8;
  w.kv_heads = gqa ? 2 : 8;
  w.head_dim = 16;
  w.mask = mask;
  w.pass = pass;
  w.gpus_per_node = 8;
  return w;
}

// Reference results per attention shape (batch, seq, heads, kv heads, dim, mask), computed once.
const AttentionData& reference(const Workload& w) {
  static std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, int>, AttentionData>
      cache;
  auto key = std::make_tuple(w.batch, w.seq, w.heads, w.kv_heads, w.head_dim, static_cast<int>(w.mask));
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  AttentionData d = random_inputs(w, 1234);
  reference_forward(w, d);
  reference_backward(w, d);
  return cache.emplace(key, std::move(d)).first->second;
}

std::string describe(const Workload& w) {
  return fmt::format("{} cp={} U={} B={} H={}/{} mask={} pass={} balance={} dkv={} G={}", to_string(w.schedule), w.cp,
                     w.ulysses, w.batch, w.heads, w.kv_heads, to_string(w.mask), to_string(w.pass),
                     to_string(w.balance), to_string(w.dkv), w.kv_head_groups);
}

struct Errors {
  double o = 0, lse = 0, dq = 0, dk = 0, dv = 0;
  double max() const { return std::max({o, lse, dq, dk, dv}); }
};

Errors run_and_compare(const Workload& w, const HostRunOptions& options = {}) {
  const AttentionData& ref = reference(w);
  AttentionData in;
  in.q = ref.q;
  in.k = ref.k;
  in.v = ref.v;
  in.dout = ref.dout;
  if (w.pass == PassSet::Bwd) {
    in.o = ref.o;
    in.lse = ref.lse;
  }
  const Schedule s = make_schedule(w);
  const HostRunResult r = run_on_host(s, in, options);
  Errors e;
  if (w.pass != PassSet::Bwd) {
    e.o = relative_error(r.out.o, ref.o);
    e.lse = relative_error(r.out.lse, ref.lse);
  }
  if (w.pass != PassSet::Fwd) {
    e.dq = relative_error(r.out.dq, ref.dq);
    e.dk = relative_error(r.out.dk, ref.dk);
    e.dv = relative_error(r.out.dv, ref.dv);
  }
  return e;
}

// Runs every valid workload of `cases`, expects each within tolerance, and returns how many ran.
int check_all(const std::vector<Workload>& cases) {
  int ran = 0;
  for (const Workload& w : cases) {
    if (!invalid_reason(w).empty()) continue;
    SCOPED_TRACE(describe(w));
    const Errors e = run_and_compare(w);
    EXPECT_LE(e.o, kTolerance) << "O";
    EXPECT_LE(e.lse, kTolerance) << "LSE";
    EXPECT_LE(e.dq, kTolerance) << "dQ";
    EXPECT_LE(e.dk, kTolerance) << "dK";
    EXPECT_LE(e.dv, kTolerance) << "dV";
    ++ran;
  }
  return ran;
}

const std::vector<Mask> kMasks = {Mask::Causal, Mask::Full};
const std::vector<PassSet> kPasses = {PassSet::Fwd, PassSet::Bwd, PassSet::FwdBwd};
const std::vector<std::int64_t> kCp = {1, 2, 4, 8};

TEST(ExecutorHost, RingAndZigzagRingMatchPlainAttention) {
  std::vector<Workload> cases;
  for (ScheduleKind kind : {ScheduleKind::Ring, ScheduleKind::ZigzagRing})
    for (std::int64_t n : kCp)
      for (bool gqa : {true, false})
        for (Mask m : kMasks)
          for (PassSet p : kPasses)
            for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
              if (p == PassSet::Fwd && dkv == DkvVariant::Input) continue;  // forward is the same
              Workload w = base_workload(kind, n, gqa, m, p);
              w.dkv = dkv;
              cases.push_back(w);
            }
  EXPECT_EQ(check_all(cases), 2 * 4 * 2 * 2 * 5);
}

TEST(ExecutorHost, AllGatherMatchesPlainAttention) {
  std::vector<Workload> cases;
  for (std::int64_t n : kCp)
    for (bool gqa : {true, false})
      for (Mask m : kMasks)
        for (PassSet p : kPasses)
          for (Balance bal : {Balance::Contiguous, Balance::Zigzag})
            for (std::int64_t groups : {1, 2})
              for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
                if (p == PassSet::Fwd && dkv == DkvVariant::Input) continue;
                Workload w = base_workload(ScheduleKind::AllGather, n, gqa, m, p);
                w.balance = bal;
                w.kv_head_groups = groups;
                w.dkv = dkv;
                cases.push_back(w);
              }
  EXPECT_EQ(check_all(cases), 4 * 2 * 2 * 2 * 2 * 5);
}

TEST(ExecutorHost, UlyssesMatchesPlainAttention) {
  std::vector<Workload> cases;
  for (std::int64_t n : kCp)
    for (bool gqa : {true, false})
      for (Mask m : kMasks)
        for (PassSet p : kPasses) cases.push_back(base_workload(ScheduleKind::Ulysses, n, gqa, m, p));
  // Every N with GQA too: 2 KV heads are split over N = 2 and repeated up to N = 4, 8 (r = 2, 4).
  EXPECT_EQ(check_all(cases), 4 * 2 * 2 * 3);
}

TEST(ExecutorHost, HybridMatchesPlainAttention) {
  std::vector<Workload> cases;
  for (auto [u, r] : {std::pair{2, 2}, std::pair{2, 4}, std::pair{4, 2}, std::pair{8, 1}, std::pair{1, 4}})
    for (bool gqa : {true, false})
      for (Mask m : kMasks)
        for (PassSet p : kPasses)
          for (Balance bal : {Balance::Contiguous, Balance::Zigzag})
            for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
              if (p == PassSet::Fwd && dkv == DkvVariant::Input) continue;
              Workload w = base_workload(ScheduleKind::Hybrid, u * r, gqa, m, p);
              w.ulysses = u;
              w.balance = bal;
              w.dkv = dkv;
              cases.push_back(w);
            }
  // All five splits with GQA too (2 KV heads repeated up to U = 4 and 8).
  EXPECT_EQ(check_all(cases), 5 * 2 * 2 * 2 * 5);
}

TEST(ExecutorHost, BatchOfTwoAndRepeatedIterations) {
  for (ScheduleKind kind : all_schedules()) {
    Workload w = base_workload(kind, 4, kind != ScheduleKind::Ulysses, Mask::Causal, PassSet::FwdBwd);
    w.batch = 2;
    if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
    SCOPED_TRACE(describe(w));
    HostRunOptions o;
    o.iterations = 3;  // accumulators must start empty every iteration
    EXPECT_LE(run_and_compare(w, o).max(), kTolerance);
  }
}

// A backend that forwards everything but breaks the forward merge: each block's attention replaces
// the rows' O and LSE instead of merging with what earlier blocks left (last block wins).
class ReplacingMerge final : public Backend {
 public:
  explicit ReplacingMerge(Backend& inner) : in_(inner) {}
  void allocate(const RankLayout& l, std::int32_t s, std::int32_t e) override { in_.allocate(l, s, e); }
  void upload(TensorId t, const std::vector<double>& d) override { in_.upload(t, d); }
  std::vector<double> download(TensorId t) override { return in_.download(t); }
  void wait_event(const Op& op, std::int32_t s, std::int32_t e) override { in_.wait_event(op, s, e); }
  void record_event(const Op& op, std::int32_t s, std::int32_t e) override { in_.record_event(op, s, e); }
  void fill(const Op& op, std::int32_t s, const Region& r, double v) override { in_.fill(op, s, r, v); }
  void copy(const Op& op, std::int32_t s, const Region& a, const Region& b, bool add,
            const std::vector<std::int64_t>& m) override {
    in_.copy(op, s, a, b, add, m);
  }
  void attend_fwd(const Op& op, std::int32_t s, const AttendArgs& a, bool merge) override {
    const Region rows_o{a.o, 0, 1, a.q_off, a.q_len, a.head_begin, a.head_count};
    Region rows_lse = rows_o;
    rows_lse.tensor = a.lse;
    in_.fill(op, s, rows_o, 0.0);
    in_.fill(op, s, rows_lse, -std::numeric_limits<double>::infinity());
    in_.attend_fwd(op, s, a, merge);
  }
  void attend_bwd(const Op& op, std::int32_t s, const AttendArgs& a) override { in_.attend_bwd(op, s, a); }
  void exchange(const Op& op, std::int32_t s, const ExchangeArgs& x) override { in_.exchange(op, s, x); }
  void all_gather(const Op& op, std::int32_t s, const AllGatherArgs& x) override { in_.all_gather(op, s, x); }
  void reduce_scatter(const Op& op, std::int32_t s, const ReduceScatterArgs& x) override {
    in_.reduce_scatter(op, s, x);
  }
  void synchronize() override { in_.synchronize(); }

 private:
  Backend& in_;
};

TEST(ExecutorHost, BrokenMergeIsCaught) {
  const Workload w = base_workload(ScheduleKind::ZigzagRing, 4, true, Mask::Causal, PassSet::Fwd);
  HostRunOptions o;
  o.wrap = [](Backend& inner, std::int32_t) { return std::make_unique<ReplacingMerge>(inner); };
  const Errors e = run_and_compare(w, o);
  EXPECT_GT(e.o, 1e-2);
  EXPECT_GT(e.lse, 1e-2);
}

TEST(ExecutorHost, SkippedStepIsCaught) {
  const Workload w = base_workload(ScheduleKind::Ring, 4, true, Mask::Full, PassSet::FwdBwd);
  Schedule s = make_schedule(w);
  // Rank 2 skips its step-1 forward attention (its K/V block contributes nothing).
  bool skipped = false;
  for (Op& op : s.ranks[2].ops)
    if (op.kind == OpKind::Attend && op.step == 1) {
      op.attn.kv_len = 0;
      skipped = true;
    }
  ASSERT_TRUE(skipped);
  const AttentionData& ref = reference(w);
  AttentionData in{ref.q, ref.k, ref.v, ref.dout, {}, {}, {}, {}, {}};
  const HostRunResult r = run_on_host(s, in);
  EXPECT_GT(relative_error(r.out.o, ref.o), 1e-2);
  EXPECT_GT(relative_error(r.out.dq, ref.dq), 1e-2);
  // The unmodified schedule passes with the same inputs.
  const HostRunResult good = run_on_host(make_schedule(w), in);
  EXPECT_LE(relative_error(good.out.o, ref.o), kTolerance);
}

TEST(ExecutorHost, UnmatchedReceiveTimesOutNamingTheOp) {
  const Workload w = base_workload(ScheduleKind::Ring, 4, true, Mask::Causal, PassSet::Fwd);
  Schedule s = make_schedule(w);
  for (Op& op : s.ranks[1].ops)
    if (op.kind == OpKind::SendRecv && op.step == 1) op.recv.peer = 3;  // rank 3 never sends to 1 on K/V
  const AttentionData& ref = reference(w);
  AttentionData in{ref.q, ref.k, ref.v, ref.dout, {}, {}, {}, {}, {}};
  HostRunOptions o;
  o.timeout = std::chrono::milliseconds(300);
  try {
    run_on_host(s, in, o);
    FAIL() << "expected a TransportError";
  } catch (const TransportError& e) {
    // The first wait to expire is reported: rank 1's unmatched receive, or a receive of a rank that
    // waits on rank 1 (which depends on thread scheduling). Either way it names the rank, op and step.
    const std::string msg = e.what();
    EXPECT_TRUE(std::regex_search(msg, std::regex(R"(rank \d+ op \d+ \(fwd/step\d+/sendrecv\): receive from rank \d+)")))
        << msg;
    EXPECT_NE(msg.find("timed out after 300 ms"), std::string::npos) << msg;
  }
}

TEST(ExecutorHost, TransferBytesMustMatchTheTensors) {
  const Workload w = base_workload(ScheduleKind::ZigzagRing, 2, true, Mask::Causal, PassSet::Fwd);
  Schedule s = make_schedule(w);
  for (Op& op : s.ranks[0].ops)
    if (op.kind == OpKind::SendRecv) op.send.bytes /= 2;
  const AttentionData& ref = reference(w);
  AttentionData in{ref.q, ref.k, ref.v, ref.dout, {}, {}, {}, {}, {}};
  EXPECT_THROW(run_on_host(s, in), InternalError);
}

// A backend that runs nothing: the executor's own checks (bytes, staging) are all that can fail.
class NullBackend final : public Backend {
 public:
  void allocate(const RankLayout&, std::int32_t, std::int32_t) override {}
  void upload(TensorId, const std::vector<double>&) override {}
  std::vector<double> download(TensorId) override { return {}; }
  void wait_event(const Op&, std::int32_t, std::int32_t) override {}
  void record_event(const Op&, std::int32_t, std::int32_t) override {}
  void fill(const Op&, std::int32_t, const Region&, double) override {}
  void copy(const Op&, std::int32_t, const Region&, const Region&, bool, const std::vector<std::int64_t>&) override {}
  void attend_fwd(const Op&, std::int32_t, const AttendArgs&, bool) override {}
  void attend_bwd(const Op&, std::int32_t, const AttendArgs&) override {}
  void exchange(const Op&, std::int32_t, const ExchangeArgs&) override {}
  void all_gather(const Op&, std::int32_t, const AllGatherArgs&) override {}
  void reduce_scatter(const Op&, std::int32_t, const ReduceScatterArgs&) override {}
  void synchronize() override {}
};

// Issues every rank's program on NullBackend; returns the IR's staged bytes over all ranks.
std::int64_t issue_all(const Schedule& s) {
  std::int64_t staged = 0;
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    NullBackend b;
    Executor e(s, static_cast<std::int32_t>(r), b);
    e.allocate();
    e.issue();
    for (const Op& op : s.ranks[r].ops) staged += op.staged();
  }
  return staged;
}

// The generators' Op::staged (what the simulator times as packing copies) must be what the runtime's
// layout makes its transports copy, over the cases that change it: batch (spans across batch entries),
// an fp32 input dtype (no conversion of the fp32 O), KV-head groups (head slices), the dK/dV dtype.
TEST(ExecutorHost, StagingInTheIrMatchesTheTensors) {
  int checked = 0, staging = 0;
  for (ScheduleKind kind : all_schedules())
    for (std::int64_t batch : {1, 2})
      for (DType dt : {DType::BF16, DType::FP32})
        for (std::int64_t groups : {1, 2})
          for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
            if (groups > 1 && kind != ScheduleKind::AllGather) continue;
            Workload w = base_workload(kind, 4, kind != ScheduleKind::Ulysses, Mask::Causal, PassSet::FwdBwd);
            if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
            w.batch = batch;
            w.dtype = dt;
            w.kv_head_groups = groups;
            w.dkv = dkv;
            SCOPED_TRACE(describe(w));
            const Schedule s = make_schedule(w);
            std::int64_t staged = 0;
            ASSERT_NO_THROW(staged = issue_all(s));
            ++checked;
            staging += staged > 0;
            // Ulysses' all-to-alls always stage (head slices); the rings' point-to-point slots are whole
            // tensors; all-gather's planes stage only with a batch, head groups, or an fp32 sum to convert.
            const bool a2a = kind == ScheduleKind::Ulysses || kind == ScheduleKind::Hybrid;
            const bool gather = kind == ScheduleKind::AllGather &&
                                (batch > 1 || groups > 1 || (dkv == DkvVariant::Fp32 && dt != DType::FP32));
            EXPECT_EQ(staged > 0, a2a || gather);
          }
  EXPECT_EQ(checked, 4 * 8 + 16);  // 8 cases per schedule, allgather's twice (two head groupings)
  EXPECT_GT(staging, 0);

  // And a wrong count is refused, naming both numbers.
  const Workload w = base_workload(ScheduleKind::Ulysses, 4, false, Mask::Causal, PassSet::Fwd);
  Schedule s = make_schedule(w);
  for (auto& prog : s.ranks)
    for (Op& op : prog.ops)
      if (op.kind == OpKind::AllToAll && op.buffer == BufferKind::O) op.staged_recv /= 2;
  try {
    issue_all(s);
    ADD_FAILURE() << "a halved Op::staged_recv was accepted";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("the IR stages"), std::string::npos) << e.what();
  }
}

// The nccl transport's communicator splits: disjoint groups share one split per stream; a group that
// overlaps another gets its own.
TEST(SplitLayers, DisjointGroupsShareOneSplitPerStream) {
  Workload w = base_workload(ScheduleKind::Hybrid, 8, true, Mask::Causal, PassSet::FwdBwd);
  w.ulysses = 2;  // 4 all-to-all groups of 2
  Schedule s = make_schedule(w);
  std::vector<SplitLayer> layers = split_layers(s);
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].groups, (std::vector<std::int32_t>{0, 1, 2, 3}));
  std::set<std::int32_t> a2a_streams;
  for (const Op& op : s.ranks[0].ops)
    if (op.kind == OpKind::AllToAll) a2a_streams.insert(op.stream);
  EXPECT_EQ(a2a_streams, std::set<std::int32_t>{layers[0].stream});

  // Rank 1 joins group 0 = {0, 1} and group 2 = {4, 5} in a hand-made extra group {1, 4}: it overlaps both.
  s.groups.push_back({1, 4});
  const auto extra = static_cast<std::int32_t>(s.groups.size() - 1);
  Op op = s.ranks[1].ops.front();
  op.kind = OpKind::AllGather;
  op.group = extra;
  op.stream = static_cast<std::uint8_t>(layers[0].stream);  // the all-to-alls' stream
  s.ranks[1].ops.push_back(op);
  layers = split_layers(s);
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[1].groups, std::vector<std::int32_t>{extra});
  for (const SplitLayer& l : layers) {  // no rank twice in a layer
    std::set<std::int32_t> seen;
    for (std::int32_t g : l.groups)
      for (std::int32_t r : s.groups[static_cast<std::size_t>(g)]) EXPECT_TRUE(seen.insert(r).second) << r;
  }

  EXPECT_TRUE(split_layers(make_schedule(base_workload(ScheduleKind::ZigzagRing, 4, true, Mask::Causal,
                                                         PassSet::FwdBwd)))
                  .empty());  // point to point only: no split
}

// The generators' Op::fills (what the simulator times before an op) must be the fills the executor
// issues: every schedule, pass set, batch, dK/dV dtype and head grouping, and cp = 1. The executor
// refuses a mismatch itself; here one wrong count shows the refusal.
TEST(ExecutorHost, FillsInTheIrMatchTheExecutors) {
  int checked = 0;
  std::int64_t fills = 0;
  for (ScheduleKind kind : all_schedules())
    for (std::int64_t cp : {1, 4})
      for (PassSet pass : {PassSet::Fwd, PassSet::Bwd, PassSet::FwdBwd})
        for (std::int64_t batch : {1, 2})
          for (std::int64_t groups : {1, 2})
            for (DkvVariant dkv : {DkvVariant::Fp32, DkvVariant::Input}) {
              if (groups > 1 && kind != ScheduleKind::AllGather) continue;
              if (cp == 1 && kind == ScheduleKind::Hybrid) continue;  // needs U x R
              Workload w = base_workload(kind, cp, kind != ScheduleKind::Ulysses, Mask::Causal, pass);
              if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
              w.batch = batch;
              w.kv_head_groups = groups;
              w.dkv = dkv;
              SCOPED_TRACE(describe(w));
              const Schedule s = make_schedule(w);
              ASSERT_NO_THROW(issue_all(s));
              ++checked;
              for (const RankProgram& prog : s.ranks)
                for (const Op& op : prog.ops) fills += op.fills;
            }
  EXPECT_EQ(checked, 3 * 24 + 48 + 12);  // ring, zigzag, ulysses; allgather (head groups); hybrid (cp 4 only)
  EXPECT_GT(fills, 0);

  Schedule s = make_schedule(base_workload(ScheduleKind::ZigzagRing, 4, true, Mask::Causal, PassSet::FwdBwd));
  for (Op& op : s.ranks[2].ops)
    if (op.kind == OpKind::AttendBwd) {
      op.fill_bytes += 4;  // the scratch is bigger than it is
      break;
    }
  try {
    issue_all(s);
    ADD_FAILURE() << "a wrong Op::fill_bytes was accepted";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("the IR fills"), std::string::npos) << e.what();
  }
}

TEST(ExecutorHost, RecordsOneIntervalPerOp) {
  const Workload w = base_workload(ScheduleKind::ZigzagRing, 4, true, Mask::Causal, PassSet::FwdBwd);
  const Schedule s = make_schedule(w);
  const AttentionData& ref = reference(w);
  AttentionData in{ref.q, ref.k, ref.v, ref.dout, {}, {}, {}, {}, {}};
  const HostRunResult r = run_on_host(s, in);
  ASSERT_EQ(r.intervals.size(), 4u);
  for (std::size_t rank = 0; rank < 4; ++rank) {
    std::set<std::int32_t> ids;
    for (const HostInterval& i : r.intervals[rank]) {
      EXPECT_LE(i.start_ns, i.end_ns);
      EXPECT_EQ(i.stream, s.ranks[rank].ops[static_cast<std::size_t>(i.op)].stream);
      ids.insert(i.op);
    }
    EXPECT_EQ(ids.size(), s.ranks[rank].ops.size()) << "rank " << rank;
  }
}

TEST(Layout, SequenceShardsPartitionTheTokens) {
  for (ScheduleKind kind : all_schedules())
    for (std::int64_t n : kCp) {
      Workload w = base_workload(kind, n, false, Mask::Causal, PassSet::Fwd);
      if (kind == ScheduleKind::Hybrid) w.ulysses = n >= 2 ? 2 : 1;
      if (!invalid_reason(w).empty()) continue;
      std::vector<int> seen(static_cast<std::size_t>(w.seq), 0);
      for (std::int64_t r = 0; r < n; ++r)
        for (std::int64_t t : seq_tokens(w, r)) ++seen[static_cast<std::size_t>(t)];
      for (int c : seen) ASSERT_EQ(c, 1) << describe(w);
    }
}

TEST(Layout, ZigzagRanksHoldHeadAndTailChunks) {
  Workload w = base_workload(ScheduleKind::ZigzagRing, 4, true, Mask::Causal, PassSet::Fwd);
  const auto t = seq_tokens(w, 1);  // chunks 1 and 6 of 8 chunks of 8 tokens
  ASSERT_EQ(t.size(), 16u);
  EXPECT_EQ(t.front(), 8);
  EXPECT_EQ(t[7], 15);
  EXPECT_EQ(t[8], 48);
  EXPECT_EQ(t.back(), 55);
}

}  // namespace
}  // namespace cpscope::rt
