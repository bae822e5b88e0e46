// Parameters the prefill kernels share (mma.sync in prefill_kernel.cu, wgmma in prefill_wgmma.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "cab/tensor.h"

namespace cab::attention::cuda::detail {

struct KernelParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  int q_heads, kv_heads, group, blocks, mask_heads, max_k;
  int64_t tokens;
  float scale_log2;  // softmax scale * log2(e)
  bool causal;
  bool head_major;  // grid (query blocks, batch x heads) instead of (batch x heads, query blocks)
  const int64_t* row_offsets;  // BSR layout, or
  const int32_t* col_indices;
  const int32_t* kv_num_blocks;  // Flex layout
  const int32_t* kv_indices;
};

// The kept key blocks of mask row `i` of (batch b, query head h), from either mask layout.
__device__ __forceinline__ void MaskRow(const KernelParams& p, int b, int h, int i, const int32_t*& cols, int& count) {
  const int64_t mrow = (static_cast<int64_t>(b) * p.mask_heads + (p.mask_heads == 1 ? 0 : h)) * p.blocks + i;
  if (p.row_offsets != nullptr) {
    const int64_t a = p.row_offsets[mrow];
    cols = p.col_indices + a;
    count = static_cast<int>(p.row_offsets[mrow + 1] - a);
  } else {
    cols = p.kv_indices + mrow * p.max_k;
    count = p.kv_num_blocks[mrow];
  }
}

// Hopper (compute capability 9.0) wgmma kernel for head_dim 128 and block 128 (prefill_wgmma.cu).
bool WgmmaAvailable();
enum class WgmmaVariant {
  kPipelined,  // 2 warpgroups x 64 rows; next block's S overlapped with this block's P V (3 stages)
  kPipelinedExactExp,  // the same with exp2f's denormal path in the softmax (for comparison)
  kSerial,     // 2 warpgroups x 64 rows, one GEMM at a time (2 stages of 128 keys)
  kHalfBlock,  // 1 warpgroup x 64 rows per CTA, 64-key tiles: two CTAs share an SM
};
absl::Status LaunchWgmma(const KernelParams& kp, DType dtype, int batch, WgmmaVariant variant, cudaStream_t stream);

// The warp-specialised wgmma kernel (prefill_wgmma_tma.cu): a producer warp loads the tiles with
// TMA, two consumer warpgroups compute, optionally taking turns on the tensor cores (ping_pong).
// Available where WgmmaAvailable() is, the driver encodes tensor maps and q, k, v are 16-byte aligned.
bool WgmmaTmaAvailable(const KernelParams& kp);
absl::Status LaunchWgmmaTma(const KernelParams& kp, DType dtype, int batch, bool ping_pong, cudaStream_t stream);

}  // namespace cab::attention::cuda::detail
