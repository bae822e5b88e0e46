// Shared by the selection kernels (select_rows.cu, select_rows_warp.cu): edge curvature and the
// serial "add one block" rule. Both files are compiled with --fmad=false so that F rounds exactly as
// the CPU's float expression.
#pragma once

#include "device_util.cuh"

namespace cab::cuda {

__device__ __forceinline__ float Affinity(const GraphBuffers& g, const DeviceMaskParams& p, int64_t head_row0, int i, int j) {
  if (j >= CandidateCount(p, g.blocks, i)) return 0.f;
  const int64_t row = head_row0 + i;
  return expf(g.scores[row * g.blocks + j] - g.row_max[row]) * g.row_inv[row];
}

// F of edge (a, b) with degrees da, db and t triangles, computed as the CPU does with the lower
// index first.
__device__ __forceinline__ float EdgeCurvatureOf(const GraphBuffers& g, const DeviceMaskParams& p, int64_t head_row0, int a,
                                                 int b, int da, int db, int t) {
  const int i = min(a, b), j = max(a, b);
  const float di = static_cast<float>(a < b ? da : db), dj = static_cast<float>(a < b ? db : da);
  const float dmax = fmaxf(di, dj), dmin = fminf(di, dj);
  const float tf = static_cast<float>(t);
  switch (p.curvature) {
    case static_cast<int>(CurvatureKind::kBalanced):
      return 2.f / di + 2.f / dj - 2.f + 2.f * tf / dmax + tf / dmin;
    case static_cast<int>(CurvatureKind::kForman):
      return 4.f - di - dj + 3.f * tf;
    case static_cast<int>(CurvatureKind::kDirectRedundancy):
      return fmaxf(Affinity(g, p, head_row0, i, j), Affinity(g, p, head_row0, j, i)) - p.lambda * tf / dmax;
  }
  return __int_as_float(0x7fc00000);
}

// The same with the degrees from g.degree.
__device__ __forceinline__ float EdgeCurvature(const GraphBuffers& g, const DeviceMaskParams& p, int64_t head_row0, int a, int b, int t) {
  return EdgeCurvatureOf(g, p, head_row0, a, b, g.degree[head_row0 + a], g.degree[head_row0 + b], t);
}

__device__ __forceinline__ bool IsTaken(const uint32_t* taken, int j) { return (taken[j / 32] >> (j % 32)) & 1u; }

// One thread only: adds j when it is a candidate, untaken and the count is under `budget`.
__device__ __forceinline__ bool AddSerial(uint32_t* taken, int* size, int budget, int n, int j) {
  if (j < 0 || j >= n || IsTaken(taken, j) || *size >= budget) return false;
  taken[j / 32] |= 1u << (j % 32);
  ++*size;
  return true;
}

// cab's local share of a row budget k (sinks and the local window fill it first).
__device__ __forceinline__ int CabLocalShare(const DeviceMaskParams& p, int k) {
  return max(1, min(k, static_cast<int>(llround(static_cast<double>(p.local_ratio) * k))));
}

// One thread only: what every row keeps first. The diagonal (every policy), then for cab the sinks
// and the nearest earlier blocks until the local share is reached.
__device__ __forceinline__ void SeedRowSerial(const DeviceMaskParams& p, uint32_t* taken, int* size, int i, int n, int k) {
  AddSerial(taken, size, k, n, i);
  if (p.policy != static_cast<int>(MaskPolicy::kCab)) return;
  const int local = CabLocalShare(p, k);
  for (int j = 0; j < p.sink_blocks && *size < local; ++j) AddSerial(taken, size, local, n, j);
  for (int j = i - 1; j >= 0 && j >= i - p.local_blocks && *size < local; --j) AddSerial(taken, size, local, n, j);
}

// The warp-per-row selection (select_rows_warp.cu): causal cab / magnitude / quest, degree <= 32.
bool WarpSelectApplies(const DeviceMaskParams& p);
absl::Status LaunchWarpSelect(const GraphBuffers& g, const DeviceMaskParams& p, int row_begin, int rows,
                              uint32_t* keep, cudaStream_t stream);

}  // namespace cab::cuda
