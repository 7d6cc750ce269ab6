// Flash-attention backward on one block (FA2 style): a CTA owns a KV tile and loops over the Q tiles that see it;
// dK/dV stay in registers, dQ is added with fp32 atomics per Q tile.
// The device code only: the launcher is attention_bwd.cu; kernels_emu_test runs this same code on the CPU
// (CPS_SIMT_EMU, runtime/kernels/emu/).
#pragma once

#include "runtime/kernels/attention_params.cuh"

#include <cstdint>

namespace cpscope::rt::kernels::impl {

struct BwdParams : BlockParams {
  const void* dout;
  const float* lse;
  const float* delta;
  float* dq;
  float* dk;
  float* dv;
  float scale;  // softmax scale (dS is pre-multiplied by it, so dQ and dK need no epilogue scaling)
};

// A CTA: 128 keys (16 per warp: each warp owns the dK/dV rows of its keys), query tiles double-buffered.
// The transposed products S^T = K Q^T and dP^T = V dO^T put keys on the mma M axis, so P^T and dS^T are
// already A fragments for dV += P^T dO and dK += dS^T Q. dQ = dS K goes through dS^T in shared memory.
// Query tile of the backward at D = 128: 64 spills ~16-20 bytes of registers (ptxas, sm_90); 32 does not, at the
// cost of twice the barriers and K/V fragment loads per FLOP. Set with -DCPS_BWD_BR_D128=64 to compare on a GPU.
#ifndef CPS_BWD_BR_D128
#define CPS_BWD_BR_D128 32
#endif
template <int D>
struct BwdCfg {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBc = 16 * kWarps;
  static constexpr int kBr = D == 128 ? CPS_BWD_BR_D128 : 64;
  static constexpr int kDqRowGroups = kBr / 16;                  // dQ split: warps = row groups x column groups
  static constexpr int kDqCols = D / (kWarps / kDqRowGroups);    // dQ columns per warp
  static constexpr int kStride = D + 8;
  static constexpr int kDsStride = kBr + 8;
  static constexpr int kSmemElems = 2 * kBc * kStride + 4 * kBr * kStride + kBc * kDsStride;
  static constexpr int kSmemBytes = kSmemElems * 2 + 4 * kBr * 4;  // + lse and delta, double-buffered
  static_assert(kBr % 16 == 0 && kWarps % kDqRowGroups == 0, "dQ: every warp takes 16 query rows x kDqCols columns");
  static_assert(kDqCols % 16 == 0, "dQ columns per warp must be whole 16-column ldmatrix steps");
  static_assert(kBr <= kThreads, "one thread per query row loads lse and delta");
  static_assert(kSmemBytes <= 227 * 1024, "backward tiles exceed the 227 KB of shared memory per block");
};

template <typename T, int D>
__global__ void __launch_bounds__(BwdCfg<D>::kThreads, 1) attn_bwd_kernel(const BwdParams p) {
  using C = BwdCfg<D>;
  using M = MmaType<T>;
  constexpr int kBr = C::kBr, kBc = C::kBc, S = C::kStride, SD = C::kDsStride;
  CPS_DYNAMIC_SMEM(smem_raw);
  T* k_s = reinterpret_cast<T*>(smem_raw);  // [kBc][S]
  T* v_s = k_s + kBc * S;                     // [kBc][S]
  T* q_s = v_s + kBc * S;                     // [2][kBr][S]
  T* do_s = q_s + 2 * kBr * S;                // [2][kBr][S]
  T* ds_s = do_s + 2 * kBr * S;               // [kBc][SD]: dS^T (keys x queries)
  float* lse_s = reinterpret_cast<float*>(ds_s + kBc * SD);  // [2][kBr], natural log
  float* dl_s = lse_s + 2 * kBr;                              // [2][kBr]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kBc;
  const int h = p.head_begin + static_cast<int>(blockIdx.y);
  const std::int64_t b = blockIdx.z;
  const int kvh = tm::kv_head_of(h, p.gqa_ratio, p.kv_head_shift);
  const tm::TileRange qr = tm::q_tiles_for_kv_tile(n0, n0 + kBc, p.kv_len, p.q_len, kBr, p.causal, p.causal_offset);
  if (qr.empty()) return;  // no query of the block sees these keys: nothing to add

  const std::int64_t q_stride = static_cast<std::int64_t>(p.q_heads) * D;
  const std::int64_t kv_stride = static_cast<std::int64_t>(p.kv_heads) * D;
  const std::int64_t q_row0 = (b * p.q_tokens + p.q_off) * p.q_heads + h;  // element row of block query 0
  const T* q_g = static_cast<const T*>(p.q) + q_row0 * D;
  const T* do_g = static_cast<const T*>(p.dout) + q_row0 * D;
  const float* lse_g = p.lse + (b * p.q_heads + h) * p.q_tokens + p.q_off;
  const float* dl_g = p.delta + (b * p.q_heads + h) * p.q_tokens + p.q_off;
  const std::int64_t kv_row0 = (b * p.kv_tokens + p.kv_off + n0) * p.kv_heads + kvh;

  dev::load_rows_async<kBc, D, S, C::kThreads>(k_s, static_cast<const T*>(p.k) + kv_row0 * D, kv_stride,
                                                p.kv_len - n0, tid);
  dev::load_rows_async<kBc, D, S, C::kThreads>(v_s, static_cast<const T*>(p.v) + kv_row0 * D, kv_stride,
                                                p.kv_len - n0, tid);
  auto load_q = [&](std::int64_t it, int buf) {
    const std::int64_t i0 = it * kBr;
    dev::load_rows_async<kBr, D, S, C::kThreads>(q_s + buf * kBr * S, q_g + i0 * q_stride, q_stride, p.q_len - i0, tid);
    dev::load_rows_async<kBr, D, S, C::kThreads>(do_s + buf * kBr * S, do_g + i0 * q_stride, q_stride, p.q_len - i0,
                                                  tid);
    if (tid < kBr) {
      const bool ok = i0 + tid < p.q_len;  // rows past the end read 0 and are masked
      dev::cp_async_4(lse_s + buf * kBr + tid, lse_g + (ok ? i0 + tid : i0), ok ? 4 : 0);
      dev::cp_async_4(dl_s + buf * kBr + tid, dl_g + (ok ? i0 + tid : i0), ok ? 4 : 0);
    }
  };
  load_q(qr.begin, 0);
  dev::cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;
  }
  const int key_row = warp * 16 + g;  // + 8 for e >= 2
  // Lane base addresses (bytes) of the ldmatrix patterns; see mma.cuh.
  const std::uint32_t k_a = dev::smem_u32(k_s + warp * 16 * S + dev::lane_off_a(lane, S));
  const std::uint32_t v_a = dev::smem_u32(v_s + warp * 16 * S + dev::lane_off_a(lane, S));
  const std::uint32_t q_b = dev::smem_u32(q_s + dev::lane_off_b(lane, S));
  const std::uint32_t q_bt = dev::smem_u32(q_s + dev::lane_off_bt(lane, S));
  const std::uint32_t do_b = dev::smem_u32(do_s + dev::lane_off_b(lane, S));
  const std::uint32_t do_bt = dev::smem_u32(do_s + dev::lane_off_bt(lane, S));
  const std::uint32_t k_bt = dev::smem_u32(k_s + dev::lane_off_bt(lane, S));
  // dS as the A operand of dQ = dS K, read from dS^T ([key][query]) with .trans: the B-pattern rows with the
  // roles of the two 8x8 halves swapped.
  const std::uint32_t ds_at = dev::smem_u32(ds_s + ((lane & 7) + ((lane >> 4) << 3)) * SD + (((lane >> 3) & 1) << 3));
  constexpr std::uint32_t kEl = sizeof(T);
  const int dq_row = (warp % C::kDqRowGroups) * 16;
  const int dq_col = (warp / C::kDqRowGroups) * C::kDqCols;

