// Client-side coarsening: which representative of a block the server needs, per the mask
// parameters, encoded as wire tensors. The server builds its coarse state from these with
// CoarseFromRepresentatives (one vector per block used as max-L2 and mean alike), so the client
// sends the one the parameters read: the query's max-L2 or mean (query_coarsening), the key's
// max-L2 or mean (estimator), and Quest's channel-wise key min/max when quest is in play.
#pragma once

#include "absl/status/status.h"
#include "cab/coarse.h"
#include "cab/params.h"
#include "cab/v1/cab.pb.h"

namespace cab::client_internal {

// True when the server needs the key min/max (estimator or policy quest).
bool NeedsKeyBounds(const MaskParams& p);

// Writes blocks [block_begin, block_end) of `state` ([B, H, m, D] with m = block_end - block_begin)
// as `dtype`: the max-L2 or the mean representative, or the key min / max.
enum class RepKind { kMaxL2, kMean, kMin, kMax };
void EncodeBlocks(const CoarseBlocks& state, RepKind kind, int block_begin, int block_end, DType dtype,
                  v1::Tensor* out);

RepKind QueryRep(const MaskParams& p);  // per query_coarsening
RepKind KeyRep(const MaskParams& p);    // per estimator

}  // namespace cab::client_internal
