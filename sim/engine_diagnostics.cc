// Engine diagnostics: when the queue runs dry with ops left, say for each rank which op is stuck and
// on what (an event, a peer's matching send or receive, the missing members of a collective).
#include <string>
#include <vector>

#include <fmt/format.h>

#include "sim/engine_sim.h"
#include "sim/error.h"

namespace cpscope::engine_detail {

namespace {
constexpr std::size_t kMaxListedRanks = 16;
}  // namespace

std::string Simulation::describe_blocked(std::int32_t rank, std::int32_t g) {
  const RankProgram& p = s_.ranks[rank];
  const Op& op = p.ops[local_of(rank, g)];
  const OpRec& rec = recs_[g];
  std::string what = fmt::format("rank {}: op {} {} (stream {})", rank, op.id, op_name(op), s_.streams[op.stream]);
  auto peer_op = [&](std::int32_t peer, std::int32_t global) {
    const Op& o = op_of(peer, global);
    return fmt::format("op {} {}", o.id, op_name(o));
  };
  const std::int32_t sid = stream_of(rank, g);
  if (!started(sid, g)) {
    for (int k = 0; k < 2; ++k) {
      const std::int32_t ev = op.wait[k], recorder = rec.wait[k];
      if (ev == kNoEvent || (recorder >= 0 && done(rank, recorder))) continue;
      for (const Op& r : p.ops)
        if (r.record == ev)
          return what + fmt::format(" waits for event {}, recorded by op {} {} (stream {}), which has not completed",
                                    ev, r.id, op_name(r), s_.streams[r.stream]);
      return what + fmt::format(" waits for event {}, which no op of rank {} records", ev, rank);
    }
    return what + " is ready but was never started (engine bug)";
  }
  if (op.kind == OpKind::SendRecv) {
    std::vector<std::string> parts;
    if (op.send.peer >= 0 && (rec.match_send == kNone || !started(stream_of(op.send.peer, rec.match_send), rec.match_send))) {
      if (rec.match_send == kNone)
        parts.push_back(fmt::format("its send to rank {} on channel {} has no matching receive (rank {} posts fewer "
                                    "receives from rank {} on that channel)",
                                    op.send.peer, op.send.channel, op.send.peer, rank));
      else
        parts.push_back(fmt::format("its send to rank {} on channel {} waits for the matching receive, {}, which has "
                                    "not started",
                                    op.send.peer, op.send.channel, peer_op(op.send.peer, rec.match_send)));
    }
    if (op.recv.peer >= 0) {
      if (rec.match_recv == kNone)
        parts.push_back(fmt::format("its receive from rank {} on channel {} has no matching send (rank {} posts fewer "
                                    "sends to rank {} on that channel)",
                                    op.recv.peer, op.recv.channel, op.recv.peer, rank));
      else if (!started(stream_of(op.recv.peer, rec.match_recv), rec.match_recv))
        parts.push_back(fmt::format("its receive from rank {} on channel {} waits for the matching send, {}, which "
                                    "has not started",
                                    op.recv.peer, op.recv.channel, peer_op(op.recv.peer, rec.match_recv)));
    }
    std::string joined;
    for (const auto& s : parts) joined += (joined.empty() ? " started; " : "; ") + s;
    return what + (joined.empty() ? " started and waits for its transfers" : joined);
  }
  if (is_collective(op.kind)) {
    const Collective& c = colls_[rec.match_send];
    std::string missing;
    for (const auto m : s_.groups[c.group]) {
      bool arrived = false;
      for (std::int32_t i = 0; i < c.arrived; ++i) arrived = arrived || members_[c.member_base + i].second == m;
      if (!arrived) missing += (missing.empty() ? "" : ", ") + std::to_string(m);
    }
    return what + fmt::format(" started; the collective on group {} waits for ranks [{}] to reach it", c.group,
                              missing);
  }
  return what + " started and never completed (engine bug)";
}

void Simulation::report_deadlock() {
  std::string msg = fmt::format("deadlock: the simulation stopped at t={} ns with {} of {} ops not completed; "
                                "first blocked op of each rank:",
                                now_, total_ops_ - done_ops_, total_ops_);
  std::size_t listed = 0, blocked = 0;
  const auto num_streams = static_cast<std::int32_t>(s_.streams.size());
  for (std::int32_t r = 0; r < static_cast<std::int32_t>(s_.ranks.size()); ++r) {
    std::int32_t first = kNone, first_id = 0;  // g and op id of the earliest-issued op not completed
    for (std::int32_t s = 0; s < num_streams; ++s) {
      const StreamState& st = streams_[ranks_[r].stream_base + s];
      if (st.next == st.stop) continue;
      const std::int32_t id = local_of(r, st.next);
      if (first == kNone || id < first_id) {
        first = st.next;
        first_id = id;
      }
    }
    if (first == kNone) continue;
    ++blocked;
    if (listed < kMaxListedRanks) {
      msg += "\n  " + describe_blocked(r, first);
      ++listed;
    }
  }
  if (blocked > listed) msg += fmt::format("\n  ... and {} more blocked ranks", blocked - listed);
  throw InternalError(msg);
}

}  // namespace cpscope::engine_detail
