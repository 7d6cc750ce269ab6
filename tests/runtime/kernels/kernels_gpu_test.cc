// GPU tests of the attention kernels against a double-precision CPU reference (skipped without a device).
// The same source also builds as kernels_emu_test, against the CPU SIMT emulation of the kernels
// (runtime/kernels/emu/: CPS_SIMT_EMU, stand-in CUDA headers), where it runs in CI.
#include "runtime/kernels/attention.h"
#include "runtime/kernels/check.h"
#include "runtime/kernels/launch.h"
#include "runtime/kernels/host_dtype.h"
#include "runtime/kernels/reference_attention.h"
#include "tests/runtime/kernels/attention_reference.h"
#if defined(CPS_SIMT_EMU)
#include "runtime/kernels/emu/simt.h"
#endif

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace cpscope::rt::kernels {
namespace {

using namespace ktest;  // NOLINT(google-build-using-namespace): the shared cases and reference

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
#define SKIP_WITHOUT_GPU() \
  if (!have_device()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount): GPU kernel test skipped"

// Device buffer of raw bytes.
class DevBuf {
 public:
  explicit DevBuf(std::size_t bytes) : bytes_(bytes) { CPS_CUDA_CHECK(cudaMalloc(&p_, std::max<std::size_t>(bytes, 16))); }
  ~DevBuf() { cudaFree(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void* get() const { return p_; }
  std::size_t size() const { return bytes_; }
  float* f32() const { return static_cast<float*>(p_); }
  template <typename T>
  void upload(const std::vector<T>& v) {
    CPS_CUDA_CHECK(cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<float> download_f32() const {
    std::vector<float> v(bytes_ / 4);
    CPS_CUDA_CHECK(cudaMemcpy(v.data(), p_, bytes_, cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  void* p_ = nullptr;
  std::size_t bytes_;
};

// A 16-bit tensor: the device copy and the rounded values as float for the reference.
struct Tensor16 {
  std::vector<float> val;
  DevBuf dev;
  Tensor16(std::mt19937_64& rng, std::size_t n, DType dt) : dev(n * 2) {
    Host16 h(rng, n, dt);
    dev.upload(h.bits);
    val = std::move(h.val);
  }
};

struct Problem {
  Shape s;
  AttnBlockArgs blk;
  Tensor16 q, k, v, dout;
  Problem(std::mt19937_64& rng, const Case& c)
      : s(case_shape(c)),
        blk(case_block(c)),
        q(rng, static_cast<std::size_t>(s.q_idx(s.batch, 0, 0)), c.dt),
        k(rng, static_cast<std::size_t>(s.kv_idx(s.batch, 0, 0)), c.dt),
        v(rng, static_cast<std::size_t>(s.kv_idx(s.batch, 0, 0)), c.dt),
        dout(rng, static_cast<std::size_t>(s.q_idx(s.batch, 0, 0)), c.dt) {}
  AttnInputs inputs(DType dt) const {
    return {dt, s.d, s.batch, q.dev.get(), s.q_tokens, s.q_heads, k.dev.get(), v.dev.get(), s.kv_tokens, s.kv_heads};
  }
  AttnFwdArgs fwd_args(DType dt, float* o, float* lse, bool merge) const { return {inputs(dt), o, lse, merge, blk}; }
};

TEST(AttnFwd, MatchesReferenceWithoutMerge) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(11);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name());
    Problem pr(rng, c);
    const Ref ref = reference(pr.s, pr.blk, pr.q.val, pr.k.val, pr.v.val, nullptr);
    const std::size_t n_o = pr.q.val.size(), n_lse = static_cast<std::size_t>(pr.s.batch * pr.s.q_heads * pr.s.q_tokens);
    DevBuf o(n_o * 4), lse(n_lse * 4);
    fill_f32(o.f32(), static_cast<i64>(n_o), 7.f, nullptr);
    fill_f32(lse.f32(), static_cast<i64>(n_lse), 9.f, nullptr);
    attn_fwd(pr.fwd_args(c.dt, o.f32(), lse.f32(), false), nullptr);
    CPS_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> og = o.download_f32(), lg = lse.download_f32();
    // Fully masked rows get o = 0 under merge = false.
    Ref r2 = ref;
    expect_fwd(pr.s, pr.blk, og, lg, r2, 7.f, 9.f, c.name());
  }
}

// Ring usage: -inf/0 fill, then two KV blocks merged one after the other equal one block over all the keys.
void check_two_merged_blocks(std::mt19937_64& rng, const Case& c) {
  Problem pr(rng, c);
  const Ref ref = reference(pr.s, pr.blk, pr.q.val, pr.k.val, pr.v.val, nullptr);
  const std::size_t n_o = pr.q.val.size(), n_lse = static_cast<std::size_t>(pr.s.batch * pr.s.q_heads * pr.s.q_tokens);
  DevBuf o(n_o * 4), lse(n_lse * 4);
  fill_f32(o.f32(), static_cast<i64>(n_o), 0.f, nullptr);
  fill_f32(lse.f32(), static_cast<i64>(n_lse), -kInf, nullptr);
  const i64 split = c.kv_len * 2 / 5 + 3;
  AttnFwdArgs a = pr.fwd_args(c.dt, o.f32(), lse.f32(), true);
  a.blk.kv_len = split;
  attn_fwd(a, nullptr);
  a.blk.kv_off = pr.blk.kv_off + split;
  a.blk.kv_len = c.kv_len - split;
  a.blk.causal_offset = c.off - split;
  attn_fwd(a, nullptr);
  CPS_CUDA_CHECK(cudaDeviceSynchronize());
  expect_fwd(pr.s, pr.blk, o.download_f32(), lse.download_f32(), ref, 0.f, -kInf, c.name() + " merged");
}

TEST(AttnFwd, TwoMergedBlocksEqualTheWhole) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(12);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name());
    check_two_merged_blocks(rng, c);
  }
}

TEST(AttnFwd, FullyMaskedBlock) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(13);
  Case c{DType::BF16, 128, 1, true, -500, 200, 150};
  Problem pr(rng, c);
  const std::size_t n_o = pr.q.val.size(), n_lse = static_cast<std::size_t>(pr.s.batch * pr.s.q_heads * pr.s.q_tokens);
  DevBuf o(n_o * 4), lse(n_lse * 4);
  // merge = true leaves everything as it was.
  fill_f32(o.f32(), static_cast<i64>(n_o), 3.f, nullptr);
  fill_f32(lse.f32(), static_cast<i64>(n_lse), 1.f, nullptr);
  attn_fwd(pr.fwd_args(c.dt, o.f32(), lse.f32(), true), nullptr);
  CPS_CUDA_CHECK(cudaDeviceSynchronize());
  for (float x : o.download_f32()) ASSERT_EQ(x, 3.f);
  for (float x : lse.download_f32()) ASSERT_EQ(x, 1.f);
  // merge = false writes o = 0, lse = -inf for the block's rows.
  attn_fwd(pr.fwd_args(c.dt, o.f32(), lse.f32(), false), nullptr);
  CPS_CUDA_CHECK(cudaDeviceSynchronize());
  const Ref empty = reference(pr.s, pr.blk, pr.q.val, pr.k.val, pr.v.val, nullptr);
  expect_fwd(pr.s, pr.blk, o.download_f32(), lse.download_f32(), empty, 3.f, 1.f, "fully masked");
}

void check_backward(std::mt19937_64& rng, const Case& c) {
  Problem pr(rng, c);
  const Ref ref = reference(pr.s, pr.blk, pr.q.val, pr.k.val, pr.v.val, &pr.dout.val);
  std::vector<float> lse_h(ref.lse.begin(), ref.lse.end()), delta_h(ref.delta.begin(), ref.delta.end());
  DevBuf lse(lse_h.size() * 4), delta(delta_h.size() * 4);
  lse.upload(lse_h);
  delta.upload(delta_h);
  const std::size_t nq = pr.q.val.size(), nk = pr.k.val.size();
  DevBuf dq(nq * 4), dk(nk * 4), dv(nk * 4);
  // The kernel adds: start from 0.5 and subtract it again.
  fill_f32(dq.f32(), static_cast<i64>(nq), 0.5f, nullptr);
  fill_f32(dk.f32(), static_cast<i64>(nk), 0.5f, nullptr);
  fill_f32(dv.f32(), static_cast<i64>(nk), 0.5f, nullptr);
  attn_bwd(AttnBwdArgs{pr.inputs(c.dt), pr.dout.dev.get(), lse.f32(), delta.f32(), dq.f32(), dk.f32(), dv.f32(), pr.blk},
           nullptr);
  CPS_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_LE(rel_err(dq.download_f32(), ref.dq, 0.5), kTol) << "dq";
  EXPECT_LE(rel_err(dk.download_f32(), ref.dk, 0.5), kTol) << "dk";
  EXPECT_LE(rel_err(dv.download_f32(), ref.dv, 0.5), kTol) << "dv";
}

TEST(AttnBwd, MatchesReference) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(14);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name());
    check_backward(rng, c);
  }
}

