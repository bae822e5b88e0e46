// Row pass over S (SPEC 2): softmax statistics and each row's K strongest support blocks, ordered by
// (S desc, j asc). K covers both the graph's r neighbours (plus the diagonal, which the graph skips)
// and the policy's row budget, so that selection never has to read S again. Top-K by S equals
// top-K by A: the softmax is monotone within a row.
#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <string>

#include "cuda_status.h"
#include "device_util.cuh"
#include "top_lists_internal.cuh"

namespace cab::cuda {
namespace {

// dynamic shared memory: keys u32 [M], cand u64 [pow2 >= top_stride]
__global__ void __launch_bounds__(kRowThreads) TopListKernel(GraphBuffers g, DeviceMaskParams p, bool graph_only,
                                                            int cand_capacity) {
  extern __shared__ uint64_t smem64[];
  uint64_t* cand = smem64;
  uint32_t* keys = reinterpret_cast<uint32_t*>(smem64 + cand_capacity);
  __shared__ int hist[256];
  __shared__ float fscratch[4];
  __shared__ double dscratch[4];
  __shared__ int pick_digit, pick_above, pick_equal, slot;

  const int M = g.blocks, i = blockIdx.x;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * M + i;
  const int L = CandidateCount(p, M, i);
  const int K = RowTopCount(p, M, i, graph_only);
  const float* s = g.scores + row * M;
  const int tid = threadIdx.x;

  // Load the support once; the max ignores NaN like the CPU's `s > mx ? s : mx`.
  float mx = -__int_as_float(0x7f800000);
  for (int j = tid; j < L; j += kRowThreads) {
    const float v = s[j];
    keys[j] = OrderKey(v);
    mx = v > mx ? v : mx;
  }
  mx = BlockReduce(mx, [](float a, float b) { return b > a ? b : a; }, fscratch);
  double sum = 0;
  for (int j = tid; j < L; j += kRowThreads) sum += static_cast<double>(expf(s[j] - mx));
  sum = BlockReduce(sum, [](double a, double b) { return a + b; }, dscratch);
  if (tid == 0) {
    g.row_max[row] = mx;
    g.row_inv[row] = static_cast<float>(1.0 / sum);
  }

  // Radix select of the K-th largest key, 8 bits a pass.
  uint32_t prefix = 0, pmask = 0;
  int rem = K;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += kRowThreads) hist[b] = 0;
    __syncthreads();
    for (int j = tid; j < L; j += kRowThreads) {
      const uint32_t k = keys[j];
      if ((k & pmask) == prefix) atomicAdd(&hist[(k >> shift) & 255], 1);
    }
    __syncthreads();
    if (tid < 32) {
      // Lane l owns bins 255-8l .. 248-8l (descending), so a scan over lanes runs from the top bin.
      int c = 0;
      for (int b = 0; b < 8; ++b) c += hist[255 - 8 * tid - b];
      const int inc = WarpInclusiveSum(c);
      const int exc = inc - c;
      if (exc < rem && rem <= inc) {
        int cum = exc;
        for (int b = 0; b < 8; ++b) {
          const int bin = 255 - 8 * tid - b;
          if (cum + hist[bin] >= rem) {
            pick_digit = bin;
            pick_above = cum;
            pick_equal = hist[bin];
            break;
          }
          cum += hist[bin];
        }
      }
    }
    __syncthreads();
    prefix |= static_cast<uint32_t>(pick_digit) << shift;
    pmask |= 255u << shift;
    rem -= pick_above;
    __syncthreads();
  }
  const uint32_t threshold = prefix;
  const int equal = pick_equal;  // keys equal to the threshold; take `rem` of them, lowest j first

  if (tid == 0) slot = 0;
  __syncthreads();
  for (int j = tid; j < L; j += kRowThreads) {
    const uint32_t k = keys[j];
    if (k > threshold || (k == threshold && rem == equal)) {
      cand[atomicAdd(&slot, 1)] = (static_cast<uint64_t>(~k) << 32) | static_cast<uint32_t>(j);
    }
  }
  __syncthreads();
  if (rem != equal && tid == 0) {  // rare: exact ties straddle the cut; take them in j order
    int taken = 0, at = slot;
    for (int j = 0; j < L && taken < rem; ++j) {
      if (keys[j] == threshold) {
        cand[at++] = (static_cast<uint64_t>(~threshold) << 32) | static_cast<uint32_t>(j);
        ++taken;
      }
    }
  }
  __syncthreads();
  int32_t* out = g.top + row * g.top_stride;
  if (K <= kRankSortMax) {
    // Order the K picks by (S desc, j asc): the keys are distinct, so each one's rank is the number
    // of smaller keys (one barrier, where a bitonic network of K = 128 needs 28).
    for (int t = tid; t < K; t += kRowThreads) {
      const uint64_t mine = cand[t];
      int rank = 0;
      for (int u = 0; u < K; ++u) rank += cand[u] < mine;
      out[rank] = static_cast<int32_t>(mine & 0xffffffffu);
    }
  } else {  // long lists (low sparsity): O(K log^2 K) instead of O(K^2)
    const int padded = NextPow2(K);
    for (int t = K + tid; t < padded; t += kRowThreads) cand[t] = ~0ull;
    BitonicSort(cand, padded);
    for (int t = tid; t < K; t += kRowThreads) out[t] = static_cast<int32_t>(cand[t] & 0xffffffffu);
  }
  if (tid == 0) g.top_count[row] = K;
}


