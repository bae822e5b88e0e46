#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "coarsen_bulk.cuh"
#include "coarsen_kernel.h"
#include "coarsen_widen.cuh"
#include "cuda_status.h"

namespace cab::cuda {
namespace {

constexpr int kThreads = 256;

// Loads VEC consecutive elements (16 bytes when VEC * sizeof(T) == 16) and widens them.
template <typename T, int VEC>
__device__ __forceinline__ void LoadVec(const T* p, float (&out)[VEC]) {
  if constexpr (VEC * sizeof(T) == 16) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = Widen(e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = Widen(p[i]);
  }
}

// One CTA per (block m, batch*head). Threads are laid out as NT token groups of V lanes; lane v of
// a group owns channels [v*VEC, v*VEC+VEC) of every token the group visits, so each token row is read
// once with coalesced 16-byte loads. kShuffle: V is a power of two <= 32, so a token's lanes share
// a warp and its squared norm is reduced with shuffles (deterministic); otherwise shared atomics.
template <typename T, int VEC, bool kShuffle>
__global__ void __launch_bounds__(kThreads) CoarsenKernel(CoarsenArgs a) {
  extern __shared__ float smem[];
  constexpr int kUnroll = 4;  // token rows loaded before the first is used: more bytes in flight
  const int D = a.dim, V = D / VEC, NT = kThreads / V;
  const int m = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const int M = gridDim.x;
  const int64_t first = static_cast<int64_t>(m) * a.block_size;
  const int cnt = static_cast<int>(a.tokens - first < a.block_size ? a.tokens - first : a.block_size);
  float* norm = smem;                    // [block_size] fp32 squared norms (screening only)
  float* red = smem + a.block_size;      // [3][NT][D]
  const int tid = threadIdx.x, tg = tid / V, v = tid % V;
  const bool active = tg < NT;
  if (!kShuffle) {
    for (int n = tid; n < cnt; n += kThreads) norm[n] = 0.f;
    __syncthreads();
  }

  float sum[VEC], mn[VEC], mx[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) { sum[i] = 0.f; mn[i] = FLT_MAX; mx[i] = -FLT_MAX; }

  const T* x = static_cast<const T*>(a.x) + (bh * a.tokens + first) * D;
  const T* base = x + v * VEC;
  // Every lane of a token group runs the same trip count, so shuffles see full groups.
  const int trips = active ? (cnt - tg + NT - 1) / NT : 0;
  const unsigned lane = tid % 32;
  const unsigned group_mask = V >= 32 ? 0xffffffffu : ((1u << V) - 1u) << (lane / V * V);
  for (int t0 = 0; t0 < trips; t0 += kUnroll) {
    float e[kUnroll][VEC];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (t0 + u < trips) LoadVec<T, VEC>(base + static_cast<int64_t>(tg + (t0 + u) * NT) * D, e[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (t0 + u >= trips) break;
      const int n = tg + (t0 + u) * NT;
      float sq = 0.f;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        sum[i] += e[u][i];
        mn[i] = fminf(mn[i], e[u][i]);
        mx[i] = fmaxf(mx[i], e[u][i]);
        sq = fmaf(e[u][i], e[u][i], sq);
      }
      if constexpr (kShuffle) {
        for (int off = V / 2; off > 0; off >>= 1) sq += __shfl_xor_sync(group_mask, sq, off, V);
        if (v == 0) norm[n] = sq;
      } else {
        atomicAdd(&norm[n], sq);  // rare shapes only (D / VEC not a power of two <= 32)
      }
    }
  }
  if (active) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const int c = v * VEC + i;
      red[(0 * NT + tg) * D + c] = sum[i];
      red[(1 * NT + tg) * D + c] = mn[i];
      red[(2 * NT + tg) * D + c] = mx[i];
    }
  }
  __syncthreads();

