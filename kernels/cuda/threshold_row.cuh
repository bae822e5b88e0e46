// One row's top list by a sampled threshold (the algorithm is described in top_lists_threshold.cu),
// by one warp, from a row of S in global memory (ThresholdTopListKernel) or in shared memory (the
// fused score kernel of scores_top_lists.cu, where S is never written to memory).
#pragma once

#include "row_edges.cuh"
#include "top_lists_internal.cuh"

namespace cab::cuda::threshold {

constexpr int kUnroll = 4;  // loads in flight per lane
constexpr unsigned kFull = 0xffffffffu;

// The largest t, a multiple of 2^low_bit, with count(key >= t) >= K over the warp's keys, where
// `count_at_least(t)` is this lane's count. low_bit = 0: the K-th largest key. Every lane gets
// the same answer.
template <typename CountAtLeast>
__device__ __forceinline__ uint32_t KthLargestKey(int K, int low_bit, CountAtLeast count_at_least) {
  uint32_t t = 0;
  for (int bit = 31; bit >= low_bit; --bit) {
    const uint32_t c = t | (1u << bit);
    if (static_cast<int>(__reduce_add_sync(kFull, count_at_least(c))) >= K) t = c;
  }
  return t;
}

// Candidates are kept as (score bits, j): cheap to write in the row pass, where most lanes take
// nothing. SortKey turns one into a key whose ascending order is (S desc, j asc); keys carry j, so
// they are distinct.
__device__ __forceinline__ uint64_t Candidate(float v, int j) {
  return (static_cast<uint64_t>(__float_as_uint(v)) << 32) | static_cast<uint32_t>(j);
}
__device__ __forceinline__ uint64_t SortKey(uint64_t candidate) {
  const uint32_t key = OrderKey(__uint_as_float(static_cast<uint32_t>(candidate >> 32)));
  return (static_cast<uint64_t>(~key) << 32) | (candidate & 0xffffffffu);
}

// The n <= 32 R candidates sorted into (S desc, j asc) order in place by WarpBitonicSort (in
// registers). For the lists of M <= 2048 blocks (R <= 4) this replaced the shared-memory network
// below, whose loads, stores and __syncwarp per stage were ~30% of the kernel's instructions (ncu,
// run 68).
template <int R>
__device__ __forceinline__ void WarpSortCandidatesInRegisters(uint64_t* cand, int n) {
  const int lane = threadIdx.x % 32;
  uint64_t x[R];
#pragma unroll
  for (int r = 0; r < R; ++r) x[r] = 32 * r + lane < n ? SortKey(cand[32 * r + lane]) : ~0ull;
  WarpBitonicSort<R>(x);
  __syncwarp();  // every lane has read its inputs before any is overwritten
#pragma unroll
  for (int r = 0; r < R; ++r) cand[32 * r + lane] = x[r];
  __syncwarp();
}

// Sorts the n candidates (n <= cap, a power of two) into (S desc, j asc) order in place, by a
// warp-wide bitonic network in shared memory: O(n log^2 n) work and no registers held, where
// ranking every candidate against every other (the first version) cost n^2 / 32 compares per lane
// and was 29% of the kernel's instructions (ncu, M = 2048); a register network made the kernel
// hold 80 registers (half the warps).
__device__ __forceinline__ void WarpSortCandidates(uint64_t* cand, int n) {
  const int lane = threadIdx.x % 32;
  const int padded = NextPow2(max(n, 2));
  for (int i = lane; i < padded; i += 32) cand[i] = i < n ? SortKey(cand[i]) : ~0ull;
  for (int size = 2; size <= padded; size <<= 1) {
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      __syncwarp();
      for (int t = lane; t < padded / 2; t += 32) {
        const int lo = 2 * t - (t & (stride - 1)), hi = lo + stride;
        const uint64_t a = cand[lo], b = cand[hi];
        if ((a > b) == ((lo & size) == 0)) {
          cand[lo] = b;
          cand[hi] = a;
        }
      }
    }
  }
  __syncwarp();
}

// Scores j of a row as seen by one lane, W at a time (W = 4: one 16-byte load; the row must be
// 16-byte aligned, i.e. M % 4 == 0). Unit u of lane l covers j = W (l + 32 u) .. + W - 1; scores at
// or past L read as -inf (S past the causal support may be unwritten).
template <bool kShared>
__device__ __forceinline__ float LoadScore(const float* at) {
  if constexpr (kShared) return *at;
  return __ldg(at);
}
template <int W, bool kShared>
struct RowUnits {
  const float* s;
  int L;
  __device__ __forceinline__ void Load(int unit, float (&v)[W]) const {
    const int j0 = W * unit;
    const float kNegInf = -__int_as_float(0x7f800000);
    if constexpr (W == 4) {
      if (j0 + 3 < L) {
        const float4 x = kShared ? *reinterpret_cast<const float4*>(s + j0) : __ldg(reinterpret_cast<const float4*>(s + j0));
        v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
        return;
      }
    }
#pragma unroll
    for (int e = 0; e < W; ++e) v[e] = j0 + e < L ? LoadScore<kShared>(s + j0 + e) : kNegInf;
  }
};