// Forward -> preprocess (O in fp32, dO in 16 bit) -> backward on the device, against the reference.
TEST(AttnBwd, EndToEndWithPreprocess) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(15);
  for (const Case& c : {Case{DType::BF16, 128, 4, true, 0, 200, 200}, Case{DType::FP16, 64, 1, true, 33, 150, 190}}) {
    SCOPED_TRACE(c.name());
    Problem pr(rng, c);
    const Ref ref = reference(pr.s, pr.blk, pr.q.val, pr.k.val, pr.v.val, &pr.dout.val);
    const std::size_t nq = pr.q.val.size(), nk = pr.k.val.size();
    const std::size_t n_lse = static_cast<std::size_t>(pr.s.batch * pr.s.q_heads * pr.s.q_tokens);
    DevBuf o(nq * 4), lse(n_lse * 4), delta(n_lse * 4), dq(nq * 4), dk(nk * 4), dv(nk * 4);
    fill_f32(o.f32(), static_cast<i64>(nq), 0.f, nullptr);
    fill_f32(lse.f32(), static_cast<i64>(n_lse), -kInf, nullptr);
    for (DevBuf* g : {&dq, &dk, &dv}) fill_f32(g->f32(), static_cast<i64>(g == &dq ? nq : nk), 0.f, nullptr);
    attn_fwd(pr.fwd_args(c.dt, o.f32(), lse.f32(), false), nullptr);
    attn_bwd_preprocess(DType::FP32, c.dt, o.get(), pr.dout.dev.get(), delta.f32(), pr.s.batch, pr.s.q_tokens,
                        pr.s.q_heads, pr.s.d, nullptr);
    attn_bwd(AttnBwdArgs{pr.inputs(c.dt), pr.dout.dev.get(), lse.f32(), delta.f32(), dq.f32(), dk.f32(), dv.f32(), pr.blk},
             nullptr);
    CPS_CUDA_CHECK(cudaDeviceSynchronize());
    // delta of the block's rows (others are dO . 0 = 0 in the reference too, since O stays 0 there).
    const std::vector<float> dg = delta.download_f32();
    double derr = 0, dden = 1e-6;
    for (std::size_t i = 0; i < dg.size(); ++i) {
      derr = std::max(derr, std::abs(dg[i] - ref.delta[i]));
      dden = std::max(dden, std::abs(ref.delta[i]));
    }
    EXPECT_LE(derr / dden, kTol) << "delta";
    EXPECT_LE(rel_err(dq.download_f32(), ref.dq), kTol) << "dq";
    EXPECT_LE(rel_err(dk.download_f32(), ref.dk), kTol) << "dk";
    EXPECT_LE(rel_err(dv.download_f32(), ref.dv), kTol) << "dv";
  }
}

