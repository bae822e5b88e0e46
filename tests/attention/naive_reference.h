// Independent double-precision references for the attention tests: they expand a block mask to a
// token-level visibility test and evaluate softmax(QK^T * scale) V directly, one query at a time.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "cab/attention/attention.h"
#include "cab/evict.h"
#include "cab/mask.h"
#include "cab/tensor.h"

namespace cab::attention::testing {

// Host tensor of any dtype holding random values in [-amp, amp], already rounded to the dtype.
struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  TensorView view() const { return TensorView{bytes.data(), dtype, shape}; }
  std::vector<double> AsDouble() const {
    TensorView v = view();
    std::vector<float> f(static_cast<size_t>(v.numel()));
    ToFloat(v, 0, v.numel(), f.data());
    return std::vector<double>(f.begin(), f.end());
  }
};

inline HostTensor RandomTensor(std::mt19937_64& rng, DType dtype, std::vector<int64_t> shape, float amp) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = shape;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  t.bytes.resize(static_cast<size_t>(n) * DTypeSize(dtype));
  std::uniform_real_distribution<float> u(-amp, amp);
  for (int64_t i = 0; i < n; ++i) {
    const float x = u(rng);
    if (dtype == DType::kF32) {
      reinterpret_cast<float*>(t.bytes.data())[i] = x;
    } else {
      reinterpret_cast<uint16_t*>(t.bytes.data())[i] = dtype == DType::kF16 ? FloatToHalf(x) : FloatToBF16(x);
    }
  }
  return t;
}

// A random causal (or full) mask; keep_prob per off-diagonal block, diagonal always kept.
inline BlockMask RandomMask(std::mt19937_64& rng, int batch, int heads, int blocks, bool causal, double keep_prob,
                            bool keep_diagonal = true) {
  BlockMask m;
  m.batch = batch;
  m.heads = heads;
  m.rows = m.cols = blocks;
  m.row_offsets.push_back(0);
  std::bernoulli_distribution keep(keep_prob);
  for (int64_t r = 0; r < int64_t(batch) * heads * blocks; ++r) {
    const int i = static_cast<int>(r % blocks);
    for (int j = 0; j < (causal ? i + 1 : blocks); ++j) {
      if ((j == i && keep_diagonal) || (j != i && keep(rng))) m.col_indices.push_back(j);
    }
    m.row_offsets.push_back(static_cast<int64_t>(m.col_indices.size()));
  }
  return m;
}

// out [B, Hq, N, D] in double.
inline std::vector<double> NaivePrefill(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                                        const BlockMask& mask, int block_size, bool causal) {
  const auto Q = q.AsDouble(), K = k.AsDouble(), V = v.AsDouble();
  const int64_t B = q.shape[0], Hq = q.shape[1], N = q.shape[2], D = q.shape[3], Hkv = k.shape[1];
  std::vector<double> out(static_cast<size_t>(B * Hq * N * D), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / (Hq / Hkv), mh = mask.heads == 1 ? 0 : h;
      for (int64_t t = 0; t < N; ++t) {
        const int64_t r = mask.RowIndex(int(b), int(mh), int(t / block_size));
        std::set<int64_t> blocks(mask.col_indices.begin() + mask.row_offsets[r],
                                 mask.col_indices.begin() + mask.row_offsets[r + 1]);
        std::vector<int64_t> keys;
        for (int64_t u = 0; u < N; ++u) {
          if (blocks.count(u / block_size) && (!causal || u <= t)) keys.push_back(u);
        }
        if (keys.empty()) continue;
        std::vector<double> s(keys.size());
        double mx = -INFINITY;
        for (size_t e = 0; e < keys.size(); ++e) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += Q[((b * Hq + h) * N + t) * D + d] * K[((b * Hkv + hk) * N + keys[e]) * D + d];
          s[e] = dot / std::sqrt(double(D));
          mx = std::max(mx, s[e]);
        }
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (size_t e = 0; e < keys.size(); ++e) {
          for (int64_t d = 0; d < D; ++d) {
            out[((b * Hq + h) * N + t) * D + d] += s[e] / sum * V[((b * Hkv + hk) * N + keys[e]) * D + d];
          }
        }
      }
    }
  }
  return out;
}

// out [B, Hq, T, D]; keep == nullptr: all tokens.
inline std::vector<double> NaiveDecode(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                                       const KeepIndices* keep) {
  const auto Q = q.AsDouble(), K = k.AsDouble(), V = v.AsDouble();
  const int64_t B = q.shape[0], Hq = q.shape[1], T = q.shape[2], D = q.shape[3], Hkv = k.shape[1], N = k.shape[2];
  std::vector<double> out(static_cast<size_t>(B * Hq * T * D), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / (Hq / Hkv);
      std::vector<int64_t> keys;
      if (keep) {
        keys.assign(keep->Row(int(b), int(hk)), keep->Row(int(b), int(hk)) + keep->per_head);
      } else {
        for (int64_t u = 0; u < N; ++u) keys.push_back(u);
      }
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> s(keys.size());
        double mx = -INFINITY;
        for (size_t e = 0; e < keys.size(); ++e) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += Q[((b * Hq + h) * T + t) * D + d] * K[((b * Hkv + hk) * N + keys[e]) * D + d];
          s[e] = dot / std::sqrt(double(D));
          mx = std::max(mx, s[e]);
        }
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (size_t e = 0; e < keys.size(); ++e) {
          for (int64_t d = 0; d < D; ++d) out[((b * Hq + h) * T + t) * D + d] += s[e] / sum * V[((b * Hkv + hk) * N + keys[e]) * D + d];
        }
      }
    }
  }
  return out;
}

// ||got - want|| / ||want||; NaN anywhere (an unwritten, poisoned element) gives infinity.
inline double RelError(const std::vector<float>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Random ascending keep-indices, `keep` per (batch, kv head).
inline KeepIndices RandomKeep(std::mt19937_64& rng, int batch, int kv_heads, int64_t tokens, int64_t keep) {
  KeepIndices k;
  k.batch = batch;
  k.kv_heads = kv_heads;
  k.per_head = keep;
  for (int r = 0; r < batch * kv_heads; ++r) {
    std::vector<int64_t> all(tokens);
    for (int64_t i = 0; i < tokens; ++i) all[i] = i;
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(keep);
    std::sort(all.begin(), all.end());
    k.indices.insert(k.indices.end(), all.begin(), all.end());
  }
  return k;
}

inline uint64_t FreshSeed() { return (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}(); }

}  // namespace cab::attention::testing