constexpr int kWarpsPerRowBlock = kRowThreads / 32;
constexpr int kWarpTopListMaxBlocks = 1024;  // above this the CTA-per-row kernel is faster (measured)

// The same row pass with one warp per row (4 rows per CTA): only __syncwarp between the steps, and
// the picks are compacted in j order with ballots instead of shared atomics. Lists longer than
// kRankSortMax, rows that do not fit shared memory and M > kWarpTopListMaxBlocks use TopListKernel.
// dynamic shared memory per warp: keys u32 [key_stride], cand u64 [cand_capacity], hist int [256]
__global__ void __launch_bounds__(kRowThreads) WarpTopListKernel(GraphBuffers g, DeviceMaskParams p, bool graph_only,
                                                                int cand_capacity, int key_stride) {
  extern __shared__ uint64_t smem64[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  uint64_t* cand = smem64 + static_cast<size_t>(warp) * cand_capacity;
  int* hist = reinterpret_cast<int*>(smem64 + static_cast<size_t>(kWarpsPerRowBlock) * cand_capacity) + warp * 256;
  uint32_t* keys = reinterpret_cast<uint32_t*>(reinterpret_cast<int*>(smem64 + static_cast<size_t>(kWarpsPerRowBlock) *
                                                                              cand_capacity) +
                                               kWarpsPerRowBlock * 256) +
                   static_cast<size_t>(warp) * key_stride;

  const int M = g.blocks, i = blockIdx.x * kWarpsPerRowBlock + warp;
  if (i >= M) return;  // whole warp: no block-wide barrier follows
  const int64_t row = static_cast<int64_t>(blockIdx.y) * M + i;
  const int L = CandidateCount(p, M, i);
  const int K = RowTopCount(p, M, i, graph_only);
  const float* s = g.scores + row * M;
  const unsigned full = 0xffffffffu;

  float mx = -__int_as_float(0x7f800000);
  for (int j = lane; j < L; j += 32) {
    const float v = s[j];
    keys[j] = OrderKey(v);
    mx = v > mx ? v : mx;
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float o = __shfl_xor_sync(full, mx, off);
    mx = o > mx ? o : mx;
  }
  __syncwarp();
  double sum = 0;
  for (int j = lane; j < L; j += 32) sum += static_cast<double>(expf(FromOrderKey(keys[j]) - mx));
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(full, sum, off);
  if (lane == 0) {
    g.row_max[row] = mx;
    g.row_inv[row] = static_cast<float>(1.0 / sum);
  }

  // Radix select of the K-th largest key, 8 bits a pass; lane l owns bins 255-8l .. 248-8l.
  uint32_t prefix = 0, pmask = 0;
  int rem = K;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = lane; b < 256; b += 32) hist[b] = 0;
    __syncwarp();
    for (int j = lane; j < L; j += 32) {
      const uint32_t k = keys[j];
      if ((k & pmask) == prefix) atomicAdd(&hist[(k >> shift) & 255], 1);
    }
    __syncwarp();
    int c = 0;
    for (int b = 0; b < 8; ++b) c += hist[255 - 8 * lane - b];
    const int inc = WarpInclusiveSum(c);
    const int exc = inc - c;
    int digit = 0, above = 0;
    const bool mine = exc < rem && rem <= inc;
    if (mine) {
      int cum = exc;
      for (int b = 0; b < 8; ++b) {
        const int bin = 255 - 8 * lane - b;
        if (cum + hist[bin] >= rem) {
          digit = bin;
          above = cum;
          break;
        }
        cum += hist[bin];
      }
    }
    const int src = __ffs(__ballot_sync(full, mine)) - 1;
    digit = __shfl_sync(full, digit, src);
    above = __shfl_sync(full, above, src);
    prefix |= static_cast<uint32_t>(digit) << shift;
    pmask |= 255u << shift;
    rem -= above;
    __syncwarp();
  }
  const uint32_t threshold = prefix;

  // Keys above the threshold, and the first `rem` keys equal to it in j order (exact ties).
  int slot = 0, ties = 0;
  const unsigned lower = (1u << lane) - 1;
  for (int base = 0; base < L; base += 32) {
    const int j = base + lane;
    const uint32_t k = j < L ? keys[j] : 0u;
    const bool tie = j < L && k == threshold;
    const unsigned tie_mask = __ballot_sync(full, tie);
    const bool take = (j < L && k > threshold) || (tie && ties + __popc(tie_mask & lower) < rem);
    const unsigned take_mask = __ballot_sync(full, take);
    if (take) cand[slot + __popc(take_mask & lower)] = (static_cast<uint64_t>(~k) << 32) | static_cast<uint32_t>(j);
    slot += __popc(take_mask);
    ties += __popc(tie_mask);
  }
  __syncwarp();
  int32_t* out = g.top + row * g.top_stride;
  for (int t = lane; t < K; t += 32) {  // keys are distinct: rank = number of smaller keys
    const uint64_t mine_key = cand[t];
    int rank = 0;
    for (int u = 0; u < K; ++u) rank += cand[u] < mine_key;
    out[rank] = static_cast<int32_t>(mine_key & 0xffffffffu);
  }
  if (lane == 0) g.top_count[row] = K;
}

