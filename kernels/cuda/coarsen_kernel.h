// Device coarsening (SPEC 1): one pass over x [B, H, N, D] producing per (b, h, block) the max-L2
// representative, the mean, the channel-wise min / max, the best squared norm and the token count.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "cab/tensor.h"

namespace cab::cuda {

struct CoarsenArgs {
  const void* x = nullptr;  // device, [B, H, N, D] of `dtype`
  DType dtype = DType::kF32;
  int batch = 0, heads = 0, dim = 0, block_size = 0;
  int64_t tokens = 0;
  // Outputs, device; [B, H, M, D] floats (any may be null; maxl2 only where maxl2_bf16 is set),
  // [B, H, M] for the last two.
  float* maxl2 = nullptr;
  float* mean = nullptr;
  float* kmin = nullptr;
  float* kmax = nullptr;
  float* best_norm2 = nullptr;
  int32_t* count = nullptr;
  // Optional: maxl2 again in bf16 (exact for bf16 inputs: the representative is an input token),
  // so that a device pipeline hands the score GEMM its bf16 operands without a cast pass; such a
  // pipeline may leave maxl2 null (at 128k / block 64 the fp32 copies are 64 MiB of writes).
  __nv_bfloat16* maxl2_bf16 = nullptr;
  // The bulk-fed kernel's persistent grid takes at most this many CTAs per SM (0: all that fit),
  // so that kernels on another stream can run beside it.
  int max_ctas_per_sm = 0;
  // Optional, device, two zeroed uint32 owned by the caller (one pair per stream that launches):
  // the bulk-fed kernel's warps then claim blocks from a shared counter instead of a fixed share,
  // so that CTAs which start late (kernels of another stream held their SMs) take fewer blocks
  // instead of stretching the tail. The last warp to finish zeroes the pair again. Same outputs.
  uint32_t* work_counter = nullptr;
  // Optional (the bulk-fed kernel only; a launch that cannot take it fails before launching): the
  // (b, h) rows of the launch in `groups` equal parts, streamed part by part (LaunchCoarsenPair:
  // part g holds the g-th part of each tensor's rows), and group_done[g] (device, zeroed by the
  // caller) counts the finished blocks of part g, each counted after its outputs are written, so
  // that another stream can start on part g (cuStreamWaitValue32, stream_wait.h) while later parts
  // are read. Needs work_counter. A warp counts the blocks it finished in a part once, when it
  // leaves the part (one fence per warp and part: a fence per block cost 0.11 ms at 128k).
  int groups = 0;
  uint32_t* group_done = nullptr;
  // Optional, with groups: unequal parts, part g holding part_rows[g] (b, h) rows of this tensor
  // (all zero: equal parts). In a pair launch the second tensor's parts are in the same
  // proportion (each must come out whole). A pipeline ends on small parts so that the prediction
  // after the last one is short.
  static constexpr int kMaxParts = 32;
  // The bulk-fed kernel's copies carry the L2 evict-first hint (as CAB_CUDA_COARSEN=bulk:...:e), so
  // that a stream read once does not push out what kernels beside it keep in L2 (a pipeline's
  // prediction). In a pair launch the first tensor's setting holds.
  bool evict_first = false;
  int part_rows[kMaxParts] = {};
  int blocks() const { return static_cast<int>((tokens + block_size - 1) / block_size); }
};

absl::Status LaunchCoarsen(const CoarsenArgs& a, cudaStream_t stream);

// Both tensors (the queries and the keys: same dtype, batch, tokens, block and head dim; heads may
// differ), in one launch where the streaming kernel takes both and both ask for the same channel
// statistics, else one after the other. Same outputs as two LaunchCoarsen calls.
absl::Status LaunchCoarsenPair(const CoarsenArgs& a, const CoarsenArgs& b, cudaStream_t stream);

}  // namespace cab::cuda
