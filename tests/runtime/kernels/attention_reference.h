// The double-precision reference of one attention block and the cases the kernel tests run, shared by the GPU
// tests (kernels_gpu_test.cc), also when that file builds on the CPU emulation of the kernels (kernels_emu_test).
#pragma once

#include "runtime/kernels/attention_types.h"
#include "runtime/kernels/host_dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace cpscope::rt::kernels::ktest {

using i64 = std::int64_t;
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kTol = 2e-2;  // max |err| / max |ref|, sized for bf16 inputs and 16-bit P/dS operands

// Normal random values rounded to bf16/fp16: the bits for the kernel and the rounded values for the reference.
struct Host16 {
  std::vector<std::uint16_t> bits;
  std::vector<float> val;
  Host16(std::mt19937_64& rng, std::size_t n, DType dt, float stddev = 1.f) : bits(n), val(n) {
    std::normal_distribution<float> nd(0.f, stddev);
    for (std::size_t i = 0; i < n; ++i) {
      const float x = nd(rng);
      bits[i] = dt == DType::BF16 ? host::f32_to_bf16(x) : host::f32_to_f16(x);
      val[i] = dt == DType::BF16 ? host::bf16_to_f32(bits[i]) : host::f16_to_f32(bits[i]);
    }
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
inline Ref reference(const Shape& s, const AttnBlockArgs& blk, const std::vector<float>& q, const std::vector<float>& k,
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
inline double rel_err(const std::vector<float>& got, const std::vector<double>& want, double sub = 0.0) {
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

inline std::vector<Case> cases() {
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

// The tensors of a case and the block it covers: rows 7.. of Q and 11.. of K/V; GQA 4: query heads 4..7 of 8 on a
// K/V shard that holds only KV head 1 (shift 1); GQA 1: heads 2..6.
inline Shape case_shape(const Case& c) {
  Shape s;
  s.d = c.d;
  s.kv_heads = c.gqa == 4 ? 1 : 8;
  return s;
}
inline AttnBlockArgs case_block(const Case& c) {
  AttnBlockArgs blk{};
  blk.q_off = 7;
  blk.q_len = c.q_len;
  blk.kv_off = 11;
  blk.kv_len = c.kv_len;
  blk.gqa_ratio = c.gqa;
  blk.head_begin = c.gqa == 4 ? 4 : 2;
  blk.head_count = c.gqa == 4 ? 4 : 5;
  blk.kv_head_shift = c.gqa == 4 ? 1 : 0;
  blk.causal = c.causal;
  blk.causal_offset = c.off;
  blk.scale = 1.f / std::sqrt(static_cast<float>(c.d));
  return blk;
}

// Compares the rows/heads of the block; entries outside it must keep their sentinel.
inline void expect_fwd(const Shape& s, const AttnBlockArgs& blk, const std::vector<float>& o, const std::vector<float>& lse,
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

}  // namespace cpscope::rt::kernels::ktest
