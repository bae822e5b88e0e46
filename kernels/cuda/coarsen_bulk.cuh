// Coarsening fed by the bulk copy engine (the default for the common shapes; see coarsen_kernel.cu).
//
// Why: the register-fed warp kernel (a warp per block, 16-byte loads 8 deep) streamed Q and K at
// 2.4 TB/s: a warp has at most 4 KiB in flight and none while it folds, screens and re-measures,
// and 82 registers per thread cap the warps per SM. Here loads do not live in registers: each warp
// keeps a ring of `stages` shared-memory buffers filled by cp.async.bulk (one thread issues a
// chunk of up to `chunk` whole token rows, contiguous in memory), so up to stages - 1 chunks per warp
// are in flight while it computes on the oldest one, also across the end of a block.
// Measured (H100, 128k, B=1, H=32, D=128, bf16, Q+K; notes/gpu-runs.md runs c3-1, c3-2): 0.90 ms
// with the warp kernel, 0.80 ms here (block 64), 0.78 (block 128); a pure 2 GiB read takes 0.70 ms.
// What decides the rate is how fast the warps consume, not bytes in flight: 8 warps per SM with the
// first inner loop ran at 0.98 ms whatever the stages, 12-16 warps or the leaner loop at 0.80.
//
// Work: a persistent grid; warp w of the grid takes blocks (items) w, w + warps, ... so that at any
// moment the grid reads one contiguous window of the tensor; with a work counter every warp claims
// its next block instead (same window, but a CTA that starts late takes fewer blocks), and with
// parts the blocks go part by part and each part's finished blocks are counted (CoarsenArgs).
// Inside a chunk the layout is the warp kernel's: G = 32 / V token groups of V lanes, lane v owning channels [v*VEC, v*VEC + VEC), token t
// on group t % G (chunks hold a multiple of G tokens, so every group sums the same tokens in the same
// order as the warp kernel: identical means).
//
// Max-L2 pick, incrementally per chunk: fp32 norms screen, and every token whose norm is within 0.1%
// of the running maximum (this chunk included) is re-measured in double from shared memory (the
// CPU's arithmetic, the warp kernel's summation order) while its chunk is resident; the largest
// exact norm wins, ties to the lower index (tokens are visited in ascending order). The running
// maximum never exceeds the block's, so the winner (within fp32 error of the block's maximum) is
// always re-measured: the same answer as screening against the whole block's maximum.
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "bulk_copy.cuh"
#include "coarsen_kernel.h"
#include "coarsen_widen.cuh"
#include "cuda_status.h"

