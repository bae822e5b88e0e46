// Row pass over S (SPEC 2): softmax statistics and each row's K strongest support blocks, ordered by
// (S desc, j asc). K covers both the graph's r neighbours (plus the diagonal, which the graph skips)
// and the policy's row budget, so that selection never has to read S again. Top-K by S equals
// top-K by A: the softmax is monotone within a row.
#include <algorithm>
#include <cfloat>

#include "cuda_status.h"
#include "device_util.cuh"

namespace cab::cuda {
namespace {

__device__ __forceinline__ int RowTopCount(const DeviceMaskParams& p, int blocks, int row, bool graph_only) {
  const int support = CandidateCount(p, blocks, row);
  int want = p.degree + 1;
  const bool ranked = p.policy == static_cast<int>(MaskPolicy::kCab) ||
                      p.policy == static_cast<int>(MaskPolicy::kMagnitude) ||
                      p.policy == static_cast<int>(MaskPolicy::kQuest);
  if (!graph_only && ranked) want = max(want, RowBudgetDevice(p, row));
  return min(support, want);
}

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
      int inc = c;
      for (int off = 1; off < 32; off <<= 1) {
        const int o = __shfl_up_sync(0xffffffffu, inc, off);
        if (tid >= off) inc += o;
      }
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

absl::Status LaunchTopLists(const GraphBuffers& g, const DeviceMaskParams& p, bool graph_only, cudaStream_t stream) {
  const int capacity = NextPow2(g.top_stride);
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
