// CPU tests of the attention tile math: visibility, tile ranges and masks against brute force, online softmax and
// LSE merge against direct softmax, and a CPU run of the forward tile loop against dense attention.
#include "runtime/kernels/tile_math.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace cpscope::rt::kernels::tile {
namespace {

using i64 = std::int64_t;
constexpr float kInf = std::numeric_limits<float>::infinity();

struct Block {
  i64 q_len, kv_len;
  bool causal;
  i64 off;
};

Block random_block(std::mt19937_64& rng) {
  std::uniform_int_distribution<i64> len(0, 400), off(-450, 450);
  std::bernoulli_distribution coin(0.75);
  return {len(rng), len(rng), coin(rng), off(rng)};
}

TEST(TileMath, VisibleFollowsOffset) {
  EXPECT_TRUE(visible(0, 0, true, 0));
  EXPECT_FALSE(visible(0, 1, true, 0));
  EXPECT_TRUE(visible(3, 5, true, 2));
  EXPECT_FALSE(visible(3, 6, true, 2));
  EXPECT_FALSE(visible(4, 0, true, -5));
  EXPECT_TRUE(visible(5, 0, true, -5));
  EXPECT_TRUE(visible(0, 1000, false, -5000));
}

TEST(TileMath, VisibleKvEndIsTheVisiblePrefix) {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 3000; ++trial) {
    const Block b = random_block(rng);
    std::uniform_int_distribution<i64> qd(0, std::max<i64>(b.q_len - 1, 0));
    i64 q0 = qd(rng), q1 = qd(rng) + 1;
    if (q0 > q1) std::swap(q0, q1);
    i64 expect = 0;
    for (i64 i = q0; i < std::min(q1, b.q_len); ++i) {
      for (i64 j = 0; j < b.kv_len; ++j) {
        if (visible(i, j, b.causal, b.off)) expect = std::max(expect, j + 1);
      }
    }
    ASSERT_EQ(visible_kv_end(q0, std::min(q1, b.q_len), b.kv_len, b.causal, b.off), expect)
        << "q [" << q0 << "," << q1 << ") kv_len " << b.kv_len << " off " << b.off;
  }
}

// The kernels rely on exactness both ways: every tile with a live pair is visited (coverage) and every visited
// tile has one (no wasted tiles), for the forward (KV tiles of a Q tile) and backward (Q tiles of a KV tile).
TEST(TileMath, TileRangesMatchBruteForce) {
  std::mt19937_64 rng(2);
  const i64 shapes[][2] = {{128, 64}, {64, 128}, {16, 16}, {128, 128}};
  for (int trial = 0; trial < 400; ++trial) {
    const Block b = random_block(rng);
    for (const auto& sh : shapes) {
      const i64 br = sh[0], bc = sh[1];
      for (i64 qt = 0; qt * br < b.q_len; ++qt) {
        std::vector<bool> live(static_cast<std::size_t>(ceil_div(b.kv_len, bc)), false);
        for (i64 i = qt * br; i < std::min((qt + 1) * br, b.q_len); ++i) {
          for (i64 j = 0; j < b.kv_len; ++j) {
            if (visible(i, j, b.causal, b.off)) live[static_cast<std::size_t>(j / bc)] = true;
          }
        }
        const TileRange r = kv_tiles_for_q_tile(qt * br, (qt + 1) * br, b.q_len, b.kv_len, bc, b.causal, b.off);
        for (i64 kt = 0; kt < static_cast<i64>(live.size()); ++kt) {
          ASSERT_EQ(kt >= r.begin && kt < r.end, static_cast<bool>(live[static_cast<std::size_t>(kt)]))
              << "fwd q tile " << qt << " kv tile " << kt << " q_len " << b.q_len << " kv_len " << b.kv_len
              << " off " << b.off << " causal " << b.causal;
        }
        ASSERT_LE(r.end, static_cast<i64>(live.size()));
      }
      for (i64 kt = 0; kt * bc < b.kv_len; ++kt) {
        std::vector<bool> live(static_cast<std::size_t>(ceil_div(b.q_len, br)), false);
        for (i64 j = kt * bc; j < std::min((kt + 1) * bc, b.kv_len); ++j) {
          for (i64 i = 0; i < b.q_len; ++i) {
            if (visible(i, j, b.causal, b.off)) live[static_cast<std::size_t>(i / br)] = true;
          }
        }
        const TileRange r = q_tiles_for_kv_tile(kt * bc, (kt + 1) * bc, b.kv_len, b.q_len, br, b.causal, b.off);
        for (i64 qt = 0; qt < static_cast<i64>(live.size()); ++qt) {
          ASSERT_EQ(qt >= r.begin && qt < r.end, static_cast<bool>(live[static_cast<std::size_t>(qt)]))
              << "bwd kv tile " << kt << " q tile " << qt << " q_len " << b.q_len << " kv_len " << b.kv_len
              << " off " << b.off << " causal " << b.causal;
        }
        ASSERT_LE(r.end, static_cast<i64>(live.size()));
      }
    }
  }
}

