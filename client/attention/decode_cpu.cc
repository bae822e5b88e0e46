// CPU decode over keep-indices: the reference path of the client.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "attention_internal.h"

namespace cab::attention::internal {

void WidenAll(const TensorView& t, std::vector<float>* out);

absl::StatusOr<AttentionResult> DecodeCpu(const TensorView& qv, const TensorView& kv, const TensorView& vv,
                                          const KeepIndices* keep, const DecodeShape& s) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<float> q, k, v;
  WidenAll(qv, &q);
  WidenAll(kv, &k);
  WidenAll(vv, &v);
  const int D = s.head_dim, T = s.q_len, group = s.q_heads / s.kv_heads;
  const int64_t N = s.tokens;
  AttentionResult res;
  res.out.shape = {s.batch, s.q_heads, T, D};
  res.out.data.assign(static_cast<size_t>(s.batch) * s.q_heads * T * D, 0.f);
  ParallelFor(static_cast<int64_t>(s.batch) * s.q_heads, [&](int64_t bh) {
    const int b = static_cast<int>(bh / s.q_heads), h = static_cast<int>(bh % s.q_heads);
    const int hk = h / group;
    const int64_t* idx = keep ? keep->Row(b, hk) : nullptr;
    const float* kh = k.data() + (static_cast<int64_t>(b) * s.kv_heads + hk) * N * D;
    const float* vh = v.data() + (static_cast<int64_t>(b) * s.kv_heads + hk) * N * D;
    std::vector<float> p(s.keep);
    std::vector<double> acc(D);
    for (int t = 0; t < T; ++t) {
      const float* qt = q.data() + (bh * T + t) * D;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t e = 0; e < s.keep; ++e) {
        const float* kt = kh + (idx ? idx[e] : e) * D;
        float dot = 0;
        for (int d = 0; d < D; ++d) dot += qt[d] * kt[d];
        p[e] = dot * s.scale;
        mx = std::max(mx, p[e]);
      }
      double sum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t e = 0; e < s.keep; ++e) {
        const float w = std::exp(p[e] - mx);
        sum += w;
        const float* vt = vh + (idx ? idx[e] : e) * D;
        for (int d = 0; d < D; ++d) acc[d] += w * vt[d];
      }
      float* ot = res.out.data.data() + (bh * T + t) * D;
      for (int d = 0; d < D; ++d) ot[d] = static_cast<float>(acc[d] / sum);
    }
  });
  res.device = "cpu";
  res.kernel_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return res;
}

}  // namespace cab::attention::internal
