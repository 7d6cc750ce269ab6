// Flash-attention forward on one block (FA2 style): mma.sync m16n8k16, ldmatrix, cp.async double-buffered K/V.
// The device code only: the launcher is attention_fwd.cu; kernels_emu_test runs this same code on the CPU
// (CPS_SIMT_EMU, runtime/kernels/emu/).
#pragma once

#include "runtime/kernels/attention_params.cuh"

#include <cstdint>

namespace cpscope::rt::kernels::impl {

struct FwdParams : BlockParams {
  float* o;
  float* lse;
  bool merge;
};

// 128 query rows per CTA, 16 per warp; 64-key K/V tiles, double-buffered. Rows are padded by 8 elements
// (16 bytes) so the 8 row addresses of an ldmatrix phase fall in distinct bank groups.
template <int D>
struct FwdCfg {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBr = 16 * kWarps;
  static constexpr int kBc = 64;
  static constexpr int kStride = D + 8;
  static constexpr int kSmemBytes = (kBr + 4 * kBc) * kStride * 2;
  static_assert(D % 16 == 0 && kBc % 16 == 0, "mma k/n steps are 16 wide: D and kBc must be multiples of 16");
  static_assert(kSmemBytes <= 227 * 1024, "forward tiles exceed the 227 KB of shared memory per block");
};

template <typename T, int D>
__global__ void __launch_bounds__(FwdCfg<D>::kThreads, 1) attn_fwd_kernel(const FwdParams p) {
  using C = FwdCfg<D>;
  using M = MmaType<T>;
  constexpr int kBr = C::kBr, kBc = C::kBc, S = C::kStride;
  CPS_DYNAMIC_SMEM(smem_raw);
  T* q_s = reinterpret_cast<T*>(smem_raw);
  T* k_s = q_s + kBr * S;      // [2][kBc][S]
  T* v_s = k_s + 2 * kBc * S;  // [2][kBc][S]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  // The last Q tiles see the most keys under a causal mask: start them first.
  const std::int64_t q_begin = static_cast<std::int64_t>(gridDim.x - 1 - blockIdx.x) * kBr;
  const int h = p.head_begin + static_cast<int>(blockIdx.y);
  const std::int64_t b = blockIdx.z;
  const int kvh = tm::kv_head_of(h, p.gqa_ratio, p.kv_head_shift);
  const tm::TileRange kr =
      tm::kv_tiles_for_q_tile(q_begin, q_begin + kBr, p.q_len, p.kv_len, kBc, p.causal, p.causal_offset);

  // Output rows of this thread: r = 0 -> tile row warp*16+g, r = 1 -> +8.
  std::int64_t row_i[2];
  float* o_row[2];
  float* lse_ptr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_i[r] = q_begin + warp * 16 + g + 8 * r;
    const std::int64_t tok = p.q_off + row_i[r];
    o_row[r] = p.o + ((b * p.q_tokens + tok) * p.q_heads + h) * D;
    lse_ptr[r] = p.lse + (b * p.q_heads + h) * p.q_tokens + tok;
  }

