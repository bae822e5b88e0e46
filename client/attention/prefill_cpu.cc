// CPU block-sparse prefill: the reference path of the client (fp32 arithmetic, any block size).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "attention_internal.h"

namespace cab::attention::internal {

void WidenAll(const TensorView& t, std::vector<float>* out) {
  out->resize(static_cast<size_t>(t.numel()));
  ToFloat(t, 0, t.numel(), out->data());
}

absl::StatusOr<AttentionResult> PrefillCpu(const TensorView& qv, const TensorView& kv, const TensorView& vv,
                                           const BlockMask& mask, const PrefillShape& s, bool causal) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<float> q, k, v;
  WidenAll(qv, &q);
  WidenAll(kv, &k);
  WidenAll(vv, &v);
  const int D = s.head_dim, group = s.q_heads / s.kv_heads;
  const int64_t N = s.tokens;
  AttentionResult res;
  res.out.shape = {s.batch, s.q_heads, N, D};
  res.out.data.assign(static_cast<size_t>(s.batch) * s.q_heads * N * D, 0.f);
  // One task per (batch, head, query block): the block's kept key tokens are gathered once.
  const int64_t tasks = static_cast<int64_t>(s.batch) * s.q_heads * s.blocks;
  ParallelFor(tasks, [&](int64_t task) {
    const int i = static_cast<int>(task % s.blocks);
    const int h = static_cast<int>((task / s.blocks) % s.q_heads);
    const int b = static_cast<int>(task / (static_cast<int64_t>(s.blocks) * s.q_heads));
    const int mh = s.mask_heads == 1 ? 0 : h;
    const int64_t r = mask.RowIndex(b, mh, i);
    std::vector<int64_t> keys;
    for (int64_t e = mask.row_offsets[r]; e < mask.row_offsets[r + 1]; ++e) {
      const int64_t j0 = static_cast<int64_t>(mask.col_indices[e]) * s.block_size;
      for (int64_t t = j0; t < std::min(N, j0 + s.block_size); ++t) keys.push_back(t);
    }
    const float* kh = k.data() + (static_cast<int64_t>(b) * s.kv_heads + h / group) * N * D;
    const float* vh = v.data() + (static_cast<int64_t>(b) * s.kv_heads + h / group) * N * D;
    std::vector<float> p(keys.size());
    std::vector<double> acc(D);
    const int64_t t_end = std::min(N, static_cast<int64_t>(i + 1) * s.block_size);
    for (int64_t t = static_cast<int64_t>(i) * s.block_size; t < t_end; ++t) {
      const float* qt = q.data() + ((static_cast<int64_t>(b) * s.q_heads + h) * N + t) * D;
      float mx = -std::numeric_limits<float>::infinity();
      size_t visible = keys.size();
      if (causal) visible = std::upper_bound(keys.begin(), keys.end(), t) - keys.begin();
      for (size_t e = 0; e < visible; ++e) {
        const float* kt = kh + keys[e] * D;
        float dot = 0;
        for (int d = 0; d < D; ++d) dot += qt[d] * kt[d];
        p[e] = dot * s.scale;
        mx = std::max(mx, p[e]);
      }
      float* ot = res.out.data.data() + ((static_cast<int64_t>(b) * s.q_heads + h) * N + t) * D;
      if (visible == 0) continue;  // no visible key: the row stays zero
      double sum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (size_t e = 0; e < visible; ++e) {
        const float w = std::exp(p[e] - mx);
        sum += w;
        const float* vt = vh + keys[e] * D;
        for (int d = 0; d < D; ++d) acc[d] += w * vt[d];
      }
      for (int d = 0; d < D; ++d) ot[d] = static_cast<float>(acc[d] / sum);
    }
  });
  res.device = "cpu";
  res.kernel_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return res;
}

}  // namespace cab::attention::internal
