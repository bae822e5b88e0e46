// Block-sparse FlashAttention-style prefill (forward). One CTA = one (batch, head, query block):
// BQ = block_size query rows, 16 per warp; it walks the kept key blocks of its mask row in
// sub-tiles of BK = 64 keys, double-buffered with 16-byte cp.async, scores and P·V on tensor cores
// (mma.sync m16n8k16, fp32 accumulate), online softmax in base 2. Diagonal tiles get the causal
// mask per element; keys past N are zero-filled and masked. Rows with no visible key write zeros.
#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "cab/attention/cuda_attention.h"
#include "cuda_common.cuh"
#include "prefill_params.cuh"

namespace cab::attention::cuda {
namespace {

constexpr int kBK = 64;  // keys per sub-tile

using detail::KernelParams;

template <typename T, int D, int BQ>
__global__ void __launch_bounds__(BQ * 2, D == 64 ? 2 : 1) MmaSyncPrefill(const KernelParams p) {
  using M = dev::Mma<T>;
  constexpr int kThreads = BQ * 2;  // 16 query rows per warp
  constexpr int kChunks = D / 8;    // 16-byte chunks per row
  constexpr int kSub = BQ / kBK;    // key sub-tiles per mask block (mask block size == BQ)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + BQ * D;       // [2][kBK][D]
  T* sV = sK + 2 * kBK * D;  // [2][kBK][D]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int bh = blockIdx.x;
  const int b = bh / p.q_heads, h = bh % p.q_heads, hk = h / p.group;
  const int i = p.blocks - 1 - static_cast<int>(blockIdx.y);  // heaviest (last) rows first
  const int64_t N = p.tokens;
  const int64_t q0 = static_cast<int64_t>(i) * BQ;

  const int32_t* cols;
  int count;
  MaskRow(p, b, h, i, cols, count);
  const int tiles = count * kSub;

  const T* qg = static_cast<const T*>(p.q) + (static_cast<int64_t>(bh) * N + q0) * D;
  const T* kg = static_cast<const T*>(p.k) + (static_cast<int64_t>(b) * p.kv_heads + hk) * N * D;
  const T* vg = static_cast<const T*>(p.v) + (static_cast<int64_t>(b) * p.kv_heads + hk) * N * D;
  T* og = static_cast<T*>(p.o) + (static_cast<int64_t>(bh) * N + q0) * D;

  // Q tile -> shared (rows past N read as zeros).
#pragma unroll
  for (int c = tid; c < BQ * kChunks; c += kThreads) {
    const int row = c / kChunks, ch = c % kChunks;
    const bool ok = q0 + row < N;
    dev::CpAsync16(sQ + dev::Swz<D>(row, ch), ok ? qg + static_cast<int64_t>(row) * D + ch * 8 : qg, ok ? 16 : 0);
  }
  dev::CpAsyncCommit();

  auto key_start = [&](int t) -> int64_t {
    return static_cast<int64_t>(cols[t / kSub]) * BQ + (t % kSub) * kBK;
  };
  auto load_kv = [&](int t, int stage) {
    const int64_t k0 = key_start(t);
    T* dk = sK + stage * kBK * D;
    T* dv = sV + stage * kBK * D;
#pragma unroll
    for (int c = tid; c < kBK * kChunks; c += kThreads) {
      const int row = c / kChunks, ch = c % kChunks;
      const bool ok = k0 + row < N;
      const int64_t off = ok ? (k0 + row) * D + ch * 8 : 0;
      dev::CpAsync16(dk + dev::Swz<D>(row, ch), kg + off, ok ? 16 : 0);
      dev::CpAsync16(dv + dev::Swz<D>(row, ch), vg + off, ok ? 16 : 0);
    }
  };
  if (tiles > 0) load_kv(0, 0);
  dev::CpAsyncCommit();
  dev::CpAsyncWait<1>();  // Q has landed
  __syncthreads();

  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    dev::LdMatrixX4(qf[kk], sQ + dev::Swz<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)));
  }

  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int64_t row0 = q0 + warp * 16 + (lane >> 2);  // this thread's rows: row0, row0 + 8
  const int64_t warp_last = q0 + warp * 16 + 15;

  for (int t = 0; t < tiles; ++t) {
    const int stage = t & 1;
    if (t + 1 < tiles) load_kv(t + 1, stage ^ 1);
    dev::CpAsyncCommit();
    dev::CpAsyncWait<1>();
    __syncthreads();
    const int64_t k0 = key_start(t);
    // A warp whose rows all precede the tile (causal) skips it; the barrier below stays shared.
    if (!(p.causal && k0 > warp_last)) {
      const T* tk = sK + stage * kBK * D;
      const T* tv = sV + stage * kBK * D;
      float s[kBK / 8][4];
#pragma unroll
      for (int j = 0; j < kBK / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int nn = 0; nn < kBK / 16; ++nn) {
          uint32_t bf[4];
          dev::LdMatrixX4(bf, tk + dev::Swz<D>(nn * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)));
          M::Run(s[2 * nn], qf[kk], bf[0], bf[1]);
          M::Run(s[2 * nn + 1], qf[kk], bf[2], bf[3]);
        }
      }
      const bool edge = (k0 + kBK > N) || (p.causal && k0 + kBK - 1 > q0 + warp * 16);
      if (edge) {
#pragma unroll
        for (int j = 0; j < kBK / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int64_t col = k0 + j * 8 + (lane & 3) * 2 + (e & 1);
            const int64_t row = row0 + (e >> 1) * 8;
            if (col >= N || (p.causal && col > row)) s[j][e] = -INFINITY;
          }
        }
      }
      // Online softmax: rows r = 0 (row0) and 1 (row0 + 8); a quad of lanes shares a row.
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < kBK / 8; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * r], s[j][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[r], mx * p.scale_log2);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: keep zeros
        const float alpha = exp2f(m[r] - m_use);
        m[r] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kBK / 8; ++j) {
          s[j][2 * r] = exp2f(s[j][2 * r] * p.scale_log2 - m_use);
          s[j][2 * r + 1] = exp2f(s[j][2 * r + 1] * p.scale_log2 - m_use);
          sum += s[j][2 * r] + s[j][2 * r + 1];
        }
        l[r] = l[r] * alpha + sum;
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
          o[j][2 * r] *= alpha;
          o[j][2 * r + 1] *= alpha;
        }
      }
      // O += P V: P's accumulator layout is the A-operand layout of the next MMA.
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        uint32_t a[4];
        a[0] = M::Pack(s[2 * kk][0], s[2 * kk][1]);
        a[1] = M::Pack(s[2 * kk][2], s[2 * kk][3]);
        a[2] = M::Pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        a[3] = M::Pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int dn = 0; dn < D / 16; ++dn) {
          uint32_t bf[4];
          dev::LdMatrixX4Trans(bf, tv + dev::Swz<D>(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3), dn * 2 + (lane >> 4)));
          M::Run(o[2 * dn], a, bf[0], bf[1]);
          M::Run(o[2 * dn + 1], a, bf[2], bf[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this stage
  }
  dev::CpAsyncWait<0>();

  // Normalise and stage the warp's 16 rows in its own part of sQ, then 16-byte stores.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    l[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
  }
  const int srow = warp * 16 + (lane >> 2);
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
    *reinterpret_cast<uint32_t*>(sQ + dev::Swz<D>(srow, j) + (lane & 3) * 2) = M::Pack(o[j][0] * l[0], o[j][1] * l[0]);
    *reinterpret_cast<uint32_t*>(sQ + dev::Swz<D>(srow + 8, j) + (lane & 3) * 2) = M::Pack(o[j][2] * l[1], o[j][3] * l[1]);
  }
  __syncwarp();
