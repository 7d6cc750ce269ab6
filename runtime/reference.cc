#include "runtime/reference.h"

#include "sim/error.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace cpscope::rt {
namespace {

struct Dims {
  std::int64_t B, S, H, Hkv, D;
  explicit Dims(const Workload& w) : B(w.batch), S(w.seq), H(w.heads), Hkv(w.kv_heads), D(w.head_dim) {}
  std::size_t q(std::int64_t b, std::int64_t t, std::int64_t h) const {
    return static_cast<std::size_t>(((b * S + t) * H + h) * D);
  }
  std::size_t kv(std::int64_t b, std::int64_t t, std::int64_t h) const {
    return static_cast<std::size_t>(((b * S + t) * Hkv + h) * D);
  }
  std::size_t row(std::int64_t b, std::int64_t t, std::int64_t h) const {
    return static_cast<std::size_t>((b * S + t) * H + h);
  }
};

bool visible(const Workload& w, std::int64_t i, std::int64_t j) { return w.mask == Mask::Full || j <= i; }

double dot(const double* a, const double* b, std::int64_t n) {
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

const std::vector<double>& input_tensor(const AttentionData& d, RankLayout::Source s) {
  switch (s) {
    case RankLayout::Source::Q: return d.q;
    case RankLayout::Source::K: return d.k;
    case RankLayout::Source::V: return d.v;
    case RankLayout::Source::O: return d.o;
    case RankLayout::Source::Lse: return d.lse;
    case RankLayout::Source::Do: return d.dout;
  }
  throw InternalError("unknown input source");
}

double input_value(std::uint64_t seed, InputTensor which, std::int64_t index) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + (static_cast<std::uint64_t>(which) << 58) +
                    static_cast<std::uint64_t>(index);
  x += 0x9E3779B97F4A7C15ull;  // splitmix64
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<double>(x >> 11) * 0x1.0p-52 - 1.0;  // 53 random bits -> [-1, 1)
}

AttentionData random_inputs(const Workload& w, std::uint64_t seed) {
  const Dims d(w);
  auto fill = [&](InputTensor which, std::int64_t n) {
    std::vector<double> v(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = input_value(seed, which, i);
    return v;
  };
  AttentionData a;
  a.q = fill(InputTensor::Q, d.B * d.S * d.H * d.D);
  a.k = fill(InputTensor::K, d.B * d.S * d.Hkv * d.D);
  a.v = fill(InputTensor::V, d.B * d.S * d.Hkv * d.D);
  a.dout = fill(InputTensor::Do, d.B * d.S * d.H * d.D);
  return a;
}

void reference_forward(const Workload& w, AttentionData& a) {
  const Dims d(w);
  const std::int64_t ratio = d.H / d.Hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
  a.o.assign(a.q.size(), 0.0);
  a.lse.assign(static_cast<std::size_t>(d.B * d.S * d.H), 0.0);
  std::vector<double> s(static_cast<std::size_t>(d.S));
  for (std::int64_t b = 0; b < d.B; ++b)
    for (std::int64_t h = 0; h < d.H; ++h)
      for (std::int64_t i = 0; i < d.S; ++i) {
        double m = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < d.S; ++j) {
          if (!visible(w, i, j)) continue;
          s[j] = scale * dot(&a.q[d.q(b, i, h)], &a.k[d.kv(b, j, h / ratio)], d.D);
          m = std::max(m, s[j]);
        }
        double sum = 0;
        for (std::int64_t j = 0; j < d.S; ++j)
          if (visible(w, i, j)) sum += std::exp(s[j] - m);
        double* o = &a.o[d.q(b, i, h)];
        for (std::int64_t j = 0; j < d.S; ++j) {
          if (!visible(w, i, j)) continue;
          const double p = std::exp(s[j] - m) / sum;
          const double* v = &a.v[d.kv(b, j, h / ratio)];
          for (std::int64_t x = 0; x < d.D; ++x) o[x] += p * v[x];
        }
        a.lse[d.row(b, i, h)] = m + std::log(sum);
      }
}

void reference_backward(const Workload& w, AttentionData& a) {
  const Dims d(w);
  const std::int64_t ratio = d.H / d.Hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
  a.dq.assign(a.q.size(), 0.0);
  a.dk.assign(a.k.size(), 0.0);
  a.dv.assign(a.v.size(), 0.0);
  for (std::int64_t b = 0; b < d.B; ++b)
    for (std::int64_t h = 0; h < d.H; ++h)
      for (std::int64_t i = 0; i < d.S; ++i) {
        const double* q = &a.q[d.q(b, i, h)];
        const double* dout = &a.dout[d.q(b, i, h)];
        const double delta = dot(dout, &a.o[d.q(b, i, h)], d.D);
        const double lse = a.lse[d.row(b, i, h)];
        for (std::int64_t j = 0; j < d.S; ++j) {
          if (!visible(w, i, j)) continue;
          const std::size_t kj = d.kv(b, j, h / ratio);
          const double p = std::exp(scale * dot(q, &a.k[kj], d.D) - lse);
          const double ds = p * (dot(dout, &a.v[kj], d.D) - delta);
          for (std::int64_t x = 0; x < d.D; ++x) {
            a.dq[d.q(b, i, h) + static_cast<std::size_t>(x)] += scale * ds * a.k[kj + static_cast<std::size_t>(x)];
            a.dk[kj + static_cast<std::size_t>(x)] += scale * ds * q[x];
            a.dv[kj + static_cast<std::size_t>(x)] += p * dout[x];
          }
        }
      }
}

double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return den == 0 ? num : num / den;
}

}  // namespace cpscope::rt