TEST(Elementwise, CopyBlockConvertsAndAdds) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(16);
  const int batch = 2, d = 64, sh = 4, dh = 3;
  const i64 st = 50, dtok = 40;
  Tensor16 src(rng, static_cast<std::size_t>(batch * st * sh * d), DType::BF16);
  std::vector<float> dst_h(static_cast<std::size_t>(batch * dtok * dh * d));
  for (std::size_t i = 0; i < dst_h.size(); ++i) dst_h[i] = static_cast<float>(i % 13) * 0.25f;
  for (bool add : {false, true}) {
    DevBuf dst(dst_h.size() * 4);
    dst.upload(dst_h);
    CopyBlockArgs a{DType::BF16, DType::FP32, src.dev.get(), dst.get(), batch, st, sh, dtok, dh, d,
                    /*src_row=*/5, /*dst_row=*/20, /*rows=*/17, /*src_head=*/1, /*dst_head=*/0, /*heads=*/3, add};
    copy_block(a, nullptr);
    CPS_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> got = dst.download_f32();
    for (int b = 0; b < batch; ++b) {
      for (i64 t = 0; t < dtok; ++t) {
        for (int h = 0; h < dh; ++h) {
          for (int c = 0; c < d; ++c) {
            const std::size_t di = static_cast<std::size_t>(((b * dtok + t) * dh + h) * d + c);
            float want = dst_h[di];
            if (t >= 20 && t < 37) {
              const float sv = src.val[static_cast<std::size_t>(((b * st + t - 15) * sh + h + 1) * d + c)];
              want = add ? want + sv : sv;
            }
            ASSERT_EQ(got[di], want) << "b" << b << " t" << t << " h" << h << " c" << c << " add " << add;
          }
        }
      }
    }
  }
}

