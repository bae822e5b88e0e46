// Hopper block-sparse prefill with warpgroup MMA (wgmma), head_dim 128, mask block 128.
// One CTA = one (batch, head, 128-query block row); two warpgroups of 64 query rows each. Every
// thread takes part in the 16-byte cp.async loads (Q once; K and V of the next kept block while
// the current one is computed). S = Q K^T reads both operands from shared memory (K-major, 128-byte
// swizzle); P stays in registers as the A operand of O += P V, V read MN-major from shared memory.
// The softmax, masking and output staging are those of the mma.sync kernel: a wgmma accumulator
// has the same per-warp layout as mma.sync's. Built for sm_90a only (this file's own object).
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "cuda_common.cuh"
#include "prefill_params.cuh"
#include "wgmma_ops.cuh"
#include "wgmma_tile.cuh"

namespace cab::attention::cuda::detail {
namespace {

using namespace wgmma_tile;  // kD, kBQ, TileOffset, TileOf, the softmax step and GEMM issue
constexpr int kThreads = 256;

// Normalises the output rows and writes them with 16-byte stores, staged (row-major, swizzled by
// row) in the Q buffer, which every warpgroup has finished reading once the barrier passes.
template <typename T>
__device__ __forceinline__ void WriteOutput(const float (&o)[kD / 2], float (&l)[2], unsigned char* sQ, T* og, int64_t q0,
                                            int64_t N, int wg, int warp, int lane) {
  using M = dev::Mma<T>;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    l[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
  }
  __syncthreads();
  T* stage_out = reinterpret_cast<T*>(sQ);
  const int srow = wg * 64 + warp * 16 + (lane >> 2);
#pragma unroll
  for (int j = 0; j < kD / 8; ++j) {
    *reinterpret_cast<uint32_t*>(stage_out + dev::Swz<kD>(srow, j) + (lane & 3) * 2) = M::Pack(o[j * 4] * l[0], o[j * 4 + 1] * l[0]);
    *reinterpret_cast<uint32_t*>(stage_out + dev::Swz<kD>(srow + 8, j) + (lane & 3) * 2) =
        M::Pack(o[j * 4 + 2] * l[1], o[j * 4 + 3] * l[1]);
  }
  __syncwarp();
#pragma unroll
  for (int c = lane; c < 16 * 16; c += 32) {
    const int row = wg * 64 + warp * 16 + (c >> 4), ch = c & 15;
    if (q0 + row < N) {
      *reinterpret_cast<uint4*>(og + static_cast<int64_t>(row) * kD + ch * 8) =
          *reinterpret_cast<const uint4*>(stage_out + dev::Swz<kD>(row, ch));
    }
  }
}
// kWG warpgroups of 64 query rows each: 2 covers a whole 128-row mask block; 1 takes half of it,
// with a footprint small enough for two CTAs per SM (one's softmax then overlaps the other's GEMMs).
template <typename T, int BK, int kWG>
__global__ void __launch_bounds__(128 * kWG, kWG == 1 ? 2 : 1) WgmmaPrefill(const KernelParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using M = dev::Mma<T>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // 1024-byte alignment: the swizzle pattern is taken from address bits 7..9.
  unsigned char* base = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  unsigned char* sQ = base;                      // [2][128][64]
  constexpr int kRows = 64 * kWG, kThr = 128 * kWG;  // query rows and threads of this CTA
  unsigned char* sK = sQ + kRows * kD * 2;       // [2 stages][2][BK][64]
  unsigned char* sV = sK + 2 * BK * kD * 2;      // [2 stages][2][BK][64]
  constexpr int kStage = BK * kD * 2;

  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  int bh, row_cta;
  TileOf(p, bh, row_cta);
  const int b = bh / p.q_heads, h = bh % p.q_heads, hk = h / p.group;
  constexpr int kParts = 2 / kWG;  // CTAs per mask block row
  const int i = p.blocks - 1 - row_cta / kParts;
  const int64_t N = p.tokens, q0 = static_cast<int64_t>(i) * kBQ + (row_cta % kParts) * kRows;
  if (q0 >= N) return;  // the second half of a partial last block
  const int32_t* cols;
  int count;
  MaskRow(p, b, h, i, cols, count);
  constexpr int kSub = kBQ / BK;
  const int tiles = count * kSub;
  const T* qg = static_cast<const T*>(p.q) + (static_cast<int64_t>(bh) * N + q0) * kD;
  const T* kg = static_cast<const T*>(p.k) + (static_cast<int64_t>(b) * p.kv_heads + hk) * N * kD;
  const T* vg = static_cast<const T*>(p.v) + (static_cast<int64_t>(b) * p.kv_heads + hk) * N * kD;
  T* og = static_cast<T*>(p.o) + (static_cast<int64_t>(bh) * N + q0) * kD;

#pragma unroll
  for (int c = tid; c < kRows * 16; c += kThr) {
    const int row = c >> 4, ch = c & 15;
    const bool ok = q0 + row < N;
    dev::CpAsync16(sQ + TileOffset(row, ch, kRows), ok ? qg + static_cast<int64_t>(row) * kD + ch * 8 : qg, ok ? 16 : 0);
  }
  dev::CpAsyncCommit();
  auto key_start = [&](int t) -> int64_t { return static_cast<int64_t>(cols[t / kSub]) * kBQ + (t % kSub) * BK; };
  auto load_kv = [&](int t, int stage) {
    const int64_t k0 = key_start(t);
#pragma unroll
    for (int c = tid; c < BK * 16; c += kThr) {
      const int row = c >> 4, ch = c & 15;
      const bool ok = k0 + row < N;
      const int64_t off = ok ? (k0 + row) * kD + ch * 8 : 0;
      const int so = stage * kStage + TileOffset(row, ch, BK);
      dev::CpAsync16(sK + so, kg + off, ok ? 16 : 0);
      dev::CpAsync16(sV + so, vg + off, ok ? 16 : 0);
    }
  };
  if (tiles > 0) load_kv(0, 0);
  dev::CpAsyncCommit();

  float o[kD / 2];  // 64 x 128 accumulator of this warpgroup: 64 floats per thread
#pragma unroll
  for (int j = 0; j < kD / 2; ++j) o[j] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int64_t row0 = q0 + wg * 64 + warp * 16 + (lane >> 2);
  const int64_t wg_first = q0 + wg * 64, wg_last = wg_first + 63;

  for (int t = 0; t < tiles; ++t) {
    const int stage = t & 1;
    if (t + 1 < tiles) load_kv(t + 1, stage ^ 1);
    dev::CpAsyncCommit();
    dev::CpAsyncWait<1>();
    dev::FenceProxyAsync();  // cp.async wrote through the generic proxy; wgmma reads through the async one
    __syncthreads();
    const int64_t k0 = key_start(t);
    if (!(p.causal && k0 > wg_last)) {  // a warpgroup whose rows all precede the tile skips it
      float s[BK / 2];
      const unsigned char* tk = sK + stage * kStage;
      const unsigned char* tv = sV + stage * kStage;
      dev::WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        const int half = kk >> 2, off = (kk & 3) * 32;
        const uint64_t da = dev::SmemDesc128B(sQ + half * kRows * 128 + wg * 64 * 128 + off, 16, 1024);
        const uint64_t db = dev::SmemDesc128B(tk + half * BK * 128 + off, 16, 1024);
        dev::WgmmaSS<T, BK>::Run(s, da, db, kk > 0);
      }
      dev::WgmmaCommit();
      dev::WgmmaWait0();
      dev::FenceRegs(s);
      const bool edge = (k0 + BK > N) || (p.causal && k0 + BK - 1 > wg_first);
      if (edge) {
#pragma unroll
        for (int j = 0; j < BK / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int64_t col = k0 + j * 8 + (lane & 3) * 2 + (e & 1);
            const int64_t row = row0 + (e >> 1) * 8;
            if (col >= N || (p.causal && col > row)) s[j * 4 + e] = -INFINITY;
          }
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < BK / 8; ++j) mx = fmaxf(mx, fmaxf(s[j * 4 + 2 * r], s[j * 4 + 2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[r], mx * p.scale_log2);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = exp2f(m[r] - m_use);
        m[r] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < BK / 8; ++j) {
          s[j * 4 + 2 * r] = exp2f(s[j * 4 + 2 * r] * p.scale_log2 - m_use);
          s[j * 4 + 2 * r + 1] = exp2f(s[j * 4 + 2 * r + 1] * p.scale_log2 - m_use);
          sum += s[j * 4 + 2 * r] + s[j * 4 + 2 * r + 1];
        }
        l[r] = l[r] * alpha + sum;
#pragma unroll
        for (int j = 0; j < kD / 8; ++j) {
          o[j * 4 + 2 * r] *= alpha;
          o[j * 4 + 2 * r + 1] *= alpha;
        }
      }
      uint32_t pa[BK / 16][4];
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        pa[kk][0] = M::Pack(s[(2 * kk) * 4 + 0], s[(2 * kk) * 4 + 1]);
        pa[kk][1] = M::Pack(s[(2 * kk) * 4 + 2], s[(2 * kk) * 4 + 3]);
        pa[kk][2] = M::Pack(s[(2 * kk + 1) * 4 + 0], s[(2 * kk + 1) * 4 + 1]);
        pa[kk][3] = M::Pack(s[(2 * kk + 1) * 4 + 2], s[(2 * kk + 1) * 4 + 3]);
      }
      dev::WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        // 16 keys = two 8-row groups of V (1024 bytes each); the d halves are BK * 128 bytes apart.
        const uint64_t db = dev::SmemDesc128B(tv + kk * 2048, BK * 128, 1024);
        dev::WgmmaRS<T, kD>::Run(o, pa[kk], db);
      }
      dev::WgmmaCommit();
      dev::WgmmaWait0();
      dev::FenceRegs(o);
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) dev::FenceRegs(pa[kk]);
    }
    __syncthreads();
  }
  dev::CpAsyncWait<0>();

  WriteOutput<T>(o, l, sQ, og, q0, N, wg, warp, lane);