TEST(TileMath, EmptyRanges) {
  EXPECT_TRUE(kv_tiles_for_q_tile(0, 128, 100, 0, 64, false, 0).empty());
  EXPECT_TRUE(kv_tiles_for_q_tile(0, 128, 100, 500, 64, true, -128).empty());  // i + off < 0 for all rows
  EXPECT_FALSE(kv_tiles_for_q_tile(0, 128, 100, 500, 64, true, -99).empty());  // row 99 sees key 0
  EXPECT_TRUE(q_tiles_for_kv_tile(0, 64, 0, 100, 64, false, 0).empty());
  EXPECT_TRUE(q_tiles_for_kv_tile(64, 128, 100, 100, 64, true, -100).empty());
  EXPECT_EQ(kv_tiles_for_q_tile(0, 128, 100, 1000, 64, true, 5000).end, 16);  // large offset: everything
}

// tile_needs_mask is exact: false iff every pair of the (unclamped) tile is in range and visible.
TEST(TileMath, NeedsMaskIsExact) {
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    const Block b = random_block(rng);
    for (i64 br : {16, 64, 128}) {
      for (i64 bc : {16, 64, 128}) {
        for (i64 q0 = 0; q0 < b.q_len; q0 += br) {
          for (i64 k0 = 0; k0 < b.kv_len; k0 += bc) {
            bool dead = false;
            for (i64 i = q0; i < q0 + br && !dead; ++i) {
              for (i64 j = k0; j < k0 + bc && !dead; ++j) {
                dead = !element_live(i, j, b.q_len, b.kv_len, b.causal, b.off);
              }
            }
            ASSERT_EQ(tile_needs_mask(q0, q0 + br, b.q_len, k0 + bc, b.kv_len, b.causal, b.off), dead);
          }
        }
      }
    }
  }
}

// The kernels' 32-bit tile-relative predicate agrees with element_live on every pair of every tile.
TEST(TileMath, TileMaskMatchesElementLive) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    Block b = random_block(rng);
    if (trial % 10 == 0) b.off = (trial % 20 == 0 ? 1 : -1) * (std::int64_t{1} << 40);  // huge offsets clamp
    for (int br : {64, 128}) {
      for (int bc : {64, 128}) {
        for (i64 q0 = 0; q0 < b.q_len; q0 += br) {
          for (i64 k0 = 0; k0 < b.kv_len; k0 += bc) {
            const TileMask m = make_tile_mask(q0, b.q_len, k0, b.kv_len, b.causal, b.off, br, bc);
            for (int qi = 0; qi < br; ++qi) {
              for (int kj = 0; kj < bc; ++kj) {
                ASSERT_EQ(m.live(qi, kj), element_live(q0 + qi, k0 + kj, b.q_len, b.kv_len, b.causal, b.off));
              }
            }
          }
        }
      }
    }
  }
}

TEST(TileMath, GqaHeadMapping) {
  EXPECT_EQ(kv_head_of(0, 1, 0), 0);
  EXPECT_EQ(kv_head_of(7, 1, 0), 7);
  EXPECT_EQ(kv_head_of(7, 4, 0), 1);
  EXPECT_EQ(kv_head_of(8, 4, 0), 2);
  EXPECT_EQ(kv_head_of(8, 4, 2), 0);   // head-sharded K/V: the shard starts at KV head 2
  EXPECT_EQ(kv_head_of(31, 4, 4), 3);
}

// Direct softmax statistics of one row in double: natural-log LSE and the weights.
double direct_lse(const std::vector<double>& s) {
  double mx = -kInf;
  for (double x : s) mx = std::max(mx, x);
  if (mx == -kInf) return -kInf;
  double sum = 0;
  for (double x : s) sum += std::exp(x - mx);
  return mx + std::log(sum);
}

