// Attention that consumes the service's answers: block-sparse prefill over a cab::BlockMask and
// decode over keep-indices (eviction output). One host-side API; each call runs on the GPU when a
// CUDA device is there and the dtype suits the kernels (fp16 / bf16), else on the CPU reference.
//
// Semantics shared by every implementation (CPU, CUDA, and the tests' naive references):
// - prefill: query token t of block i = t / block_size sees key token s iff s's block is in mask row
//   i and, when causal, s <= t. Rows with no visible key output zeros.
// - decode: each of the T new queries sees every kept cache token (no causal mask among the kept
//   tokens; the new tokens are not in the cache). GQA everywhere: query head h reads kv head
//   h / (Hq / Hkv).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/evict.h"
#include "cab/mask.h"
#include "cab/tensor.h"

namespace cab::attention {

enum class Device { kAuto = 0, kCpu, kCuda };
absl::StatusOr<Device> ParseDevice(const std::string& s);  // "auto" | "cpu" | "cuda"

// True when the CUDA kernels were built in and a device answers; the reason otherwise.
bool CudaAvailable(std::string* why_not = nullptr);

struct PrefillOptions {
  int block_size = 128;  // the mask's block size (64 or 128 on the GPU; any > 0 on the CPU)
  bool causal = true;
  float scale = 0;       // 0: 1 / sqrt(D)
  Device device = Device::kAuto;
};

struct DecodeOptions {
  float scale = 0;  // 0: 1 / sqrt(D)
  Device device = Device::kAuto;
};

struct AttentionResult {
  FloatTensor out;           // [B, Hq, Nq, D] (the kernels' own precision, widened to float)
  std::string device;        // "cpu" or the CUDA device's name
  double kernel_ms = 0;      // time of the attention itself (CUDA: device events; CPU: wall)
};

// q [B, Hq, N, D]; k, v [B, Hkv, N, D]; mask rows cover every query block (row_begin 0,
// rows = cols = ceil(N / block_size)); mask.heads is Hq, or 1 (one mask for every head).
absl::StatusOr<AttentionResult> BlockSparsePrefill(const TensorView& q, const TensorView& k,
                                                   const TensorView& v, const BlockMask& mask,
                                                   const PrefillOptions& options);

// q [B, Hq, T, D]; k, v [B, Hkv, N, D]; keep: per (batch, kv head) ascending token indices in
// [0, N) (KeepIndices from Evict); nullptr means every token (dense decode).
absl::StatusOr<AttentionResult> SparseDecode(const TensorView& q, const TensorView& k,
                                             const TensorView& v, const KeepIndices* keep,
                                             const DecodeOptions& options);

// Every causal (or every) block pair kept: the dense baseline through the same kernels.
BlockMask DenseMask(int batch, int heads, int blocks, bool causal);

// Turns a selection of key blocks per (batch, kv head) into token keep-indices, for decode over
// selected blocks. blocks[b * kv_heads + h] lists the blocks (any order, duplicates ignored).
absl::StatusOr<KeepIndices> BlocksToKeepIndices(const std::vector<std::vector<int32_t>>& blocks,
                                                int batch, int kv_heads, int block_size,
                                                int64_t tokens);

// Attention recall: the share of the dense (causal) softmax mass of every query that falls on
// the kept blocks, averaged over queries and heads. In [0, 1]; 1 for the dense mask.
absl::StatusOr<double> AttentionRecall(const TensorView& q, const TensorView& k, const BlockMask& mask,
                                       const PrefillOptions& options);

// Recall of decode keep-indices: share of the dense softmax mass of the T queries on kept tokens.
absl::StatusOr<double> DecodeRecall(const TensorView& q, const TensorView& k, const KeepIndices* keep,
                                    const DecodeOptions& options);

// ||a - b|| / ||b|| over all elements; an error when shapes differ.
absl::StatusOr<double> RelativeError(const FloatTensor& a, const FloatTensor& b);

}  // namespace cab::attention
