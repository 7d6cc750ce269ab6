#include "runtime/host/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <Eigen/Dense>

namespace cpscope::rt::host {
namespace {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<Mat, 0, Eigen::OuterStride<>>;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// rows × dim of one (batch, head) of a tensor, rows strided by heads·dim.
Map rows_of(const TensorView& t, std::int64_t b, std::int64_t row, std::int64_t count, std::int32_t head) {
  return Map(t.at(b, row, head), count, t.dim, Eigen::OuterStride<>(static_cast<Eigen::Index>(t.heads) * t.dim));
}

// Keys [0, visible(i)) of the block are visible to block row i.
std::int64_t visible(const BlockSpec& s, std::int64_t i) {
  if (!s.causal) return s.kv_len;
  return std::clamp<std::int64_t>(i + s.causal_offset + 1, 0, s.kv_len);
}

// Scaled scores with masked entries at -inf, and each row's log-sum-exp.
void scores(const BlockSpec& s, const Map& qb, const Map& kb, Mat& sc, Eigen::VectorXd& lse_blk) {
  sc.noalias() = (qb * kb.transpose()) * s.scale;
  lse_blk.resize(s.q_len);
  for (std::int64_t i = 0; i < s.q_len; ++i) {
    const std::int64_t n = visible(s, i);
    for (std::int64_t j = n; j < s.kv_len; ++j) sc(i, j) = kNegInf;
    if (n == 0) {
      lse_blk(i) = kNegInf;
      continue;
    }
    const double m = sc.row(i).head(n).maxCoeff();
    lse_blk(i) = m + std::log((sc.row(i).head(n).array() - m).exp().sum());
  }
}

}  // namespace

void attend_fwd(const BlockSpec& s, const TensorView& q, const TensorView& k, const TensorView& v,
                const TensorView& o, const TensorView& lse) {
  Mat sc, ob;
  Eigen::VectorXd lse_blk;
  for (std::int64_t b = 0; b < s.batch; ++b) {
    for (std::int32_t h = s.head_begin; h < s.head_begin + s.head_count; ++h) {
      const std::int32_t kh = h / s.gqa_ratio - s.kv_head_shift;
      const Map qb = rows_of(q, b, s.q_off, s.q_len, h);
      const Map kb = rows_of(k, b, s.kv_off, s.kv_len, kh);
      const Map vb = rows_of(v, b, s.kv_off, s.kv_len, kh);
      scores(s, qb, kb, sc, lse_blk);
      for (std::int64_t i = 0; i < s.q_len; ++i)
        if (lse_blk(i) != kNegInf) sc.row(i) = (sc.row(i).array() - lse_blk(i)).exp().matrix();
        else sc.row(i).setZero();
      ob.noalias() = sc * vb;
      Map out = rows_of(o, b, s.q_off, s.q_len, h);
      for (std::int64_t i = 0; i < s.q_len; ++i) {
        const double nb = lse_blk(i);
        if (nb == kNegInf) continue;
        double* l = lse.at(b, s.q_off + i, h);
        const double old = *l;
        if (old == kNegInf) {
          out.row(i) = ob.row(i);
          *l = nb;
          continue;
        }
        const double mx = std::max(old, nb);
        const double merged = mx + std::log(std::exp(old - mx) + std::exp(nb - mx));
        out.row(i) = out.row(i) * std::exp(old - merged) + ob.row(i) * std::exp(nb - merged);
        *l = merged;
      }
    }
  }
}

void attend_bwd(const BlockSpec& s, const TensorView& q, const TensorView& k, const TensorView& v,
                const TensorView& o, const TensorView& lse, const TensorView& dout, const TensorView& dq,
                const TensorView& dk, const TensorView& dv) {
  Mat p, dp;
  for (std::int64_t b = 0; b < s.batch; ++b) {
    for (std::int32_t h = s.head_begin; h < s.head_begin + s.head_count; ++h) {
      const std::int32_t kh = h / s.gqa_ratio - s.kv_head_shift;
      const Map qb = rows_of(q, b, s.q_off, s.q_len, h);
      const Map kb = rows_of(k, b, s.kv_off, s.kv_len, kh);
      const Map vb = rows_of(v, b, s.kv_off, s.kv_len, kh);
      const Map ob = rows_of(o, b, s.q_off, s.q_len, h);
      const Map dob = rows_of(dout, b, s.q_off, s.q_len, h);
      // P = exp(S - lse) with the final LSE of the full attention row.
      p.noalias() = (qb * kb.transpose()) * s.scale;
      for (std::int64_t i = 0; i < s.q_len; ++i) {
        const std::int64_t n = visible(s, i);
        const double l = *lse.at(b, s.q_off + i, h);
        if (n == 0 || l == kNegInf) {
          p.row(i).setZero();
          continue;
        }
        p.row(i).head(n) = (p.row(i).head(n).array() - l).exp().matrix();
        p.row(i).tail(s.kv_len - n).setZero();
      }
      dp.noalias() = dob * vb.transpose();
      const Eigen::VectorXd delta = (dob.array() * ob.array()).rowwise().sum();
      // dS = P ∘ (dP - delta); dQ += scale·dS·K; dK += scale·dSᵀ·Q; dV += Pᵀ·dO.
      dp = (p.array() * (dp.colwise() - delta).array()).matrix();
      Map dqb = rows_of(dq, b, s.q_off, s.q_len, h);
      Map dkb = rows_of(dk, b, s.kv_off, s.kv_len, kh);
      Map dvb = rows_of(dv, b, s.kv_off, s.kv_len, kh);
      dqb.noalias() += s.scale * (dp * kb);
      dkb.noalias() += s.scale * (dp.transpose() * qb);
      dvb.noalias() += p.transpose() * dob;
    }
  }
}

}  // namespace cpscope::rt::host
