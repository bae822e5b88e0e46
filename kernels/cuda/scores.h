// Block scores S (SPEC 2) for every (batch, query head): the dot estimators through one strided
// batched cuBLAS call (GQA folded in: the g query heads of a kv head are one g*M x D operand), Quest's
// bound through a tiled kernel.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"

namespace cab::cuda {

// How the dot-product scores are computed.
enum class GemmMode {
  kFp32,  // plain fp32 (exact up to summation order)
  kTf32,  // tensor cores with tf32 inputs, fp32 accumulation
  kBf16,  // tensor cores with bf16 inputs, fp32 accumulation; exact when the operands are bf16 values
          // (max-L2 representatives of bf16 activations are)
};

struct ScoreArgs {
  int batch = 0, q_heads = 0, kv_heads = 0, blocks = 0, dim = 0;
  bool quest = false;
  const float* q = nullptr;     // [B, Hq, M, D]
  const float* k = nullptr;     // [B, Hkv, M, D]: the key feature of a dot estimator
  const float* kmin = nullptr;  // [B, Hkv, M, D]: quest
  const float* kmax = nullptr;
  bool causal = true;           // quest skips tiles above the diagonal
  GemmMode mode = GemmMode::kFp32;
  __nv_bfloat16* q16 = nullptr;  // workspace for kBf16, sized like q and k
  __nv_bfloat16* k16 = nullptr;
  float* scores = nullptr;       // [B * Hq, M, M]
};

absl::Status LaunchScores(cublasHandle_t handle, const ScoreArgs& a, cudaStream_t stream);

}  // namespace cab::cuda
