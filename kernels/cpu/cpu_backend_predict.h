// PredictMask and Graph on the CPU: validation of the coarse inputs and the per-(batch, head) work.
#pragma once

#include "absl/status/statusor.h"
#include "cab/backend.h"
#include "thread_pool.h"

namespace cab::cpu {

// Largest M the CPU backend accepts: per head it holds a few M x M arrays (about 13 bytes per pair).
constexpr int kMaxBlocks = 16384;

// Checks that q and k are consistent coarse states (sizes, shared batch / blocks / dim / block size,
// q.heads a multiple of k.heads); errors name "q.<field>" or "k.<field>".
absl::Status CheckCoarsePair(const CoarseBlocks& q, const CoarseBlocks& k);

// The part of CheckCoarsePair about the pair's shapes, for callers holding representatives rather
// than coarse states (the CUDA backend's PredictMaskFromRepresentatives): the same messages.
struct CoarseShape {
  int batch = 0, heads = 0, blocks = 0, dim = 0, block_size = 0;
};
absl::Status CheckCoarseShapes(const CoarseShape& q, const CoarseShape& k);

// The mask policy is one of MaskPolicy's values; errors name "policy".
absl::Status CheckPolicyRange(const MaskParams& p);

// The rows asked for exist among `blocks` blocks; errors name "row_begin" / "row_end".
absl::Status CheckRows(const MaskParams& p, int blocks);

absl::StatusOr<MaskResult> PredictMaskCpu(const CoarseBlocks& q, const CoarseBlocks& k, const MaskParams& p,
                                          bool diagnostics, ThreadPool& pool);

}  // namespace cab::cpu
