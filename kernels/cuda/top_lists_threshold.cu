// Top lists by a sampled threshold: the default row pass over S (SPEC 2), one warp per row, no
// shared-memory atomics. Same outputs as TopListKernel (top_lists.cu): row max, 1 / sum exp (NaN
// where nothing reads it: SelectReadsScores), and the row's K strongest blocks ordered by (S desc,
// j asc).
//
// Why: the radix-select kernels spent most of their time in shared atomics that all land in one
// bin (a row's scores share their exponent byte), four passes a row (0.50 ms at M = 2048, 32 heads,
// where reading the causal half of S takes 0.09 ms). Here:
//  1. one pass over the row: the max, and the maximum of each group of a lane's scores (G groups
//     per lane, float max only: this pass is the most frequent code and ncu showed the kernel
//     bound by integer issue, so nothing else happens per element);
//  2. T = about the K-th largest of those 32 G group maxima, by a bitwise search over warp
//     reductions on the top 16 key bits. The group maxima are scores, K of them are >= T, so the
//     row has at least K scores >= T, and every one of its K best is >= T; usually few more are;
//  3. a second pass (the row is still in L1/L2): the softmax sum, and the scores >= T compacted
//     with ballots;
//  4. their order (S desc, j asc) by a bitonic sort in shared memory (keys carry j: distinct).
// When more scores than the buffer holds are >= T (long runs of equal scores), the exact K-th key
// is found by a bitwise search over the whole row, and ties are taken lowest j first.
#include <algorithm>

#include "cuda_status.h"
#include "threshold_row.cuh"

namespace cab::cuda {
namespace {

using threshold::ThresholdRow;

constexpr int kWarps = 8;  // rows per CTA

// dynamic shared memory: per warp `cap` u64 candidates. G groups per lane: 4 when every list is
// <= 64 long, 8 when <= 128, else 16 (the sample must hold K scores, see ThresholdRow); a
// launch-wide choice, as G sets the kernel's registers (and so its occupancy).
template <int G, int kMinBlocks>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks) ThresholdTopListKernel(GraphBuffers g, DeviceMaskParams p,
                                                                     bool graph_only, bool set_edges, int cap,
                                                                     bool softmax_sum) {
  extern __shared__ uint64_t smem64[];
  const int warp = threadIdx.x / 32;
  uint64_t* cand = smem64 + static_cast<size_t>(warp) * cap;
  const int M = g.blocks, i = blockIdx.x * kWarps + warp;
  if (i >= M) return;  // whole warp; no CTA barrier follows
  const int64_t row = static_cast<int64_t>(blockIdx.y) * M + i;
  const int L = CandidateCount(p, M, i);
  const int K = RowTopCount(p, M, i, graph_only);
  // 16-byte loads where rows are aligned and hold >= 2 K units of 4 (step 2's sample: every unit's
  // maximum, or >= 16 G group maxima), so that the threshold still leaves few candidates.
  const int edge_r = set_edges ? p.degree : -1;
  const bool vec = M % 4 == 0 && (L + 3) / 4 >= 2 * K;
  if (softmax_sum) {
    if (vec) ThresholdRow<G, 4, true>(g, row, g.scores + row * M, L, K, cand, cap, edge_r);
    else ThresholdRow<G, 1, true>(g, row, g.scores + row * M, L, K, cand, cap, edge_r);
  } else {
    if (vec) ThresholdRow<G, 4, false>(g, row, g.scores + row * M, L, K, cand, cap, edge_r);
    else ThresholdRow<G, 1, false>(g, row, g.scores + row * M, L, K, cand, cap, edge_r);
  }

}

template <int G, int kMinBlocks>
absl::Status Launch(const GraphBuffers& g, const DeviceMaskParams& p, bool graph_only, bool set_edges, int cap,
                    cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(kWarps) * cap * sizeof(uint64_t);
  if (smem > 48 * 1024) {
    CAB_CUDA_RETURN(cudaFuncSetAttribute(ThresholdTopListKernel<G, kMinBlocks>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  }
  dim3 grid((g.blocks + kWarps - 1) / kWarps, g.heads);
  const bool softmax_sum = graph_only || SelectReadsScores(p);
  ThresholdTopListKernel<G, kMinBlocks><<<grid, kWarps * 32, smem, stream>>>(g, p, graph_only, set_edges, cap, softmax_sum);
  CAB_CUDA_LAUNCHED("top lists (sampled threshold)");
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchThresholdTopLists(const GraphBuffers& g, const DeviceMaskParams& p, bool graph_only, bool set_edges,
                                     cudaStream_t stream) {
  const int k_max = g.top_stride;
  if (k_max > kThresholdTopListMaxK) return absl::InternalError("threshold top lists: list longer than 256");
  // The candidate buffer holds twice the list (more for short lists); beyond it the exact
  // fallback runs.
  const int cap = std::max(64, 2 * NextPow2(k_max));
  // G = 8 at 5 CTAs (40 warps) per SM: 48 registers, no spills; unconstrained it took 55 and ran
  // fewer warps (H100, M = 2048: 0.333 ms at 48 registers vs 0.398 at 64, before the sort change).
  // Lists <= 64 (16 G >= K with G = 4): 4 groups, a cheaper threshold search, 40 registers at 6
  // CTAs per SM (H100, M = 1024: 0.078 ms vs 0.094 with G = 8; 0.079 at 5 CTAs; run 71).
  if (k_max <= 64) return Launch<4, 6>(g, p, graph_only, set_edges, cap, stream);
  return k_max <= 128 ? Launch<8, 5>(g, p, graph_only, set_edges, cap, stream)
                      : Launch<16, 1>(g, p, graph_only, set_edges, cap, stream);
}

}  // namespace cab::cuda