  // The fp32 norms only screen: every token within 0.1% of the largest (far above fp32 summation
  // error) is re-measured as the CPU does (exact products summed in double, rounded to float once),
  // and the largest of those wins, lowest index on ties. Usually one token, so the double work and
  // its slow float->double conversions stay off the streaming loop.
  __shared__ float best_v[kThreads / 32];
  __shared__ int best_i[kThreads / 32];
  float screen = 0.f;
  for (int n = tid; n < cnt; n += kThreads) screen = fmaxf(screen, norm[n]);
  for (int off = 16; off > 0; off >>= 1) screen = fmaxf(screen, __shfl_xor_sync(0xffffffffu, screen, off));
  if (lane == 0) best_v[tid / 32] = screen;
  __syncthreads();
  screen = best_v[0];
  for (int w = 1; w < kThreads / 32; ++w) screen = fmaxf(screen, best_v[w]);
  const float threshold = screen * (1.f - 1e-3f);
  __syncthreads();
  float bv = -1.f;
  int bi = 0x7fffffff;
  for (int n = tid / 32; n < cnt; n += kThreads / 32) {  // one warp per candidate token
    if (norm[n] < threshold) continue;
    double s2 = 0.0;
    for (int d = lane; d < D; d += 32) {
      const double e = Widen(x[static_cast<int64_t>(n) * D + d]);
      s2 += e * e;
    }
    for (int off = 16; off > 0; off >>= 1) s2 += __shfl_xor_sync(0xffffffffu, s2, off);
    const float exact = static_cast<float>(s2);
    if (exact > bv) { bv = exact; bi = n; }  // n ascends per warp: ties keep the lower index
  }
  if (lane == 0) { best_v[tid / 32] = bv; best_i[tid / 32] = bi; }
  __syncthreads();
  if (tid == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      if (best_v[w] > bv || (best_v[w] == bv && best_i[w] < bi)) { bv = best_v[w]; bi = best_i[w]; }
    }
    best_v[0] = bv;
    best_i[0] = bi;
  }
  __syncthreads();
  const int best = best_i[0];

  const int64_t out = (bh * M + m) * D;
  const T* row = static_cast<const T*>(a.x) + (bh * a.tokens + first + best) * D;
  for (int c = tid; c < D; c += kThreads) {
    float s = 0.f, lo = FLT_MAX, hi = -FLT_MAX;
    for (int g = 0; g < NT; ++g) {
      s += red[(0 * NT + g) * D + c];
      lo = fminf(lo, red[(1 * NT + g) * D + c]);
      hi = fmaxf(hi, red[(2 * NT + g) * D + c]);
    }
    if (a.maxl2) a.maxl2[out + c] = Widen(row[c]);  // re-read of one row, from L1/L2
    if (a.maxl2_bf16) a.maxl2_bf16[out + c] = __float2bfloat16_rn(Widen(row[c]));
    if (a.mean) a.mean[out + c] = s / static_cast<float>(cnt);
    if (a.kmin) a.kmin[out + c] = lo;
    if (a.kmax) a.kmax[out + c] = hi;
  }
  if (tid == 0) {
    if (a.best_norm2) a.best_norm2[bh * M + m] = best_v[0];
    if (a.count) a.count[bh * M + m] = cnt;
  }
}

// The common shapes (D * sizeof(T) / 16 = V lanes, V a power of two <= 32, blocks of <= 256 tokens):
// one warp per (block m, batch*head), no __syncthreads. The warp holds 32 / V token groups; lane v of
// each group owns channels [v*VEC, v*VEC+VEC) and keeps their sum / min / max in registers, folded
// across groups by shuffles at the end (a CTA-per-block kernel with shared-memory reductions ran at
// ~1 TB/s; this one at 2.4 TB/s). Since run c3-2 the bulk-fed kernel (coarsen_bulk.cuh, same layout
// and arithmetic, 2.7 TB/s) is the default for these shapes; this one is its fallback (an unaligned
// pointer, a plan that does not fit the device) and CAB_CUDA_COARSEN=warp.
constexpr int kWarpBlockTokens = 256;
constexpr int kWarpsPerCta = 4;

