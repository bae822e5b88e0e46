// Private to kernels/cpu: block scores S and affinity A of one head (SPEC 2), on raw [M, D] rows.
#pragma once

namespace cab {

// s[i * M + j] = q_i . k_j / sqrt(D) on the support (j <= i when causal, all j otherwise),
// -inf elsewhere. One sgemm (OpenBLAS).
void DotScores(const float* q, const float* k, int M, int D, bool causal, float* s);

// Quest's bound: s[i * M + j] = sum_d max(q_id * kmin_jd, q_id * kmax_jd) / sqrt(D) on the
// support, -inf elsewhere.
void QuestScores(const float* q, const float* kmin, const float* kmax, int M, int D, bool causal, float* s);

// a = row softmax of s over the support, 0 elsewhere (each row of the support sums to 1).
void RowSoftmax(const float* s, int M, bool causal, float* a);

}  // namespace cab