namespace cab::cuda {

constexpr int kBulkMaxThreads = 512;
constexpr int kClaimRing = 16;  // per warp; > stages + 1 (LaunchBulk caps stages at kClaimRing - 2)

// Shapes of one launch, computed on the host; offsets are into the dynamic shared memory.
struct BulkPlan {
  int blocks = 0;        // M
  int64_t items = 0;     // B * H * M, of both tensors where a launch coarsens two
  int split_bh = 0;      // rows (b, h) of the first tensor; rows at or past it are the second's
  int stages = 0;        // ring length per warp
  int chunk = 0;         // tokens per copy (a multiple of G)
  uint32_t stage_bytes = 0, norm_off = 0, rep_off = 0, bar_off = 0, claim_off = 0, smem_bytes = 0;
  uint32_t* work_counter = nullptr;  // [claims, warps done]: dynamic claiming (CoarsenArgs::work_counter)
  // Parts (CoarsenArgs::groups): part g holds rows [end_q[g - 1], end_q[g]) of the first tensor
  // and [end_k[g - 1], end_k[g]) of the second (end[-1] = 0), items part-major, so part g's items
  // end at row end_q[g] + end_k[g] of that order; group_done null: one part, rows in order.
  int parts = 0;
  int end_q[CoarsenArgs::kMaxParts] = {}, end_k[CoarsenArgs::kMaxParts] = {};
  uint32_t* group_done = nullptr;
  bool evict_first = false;
  bool fast = true;  // false: the first version of the inner loop (see BulkCoarsenKernel)
};

// Tunables (CAB_CUDA_COARSEN selects them for measurements; see coarsen_kernel.cu).
struct BulkConfig {
  // Measured best with 9 other plans at 128k (run c3-2): two CTAs of 8 warps per SM, 6 KiB copies.
  int warps = 8;               // per CTA
  int stages = 2;              // per warp
  int chunk_bytes = 6 * 1024;  // target bytes per copy
  bool evict_first = false;
  bool fast = true;  // false: the first version of the inner loop (see BulkCoarsenKernel)
};

// A lane's VEC output channels, as 16-byte stores where VEC allows (outputs are 16-byte aligned:
// every row starts at a multiple of D floats, and D is a multiple of VEC).
template <int VEC>
__device__ __forceinline__ void StoreChannels(float* dst, const float (&v)[VEC]) {
  if constexpr (VEC % 4 == 0) {
#pragma unroll
    for (int i = 0; i < VEC; i += 4) *reinterpret_cast<float4*>(dst + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[i] = v[i];
  }
}

// The same channels in bf16 (16-byte stores when VEC is a multiple of 8).
template <int VEC>
__device__ __forceinline__ void StoreChannelsBf16(__nv_bfloat16* dst, const float (&v)[VEC]) {
  if constexpr (VEC % 8 == 0) {
#pragma unroll
    for (int i = 0; i < VEC; i += 8) {
      __nv_bfloat162 h[4];
#pragma unroll
      for (int p = 0; p < 4; ++p) h[p] = __floats2bfloat162_rn(v[i + 2 * p], v[i + 2 * p + 1]);
      *reinterpret_cast<uint4*>(dst + i) = *reinterpret_cast<const uint4*>(h);
    }
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[i] = __float2bfloat16_rn(v[i]);
  }
}

// Combines the channel statistics (sum, min, max) of the warp's 32 / V token groups: lanes that
// hold the same channels (lane % V) end with the block's totals.
template <int V, int VEC>
__device__ __forceinline__ void CombineGroupStats(float (&sum)[VEC], float (&mn)[VEC], float (&mx)[VEC]) {
#pragma unroll
  for (int off = V; off < 32; off <<= 1) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], off);
      mn[i] = fminf(mn[i], __shfl_xor_sync(0xffffffffu, mn[i], off));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], off));
    }
  }
}

template <int V>
__device__ __forceinline__ float ReduceScatter4(const float (&x)[4], int v, unsigned mask, int* u) {
  const bool hi = (v & (V / 2)) != 0, lo = (v & (V / 4)) != 0;
  const float y0 = (hi ? x[2] : x[0]) + __shfl_xor_sync(mask, hi ? x[0] : x[2], V / 2, V);
  const float y1 = (hi ? x[3] : x[1]) + __shfl_xor_sync(mask, hi ? x[1] : x[3], V / 2, V);
  float z = (lo ? y1 : y0) + __shfl_xor_sync(mask, lo ? y0 : y1, V / 4, V);
#pragma unroll
  for (int off = V / 8; off > 0; off >>= 1) z += __shfl_xor_sync(mask, z, off, V);
  *u = (lo ? 1 : 0) + (hi ? 2 : 0);
  return z;
}