template <typename T, int VEC, int V>
__global__ void __launch_bounds__(32 * kWarpsPerCta) WarpCoarsenKernel(CoarsenArgs a, int M, int64_t items) {
  __shared__ float norms[kWarpsPerCta][kWarpBlockTokens];
  constexpr int G = 32 / V;      // token groups per warp
  constexpr int kUnroll = 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / V, v = lane % V;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + warp;
  if (item >= items) return;
  const int m = static_cast<int>(item % M);
  const int64_t bh = item / M;
  const int D = a.dim;
  const int64_t first = static_cast<int64_t>(m) * a.block_size;
  const int cnt = static_cast<int>(a.tokens - first < a.block_size ? a.tokens - first : a.block_size);
  const T* x = static_cast<const T*>(a.x) + (bh * a.tokens + first) * D;
  float* norm = norms[warp];

  float sum[VEC], mn[VEC], mx[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) { sum[i] = 0.f; mn[i] = FLT_MAX; mx[i] = -FLT_MAX; }
  const unsigned group_mask = V == 32 ? 0xffffffffu : ((1u << V) - 1u) << (g * V);
  const int trips = (cnt - g + G - 1) / G;  // same for every lane of a group
  for (int t0 = 0; t0 < trips; t0 += kUnroll) {
    // Raw 16-byte words in flight (4 registers each), widened only when used.
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (t0 + u < trips) raw[u] = __ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(g + (t0 + u) * G) * D + v * VEC));
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (t0 + u < trips) {
        float sq = Accumulate<T, VEC>(raw[u], sum, mn, mx);
#pragma unroll
        for (int off = V / 2; off > 0; off >>= 1) sq += __shfl_xor_sync(group_mask, sq, off, V);
        if (v == 0) norm[g + (t0 + u) * G] = sq;
      }
    }
  }
  __syncwarp();
  CombineGroupStats<V>(sum, mn, mx);
  // Screen with the fp32 norms, then re-measure the near-maximal tokens as the CPU does (see below).
  float screen = 0.f;
  for (int n = lane; n < cnt; n += 32) screen = fmaxf(screen, norm[n]);
  for (int off = 16; off > 0; off >>= 1) screen = fmaxf(screen, __shfl_xor_sync(0xffffffffu, screen, off));
  const float threshold = screen * (1.f - 1e-3f);
  float bv = -1.f;
  int best = 0;
  for (int n = 0; n < cnt; ++n) {
    if (norm[n] < threshold) continue;  // uniform across the warp
    double s2 = 0.0;
    for (int d = lane; d < D; d += 32) {
      const double e = Widen(x[static_cast<int64_t>(n) * D + d]);
      s2 += e * e;
    }
    for (int off = 16; off > 0; off >>= 1) s2 += __shfl_xor_sync(0xffffffffu, s2, off);
    const float exact = static_cast<float>(s2);
    if (exact > bv) { bv = exact; best = n; }  // ascending n: ties keep the lower index
  }
  if (g == 0) {
    const int64_t out = (bh * M + m) * D + v * VEC;
    float rep[VEC];
    LoadVec<T, VEC>(x + static_cast<int64_t>(best) * D + v * VEC, rep);
    const float inv = 1.f / static_cast<float>(cnt);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      if (a.maxl2) a.maxl2[out + i] = rep[i];
      if (a.maxl2_bf16) a.maxl2_bf16[out + i] = __float2bfloat16_rn(rep[i]);
      if (a.mean) a.mean[out + i] = sum[i] * inv;
      if (a.kmin) a.kmin[out + i] = mn[i];
      if (a.kmax) a.kmax[out + i] = mx[i];
    }
  }
  if (lane == 0) {
    if (a.best_norm2) a.best_norm2[bh * M + m] = bv;
    if (a.count) a.count[bh * M + m] = cnt;
  }
}

template <typename T, int VEC, int V>
absl::Status LaunchWarp(const CoarsenArgs& a, cudaStream_t stream) {
  const int M = a.blocks();
  const int64_t items = static_cast<int64_t>(a.batch) * a.heads * M;
  const int64_t ctas = (items + kWarpsPerCta - 1) / kWarpsPerCta;
  WarpCoarsenKernel<T, VEC, V><<<static_cast<unsigned>(ctas), 32 * kWarpsPerCta, 0, stream>>>(a, M, items);
  CAB_CUDA_LAUNCHED("coarsen (warp)");
  return absl::OkStatus();
}

// Which streaming kernel the common shapes use: the bulk-fed one (default) or, with
// CAB_CUDA_COARSEN=warp, the register-fed warp kernel; CAB_CUDA_COARSEN=bulk:W:S:KiB[:FLAGS] sets
// the bulk kernel's warps per CTA, stages per warp and KiB per copy, FLAGS holding e (L2
// evict-first hint) and p (the first, plain inner loop). For measurements; read once per process.
struct StreamingChoice {
  bool bulk = true;
  BulkConfig cfg;
};

