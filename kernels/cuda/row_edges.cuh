// One row's graph edges (SPEC 2), shared by EdgeKernel (graph_edges.cu, from the stored top list) and
// the top-list kernel (top_lists_threshold.cu, from its sorted keys in shared memory).
#pragma once

#include "device_util.cuh"

namespace cab::cuda {

// By one warp: row i (global row `row`) links to its first r list entries other than itself, set in
// both rows' bitsets (undirected). entry(t) is the block of list position t < n, where n <= r + 1
// positions can hold the r neighbours. The row's own block, if listed, is found by a ballot, so each
// entry's neighbour rank is t minus whether i came before it.
template <typename Entry>
__device__ __forceinline__ void SetRowEdges(const GraphBuffers& g, int64_t row, int i, int n, int r, Entry entry) {
  const int lane = threadIdx.x % 32;
  const int W = g.words();
  uint32_t* base = g.adj + (row - i) * W;  // this head's bitsets
  const unsigned lower = (1u << lane) - 1;
  int i_before = 0;  // whether i was listed in an earlier chunk
  for (int chunk = 0; chunk < n; chunk += 32) {  // warp-uniform
    const int t = chunk + lane;
    const int j = t < n ? entry(t) : -1;
    const unsigned is_i = __ballot_sync(0xffffffffu, j == i);
    const int rank = t - i_before - (__popc(is_i & lower) > 0 ? 1 : 0);
    if (t < n && j != i && rank < r) {
      atomicOr(base + static_cast<int64_t>(i) * W + j / 32, 1u << (j % 32));
      atomicOr(base + static_cast<int64_t>(j) * W + i / 32, 1u << (i % 32));
    }
    i_before += __popc(is_i) > 0 ? 1 : 0;
  }
}

}  // namespace cab::cuda
