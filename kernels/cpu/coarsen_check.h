// Private to kernels/cpu: validation of CoarseBlocks handed in by callers (the server keeps
// them in sessions; clients may build them from their own representatives).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "cab/coarse.h"
#include "cab/tensor.h"

namespace cab {

// Dimensions positive, tokens consistent with blocks * block_size, every array of its size.
// `what` names the argument in the message ("q", "k", "state").
absl::Status CheckCoarse(const CoarseBlocks& c, const std::string& what);

// What CoarseFromRepresentatives checks before it copies anything: reps [B, H, M, D] finite with
// M = ceil(tokens / block_size); kmin / kmax both or neither, shaped like reps, finite. (Whether
// kmin <= kmax holds is checked while copying.) Messages name reps, kmin, kmax, block_size, tokens.
absl::Status CheckRepresentatives(const TensorView& reps, const TensorView* kmin, const TensorView* kmax,
                                  int block_size, int64_t tokens);

// Rank-4 tensor with a known dtype (CheckTensor plus the dtype enum range).
absl::Status CheckTensor4(const TensorView& x, const std::string& what);

}  // namespace cab
