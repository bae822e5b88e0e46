// Shared by the top-list kernels (top_lists.cu, top_lists_threshold.cu): how long each row's list is.
#pragma once

#include "device_util.cuh"

namespace cab::cuda {

// K of row `row`: the graph's r neighbours plus the diagonal (which the graph skips) and, for the
// ranked policies, the row budget, so that selection never reads S again. At most the support.
__device__ __forceinline__ int RowTopCount(const DeviceMaskParams& p, int blocks, int row, bool graph_only) {
  const int support = CandidateCount(p, blocks, row);
  int want = p.degree + 1;
  const bool ranked = p.policy == static_cast<int>(MaskPolicy::kCab) ||
                      p.policy == static_cast<int>(MaskPolicy::kMagnitude) ||
                      p.policy == static_cast<int>(MaskPolicy::kQuest);
  if (!graph_only && ranked) want = max(want, RowBudgetDevice(p, row));
  return min(support, want);
}

constexpr int kThresholdTopListMaxK = 256;

// The sampled-threshold kernel (top_lists_threshold.cu); needs g.top_stride <= kThresholdTopListMaxK.
// set_edges: each row also sets its r graph edges in g.adj (as EdgeKernel of graph_edges.cu).
absl::Status LaunchThresholdTopLists(const GraphBuffers& g, const DeviceMaskParams& p, bool graph_only, bool set_edges,
                                     cudaStream_t stream);

}  // namespace cab::cuda