#pragma unroll
  for (int c = lane; c < 16 * kChunks; c += 32) {
    const int row = warp * 16 + c / kChunks, ch = c % kChunks;
    if (q0 + row < N) {
      *reinterpret_cast<uint4*>(og + static_cast<int64_t>(row) * D + ch * 8) =
          *reinterpret_cast<const uint4*>(sQ + dev::Swz<D>(row, ch));
    }
  }
}

template <typename T, int D, int BQ>
absl::Status Launch(const KernelParams& kp, int batch, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(BQ + 4 * kBK) * D * sizeof(T);
  static const cudaError_t attr =
      cudaFuncSetAttribute(MmaSyncPrefill<T, D, BQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (attr != cudaSuccess) return absl::InternalError(absl::StrCat("cudaFuncSetAttribute: ", cudaGetErrorString(attr)));
  const dim3 grid(static_cast<unsigned>(batch * kp.q_heads), static_cast<unsigned>(kp.blocks));
  MmaSyncPrefill<T, D, BQ><<<grid, BQ * 2, smem, stream>>>(kp);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("prefill kernel launch: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

template <typename T>
absl::Status LaunchTyped(const KernelParams& kp, int batch, int d, int bs, cudaStream_t stream) {
  if (d == 64 && bs == 64) return Launch<T, 64, 64>(kp, batch, stream);
  if (d == 64 && bs == 128) return Launch<T, 64, 128>(kp, batch, stream);
  if (d == 128 && bs == 64) return Launch<T, 128, 64>(kp, batch, stream);
  return Launch<T, 128, 128>(kp, batch, stream);
}

}  // namespace

absl::Status CheckPrefillArgs(const PrefillArgs& a) {
  if (a.dtype != DType::kBF16 && a.dtype != DType::kF16) return absl::InvalidArgumentError("dtype: fp16 or bf16");
  if (!a.q || !a.k || !a.v || !a.o) return absl::InvalidArgumentError("q/k/v/o: device pointers required");
  if (a.batch <= 0 || a.q_heads <= 0 || a.kv_heads <= 0 || a.tokens <= 0) {
    return absl::InvalidArgumentError("batch/q_heads/kv_heads/tokens: must be > 0");
  }
  if (a.q_heads % a.kv_heads != 0) return absl::InvalidArgumentError("kv_heads: must divide q_heads");
  if (a.head_dim != 64 && a.head_dim != 128) return absl::InvalidArgumentError("head_dim: 64 or 128");
  if (a.block_size != 64 && a.block_size != 128) return absl::InvalidArgumentError("block_size: 64 or 128");
  if (a.mask_heads != a.q_heads && a.mask_heads != 1) return absl::InvalidArgumentError("mask_heads: q_heads or 1");
  if ((a.row_offsets == nullptr) == (a.kv_num_blocks == nullptr)) {
    return absl::InvalidArgumentError("mask: set exactly one of row_offsets (BSR) or kv_num_blocks (Flex)");
  }
  if (a.row_offsets && !a.col_indices) return absl::InvalidArgumentError("col_indices: required with row_offsets");
  if (a.kv_num_blocks && (!a.kv_indices || a.max_k <= 0)) return absl::InvalidArgumentError("kv_indices/max_k: required with kv_num_blocks");
  if (!(a.scale >= 0) || std::isinf(a.scale)) return absl::InvalidArgumentError("scale: must be finite and >= 0");
  // Launch geometry: query-block rows on grid.y (at most 65535, twice that many CTAs for the
  // half-block variant), batch x heads on grid.x.
  const int64_t blocks = (a.tokens + a.block_size - 1) / a.block_size;
  if (2 * blocks > 65535) return absl::InvalidArgumentError(absl::StrCat("tokens: ", a.tokens, " gives more than 32767 query blocks"));
  if (static_cast<int64_t>(a.batch) * a.q_heads > (int64_t{1} << 31) - 1) return absl::InvalidArgumentError("batch * q_heads: too large");
  return absl::OkStatus();
}

absl::Status Prefill(const PrefillArgs& a, void* stream) {
  if (auto st = CheckPrefillArgs(a); !st.ok()) return st;
  KernelParams kp{};
  kp.q = a.q;
  kp.k = a.k;
  kp.v = a.v;
  kp.o = a.o;
  kp.q_heads = a.q_heads;
  kp.kv_heads = a.kv_heads;
  kp.group = a.q_heads / a.kv_heads;
  kp.tokens = a.tokens;
  kp.blocks = static_cast<int>((a.tokens + a.block_size - 1) / a.block_size);
  kp.mask_heads = a.mask_heads;
  kp.max_k = a.max_k;
  const float scale = a.scale > 0 ? a.scale : static_cast<float>(1.0 / std::sqrt(double(a.head_dim)));
  kp.scale_log2 = scale * 1.4426950408889634f;
  kp.causal = a.causal;
  kp.row_offsets = a.row_offsets;
  kp.col_indices = a.col_indices;
  kp.kv_num_blocks = a.kv_num_blocks;
  kp.kv_indices = a.kv_indices;
  // Head-major puts batch x heads on grid.y (at most 65535); auto falls back where it does not fit.
  const bool head_major_fits = static_cast<int64_t>(a.batch) * a.q_heads <= 65535;
  if (a.order == TileOrder::kHeadMajor && !head_major_fits) {
    return absl::InvalidArgumentError("order: head-major needs batch * q_heads <= 65535");
  }
  kp.head_major = a.order == TileOrder::kHeadMajor || (a.order == TileOrder::kAuto && head_major_fits);
  auto s = static_cast<cudaStream_t>(stream);
  const bool wgmma_fits = a.head_dim == 128 && a.block_size == 128;
  const bool want_tma = a.kernel == PrefillKernel::kWgmmaTma || a.kernel == PrefillKernel::kWgmmaTmaNoPingPong;
  const bool want_wgmma = want_tma || a.kernel == PrefillKernel::kWgmma || a.kernel == PrefillKernel::kWgmmaSerial ||
                          a.kernel == PrefillKernel::kWgmmaHalfBlock || a.kernel == PrefillKernel::kWgmmaExactExp;
  if (want_wgmma && !(wgmma_fits && detail::WgmmaAvailable())) {
    return absl::InvalidArgumentError("kernel: wgmma needs a compute capability 9.0 GPU, head_dim 128 and block_size 128");
  }
  if (a.kernel != PrefillKernel::kMmaSync && wgmma_fits && detail::WgmmaAvailable()) {
    if (want_tma || (a.kernel == PrefillKernel::kAuto && detail::WgmmaTmaAvailable(kp))) {
      return detail::LaunchWgmmaTma(kp, a.dtype, a.batch, a.kernel != PrefillKernel::kWgmmaTmaNoPingPong, s);
    }
    detail::WgmmaVariant v = detail::WgmmaVariant::kPipelined;
    if (a.kernel == PrefillKernel::kWgmmaSerial) v = detail::WgmmaVariant::kSerial;
    if (a.kernel == PrefillKernel::kWgmmaHalfBlock) v = detail::WgmmaVariant::kHalfBlock;
    if (a.kernel == PrefillKernel::kWgmmaExactExp) v = detail::WgmmaVariant::kPipelinedExactExp;
    return detail::LaunchWgmma(kp, a.dtype, a.batch, v, s);
  }
  if (a.dtype == DType::kBF16) return LaunchTyped<__nv_bfloat16>(kp, a.batch, a.head_dim, a.block_size, s);
  return LaunchTyped<__half>(kp, a.batch, a.head_dim, a.block_size, s);
}

}  // namespace cab::attention::cuda
