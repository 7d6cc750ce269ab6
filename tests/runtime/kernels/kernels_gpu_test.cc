// GPU tests of the attention kernels against a double-precision CPU reference (skipped without a device).
#include "runtime/kernels/attention.h"
#include "runtime/kernels/check.h"
#include "runtime/kernels/host_dtype.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace cpscope::rt::kernels {
namespace {

using i64 = std::int64_t;
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kTol = 2e-2;  // max |err| / max |ref|, sized for bf16 inputs and 16-bit P/dS operands

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
  Tensor16(std::mt19937_64& rng, std::size_t n, DType dt, float stddev = 1.f) : val(n), dev(n * 2) {
    std::normal_distribution<float> nd(0.f, stddev);
    std::vector<std::uint16_t> bits(n);
    for (std::size_t i = 0; i < n; ++i) {
      const float x = nd(rng);
      bits[i] = dt == DType::BF16 ? host::f32_to_bf16(x) : host::f32_to_f16(x);
      val[i] = dt == DType::BF16 ? host::bf16_to_f32(bits[i]) : host::f16_to_f32(bits[i]);
    }
    dev.upload(bits);
  }
};

struct Shape {
  int batch = 2, d = 64, q_heads = 8, kv_heads = 8;
  i64 q_tokens = 260, kv_tokens = 230;
  i64 q_idx(i64 b, i64 t, i64 h) const { return ((b * q_tokens + t) * q_heads + h) * d; }
  i64 kv_idx(i64 b, i64 t, i64 h) const { return ((b * kv_tokens + t) * kv_heads + h) * d; }
  i64 lse_idx(i64 b, i64 h, i64 t) const { return (b * q_heads + h) * q_tokens + t; }
};

// Dense reference of one block in double: o, lse (over the block's keys only) and the gradients for dO.
struct Ref {
  std::vector<double> o, lse, dq, dk, dv, delta;
};
Ref reference(const Shape& s, const AttnBlockArgs& blk, const std::vector<float>& q, const std::vector<float>& k,
              const std::vector<float>& v, const std::vector<float>* dout) {
  Ref r;
  r.o.assign(static_cast<std::size_t>(s.batch * s.q_tokens * s.q_heads * s.d), 0.0);
  r.lse.assign(static_cast<std::size_t>(s.batch * s.q_heads * s.q_tokens), -kInf);
  r.delta.assign(r.lse.size(), 0.0);
  r.dq.assign(r.o.size(), 0.0);
  r.dk.assign(static_cast<std::size_t>(s.batch * s.kv_tokens * s.kv_heads * s.d), 0.0);
  r.dv.assign(r.dk.size(), 0.0);
  const i64 D = s.d;
  std::vector<double> sc(static_cast<std::size_t>(blk.kv_len)), dp(sc.size());
  for (i64 b = 0; b < s.batch; ++b) {
    for (int h = blk.head_begin; h < blk.head_begin + blk.head_count; ++h) {
      const int kh = h / blk.gqa_ratio - blk.kv_head_shift;
      for (i64 i = 0; i < blk.q_len; ++i) {
        const i64 qi = s.q_idx(b, blk.q_off + i, h);
        double mx = -kInf;
        for (i64 j = 0; j < blk.kv_len; ++j) {
          double x = -kInf;
          if (!blk.causal || j <= i + blk.causal_offset) {
            const i64 kj = s.kv_idx(b, blk.kv_off + j, kh);
            x = 0;
            for (i64 c = 0; c < D; ++c) x += static_cast<double>(q[qi + c]) * k[kj + c];
            x *= blk.scale;
          }
          sc[j] = x;
          mx = std::max(mx, x);
        }
        const std::size_t li = static_cast<std::size_t>(s.lse_idx(b, h, blk.q_off + i));
        if (mx == -kInf) continue;
        double sum = 0;
        for (i64 j = 0; j < blk.kv_len; ++j) sum += std::exp(sc[j] - mx);
        const double lse = mx + std::log(sum);
        r.lse[li] = lse;
        for (i64 j = 0; j < blk.kv_len; ++j) {
          const double p = std::exp(sc[j] - lse);
          if (p == 0) continue;
          const i64 vj = s.kv_idx(b, blk.kv_off + j, kh);
          for (i64 c = 0; c < D; ++c) r.o[qi + c] += p * v[vj + c];
        }
        if (dout == nullptr) continue;
        double delta = 0;
        for (i64 c = 0; c < D; ++c) delta += r.o[qi + c] * (*dout)[qi + c];
        r.delta[li] = delta;
        for (i64 j = 0; j < blk.kv_len; ++j) {
          const double p = std::exp(sc[j] - lse);
          if (p == 0) continue;
          const i64 kj = s.kv_idx(b, blk.kv_off + j, kh);
          double dpij = 0;
          for (i64 c = 0; c < D; ++c) dpij += (*dout)[qi + c] * static_cast<double>(v[kj + c]);
          const double ds = p * (dpij - delta) * blk.scale;
          for (i64 c = 0; c < D; ++c) {
            r.dv[kj + c] += p * (*dout)[qi + c];
            r.dq[qi + c] += ds * k[kj + c];
            r.dk[kj + c] += ds * q[qi + c];
          }
        }
      }
    }
  }
  return r;
}