#else
  __trap();  // built for sm_90a only; LaunchWgmma checks the device first
#endif
}


// ---- Pipelined variant -------------------------------------------------------------------------
// The tensor cores idle while a warpgroup does its softmax. Here each iteration issues S for the
// next kept block and O += P V for the current one back to back, and computes the next softmax
// while P V still runs; the rescale of O waits for P V. K/V go through 3 shared-memory stages so
// that the loads of block t + 2 overlap both GEMMs. 224 KB of shared memory: one CTA per SM.
// The softmax's exponential is one ex2.approx.ftz instruction (exp2f adds three for denormals);
// kExactExp keeps exp2f, for comparison.

template <typename T, bool kExactExp>
__global__ void __launch_bounds__(kThreads, 1) WgmmaPrefillPipelined(const KernelParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int BK = 128, kStages = 3, kStage = BK * kD * 2;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* base = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  unsigned char* sQ = base;
  unsigned char* sK = sQ + kTileBytes;           // [3 stages][2][BK][64]
  unsigned char* sV = sK + kStages * kStage;     // [3 stages][2][BK][64]

  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  int bh, row_cta;
  TileOf(p, bh, row_cta);
  const int b = bh / p.q_heads, h = bh % p.q_heads, hk = h / p.group;
  const int i = p.blocks - 1 - row_cta;
  const int64_t N = p.tokens, q0 = static_cast<int64_t>(i) * kBQ;
  const int32_t* cols;
  int tiles;
  MaskRow(p, b, h, i, cols, tiles);
  const T* qg = static_cast<const T*>(p.q) + (static_cast<int64_t>(bh) * N + q0) * kD;
  const T* kg = static_cast<const T*>(p.k) + (static_cast<int64_t>(b) * p.kv_heads + hk) * N * kD;
  const T* vg = static_cast<const T*>(p.v) + (static_cast<int64_t>(b) * p.kv_heads + hk) * N * kD;
  T* og = static_cast<T*>(p.o) + (static_cast<int64_t>(bh) * N + q0) * kD;

#pragma unroll
  for (int c = tid; c < kBQ * 16; c += kThreads) {
    const int row = c >> 4, ch = c & 15;
    const bool ok = q0 + row < N;
    dev::CpAsync16(sQ + TileOffset(row, ch, kBQ), ok ? qg + static_cast<int64_t>(row) * kD + ch * 8 : qg, ok ? 16 : 0);
  }
  dev::CpAsyncCommit();
  auto key_start = [&](int t) -> int64_t { return static_cast<int64_t>(cols[t]) * kBQ; };
  auto load_kv = [&](int t) {
    const int64_t k0 = key_start(t);
    const int stage = t % kStages;
#pragma unroll
    for (int c = tid; c < BK * 16; c += kThreads) {
      const int row = c >> 4, ch = c & 15;
      const bool ok = k0 + row < N;
      const int64_t off = ok ? (k0 + row) * kD + ch * 8 : 0;
      const int so = stage * kStage + TileOffset(row, ch, BK);
      dev::CpAsync16(sK + so, kg + off, ok ? 16 : 0);
      dev::CpAsync16(sV + so, vg + off, ok ? 16 : 0);
    }
  };
  if (tiles > 0) load_kv(0);
  dev::CpAsyncCommit();
  if (tiles > 1) load_kv(1);
  dev::CpAsyncCommit();
  dev::CpAsyncWait<1>();  // Q and block 0 have landed; block 1 may still be in flight
  dev::FenceProxyAsync();
  __syncthreads();

  float o[kD / 2];
#pragma unroll
  for (int j = 0; j < kD / 2; ++j) o[j] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, alpha[2];
  const int64_t row0 = q0 + wg * 64 + warp * 16 + (lane >> 2);
  const int64_t wg_first = q0 + wg * 64;
  float s[BK / 2];
  uint32_t pa[BK / 16][4];
  if (tiles > 0) {
    dev::WgmmaFence();
    IssueScores<T, BK>(s, sQ, sK, wg);
    dev::WgmmaCommit();
    dev::WgmmaWait0();
    dev::FenceRegs(s);
    MaskScores<BK>(s, key_start(0), row0, N, p.causal, wg_first, lane);
    SoftmaxStep<BK, kExactExp>(s, m, l, alpha, p.scale_log2);  // o is zero: nothing to rescale
    PackP<T, BK>(s, pa);
  }
  // Steady state, peeled so that every wgmma group is committed unconditionally (ptxas tracks the
  // groups statically; a conditional commit makes it serialise the GEMMs).
  for (int t = 0; t + 1 < tiles; ++t) {
    if (t + 2 < tiles) load_kv(t + 2);  // into the stage of block t - 1, freed by the last barrier
    dev::CpAsyncCommit();
    dev::CpAsyncWait<1>();  // block t + 1 has landed
    dev::FenceProxyAsync();
    __syncthreads();
    dev::WgmmaFence();
    IssueScores<T, BK>(s, sQ, sK + ((t + 1) % kStages) * kStage, wg);
    dev::WgmmaCommit();
    IssuePV<T, BK>(o, pa, sV + (t % kStages) * kStage);
    dev::WgmmaCommit();
    dev::WgmmaWait<1>();  // the scores are done; P V may still run
    dev::FenceRegs(s);
    MaskScores<BK>(s, key_start(t + 1), row0, N, p.causal, wg_first, lane);
    SoftmaxStep<BK, kExactExp>(s, m, l, alpha, p.scale_log2);
    dev::WgmmaWait0();
    dev::FenceRegs(o);
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) dev::FenceRegs(pa[kk]);
#pragma unroll
    for (int j = 0; j < kD / 8; ++j) {
      o[j * 4] *= alpha[0];
      o[j * 4 + 1] *= alpha[0];
      o[j * 4 + 2] *= alpha[1];
      o[j * 4 + 3] *= alpha[1];
    }
    PackP<T, BK>(s, pa);
    __syncthreads();  // every warpgroup is done with block t's stage before it is refilled
  }
  if (tiles > 0) {  // the last block: P V alone
    dev::WgmmaFence();
    IssuePV<T, BK>(o, pa, sV + ((tiles - 1) % kStages) * kStage);
    dev::WgmmaCommit();
    dev::WgmmaWait0();
    dev::FenceRegs(o);
  }
  __syncthreads();  // WriteOutput reuses the Q buffer
  dev::CpAsyncWait<0>();
  WriteOutput<T>(o, l, sQ, og, q0, N, wg, warp, lane);
