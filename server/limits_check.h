// Limit checks shared by Predict, Stream and Evict: shapes a client sends are checked against
// --max_* before any allocation. Exceeding a limit is RESOURCE_EXHAUSTED naming field and flag.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "options.h"

namespace cab::server {

// One sequence's dimensions as the request states them.
struct SequenceShape {
  int64_t batch = 1;
  int64_t heads = 1;      // query heads (or kv heads where no queries are sent)
  int64_t tokens = 0;     // N
  int64_t head_dim = 1;   // D
  int64_t block_size = 0; // 0: not blocked (eviction without a block graph)
};

// `field` names where the dimensions came from (for example "q.shape").
absl::Status CheckSequenceLimits(const SequenceShape& s, const Limits& l, absl::string_view field);

// Bytes a CoarseBlocks of [batch, heads, blocks, dim] holds (representative, mean, min, max and the
// per-block norm and count), to check a session's growth before allocating it.
int64_t CoarseBytesEstimate(int64_t batch, int64_t heads, int64_t blocks, int64_t dim);

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace cab::server