// A row map permutes whole rows in the same launch: dst row dst_row + r takes src row src_row + map[r] (the
// all-gather reorder's chunk permutation, here of 2-row chunks, reversed), every batch entry and head slice.
TEST(Elementwise, CopyBlockPermutesRowsThroughARowMap) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(17);
  const int batch = 2, d = 64, sh = 4, dh = 2;
  const i64 st = 12, dtok = 10, rows = 8;
  Tensor16 src(rng, static_cast<std::size_t>(batch * st * sh * d), DType::BF16);
  std::vector<std::int64_t> map(static_cast<std::size_t>(rows));
  for (i64 r = 0; r < rows; ++r) map[static_cast<std::size_t>(r)] = (rows / 2 - 1 - r / 2) * 2 + r % 2;
  DevBuf dmap(map.size() * 8), dst(static_cast<std::size_t>(batch * dtok * dh * d) * 4);
  dmap.upload(map);
  dst.upload(std::vector<float>(static_cast<std::size_t>(batch * dtok * dh * d), -1.f));
  CopyBlockArgs a{DType::BF16, DType::FP32, src.dev.get(), dst.get(), batch, st, sh, dtok, dh, d,
                  /*src_row=*/3, /*dst_row=*/1, rows, /*src_head=*/2, /*dst_head=*/0, /*heads=*/2, false,
                  static_cast<const std::int64_t*>(dmap.get())};
  copy_block(a, nullptr);
  CPS_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> got = dst.download_f32();
  for (int b = 0; b < batch; ++b)
    for (i64 t = 0; t < dtok; ++t)
      for (int h = 0; h < dh; ++h)
        for (int c = 0; c < d; ++c) {
          const std::size_t di = static_cast<std::size_t>(((b * dtok + t) * dh + h) * d + c);
          float want = -1.f;
          if (t >= 1 && t < 1 + rows) {
            const i64 sr = 3 + map[static_cast<std::size_t>(t - 1)];
            want = src.val[static_cast<std::size_t>(((b * st + sr) * sh + h + 2) * d + c)];
          }
          ASSERT_EQ(got[di], want) << "b" << b << " t" << t << " h" << h << " c" << c;
        }
}

TEST(Elementwise, CopyBlockRoundsToSixteenBits) {
  SKIP_WITHOUT_GPU();
  const int d = 64;
  std::vector<float> src_h(static_cast<std::size_t>(d));
  for (int i = 0; i < d; ++i) src_h[static_cast<std::size_t>(i)] = 1.f + static_cast<float>(i) * 0.0003f - 0.01f;
  DevBuf src(src_h.size() * 4), dst(src_h.size() * 2);
  src.upload(src_h);
  for (DType dt : {DType::BF16, DType::FP16}) {
    CopyBlockArgs a{DType::FP32, dt, src.get(), dst.get(), 1, 1, 1, 1, 1, d, 0, 0, 1, 0, 0, 1, false};
    copy_block(a, nullptr);
    std::vector<std::uint16_t> got(src_h.size());
    CPS_CUDA_CHECK(cudaMemcpy(got.data(), dst.get(), got.size() * 2, cudaMemcpyDeviceToHost));
    for (int i = 0; i < d; ++i) {
      const float x = src_h[static_cast<std::size_t>(i)];
      ASSERT_EQ(got[static_cast<std::size_t>(i)], dt == DType::BF16 ? host::f32_to_bf16(x) : host::f32_to_f16(x));
    }
  }
}

TEST(Elementwise, FillAndPreprocessShapes) {
  SKIP_WITHOUT_GPU();
  DevBuf p(1000 * 4);
  fill_f32(p.f32(), 1000, -kInf, nullptr);
  for (float x : p.download_f32()) ASSERT_EQ(x, -kInf);
}

