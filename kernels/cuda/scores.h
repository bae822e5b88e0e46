// Block scores S (SPEC 2) for every (batch, query head): the dot estimators through one strided
// batched cuBLAS call (GQA folded in: the g query heads of a kv head are one g*M x D operand), Quest's
// bound through a tiled kernel.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "device_buffers.h"

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
  bool bf16_ready = false;        // q16 / k16 already hold the operands (no cast pass)
  float* scores = nullptr;       // [B * Hq, M, M]
};

// The causal dot-product scores in row bands: band p of kCausalBands covers query rows
// [p M / P, (p + 1) M / P) and only the key blocks [0, (p + 1) M / P) its rows can see, so the GEMMs
// compute and write (P + 1) / (2 P) of S (5/8 for P = 4) when M >= kMinBlocks; the rest of S is left unwritten and never
// read (every reader stops at the causal support). One cublasGemmBatchedEx per band over B * Hq
// heads, with device pointer arrays built once per buffers and shape (kept, see plans_).
class CausalScorePlan {
 public:
  static constexpr int kCausalBands = 4;
  // Below this one strided GEMM is faster (H100, run 7: scores 0.033 vs 0.019 ms at M = 256, 0.044
  // vs 0.031 at M = 512; 0.079 vs 0.083 at M = 1024; 0.206 vs 0.261 at M = 2048).
  static constexpr int kMinBlocks = 1024;
  // Enqueues the bands; returns false (nothing enqueued) where the plan does not apply.
  absl::StatusOr<bool> Launch(cublasHandle_t handle, const ScoreArgs& a, cudaStream_t stream);

 private:
  // One per (operands, scores, shape) seen: a pipeline that runs head groups one after another
  // reads different operand offsets per group, and rebuilding (a synchronous copy) per call would
  // stall the host until the stream drains. Kept at most kMaxPlans; then cleared after a sync.
  static constexpr size_t kMaxPlans = 64;
  struct Plan {
    std::vector<const void*> key;  // what the pointers were built for
    DeviceBuffer pointers;         // [bands][3][B * Hq] const void*: A (keys), B (queries), C (scores)
  };
  std::vector<std::unique_ptr<Plan>> plans_;
};

absl::Status LaunchScores(cublasHandle_t handle, const ScoreArgs& a, cudaStream_t stream,
                          CausalScorePlan* causal_plan = nullptr);

}  // namespace cab::cuda
