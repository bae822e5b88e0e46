// Device-pointer entry points of the CUDA kernels, for callers that keep tensors on the GPU (the
// benchmark, the GPU tests, a model runner). Everything is asynchronous on `stream` (a
// cudaStream_t passed as void* so that this header needs no CUDA headers). Without CUDA built in,
// every call returns UNIMPLEMENTED.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "cab/tensor.h"

namespace cab::attention::cuda {

// Block-sparse prefill. Tensors are contiguous row-major: q, o [B, Hq, N, D]; k, v [B, Hkv, N, D].
// The mask lives on the device in one of two layouts, over mask_heads (Hq, or 1 = shared) heads
// and M = ceil(N / block_size) rows:
//  - BSR (as cab::BlockMask holds it): row_offsets [B * mask_heads * M + 1], col_indices;
//  - FlexAttention: kv_num_blocks [B, mask_heads, M], kv_indices [B, mask_heads, M, max_k].
// Set exactly one of row_offsets or kv_num_blocks.
enum class PrefillKernel {
  kAuto = 0,  // kWgmmaTma on compute capability 9.0 for head_dim 128 and block 128 (kWgmma where
              // the tensor maps cannot be made), else mma.sync
  kMmaSync,   // warp-level tensor-core MMA (any head_dim / block the kernels take, sm_80+)
  kWgmma,     // Hopper warpgroup MMA, cp.async loads by every thread, softmax overlapped with the
              // next GEMMs (an error where it does not apply); the default until round 3
  kWgmmaSerial,  // the same without the overlap, one GEMM at a time (for comparison and tests)
  kWgmmaHalfBlock,  // wgmma, one warpgroup per half mask block, two CTAs per multiprocessor
  kWgmmaExactExp,   // kWgmma with exp2f (denormal-exact) in the softmax instead of ex2.approx.ftz
  kWgmmaTma,        // wgmma, warp-specialised: a producer warp loads K/V with TMA into mbarrier-guarded
                    // stages; the two consumer warpgroups take turns on the tensor cores (ping-pong)
  kWgmmaTmaNoPingPong,  // kWgmmaTma with the two warpgroups issuing GEMMs independently
};
// Order in which the wgmma kernels' CTAs (one per (batch, head, query block)) are launched. Both
// take the heaviest (last, causal) query blocks first; they differ in what runs at the same time.
enum class TileOrder {
  kAuto = 0,        // kHeadMajor where it applies (batch * q_heads <= 65535), else kRowsAcrossHeads
  kRowsAcrossHeads, // one query block of every head, then the next block: co-resident CTAs read
                    // different heads' K/V
  kHeadMajor,       // every query block of one head, then the next head: co-resident CTAs share
                    // one head's K/V, so the key blocks their rows keep in common come from L2
};
struct PrefillArgs {
  DType dtype = DType::kBF16;  // kBF16 or kF16; o has the same dtype
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  int batch = 0, q_heads = 0, kv_heads = 0, head_dim = 0;  // head_dim 64 or 128
  int64_t tokens = 0;
  int block_size = 128;  // 64 or 128
  bool causal = true;
  float scale = 0;       // 0: 1 / sqrt(D)
  int mask_heads = 0;
  const int64_t* row_offsets = nullptr;
  const int32_t* col_indices = nullptr;
  const int32_t* kv_num_blocks = nullptr;
  const int32_t* kv_indices = nullptr;
  int max_k = 0;
  PrefillKernel kernel = PrefillKernel::kAuto;
  TileOrder order = TileOrder::kAuto;  // wgmma kernels only; the mma.sync kernel ignores it
};
absl::Status Prefill(const PrefillArgs& args, void* stream);

// Decode with split-K: q, o [B, Hq, T, D]; k, v [B, Hkv, N, D]; indices [B, Hkv, keep] int32
// ascending (nullptr: all N tokens, keep ignored). workspace: DecodeWorkspaceBytes of device memory.
struct DecodeArgs {
  DType dtype = DType::kBF16;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  int batch = 0, q_heads = 0, kv_heads = 0, q_len = 1, head_dim = 0;
  int64_t tokens = 0;
  const int32_t* indices = nullptr;
  int64_t keep = 0;
  float scale = 0;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  int splits = 0;  // 0: chosen from the problem size and the GPU's multiprocessor count
};
size_t DecodeWorkspaceBytes(const DecodeArgs& args);
absl::Status Decode(const DecodeArgs& args, void* stream);

// Checks the fields of `args` that the kernels rely on (shape, dtype, head_dim, block size).
absl::Status CheckPrefillArgs(const PrefillArgs& args);
absl::Status CheckDecodeArgs(const DecodeArgs& args);

}  // namespace cab::attention::cuda