// The hold before a timed iteration (cuda_run.cc): work queued behind it starts that much later on the GPU, and
// it ends. The emulation queues nothing (its streams run only when waited on), so there it only checks the
// argument rule.
TEST(Elementwise, SpinHoldsTheStream) {
  EXPECT_THROW(spin(-1, nullptr), std::invalid_argument);
#if !defined(CPS_SIMT_EMU)
  SKIP_WITHOUT_GPU();
  cudaStream_t s = nullptr;
  cudaEvent_t a = nullptr, b = nullptr;
  CPS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CPS_CUDA_CHECK(cudaEventCreate(&a));
  CPS_CUDA_CHECK(cudaEventCreate(&b));
  CPS_CUDA_CHECK(cudaEventRecord(a, s));
  spin(3'000'000, s);  // 3 ms
  CPS_CUDA_CHECK(cudaEventRecord(b, s));
  CPS_CUDA_CHECK(cudaStreamSynchronize(s));
  float ms = 0;
  CPS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  EXPECT_GE(ms, 2.9f);
  EXPECT_LT(ms, 100.f);
  spin(0, s);  // nothing queued
  CPS_CUDA_CHECK(cudaStreamSynchronize(s));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaStreamDestroy(s);
#endif
}

// The plain fp32 kernels that cp-profile --check compares every schedule with (refk, reference_attention.cu),
// against the double-precision reference: forward rows, delta, dQ rows and dK/dV rows, GQA, both masks.
TEST(RefKernels, MatchTheDoubleReference) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(17);
  for (bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "full");
    refk::RefShape rs;
    rs.batch = 2;
    rs.seq = 150;
    rs.heads = 4;
    rs.kv_heads = 2;
    rs.head_dim = 64;
    rs.causal = causal;
    rs.scale = 0.125f;
    Shape s;
    s.batch = rs.batch;
    s.d = rs.head_dim;
    s.q_heads = rs.heads;
    s.kv_heads = rs.kv_heads;
    s.q_tokens = s.kv_tokens = rs.seq;
    const AttnBlockArgs whole{0, rs.seq, 0, rs.seq, 0, rs.heads, rs.heads / rs.kv_heads, 0, causal, 0, rs.scale};
    const Host16 q(rng, static_cast<std::size_t>(s.q_idx(s.batch, 0, 0)), DType::BF16);
    const Host16 k(rng, static_cast<std::size_t>(s.kv_idx(s.batch, 0, 0)), DType::BF16);
    const Host16 v(rng, static_cast<std::size_t>(s.kv_idx(s.batch, 0, 0)), DType::BF16);
    const Host16 dout(rng, static_cast<std::size_t>(s.q_idx(s.batch, 0, 0)), DType::BF16);
    const Ref ref = reference(s, whole, q.val, k.val, v.val, &dout.val);
    DevBuf qd(q.val.size() * 4), kd(k.val.size() * 4), vd(v.val.size() * 4), dod(dout.val.size() * 4);
    qd.upload(q.val);
    kd.upload(k.val);
    vd.upload(v.val);
    dod.upload(dout.val);
    // Every row forward (o, lse as the global tensors the backward needs), then delta, dQ and dK/dV of some rows.
    std::vector<std::int64_t> all(static_cast<std::size_t>(rs.seq));
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::int64_t>(i);
    const std::vector<std::int64_t> qrows{0, 3, 77, 149}, krows{0, 17, 149};
    DevBuf alld(all.size() * 8), qrd(qrows.size() * 8), krd(krows.size() * 8);
    alld.upload(all);
    qrd.upload(qrows);
    krd.upload(krows);
    const std::size_t n_lse = static_cast<std::size_t>(s.batch * s.q_heads * s.q_tokens);
    DevBuf o(q.val.size() * 4), lse(n_lse * 4), delta(n_lse * 4);
    DevBuf dq(static_cast<std::size_t>(s.batch * 4 * s.q_heads * s.d) * 4);
    DevBuf dk(static_cast<std::size_t>(s.batch * 3 * s.kv_heads * s.d) * 4), dv(dk.size());
    refk::ref_forward(rs, qd.f32(), kd.f32(), vd.f32(), static_cast<const std::int64_t*>(alld.get()), rs.seq, o.f32(),
                      lse.f32(), nullptr);
    refk::ref_delta(rs, o.f32(), dod.f32(), delta.f32(), nullptr);
    refk::ref_backward_dq(rs, qd.f32(), kd.f32(), vd.f32(), dod.f32(), lse.f32(), delta.f32(),
                          static_cast<const std::int64_t*>(qrd.get()), 4, dq.f32(), nullptr);
    refk::ref_backward_dkv(rs, qd.f32(), kd.f32(), vd.f32(), dod.f32(), lse.f32(), delta.f32(),
                           static_cast<const std::int64_t*>(krd.get()), 3, dk.f32(), dv.f32(), nullptr);
    CPS_CUDA_CHECK(cudaDeviceSynchronize());
    constexpr double kFp32Tol = 1e-4;
    EXPECT_LE(rel_err(o.download_f32(), ref.o), kFp32Tol) << "o";
    EXPECT_LE(rel_err(lse.download_f32(), ref.lse), kFp32Tol) << "lse";
    EXPECT_LE(rel_err(delta.download_f32(), ref.delta), kFp32Tol) << "delta";
    // The row subsets: [batch][row][heads][D] of the chosen rows only.
    auto pick = [&](const std::vector<double>& full, const std::vector<std::int64_t>& rows, int heads, i64 tokens) {
      std::vector<double> out;
      for (i64 b = 0; b < s.batch; ++b) {
        for (std::int64_t r : rows) {
          const auto at = static_cast<std::size_t>(((b * tokens + r) * heads) * s.d);
          out.insert(out.end(), full.begin() + static_cast<std::ptrdiff_t>(at),
                     full.begin() + static_cast<std::ptrdiff_t>(at + static_cast<std::size_t>(heads * s.d)));
        }
      }
      return out;
    };
    EXPECT_LE(rel_err(dq.download_f32(), pick(ref.dq, qrows, s.q_heads, s.q_tokens)), kFp32Tol) << "dq";
    EXPECT_LE(rel_err(dk.download_f32(), pick(ref.dk, krows, s.kv_heads, s.kv_tokens)), kFp32Tol) << "dk";
    EXPECT_LE(rel_err(dv.download_f32(), pick(ref.dv, krows, s.kv_heads, s.kv_tokens)), kFp32Tol) << "dv";
  }
}

