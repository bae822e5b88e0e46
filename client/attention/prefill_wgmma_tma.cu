// Hopper block-sparse prefill, warp-specialised: head_dim 128, mask block 128, one CTA per
// (batch, head, 128-query block row) as in prefill_wgmma.cu, but the loads and the barriers differ.
//  - A producer (one lane of warpgroup 2) streams the tiles with the bulk tensor copy engine
//    (TMA): Q once, then K and V of every kept key block into 3 shared-memory stages. Each copy completes on an
//    mbarrier ("full"); the consumers hand a stage back on another ("empty"). The cp.async kernel
//    had all 256 threads issue 16 copies per block and two CTA-wide barriers per block, which kept
//    both warpgroups in lock step: both did their softmax at the same time, tensor cores idle.
//  - Two consumer warpgroups of 64 query rows each run the pipelined loop of the cp.async kernel
//    (S of the next block and P V of this one issued back to back, softmax while P V runs), each at
//    its own pace. kPingPong adds two named barriers that make them take turns issuing their GEMMs,
//    so that one warpgroup's softmax runs while the other's GEMMs occupy the tensor cores.
// The tensor maps zero-fill rows past N, which the score mask then hides (keys) or the output store
// skips (queries). Built for sm_90a only, in the same object library as prefill_wgmma.cu.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "cuda_common.cuh"
#include "prefill_params.cuh"
#include "tma_ops.cuh"
#include "wgmma_ops.cuh"
#include "wgmma_tile.cuh"