// max |got - want| / max |want| over the given indices (NaN fails).
double rel_err(const std::vector<float>& got, const std::vector<double>& want, double sub = 0.0) {
  double num = 0, den = 1e-6;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = static_cast<double>(got[i]) - sub;
    if (std::isnan(g)) return kInf;
    num = std::max(num, std::abs(g - want[i]));
    den = std::max(den, std::abs(want[i]));
  }
  return num / den;
}

struct Case {
  DType dt;
  int d, gqa;
  bool causal;
  i64 off;
  i64 q_len, kv_len;
  std::string name() const {
    return std::string(dt == DType::BF16 ? "bf16" : "fp16") + " D" + std::to_string(d) + " gqa" +
           std::to_string(gqa) + (causal ? " causal off " + std::to_string(off) : " full") + " q" +
           std::to_string(q_len) + " kv" + std::to_string(kv_len);
  }
};

std::vector<Case> cases() {
  std::vector<Case> cs;
  for (DType dt : {DType::BF16, DType::FP16}) {
    for (int d : {64, 128}) {
      for (int gqa : {1, 4}) {
        cs.push_back({dt, d, gqa, false, 0, 200, 150});
        cs.push_back({dt, d, gqa, true, 0, 200, 200});
        cs.push_back({dt, d, gqa, true, -37, 150, 190});
        cs.push_back({dt, d, gqa, true, 70, 131, 65});
        cs.push_back({dt, d, gqa, true, 1000, 17, 200});
      }
    }
  }
  return cs;
}

struct Problem {
  Shape s;
  AttnBlockArgs blk{};
  Tensor16 q, k, v, dout;
  Problem(std::mt19937_64& rng, const Case& c)
      : s(make_shape(c)),
        q(rng, static_cast<std::size_t>(s.q_idx(s.batch, 0, 0)), c.dt),
        k(rng, static_cast<std::size_t>(s.kv_idx(s.batch, 0, 0)), c.dt),
        v(rng, static_cast<std::size_t>(s.kv_idx(s.batch, 0, 0)), c.dt),
        dout(rng, static_cast<std::size_t>(s.q_idx(s.batch, 0, 0)), c.dt) {
    blk.q_off = 7;
    blk.q_len = c.q_len;
    blk.kv_off = 11;
    blk.kv_len = c.kv_len;
    blk.gqa_ratio = c.gqa;
    // GQA 4: query heads 4..7 of 8 on a K/V shard that holds only KV head 1 (shift 1); GQA 1: heads 2..6.
    blk.head_begin = c.gqa == 4 ? 4 : 2;
    blk.head_count = c.gqa == 4 ? 4 : 5;
    blk.kv_head_shift = c.gqa == 4 ? 1 : 0;
    blk.causal = c.causal;
    blk.causal_offset = c.off;
    blk.scale = 1.f / std::sqrt(static_cast<float>(c.d));
  }
  static Shape make_shape(const Case& c) {
    Shape s;
    s.d = c.d;
    s.kv_heads = c.gqa == 4 ? 1 : 8;
    return s;
  }
  AttnInputs inputs(DType dt) const {
    return {dt, s.d, s.batch, q.dev.get(), s.q_tokens, s.q_heads, k.dev.get(), v.dev.get(), s.kv_tokens, s.kv_heads};
  }
  AttnFwdArgs fwd_args(DType dt, float* o, float* lse, bool merge) const { return {inputs(dt), o, lse, merge, blk}; }
};

// Compares the rows/heads of the block; entries outside it must keep their sentinel.
void expect_fwd(const Shape& s, const AttnBlockArgs& blk, const std::vector<float>& o, const std::vector<float>& lse,
                const Ref& ref, float o_sentinel, float lse_sentinel, const std::string& what) {
  double num = 0, den = 1e-6, lse_err = 0;
  for (i64 b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.q_heads; ++h) {
      for (i64 t = 0; t < s.q_tokens; ++t) {
        const bool in = h >= blk.head_begin && h < blk.head_begin + blk.head_count && t >= blk.q_off &&
                        t < blk.q_off + blk.q_len;
        const std::size_t li = static_cast<std::size_t>(s.lse_idx(b, h, t));
        const i64 oi = s.q_idx(b, t, h);
        if (!in) {
          ASSERT_EQ(lse[li], lse_sentinel) << what << " wrote outside the block";
          ASSERT_EQ(o[static_cast<std::size_t>(oi)], o_sentinel) << what << " wrote outside the block";
          continue;
        }
        if (ref.lse[li] == -kInf) {
          ASSERT_EQ(lse[li], -kInf) << what << " fully masked row b" << b << " h" << h << " t" << t;
        } else {
          ASSERT_FALSE(std::isnan(lse[li])) << what;
          lse_err = std::max(lse_err, std::abs(lse[li] - ref.lse[li]));
        }
        for (i64 c = 0; c < s.d; ++c) {
          const double g = o[static_cast<std::size_t>(oi + c)];
          ASSERT_FALSE(std::isnan(g)) << what;
          num = std::max(num, std::abs(g - ref.o[static_cast<std::size_t>(oi + c)]));
          den = std::max(den, std::abs(ref.o[static_cast<std::size_t>(oi + c)]));
        }
      }
    }
  }
  EXPECT_LE(num / den, kTol) << what << " o";
  EXPECT_LE(lse_err, 2e-2) << what << " lse";
}

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
TEST(AttnFwd, TwoMergedBlocksEqualTheWhole) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(12);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name());
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

TEST(AttnBwd, MatchesReference) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(14);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name());
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
