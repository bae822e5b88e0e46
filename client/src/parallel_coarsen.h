// Client-side coarsening spread over threads: (batch, head) slices are independent, so each is
// coarsened by the kernels' CoarsenCpu on its own and the results are stitched together. The
// result equals CoarsenCpu on the whole tensor (tested).
#pragma once

#include "absl/status/statusor.h"
#include "cab/coarse.h"

namespace cab::client_internal {

// The thread count both functions below use: `threads`, or for threads <= 0 min(hardware threads, 8).
int CoarsenThreads(int threads);

// threads <= 0: min(hardware threads, 8).
absl::StatusOr<CoarseBlocks> CoarsenParallel(const TensorView& x, int block_size, int threads);

// Appends `more` (coarse state of the tokens that follow) to `state` along the block axis.
// `state` must be empty or end on a block boundary; shapes and block size must agree.
absl::Status ConcatBlocks(CoarseBlocks& state, const CoarseBlocks& more);

}  // namespace cab::client_internal
