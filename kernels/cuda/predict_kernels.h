// The predictor's device kernels (SPEC 2 + 3) and the plain parameters they read. Each launch
// function enqueues on `stream` and returns launch errors; execution errors surface at the next sync.
//
// Data on the device, for BH = B * Hq query heads and M blocks:
//   S      [BH, M, M] float   block scores (estimator), only the support is read
//   top    [BH, M, K] int32   per row the K strongest support blocks by (S desc, j asc), K per row
//   adj    [BH, M, W] uint32  undirected graph as row bitsets, W = ceil(M / 32)
//   degree [BH, M]    int32
//   keep   [BH, R, W] uint32  the answered rows' masks as bitsets (R = rows answered)
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "cab/params.h"

#ifdef __CUDACC__
#define CAB_HOST_DEVICE __host__ __device__
#else
#define CAB_HOST_DEVICE
#endif

namespace cab::cuda {

// MaskParams flattened for the device.
struct DeviceMaskParams {
  int policy = 0;  // MaskPolicy
  int causal = 1;
  int degree = 32;
  int curvature = 0;  // CurvatureKind
  float lambda = 1.f;
  float sparsity = 0.95f;
  int blocks_per_row = 0, min_keep = 1, sink_blocks = 1, local_blocks = 1;
  float local_ratio = 0.3f, bridge_ratio = 0.2f;
  float adaptive_tau = 0.9f, adaptive_z = 1.f;
  static DeviceMaskParams From(const MaskParams& p);
};

struct GraphBuffers {
  int heads = 0;   // BH
  int blocks = 0;  // M
  int top_stride = 0;  // K capacity per row
  const float* scores = nullptr;
  int32_t* top = nullptr;
  int32_t* top_count = nullptr;
  float* row_max = nullptr;  // per row: max S over the support and 1 / sum exp(S - max): A = exp(S - max) * inv
  float* row_inv = nullptr;
  uint32_t* adj = nullptr;
  int32_t* degree = nullptr;
  CAB_HOST_DEVICE int words() const { return (blocks + 31) / 32; }
};

// Upper bound of the per-row top-list length the policy needs (the top_stride to allocate).
int TopCapacity(const DeviceMaskParams& p, int blocks);

// Fused row pass over S: softmax statistics and the top list of every row of every head (the
// softmax sum, row_inv, only where graph_only or SelectReadsScores; otherwise row_inv is NaN). With
// set_edges, a kernel that can also sets each row's graph edges in g.adj (zeroed before, see
// LaunchClearGraph) and says so in *edges_set; otherwise LaunchGraph must set them.
absl::Status LaunchTopLists(const GraphBuffers& g, const DeviceMaskParams& p, bool graph_only, bool set_edges,
                            bool* edges_set, cudaStream_t stream);
// Zeroes the adjacency bitsets (before the top lists, which may set edges).
absl::Status LaunchClearGraph(const GraphBuffers& g, cudaStream_t stream);
// Edges of the r-nearest graph from the top lists (unless the top-list pass set them), then the
// degrees (unless nobody reads them: the warp selection counts them from the bitsets it loads).
absl::Status LaunchGraph(const GraphBuffers& g, const DeviceMaskParams& p, bool edges, bool degrees, cudaStream_t stream);
// Whether LaunchSelect counts degrees itself for M = blocks (g.degree is then not read).
bool SelectCountsDegrees(const DeviceMaskParams& p, int blocks);
// Whether LaunchSelect reads S or the softmax statistics (direct-redundancy curvature, the
// CTA-per-row selection); where it does not, the top lists need not sum the softmax.
bool SelectReadsScores(const DeviceMaskParams& p);
// Per answered row: curvature on the row's edges and the policy's selection, as bitsets.
absl::Status LaunchSelect(const GraphBuffers& g, const DeviceMaskParams& p, int row_begin, int rows,
                          uint32_t* keep, cudaStream_t stream);
// Dense curvature [BH', M, M] (NaN off edges) of heads [0, BH'), for the Graph() op and tests.
absl::Status LaunchDenseCurvature(const GraphBuffers& g, const DeviceMaskParams& p, int heads, float* curvature,
                                  cudaStream_t stream);

// Per (head, block): the minimum curvature over the block's edges and whether it has one (eviction).
absl::Status LaunchBlockMinCurvature(const GraphBuffers& g, const DeviceMaskParams& p, float* block_min,
                                     int32_t* has_edge, cudaStream_t stream);

}  // namespace cab::cuda
