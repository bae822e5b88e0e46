#include "tensors.h"

#include <cstring>
#include <random>

namespace cab_it {

HostTensor RandomTokens(const std::vector<int64_t>& shape, uint64_t seed) {
  HostTensor t{shape, {}};
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  t.values.resize(static_cast<size_t>(n));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> scale(0.5f, 2.f);
  const int64_t d = shape.empty() ? 1 : shape.back();
  for (int64_t row = 0; row < n / d; ++row) {
    const float s = scale(rng);
    for (int64_t i = 0; i < d; ++i) t.values[static_cast<size_t>(row * d + i)] = s * normal(rng);
  }
  return t;
}

cab::v1::DType WireDType(cab::DType d) {
  switch (d) {
    case cab::DType::kF32: return cab::v1::DTYPE_FP32;
    case cab::DType::kF16: return cab::v1::DTYPE_FP16;
    case cab::DType::kBF16: return cab::v1::DTYPE_BF16;
  }
  return cab::v1::DTYPE_UNSPECIFIED;
}

cab::v1::Tensor ToWire(const HostTensor& t, cab::DType d) {
  cab::v1::Tensor out;
  out.set_dtype(WireDType(d));
  for (int64_t s : t.shape) out.add_shape(s);
  std::string bytes;
  if (d == cab::DType::kF32) {
    bytes.resize(t.values.size() * 4);
    std::memcpy(bytes.data(), t.values.data(), bytes.size());  // the test hosts are little-endian
  } else {
    bytes.resize(t.values.size() * 2);
    for (size_t i = 0; i < t.values.size(); ++i) {
      const uint16_t h = d == cab::DType::kF16 ? cab::FloatToHalf(t.values[i]) : cab::FloatToBF16(t.values[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  out.set_data(std::move(bytes));
  return out;
}

HostTensor RoundTrip(const HostTensor& t, cab::DType d) {
  HostTensor out = t;
  for (float& v : out.values) {
    if (d == cab::DType::kF16) v = cab::HalfToFloat(cab::FloatToHalf(v));
    if (d == cab::DType::kBF16) v = cab::BF16ToFloat(cab::FloatToBF16(v));
  }
  return out;
}

cab::TensorView ViewOf(const cab::v1::Tensor& t) {
  cab::TensorView v;
  v.data = t.data().data();
  v.dtype = t.dtype() == cab::v1::DTYPE_FP16 ? cab::DType::kF16
            : t.dtype() == cab::v1::DTYPE_BF16 ? cab::DType::kBF16
                                               : cab::DType::kF32;
  v.shape.assign(t.shape().begin(), t.shape().end());
  return v;
}

HostTensor SliceTokens(const HostTensor& x, int64_t start, int64_t n) {
  const int64_t bh = x.shape[0] * x.shape[1], N = x.shape[2], D = x.shape[3];
  HostTensor out{{x.shape[0], x.shape[1], n, D}, {}};
  out.values.resize(static_cast<size_t>(bh * n * D));
  for (int64_t r = 0; r < bh; ++r) {
    std::memcpy(out.values.data() + r * n * D, x.values.data() + (r * N + start) * D, sizeof(float) * n * D);
  }
  return out;
}

NaiveReps NaiveRepresentatives(const HostTensor& x, int block_size) {
  const int64_t B = x.shape[0], H = x.shape[1], N = x.shape[2], D = x.shape[3];
  const int64_t M = (N + block_size - 1) / block_size;
  NaiveReps r;
  for (HostTensor* t : {&r.maxl2, &r.kmin, &r.kmax}) {
    t->shape = {B, H, M, D};
    t->values.assign(static_cast<size_t>(B * H * M * D), 0.f);
  }
  for (int64_t bh = 0; bh < B * H; ++bh) {
    for (int64_t m = 0; m < M; ++m) {
      const int64_t first = m * block_size, last = std::min(N, first + block_size);
      int64_t best = first;
      double best_norm = -1;
      float* mn = &r.kmin.values[static_cast<size_t>((bh * M + m) * D)];
      float* mx = &r.kmax.values[static_cast<size_t>((bh * M + m) * D)];
      for (int64_t t = first; t < last; ++t) {
        const float* v = &x.values[static_cast<size_t>((bh * N + t) * D)];
        double norm = 0;
        for (int64_t d = 0; d < D; ++d) {
          norm += static_cast<double>(v[d]) * v[d];
          mn[d] = t == first ? v[d] : std::min(mn[d], v[d]);
          mx[d] = t == first ? v[d] : std::max(mx[d], v[d]);
        }
        if (norm > best_norm) {  // strict: ties keep the lowest index
          best_norm = norm;
          best = t;
        }
      }
      std::memcpy(&r.maxl2.values[static_cast<size_t>((bh * M + m) * D)], &x.values[static_cast<size_t>((bh * N + best) * D)],
                  sizeof(float) * D);
    }
  }
  return r;
}

}  // namespace cab_it
