#include "cab/tensor.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cab {

size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

std::string DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "fp32";
    case DType::kF16: return "fp16";
    case DType::kBF16: return "bf16";
  }
  return "unknown";
}

absl::StatusOr<DType> ParseDType(const std::string& name) {
  if (name == "fp32" || name == "float32") return DType::kF32;
  if (name == "fp16" || name == "float16") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  return absl::InvalidArgumentError(absl::StrCat("dtype: unknown dtype '", name, "' (fp32, fp16, bf16)"));
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::Status CheckTensor(const TensorView& view, int rank, const std::string& what) {
  if (static_cast<int>(view.shape.size()) != rank) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected ", rank, " dimensions, got ",
                                                   view.shape.size(), " [", absl::StrJoin(view.shape, ", "), "]"));
  }
  for (size_t i = 0; i < view.shape.size(); ++i) {
    if (view.shape[i] <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": dimension ", i, " is ", view.shape[i], ", must be > 0"));
    }
  }
  if (view.data == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, ": no data"));
  return absl::OkStatus();
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0);  // inf / nan
  if (absx >= 0x477ff000u) return sign | 0x7c00;                                     // overflow
  if (absx < 0x38800000u) {                                                          // subnormal or zero
    if (absx < 0x33000000u) return sign;
    const uint32_t exp = absx >> 23;
    uint32_t mant = (absx & 0x7fffff) | 0x800000;
    const int shift = 126 - static_cast<int>(exp) + 14;  // to 10-bit subnormal mantissa
    uint32_t result = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (result & 1))) ++result;
    return sign | static_cast<uint16_t>(result);
  }
  uint32_t result = ((absx >> 23) - 127 + 15) << 10 | ((absx >> 13) & 0x3ff);
  const uint32_t rem = absx & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (result & 1))) ++result;
  return sign | static_cast<uint16_t>(result);
}

float BF16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToBF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet nan
  const uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

void ToFloat(const TensorView& view, int64_t offset, int64_t count, float* out) {
  switch (view.dtype) {
    case DType::kF32:
      std::memcpy(out, static_cast<const float*>(view.data) + offset, count * sizeof(float));
      return;
    case DType::kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(view.data) + offset;
      for (int64_t i = 0; i < count; ++i) out[i] = HalfToFloat(p[i]);
      return;
    }
    case DType::kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(view.data) + offset;
      for (int64_t i = 0; i < count; ++i) out[i] = BF16ToFloat(p[i]);
      return;
    }
  }
}

float TensorView::at(int64_t i) const {
  float f;
  ToFloat(*this, i, 1, &f);
  return f;
}

}  // namespace cab
