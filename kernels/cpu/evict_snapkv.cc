// snapkv eviction (SPEC 4): the last W queries (the observation window, positions N-W .. N-1) vote
// for the prefix tokens 0 .. N-W-1. Each window query of each query head of the GQA group takes a
// softmax of q.k / sqrt(D) over the prefix keys; the votes are summed, smoothed with a centred 1-D
// max pool of width snapkv_pool (clipped at the ends), and the window's own positions are kept
// (the most recent `keep` of them if the window is larger) plus the prefix tokens of the highest
// pooled vote (ties: lower index).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "evict_head.h"

namespace cab::cpu {

std::vector<int64_t> EvictSnapKV(const EvictHeadInput& in, const EvictParams& p, int64_t keep) {
  const int64_t n = in.tokens, w = in.window_len, prefix = n - w;
  TokenPicker picker(n, keep);
  picker.AddRecent(std::min(w, keep));
  if (picker.Full() || prefix <= 0) return picker.Finish();

  // logits [queries, prefix] = window [queries, D] . keys[0:prefix]^T / sqrt(D)
  const int64_t queries = static_cast<int64_t>(in.group) * w;
  std::vector<float> logits(static_cast<size_t>(queries * prefix));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(queries), static_cast<int>(prefix), in.dim,
              1.0f / std::sqrt(static_cast<float>(in.dim)), in.window, in.dim, in.keys, in.dim, 0.0f, logits.data(),
              static_cast<int>(prefix));

  std::vector<double> votes(prefix, 0.0);
  for (int64_t q = 0; q < queries; ++q) {
    const float* row = logits.data() + q * prefix;
    const float top = *std::max_element(row, row + prefix);
    double sum = 0;
    for (int64_t j = 0; j < prefix; ++j) sum += std::exp(static_cast<double>(row[j]) - top);
    for (int64_t j = 0; j < prefix; ++j) votes[j] += std::exp(static_cast<double>(row[j]) - top) / sum;
  }

  const int64_t half = p.snapkv_pool / 2;
  std::vector<float> pooled(prefix);
  for (int64_t j = 0; j < prefix; ++j) {
    double best = votes[j];
    for (int64_t t = std::max<int64_t>(0, j - half); t <= std::min(prefix - 1, j + half); ++t) best = std::max(best, votes[t]);
    pooled[j] = static_cast<float>(best);
  }

  std::vector<int64_t> candidates(prefix);
  std::iota(candidates.begin(), candidates.end(), 0);
  picker.AddTop(std::move(candidates), pooled.data(), keep);
  return picker.Finish();
}

}  // namespace cab::cpu
