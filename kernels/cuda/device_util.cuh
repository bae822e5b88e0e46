// Small device helpers shared by the predictor kernels: sortable keys, a warp bitonic sort in
// registers, 128-thread block reductions and scans, a shared-memory bitonic sort, and the row
// budget (bit-identical to cab::RowBudget).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "predict_kernels.h"

namespace cab::cuda {

constexpr int kRowThreads = 128;  // threads of every per-row kernel
constexpr int kRankSortMax = 256;  // lists up to this long are ordered by rank counting, longer by bitonic sort

// Maps a float to a uint32 whose unsigned order is the float order; NaN ranks as -inf (as the CPU
// backend's RankKey does).
__device__ __forceinline__ uint32_t OrderKey(float v) {
  if (v != v) v = -__int_as_float(0x7f800000);
  uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Sorts the warp's 32 R keys ascending: lane l holds elements l + 32 r, a bitonic network with
// shuffles for strides < 32 and swaps inside the lane for larger ones; every loop unrolls, so no
// register is indexed at run time. All 32 lanes must call it.
template <int R>
__device__ __forceinline__ void WarpBitonicSort(uint64_t (&x)[R]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int size = 2; size <= 32 * R; size <<= 1) {
#pragma unroll
    for (int stride = size / 2; stride > 0; stride >>= 1) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const bool ascending = ((32 * r + lane) & size) == 0;
        if (stride >= 32) {  // partner r + stride / 32 in this lane; the lower index orders the pair
          const int q = r + stride / 32;
          if ((r & (stride / 32)) == 0) {
            const uint64_t a = x[r], b = x[q];
            const bool swap = (a > b) == ascending;
            x[r] = swap ? b : a;
            x[q] = swap ? a : b;
          }
        } else {
          const uint32_t lo = __shfl_xor_sync(0xffffffffu, static_cast<uint32_t>(x[r]), stride);
          const uint32_t hi = __shfl_xor_sync(0xffffffffu, static_cast<uint32_t>(x[r] >> 32), stride);
          const uint64_t other = (static_cast<uint64_t>(hi) << 32) | lo;
          const bool keep_min = ((lane & stride) == 0) == ascending;
          x[r] = (x[r] < other) == keep_min ? x[r] : other;
        }
      }
    }
  }
}

// Inverse of OrderKey for keys of finite values.
__device__ __forceinline__ float FromOrderKey(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ int CandidateCount(const DeviceMaskParams& p, int blocks, int row) {
  return p.causal ? row + 1 : blocks;
}

// cab::RowBudget, the same double arithmetic, so budgets match the CPU backend bit for bit.
__device__ __forceinline__ int RowBudgetDevice(const DeviceMaskParams& p, int row) {
  int k;
  if (p.blocks_per_row > 0) {
    k = p.blocks_per_row;
  } else {
    const double causal_candidates = row + 1.0;
    k = static_cast<int>(ceil((1.0 - static_cast<double>(p.sparsity)) * causal_candidates - 1e-6));
  }
  return k < p.min_keep ? p.min_keep : k;
}

__device__ __forceinline__ int ClampedBudgetDevice(const DeviceMaskParams& p, int blocks, int row) {
  return min(RowBudgetDevice(p, row), CandidateCount(p, blocks, row));
}

template <typename T, typename Op>
__device__ __forceinline__ T BlockReduce(T v, Op op, T* scratch /* >= 4 */) {
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < kRowThreads / 32; ++w) r = op(r, scratch[w]);
  return r;
}

// Inclusive prefix sum over the 32 lanes of a (full) warp: lane l gets v_0 + ... + v_l.
template <typename T>
__device__ __forceinline__ T WarpInclusiveSum(T v) {
  const int lane = threadIdx.x % 32;
  for (int off = 1; off < 32; off <<= 1) {
    const T o = __shfl_up_sync(0xffffffffu, v, off);
    if (lane >= off) v += o;
  }
  return v;
}

// Exclusive prefix sum over the block's 128 threads; *total gets the sum.
template <typename T>
__device__ __forceinline__ T BlockExclusiveScan(T v, T* scratch /* >= 4 */, T* total) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T inc = WarpInclusiveSum(v);
  __syncthreads();
  if (lane == 31) scratch[warp] = inc;
  __syncthreads();
  T before = 0, all = 0;
  for (int w = 0; w < kRowThreads / 32; ++w) {
    if (w < warp) before += scratch[w];
    all += scratch[w];
  }
  *total = all;
  return before + inc - v;
}

// Ascending bitonic sort of n (a power of two) keys in shared memory by the whole block.
__device__ __forceinline__ void BitonicSort(uint64_t* keys, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
        const int lo = 2 * t - (t & (stride - 1));
        const int hi = lo + stride;
        const bool up = (lo & size) == 0;
        const uint64_t a = keys[lo], b = keys[hi];
        if ((a > b) == up) { keys[lo] = b; keys[hi] = a; }
      }
    }
  }
  __syncthreads();
}

// The smallest power of two >= n (1 for n <= 1). On the device a count-leading-zeros: the loop it
// replaced was 4% of the top-list kernel's instructions (ncu, run 68).
__host__ __device__ inline int NextPow2(int n) {
#ifdef __CUDA_ARCH__
  return n <= 1 ? 1 : 1 << (32 - __clz(n - 1));
#else
  int p = 1;
  while (p < n) p <<= 1;
  return p;
#endif
}

}  // namespace cab::cuda