// CAB_CUDA_TOPLISTS picks the kernel for benchmarks comparing them: unset or "threshold" (the
// default, top_lists_threshold.cu), "warp" (WarpTopListKernel up to M = 1024) or "block"
// (TopListKernel everywhere).
enum class TopListKind { kThreshold, kWarp, kBlock };
TopListKind TopListKindFromEnv() {
  static const TopListKind kind = [] {
    const char* e = std::getenv("CAB_CUDA_TOPLISTS");
    const std::string v = e ? e : "";
    return v == "block" ? TopListKind::kBlock : v == "warp" ? TopListKind::kWarp : TopListKind::kThreshold;
  }();
  return kind;
}

}  // namespace

int TopCapacity(const DeviceMaskParams& p, int blocks) {
  int want = p.degree + 1;
  const bool ranked = p.policy == static_cast<int>(MaskPolicy::kCab) ||
                      p.policy == static_cast<int>(MaskPolicy::kMagnitude) ||
                      p.policy == static_cast<int>(MaskPolicy::kQuest);
  if (ranked) {
    // The budget grows with the row; the last row's is the largest (RowBudget is monotone in row).
    MaskParams mp;
    mp.sparsity = p.sparsity;
    mp.blocks_per_row = p.blocks_per_row;
    mp.min_keep = p.min_keep;
    want = std::max(want, RowBudget(mp, blocks - 1));
  }
  return std::min(want, blocks);
}

absl::Status LaunchTopLists(const GraphBuffers& g, const DeviceMaskParams& p, bool graph_only, bool set_edges,
                            bool* edges_set, cudaStream_t stream) {
  *edges_set = false;
  const TopListKind kind = TopListKindFromEnv();
  if (kind == TopListKind::kThreshold && g.top_stride <= kThresholdTopListMaxK) {
    *edges_set = set_edges;
    return LaunchThresholdTopLists(g, p, graph_only, set_edges, stream);
  }
  const int capacity = NextPow2(g.top_stride);
  {
    const int key_stride = (g.blocks + 1) & ~1;  // keeps every warp's keys 8-byte aligned
    const size_t warp_smem = kWarpsPerRowBlock * (static_cast<size_t>(g.top_stride) * sizeof(uint64_t) + 256 * sizeof(int) +
                                                  static_cast<size_t>(key_stride) * sizeof(uint32_t));
    // Measured on an H100 (notes/gpu-runs.md run 6): the warp kernel takes 0.123 ms where the CTA
    // kernel takes 0.191 at M = 1024 (32 heads), but 0.531 vs 0.497 at M = 2048, where 64 keys per
    // lane and 40 KiB of shared memory per CTA cost more than the barriers it saves.
    if (kind != TopListKind::kBlock && g.blocks <= kWarpTopListMaxBlocks && g.top_stride <= kRankSortMax &&
        warp_smem <= 100 * 1024) {
      if (warp_smem > 48 * 1024) {
        CAB_CUDA_RETURN(cudaFuncSetAttribute(WarpTopListKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(warp_smem)));
      }
      dim3 grid((g.blocks + kWarpsPerRowBlock - 1) / kWarpsPerRowBlock, g.heads);
      WarpTopListKernel<<<grid, kRowThreads, warp_smem, stream>>>(g, p, graph_only, g.top_stride, key_stride);
      CAB_CUDA_LAUNCHED("top lists (warp per row)");
      return absl::OkStatus();
    }
  }
  const size_t smem = static_cast<size_t>(capacity) * sizeof(uint64_t) + static_cast<size_t>(g.blocks) * sizeof(uint32_t);
  if (smem > 48 * 1024) {
    CAB_CUDA_RETURN(cudaFuncSetAttribute(TopListKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  dim3 grid(g.blocks, g.heads);
  TopListKernel<<<grid, kRowThreads, smem, stream>>>(g, p, graph_only, capacity);
  CAB_CUDA_LAUNCHED("top lists");
  return absl::OkStatus();
}

}  // namespace cab::cuda