// Among the n candidates (unordered, n <= cap), keeps only those whose top 16 key bits reach the
// K-th largest such prefix: still every one of the K best, and usually few more than K. Worth it
// when that lets the sort below run on half the padded length (the sort was 31% of this kernel's
// instructions, ncu at M = 2048). Returns the new count.
__device__ __forceinline__ int PruneCandidates(uint64_t* cand, int n, int K, int cap) {
  const int lane = threadIdx.x % 32;
  constexpr int kMaxPerLane = 8;  // cap <= 256
  if (cap > 32 * kMaxPerLane || NextPow2(max(n, 2)) <= NextPow2(max(K, 2))) return n;
  uint32_t key[kMaxPerLane];
#pragma unroll
  for (int u = 0; u < kMaxPerLane; ++u) {
    const int i = lane + 32 * u;
    key[u] = i < n ? OrderKey(__uint_as_float(static_cast<uint32_t>(cand[i] >> 32))) : 0u;
  }
  const uint32_t t = KthLargestKey(K, 16, [&](uint32_t c) {
    unsigned m = 0;
#pragma unroll
    for (int u = 0; u < kMaxPerLane; ++u) m += key[u] >= c;
    return m;
  });
  // In place, in ascending index order: round u writes below 32 (u + 1), where round u + 1 reads.
  const unsigned lower = (1u << lane) - 1;
  int out = 0;
#pragma unroll
  for (int u = 0; u < kMaxPerLane; ++u) {
    const int i = lane + 32 * u;
    const uint64_t entry = i < n ? cand[i] : 0ull;
    const bool take = i < n && key[u] >= t;
    const unsigned m = __ballot_sync(kFull, take);
    __syncwarp();  // this round's entries are read before any of them is overwritten
    if (take) cand[out + __popc(m & lower)] = entry;
    out += __popc(m);
    __syncwarp();
  }
  return out;
}