// Runs the kernels' online softmax over tiles of `tile` scores (natural-log scores in, like scale * q.k).
struct RowResult {
  float lse;
  std::vector<float> o;  // normalised weighted sum of values
};
RowResult online_row(const std::vector<float>& s_nat, const std::vector<std::vector<float>>& v, std::size_t tile,
                     std::size_t d) {
  OnlineSoftmax st = softmax_init();
  std::vector<float> acc(d, 0.f);
  for (std::size_t j0 = 0; j0 < s_nat.size(); j0 += tile) {
    const std::size_t j1 = std::min(s_nat.size(), j0 + tile);
    float mx = -kInf;
    for (std::size_t j = j0; j < j1; ++j) mx = std::max(mx, s_nat[j] * kLog2e);
    const float alpha = softmax_rescale(st, mx);
    for (float& a : acc) a *= alpha;
    const float base = exp_base(st.m);
    for (std::size_t j = j0; j < j1; ++j) {
      const float p = fast_exp2(s_nat[j] * kLog2e - base);
      st.l += p;
      for (std::size_t c = 0; c < d; ++c) acc[c] += p * v[j][c];
    }
  }
  RowResult r{softmax_lse(st), acc};
  const float inv = softmax_inv_l(st);
  for (float& a : r.o) a *= inv;
  return r;
}

TEST(TileMath, OnlineSoftmaxMatchesDirect) {
  std::mt19937_64 rng(4);
  std::normal_distribution<float> nd(0.f, 3.f);
  std::bernoulli_distribution masked(0.3);
  for (int trial = 0; trial < 500; ++trial) {
    const std::size_t n = 1 + rng() % 300, tile = 1 + rng() % 70, d = 4;
    std::vector<float> s(n);
    std::vector<std::vector<float>> v(n, std::vector<float>(d));
    const bool with_mask = trial % 2 == 1;
    for (std::size_t j = 0; j < n; ++j) {
      s[j] = with_mask && masked(rng) ? -kInf : nd(rng);
      for (auto& x : v[j]) x = nd(rng);
    }
    if (trial % 7 == 0) std::fill(s.begin(), s.begin() + static_cast<long>(std::min(n, tile)), -kInf);  // masked lead tile
    const RowResult r = online_row(s, v, tile, d);
    const std::vector<double> sd(s.begin(), s.end());
    const double lse = direct_lse(sd);
    if (lse == -kInf) {
      EXPECT_EQ(r.lse, -kInf);
      for (float x : r.o) EXPECT_EQ(x, 0.f);
      continue;
    }
    EXPECT_NEAR(r.lse, lse, 1e-4 * std::max(1.0, std::abs(lse)));
    for (std::size_t c = 0; c < d; ++c) {
      double o = 0;
      for (std::size_t j = 0; j < n; ++j) o += std::exp(sd[j] - lse) * v[j][c];
      EXPECT_NEAR(r.o[c], o, 1e-4 * std::max(1.0, std::abs(o)));
    }
  }
}

TEST(TileMath, FullyMaskedRowIsEmpty) {
  const RowResult r = online_row({-kInf, -kInf, -kInf}, {{1.f}, {2.f}, {3.f}}, 2, 1);
  EXPECT_EQ(r.lse, -kInf);
  EXPECT_EQ(r.o[0], 0.f);
  EXPECT_FALSE(std::isnan(r.o[0]));
}

// Merging the results of two halves of the keys equals the softmax over all of them, for any split point.
TEST(TileMath, MergeOfHalvesEqualsWhole) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.f, 4.f);
  for (int trial = 0; trial < 500; ++trial) {
    const std::size_t n = 2 + rng() % 200, split = rng() % (n + 1), d = 3;
    std::vector<float> s(n);
    std::vector<std::vector<float>> v(n, std::vector<float>(d));
    for (std::size_t j = 0; j < n; ++j) {
      s[j] = (trial % 3 == 0 && j < split) ? -kInf : nd(rng);  // sometimes the first half is empty
      for (auto& x : v[j]) x = nd(rng);
    }
    const RowResult whole = online_row(s, v, 64, d);
    const RowResult a = online_row({s.begin(), s.begin() + static_cast<long>(split)},
                                   {v.begin(), v.begin() + static_cast<long>(split)}, 64, d);
    const RowResult b = online_row({s.begin() + static_cast<long>(split), s.end()},
                                   {v.begin() + static_cast<long>(split), v.end()}, 64, d);
    const LseMerge m = lse_merge(a.lse, b.lse);
    if (whole.lse == -kInf) {  // every key masked
      EXPECT_EQ(m.lse, -kInf);
      continue;
    }
    EXPECT_NEAR(m.lse, whole.lse, 1e-4 * std::max(1.f, std::abs(whole.lse)));
    for (std::size_t c = 0; c < d; ++c) {
      const float oa = m.w_a == 0.f ? 0.f : a.o[c] * m.w_a;
      EXPECT_NEAR(oa + b.o[c] * m.w_b, whole.o[c], 1e-4 * std::max(1.f, std::abs(whole.o[c])));
    }
  }
}