const StreamingChoice& Streaming() {
  static const StreamingChoice choice = [] {
    StreamingChoice c;
    const char* env = std::getenv("CAB_CUDA_COARSEN");
    if (env == nullptr || *env == '\0') return c;
    if (std::strcmp(env, "warp") == 0) {
      c.bulk = false;
      return c;
    }
    int w = 0, st = 0, kib = 0;
    char flags[8] = {};
    const int got = std::sscanf(env, "bulk:%d:%d:%d:%7s", &w, &st, &kib, flags);
    if (got >= 3 && w >= 1 && 32 * w <= kBulkMaxThreads && st >= 2 && kib >= 1) {
      c.cfg.warps = w;
      c.cfg.stages = st;
      c.cfg.chunk_bytes = kib * 1024;
      c.cfg.evict_first = got == 4 && std::strchr(flags, 'e') != nullptr;
      c.cfg.fast = !(got == 4 && std::strchr(flags, 'p') != nullptr);
    } else if (std::strcmp(env, "bulk") != 0) {
      std::fprintf(stderr, "CAB_CUDA_COARSEN=%s not understood (warp | bulk | bulk:W:S:KiB[:e][p]); using bulk\n", env);
    }
    return c;
  }();
  return choice;
}

// Parts with completion counts (CoarsenArgs::group_done) exist only in the bulk-fed kernel; another
// path would leave a waiting stream waiting forever, so it refuses before launching anything.
absl::Status PartsUnsupported() {
  return absl::FailedPreconditionError("coarsen: parts with completion counts need one bulk-fed launch for this shape");
}

// b: a second tensor for the same launch (LaunchCoarsenPair), or null.
template <typename T, int VEC, int V>
absl::Status LaunchStreaming(const CoarsenArgs& a, const CoarsenArgs* b, cudaStream_t stream) {
  if (Streaming().bulk) {
    bool launched = false;
    BulkConfig cfg = Streaming().cfg;
    cfg.evict_first = cfg.evict_first || a.evict_first;
    CAB_RETURN_IF_ERROR((LaunchBulk<T, VEC, V>(a, b, cfg, stream, &launched)));
    if (launched) return absl::OkStatus();
  }
  if (a.group_done != nullptr) return PartsUnsupported();
  CAB_RETURN_IF_ERROR((LaunchWarp<T, VEC, V>(a, stream)));
  return b ? LaunchWarp<T, VEC, V>(*b, stream) : absl::OkStatus();
}

