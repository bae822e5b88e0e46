// Coarse block state: what the service keeps of Q and K after coarsening (SPEC 1).
// Per (batch, head, block) it holds the max-L2 representative, the mean, and the channel-wise
// min and max (Quest's bound). Memory is O(M * D) per head, never O(N * D).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/params.h"
#include "cab/tensor.h"

namespace cab {

struct CoarseBlocks {
  int batch = 0, heads = 0, blocks = 0, dim = 0;
  int block_size = 0;
  int64_t tokens = 0;               // N: tokens covered (the last block may be partial)
  // Each [batch, heads, blocks, dim] row-major float.
  std::vector<float> maxl2;         // token of largest L2 norm (ties: lowest index)
  std::vector<float> mean;          // block mean
  std::vector<float> kmin, kmax;    // channel-wise min / max
  // Per [batch, heads, blocks]: best squared norm so far and token count (for incremental append).
  std::vector<float> best_norm2;
  std::vector<int32_t> count;
  // False when kmin/kmax are copies of client-sent representatives rather than real channel
  // bounds (CoarseFromRepresentatives without kmin/kmax): the quest estimator refuses such keys.
  bool has_bounds = true;

  size_t Offset(int b, int h, int m) const {
    return ((static_cast<size_t>(b) * heads + h) * blocks + m) * dim;
  }
  const float* Rep(Coarsening c, int b, int h, int m) const {
    return (c == Coarsening::kMaxL2 ? maxl2.data() : mean.data()) + Offset(b, h, m);
  }
  size_t MemoryBytes() const;
};

// Builds coarse state of x [B, H, N, D] in blocks of `block_size` (CPU, reference).
absl::StatusOr<CoarseBlocks> CoarsenCpu(const TensorView& x, int block_size);

// Only the max-L2 representatives of x [B, H, N, D]: [B, H, M, D] in x's dtype, each the bytes of the
// token CoarsenCpu picks (same norm, ties to the lowest index), so exact. For callers that need
// nothing else (no means or channel bounds): several times cheaper than CoarsenCpu. (b, h) slices
// are spread over `threads` threads. Errors as CoarsenCpu's.
absl::StatusOr<std::vector<uint8_t>> MaxL2Representatives(const TensorView& x, int block_size, int threads);

// Builds coarse state from representatives a client computed itself: reps [B, H, M, D] are used
// as maxl2 and mean alike; kmin/kmax, when given ([B, H, M, D] each), enable the quest estimator,
// otherwise they are set to the representative. `tokens` is N (M = ceil(N / block_size)).
absl::StatusOr<CoarseBlocks> CoarseFromRepresentatives(const TensorView& reps, const TensorView* kmin,
                                                       const TensorView* kmax, int block_size,
                                                       int64_t tokens);

// Appends tokens x [B, H, n, D] (the next n tokens of the sequence) to `state`, merging into a
// partial last block. Gives the same result as coarsening the concatenation in one call.
// An empty `state` (blocks == 0) is initialised from x's shape and `block_size`.
absl::Status AppendTokens(CoarseBlocks& state, const TensorView& x, int block_size);

// Appends whole representative blocks (reps [B, H, m, D]) to `state`; the state must end on a block
// boundary. `tokens` is how many tokens the m blocks cover.
absl::Status AppendRepresentatives(CoarseBlocks& state, const CoarseBlocks& more);

}  // namespace cab
