// KV-cache eviction inputs and outputs (SPEC 4).
#pragma once

#include <cstdint>
#include <vector>

#include "cab/tensor.h"

namespace cab {

// Any subset may be given; which ones a policy needs is checked by Validate in the backend:
// h2o needs scores; streaming and random need only N; cab needs keys (scores optional, for picking
// tokens inside bridge blocks and the importance share); snapkv needs keys and window queries.
struct EvictInputs {
  int64_t tokens = 0;                  // N cached tokens
  const TensorView* scores = nullptr;  // [B, Hkv, N] or [B, Hq, N] (averaged over each GQA group)
  const TensorView* keys = nullptr;    // [B, Hkv, N, D]
  const TensorView* window = nullptr;  // [B, Hq, W, D]: the last W queries (observation window)
  int batch = 0, kv_heads = 0;         // B, Hkv (also taken from the tensors when given)
};

// keep indices per (batch, kv head), each row ascending, exactly `per_head` of them.
struct KeepIndices {
  int batch = 0, kv_heads = 0;
  int64_t per_head = 0;
  std::vector<int64_t> indices;  // [B, Hkv, per_head]
  const int64_t* Row(int b, int h) const { return indices.data() + (static_cast<int64_t>(b) * kv_heads + h) * per_head; }
};

}  // namespace cab
