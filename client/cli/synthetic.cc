#include "synthetic.h"

#include <cstring>
#include <random>

namespace cab::cli {

OwnedTensor FromFloats(const std::vector<int64_t>& shape, DType dtype, const std::vector<float>& values) {
  OwnedTensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.bytes.resize(values.size() * DTypeSize(dtype));
  char* out = t.bytes.data();
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(out + 4 * i, &values[i], 4);
    } else {
      uint16_t h = dtype == DType::kF16 ? FloatToHalf(values[i]) : FloatToBF16(values[i]);
      std::memcpy(out + 2 * i, &h, 2);
    }
  }
  return t;
}

OwnedTensor RandomTensor(const std::vector<int64_t>& shape, DType dtype, uint64_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return FromFloats(shape, dtype, v);
}

}  // namespace cab::cli
