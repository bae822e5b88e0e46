#include "scores_top_lists.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "cuda_status.h"
#include "threshold_row.cuh"

namespace cab::cuda {
namespace {

using threshold::ThresholdRow;

constexpr int kRows = 16;   // query rows per CTA: one mma tile high
// Each warp: every 16th column tile, then one row. One row per warp, not a loop over rows: with the
// row pass inside a loop the compiler kept its loop-invariant values live and needed 80-190
// registers and spilled (ptxas, CUDA 13.0); one call fits in 64 without spills.
constexpr int kWarps = kRows;

// Shared memory of one CTA: the fp32 score tile [kRows][pitch], then a region that holds the bf16
// query tile during the GEMM and the warps' top-list candidates after it (the two phases are split
// by a barrier).
struct Layout {
  int pitch = 0;    // floats per tile row: M rounded up to 8, plus 4 (16-byte aligned rows)
  int q_pitch = 0;  // bf16 per query row: D + 32, so that the 8 rows a load phase reads hit distinct banks
  size_t tile_bytes = 0, q_bytes = 0, cand_bytes = 0;
  size_t total() const { return tile_bytes + std::max(q_bytes, cand_bytes); }
};

Layout MakeLayout(int blocks, int dim, int cap) {
  Layout l;
  l.pitch = (blocks + 7) / 8 * 8 + 4;
  l.q_pitch = dim + 32;
  l.tile_bytes = static_cast<size_t>(kRows) * l.pitch * sizeof(float);
  l.q_bytes = static_cast<size_t>(kRows) * l.q_pitch * sizeof(__nv_bfloat16);
  l.cand_bytes = static_cast<size_t>(kWarps) * cap * sizeof(uint64_t);
  return l;
}

// D = acc + A (16 x 16, row) * B (16 x 8, col), bf16 in, fp32 accumulate (PTX mma.sync m16n8k16).
__device__ __forceinline__ void MmaBf16(float (&acc)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// One CTA per (row tile, head), the tiles with the longest causal rows first across all heads (so
// the short tiles fill the last wave). Phase 1: S[i0, i0 + 16) x [0, C) with mma.sync, each warp an
// 8-column tile at a time; keys straight from global memory (a head's keys, M x D bf16, stay in L2
// across its tiles). Phase 2: each warp runs the threshold row pass on its row of the tile.
//
// Fragment loads: a dot product does not depend on the order of its D terms (up to fp32 rounding,
// which differs from cuBLAS's anyway), so the dimensions inside each 32-wide chunk are assigned to
// the mma's k slots such that lane (g, t) = (lane / 4, lane % 4) holds dimensions 8t .. 8t + 7 of
// its rows for two k-steps: one 16-byte load of key row j0 + g (and of query rows g, g + 8) feeds
// both. Words 0, 1 are k slots {2t, 2t+1}, {2t+8, 2t+9} of the chunk's first k-step, words 2, 3 of
// its second; the same map on both operands, so every product pairs the same dimension.
template <int G, int kMinCtas, int kChunks>
__global__ void __launch_bounds__(kWarps * 32, kMinCtas) FusedScoreTopListKernel(ScoreArgs a, GraphBuffers g, DeviceMaskParams p,
                                                                       Layout layout, int cap, bool set_edges,
                                                                       float scale) {
  constexpr int D = 32 * kChunks;
  extern __shared__ __align__(128) unsigned char smem[];
  const int pitch = layout.pitch, q_pitch = layout.q_pitch;
  float* tile = reinterpret_cast<float*>(smem);
  __nv_bfloat16* q_tile = reinterpret_cast<__nv_bfloat16*>(smem + layout.tile_bytes);
  uint64_t* cand_all = reinterpret_cast<uint64_t*>(smem + layout.tile_bytes);

  const int M = g.blocks, heads = g.heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int tiles = (M + kRows - 1) / kRows;
  const int rt = tiles - 1 - static_cast<int>(blockIdx.x / heads);
  const int bh = static_cast<int>(blockIdx.x % heads);
  const int i0 = rt * kRows;
  const int group = a.q_heads / a.kv_heads;
  const int64_t kvh = static_cast<int64_t>(bh / a.q_heads) * a.kv_heads + (bh % a.q_heads) / group;
  const int C = p.causal ? min(M, i0 + kRows) : M;  // the columns any row of the tile reads

  // The tile's queries, zero past M (their scores are never read; reading them could run past the
  // last head).
  const __nv_bfloat16* q = a.q16 + (static_cast<int64_t>(bh) * M + i0) * D;
  const __nv_bfloat16* k = a.k16 + kvh * M * D;
  for (int u = threadIdx.x; u < kRows * D / 8; u += blockDim.x) {
    const int r = u / (D / 8), c = u % (D / 8);
    uint4 v = make_uint4(0, 0, 0, 0);
    if (i0 + r < M) v = *reinterpret_cast<const uint4*>(q + static_cast<int64_t>(r) * D + 8 * c);
    *reinterpret_cast<uint4*>(q_tile + r * q_pitch + 8 * c) = v;
  }
  __syncthreads();

  const int gr = lane / 4, t = lane % 4;
  // (Loading the next tile's keys during this tile's products measured no faster: 0.122 vs 0.119
  // ms at M = 1024, 32 heads, run 81.)
  for (int nt = warp; nt * 8 < C; nt += kWarps) {
    const int j = nt * 8 + gr;  // this lane's key row
    uint4 kv[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {  // all loads first: one L2 round trip per 8 columns
      kv[c] = j < M ? __ldg(reinterpret_cast<const uint4*>(k + static_cast<int64_t>(j) * D + 32 * c + 8 * t))
                    : make_uint4(0, 0, 0, 0);
    }
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const uint4 lo = *reinterpret_cast<const uint4*>(q_tile + gr * q_pitch + 32 * c + 8 * t);
      const uint4 hi = *reinterpret_cast<const uint4*>(q_tile + (gr + 8) * q_pitch + 32 * c + 8 * t);
      MmaBf16(acc, lo.x, hi.x, lo.y, hi.y, kv[c].x, kv[c].y);
      MmaBf16(acc, lo.z, hi.z, lo.w, hi.w, kv[c].z, kv[c].w);
    }
    // C fragment: rows gr and gr + 8, columns 2t and 2t + 1 of the 8; scaled as cuBLAS's alpha.
    const int col = nt * 8 + 2 * t;
    *reinterpret_cast<float2*>(tile + gr * pitch + col) = make_float2(acc[0] * scale, acc[1] * scale);
    *reinterpret_cast<float2*>(tile + (gr + 8) * pitch + col) = make_float2(acc[2] * scale, acc[3] * scale);
  }
  __syncthreads();  // the tile is complete; the query region becomes the candidate buffers

  uint64_t* cand = cand_all + static_cast<size_t>(warp) * cap;
  const int i = i0 + warp;
  if (i >= M) return;  // whole warp; no barrier follows
  const int64_t row = static_cast<int64_t>(bh) * M + i;
  const int L = CandidateCount(p, M, i);
  const int K = RowTopCount(p, M, i, /*graph_only=*/false);
  const int edge_r = set_edges ? p.degree : -1;
  const float* s = tile + static_cast<size_t>(warp) * pitch;
  if ((L + 3) / 4 >= 2 * K) {  // as ThresholdTopListKernel: 16-byte loads where the sample stays large
    ThresholdRow<G, 4, false, true>(g, row, s, L, K, cand, cap, edge_r);
  } else {
    ThresholdRow<G, 1, false, true>(g, row, s, L, K, cand, cap, edge_r);
  }
}

int CandidateCap(int k_max) { return std::max(64, 2 * NextPow2(k_max)); }

// The per-CTA shared memory the device allows (opt-in limit), looked up once per device.
int MaxSharedPerBlock() {
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) return 0;
  return bytes;
}

// Below this many bytes per CTA at least 2 CTAs (16 warps) share an SM. CAB_CUDA_FUSED_MAX_SMEM
// overrides it (bytes) for measurements.
size_t FusedSmemLimit() {
  static const size_t limit = [] {
    const char* e = std::getenv("CAB_CUDA_FUSED_MAX_SMEM");
    return e ? static_cast<size_t>(std::atoll(e)) : static_cast<size_t>(112 * 1024);
  }();
  return limit;
}

template <int G, int kMinCtas, int kChunks>
absl::Status LaunchChunks(const ScoreArgs& a, const GraphBuffers& g, const DeviceMaskParams& p, bool set_edges, int cap,
                          cudaStream_t stream) {
  const Layout l = MakeLayout(g.blocks, a.dim, cap);
  const size_t smem = l.total();
  auto* kernel = FusedScoreTopListKernel<G, kMinCtas, kChunks>;
  if (smem > 48 * 1024) {
    CAB_CUDA_RETURN(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  const int tiles = (g.blocks + kRows - 1) / kRows;
  const float scale = 1.f / std::sqrt(static_cast<float>(a.dim));
  kernel<<<static_cast<unsigned>(tiles) * g.heads, kWarps * 32, smem, stream>>>(a, g, p, l, cap, set_edges, scale);
  CAB_CUDA_LAUNCHED("scores and top lists (fused)");
  return absl::OkStatus();
}

template <int G, int kMinCtas>
absl::Status Launch(const ScoreArgs& a, const GraphBuffers& g, const DeviceMaskParams& p, bool set_edges, int cap,
                    cudaStream_t stream) {
  switch (a.dim) {
    case 32: return LaunchChunks<G, kMinCtas, 1>(a, g, p, set_edges, cap, stream);
    case 64: return LaunchChunks<G, kMinCtas, 2>(a, g, p, set_edges, cap, stream);
    case 128: return LaunchChunks<G, kMinCtas, 4>(a, g, p, set_edges, cap, stream);
    case 256: return LaunchChunks<G, kMinCtas, 8>(a, g, p, set_edges, cap, stream);
    default: return absl::InternalError("fused scores: head dim not in {32, 64, 128, 256}");
  }
}

}  // namespace

bool FusedScoreTopListsApply(const ScoreArgs& a, const GraphBuffers& g, const DeviceMaskParams& p, bool graph_only) {
  static const bool enabled = [] {
    const char* off = std::getenv("CAB_CUDA_FUSED_SCORES");
    const char* kind = std::getenv("CAB_CUDA_TOPLISTS");  // another top-list kernel asked for
    return !(off && std::string(off) == "0") && !(kind && std::string(kind) != "threshold");
  }();
  static const int max_shared = MaxSharedPerBlock();
  if (!enabled || graph_only || a.quest || a.mode != GemmMode::kBf16 || !a.bf16_ready) return false;
  if ((a.dim != 32 && a.dim != 64 && a.dim != 128 && a.dim != 256) || g.top_stride > kThresholdTopListMaxK || SelectReadsScores(p)) return false;
  const size_t smem = MakeLayout(g.blocks, a.dim, CandidateCap(g.top_stride)).total();
  return smem <= FusedSmemLimit() && smem <= static_cast<size_t>(max_shared);
}

absl::Status LaunchFusedScoreTopLists(const ScoreArgs& a, const GraphBuffers& g, const DeviceMaskParams& p,
                                      bool set_edges, cudaStream_t stream) {
  const int k_max = g.top_stride, cap = CandidateCap(k_max);
  // Groups per lane as LaunchThresholdTopLists chooses them (the sample must hold K scores).
  // 2 CTAs (32 warps) per SM where the lists are short: at most 64 registers.
  if (k_max <= 64) return Launch<4, 2>(a, g, p, set_edges, cap, stream);
  return k_max <= 128 ? Launch<8, 1>(a, g, p, set_edges, cap, stream) : Launch<16, 1>(a, g, p, set_edges, cap, stream);
}

}  // namespace cab::cuda
