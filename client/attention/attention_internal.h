// Shared by the CPU and CUDA paths: validated shapes and the per-device entry points.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "cab/attention/attention.h"

namespace cab::attention::internal {

struct PrefillShape {
  int batch = 0, q_heads = 0, kv_heads = 0, head_dim = 0, block_size = 0, blocks = 0, mask_heads = 0;
  int64_t tokens = 0;
  float scale = 0;
};
struct DecodeShape {
  int batch = 0, q_heads = 0, kv_heads = 0, q_len = 0, head_dim = 0;
  int64_t tokens = 0, keep = 0;  // keep: tokens per (batch, kv head) that are attended
  float scale = 0;
};

// Validate shapes, dtypes, the mask's invariants and the keep-indices; errors name the argument.
absl::StatusOr<PrefillShape> CheckPrefill(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const BlockMask& mask, const PrefillOptions& options);
absl::StatusOr<DecodeShape> CheckDecode(const TensorView& q, const TensorView& k, const TensorView& v,
                                        const KeepIndices* keep, const DecodeOptions& options);

absl::StatusOr<AttentionResult> PrefillCpu(const TensorView& q, const TensorView& k, const TensorView& v,
                                           const BlockMask& mask, const PrefillShape& s, bool causal);
absl::StatusOr<AttentionResult> DecodeCpu(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const KeepIndices* keep, const DecodeShape& s);
// Implemented in cuda_host.cu when CUDA is built, else in cuda_none.cc (UNIMPLEMENTED).
absl::StatusOr<AttentionResult> PrefillCuda(const TensorView& q, const TensorView& k, const TensorView& v,
                                            const BlockMask& mask, const PrefillShape& s, bool causal);
absl::StatusOr<AttentionResult> DecodeCuda(const TensorView& q, const TensorView& k, const TensorView& v,
                                           const KeepIndices* keep, const DecodeShape& s);
bool CudaDeviceAvailable(std::string* why_not);
std::string CudaDeviceName();  // the current GPU's name ("cuda" when it cannot be read)

// Runs fn(0 .. count-1) on up to hardware-concurrency threads.
void ParallelFor(int64_t count, const std::function<void(int64_t)>& fn);

}  // namespace cab::attention::internal
