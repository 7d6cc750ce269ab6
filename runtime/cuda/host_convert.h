// Host-side element conversions between the host's doubles and the device tensors' element types
// (bf16, fp16, fp32), round to nearest even, so uploads, downloads and the reference see the same values.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels/attention.h"

namespace cpscope::rt {

std::uint16_t to_bf16_bits(float x);
std::uint16_t to_fp16_bits(float x);
float from_bf16_bits(std::uint16_t b);
float from_fp16_bits(std::uint16_t b);

// x rounded to `dt` and back (what a device tensor of that type holds).
double round_to(kernels::DType dt, double x);

// Bytes of one element of `dt`.
std::int64_t element_bytes(kernels::DType dt);

// Encodes `values` as `dt` elements into `out` (resized to values.size() * element_bytes(dt)).
void encode(kernels::DType dt, const std::vector<double>& values, std::vector<unsigned char>& out);
// Decodes `count` elements of `dt` from `in`.
std::vector<double> decode(kernels::DType dt, const unsigned char* in, std::int64_t count);

}  // namespace cpscope::rt