// kFast (the default): full rounds of 4 token rows per group without guards and with the norms
// reduced by ReduceScatter4, 32-bit block indices, chunk maxima kept in registers. Otherwise the
// first version (every row guarded, a butterfly per row), kept for comparison (CAB_CUDA_COARSEN).
// kStats: also the channel sums, minima and maxima (mean, Quest's bounds). Without them the inner
// loop is a widen and an FMA per element instead of five operations, and the consumer is what
// limits this kernel (see the top of this file); max-L2 representatives alone need no more.
template <typename T, int VEC, int V, bool kFast, bool kStats>
// One launch may coarsen two tensors of the same dtype, tokens, block and head dim (the queries and
// the keys): their (b, h) rows are concatenated, `a` holding the first p.split_bh and `b` the rest,
// so that one persistent grid streams both (one ramp-up and one tail instead of two).
__global__ void __launch_bounds__(kBulkMaxThreads, 1) BulkCoarsenKernel(CoarsenArgs a, CoarsenArgs b, BulkPlan p) {
  constexpr int G = 32 / V;  // token groups per warp
  constexpr int D = V * VEC;  // this path is chosen only when a.dim == V * VEC
  constexpr int kRowBytes = D * static_cast<int>(sizeof(T));
  constexpr int kUnroll = 4;  // token rows per group loaded before the first is used
  constexpr bool kScatter = kFast && V >= 4;
  extern __shared__ __align__(128) unsigned char smem[];
  const int W = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / V, v = lane % V;

  unsigned char* ring = smem + static_cast<size_t>(warp) * p.stages * p.stage_bytes;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + p.bar_off) + warp * p.stages;
  float* norm = reinterpret_cast<float*>(smem + p.norm_off) + warp * p.chunk;
  float* rep = reinterpret_cast<float*>(smem + p.rep_off) + warp * D;
  // Claimed blocks the producer has started but the consumer has not reached (dynamic claiming):
  // the producer runs at most `stages` chunks, so at most stages + 1 blocks, ahead.
  int* claims = reinterpret_cast<int*>(smem + p.claim_off) + warp * kClaimRing;
  if (lane == 0) {
    for (int s = 0; s < p.stages; ++s) bulk::InitBarrier(&bars[s]);
    bulk::FenceBarrierInit();
  }
  __syncwarp();

  // The first token of row bh (of the concatenation) and that row's index in its own tensor.
  auto row_start = [&](int bh) {
    return bh < p.split_bh ? static_cast<const T*>(a.x) + static_cast<int64_t>(bh) * a.tokens * D
                           : static_cast<const T*>(b.x) + static_cast<int64_t>(bh - p.split_bh) * a.tokens * D;
  };
  // The host guarantees items < 2^31, so block indices stay in 32 bits (cheap division).
  const int items = static_cast<int>(p.items);
  const int stride = static_cast<int>(gridDim.x) * W;
  const uint64_t policy = p.evict_first ? bulk::EvictFirstPolicy() : 0;
  auto tokens_of = [&](int m) {
    const int64_t left = a.tokens - static_cast<int64_t>(m) * a.block_size;
    return static_cast<int>(left < a.block_size ? left : a.block_size);
  };

  // The block after `item` for this warp: a fixed stride, or the next claim from the shared counter.
  // With the counter even the first block is claimed: a CTA that starts only when others have left
  // (more CTAs than fit, or the SMs held by other kernels) must not hold early blocks back.
  auto next_item = [&](int item) {
    if (p.work_counter == nullptr) return item + stride;
    int claimed = 0;
    if (lane == 0) claimed = static_cast<int>(atomicAdd(p.work_counter, 1u));
    return __shfl_sync(0xffffffffu, claimed, 0);
  };
  const int first_item = p.work_counter ? next_item(0) : static_cast<int>(blockIdx.x) * W + warp;

  // Item -> (row of the concatenation, block); with parts, the part is returned. *part holds the
  // part of the cursor's previous item: a cursor's items only grow, so the search goes on from there
  // (from 0 every time it cost up to `parts` dependent steps a block: +0.12 ms at 32 parts, run 75).
  auto locate = [&](int item, int* bh, int* m, int* part_cursor) {
    const int row = item / p.blocks;
    *m = item - row * p.blocks;
    if (p.group_done == nullptr) {
      *bh = row;
      return 0;
    }
    int part = *part_cursor;
    while (part + 1 < p.parts && row >= p.end_q[part] + p.end_k[part]) ++part;
    *part_cursor = part;
    const int q0 = part ? p.end_q[part - 1] : 0, k0 = part ? p.end_k[part - 1] : 0;
    const int r = row - q0 - k0, nq = p.end_q[part] - q0;
    *bh = r < nq ? q0 + r : p.split_bh + k0 + (r - nq);
    return part;
  };

  // Producer cursor, kept by every lane (uniform), used by lane 0: the next chunk to copy.
  int p_item = first_item, p_tok = 0;
  int p_m = 0, p_bh = 0, p_part = 0;
  locate(p_item, &p_bh, &p_m, &p_part);
  int claim_head = 0, claim_tail = 0;  // the ring of claims (dynamic claiming only)
  auto issue = [&](int s) {
    const int cnt = tokens_of(p_m);
    const int n = min(p.chunk, cnt - p_tok);
    if (lane == 0) {
      const T* src = row_start(p_bh) + (static_cast<int64_t>(p_m) * a.block_size + p_tok) * D;
      bulk::CopyToShared(ring + static_cast<size_t>(s) * p.stage_bytes, src, static_cast<uint32_t>(n * kRowBytes),
                         &bars[s], p.evict_first, policy);
    }
    p_tok += p.chunk;
    if (p_tok >= cnt) {
      p_tok = 0;
      p_item = next_item(p_item);
      if (p.work_counter != nullptr) {
        if (lane == 0) claims[claim_tail % kClaimRing] = p_item;
        ++claim_tail;
      }
      locate(p_item, &p_bh, &p_m, &p_part);
    }
  };
  for (int s = 0; s < p.stages && p_item < items; ++s) issue(s);

  const unsigned group_mask = V == 32 ? 0xffffffffu : ((1u << V) - 1u) << (g * V);
  int s = 0;
  uint32_t parity = 0;
  int c_part = 0;            // the consumer cursor's part (see locate)
  int finished_in_part = 0;  // blocks of the current part this warp finished and has not counted
  for (int item = first_item; item < items;) {
    int m = 0, bh = 0;
    const int part = locate(item, &bh, &m, &c_part);
    const int cnt = tokens_of(m);
    float sum[VEC], mn[VEC], mx[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) { sum[i] = 0.f; mn[i] = FLT_MAX; mx[i] = -FLT_MAX; }
    float screen = 0.f, bv = -1.f;

    for (int t0 = 0; t0 < cnt; t0 += p.chunk) {
      const int n = min(p.chunk, cnt - t0);
      bulk::Wait(&bars[s], parity);
      const T* buf = reinterpret_cast<const T*>(ring + static_cast<size_t>(s) * p.stage_bytes);
      if (t0 == 0) {  // the first token stands in until one is re-measured (the warp kernel's default)
        for (int d = lane; d < D; d += 32) rep[d] = Widen(buf[d]);
      }
      const T* mine = buf + g * D + v * VEC;  // this lane's word of its group's first row
      const int trips = (n - g + G - 1) / G;  // rows of this group in the chunk; same for its lanes
      float cm = 0.f;                         // largest squared norm this lane has seen in the chunk
      int r0 = 0;
      if constexpr (kFast) {
        for (; r0 + kUnroll <= trips; r0 += kUnroll) {
          uint4 raw[kUnroll];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) raw[u] = *reinterpret_cast<const uint4*>(mine + (r0 + u) * G * D);
          float sq[kUnroll];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) sq[u] = Accumulate<T, VEC, kStats>(raw[u], sum, mn, mx);
          if constexpr (kScatter) {
            int u = 0;
            const float z = ReduceScatter4<V>(sq, v, group_mask, &u);
            if (v % (V / 4) == 0) norm[g + (r0 + u) * G] = z;
            cm = fmaxf(cm, z);
          } else {
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
              for (int off = V / 2; off > 0; off >>= 1) sq[u] += __shfl_xor_sync(group_mask, sq[u], off, V);
              if (v == 0) norm[g + (r0 + u) * G] = sq[u];
              cm = fmaxf(cm, sq[u]);
            }
          }
        }
      }
      // The rest (all of it in the first version), guarded row by row.
      for (; r0 < trips; r0 += kUnroll) {
        uint4 raw[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (r0 + u < trips) raw[u] = *reinterpret_cast<const uint4*>(mine + (r0 + u) * G * D);
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (r0 + u < trips) {
            float sq = Accumulate<T, VEC, kStats>(raw[u], sum, mn, mx);
#pragma unroll
            for (int off = V / 2; off > 0; off >>= 1) sq += __shfl_xor_sync(group_mask, sq, off, V);
            if (v == 0) norm[g + (r0 + u) * G] = sq;
            cm = fmaxf(cm, sq);
          }
        }
      }
      __syncwarp();

      if constexpr (!kFast) {
        cm = 0.f;
        for (int t = lane; t < n; t += 32) cm = fmaxf(cm, norm[t]);
      }
      for (int off = 16; off > 0; off >>= 1) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, off));
      screen = fmaxf(screen, cm);
      const float threshold = screen * (1.f - 1e-3f);
      for (int tb = 0; tb < n; tb += 32) {
        unsigned cand = __ballot_sync(0xffffffffu, tb + lane < n && !(norm[tb + lane] < threshold));
        while (cand) {  // uniform across the warp, ascending token order
          const int c = tb + __ffs(cand) - 1;
          cand &= cand - 1;
          const T* row = buf + c * D;
          double s2 = 0.0;
          for (int d = lane; d < D; d += 32) {
            const double e = Widen(row[d]);
            s2 += e * e;
          }
          for (int off = 16; off > 0; off >>= 1) s2 += __shfl_xor_sync(0xffffffffu, s2, off);
          const float exact = static_cast<float>(s2);
          if (exact > bv) {
            bv = exact;
            for (int d = lane; d < D; d += 32) rep[d] = Widen(row[d]);
          }
        }
      }
      __syncwarp();  // every lane is done with this stage: refill it
      if (p_item < items) issue(s);
      if (++s == p.stages) { s = 0; parity ^= 1; }
    }

    if constexpr (kStats) {
      CombineGroupStats<V>(sum, mn, mx);
    }
    __syncwarp();  // rep is complete
    const bool second = bh >= p.split_bh;
    const int64_t row_out = static_cast<int64_t>(second ? bh - p.split_bh : bh) * p.blocks + m;
    float* const maxl2 = second ? b.maxl2 : a.maxl2;
    __nv_bfloat16* const maxl2_bf16 = second ? b.maxl2_bf16 : a.maxl2_bf16;
    if (g == 0) {
      const int64_t out = row_out * D + v * VEC;
      float r[VEC];
      const float inv = 1.f / static_cast<float>(cnt);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        r[i] = rep[v * VEC + i];
        sum[i] *= inv;
      }
      if (maxl2) StoreChannels<VEC>(maxl2 + out, r);
      if (maxl2_bf16) StoreChannelsBf16<VEC>(maxl2_bf16 + out, r);
      if constexpr (kStats) {
        const CoarsenArgs& o = second ? b : a;
        if (o.mean) StoreChannels<VEC>(o.mean + out, sum);
        if (o.kmin) StoreChannels<VEC>(o.kmin + out, mn);
        if (o.kmax) StoreChannels<VEC>(o.kmax + out, mx);
      }
    }
    if (lane == 0) {
      float* const best_norm2 = second ? b.best_norm2 : a.best_norm2;
      int32_t* const count = second ? b.count : a.count;
      if (best_norm2) best_norm2[row_out] = bv;
      if (count) count[row_out] = cnt;
    }
    __syncwarp();  // rep is read before the next block may overwrite it (and the claim is written)
    const int next = p.work_counter == nullptr ? item + stride : claims[claim_head++ % kClaimRing];
    if (p.group_done != nullptr) {
      ++finished_in_part;
      int next_bh = 0, next_m = 0;
      // Items only grow along a warp's sequence, so it leaves each part once: count there.
      if (next >= items || locate(next, &next_bh, &next_m, &c_part) != part) {
        // Every lane's stores are visible device-wide before they are counted. (Counting a chunk
        // later, when the stores have landed, or only lane 0 fencing with fence.acq_rel instead of
        // this fence.sc, measured the same: runs 64, 74.)
        __threadfence();
        __syncwarp();
        if (lane == 0) atomicAdd(p.group_done + part, static_cast<uint32_t>(finished_in_part));
        finished_in_part = 0;
      }
    }
    item = next;
  }
  if (p.work_counter != nullptr && lane == 0) {
    // The last warp out resets the pair for the next launch on this stream: every claim is made
    // by then (a warp claims only before it leaves).
    const uint32_t warps_total = gridDim.x * static_cast<uint32_t>(W);
    __threadfence();
    if (atomicAdd(p.work_counter + 1, 1u) == warps_total - 1) {
      atomicExch(p.work_counter, 0u);
      atomicExch(p.work_counter + 1, 0u);
    }
  }
}