#if defined(CPS_SIMT_EMU)
// Sets the emulation's options for one scope.
struct EmuOptions {
  explicit EmuOptions(const simt::Options& o) { simt::set_options(o); }
  ~EmuOptions() { simt::set_options({}); }
  EmuOptions(const EmuOptions&) = delete;
  EmuOptions& operator=(const EmuOptions&) = delete;
};

// The tests above run warps in lockstep and let every cp.async land at its wait. Here each warp runs ahead to
// the next barrier before the others start, and copies land the moment they are issued: a refill of a K/V
// (forward) or Q/dO (backward) buffer that other warps may still be reading, for want of a barrier, changes
// their results (removing the forward's end-of-tile barrier fails this test).
TEST(Emulation, WarpsRunningAheadWithEarlyCopiesChangeNothing) {
  const EmuOptions at_issue({.cp_async_lands_at_issue = true, .warp_by_warp = true});
  std::mt19937_64 rng(19);
  // 219 keys: the second merged block has three K/V tiles, so the forward refills a buffer it used before.
  for (const Case& c : {Case{DType::BF16, 128, 4, true, 0, 200, 219}, Case{DType::FP16, 64, 1, false, 0, 200, 219},
                        Case{DType::BF16, 64, 1, true, -37, 150, 190}}) {
    SCOPED_TRACE(c.name());
    check_two_merged_blocks(rng, c);
    check_backward(rng, c);
  }
}