namespace cab::attention::cuda::detail {
namespace {

using namespace wgmma_tile;

constexpr int kConsumerThreads = 256, kThreads = kConsumerThreads + 128;  // + the producer warpgroup
// setmaxnreg budgets: 2 x 232 + 40 = 3 x 168, the per-thread share at entry (an increase beyond
// what the decrease frees would wait for registers forever).
constexpr int kConsumerRegs = 232, kProducerRegs = 40;
constexpr int kStages = 3, kBK = 128, kStage = kBK * kD * 2;
constexpr int kHalfTile = kTileBytes / 2;  // one TMA box: 128 rows x 64 columns
constexpr int kSmem = 1024 + kTileBytes + 2 * kStages * kStage;  // 225 KB: one CTA per SM

// Named barrier ids: warpgroup w waits on 1 + w for its turn to issue GEMMs.
constexpr int kTurnBarrier = 1;

// Normalises this warp's 16 output rows and writes them with 16-byte stores, staged in this
// warpgroup's own rows of the Q tile (same swizzled layout): only this warpgroup's GEMMs read
// those, and they are complete, so no barrier with the other warpgroup is needed.
template <typename T>
__device__ __forceinline__ void WriteOwnRows(const float (&o)[kD / 2], float (&l)[2], unsigned char* sQ, T* og,
                                             int64_t q0, int64_t N, int wg, int warp, int lane) {
  using M = dev::Mma<T>;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    l[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
  }
  const int srow = wg * 64 + warp * 16 + (lane >> 2), byte = (lane & 3) * 4;
#pragma unroll
  for (int j = 0; j < kD / 8; ++j) {
    *reinterpret_cast<uint32_t*>(sQ + TileOffset(srow, j, kBQ) + byte) = M::Pack(o[j * 4] * l[0], o[j * 4 + 1] * l[0]);
    *reinterpret_cast<uint32_t*>(sQ + TileOffset(srow + 8, j, kBQ) + byte) =
        M::Pack(o[j * 4 + 2] * l[1], o[j * 4 + 3] * l[1]);
  }
  __syncwarp();
#pragma unroll
  for (int c = lane; c < 16 * 16; c += 32) {
    const int row = wg * 64 + warp * 16 + (c >> 4), ch = c & 15;
    if (q0 + row < N) {
      *reinterpret_cast<uint4*>(og + static_cast<int64_t>(row) * kD + ch * 8) =
          *reinterpret_cast<const uint4*>(sQ + TileOffset(row, ch, kBQ));
    }
  }
}

// This CTA's shared-memory tiles (Q: [2][128][64]; K, V: [3 stages][2][128][64]) and barriers.
struct Tiles {
  unsigned char* q;
  unsigned char* k;
  unsigned char* v;
  uint64_t* q_full;  // Q has landed
  uint64_t* k_full;  // [stage]: K of the stage's block has landed
  uint64_t* v_full;  // [stage]: V has landed
  uint64_t* empty;   // [stage]: every consumer warp is done with the stage
};

// The producer (one lane): Q, then K and V of every kept block into the stages in turn, waiting
// for a stage to be handed back before refilling it.
__device__ __forceinline__ void ProduceTiles(const Tiles& sm, const CUtensorMap* tm_q, const CUtensorMap* tm_k,
                                             const CUtensorMap* tm_v, int q_head, int kv_head, int q0,
                                             const int32_t* cols, int tiles) {
  dev::TmaPrefetchMap(tm_q);
  dev::TmaPrefetchMap(tm_k);
  dev::TmaPrefetchMap(tm_v);
  dev::MbarArriveExpectTx(sm.q_full, kTileBytes);
  dev::TmaLoad3d(sm.q, tm_q, 0, q0, q_head, sm.q_full);
  dev::TmaLoad3d(sm.q + kHalfTile, tm_q, 64, q0, q_head, sm.q_full);
  for (int t = 0; t < tiles; ++t) {
    const int stage = t % kStages, use = t / kStages;
    const int k0 = cols[t] * kBQ;
    if (use > 0) dev::MbarWait(&sm.empty[stage], (use - 1) & 1);
    unsigned char* tk = sm.k + stage * kStage;
    unsigned char* tv = sm.v + stage * kStage;
    dev::MbarArriveExpectTx(&sm.k_full[stage], kStage);
    dev::TmaLoad3d(tk, tm_k, 0, k0, kv_head, &sm.k_full[stage]);
    dev::TmaLoad3d(tk + kHalfTile, tm_k, 64, k0, kv_head, &sm.k_full[stage]);
    dev::MbarArriveExpectTx(&sm.v_full[stage], kStage);
    dev::TmaLoad3d(tv, tm_v, 0, k0, kv_head, &sm.v_full[stage]);
    dev::TmaLoad3d(tv + kHalfTile, tm_v, 64, k0, kv_head, &sm.v_full[stage]);
  }
}

// A consumer warpgroup: rows wg * 64 .. wg * 64 + 63 of the query block through every kept block.
template <typename T, bool kPingPong>
__device__ __forceinline__ void ConsumeTiles(const Tiles& sm, const KernelParams& p, int64_t q0, const int32_t* cols,
                                             int tiles, T* og, int wg, int warp, int lane) {
  const int64_t N = p.tokens;
  // Ping-pong: warpgroup w waits on barrier 1 + w before issuing its GEMMs and, once they are
  // issued, lets the other one go (arrive on 2 - w). Warpgroup 0 starts; warpgroup 1 leaves out
  // its last hand-over so that both barriers end balanced (each warpgroup takes tiles + 1 turns).
  auto take_turn = [&] {
    if constexpr (kPingPong) dev::NamedBarrierSync(kTurnBarrier + wg, 2 * 128);
  };
  auto hand_over = [&](bool last) {
    if constexpr (kPingPong) {
      if (!(last && wg == 1)) dev::NamedBarrierArrive(kTurnBarrier + 1 - wg, 2 * 128);
    }
  };
  if constexpr (kPingPong) {
    if (wg == 1 && tiles > 0) dev::NamedBarrierArrive(kTurnBarrier, 2 * 128);
  }

  float o[kD / 2];
#pragma unroll
  for (int j = 0; j < kD / 2; ++j) o[j] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, alpha[2];
  const int64_t row0 = q0 + wg * 64 + warp * 16 + (lane >> 2);
  const int64_t wg_first = q0 + wg * 64;
  float s[kBK / 2];
  uint32_t pa[kBK / 16][4];
  dev::MbarWait(sm.q_full, 0);
  if (tiles > 0) {
    const int64_t k0 = static_cast<int64_t>(cols[0]) * kBQ;
    dev::MbarWait(&sm.k_full[0], 0);
    take_turn();
    dev::WgmmaFence();
    IssueScores<T, kBK>(s, sm.q, sm.k, wg);
    dev::WgmmaCommit();
    hand_over(false);
    dev::WgmmaWait0();
    dev::FenceRegs(s);
    MaskScores<kBK>(s, k0, row0, N, p.causal, wg_first, lane);
    SoftmaxStep<kBK, false>(s, m, l, alpha, p.scale_log2);  // o is zero: nothing to rescale
    PackP<T, kBK>(s, pa);
  }
  // Steady state, peeled like the cp.async kernel's so that every wgmma group is committed
  // unconditionally (ptxas serialises the GEMMs around a conditional commit).
  for (int t = 0; t + 1 < tiles; ++t) {
    const int cur = t % kStages, next = (t + 1) % kStages;
    const int64_t k_next = static_cast<int64_t>(cols[t + 1]) * kBQ;  // loaded before the waits below
    dev::MbarWait(&sm.k_full[next], ((t + 1) / kStages) & 1);
    dev::MbarWait(&sm.v_full[cur], (t / kStages) & 1);
    take_turn();
    dev::WgmmaFence();
    IssueScores<T, kBK>(s, sm.q, sm.k + next * kStage, wg);
    dev::WgmmaCommit();
    IssuePV<T, kBK>(o, pa, sm.v + cur * kStage);
    dev::WgmmaCommit();
    hand_over(false);
    dev::WgmmaWait<1>();  // the scores are done; P V may still run
    dev::FenceRegs(s);
    MaskScores<kBK>(s, k_next, row0, N, p.causal, wg_first, lane);
    SoftmaxStep<kBK, false>(s, m, l, alpha, p.scale_log2);
    dev::WgmmaWait0();
    dev::FenceRegs(o);
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) dev::FenceRegs(pa[kk]);
    if (lane == 0) dev::MbarArrive(&sm.empty[cur]);  // this warp no longer reads K / V of block t
#pragma unroll
    for (int j = 0; j < kD / 8; ++j) {
      o[j * 4] *= alpha[0];
      o[j * 4 + 1] *= alpha[0];
      o[j * 4 + 2] *= alpha[1];
      o[j * 4 + 3] *= alpha[1];
    }
    PackP<T, kBK>(s, pa);
  }
  if (tiles > 0) {  // the last block: P V alone
    const int last = tiles - 1;
    dev::MbarWait(&sm.v_full[last % kStages], (last / kStages) & 1);
    take_turn();
    dev::WgmmaFence();
    IssuePV<T, kBK>(o, pa, sm.v + (last % kStages) * kStage);
    dev::WgmmaCommit();
    hand_over(true);
    dev::WgmmaWait0();
    dev::FenceRegs(o);
  }
  WriteOwnRows<T>(o, l, sm.q, og, q0, N, wg, warp, lane);
}

// Q, K and V are seen by the copy engine as [heads][N][128] with boxes of 128 rows x 64 columns
// (128 bytes, swizzled exactly like TileOffset): a 128 x 128 tile is two boxes, 16 KB apart.
// Warpgroups 0 and 1 consume, warpgroup 2 produces (one lane of it). Registers are allocated for
// 384 threads (168 each); the producer gives most of its share to the consumers (setmaxnreg).
template <typename T, bool kPingPong>
__global__ void __launch_bounds__(kThreads, 1)
    WgmmaPrefillTma(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_k,
                    const __grid_constant__ CUtensorMap tm_v, const KernelParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __shared__ uint64_t q_full, k_full[kStages], v_full[kStages], empty[kStages];
  unsigned char* base = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  const Tiles sm{base, base + kTileBytes, base + kTileBytes + kStages * kStage, &q_full, k_full, v_full, empty};

  const int tid = threadIdx.x, warp_id = tid >> 5, lane = tid & 31;
  int bh, row_cta;
  TileOf(p, bh, row_cta);
  const int b = bh / p.q_heads, h = bh % p.q_heads, hk = h / p.group;
  const int i = p.blocks - 1 - row_cta;
  const int64_t q0 = static_cast<int64_t>(i) * kBQ;
  const int32_t* cols;
  int tiles;
  MaskRow(p, b, h, i, cols, tiles);

  if (tid == 0) {
    dev::MbarInit(&q_full, 1);
    for (int s = 0; s < kStages; ++s) {
      dev::MbarInit(&k_full[s], 1);
      dev::MbarInit(&v_full[s], 1);
      dev::MbarInit(&empty[s], kConsumerThreads / 32);  // lane 0 of every consumer warp
    }
    dev::MbarInitFence();
  }
  __syncthreads();  // the only CTA-wide barrier: from here on the roles synchronise through mbarriers

  if (warp_id >= kConsumerThreads / 32) {
    dev::WarpgroupRegsDec<kProducerRegs>();
    if (warp_id == kConsumerThreads / 32 && lane == 0) {
      ProduceTiles(sm, &tm_q, &tm_k, &tm_v, bh, b * p.kv_heads + hk, static_cast<int>(q0), cols, tiles);
    }
  } else {
    dev::WarpgroupRegsInc<kConsumerRegs>();
    T* og = static_cast<T*>(p.o) + (static_cast<int64_t>(bh) * p.tokens + q0) * kD;
    ConsumeTiles<T, kPingPong>(sm, p, q0, cols, tiles, og, warp_id >> 2, warp_id & 3, lane);
  }
#else
  __trap();  // built for sm_90a only; the launcher checks the device first
#endif
}

// cuTensorMapEncodeTiled through the runtime's driver entry point (the library links the static
// runtime and no libcuda at build time); null where the driver does not have it.
PFN_cuTensorMapEncodeTiled_v12000 EncodeTiled() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// [heads][n][128] 16-bit tensor at `ptr`, boxes of 128 rows x 64 columns, 128-byte swizzle,
// zeros outside.
absl::Status MakeTileMap(CUtensorMap* map, const void* ptr, DType dtype, int64_t heads, int64_t n) {
  auto encode = EncodeTiled();
  if (encode == nullptr) return absl::FailedPreconditionError("cuTensorMapEncodeTiled is not available");
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(kD), static_cast<cuuint64_t>(n), static_cast<cuuint64_t>(heads)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(kD) * 2, static_cast<cuuint64_t>(n) * kD * 2};  // bytes
  const cuuint32_t box[3] = {64, kBQ, 1}, elem_strides[3] = {1, 1, 1};
  const CUresult r = encode(map, dtype == DType::kBF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                            3, const_cast<void*>(ptr), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return absl::InvalidArgumentError(absl::StrCat("cuTensorMapEncodeTiled failed: ", static_cast<int>(r)));
  return absl::OkStatus();
}

template <typename T, bool kPingPong>
absl::Status LaunchTyped(const KernelParams& kp, const CUtensorMap (&maps)[3], int batch, cudaStream_t stream) {
  static const cudaError_t attr =
      cudaFuncSetAttribute(WgmmaPrefillTma<T, kPingPong>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (attr != cudaSuccess) return absl::InternalError(absl::StrCat("cudaFuncSetAttribute: ", cudaGetErrorString(attr)));
  const unsigned bh = static_cast<unsigned>(batch * kp.q_heads), rows = static_cast<unsigned>(kp.blocks);
  const dim3 grid = kp.head_major ? dim3(rows, bh) : dim3(bh, rows);
  WgmmaPrefillTma<T, kPingPong><<<grid, kThreads, kSmem, stream>>>(maps[0], maps[1], maps[2], kp);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("wgmma TMA prefill launch: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace

bool WgmmaTmaAvailable(const KernelParams& kp) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return WgmmaAvailable() && EncodeTiled() != nullptr && aligned(kp.q) && aligned(kp.k) && aligned(kp.v) &&
         kp.tokens <= (int64_t{1} << 31) - kBQ;  // copy coordinates are 32-bit
}

absl::Status LaunchWgmmaTma(const KernelParams& kp, DType dtype, int batch, bool ping_pong, cudaStream_t stream) {
  if (!WgmmaTmaAvailable(kp)) return absl::FailedPreconditionError("the TMA wgmma kernel does not apply here");
  CUtensorMap maps[3];
  const int64_t q_heads = static_cast<int64_t>(batch) * kp.q_heads, kv_heads = static_cast<int64_t>(batch) * kp.kv_heads;
  if (auto st = MakeTileMap(&maps[0], kp.q, dtype, q_heads, kp.tokens); !st.ok()) return st;
  if (auto st = MakeTileMap(&maps[1], kp.k, dtype, kv_heads, kp.tokens); !st.ok()) return st;
  if (auto st = MakeTileMap(&maps[2], kp.v, dtype, kv_heads, kp.tokens); !st.ok()) return st;
  if (dtype == DType::kBF16) {
    return ping_pong ? LaunchTyped<__nv_bfloat16, true>(kp, maps, batch, stream)
                     : LaunchTyped<__nv_bfloat16, false>(kp, maps, batch, stream);
  }
  return ping_pong ? LaunchTyped<__half, true>(kp, maps, batch, stream) : LaunchTyped<__half, false>(kp, maps, batch, stream);
}

}  // namespace cab::attention::cuda::detail