// CTAs of `kernel` resident per SM on the current device with this shared memory, cached per
// (kernel, device, threads, bytes) so a launch costs no occupancy query; also raises the kernel's
// dynamic shared-memory limit there (an attribute of each kernel on each device: the key must name
// the kernel, or a second instantiation with the same bytes would launch without it). 0: it does
// not fit.
template <typename Kernel>
absl::StatusOr<int> ResidentCtas(Kernel kernel, int threads, uint32_t smem) {
  struct Entry { const void* kernel; int device, threads; uint32_t smem; int ctas; };
  static std::mutex mu;
  static std::vector<Entry> cache;
  const void* key = reinterpret_cast<const void*>(kernel);
  int device = 0;
  CAB_CUDA_RETURN(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  for (const Entry& e : cache) {
    if (e.kernel == key && e.device == device && e.threads == threads && e.smem == smem) return e.ctas;
  }
  int optin = 0, ctas = 0;
  CAB_CUDA_RETURN(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (smem <= static_cast<uint32_t>(optin)) {
    CAB_CUDA_RETURN(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    CAB_CUDA_RETURN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, threads, smem));
  }
  cache.push_back({key, device, threads, smem, ctas});
  return ctas;
}

inline uint32_t RoundUp(uint32_t v, uint32_t to) { return (v + to - 1) / to * to; }

// Launches the bulk-fed kernel over `a`, and over `b` too where b is not null (same dtype, batch,
// tokens, block and head dim: the caller checks); *launched = false (and nothing runs) when the plan
// does not fit on this device, so the caller falls back to the register-fed kernel.
template <typename T, int VEC, int V>
absl::Status LaunchBulk(const CoarsenArgs& a, const CoarsenArgs* b, const BulkConfig& cfg, cudaStream_t stream,
                        bool* launched) {
  constexpr int G = 32 / V;
  constexpr uint32_t kRowBytes = V * 16;
  *launched = false;
  // The copy engine reads 16-byte aligned rows; the outputs are written as 16-byte vectors.
  for (const CoarsenArgs* t : {&a, b}) {
    if (t == nullptr) continue;
    for (const void* ptr : {static_cast<const void*>(t->x), static_cast<const void*>(t->maxl2),
                            static_cast<const void*>(t->maxl2_bf16), static_cast<const void*>(t->mean),
                            static_cast<const void*>(t->kmin), static_cast<const void*>(t->kmax)}) {
      if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return absl::OkStatus();
    }
  }
  BulkPlan p;
  p.blocks = a.blocks();
  p.split_bh = a.batch * a.heads;
  p.items = static_cast<int64_t>(p.split_bh + (b ? b->batch * b->heads : 0)) * p.blocks;
  if (p.items > (int64_t{1} << 30)) return absl::OkStatus();  // the kernel indexes blocks in 32 bits
  const int block_groups = (a.block_size + G - 1) / G * G;
  // Tokens per copy: whole rounds of 4 rows per group where the target allows, else whole groups.
  const int rows = static_cast<int>(cfg.chunk_bytes / kRowBytes);
  int chunk = rows >= 4 * G ? rows / (4 * G) * (4 * G) : rows / G * G;
  chunk = chunk < G ? G : chunk;
  p.chunk = chunk < block_groups ? chunk : block_groups;
  p.stages = cfg.stages < 2 ? 2 : (cfg.stages > kClaimRing - 2 ? kClaimRing - 2 : cfg.stages);
  p.evict_first = cfg.evict_first;
  const int warps = cfg.warps;
  p.stage_bytes = RoundUp(static_cast<uint32_t>(p.chunk) * kRowBytes, 128);
  p.norm_off = warps * p.stages * p.stage_bytes;
  p.rep_off = RoundUp(p.norm_off + warps * p.chunk * 4, 16);
  p.claim_off = RoundUp(p.rep_off + warps * V * VEC * 4, 16);
  p.bar_off = RoundUp(p.claim_off + warps * kClaimRing * 4, 8);
  p.smem_bytes = p.bar_off + warps * p.stages * 8;
  p.work_counter = a.work_counter;
  if (a.group_done != nullptr) {
    const int rows_b = b ? b->batch * b->heads : 0;
    if (a.groups < 1 || a.groups > CoarsenArgs::kMaxParts || a.work_counter == nullptr) {
      return absl::InvalidArgumentError("coarsen: parts need a work counter and 1 to 32 parts");
    }
    bool equal = true;
    for (int g = 0; g < a.groups; ++g) equal = equal && a.part_rows[g] == 0;
    int end = 0;
    for (int g = 0; g < a.groups; ++g) {
      const int rows_g = equal ? p.split_bh / a.groups : a.part_rows[g];
      end += rows_g;
      // The second tensor's rows in the same proportion, whole.
      if (rows_g < 1 || (equal && p.split_bh % a.groups != 0) || (static_cast<int64_t>(end) * rows_b) % p.split_bh != 0) {
        return absl::InvalidArgumentError("coarsen: parts must split the rows of both tensors into whole parts");
      }
      p.end_q[g] = end;
      p.end_k[g] = static_cast<int>(static_cast<int64_t>(end) * rows_b / p.split_bh);
    }
    if (end != p.split_bh) return absl::InvalidArgumentError("coarsen: part_rows must add up to the rows");
    p.parts = a.groups;
    p.group_done = a.group_done;
  }
  auto wants_stats = [](const CoarsenArgs* t) { return t && (t->mean || t->kmin || t->kmax); };
  const bool stats = wants_stats(&a) || wants_stats(b);
  auto kernel = cfg.fast ? (stats ? BulkCoarsenKernel<T, VEC, V, true, true> : BulkCoarsenKernel<T, VEC, V, true, false>)
                         : BulkCoarsenKernel<T, VEC, V, false, true>;
  const int threads = 32 * warps;
  auto ctas = ResidentCtas(kernel, threads, p.smem_bytes);
  if (!ctas.ok()) return ctas.status();
  if (*ctas == 0) return absl::OkStatus();
  int device = 0, sms = 0;
  CAB_CUDA_RETURN(cudaGetDevice(&device));
  CAB_CUDA_RETURN(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t needed = (p.items + warps - 1) / warps;
  // A caller that runs other kernels beside this one (a pipeline) may leave room on every SM.
  const int per_sm = a.max_ctas_per_sm > 0 && a.max_ctas_per_sm < *ctas ? a.max_ctas_per_sm : *ctas;
  const int64_t resident = static_cast<int64_t>(sms) * per_sm;
  const unsigned grid = static_cast<unsigned>(needed < resident ? needed : resident);
  kernel<<<grid, threads, p.smem_bytes, stream>>>(a, b ? *b : a, p);
  CAB_CUDA_LAUNCHED("coarsen (bulk)");
  *launched = true;
  return absl::OkStatus();
}

}  // namespace cab::cuda