// Under the emulation: the checks above are not blind to a wrong fragment layout. With ldmatrix .trans loading
// untransposed (the V operand of the forward; dO, Q, K and dS of the backward), both passes leave the tolerance
// by far.
TEST(Emulation, WrongFragmentLayoutFailsTheCheck) {
  const EmuOptions fault({.ldmatrix_ignores_trans = true});
  std::mt19937_64 rng(18);
  const Case c{DType::BF16, 64, 1, true, 0, 140, 140};
  Problem pr(rng, c);
  const Ref ref = reference(pr.s, pr.blk, pr.q.val, pr.k.val, pr.v.val, &pr.dout.val);
  const std::size_t nq = pr.q.val.size(), nk = pr.k.val.size();
  const std::size_t n_lse = static_cast<std::size_t>(pr.s.batch * pr.s.q_heads * pr.s.q_tokens);
  DevBuf o(nq * 4), lse(n_lse * 4), dq(nq * 4), dk(nk * 4), dv(nk * 4), lse_ref(n_lse * 4), delta(n_lse * 4);
  fill_f32(o.f32(), static_cast<i64>(nq), 0.f, nullptr);
  attn_fwd(pr.fwd_args(c.dt, o.f32(), lse.f32(), false), nullptr);
  EXPECT_GT(rel_err(o.download_f32(), ref.o), 10 * kTol);
  lse_ref.upload(std::vector<float>(ref.lse.begin(), ref.lse.end()));
  delta.upload(std::vector<float>(ref.delta.begin(), ref.delta.end()));
  for (DevBuf* g : {&dq, &dk, &dv}) fill_f32(g->f32(), static_cast<i64>(g == &dq ? nq : nk), 0.f, nullptr);
  attn_bwd(AttnBwdArgs{pr.inputs(c.dt), pr.dout.dev.get(), lse_ref.f32(), delta.f32(), dq.f32(), dk.f32(), dv.f32(),
                       pr.blk},
           nullptr);
  EXPECT_GT(rel_err(dq.download_f32(), ref.dq), 10 * kTol);
  EXPECT_GT(rel_err(dv.download_f32(), ref.dv), 10 * kTol);
}

void touch_smem() {}

// As on the GPU, more than 48 KiB of dynamic shared memory needs the kernel's cudaFuncSetAttribute opt-in: a
// launcher that lost it fails here, not first on a device. The flash kernels' own launches opt in (the tests
// above run them at up to 155 KiB).
TEST(Emulation, DynamicSharedMemoryAbove48KiBNeedsTheOptIn) {
  auto* kernel = &touch_smem;
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  CPS_LAUNCH(kernel, 1, 32, 48 * 1024, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  CPS_LAUNCH(kernel, 1, 32, 64 * 1024, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the error is returned once";
  ASSERT_EQ(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024), cudaSuccess);
  CPS_LAUNCH(kernel, 1, 32, 64 * 1024, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  CPS_LAUNCH(kernel, 1, 32, 65 * 1024, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  CPS_CUDA_CHECK(cudaDeviceSynchronize());
}
#endif

TEST(AttnArgs, RejectsBadArguments) {
  // Validation runs before any CUDA call, so this needs no device.
  AttnFwdArgs a{};
  a.dtype = DType::FP32;
  a.head_dim = 64;
  a.batch = 1;
  a.q_tokens = a.kv_tokens = 10;
  a.q_heads = a.kv_heads = 1;
  a.blk = AttnBlockArgs{0, 10, 0, 10, 0, 1, 1, 0, false, 0, 0.125f};
  EXPECT_THROW(attn_fwd(a, nullptr), std::invalid_argument);  // fp32 inputs
  a.dtype = DType::BF16;
  a.head_dim = 96;
  EXPECT_THROW(attn_fwd(a, nullptr), std::invalid_argument);  // head_dim
  a.head_dim = 64;
  a.blk.q_len = 11;
  EXPECT_THROW(attn_fwd(a, nullptr), std::invalid_argument);  // rows outside Q
  a.blk.q_len = 10;
  a.blk.kv_head_shift = 1;
  EXPECT_THROW(attn_fwd(a, nullptr), std::invalid_argument);  // KV head -1
  a.blk.kv_head_shift = 0;
  a.blk.q_len = 0;
  EXPECT_NO_THROW(attn_fwd(a, nullptr));  // empty block: nothing to do
}

TEST(HostDtype, RoundTrips) {
  EXPECT_EQ(host::f32_to_bf16(1.f), 0x3f80);
  EXPECT_EQ(host::f32_to_f16(1.f), 0x3c00);
  EXPECT_EQ(host::f32_to_f16(65504.f), 0x7bff);
  EXPECT_EQ(host::f32_to_f16(65520.f), 0x7c00);
  EXPECT_EQ(host::f32_to_f16(1.00048828125f), 0x3c00);  // tie to even
  EXPECT_EQ(host::f32_to_f16(5.9604645e-08f), 0x0001);
  EXPECT_EQ(host::f16_to_f32(0x0001), 5.9604644775390625e-8f);
  EXPECT_EQ(host::bf16_to_f32(host::f32_to_bf16(-2.5f)), -2.5f);
}

}  // namespace
}  // namespace cpscope::rt::kernels
