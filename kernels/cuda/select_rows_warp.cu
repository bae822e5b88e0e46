// Selection with one warp per row: the default for causal cab, magnitude and quest with graph degree
// <= 32 (the common request). Same rules and results as SelectKernel (select_rows.cu); see there and
// docs/policies.md.
//
// Why a warp: a causal row's candidate edges (j < i) are only its own r picks (an earlier block
// cannot pick a later one), so with r <= 32 a lane owns one edge: its triangle count (the two
// rows' bitsets ANDed), its curvature and its rank among the row's edges need no block barrier. The
// CTA-per-row kernel spent its time in ~10 __syncthreads per row (0.34 ms at M = 2048, 32 heads).
#include <cstdlib>
#include <string>

#include "cuda_status.h"
#include "select_internal.cuh"

namespace cab::cuda {
namespace {

constexpr int kWarps = 8;  // rows per CTA
constexpr unsigned kFull = 0xffffffffu;
constexpr int kMaxEdges = 32;

// Lanes per edge for the triangle counts (see EdgeTriangles): 4 from W = 64 words, else 1. H100,
// 32 heads, selection ms with 1 / 4 / 8 lanes (run 70): M = 2048 0.192 / 0.134 / 0.169; M = 1024
// 0.064 / 0.061 / 0.069 (plus a 0.007 degree pass for 4 and 8, which count no degrees); M = 512
// 0.026 / 0.029 / 0.036. CAB_CUDA_SELECT_LANES=1|4|8 forces one (for benchmarks comparing them).
int LanesPerEdge(int words) {
  static const int forced = [] {
    const char* e = std::getenv("CAB_CUDA_SELECT_LANES");
    const int v = e ? std::atoi(e) : 0;
    return v == 1 || v == 4 || v == 8 ? v : 0;
  }();
  if (forced) return forced;
  return words >= 64 ? 4 : 1;
}

// Whether the kernel counts degrees from the bitsets it reads (no degree pass over the graph): with a
// lane per edge (W < 64 words) it costs nothing measurable (H100, M = 1024: 0.064 ms either way); with
// several lanes per edge the extra popcounts and shuffles cost more than the pass (8 lanes: select
// 0.187 vs 0.168 ms at M = 2048, where the pass takes 0.015).
template <int kLanes>
constexpr bool kCountsDegrees = kLanes == 1;

// Triangle counts of the row's edges: t = popcount(row i AND row j), kLanes lanes per edge. With
// 4 lanes, one load instruction reads eight neighbour rows in 64-byte pieces, where a lane per edge
// touches 32 cache lines per instruction (ncu: the kernel was bound by L1 traffic at M = 2048); for
// short rows (W < 64 words) the lanes would mostly idle, so a lane takes a whole edge. Returns edge
// `lane`'s count on lane `lane` (< e) in .x, and with kCountsDegrees in .y that edge's other end's
// degree (the popcount of the row it reads anyway).
template <int kLanes>
__device__ __forceinline__ int2 EdgeTriangles(const uint32_t* mine, const uint32_t* adj_head, const int* edges, int e,
                                              int W) {
  constexpr int kGroups = 32 / kLanes;
  const int lane = threadIdx.x % 32, group = lane / kLanes, sub = lane % kLanes;
  int mine_count = 0, mine_degree = 0;
  for (int base = 0; base < e; base += kGroups) {  // warp-uniform
    const int edge = base + group;
    int t = 0, d = 0;
    if (edge < e) {
      const uint32_t* other = adj_head + static_cast<int64_t>(edges[edge]) * W;
      if (W % 4 == 0) {  // 16-byte pieces: rows start 16-byte aligned
        const uint4* a = reinterpret_cast<const uint4*>(mine);
        const uint4* b = reinterpret_cast<const uint4*>(other);
        for (int u = sub; u < W / 4; u += kLanes) {
          const uint4 x = a[u], y = __ldg(b + u);
          t += __popc(x.x & y.x) + __popc(x.y & y.y) + __popc(x.z & y.z) + __popc(x.w & y.w);
          if constexpr (kCountsDegrees<kLanes>) d += __popc(y.x) + __popc(y.y) + __popc(y.z) + __popc(y.w);
        }
      } else {
        for (int u = sub; u < W; u += kLanes) {
          const uint32_t y = __ldg(other + u);
          t += __popc(mine[u] & y);
          if constexpr (kCountsDegrees<kLanes>) d += __popc(y);
        }
      }
    }
    for (int off = kLanes / 2; off > 0; off >>= 1) {
      t += __shfl_xor_sync(kFull, t, off);
      if constexpr (kCountsDegrees<kLanes>) d += __shfl_xor_sync(kFull, d, off);
    }
    if (kLanes == 1) {
      mine_count = t;  // one pass: base = 0, edge = lane
      mine_degree = d;
    } else {
      const int from = __shfl_sync(kFull, t, (lane % kGroups) * kLanes);  // edge base + lane % kGroups
      if (lane / kGroups == base / kGroups) mine_count = from;  // several lanes: degrees come from the pass
    }
  }
  return make_int2(mine_count, mine_degree);
}

// dynamic shared memory per warp: row bits u32 [W], taken u32 [W], edges int [32]
template <int kLanes>
__global__ void __launch_bounds__(kWarps * 32) WarpSelectKernel(GraphBuffers g, DeviceMaskParams p, int row_begin,
                                                               int rows, uint32_t* keep) {
  extern __shared__ uint32_t smem32[];
  const int W = g.words(), M = g.blocks;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int stride = ((2 * W + kMaxEdges) + 3) & ~3;  // keeps every warp's row bits 16-byte aligned
  uint32_t* row_bits = smem32 + static_cast<size_t>(warp) * stride;
  uint32_t* taken = row_bits + W;
  int* edges = reinterpret_cast<int*>(taken + W);
  const int r = blockIdx.x * kWarps + warp;
  if (r >= rows) return;  // whole warp; no CTA barrier follows
  const int i = row_begin + r;
  const int64_t head_row0 = static_cast<int64_t>(blockIdx.y) * M;
  const int64_t row = head_row0 + i;
  const int n = CandidateCount(p, M, i);
  const unsigned lower = (1u << lane) - 1;
  for (int w = lane; w < W; w += 32) {
    row_bits[w] = g.adj[row * W + w];
    taken[w] = 0;
  }
  __syncwarp();

  const int k = ClampedBudgetDevice(p, M, i);
  int size = 0;
  if (lane == 0) SeedRowSerial(p, taken, &size, i, n, k);
  size = __shfl_sync(kFull, size, 0);
  __syncwarp();

  if (p.policy == static_cast<int>(MaskPolicy::kCab)) {
    const int bridges = min(static_cast<int>(llround(static_cast<double>(p.bridge_ratio) * k)), k - size);
    if (bridges > 0) {
      // The row's untaken edges j < n, listed in j order (at most r <= 32 of them, see above).
      int count = 0;
      const int words = (n + 31) / 32;
      for (int w0 = 0; w0 < words; w0 += 32) {
        const int w = w0 + lane;
        uint32_t bits = 0;
        if (w < words) {
          bits = row_bits[w] & ~taken[w];
          const int valid = n - 32 * w;  // bits at or past n are not candidates
          if (valid < 32) bits &= (1u << valid) - 1;
        }
        const int c = __popc(bits);
        const int inc = WarpInclusiveSum(c);
        int at = count + inc - c;
        for (; bits; bits &= bits - 1, ++at) {
          if (at < kMaxEdges) edges[at] = 32 * w + __ffs(bits) - 1;
        }
        count += __shfl_sync(kFull, inc, 31);
      }
      __syncwarp();
      const int e = min(count, kMaxEdges);
      const int take = min(bridges, e);
      if (take > 0) {
        // Lane t: edge t's curvature; the `take` lowest (F asc, j asc) become bridges.
        uint64_t key = ~0ull;
        int j = -1;
        const int2 td = EdgeTriangles<kLanes>(row_bits, g.adj + head_row0 * W, edges, e, W);
        const int t = td.x, dj = td.y;
        int di = 0;  // this row's degree, from the bits loaded above (kCountsDegrees)
        if constexpr (kCountsDegrees<kLanes>) {
          for (int w = lane; w < W; w += 32) di += __popc(row_bits[w]);
          for (int off = 16; off > 0; off >>= 1) di += __shfl_xor_sync(kFull, di, off);
        }
        if (lane < e) {
          j = edges[lane];
          const float f = kCountsDegrees<kLanes> ? EdgeCurvatureOf(g, p, head_row0, i, j, di, dj, t)
                                                 : EdgeCurvature(g, p, head_row0, i, j, t);
          key = (static_cast<uint64_t>(OrderKey(f)) << 32) | static_cast<uint32_t>(j);
        }
        // The keys in order across the warp (lanes >= e hold ~0): lane p then holds the p-th
        // lowest. A 32-key network, where ranking each key against every other (32 shuffled
        // 64-bit compares a lane) was 17% of this kernel's instructions (ncu, run 72).
        uint64_t sorted[1] = {key};
        WarpBitonicSort<1>(sorted);
        if (lane < take) {
          const int jt = static_cast<int>(sorted[0] & 0xffffffffu);
          atomicOr(&taken[jt / 32], 1u << (jt % 32));
        }
        size += take;
        __syncwarp();
      }
    }
  }

  // Importance: the best untaken entries of the top list (which holds at least k entries).
  const int32_t* top = g.top + row * g.top_stride;
  const int top_len = g.top_count[row];
  for (int base = 0; base < top_len && size < k; base += 32) {  // size is warp-uniform
    const int t = base + lane;
    const int j = t < top_len ? top[t] : -1;
    const bool untaken = j >= 0 && !IsTaken(taken, j);
    const unsigned m = __ballot_sync(kFull, untaken);
    const int need = k - size;
    if (untaken && __popc(m & lower) < need) atomicOr(&taken[j / 32], 1u << (j % 32));
    size += min(__popc(m), need);
    __syncwarp();
  }

  uint32_t* out = keep + (static_cast<int64_t>(blockIdx.y) * rows + r) * W;
  for (int w = lane; w < W; w += 32) out[w] = taken[w];
}

// CAB_CUDA_SELECT=block forces the CTA-per-row kernel (for benchmarks comparing the two).
bool WarpSelectEnabled() {
  static const bool on = [] {
    const char* e = std::getenv("CAB_CUDA_SELECT");
    return e == nullptr || std::string(e) != "block";
  }();
  return on;
}

}  // namespace

bool SelectCountsDegrees(const DeviceMaskParams& p, int blocks) {
  return WarpSelectApplies(p) && LanesPerEdge((blocks + 31) / 32) == 1;
}

bool WarpSelectApplies(const DeviceMaskParams& p) {
  const bool ranked = p.policy == static_cast<int>(MaskPolicy::kCab) ||
                      p.policy == static_cast<int>(MaskPolicy::kMagnitude) ||
                      p.policy == static_cast<int>(MaskPolicy::kQuest);
  return WarpSelectEnabled() && p.causal && ranked && p.degree <= kMaxEdges;
}

absl::Status LaunchWarpSelect(const GraphBuffers& g, const DeviceMaskParams& p, int row_begin, int rows,
                              uint32_t* keep, cudaStream_t stream) {
  const int W = g.words();
  const size_t smem = static_cast<size_t>(kWarps) * (((2 * W + kMaxEdges) + 3) & ~3) * sizeof(uint32_t);
  const int lanes = LanesPerEdge(W);
  const void* kernel = lanes == 8   ? reinterpret_cast<const void*>(WarpSelectKernel<8>)
                       : lanes == 4 ? reinterpret_cast<const void*>(WarpSelectKernel<4>)
                                    : reinterpret_cast<const void*>(WarpSelectKernel<1>);
  if (smem > 48 * 1024) {
    CAB_CUDA_RETURN(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  dim3 grid((rows + kWarps - 1) / kWarps, g.heads);
  if (lanes == 8) {
    WarpSelectKernel<8><<<grid, kWarps * 32, smem, stream>>>(g, p, row_begin, rows, keep);
  } else if (lanes == 4) {
    WarpSelectKernel<4><<<grid, kWarps * 32, smem, stream>>>(g, p, row_begin, rows, keep);
  } else {
    WarpSelectKernel<1><<<grid, kWarps * 32, smem, stream>>>(g, p, row_begin, rows, keep);
  }
  CAB_CUDA_LAUNCHED("select rows (warp per row)");
  return absl::OkStatus();
}

}  // namespace cab::cuda