  for (std::int64_t it = qr.begin; it < qr.end; ++it) {
    const int buf = static_cast<int>((it - qr.begin) & 1);
    if (it + 1 < qr.end) load_q(it + 1, buf ^ 1);  // its buffer was released by the dS barrier of it-1
    dev::cp_async_commit();
    dev::cp_async_wait<1>();
    __syncthreads();

    const std::uint32_t buf_off = static_cast<std::uint32_t>(buf) * kBr * S * kEl;
    const float* lseb = lse_s + buf * kBr;
    const float* dlb = dl_s + buf * kBr;
    const std::int64_t i0 = it * kBr;
    const bool need_mask =
        tm::tile_needs_mask(i0, i0 + kBr, p.q_len, n0 + kBc, p.kv_len, p.causal, p.causal_offset);
    const tm::TileMask mask = tm::make_tile_mask(i0, p.q_len, n0, p.kv_len, p.causal, p.causal_offset, kBr, kBc);

    // S^T = K Q^T: 16 keys x kBr queries per warp.
    float s[kBr / 8][4];
#pragma unroll
    for (int i = 0; i < kBr / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll 2
    for (int ks = 0; ks < D / 16; ++ks) {
      std::uint32_t kf[4];
      dev::ldmatrix_x4(kf, k_a + ks * 16 * kEl);
#pragma unroll
      for (int np = 0; np < kBr / 16; ++np) {
        std::uint32_t qf[4];
        dev::ldmatrix_x4(qf, q_b + buf_off + (np * 16 * S + ks * 16) * kEl);
        M::mma(s[2 * np], kf, qf[0], qf[1]);
        M::mma(s[2 * np + 1], kf, qf[2], qf[3]);
      }
    }
    // P^T = exp(scale * S^T - lse[query]); dead pairs are 0.
#pragma unroll
    for (int nt = 0; nt < kBr / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = nt * 8 + 2 * t + (e & 1);
        float x = tm::fast_exp2(s[nt][e] * p.scale_log2 - lseb[c] * tm::kLog2e);
        if (need_mask && !mask.live(c, key_row + 8 * (e >> 1))) x = 0.f;
        s[nt][e] = x;
      }
    }
    // P^T as packed A fragments (P is only needed at input precision from here on); dV += P^T dO.
    std::uint32_t pa[kBr / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk) {
      pa[kk][0] = M::pack(s[2 * kk][0], s[2 * kk][1]);
      pa[kk][1] = M::pack(s[2 * kk][2], s[2 * kk][3]);
      pa[kk][2] = M::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[kk][3] = M::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        std::uint32_t of[4];
        dev::ldmatrix_x4_trans(of, do_bt + buf_off + (kk * 16 * S + dp * 16) * kEl);
        M::mma(dv[2 * dp], pa[kk], of[0], of[1]);
        M::mma(dv[2 * dp + 1], pa[kk], of[2], of[3]);
      }
    }
    // dP^T = V dO^T.
    float dpt[kBr / 8][4];
#pragma unroll
    for (int i = 0; i < kBr / 8; ++i) dpt[i][0] = dpt[i][1] = dpt[i][2] = dpt[i][3] = 0.f;
#pragma unroll 2
    for (int ks = 0; ks < D / 16; ++ks) {
      std::uint32_t vf[4];
      dev::ldmatrix_x4(vf, v_a + ks * 16 * kEl);
#pragma unroll
      for (int np = 0; np < kBr / 16; ++np) {
        std::uint32_t of[4];
        dev::ldmatrix_x4(of, do_b + buf_off + (np * 16 * S + ks * 16) * kEl);
        M::mma(dpt[2 * np], vf, of[0], of[1]);
        M::mma(dpt[2 * np + 1], vf, of[2], of[3]);
      }
    }
    // dS^T = P^T * (dP^T - delta[query]) * scale. P^T element (nt, e) is half (e & 1) of pa[nt / 2][(nt & 1) * 2 + e / 2].
#pragma unroll
    for (int nt = 0; nt < kBr / 8; ++nt) {
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const float2 pv = M::unpack(pa[nt >> 1][(nt & 1) * 2 + hr]);
        const int c = nt * 8 + 2 * t;
        dpt[nt][2 * hr] = pv.x * (dpt[nt][2 * hr] - dlb[c]) * p.scale;
        dpt[nt][2 * hr + 1] = pv.y * (dpt[nt][2 * hr + 1] - dlb[c + 1]) * p.scale;
      }
    }
    // dK += dS^T Q, and dS^T to shared memory for dQ.
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk) {
      const std::uint32_t a[4] = {M::pack(dpt[2 * kk][0], dpt[2 * kk][1]), M::pack(dpt[2 * kk][2], dpt[2 * kk][3]),
                                  M::pack(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                                  M::pack(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
      *reinterpret_cast<std::uint32_t*>(ds_s + key_row * SD + kk * 16 + 2 * t) = a[0];
      *reinterpret_cast<std::uint32_t*>(ds_s + (key_row + 8) * SD + kk * 16 + 2 * t) = a[1];
      *reinterpret_cast<std::uint32_t*>(ds_s + key_row * SD + kk * 16 + 8 + 2 * t) = a[2];
      *reinterpret_cast<std::uint32_t*>(ds_s + (key_row + 8) * SD + kk * 16 + 8 + 2 * t) = a[3];
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        std::uint32_t qf[4];
        dev::ldmatrix_x4_trans(qf, q_bt + buf_off + (kk * 16 * S + dp * 16) * kEl);
        M::mma(dk[2 * dp], a, qf[0], qf[1]);
        M::mma(dk[2 * dp + 1], a, qf[2], qf[3]);
      }
    }
    __syncthreads();  // dS^T complete; also every warp is done with this Q/dO buffer

    // dQ[16 queries x kDqCols] per warp = dS K: A = dS from dS^T via ldmatrix.trans, B = K via ldmatrix.trans.
    float dq[C::kDqCols / 8][4];
#pragma unroll
    for (int i = 0; i < C::kDqCols / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      std::uint32_t a[4];
      dev::ldmatrix_x4_trans(a, ds_at + (kk * 16 * SD + dq_row) * kEl);
#pragma unroll
      for (int dp = 0; dp < C::kDqCols / 16; ++dp) {
        std::uint32_t kf[4];
        dev::ldmatrix_x4_trans(kf, k_bt + (kk * 16 * S + dq_col + dp * 16) * kEl);
        M::mma(dq[2 * dp], a, kf[0], kf[1]);
        M::mma(dq[2 * dp + 1], a, kf[2], kf[3]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const std::int64_t i = i0 + dq_row + g + 8 * r;
      if (i >= p.q_len) continue;
      float* row = p.dq + (q_row0 + i * p.q_heads) * D + dq_col;
#pragma unroll
      for (int nt = 0; nt < C::kDqCols / 8; ++nt) {
        atomicAdd(reinterpret_cast<float2*>(row + nt * 8 + 2 * t), make_float2(dq[nt][2 * r], dq[nt][2 * r + 1]));
      }
    }
  }

  // Add this CTA's dK/dV (GQA: other query heads of the same KV head add into the same rows).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const std::int64_t j = n0 + key_row + 8 * r;
    if (j >= p.kv_len) continue;
    const std::int64_t off = (kv_row0 + (key_row + 8 * r) * static_cast<std::int64_t>(p.kv_heads)) * D;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      atomicAdd(reinterpret_cast<float2*>(p.dk + off + i * 8 + 2 * t), make_float2(dk[i][2 * r], dk[i][2 * r + 1]));
      atomicAdd(reinterpret_cast<float2*>(p.dv + off + i * 8 + 2 * t), make_float2(dv[i][2 * r], dv[i][2 * r + 1]));
    }
  }
}

// The kernel parameters of a validated call.
inline BwdParams bwd_params(const AttnBwdArgs& a) {
  BwdParams p{};
  static_cast<BlockParams&>(p) = block_params(a, a.blk);
  p.dout = a.dout;
  p.lse = a.lse;
  p.delta = a.delta;
  p.dq = a.dq;
  p.dk = a.dk;
  p.dv = a.dv;
  p.scale = a.blk.scale;
  return p;
}

}  // namespace cpscope::rt::kernels::impl
