// Eviction input validation: which inputs each policy needs, and the batch, kv heads, tokens and
// GQA grouping every tensor must agree on. Errors name the field ("scores dimension 2: ...").
#pragma once

#include "absl/status/statusor.h"
#include "cab/evict.h"
#include "cab/params.h"

namespace cab::cpu {

// The dimensions every input agrees on, resolved from the tensors and the explicit fields.
struct EvictShape {
  int batch = 0, kv_heads = 0;
  int64_t tokens = 0;
  int dim = 0;           // D of keys (0 without keys)
  int score_group = 1;   // scores rows per kv head (1: per kv head; g: averaged over the group)
  int group = 1;         // query heads per kv head in `window`
  int window_len = 0;    // W
};

// Checks `p` (policy enum and Validate) and the inputs against each other.
absl::StatusOr<EvictShape> ResolveEvictShape(const EvictInputs& in, const EvictParams& p);

}  // namespace cab::cpu
