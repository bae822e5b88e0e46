// The r-nearest graph from the top lists (SPEC 2): each row links to its first r entries other than
// itself; edges are set in both rows' bitsets, so the graph is undirected. Then degrees by popcount.
#include "cuda_status.h"
#include "device_util.cuh"
#include "row_edges.cuh"

namespace cab::cuda {
namespace {

// One warp per row: lane t reads entry t of the list (t < r + 1: only those can hold the r
// neighbours). (A thread per entry re-read the t earlier entries to count i: 33 x 16 loads per row.)
__global__ void EdgeKernel(GraphBuffers g, int r) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (row >= static_cast<int64_t>(g.heads) * g.blocks) return;  // whole warp
  const int32_t* top = g.top + row * g.top_stride;
  SetRowEdges(g, row, static_cast<int>(row % g.blocks), min(g.top_count[row], r + 1), r,
              [&](int t) { return static_cast<int>(top[t]); });
}

// One warp per row.
__global__ void DegreeKernel(GraphBuffers g) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= static_cast<int64_t>(g.heads) * g.blocks) return;
  const int W = g.words();
  const uint32_t* bits = g.adj + row * W;
  int d = 0;
  for (int w = lane; w < W; w += 32) d += __popc(bits[w]);
  for (int off = 16; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
  if (lane == 0) g.degree[row] = d;
}

}  // namespace

absl::Status LaunchClearGraph(const GraphBuffers& g, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(g.heads) * g.blocks;
  CAB_CUDA_RETURN(cudaMemsetAsync(g.adj, 0, rows * g.words() * sizeof(uint32_t), stream));
  return absl::OkStatus();
}

absl::Status LaunchGraph(const GraphBuffers& g, const DeviceMaskParams& p, bool edges, bool degrees, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(g.heads) * g.blocks;
  if (edges) {
    EdgeKernel<<<static_cast<unsigned>((rows * 32 + 255) / 256), 256, 0, stream>>>(g, p.degree);
    CAB_CUDA_LAUNCHED("graph edges");
  }
  if (degrees) {
    DegreeKernel<<<static_cast<unsigned>((rows * 32 + 255) / 256), 256, 0, stream>>>(g);
    CAB_CUDA_LAUNCHED("graph degrees");
  }
  return absl::OkStatus();
}

}  // namespace cab::cuda
