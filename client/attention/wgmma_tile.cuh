// Pieces the Hopper wgmma prefill kernels share (prefill_wgmma.cu: cp.async kernels;
// prefill_wgmma_tma.cu: the TMA / warp-specialised one): the shared-memory tile layout, the CTA ->
// (head, query block) map, score masking, the online-softmax step and the two GEMMs of a key block.
// Head_dim 128, query block 128; built for sm_90a only (wgmma).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.cuh"
#include "prefill_params.cuh"
#include "wgmma_ops.cuh"

namespace cab::attention::cuda::detail::wgmma_tile {

constexpr int kD = 128, kBQ = 128;
constexpr int kTileBytes = 128 * kD * 2;  // one 128 x 128 16-bit tile: two 64-column halves of 16 KB

// Byte offset of 16-byte chunk `chunk` (0..15) of row `row` in a tile stored as two column halves
// [2][rows][64], rows of 128 bytes, chunks XOR-swizzled by row % 8 (the wgmma 128-byte swizzle).
__device__ __forceinline__ int TileOffset(int row, int chunk, int rows) {
  return (chunk >> 3) * rows * 128 + row * 128 + (((chunk & 7) ^ (row & 7)) << 4);
}

// This CTA's (batch x head) index and its position among the query-block CTAs of one head (0 =
// the heaviest, last query block), in the order KernelParams::head_major asks for.
__device__ __forceinline__ void TileOf(const KernelParams& p, int& bh, int& row_cta) {
  bh = static_cast<int>(p.head_major ? blockIdx.y : blockIdx.x);
  row_cta = static_cast<int>(p.head_major ? blockIdx.x : blockIdx.y);
}

// Scores of keys past n, and (causal) of keys after the query row, become -inf; only a tile that
// reaches the sequence end or the diagonal pays for the per-element test.
template <int BK>
__device__ __forceinline__ void MaskScores(float (&s)[BK / 2], int64_t k0, int64_t row0, int64_t n, bool causal,
                                           int64_t first_row, int lane) {
  if (!((k0 + BK > n) || (causal && k0 + BK - 1 > first_row))) return;
#pragma unroll
  for (int j = 0; j < BK / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t col = k0 + j * 8 + (lane & 3) * 2 + (e & 1);
      const int64_t row = row0 + (e >> 1) * 8;
      if (col >= n || (causal && col > row)) s[j * 4 + e] = -INFINITY;
    }
  }
}

// Online-softmax step on a score tile: updates m and l, turns s into unnormalised probabilities
// and returns the factor the running output must be scaled by (per row pair). kExactExp: exp2f
// instead of the one-instruction flush-to-zero exponential (dev::SoftmaxExp2).
template <int BK, bool kExactExp>
__device__ __forceinline__ void SoftmaxStep(float (&s)[BK / 2], float (&m)[2], float (&l)[2], float (&alpha)[2],
                                            float scale_log2) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < BK / 8; ++j) mx = fmaxf(mx, fmaxf(s[j * 4 + 2 * r], s[j * 4 + 2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m[r], mx * scale_log2);
    const float m_use = m_new == -INFINITY ? 0.f : m_new;
    alpha[r] = dev::SoftmaxExp2<kExactExp>(m[r] - m_use);
    m[r] = m_new;
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < BK / 8; ++j) {
      s[j * 4 + 2 * r] = dev::SoftmaxExp2<kExactExp>(s[j * 4 + 2 * r] * scale_log2 - m_use);
      s[j * 4 + 2 * r + 1] = dev::SoftmaxExp2<kExactExp>(s[j * 4 + 2 * r + 1] * scale_log2 - m_use);
      sum += s[j * 4 + 2 * r] + s[j * 4 + 2 * r + 1];
    }
    l[r] = l[r] * alpha[r] + sum;
  }
}

// Probabilities to 16-bit pairs in the A-operand register layout of O += P V.
template <typename T, int BK>
__device__ __forceinline__ void PackP(const float (&s)[BK / 2], uint32_t (&pa)[BK / 16][4]) {
  using M = dev::Mma<T>;
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) {
    pa[kk][0] = M::Pack(s[(2 * kk) * 4 + 0], s[(2 * kk) * 4 + 1]);
    pa[kk][1] = M::Pack(s[(2 * kk) * 4 + 2], s[(2 * kk) * 4 + 3]);
    pa[kk][2] = M::Pack(s[(2 * kk + 1) * 4 + 0], s[(2 * kk + 1) * 4 + 1]);
    pa[kk][3] = M::Pack(s[(2 * kk + 1) * 4 + 2], s[(2 * kk + 1) * 4 + 3]);
  }
}

// S = Q K^T for warpgroup `wg`'s 64 rows of the Q tile sQ and the key tile tk (asynchronous:
// the caller commits and waits).
template <typename T, int BK>
__device__ __forceinline__ void IssueScores(float (&s)[BK / 2], const unsigned char* sQ, const unsigned char* tk, int wg) {
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) {
    const int half = kk >> 2, off = (kk & 3) * 32;
    const uint64_t da = dev::SmemDesc128B(sQ + half * kBQ * 128 + wg * 64 * 128 + off, 16, 1024);
    const uint64_t db = dev::SmemDesc128B(tk + half * BK * 128 + off, 16, 1024);
    dev::WgmmaSS<T, BK>::Run(s, da, db, kk > 0);
  }
}

// O += P V, V tile tv read MN-major (asynchronous, like IssueScores).
template <typename T, int BK>
__device__ __forceinline__ void IssuePV(float (&o)[kD / 2], const uint32_t (&pa)[BK / 16][4], const unsigned char* tv) {
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) dev::WgmmaRS<T, kD>::Run(o, pa[kk], dev::SmemDesc128B(tv + kk * 2048, BK * 128, 1024));
}

}  // namespace cab::attention::cuda::detail::wgmma_tile