TEST(TileMath, MergeEdgeCases) {
  LseMerge m = lse_merge(-kInf, 1.5f);
  EXPECT_EQ(m.lse, 1.5f);
  EXPECT_EQ(m.w_a, 0.f);
  EXPECT_EQ(m.w_b, 1.f);
  m = lse_merge(2.f, -kInf);
  EXPECT_EQ(m.lse, 2.f);
  EXPECT_EQ(m.w_a, 1.f);
  EXPECT_EQ(m.w_b, 0.f);
  m = lse_merge(-kInf, -kInf);
  EXPECT_EQ(m.lse, -kInf);
  EXPECT_EQ(m.w_b, 0.f);
  m = lse_merge(3.f, 3.f);
  EXPECT_NEAR(m.lse, 3.f + std::log(2.f), 1e-6);
  EXPECT_NEAR(m.w_a, 0.5f, 1e-7);
  m = lse_merge(1000.f, -1000.f);  // no overflow at extreme gaps
  EXPECT_NEAR(m.lse, 1000.f, 1e-3);
  EXPECT_EQ(m.w_b, 0.f);
  EXPECT_NEAR(m.w_a, 1.f, 1e-7);
}

// The forward kernel's loop on the CPU: Q tiles of br rows, visit kv_tiles_for_q_tile, mask only where
// tile_needs_mask says so, online softmax per row. Compared with dense masked attention in double, for blocks
// with arbitrary lengths and causal offsets, and for a ring-style split into two KV blocks merged by LSE.
struct Dense {
  i64 rows, cols;
  std::vector<float> x;
  float at(i64 r, i64 c) const { return x[static_cast<std::size_t>(r * cols + c)]; }
};
Dense random_dense(std::mt19937_64& rng, i64 rows, i64 cols) {
  std::normal_distribution<float> nd(0.f, 1.f);
  Dense m{rows, cols, std::vector<float>(static_cast<std::size_t>(rows * cols))};
  for (auto& v : m.x) v = nd(rng);
  return m;
}

struct FwdOut {
  std::vector<float> o, lse;
};
FwdOut tiled_forward(const Dense& q, const Dense& k, const Dense& v, i64 kv0, i64 kv_len, bool causal, i64 off,
                     float scale) {
  const i64 br = 128, bc = 64, d = q.cols;
  FwdOut out{std::vector<float>(static_cast<std::size_t>(q.rows * d), 0.f),
             std::vector<float>(static_cast<std::size_t>(q.rows), -kInf)};
  for (i64 q0 = 0; q0 < q.rows; q0 += br) {
    const TileRange kr = kv_tiles_for_q_tile(q0, q0 + br, q.rows, kv_len, bc, causal, off);
    for (i64 i = q0; i < std::min(q0 + br, q.rows); ++i) {
      OnlineSoftmax st = softmax_init();
      std::vector<float> acc(static_cast<std::size_t>(d), 0.f);
      for (i64 kt = kr.begin; kt < kr.end; ++kt) {
        const i64 j0 = kt * bc;
        const bool need_mask = tile_needs_mask(q0, q0 + br, q.rows, j0 + bc, kv_len, causal, off);
        std::vector<float> s(static_cast<std::size_t>(bc));
        float mx = -kInf;
        for (i64 j = j0; j < j0 + bc; ++j) {
          float x = 0.f;
          if (j < kv_len) {
            for (i64 c = 0; c < d; ++c) x += q.at(i, c) * k.at(kv0 + j, c);
          }
          x *= scale * kLog2e;
          if (need_mask && !element_live(i, j, q.rows, kv_len, causal, off)) x = -kInf;
          s[static_cast<std::size_t>(j - j0)] = x;
          mx = std::max(mx, x);
        }
        const float alpha = softmax_rescale(st, mx);
        for (float& a : acc) a *= alpha;
        const float base = exp_base(st.m);
        for (i64 j = j0; j < std::min(j0 + bc, kv_len); ++j) {
          const float p = fast_exp2(s[static_cast<std::size_t>(j - j0)] - base);
          st.l += p;
          for (i64 c = 0; c < d; ++c) acc[static_cast<std::size_t>(c)] += p * v.at(kv0 + j, c);
        }
      }
      out.lse[static_cast<std::size_t>(i)] = softmax_lse(st);
      for (i64 c = 0; c < d; ++c) out.o[static_cast<std::size_t>(i * d + c)] = acc[static_cast<std::size_t>(c)] * softmax_inv_l(st);
    }
  }
  return out;
}

