// Host-only tests of the CUDA runtime: what run_on_cuda rejects before it touches a device, the host-side
// element conversions, and the device-memory and staging plans computed before anything is allocated.
// They need the toolkit to build, not a GPU to run.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_run.h"
#include "runtime/cuda/host_convert.h"
#include "runtime/cuda/transport_staging.h"
#include "runtime/layout.h"
#include "sim/error.h"
#include "sim/schedule.h"

namespace cpscope::rt {
namespace {

Workload small(ScheduleKind kind, std::int64_t cp, PassSet pass) {
  Workload w;
  w.schedule = kind;
  w.cp = cp;
  w.seq = 1024;
  w.heads = 8;
  w.kv_heads = 2;
  w.head_dim = 64;
  w.pass = pass;
  return w;
}

// The field an InputError from run_on_cuda names.
std::string rejected_field(const Workload& w, const CudaRunOptions& o) {
  try {
    run_on_cuda(make_schedule(w), o);
  } catch (const InputError& e) {
    return e.field();
  }
  return "(accepted)";
}

TEST(CudaRun, RejectsWhatTheKernelsCannotRunBeforeTouchingTheDevice) {
  Workload w = small(ScheduleKind::Ring, 2, PassSet::Fwd);
  w.dtype = DType::FP32;
  EXPECT_EQ(rejected_field(w, {}), "dtype");
  w = small(ScheduleKind::Ring, 2, PassSet::Fwd);
  w.head_dim = 32;
  EXPECT_EQ(rejected_field(w, {}), "head_dim");
}

TEST(CudaRun, RejectsBadOptionsBeforeTouchingTheDevice) {
  const Workload w = small(ScheduleKind::ZigzagRing, 4, PassSet::FwdBwd);
  CudaRunOptions o;
  o.iters = 0;
  EXPECT_EQ(rejected_field(w, o), "iters");
  o = {};
  o.warmup = -1;
  EXPECT_EQ(rejected_field(w, o), "warmup");
  o = {};
  o.transport = Transport::Replay;
  o.replay_rank = 4;
  EXPECT_EQ(rejected_field(w, o), "replay_rank");
  o.replay_rank = 1;
  o.check = true;  // replay's data is not meaningful
  EXPECT_EQ(rejected_field(w, o), "check");
}

TEST(HostConvert, RoundsToNearestEven) {
  EXPECT_EQ(to_bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(to_bf16_bits(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // halfway: to the even 1.0
  EXPECT_EQ(to_bf16_bits(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // halfway: to the even neighbour
  EXPECT_EQ(to_fp16_bits(1.0f), 0x3c00);
  EXPECT_EQ(to_fp16_bits(65504.0f), 0x7bff);
  EXPECT_EQ(to_fp16_bits(65520.0f), 0x7c00);  // rounds past the largest finite value
  EXPECT_EQ(from_bf16_bits(0xc040), -3.0f);
  EXPECT_EQ(from_fp16_bits(0x3555), 0.333251953125f);
  EXPECT_EQ(round_to(kernels::DType::BF16, 0.1), 0.10009765625);
  EXPECT_EQ(round_to(kernels::DType::FP32, 0.1), static_cast<double>(0.1f));
}

TEST(HostConvert, EncodeDecodeRoundTrips) {
  const std::vector<double> v = {0.0, -1.5, 3.25, 1e-3, -std::numeric_limits<double>::infinity()};
  for (kernels::DType dt : {kernels::DType::BF16, kernels::DType::FP16, kernels::DType::FP32}) {
    std::vector<unsigned char> bytes;
    encode(dt, v, bytes);
    ASSERT_EQ(bytes.size(), v.size() * static_cast<std::size_t>(element_bytes(dt)));
    const std::vector<double> back = decode(dt, bytes.data(), static_cast<std::int64_t>(v.size()));
    for (std::size_t i = 0; i < v.size(); ++i) EXPECT_EQ(back[i], round_to(dt, v[i])) << i;
  }
}

std::int64_t align256(std::int64_t n) { return (n + 255) / 256 * 256; }

// Sum of the storage tensors at their device element sizes (Acc fp32, Input bf16).
std::int64_t tensor_bytes(const RankLayout& lay) {
  std::int64_t n = 0;
  for (int i = 0; i < kNumTensors; ++i) {
    const TensorDesc& d = lay.desc(static_cast<TensorId>(i));
    if (d.used && d.alias_of == TensorId::kCount)
      n += align256(d.elements(lay.workload().batch) * (d.precision == Precision::Acc ? 4 : 2));
  }
  return n;
}

TEST(CudaBackendPlan, ForwardNeedsExactlyTheTensors) {
  const Workload w = small(ScheduleKind::Ring, 2, PassSet::Fwd);
  const RankLayout lay(w, 1);
  EXPECT_EQ(CudaBackend::required_bytes(lay), tensor_bytes(lay));
}

TEST(CudaBackendPlan, BackwardAddsDeltaAndAllgatherAddsScratch) {
  Workload w = small(ScheduleKind::ZigzagRing, 2, PassSet::FwdBwd);
  RankLayout lay(w, 0);
  const TensorDesc& o = lay.desc(TensorId::O);
  EXPECT_EQ(CudaBackend::required_bytes(lay), tensor_bytes(lay) + align256(w.batch * o.heads * o.rows * 4));

  w = small(ScheduleKind::AllGather, 2, PassSet::FwdBwd);
  w.dkv = DkvVariant::Input;  // bf16 gathered dK/dV: attention adds into the fp32 stage, a tensor of its own
  const RankLayout ag(w, 0);
  const TensorDesc& kv = ag.desc(TensorId::Kv0);
  const TensorDesc& dkv = ag.desc(TensorId::Dkv0);
  const TensorDesc& stage = ag.desc(TensorId::DkvStage);
  ASSERT_EQ(dkv.precision, Precision::Input);
  ASSERT_TRUE(stage.used);
  EXPECT_EQ(stage.precision, Precision::Acc);
  EXPECT_EQ(stage.elements(w.batch), dkv.elements(w.batch));
  const std::int64_t delta = align256(w.batch * ag.desc(TensorId::O).heads * ag.desc(TensorId::O).rows * 4);
  const std::int64_t scratch = align256(std::max(kv.elements(w.batch), dkv.elements(w.batch)) * 2);
  const std::int64_t row_maps = align256(2 * kv.rows * 8);  // the reorder's, an int64 per gathered row, both ways
  EXPECT_EQ(CudaBackend::required_bytes(ag), tensor_bytes(ag) + delta + scratch + row_maps);
}

// The ring's K/V slots are whole tensors: the nccl transport sends and receives them in place and needs
// no staging; replay's self-send goes through one K/V message each way.
TEST(TransportStaging, RingStagesNothingButReplaysOneKvMessageEachWay) {
  const Workload w = small(ScheduleKind::ZigzagRing, 4, PassSet::Fwd);
  const Schedule s = make_schedule(w);
  const std::int64_t kv_msg = 2 * w.batch * (w.seq / w.cp) * w.kv_heads * w.head_dim * 2;
  for (bool replay : {false, true}) {
    const std::vector<StagingNeed> need = staging_needs(s, 1, replay);
    ASSERT_EQ(need.size(), s.streams.size());
    std::int64_t most = 0;
    for (const StagingNeed& n : need) {
      EXPECT_EQ(n.send, n.recv);
      most = std::max(most, n.send);
    }
    EXPECT_EQ(most, replay ? staging_align(kv_msg) : 0) << "replay " << replay;
  }
}

// The gather runs plane by plane: with batch 1 each plane's parts lie end to end in the gathered slot and
// the nccl transport stages nothing; with a batch every part is unpacked (a slice per plane, each less than
// kStagingAlign above its bytes). Replay always sends its peers' parts to itself through staging.
TEST(TransportStaging, AllGatherStagesOnlyWhatAPlaneCannotTakeInPlace) {
  for (std::int64_t batch : {1, 2}) {
    Workload w = small(ScheduleKind::AllGather, 4, PassSet::Fwd);
    w.batch = batch;
    const Schedule s = make_schedule(w);
    const std::int64_t P = 2 * w.batch * (w.seq / w.cp) * w.kv_heads * w.head_dim * 2;
    std::int64_t send = 0, recv = 0, rsend = 0;
    for (const StagingNeed& n : staging_needs(s, 2, false)) {
      send = std::max(send, n.send);
      recv = std::max(recv, n.recv);
    }
    for (const StagingNeed& n : staging_needs(s, 2, true)) rsend = std::max(rsend, n.send);
    EXPECT_EQ(send, 0) << "batch " << batch;  // all KV heads of the input: each plane one span
    if (batch == 1) {
      EXPECT_EQ(recv, 0);
    } else {
      EXPECT_GE(recv, 4 * P);
      EXPECT_LE(recv, 4 * P + 8 * kStagingAlign);  // 2 planes x 4 members unpacked, 2 slices
    }
    EXPECT_EQ(rsend, staging_align(3 * P)) << "batch " << batch;  // replay sends three peers' parts to itself
  }
}

}  // namespace
}  // namespace cpscope::rt
