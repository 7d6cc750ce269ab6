// Tile math shared by the attention kernels and their CPU tests: visibility, tile ranges, online softmax, LSE merge.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define CPS_HD __host__ __device__ __forceinline__
#else
#define CPS_HD inline
#endif

namespace cpscope::rt::kernels::tile {

// Softmax statistics are kept in base 2 (scores pre-multiplied by log2(e)) so the inner loop uses exp2.
inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

CPS_HD float neg_inf() { return -INFINITY; }

// exp2 that maps exp2(-inf) = 0; the device path is the single MUFU instruction the kernels rely on.
CPS_HD float fast_exp2(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return ::exp2f(x);
#endif
}

CPS_HD std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
CPS_HD std::int64_t max64(std::int64_t a, std::int64_t b) { return a > b ? a : b; }
CPS_HD std::int64_t clamp64(std::int64_t x, std::int64_t lo, std::int64_t hi) { return min64(max64(x, lo), hi); }
CPS_HD std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Block-relative key j is visible to block-relative query i (both already inside the block's ranges).
CPS_HD bool visible(std::int64_t i, std::int64_t j, bool causal, std::int64_t causal_offset) {
  return !causal || j <= i + causal_offset;
}

// Number of leading keys [0, n) that any query in [q_begin, q_end) can see (q_end exclusive, q_end > q_begin);
// causal visibility only ever bounds keys from above, so the visible keys of a query range are a prefix.
CPS_HD std::int64_t visible_kv_end(std::int64_t q_begin, std::int64_t q_end, std::int64_t kv_len, bool causal,
                                   std::int64_t causal_offset) {
  if (q_end <= q_begin || kv_len <= 0) return 0;
  if (!causal) return kv_len;
  return clamp64(q_end - 1 + causal_offset + 1, 0, kv_len);
}

struct TileRange {
  std::int64_t begin, end;  // tile indices [begin, end)
  CPS_HD bool empty() const { return end <= begin; }
};

// KV tiles (of bc keys) a forward Q tile [q_begin, q_end ∩ q_len) has to visit.
CPS_HD TileRange kv_tiles_for_q_tile(std::int64_t q_begin, std::int64_t q_end, std::int64_t q_len, std::int64_t kv_len,
                                     std::int64_t bc, bool causal, std::int64_t causal_offset) {
  const std::int64_t kv_end = visible_kv_end(q_begin, min64(q_end, q_len), kv_len, causal, causal_offset);
  return {0, ceil_div(kv_end, bc)};
}

// Q tiles (of br queries) that see at least one key of the KV tile [kv_begin, kv_end ∩ kv_len) (backward).
// Query i sees key j iff i >= j - causal_offset, so the first such query is kv_begin - causal_offset.
CPS_HD TileRange q_tiles_for_kv_tile(std::int64_t kv_begin, std::int64_t kv_end, std::int64_t kv_len, std::int64_t q_len,
                                     std::int64_t br, bool causal, std::int64_t causal_offset) {
  if (kv_begin >= min64(kv_end, kv_len) || q_len <= 0) return {0, 0};
  const std::int64_t first_q = causal ? clamp64(kv_begin - causal_offset, 0, q_len) : 0;
  if (first_q >= q_len) return {0, 0};
  return {first_q / br, ceil_div(q_len, br)};
}

// Whether the tile pair [q_begin, q_end) x [kv_begin, kv_end) (unclamped ends; kv_begin does not matter) contains
// any pair that is out of range or causally masked; tiles where this is false skip the per-element predicate.
CPS_HD bool tile_needs_mask(std::int64_t q_begin, std::int64_t q_end, std::int64_t q_len, std::int64_t kv_end,
                            std::int64_t kv_len, bool causal, std::int64_t causal_offset) {
  if (q_end > q_len || kv_end > kv_len) return true;
  return causal && kv_end - 1 > q_begin + causal_offset;
}

// The element predicate the kernels apply in masked tiles: in range on both sides and causally visible.
CPS_HD bool element_live(std::int64_t i, std::int64_t j, std::int64_t q_len, std::int64_t kv_len, bool causal,
                         std::int64_t causal_offset) {
  return i < q_len && j < kv_len && visible(i, j, causal, causal_offset);
}

// element_live for the pairs of one tile in 32-bit tile-relative coordinates (qi, kj in [0, tile size)), which is
// what the kernels evaluate per element: qi < q_lim, kj < kv_lim and, under a causal mask, kj - qi <= diag.
struct TileMask {
  int q_lim, kv_lim, diag;
  bool causal;
  CPS_HD bool live(int qi, int kj) const { return qi < q_lim && kj < kv_lim && (!causal || kj - qi <= diag); }
};
CPS_HD TileMask make_tile_mask(std::int64_t q_begin, std::int64_t q_len, std::int64_t kv_begin, std::int64_t kv_len,
                               bool causal, std::int64_t causal_offset, int br, int bc) {
  // Clamping keeps every value in int range without changing the predicate for |qi|, |kj| <= tile sizes.
  const std::int64_t big = std::int64_t{1} << 30;
  return {static_cast<int>(clamp64(q_len - q_begin, 0, br)), static_cast<int>(clamp64(kv_len - kv_begin, 0, bc)),
          static_cast<int>(clamp64(q_begin + causal_offset - kv_begin, -big, big)), causal};
}

// KV tensor head of query head h under grouped-query attention.
CPS_HD int kv_head_of(int q_head, int gqa_ratio, int kv_head_shift) { return q_head / gqa_ratio - kv_head_shift; }

// One row's online-softmax state in base 2: running max m (of scaled scores) and running sum l of exp2(s - m).
struct OnlineSoftmax {
  float m;
  float l;
};
CPS_HD OnlineSoftmax softmax_init() { return {neg_inf(), 0.f}; }

// The exponent base for a running max: a row that has seen only masked scores (-inf) uses 0 so that
// exp2(-inf - base) = 0 instead of NaN.
CPS_HD float exp_base(float m) { return m == neg_inf() ? 0.f : m; }

// Folds a tile's row max into the state; returns the factor that rescales everything accumulated so far
// (the old partial sum and output). The caller then adds sum_j exp2(s_j - exp_base(state.m)) to state.l.
CPS_HD float softmax_rescale(OnlineSoftmax& st, float tile_max) {
  const float m_new = st.m > tile_max ? st.m : tile_max;
  const float alpha = fast_exp2(st.m - exp_base(m_new));
  st.m = m_new;
  st.l *= alpha;
  return alpha;
}

// Natural-log LSE of a finished row; -inf for a row that saw no key.
CPS_HD float softmax_lse(const OnlineSoftmax& st) {
  return st.l > 0.f ? (st.m + ::log2f(st.l)) * kLn2 : neg_inf();
}
CPS_HD float softmax_inv_l(const OnlineSoftmax& st) { return st.l > 0.f ? 1.f / st.l : 0.f; }

// Stable merge of two normalised partial results with natural-log LSEs a (existing) and b (new block):
// lse = logaddexp(a, b), o = o_a * w_a + o_b * w_b. Both empty: lse = -inf and the existing o is kept (w_a = 1).
struct LseMerge {
  float lse, w_a, w_b;
};
CPS_HD LseMerge lse_merge(float lse_a, float lse_b) {
  if (lse_b == neg_inf()) return {lse_a, 1.f, 0.f};
  if (lse_a == neg_inf()) return {lse_b, 0.f, 1.f};
  const float mx = lse_a > lse_b ? lse_a : lse_b;
  const float ea = ::expf(lse_a - mx), eb = ::expf(lse_b - mx);
  const float s = ea + eb;
  return {mx + ::logf(s), ea / s, eb / s};
}

}  // namespace cpscope::rt::kernels::tile
