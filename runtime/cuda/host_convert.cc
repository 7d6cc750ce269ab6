#include "runtime/cuda/host_convert.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <stdexcept>

namespace cpscope::rt {

// The toolkit's conversions are host-callable; using them keeps host rounding identical to the device's.
// The *_raw structs are the toolkit's way in and out of the bit patterns.
std::uint16_t to_bf16_bits(float x) {
  const __nv_bfloat16_raw r = __float2bfloat16_rn(x);
  return r.x;
}

std::uint16_t to_fp16_bits(float x) {
  const __half_raw r = __float2half_rn(x);
  return r.x;
}

float from_bf16_bits(std::uint16_t bits) {
  __nv_bfloat16_raw r;
  r.x = bits;
  return __bfloat162float(__nv_bfloat16(r));
}

float from_fp16_bits(std::uint16_t bits) {
  __half_raw r;
  r.x = bits;
  return __half2float(__half(r));
}

std::int64_t element_bytes(kernels::DType dt) { return dt == kernels::DType::FP32 ? 4 : 2; }

double round_to(kernels::DType dt, double x) {
  const auto f = static_cast<float>(x);
  switch (dt) {
    case kernels::DType::BF16: return from_bf16_bits(to_bf16_bits(f));
    case kernels::DType::FP16: return from_fp16_bits(to_fp16_bits(f));
    case kernels::DType::FP32: return f;
  }
  throw std::logic_error("round_to: unknown DType");
}

void encode(kernels::DType dt, const std::vector<double>& values, std::vector<unsigned char>& out) {
  out.resize(values.size() * static_cast<std::size_t>(element_bytes(dt)));
  unsigned char* p = out.data();
  for (double v : values) {
    const auto f = static_cast<float>(v);
    if (dt == kernels::DType::FP32) {
      std::memcpy(p, &f, 4);
      p += 4;
    } else {
      const std::uint16_t b = dt == kernels::DType::BF16 ? to_bf16_bits(f) : to_fp16_bits(f);
      std::memcpy(p, &b, 2);
      p += 2;
    }
  }
}

std::vector<double> decode(kernels::DType dt, const unsigned char* in, std::int64_t count) {
  std::vector<double> out(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    if (dt == kernels::DType::FP32) {
      float f;
      std::memcpy(&f, in + 4 * i, 4);
      out[static_cast<std::size_t>(i)] = f;
    } else {
      std::uint16_t b;
      std::memcpy(&b, in + 2 * i, 2);
      out[static_cast<std::size_t>(i)] = dt == kernels::DType::BF16 ? from_bf16_bits(b) : from_fp16_bits(b);
    }
  }
  return out;
}

}  // namespace cpscope::rt
