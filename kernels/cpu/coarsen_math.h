// Shared by the CPU coarsening (coarsen.cc) and the max-L2 picker (maxl2_representatives.cc): the
// bf16 widening and the token norm that decide a block's representative, and the non-finite scan of
// an input. One definition, so both pick the same token.
#pragma once

#include <cstdint>
#include <cstring>

#include "cab/tensor.h"

namespace cab::coarsen_internal {

// bf16 is the top half of a float: widened inline (BF16ToFloat's result, without a call per element).
inline float Bf16Bits(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Summed in double over four independent lanes (a vectorisable reduction without -ffast-math).
inline double SquaredNorm(const float* v, int dim) {
  double acc[4] = {0, 0, 0, 0};
  int d = 0;
  for (; d + 4 <= dim; d += 4) {
    for (int l = 0; l < 4; ++l) acc[l] += static_cast<double>(v[d + l]) * v[d + l];
  }
  for (; d < dim; ++d) acc[0] += static_cast<double>(v[d]) * v[d];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// Index of the first element whose exponent bits are all ones (inf or NaN), or -1. Works on the
// raw bits of any dtype; the scan without an early exit vectorises, and the index is looked for
// only when something is wrong.
template <typename Bits>
inline int64_t FirstAllOnesExponent(const Bits* p, int64_t n, Bits mask) {
  int bad[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) bad[l] |= (p[i + l] & mask) == mask;
  }
  for (; i < n; ++i) bad[0] |= (p[i] & mask) == mask;
  int any = 0;
  for (int l = 0; l < 8; ++l) any |= bad[l];
  if (any == 0) return -1;
  for (i = 0; i < n; ++i) {
    if ((p[i] & mask) == mask) return i;
  }
  return -1;
}

inline int64_t FirstNonFinite(const TensorView& x) {
  switch (x.dtype) {
    case DType::kF32:
      return FirstAllOnesExponent(static_cast<const uint32_t*>(x.data), x.numel(), uint32_t{0x7f800000});
    case DType::kF16:
      return FirstAllOnesExponent(static_cast<const uint16_t*>(x.data), x.numel(), uint16_t{0x7c00});
    case DType::kBF16:
      return FirstAllOnesExponent(static_cast<const uint16_t*>(x.data), x.numel(), uint16_t{0x7f80});
  }
  return -1;
}

}  // namespace cab::coarsen_internal
