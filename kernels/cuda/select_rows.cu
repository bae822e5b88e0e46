// Per answered row: curvature on the row's graph edges (triangles by bitset intersection) fused with
// the policy's selection (SPEC 3), written as the row's bitset. The rules mirror the CPU backend's
// (kernels/cpu/select*.cc, docs/policies.md); curvature uses the CPU's float expression in the same
// order, and this file is compiled without FMA contraction, so equal integer inputs give equal F.
#include <algorithm>
#include <cfloat>
#include <cmath>

#include "cuda_status.h"
#include "device_util.cuh"
#include "select_internal.cuh"

namespace cab::cuda {
namespace {

struct RowState {
  uint32_t* row_bits;  // [W] the row's adjacency
  uint32_t* taken;     // [W]
  uint64_t* sort_buf;  // [pow2 >= M]
  float* edge_f;       // [M]
  int32_t* edge_j;     // [M]
  int capacity;        // entries of edge_f / edge_j
};

// Collects the row's edges j < n (and untaken when `untaken_only`) with their curvature into
// edge_f / edge_j; returns their number. Edges are listed first; then each warp takes one edge at
// a time and intersects the two rows' bitsets with coalesced loads across its lanes. (Inputs are
// validated finite, so F is never NaN here.)
__device__ int CollectEdges(const GraphBuffers& g, const DeviceMaskParams& p, int64_t head_row0, int i, int n,
                            bool untaken_only, RowState& st, int* counter) {
  const int W = g.words();
  if (threadIdx.x == 0) *counter = 0;
  __syncthreads();
  for (int w = threadIdx.x; w < W; w += kRowThreads) {
    uint32_t bits = st.row_bits[w];
    if (untaken_only) bits &= ~st.taken[w];
    while (bits) {
      const int j = w * 32 + __ffs(bits) - 1;
      bits &= bits - 1;
      if (j >= n) break;
      const int at = atomicAdd(counter, 1);
      if (at < st.capacity) st.edge_j[at] = j;  // always, by the capacity rule in LaunchSelect
    }
  }
  __syncthreads();
  const int e = min(*counter, st.capacity);
  // Eight lanes per edge, so the block works on 16 edges at once (one lane per edge left each
  // warp waiting on a chain of dependent global loads).
  constexpr int kLanes = 8, kPerWarp = 32 / kLanes, kPerBlock = kRowThreads / kLanes;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, sub = lane / kLanes, sl = lane % kLanes;
  for (int base = warp * kPerWarp; base < e; base += kPerBlock) {  // uniform per warp
    const int t = base + sub;
    int tri = 0;
    if (t < e) {
      const uint32_t* other = g.adj + (head_row0 + st.edge_j[t]) * W;
      for (int u = sl; u < W; u += kLanes) tri += __popc(st.row_bits[u] & __ldg(other + u));
    }
    for (int off = kLanes / 2; off > 0; off >>= 1) tri += __shfl_xor_sync(0xffffffffu, tri, off, kLanes);
    if (t < e && sl == 0) st.edge_f[t] = EdgeCurvature(g, p, head_row0, i, st.edge_j[t], tri);
  }
  __syncthreads();
  return e;
}

// Adds the first untaken entries of `order` (len entries, best first) until `*size` reaches budget.
// Block-wide; order entries are block indices. `*size` is shared.
template <typename Get>
__device__ void FillInOrder(Get get, int len, uint32_t* taken, int* size, int budget, int* scratch) {
  for (int base = 0; base < len; base += kRowThreads) {
    __syncthreads();
    const int need = budget - *size;
    if (need <= 0) return;
    const int t = base + threadIdx.x;
    const int j = t < len ? get(t) : -1;
    const int flag = (j >= 0 && !IsTaken(taken, j)) ? 1 : 0;
    int total;
    const int before = BlockExclusiveScan(flag, scratch, &total);
    if (flag && before < need) atomicOr(&taken[j / 32], 1u << (j % 32));
    __syncthreads();
    if (threadIdx.x == 0) *size += min(total, need);
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kRowThreads) SelectKernel(GraphBuffers g, DeviceMaskParams p, int row_begin, int rows,
                                                           uint32_t* keep, int sort_capacity, int edge_capacity) {
  extern __shared__ uint64_t smem64[];
  const int M = g.blocks, W = g.words();
  RowState st;
  st.sort_buf = smem64;
  st.edge_f = reinterpret_cast<float*>(smem64 + sort_capacity);
  st.edge_j = reinterpret_cast<int32_t*>(st.edge_f + edge_capacity);
  st.row_bits = reinterpret_cast<uint32_t*>(st.edge_j + edge_capacity);
  st.capacity = edge_capacity;
  st.taken = st.row_bits + W;
  __shared__ int size, counter;
  __shared__ int iscratch[4];
  __shared__ double dscratch[4];

  const int r = blockIdx.x, i = row_begin + r;
  const int64_t head_row0 = static_cast<int64_t>(blockIdx.y) * M;
  const int64_t row = head_row0 + i;
  const int n = CandidateCount(p, M, i);
  const int tid = threadIdx.x;
  for (int w = tid; w < W; w += kRowThreads) {
    st.row_bits[w] = g.adj[row * W + w];
    st.taken[w] = 0;
  }
  if (tid == 0) size = 0;
  __syncthreads();
  const int32_t* top = g.top + row * g.top_stride;
  const int top_len = g.top_count[row];

  if (p.policy == static_cast<int>(MaskPolicy::kAdaptive)) {
    if (tid == 0) {
      AddSerial(st.taken, &size, n, n, i);
      for (int j = 0; j < p.sink_blocks; ++j) AddSerial(st.taken, &size, n, n, j);
    }
    // Mass coverage: the whole support sorted by (S desc, j asc); take while the mass before < tau.
    const float* s = g.scores + row * M;
    const int padded = NextPow2(n);
    for (int t = tid; t < padded; t += kRowThreads) {
      st.sort_buf[t] = t < n ? (static_cast<uint64_t>(~OrderKey(s[t])) << 32) | static_cast<uint32_t>(t) : ~0ull;
    }
    BitonicSort(st.sort_buf, padded);
    const float mx = g.row_max[row], inv = g.row_inv[row];
    const double target = static_cast<double>(p.adaptive_tau) - 1e-6;
    double carry = 0;
    for (int base = 0; base < n; base += kRowThreads) {
      const int t = base + tid;
      const int j = t < n ? static_cast<int>(st.sort_buf[t] & 0xffffffffu) : -1;
      const double a = j >= 0 ? static_cast<double>(expf(s[j] - mx) * inv) : 0.0;
      double total;
      const double before = BlockExclusiveScan(a, dscratch, &total);
      if (j >= 0 && carry + before < target) atomicOr(&st.taken[j / 32], 1u << (j % 32));
      carry += total;
      if (carry >= target) break;  // uniform across the block
    }
    __syncthreads();
    // Curvature outliers among all the row's candidate edges.
    const int e = CollectEdges(g, p, head_row0, i, n, false, st, &counter);
    if (e >= 2) {
      double sum = 0;
      for (int t = tid; t < e; t += kRowThreads) sum += st.edge_f[t];
      const double mean = BlockReduce(sum, [](double x, double y) { return x + y; }, dscratch) / e;
      double var = 0;
      for (int t = tid; t < e; t += kRowThreads) var += (st.edge_f[t] - mean) * (st.edge_f[t] - mean);
      var = BlockReduce(var, [](double x, double y) { return x + y; }, dscratch);
      const double threshold = mean - static_cast<double>(p.adaptive_z) * sqrt(var / e);
      for (int t = tid; t < e; t += kRowThreads) {
        if (st.edge_f[t] < threshold) atomicOr(&st.taken[st.edge_j[t] / 32], 1u << (st.edge_j[t] % 32));
      }
    }
    __syncthreads();
    int c = 0;
    for (int w = tid; w < W; w += kRowThreads) c += __popc(st.taken[w]);
    c = BlockReduce(c, [](int x, int y) { return x + y; }, iscratch);
    if (tid == 0) size = c;
    const int floor = min(p.min_keep, n);
    __syncthreads();
    if (size < floor) {
      FillInOrder([&](int t) { return static_cast<int>(st.sort_buf[t] & 0xffffffffu); }, n, st.taken, &size, floor,
                  iscratch);
    }
  } else {
    const int k = ClampedBudgetDevice(p, M, i);
    if (tid == 0) SeedRowSerial(p, st.taken, &size, i, n, k);  // diagonal, sinks, local window
    if (p.policy == static_cast<int>(MaskPolicy::kCab)) {
      __syncthreads();
      const int bridges = min(static_cast<int>(llround(static_cast<double>(p.bridge_ratio) * k)), k - size);
      if (bridges > 0) {
        const int e = CollectEdges(g, p, head_row0, i, n, true, st, &counter);
        const int take = min(bridges, e);
        if (take > 0) {
          // Lowest F first, ties to the lower j: sort (F asc, j asc) keys.
          // The `take` smallest (F asc, j asc) keys. Few edges (the causal case): distinct keys, so a
          // key's rank is the number of smaller ones (one barrier); many: a bitonic sort.
          const int padded = e <= kRankSortMax ? e : NextPow2(e);
          for (int t = tid; t < padded; t += kRowThreads) {
            st.sort_buf[t] = t < e ? (static_cast<uint64_t>(OrderKey(st.edge_f[t])) << 32) | static_cast<uint32_t>(st.edge_j[t])
                                   : ~0ull;
          }
          if (e <= kRankSortMax) {
            __syncthreads();
            for (int t = tid; t < e; t += kRowThreads) {
              const uint64_t mine = st.sort_buf[t];
              int rank = 0;
              for (int u = 0; u < e; ++u) rank += st.sort_buf[u] < mine;
              if (rank < take) atomicOr(&st.taken[st.edge_j[t] / 32], 1u << (st.edge_j[t] % 32));
            }
          } else {
            BitonicSort(st.sort_buf, padded);
            for (int t = tid; t < take; t += kRowThreads) {
              const int j = static_cast<int>(st.sort_buf[t] & 0xffffffffu);
              atomicOr(&st.taken[j / 32], 1u << (j % 32));
            }
          }
          __syncthreads();
          if (tid == 0) size += take;
        }
      }
    }
    // Importance: the best untaken entries of the top list (which holds at least k entries).
    FillInOrder([&](int t) { return top[t]; }, top_len, st.taken, &size, k, iscratch);
  }
  __syncthreads();
  uint32_t* out = keep + (static_cast<int64_t>(blockIdx.y) * rows + r) * W;
  for (int w = tid; w < W; w += kRowThreads) out[w] = st.taken[w];
}

// Dense curvature of one head's rows (NaN off the graph), for the Graph() op and the tests.
__global__ void DenseCurvatureKernel(GraphBuffers g, DeviceMaskParams p, float* curvature) {
  const int M = g.blocks, W = g.words(), i = blockIdx.x;
  const int64_t head_row0 = static_cast<int64_t>(blockIdx.y) * M;
  const uint32_t* mine = g.adj + (head_row0 + i) * W;
  for (int j = threadIdx.x; j < M; j += blockDim.x) {
    float f = __int_as_float(0x7fc00000);
    if ((mine[j / 32] >> (j % 32)) & 1u) {
      const uint32_t* other = g.adj + (head_row0 + j) * W;
      int t = 0;
      for (int u = 0; u < W; ++u) t += __popc(mine[u] & other[u]);
      f = EdgeCurvature(g, p, head_row0, i, j, t);
    }
    curvature[(head_row0 + i) * M + j] = f;
  }
}

// Eviction's bridge ranking: per (head, block m) the minimum F over m's edges (row m, as the CPU's
// RankBridgeBlocks reads F(m, j)) and whether m has an edge with a finite F.
__global__ void BlockMinCurvatureKernel(GraphBuffers g, DeviceMaskParams p, float* block_min, int32_t* has_edge) {
  __shared__ float min_s[kRowThreads / 32];
  __shared__ int any_s[kRowThreads / 32];
  const int M = g.blocks, W = g.words(), i = blockIdx.x;
  const int64_t head_row0 = static_cast<int64_t>(blockIdx.y) * M;
  const uint32_t* mine = g.adj + (head_row0 + i) * W;
  float best = __int_as_float(0x7f800000);
  int any = 0;
  for (int j = threadIdx.x; j < M; j += blockDim.x) {
    if ((mine[j / 32] >> (j % 32)) & 1u) {
      const uint32_t* other = g.adj + (head_row0 + j) * W;
      int t = 0;
      for (int u = 0; u < W; ++u) t += __popc(mine[u] & other[u]);
      const float f = EdgeCurvature(g, p, head_row0, i, j, t);
      if (f == f) {
        best = fminf(best, f);
        any = 1;
      }
    }
  }
  for (int off = 16; off > 0; off >>= 1) {
    best = fminf(best, __shfl_xor_sync(0xffffffffu, best, off));
    any |= __shfl_xor_sync(0xffffffffu, any, off);
  }
  if (threadIdx.x % 32 == 0) {
    min_s[threadIdx.x / 32] = best;
    any_s[threadIdx.x / 32] = any;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kRowThreads / 32; ++w) {
      best = fminf(best, min_s[w]);
      any |= any_s[w];
    }
    best = fminf(best, min_s[0]);
    any |= any_s[0];
    block_min[head_row0 + i] = best;
    has_edge[head_row0 + i] = any;
  }
}

}  // namespace

absl::Status LaunchDenseCurvature(const GraphBuffers& g, const DeviceMaskParams& p, int heads, float* curvature,
                                  cudaStream_t stream) {
  dim3 grid(g.blocks, heads);
  DenseCurvatureKernel<<<grid, kRowThreads, 0, stream>>>(g, p, curvature);
  CAB_CUDA_LAUNCHED("dense curvature");
  return absl::OkStatus();
}

bool SelectReadsScores(const DeviceMaskParams& p) {
  return !WarpSelectApplies(p) || p.curvature == static_cast<int>(CurvatureKind::kDirectRedundancy);
}

absl::Status LaunchSelect(const GraphBuffers& g, const DeviceMaskParams& p, int row_begin, int rows, uint32_t* keep,
                          cudaStream_t stream) {
  if (WarpSelectApplies(p)) return LaunchWarpSelect(g, p, row_begin, rows, keep, stream);
  // Causal cab: a row's candidate edges (j < i) are only its own r picks (an earlier block cannot
  // pick a later one), so r slots suffice and the kernel keeps high occupancy. Otherwise (adaptive
  // sorts the whole row; a non-causal row may have up to M edges) the row's full width.
  const bool small = p.causal && p.policy != static_cast<int>(MaskPolicy::kAdaptive);
  const int edges = small ? std::min(p.degree, g.blocks) : g.blocks;
  const int capacity = NextPow2(edges);
  const size_t smem = static_cast<size_t>(capacity) * sizeof(uint64_t) + 2 * static_cast<size_t>(edges) * 4 +
                      2 * static_cast<size_t>(g.words()) * 4;
  if (smem > 48 * 1024) {
    CAB_CUDA_RETURN(cudaFuncSetAttribute(SelectKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  dim3 grid(rows, g.heads);
  SelectKernel<<<grid, kRowThreads, smem, stream>>>(g, p, row_begin, rows, keep, capacity, edges);
  CAB_CUDA_LAUNCHED("select rows");
  return absl::OkStatus();
}

absl::Status LaunchBlockMinCurvature(const GraphBuffers& g, const DeviceMaskParams& p, float* block_min,
                                     int32_t* has_edge, cudaStream_t stream) {
  dim3 grid(g.blocks, g.heads);
  BlockMinCurvatureKernel<<<grid, kRowThreads, 0, stream>>>(g, p, block_min, has_edge);
  CAB_CUDA_LAUNCHED("block min curvature");
  return absl::OkStatus();
}

}  // namespace cab::cuda