FwdOut dense_forward(const Dense& q, const Dense& k, const Dense& v, bool causal, i64 off, float scale) {
  const i64 d = q.cols;
  FwdOut out{std::vector<float>(static_cast<std::size_t>(q.rows * d), 0.f),
             std::vector<float>(static_cast<std::size_t>(q.rows), -kInf)};
  for (i64 i = 0; i < q.rows; ++i) {
    std::vector<double> s(static_cast<std::size_t>(k.rows), -kInf);
    for (i64 j = 0; j < k.rows; ++j) {
      if (!visible(i, j, causal, off)) continue;
      double x = 0;
      for (i64 c = 0; c < d; ++c) x += static_cast<double>(q.at(i, c)) * k.at(j, c);
      s[static_cast<std::size_t>(j)] = x * scale;
    }
    const double lse = direct_lse(s);
    out.lse[static_cast<std::size_t>(i)] = static_cast<float>(lse);
    if (lse == -kInf) continue;
    for (i64 c = 0; c < d; ++c) {
      double o = 0;
      for (i64 j = 0; j < k.rows; ++j) o += std::exp(s[static_cast<std::size_t>(j)] - lse) * v.at(j, c);
      out.o[static_cast<std::size_t>(i * d + c)] = static_cast<float>(o);
    }
  }
  return out;
}

void expect_close(const FwdOut& got, const FwdOut& want, const char* what) {
  for (std::size_t i = 0; i < want.lse.size(); ++i) {
    if (want.lse[i] == -kInf) {
      ASSERT_EQ(got.lse[i], -kInf) << what << " row " << i;
    } else {
      ASSERT_NEAR(got.lse[i], want.lse[i], 1e-3) << what << " row " << i;
    }
  }
  for (std::size_t i = 0; i < want.o.size(); ++i) ASSERT_NEAR(got.o[i], want.o[i], 1e-3) << what << " elem " << i;
}

TEST(TileMath, TiledForwardMatchesDenseAndSplitsMerge) {
  std::mt19937_64 rng(6);
  const i64 d = 8;
  for (int trial = 0; trial < 60; ++trial) {
    const i64 q_len = 1 + static_cast<i64>(rng() % 300), kv_len = 1 + static_cast<i64>(rng() % 300);
    const bool causal = trial % 4 != 0;
    const i64 off = static_cast<i64>(rng() % 600) - 300;
    const Dense q = random_dense(rng, q_len, d), k = random_dense(rng, kv_len, d), v = random_dense(rng, kv_len, d);
    const float scale = 1.f / std::sqrt(static_cast<float>(d));
    const FwdOut want = dense_forward(q, k, v, causal, off, scale);
    expect_close(tiled_forward(q, k, v, 0, kv_len, causal, off, scale), want, "whole");

    // Ring split: keys [0, split) and [split, kv_len); the second block's keys are shifted by split, so its
    // block-relative offset is off - split.
    const i64 split = static_cast<i64>(rng() % static_cast<std::uint64_t>(kv_len + 1));
    const FwdOut a = tiled_forward(q, k, v, 0, split, causal, off, scale);
    const FwdOut b = tiled_forward(q, k, v, split, kv_len - split, causal, off - split, scale);
    FwdOut merged = a;
    for (i64 i = 0; i < q_len; ++i) {
      const LseMerge m = lse_merge(a.lse[static_cast<std::size_t>(i)], b.lse[static_cast<std::size_t>(i)]);
      merged.lse[static_cast<std::size_t>(i)] = m.lse;
      for (i64 c = 0; c < d; ++c) {
        const std::size_t e = static_cast<std::size_t>(i * d + c);
        merged.o[e] = (m.w_a == 0.f ? 0.f : a.o[e] * m.w_a) + b.o[e] * m.w_b;
      }
    }
    expect_close(merged, want, "merged");
  }
}

}  // namespace
}  // namespace cpscope::rt::kernels::tile
