// S and A of one head: the O(M^2 D) part of the predictor (SPEC 2).
#include "affinity_scores.h"

#include <cblas.h>

#include <cmath>
#include <limits>

namespace cab {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Number of support columns of row i: j < SupportEnd(i).
inline int SupportEnd(int i, int M, bool causal) { return causal ? i + 1 : M; }

void MaskOutsideSupport(int M, bool causal, float* s) {
  if (!causal) return;
  for (int i = 0; i < M; ++i) {
    float* row = s + static_cast<size_t>(i) * M;
    for (int j = i + 1; j < M; ++j) row[j] = kNegInf;
  }
}

// sum_d max(q_d * lo_d, q_d * hi_d). A single float accumulator would be a serial chain the
// compiler may not reorder (no -ffast-math); kLanes independent partial sums let it use vector
// max/add across the lanes.
constexpr int kLanes = 8;
inline float QuestBound(const float* q, const float* lo, const float* hi, int D) {
  float acc[kLanes] = {};
  int d = 0;
  for (; d + kLanes <= D; d += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float a = q[d + l] * lo[d + l], b = q[d + l] * hi[d + l];
      acc[l] += a > b ? a : b;
    }
  }
  for (; d < D; ++d) {
    const float a = q[d] * lo[d], b = q[d] * hi[d];
    acc[0] += a > b ? a : b;
  }
  float sum = 0.f;
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  return sum;
}

}  // namespace

void DotScores(const float* q, const float* k, int M, int D, bool causal, float* s) {
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  // Full M x M product even when causal: the upper half is cheap next to a triangular split's
  // extra calls at the sizes served (M <= a few thousand), and is overwritten below.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, M, D, scale, q, D, k, D, 0.f, s, M);
  MaskOutsideSupport(M, causal, s);
}

void QuestScores(const float* q, const float* kmin, const float* kmax, int M, int D, bool causal, float* s) {
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  for (int i = 0; i < M; ++i) {
    const float* qi = q + static_cast<size_t>(i) * D;
    float* row = s + static_cast<size_t>(i) * M;
    const int end = SupportEnd(i, M, causal);
    for (int j = 0; j < end; ++j) {
      row[j] = QuestBound(qi, kmin + static_cast<size_t>(j) * D, kmax + static_cast<size_t>(j) * D, D) * scale;
    }
    for (int j = end; j < M; ++j) row[j] = kNegInf;
  }
}

void RowSoftmax(const float* s, int M, bool causal, float* a) {
  for (int i = 0; i < M; ++i) {
    const float* srow = s + static_cast<size_t>(i) * M;
    float* arow = a + static_cast<size_t>(i) * M;
    const int end = SupportEnd(i, M, causal);
    float mx = kNegInf;
    for (int j = 0; j < end; ++j) mx = srow[j] > mx ? srow[j] : mx;
    double sum = 0;
    for (int j = 0; j < end; ++j) {
      arow[j] = std::exp(srow[j] - mx);
      sum += arow[j];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int j = 0; j < end; ++j) arow[j] *= inv;
    for (int j = end; j < M; ++j) arow[j] = 0.f;
  }
}

}  // namespace cab