  if (kr.empty()) {  // every row of this tile is fully masked
    if (!p.merge) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (row_i[r] >= p.q_len) continue;
        for (int d = 2 * t; d < D; d += 8) *reinterpret_cast<float2*>(o_row[r] + d) = make_float2(0.f, 0.f);
        if (t == 0) *lse_ptr[r] = tm::neg_inf();
      }
    }
    return;
  }

  const std::int64_t q_stride = static_cast<std::int64_t>(p.q_heads) * D;
  const std::int64_t kv_stride = static_cast<std::int64_t>(p.kv_heads) * D;
  const T* q_g = static_cast<const T*>(p.q) + ((b * p.q_tokens + p.q_off + q_begin) * p.q_heads + h) * D;
  const T* k_g = static_cast<const T*>(p.k) + ((b * p.kv_tokens + p.kv_off) * p.kv_heads + kvh) * D;
  const T* v_g = static_cast<const T*>(p.v) + ((b * p.kv_tokens + p.kv_off) * p.kv_heads + kvh) * D;

  auto load_kv = [&](std::int64_t jt, int buf) {
    const std::int64_t j0 = jt * kBc;
    const std::int64_t valid = p.kv_len - j0;
    dev::load_rows_async<kBc, D, S, C::kThreads>(k_s + buf * kBc * S, k_g + j0 * kv_stride, kv_stride, valid, tid);
    dev::load_rows_async<kBc, D, S, C::kThreads>(v_s + buf * kBc * S, v_g + j0 * kv_stride, kv_stride, valid, tid);
  };

  dev::load_rows_async<kBr, D, S, C::kThreads>(q_s, q_g, q_stride, p.q_len - q_begin, tid);
  load_kv(kr.begin, 0);
  dev::cp_async_commit();
  dev::cp_async_wait<0>();
  __syncthreads();

  // This warp's 16 query rows as A fragments, kept in registers for the whole KV loop.
  std::uint32_t qf[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    dev::ldmatrix_x4(qf[ks], q_s + (warp * 16 + (lane & 15)) * S + ks * 16 + ((lane >> 4) << 3));
  }

  float acc[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
  tm::OnlineSoftmax st[2] = {tm::softmax_init(), tm::softmax_init()};

  for (std::int64_t jt = kr.begin; jt < kr.end; ++jt) {
    const int buf = static_cast<int>((jt - kr.begin) & 1);
    if (jt + 1 < kr.end) load_kv(jt + 1, buf ^ 1);  // its buffer was released by the barrier ending jt-1
    dev::cp_async_commit();
    dev::cp_async_wait<1>();
    __syncthreads();

    const T* kb_s = k_s + buf * kBc * S;
    const T* vb_s = v_s + buf * kBc * S;

    // S = Q K^T for 16 rows x kBc keys.
    float s[kBc / 8][4];
#pragma unroll
    for (int i = 0; i < kBc / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
      for (int np = 0; np < kBc / 16; ++np) {
        std::uint32_t kf[4];
        dev::ldmatrix_x4(kf, kb_s + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * S + ks * 16 + (((lane >> 3) & 1) << 3));
        M::mma(s[2 * np], qf[ks], kf[0], kf[1]);
        M::mma(s[2 * np + 1], qf[ks], kf[2], kf[3]);
      }
    }

    const std::int64_t j0 = jt * kBc;
    const bool need_mask =
        tm::tile_needs_mask(q_begin, q_begin + kBr, p.q_len, j0 + kBc, p.kv_len, p.causal, p.causal_offset);
    const tm::TileMask mask = tm::make_tile_mask(q_begin, p.q_len, j0, p.kv_len, p.causal, p.causal_offset, kBr, kBc);
    float mx[2] = {tm::neg_inf(), tm::neg_inf()};
#pragma unroll
    for (int nt = 0; nt < kBc / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * p.scale_log2;
        if (need_mask && !mask.live(warp * 16 + g + 8 * (e >> 1), nt * 8 + 2 * t + (e & 1))) x = tm::neg_inf();
        s[nt][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    }
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float alpha = tm::softmax_rescale(st[r], dev::quad_max(mx[r]));
      base[r] = tm::exp_base(st[r].m);
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        acc[i][2 * r] *= alpha;
        acc[i][2 * r + 1] *= alpha;
      }
    }
    float rowsum[2] = {0.f, 0.f};
#pragma unroll
    for (int nt = 0; nt < kBc / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = tm::fast_exp2(s[nt][e] - base[e >> 1]);
        s[nt][e] = pe;
        rowsum[e >> 1] += pe;
      }
    }
    st[0].l += rowsum[0];  // per-lane partial sums; the quad is reduced once at the end
    st[1].l += rowsum[1];

    // O += P V: P's C fragments of two adjacent key groups form one A fragment.
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      const std::uint32_t a[4] = {M::pack(s[2 * kk][0], s[2 * kk][1]), M::pack(s[2 * kk][2], s[2 * kk][3]),
                                  M::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                  M::pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        std::uint32_t vf[4];
        dev::ldmatrix_x4_trans(vf, vb_s + (kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3)) * S + dp * 16 +
                                       ((lane >> 4) << 3));
        M::mma(acc[2 * dp], a, vf[0], vf[1]);
        M::mma(acc[2 * dp + 1], a, vf[2], vf[3]);
      }
    }
    __syncthreads();  // every warp is done with this buffer before the next iteration refills it
  }

  // Epilogue: normalise, then overwrite or merge by LSE. Every lane of a quad reads the old LSE before
  // lane t == 0 of that quad rewrites it.
  float lse_blk[2], inv_l[2], lse_old[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    st[r].l = dev::quad_sum(st[r].l);
    lse_blk[r] = tm::softmax_lse(st[r]);
    inv_l[r] = tm::softmax_inv_l(st[r]);
    lse_old[r] = (p.merge && row_i[r] < p.q_len) ? *lse_ptr[r] : tm::neg_inf();
  }
  __syncwarp();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (row_i[r] >= p.q_len) continue;
    if (!p.merge) {
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        *reinterpret_cast<float2*>(o_row[r] + i * 8 + 2 * t) =
            make_float2(acc[i][2 * r] * inv_l[r], acc[i][2 * r + 1] * inv_l[r]);
      }
      if (t == 0) *lse_ptr[r] = lse_blk[r];
    } else if (lse_blk[r] != tm::neg_inf()) {
      const tm::LseMerge mg = tm::lse_merge(lse_old[r], lse_blk[r]);
      const float wb = mg.w_b * inv_l[r];
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        float2* po = reinterpret_cast<float2*>(o_row[r] + i * 8 + 2 * t);
        float2 old = *po;
        // w_a = 0 when the old row is empty: do not let stale values (even NaN) leak in.
        old.x = mg.w_a == 0.f ? 0.f : old.x * mg.w_a;
        old.y = mg.w_a == 0.f ? 0.f : old.y * mg.w_a;
        *po = make_float2(old.x + acc[i][2 * r] * wb, old.y + acc[i][2 * r + 1] * wb);
      }
      if (t == 0) *lse_ptr[r] = mg.lse;
    }
  }
}

// The kernel parameters of a validated call.
inline FwdParams fwd_params(const AttnFwdArgs& a) {
  FwdParams p{};
  static_cast<BlockParams&>(p) = block_params(a, a.blk);
  p.o = a.o;
  p.lse = a.lse;
  p.merge = a.merge;
  return p;
}

}  // namespace cpscope::rt::kernels::impl