#else
  __trap();
#endif
}

constexpr int kWgmmaBK = 128;

constexpr int kSerialSmem = 1024 + kTileBytes + 4 * kWgmmaBK * kD * 2;
constexpr int kPipelinedSmem = 1024 + kTileBytes + 6 * kWgmmaBK * kD * 2;
constexpr int kHalfSmem = 1024 + 64 * kD * 2 + 4 * 64 * kD * 2;  // one warpgroup, 64-key tiles

template <typename T>
absl::Status LaunchTyped(const KernelParams& kp, int batch, WgmmaVariant variant, cudaStream_t stream) {
  static const cudaError_t attrs[4] = {
      cudaFuncSetAttribute(WgmmaPrefill<T, kWgmmaBK, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSerialSmem),
      cudaFuncSetAttribute(WgmmaPrefillPipelined<T, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, kPipelinedSmem),
      cudaFuncSetAttribute(WgmmaPrefillPipelined<T, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, kPipelinedSmem),
      cudaFuncSetAttribute(WgmmaPrefill<T, 64, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, kHalfSmem)};
  for (cudaError_t e : attrs) {
    if (e != cudaSuccess) return absl::InternalError(absl::StrCat("cudaFuncSetAttribute: ", cudaGetErrorString(e)));
  }
  const unsigned bh = static_cast<unsigned>(batch * kp.q_heads), rows = static_cast<unsigned>(kp.blocks);
  // grid.x runs fastest: head-major walks one head's query blocks (heaviest first) before the next.
  auto grid = [&](unsigned row_ctas) { return kp.head_major ? dim3(row_ctas, bh) : dim3(bh, row_ctas); };
  switch (variant) {
    case WgmmaVariant::kPipelined:
      WgmmaPrefillPipelined<T, false><<<grid(rows), kThreads, kPipelinedSmem, stream>>>(kp);
      break;
    case WgmmaVariant::kPipelinedExactExp:
      WgmmaPrefillPipelined<T, true><<<grid(rows), kThreads, kPipelinedSmem, stream>>>(kp);
      break;
    case WgmmaVariant::kSerial:
      WgmmaPrefill<T, kWgmmaBK, 2><<<grid(rows), kThreads, kSerialSmem, stream>>>(kp);
      break;
    case WgmmaVariant::kHalfBlock:
      WgmmaPrefill<T, 64, 1><<<grid(2 * rows), 128, kHalfSmem, stream>>>(kp);
      break;
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("wgmma prefill launch: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace

bool WgmmaAvailable() {
  static const bool ok = [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) return false;
    return major == 9 && minor == 0;
  }();
  return ok;
}

absl::Status LaunchWgmma(const KernelParams& kp, DType dtype, int batch, WgmmaVariant variant, cudaStream_t stream) {
  if (dtype == DType::kBF16) return LaunchTyped<__nv_bfloat16>(kp, batch, variant, stream);
  return LaunchTyped<__half>(kp, batch, variant, stream);
}

}  // namespace cab::attention::cuda::detail
