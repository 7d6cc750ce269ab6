// Tests for sim/schedule: names, block pair counts, and check_schedule on valid and broken schedules.
#include "sim/schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "sim/error.h"
#include "sim/workload.h"

namespace cpscope {
namespace {

std::int64_t brute_pairs(const AttnBlock& a) {
  std::int64_t n = 0;
  for (std::int64_t i = 0; i < a.q_len; ++i)
    for (std::int64_t j = 0; j < a.kv_len; ++j)
      if (a.mask == AttnMask::Full || (a.mask == AttnMask::Causal && j <= i + a.causal_offset)) ++n;
  return n;
}

AttnBlock causal(std::int64_t q, std::int64_t k, std::int64_t o) {
  AttnBlock a;
  a.q_len = q;
  a.kv_len = k;
  a.causal_offset = o;
  a.mask = AttnMask::Causal;
  return a;
}

TEST(ScheduleNames, OpKindsPassesBuffersMasks) {
  EXPECT_EQ(to_string(OpKind::Attend), "attend");
  EXPECT_EQ(to_string(OpKind::AttendBwd), "attend_bwd");
  EXPECT_EQ(to_string(OpKind::DkvAdd), "dkv_add");
  EXPECT_EQ(to_string(OpKind::Layout), "layout");
  EXPECT_EQ(to_string(OpKind::SendRecv), "sendrecv");
  EXPECT_EQ(to_string(OpKind::AllGather), "allgather");
  EXPECT_EQ(to_string(OpKind::AllToAll), "alltoall");
  EXPECT_EQ(to_string(OpKind::ReduceScatter), "reduce_scatter");
  EXPECT_EQ(to_string(OpPass::Fwd), "fwd");
  EXPECT_EQ(to_string(OpPass::Bwd), "bwd");
  EXPECT_EQ(to_string(BufferKind::None), "none");
  EXPECT_EQ(to_string(BufferKind::KV), "kv");
  EXPECT_EQ(to_string(BufferKind::KvDkv), "kv_dkv");
  EXPECT_EQ(to_string(BufferKind::DQKV), "dqkv");
  EXPECT_EQ(to_string(AttnMask::None), "none");
  EXPECT_EQ(to_string(AttnMask::Full), "full");
  EXPECT_EQ(to_string(AttnMask::Causal), "causal");
  EXPECT_THROW(to_string(static_cast<OpKind>(200)), InternalError);
}

TEST(ScheduleNames, OpNameIsPassStepKind) {
  Op op;
  op.kind = OpKind::Attend;
  op.pass = OpPass::Fwd;
  op.step = 3;
  EXPECT_EQ(op_name(op), "fwd/step3/attend");
  op.kind = OpKind::ReduceScatter;
  op.pass = OpPass::Bwd;
  op.step = 0;
  EXPECT_EQ(op_name(op), "bwd/step0/reduce_scatter");
  op.kind = OpKind::AttendBwd;
  op.step = 1023;
  EXPECT_EQ(op_name(op), "bwd/step1023/attend_bwd");
}

TEST(BlockPairs, MatchesBruteForceForEveryOffset) {
  for (std::int64_t q = 0; q <= 7; ++q)
    for (std::int64_t k = 0; k <= 7; ++k)
      for (std::int64_t o = -10; o <= 10; ++o) {
        const AttnBlock a = causal(q, k, o);
        ASSERT_EQ(block_pairs(a), brute_pairs(a)) << q << "x" << k << " offset " << o;
      }
}

TEST(BlockPairs, FullNoneAndEdgeCases) {
  AttnBlock a;
  a.q_len = 5;
  a.kv_len = 7;
  a.mask = AttnMask::Full;
  EXPECT_EQ(block_pairs(a), 35);
  a.mask = AttnMask::None;
  EXPECT_EQ(block_pairs(a), 0);
  EXPECT_EQ(block_pairs(causal(0, 5, 0)), 0);
  EXPECT_EQ(block_pairs(causal(5, 0, 3)), 0);
  EXPECT_EQ(block_pairs(causal(4, 4, 0)), 10);  // the diagonal: S(S+1)/2
  EXPECT_EQ(block_pairs(causal(4, 4, -4)), 0);  // everything hidden
  EXPECT_EQ(block_pairs(causal(4, 4, -3)), 1);
  EXPECT_EQ(block_pairs(causal(4, 4, 3)), 16);  // everything visible
  EXPECT_EQ(block_pairs(causal(4, 4, 1000)), 16);
  EXPECT_EQ(block_pairs(causal(4, 12, 8)), 4 * 9 + 6);  // a causal prefix: rows see 9..12 keys
  // Zigzag diagonal over two chunks of c: 2c² + c.
  EXPECT_EQ(block_pairs(causal(6, 6, 0)), 2 * 9 + 3);
  // Large sizes stay exact (closed form, no loop).
  const std::int64_t S = std::int64_t{1} << 24;
  EXPECT_EQ(block_pairs(causal(S, S, 0)), S * (S + 1) / 2);
  EXPECT_EQ(block_pairs(causal(S, 2 * S, S)), S * S + S * (S + 1) / 2);
  a.q_len = -1;
  a.mask = AttnMask::Full;
  EXPECT_THROW(block_pairs(a), InternalError);
}

// A small valid schedule to break: a 2-rank contiguous ring forward.
Schedule small_ring(PassSet pass = PassSet::Fwd) {
  Workload w;
  w.batch = 1;
  w.seq = 16;
  w.heads = 2;
  w.kv_heads = 1;
  w.head_dim = 8;
  w.cp = 2;
  w.schedule = ScheduleKind::Ring;
  w.mask = Mask::Full;
  w.pass = pass;
  return make_schedule(w);
}

std::size_t find_op(const RankProgram& p, OpKind kind, int nth = 0) {
  for (std::size_t i = 0; i < p.ops.size(); ++i)
    if (p.ops[i].kind == kind && nth-- == 0) return i;
  ADD_FAILURE() << "no such op";
  return 0;
}

void expect_check_error(const Schedule& s, const std::string& needle) {
  try {
    check_schedule(s);
    ADD_FAILURE() << "check_schedule accepted a broken schedule (expected: " << needle << ")";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(CheckSchedule, AcceptsGeneratedSchedule) {
  EXPECT_NO_THROW(check_schedule(small_ring()));
  EXPECT_NO_THROW(check_schedule(small_ring(PassSet::FwdBwd)));
}

TEST(CheckSchedule, RejectsRemovedReceive) {
  Schedule s = small_ring();
  s.ranks[1].ops[find_op(s.ranks[1], OpKind::SendRecv)].recv = Transfer{};
  expect_check_error(s, "sends 0 -> 1 on channel 0 but 0 receives");
}

TEST(CheckSchedule, RejectsWaitBeforeRecord) {
  Schedule s = small_ring();
  RankProgram& p = s.ranks[0];
  // The attention of step 1 waits on the receive's event; make the first op wait on it too.
  const std::size_t attn = find_op(p, OpKind::Attend, 1);
  ASSERT_NE(p.ops[attn].wait[0], kNoEvent);
  p.ops[0].wait[1] = p.ops[attn].wait[0];
  expect_check_error(s, "before any op records it");
}

TEST(CheckSchedule, RejectsDoubleRecordAndOutOfRange) {
  Schedule s = small_ring();
  RankProgram& p = s.ranks[0];
  const std::size_t sr = find_op(p, OpKind::SendRecv);
  ASSERT_NE(p.ops[sr].record, kNoEvent);
  p.ops.back().record = p.ops[sr].record;
  expect_check_error(s, "already recorded");

  s = small_ring();
  s.ranks[0].ops[0].wait[0] = 99;
  expect_check_error(s, "out of range");

  s = small_ring();
  s.ranks[1].ops[0].stream = 7;
  expect_check_error(s, "stream 7 out of range");

  s = small_ring();
  s.ranks[1].ops[1].id = 0;
  expect_check_error(s, "is not its index");
}

TEST(CheckSchedule, RejectsUnequalBytesAndWrongFlops) {
  Schedule s = small_ring();
  Op& op = s.ranks[0].ops[find_op(s.ranks[0], OpKind::SendRecv)];
  op.send.bytes += 2;
  op.bytes += 2;
  expect_check_error(s, "meets a receive of");

  s = small_ring();
  s.ranks[1].ops[find_op(s.ranks[1], OpKind::Attend)].flops += 1;
  expect_check_error(s, "flops");
}

// A small all-gather forward over 4 ranks (one collective group).
Workload small_allgather(std::int64_t batch = 1) {
  Workload w;
  w.batch = batch;
  w.seq = 64;
  w.heads = 4;
  w.kv_heads = 2;
  w.head_dim = 8;
  w.cp = 4;
  w.schedule = ScheduleKind::AllGather;
  w.pass = PassSet::Fwd;
  return w;
}

TEST(CheckSchedule, RejectsMismatchedCollectives) {
  const Workload w = small_allgather();
  Schedule s = make_schedule(w);
  EXPECT_NO_THROW(check_schedule(s));
  Op& ag = s.ranks[2].ops[find_op(s.ranks[2], OpKind::AllGather)];
  ag.bytes_per_peer *= 2;
  ag.bytes *= 2;
  expect_check_error(s, "collective #0 on group 0");

  s = make_schedule(w);
  s.ranks[3].ops[find_op(s.ranks[3], OpKind::AllGather)].bytes += 1;
  expect_check_error(s, "(members-1)");
}

// The simulator matches transfers by channel and collectives by group, whatever the stream; the runtime's
// communicators are per stream, so a pair on two streams would hang there and is refused here.
TEST(CheckSchedule, RejectsAPairOrACollectiveSplitOverTwoStreams) {
  Schedule s = small_ring();
  Op& recv = s.ranks[1].ops[find_op(s.ranks[1], OpKind::SendRecv)];
  ASSERT_NE(recv.stream, 0);
  recv.stream = 0;  // the compute stream
  expect_check_error(s, "the runtime gives each stream its own communicator");

  s = make_schedule(small_allgather());
  Op& ag = s.ranks[2].ops[find_op(s.ranks[2], OpKind::AllGather)];
  ASSERT_NE(ag.stream, 0);
  ag.stream = 0;
  expect_check_error(s, "collective #0 on group 0 is on stream 0");
}

TEST(CheckSchedule, RejectsStagingOutsideCollectivesOrWithoutCopies) {
  Schedule s = make_schedule(small_allgather(2));
  const Op& gather = s.ranks[1].ops[find_op(s.ranks[1], OpKind::AllGather)];
  EXPECT_GT(gather.staged_recv, 0);  // with a batch, the gathered rows of a plane are apart: unpacked
  s.ranks[1].ops[find_op(s.ranks[1], OpKind::AllGather)].staged_copies = 0;
  expect_check_error(s, "staged");

  Schedule ring = small_ring();
  ring.ranks[0].ops[find_op(ring.ranks[0], OpKind::SendRecv)].staged_send = 8;
  expect_check_error(ring, "staging on an op that is not a collective");

  ring = small_ring();  // fills only before compute ops, bytes need kernels
  ring.ranks[0].ops[find_op(ring.ranks[0], OpKind::SendRecv)].fills = 1;
  ring.ranks[0].ops[find_op(ring.ranks[0], OpKind::SendRecv)].fill_bytes = 8;
  expect_check_error(ring, "only compute ops fill");
  ring = small_ring();
  ring.ranks[1].ops[find_op(ring.ranks[1], OpKind::Attend)].fills = 0;  // it fills O and LSE
  expect_check_error(ring, "only compute ops fill");
}

// The nccl transport copies what the IR says; replay's self-send always packs an all-to-all's parts
// and always unpacks a reduce-scatter's result.
TEST(TransportStaging, ReplayPacksEveryAllToAllAndUnpacksEveryReduceScatter) {
  Workload w = small_allgather();
  w.pass = PassSet::FwdBwd;
  w.dkv = DkvVariant::Input;  // G = 1, B = 1, dK/dV in the input dtype: the reduce-scatter works in place
  const Schedule s = make_schedule(w);
  const Op& rs = s.ranks[1].ops[find_op(s.ranks[1], OpKind::ReduceScatter)];
  EXPECT_EQ(rs.staged(), 0);
  EXPECT_EQ(transport_staging(rs, 4, false), StagedCopies{});
  EXPECT_EQ(transport_staging(rs, 4, true), (StagedCopies{rs.bytes_per_peer, 2}));
  const Op& ag = s.ranks[1].ops[find_op(s.ranks[1], OpKind::AllGather)];
  EXPECT_EQ(transport_staging(ag, 4, true), StagedCopies{});  // replay gathers in place as nccl does

  w.dkv = DkvVariant::Fp32;  // the fp32 sum converts into the output: unpacked by both
  const Schedule f = make_schedule(w);
  const Op& rs32 = f.ranks[1].ops[find_op(f.ranks[1], OpKind::ReduceScatter)];
  EXPECT_EQ(rs32.staged_recv, rs32.bytes_per_peer);
  EXPECT_EQ(transport_staging(rs32, 4, true), transport_staging(rs32, 4, false));

  Op a2a;
  a2a.kind = OpKind::AllToAll;
  a2a.bytes_per_peer = 1000;
  a2a.staged_recv = 3000;  // received into 3 staging slices; sent from the tensor
  a2a.staged_copies = 3;
  EXPECT_EQ(transport_staging(a2a, 3, false), (StagedCopies{3000, 3}));
  EXPECT_EQ(transport_staging(a2a, 3, true), (StagedCopies{6000, 6}));
  a2a.staged_send = 3000;
  a2a.staged_copies = 6;
  EXPECT_EQ(transport_staging(a2a, 3, true), transport_staging(a2a, 3, false));
  EXPECT_EQ(transport_staging(s.ranks[1].ops[find_op(s.ranks[1], OpKind::Attend)], 4, true), StagedCopies{});
}

// The nccl transport reduces a result it must unpack in place, in the rank's segment of what it sends, so
// the reduce-scatter needs no receive staging (all-gather's fp32 dK/dV: 1 GiB at 1M tokens); the unpack
// copy stays in the IR. Replay's self-send still receives into staging.
TEST(TransportStaging, ReduceScatterUnpacksFromItsInPlaceResult) {
  Workload w = small_allgather();
  w.pass = PassSet::Bwd;
  w.dkv = DkvVariant::Fp32;  // the fp32 sum converts into the input-dtype output: unpacked
  const Schedule s = make_schedule(w);
  const Op& rs = s.ranks[1].ops[find_op(s.ranks[1], OpKind::ReduceScatter)];
  ASSERT_EQ(rs.staged_recv, rs.bytes_per_peer);
  ASSERT_EQ(rs.staged_send, 0);  // batch 1: the members' rows lie end to end in the slot
  Bytes nccl_recv = 0, replay_recv = 0;
  for (const StagingNeed& n : staging_needs(s, 1, false)) nccl_recv = std::max(nccl_recv, n.recv);
  for (const StagingNeed& n : staging_needs(s, 1, true)) replay_recv = std::max(replay_recv, n.recv);
  EXPECT_EQ(nccl_recv, 0);
  EXPECT_GE(replay_recv, rs.bytes_per_peer);
}

TEST(CheckSchedule, DetectsCrossRankDeadlock) {
  // Rank 0 talks on channel 0 then 1, rank 1 on channel 1 then 0, each on one stream: every op
  // waits for a partner that is queued behind the other.
  Schedule s;
  s.workload.cp = 2;
  s.streams = {"compute", "comm"};
  s.ranks.resize(2);
  for (std::int32_t r = 0; r < 2; ++r) {
    s.ranks[static_cast<std::size_t>(r)].rank = r;
    for (std::uint8_t ch : {std::uint8_t(r == 0 ? 0 : 1), std::uint8_t(r == 0 ? 1 : 0)}) {
      Op op;
      op.id = static_cast<std::int32_t>(s.ranks[static_cast<std::size_t>(r)].ops.size());
      op.kind = OpKind::SendRecv;
      op.stream = 1;
      op.send = Transfer{1 - r, 0, BufferKind::KV, ch, 8};
      op.recv = Transfer{1 - r, 1, BufferKind::KV, ch, 8};
      op.bytes = 8;
      s.ranks[static_cast<std::size_t>(r)].ops.push_back(op);
    }
  }
  expect_check_error(s, "deadlock");
  // Putting the second channel on its own stream resolves it.
  s.streams.push_back("comm_dkv");
  s.ranks[0].ops[1].stream = 2;
  s.ranks[1].ops[0].stream = 2;
  EXPECT_NO_THROW(check_schedule(s));
}

TEST(CheckSchedule, RejectsRankCountMismatch) {
  Schedule s = small_ring();
  s.ranks.pop_back();
  expect_check_error(s, "rank programs");
}

TEST(MakeSchedule, ValidatesFirst) {
  Workload w;
  w.schedule = ScheduleKind::ZigzagRing;
  w.seq = 1000;
  w.cp = 8;
  EXPECT_THROW(make_schedule(w), InputError);
  w.seq = 1024;
  w.heads = 0;
  EXPECT_THROW(make_schedule(w), InputError);
}

// The estimate the size check uses covers every op the generators emit, and is within 2x plus the
// per-rank margin (causal rings skip fully masked blocks: contiguous ones about a quarter of their ops).
TEST(MakeSchedule, OpsEstimateBoundsTheGeneratedCount) {
  for (const ScheduleKind kind : {ScheduleKind::Ring, ScheduleKind::ZigzagRing, ScheduleKind::AllGather,
                                  ScheduleKind::Ulysses, ScheduleKind::Hybrid})
    for (const PassSet pass : {PassSet::Fwd, PassSet::Bwd, PassSet::FwdBwd})
      for (const std::int64_t cp : {2, 4, 8, 16}) {
        Workload w;
        w.schedule = kind;
        w.pass = pass;
        w.cp = cp;
        w.seq = 4096;
        w.kv_heads = 16;  // Ulysses splits KV heads over all 16 ranks
        if (kind == ScheduleKind::Hybrid) w.ulysses = 2;
        if (kind == ScheduleKind::AllGather) w.kv_head_groups = 4;
        SCOPED_TRACE(std::string(to_string(kind)) + " " + std::string(to_string(pass)) + " cp " + std::to_string(cp));
        const std::int64_t actual = make_schedule(w).num_ops(), estimate = schedule_ops_estimate(w);
        EXPECT_GE(estimate, actual);
        EXPECT_LE(estimate, 2 * actual + cp * (16 + 8 * w.kv_head_groups));
      }
}

void expect_size_error(const Workload& w, Bytes available, const std::string& needle) {
  try {
    check_schedule_size(w, available);
    ADD_FAILURE() << "no error for cp " << w.cp;
  } catch (const InputError& e) {
    EXPECT_EQ(e.field(), "cp");
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(MakeSchedule, RefusesSchedulesTooLargeToHoldOrIndex) {
  Workload w;
  w.schedule = ScheduleKind::ZigzagRing;
  w.seq = 1 << 20;
  w.cp = 1024;  // about 6.3M ops, 1.3 GiB or more
  EXPECT_NO_THROW(check_schedule_size(w, Bytes{64} << 30));
  EXPECT_NO_THROW(check_schedule_size(w, 0));  // memory unknown: only the index rule
  expect_size_error(w, Bytes{1} << 30, "GiB of memory available");
  // 65536 ranks: about 2.6e10 ops, past 32-bit op indices whatever the memory; refused before any op
  // is generated (make_schedule() would otherwise run for hours).
  w.cp = 65536;
  w.seq = 1 << 22;
  expect_size_error(w, 0, "2^31 op indices");
  EXPECT_THROW(make_schedule(w), InputError);
  // Hybrid with a large Ulysses group has a short ring: the same 65536 ranks fit the index.
  w.schedule = ScheduleKind::Hybrid;
  w.ulysses = 32;
  w.heads = 64;
  w.kv_heads = 32;
  EXPECT_LT(schedule_ops_estimate(w), std::int64_t{1} << 31);
}

}  // namespace
}  // namespace cpscope