template <typename T, int VEC, bool kShuffle>
absl::Status Launch(const CoarsenArgs& a, cudaStream_t stream) {
  const int V = a.dim / VEC, NT = kThreads / V;
  const size_t smem = (static_cast<size_t>(a.block_size) + 3 * static_cast<size_t>(NT) * a.dim) * sizeof(float);
  auto kernel = CoarsenKernel<T, VEC, kShuffle>;
  if (smem > 48 * 1024) {
    CAB_CUDA_RETURN(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  dim3 grid(a.blocks(), a.batch * a.heads);
  kernel<<<grid, kThreads, smem, stream>>>(a);
  CAB_CUDA_LAUNCHED("coarsen");
  return absl::OkStatus();
}

// The streaming kernels' shapes (D * sizeof(T) / 16 lanes per token, a power of two <= 32).
template <typename T>
bool Streams(const CoarsenArgs& a) {
  constexpr int kVec = 16 / sizeof(T);
  const int lanes = a.dim / kVec;
  return a.dim % kVec == 0 && a.block_size <= kWarpBlockTokens && lanes <= 32 && (lanes & (lanes - 1)) == 0;
}

// b (with Streams(a), same shape but heads): both tensors in one streaming launch.
template <typename T>
absl::Status Dispatch(const CoarsenArgs& a, const CoarsenArgs* b, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  if (b != nullptr && !Streams<T>(a)) {  // only the streaming kernels take two tensors
    CAB_RETURN_IF_ERROR(Dispatch<T>(a, nullptr, stream));
    return Dispatch<T>(*b, nullptr, stream);
  }
  if (Streams<T>(a)) {
    switch (a.dim / kVec) {
      case 1: return LaunchStreaming<T, kVec, 1>(a, b, stream);
      case 2: return LaunchStreaming<T, kVec, 2>(a, b, stream);
      case 4: return LaunchStreaming<T, kVec, 4>(a, b, stream);
      case 8: return LaunchStreaming<T, kVec, 8>(a, b, stream);
      case 16: return LaunchStreaming<T, kVec, 16>(a, b, stream);
      case 32: return LaunchStreaming<T, kVec, 32>(a, b, stream);
      default: break;
    }
  }
  if (a.group_done != nullptr) return PartsUnsupported();  // only the streaming kernels count parts
  if (a.dim % kVec == 0 && a.dim / kVec <= kThreads) {
    const int V = a.dim / kVec;
    if (V <= 32 && (V & (V - 1)) == 0) return Launch<T, kVec, true>(a, stream);
    return Launch<T, kVec, false>(a, stream);
  }
  if (a.dim <= kThreads) {
    const int V = a.dim;
    if (V <= 32 && (V & (V - 1)) == 0) return Launch<T, 1, true>(a, stream);
    return Launch<T, 1, false>(a, stream);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("head_dim: ", a.dim, " is too large for the CUDA coarsening kernel"));
}

}  // namespace

namespace {

absl::Status CheckArgs(const CoarsenArgs& a) {
  if (a.maxl2 == nullptr && a.maxl2_bf16 == nullptr) return absl::InvalidArgumentError("coarsen: no output for the representatives");
  if (a.block_size < 1) return absl::InvalidArgumentError("block_size: must be >= 1");
  if (a.block_size > 8192) return absl::InvalidArgumentError("block_size: at most 8192 on the CUDA backend");
  if (a.tokens < 1 || a.batch < 1 || a.heads < 1 || a.dim < 1) {
    return absl::InvalidArgumentError("x: every dimension must be > 0");
  }
  if (a.dtype != DType::kF32 && a.dtype != DType::kF16 && a.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("x.dtype: unknown");
  }
  return absl::OkStatus();
}

absl::Status DispatchByType(const CoarsenArgs& a, const CoarsenArgs* b, cudaStream_t stream) {
  switch (a.dtype) {
    case DType::kF32: return Dispatch<float>(a, b, stream);
    case DType::kF16: return Dispatch<__half>(a, b, stream);
    case DType::kBF16: return Dispatch<__nv_bfloat16>(a, b, stream);
  }
  return absl::InvalidArgumentError("x.dtype: unknown");
}

bool Streams(const CoarsenArgs& a) {
  switch (a.dtype) {
    case DType::kF32: return Streams<float>(a);
    case DType::kF16: return Streams<__half>(a);
    case DType::kBF16: return Streams<__nv_bfloat16>(a);
  }
  return false;
}

}  // namespace

absl::Status LaunchCoarsen(const CoarsenArgs& a, cudaStream_t stream) {
  CAB_RETURN_IF_ERROR(CheckArgs(a));
  return DispatchByType(a, nullptr, stream);
}

absl::Status LaunchCoarsenPair(const CoarsenArgs& a, const CoarsenArgs& b, cudaStream_t stream) {
  CAB_RETURN_IF_ERROR(CheckArgs(a));
  CAB_RETURN_IF_ERROR(CheckArgs(b));
  const bool a_stats = a.mean || a.kmin || a.kmax, b_stats = b.mean || b.kmin || b.kmax;
  const bool same_shape = a.dtype == b.dtype && a.batch == b.batch && a.tokens == b.tokens && a.dim == b.dim &&
                          a.block_size == b.block_size && a.max_ctas_per_sm == b.max_ctas_per_sm;
  // One launch only where it costs neither tensor anything: the same streaming kernel, and channel
  // statistics for both or for neither (the statistics slow the inner loop of both).
  if (same_shape && a_stats == b_stats && Streams(a)) return DispatchByType(a, &b, stream);
  if (a.group_done != nullptr || b.group_done != nullptr) return PartsUnsupported();  // two launches: no parts
  CAB_RETURN_IF_ERROR(DispatchByType(a, nullptr, stream));
  return DispatchByType(b, nullptr, stream);
}

}  // namespace cab::cuda
