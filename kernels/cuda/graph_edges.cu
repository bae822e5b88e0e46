// The r-nearest graph from the top lists (SPEC 2): each row links to its first r entries other than
// itself; edges are set in both rows' bitsets, so the graph is undirected. Then degrees by popcount.
#include "cuda_status.h"
#include "device_util.cuh"

namespace cab::cuda {
namespace {

// One thread per (row, rank t < r + 1): only the first r + 1 entries can hold the r neighbours.
__global__ void EdgeKernel(GraphBuffers g, int r) {
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t rows = static_cast<int64_t>(g.heads) * g.blocks;
  if (id >= rows * (r + 1)) return;
  const int64_t row = id / (r + 1);
  const int t = static_cast<int>(id % (r + 1));
  const int i = static_cast<int>(row % g.blocks);
  const int32_t* top = g.top + row * g.top_stride;
  if (t >= g.top_count[row]) return;
  const int j = top[t];
  if (j == i) return;
  int rank = t;
  for (int u = 0; u < t; ++u) rank -= top[u] == i;
  if (rank >= r) return;
  const int W = g.words();
  uint32_t* base = g.adj + (row - i) * W;  // this head's bitsets
  atomicOr(base + static_cast<int64_t>(i) * W + j / 32, 1u << (j % 32));
  atomicOr(base + static_cast<int64_t>(j) * W + i / 32, 1u << (i % 32));
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

absl::Status LaunchGraph(const GraphBuffers& g, const DeviceMaskParams& p, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(g.heads) * g.blocks;
  CAB_CUDA_RETURN(cudaMemsetAsync(g.adj, 0, rows * g.words() * sizeof(uint32_t), stream));
  const int r = p.degree;
  const int64_t threads = rows * (r + 1);
  EdgeKernel<<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(g, r);
  CAB_CUDA_LAUNCHED("graph edges");
  DegreeKernel<<<static_cast<unsigned>((rows * 32 + 255) / 256), 256, 0, stream>>>(g);
  CAB_CUDA_LAUNCHED("graph degrees");
  return absl::OkStatus();
}

}  // namespace cab::cuda