// One row, by one warp, with G groups per lane and W scores per load (the sample of step 2 holds
// >= K scores; see the kernel); edge_r >= 0: also the row's graph edges (SetRowEdges). kSum: the
// softmax sum (row_inv), else row_inv = NaN (nothing reads it, see SelectReadsScores). `scores` is
// the row's first score, in shared memory where kShared (plain loads instead of __ldg).
template <int G, int W, bool kSum, bool kShared = false>
__device__ __forceinline__ void ThresholdRow(const GraphBuffers& g, int64_t row, const float* scores, int L, int K,
                                             uint64_t* cand, int cap, int edge_r) {
  const int lane = threadIdx.x % 32;
  const RowUnits<W, kShared> units{scores, L};
  // 1. Lane l holds units l + 32 t for t < per_lane; group q holds t in [q gs, (q + 1) gs).
  const int unit_count = (L + W - 1) / W;
  const int per_lane = (unit_count - lane + 31) / 32;
  const int gs = ((unit_count + 31) / 32 + G - 1) / G;
  const float kNegInf = -__int_as_float(0x7f800000);
  constexpr int kU = W == 1 ? kUnroll : 2;  // loads in flight per step
  float gmax[G];
#pragma unroll
  for (int q = 0; q < G; ++q) {
    gmax[q] = kNegInf;
    const int t_end = min((q + 1) * gs, per_lane);
    for (int t = q * gs; t < t_end; t += kU) {
      float v[kU][W];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (t + u < t_end) {
          units.Load(lane + 32 * (t + u), v[u]);
        } else {
#pragma unroll
          for (int e = 0; e < W; ++e) v[u][e] = kNegInf;
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
#pragma unroll
        for (int e = 0; e < W; ++e) gmax[q] = fmaxf(gmax[q], v[u][e]);
      }
    }
  }
  // The row max (S is finite: inputs are validated, so fmaxf equals the CPU's `s > mx ? s : mx`),
  // and the group keys; 0 marks an empty group (no float maps to key 0: NaN ranks as -inf).
  float mx = kNegInf;
  uint32_t key[G];
#pragma unroll
  for (int q = 0; q < G; ++q) {
    mx = fmaxf(mx, gmax[q]);
    key[q] = q * gs < per_lane ? OrderKey(gmax[q]) : 0u;
  }
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, off));

  // 2. The sample holds >= K scores: with gs = 1 it is every unit's maximum (the whole row where
  // W = 1; ceil(L / 4) >= 2 K of them where the kernel takes W = 4); with gs >= 2 every lane has
  // >= G / 2 groups, and 16 G >= K (G = 4 only for K <= 64, 16 for K > 128). 16 key bits (sign,
  // exponent and 7 mantissa bits) place T within 1% of the K-th group maximum: good enough to cut,
  // half the steps.
  const uint32_t threshold = KthLargestKey(K, 16, [&](uint32_t t) {
    unsigned n = 0;
#pragma unroll
    for (int q = 0; q < G; ++q) n += key[q] >= t;
    return n;
  });
  // In floats: v >= t_float <=> OrderKey(v) >= threshold for every finite v except -0 against +0,
  // which only adds a candidate (candidates are ranked by key below).
  const float t_float = FromOrderKey(threshold);

  // 3. Softmax sum and the scores >= T (any order: step 4 sorts by key). The sum is a float per
  // lane (at most L / 32 terms, each <= 1) reduced over the warp: relative error ~ (L / 32) 2^-24,
  // 4e-6 at L = 2048, where a double per element cost a float->double conversion (quarter rate).
  // exp(v - mx) as 2^(v log2 e - mx log2 e): one FMA and the SFU's exp2 (-inf past L gives 0).
  constexpr float kLog2e = 1.4426950408889634f;
  const float mx_log2 = mx * kLog2e;
  const unsigned lower = (1u << lane) - 1;
  float sum = 0.f;
  int slot = 0;
  for (int base = 0; base < unit_count; base += 32 * kU) {
    float v[kU][W];
#pragma unroll
    for (int u = 0; u < kU; ++u) units.Load(base + 32 * u + lane, v[u]);  // past the row: -inf
#pragma unroll
    for (int u = 0; u < kU; ++u) {
#pragma unroll
      for (int e = 0; e < W; ++e) {
        const int j = W * (base + 32 * u + lane) + e;
        if constexpr (kSum) sum += exp2f(fmaf(v[u][e], kLog2e, -mx_log2));
        const bool take = v[u][e] >= t_float;  // false past L: v = -inf < t_float
        const unsigned m = __ballot_sync(kFull, take);
        const int at = slot + __popc(m & lower);
        if (take && at < cap) cand[at] = Candidate(v[u][e], j);
        slot += __popc(m);
      }
    }
  }
  if constexpr (kSum) {
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(kFull, sum, off);
  }
  if (lane == 0) {
    g.row_max[row] = mx;
    g.row_inv[row] = kSum ? 1.f / sum : __int_as_float(0x7fc00000);
  }
  const float* s = units.s;

  if (slot > cap) {  // warp-uniform; rare: many equal scores at the cut
    const uint32_t kth = KthLargestKey(K, 0, [&](uint32_t t) {
      unsigned n = 0;
      for (int j = lane; j < L; j += 32) n += OrderKey(LoadScore<kShared>(s + j)) >= t;
      return n;
    });
    unsigned above_lane = 0;
    for (int j = lane; j < L; j += 32) above_lane += OrderKey(LoadScore<kShared>(s + j)) > kth;
    const int rem = K - static_cast<int>(__reduce_add_sync(kFull, above_lane));  // ties to take, lowest j first
    slot = 0;
    int ties = 0;
    for (int base = 0; base < L; base += 32) {
      const int j = base + lane;
      const float v = j < L ? LoadScore<kShared>(s + j) : 0.f;
      const uint32_t k = j < L ? OrderKey(v) : 0u;
      const bool tie = j < L && k == kth;
      const unsigned tie_mask = __ballot_sync(kFull, tie);
      const bool take = (j < L && k > kth) || (tie && ties + __popc(tie_mask & lower) < rem);
      const unsigned m = __ballot_sync(kFull, take);
      if (take) cand[slot + __popc(m & lower)] = Candidate(v, j);
      slot += __popc(m);
      ties += __popc(tie_mask);
    }
  }
  __syncwarp();

  // 4. The first K candidates in (S desc, j asc) order.
  slot = PruneCandidates(cand, slot, K, cap);
  if (slot <= 32) {
    WarpSortCandidatesInRegisters<1>(cand, slot);
  } else if (slot <= 64) {
    WarpSortCandidatesInRegisters<2>(cand, slot);
  } else if (slot <= 128) {
    WarpSortCandidatesInRegisters<4>(cand, slot);
  } else {
    WarpSortCandidates(cand, slot);
  }
  int32_t* out = g.top + row * g.top_stride;
  for (int i = lane; i < K; i += 32) out[i] = static_cast<int32_t>(cand[i] & 0xffffffffu);
  if (lane == 0) g.top_count[row] = K;
  if (edge_r >= 0) {  // the graph's edges from the sorted keys, still in shared memory (no edge launch)
    SetRowEdges(g, row, static_cast<int>(row % g.blocks), min(K, edge_r + 1), edge_r,
                [&](int t) { return static_cast<int>(cand[t] & 0xffffffffu); });
  }
}

}  // namespace cab::cuda::threshold
