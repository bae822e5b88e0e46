// Attention recall: how much of the dense softmax mass a mask (or keep set) preserves. Computed
// on the CPU from the inputs, independently of the kernels that ran.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>

#include "attention_internal.h"

namespace cab::attention {
namespace {
void Widen(const TensorView& t, std::vector<float>* out) {
  out->resize(static_cast<size_t>(t.numel()));
  ToFloat(t, 0, t.numel(), out->data());
}
}  // namespace

absl::StatusOr<double> AttentionRecall(const TensorView& qv, const TensorView& kv, const BlockMask& mask,
                                       const PrefillOptions& options) {
  auto shape = internal::CheckPrefill(qv, kv, kv, mask, options);
  if (!shape.ok()) return shape.status();
  const internal::PrefillShape s = *shape;
  std::vector<float> q, k;
  Widen(qv, &q);
  Widen(kv, &k);
  const int D = s.head_dim, group = s.q_heads / s.kv_heads;
  const int64_t N = s.tokens;
  std::mutex mu;
  double total = 0;
  internal::ParallelFor(static_cast<int64_t>(s.batch) * s.q_heads, [&](int64_t bh) {
    const int b = static_cast<int>(bh / s.q_heads), h = static_cast<int>(bh % s.q_heads);
    const int mh = s.mask_heads == 1 ? 0 : h;
    const float* kh = k.data() + (static_cast<int64_t>(b) * s.kv_heads + h / group) * N * D;
    std::vector<float> p(N);
    std::vector<char> kept(s.blocks);
    double local = 0;
    for (int i = 0; i < s.blocks; ++i) {
      std::fill(kept.begin(), kept.end(), 0);
      const int64_t r = mask.RowIndex(b, mh, i);
      for (int64_t e = mask.row_offsets[r]; e < mask.row_offsets[r + 1]; ++e) kept[mask.col_indices[e]] = 1;
      for (int64_t t = static_cast<int64_t>(i) * s.block_size; t < std::min(N, int64_t(i + 1) * s.block_size); ++t) {
        const float* qt = q.data() + (bh * N + t) * D;
        const int64_t visible = options.causal ? t + 1 : N;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t u = 0; u < visible; ++u) {
          float dot = 0;
          for (int d = 0; d < D; ++d) dot += qt[d] * kh[u * D + d];
          p[u] = dot * s.scale;
          mx = std::max(mx, p[u]);
        }
        double all = 0, in = 0;
        for (int64_t u = 0; u < visible; ++u) {
          const double w = std::exp(double(p[u] - mx));
          all += w;
          if (kept[u / s.block_size]) in += w;
        }
        local += in / all;
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    total += local;
  });
  return total / (static_cast<double>(s.batch) * s.q_heads * N);
}

absl::StatusOr<double> DecodeRecall(const TensorView& qv, const TensorView& kv, const KeepIndices* keep,
                                    const DecodeOptions& options) {
  auto shape = internal::CheckDecode(qv, kv, kv, keep, options);
  if (!shape.ok()) return shape.status();
  const internal::DecodeShape s = *shape;
  std::vector<float> q, k;
  Widen(qv, &q);
  Widen(kv, &k);
  const int D = s.head_dim, group = s.q_heads / s.kv_heads;
  const int64_t N = s.tokens;
  double total = 0;
  std::vector<float> p(N);
  std::vector<char> kept(N);
  for (int b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.q_heads; ++h) {
      const int hk = h / group;
      std::fill(kept.begin(), kept.end(), keep ? 0 : 1);
      if (keep) for (int64_t e = 0; e < s.keep; ++e) kept[keep->Row(b, hk)[e]] = 1;
      const float* kh = k.data() + (static_cast<int64_t>(b) * s.kv_heads + hk) * N * D;
      for (int t = 0; t < s.q_len; ++t) {
        const float* qt = q.data() + ((static_cast<int64_t>(b) * s.q_heads + h) * s.q_len + t) * D;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t u = 0; u < N; ++u) {
          float dot = 0;
          for (int d = 0; d < D; ++d) dot += qt[d] * kh[u * D + d];
          p[u] = dot * s.scale;
          mx = std::max(mx, p[u]);
        }
        double all = 0, in = 0;
        for (int64_t u = 0; u < N; ++u) {
          const double w = std::exp(double(p[u] - mx));
          all += w;
          if (kept[u]) in += w;
        }
        total += in / all;
      }
    }
  }
  return total / (static_cast<double>(s.batch) * s.q_heads * s.q_len);
}

}  // namespace cab::attention
