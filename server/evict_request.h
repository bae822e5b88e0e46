// EvictRequest -> validated eviction inputs (decode stage). Consistency between the tensors and
// the policy's needs is checked by the backend (its messages name the fields); this layer checks
// ranks, bytes and the server's limits before anything is allocated.
#pragma once

#include <optional>

#include "absl/status/statusor.h"
#include "cab/backend.h"
#include "cab/v1/cab.pb.h"
#include "options.h"

namespace cab::server {

// Longest observation window (queries) an eviction request may send.
inline constexpr int64_t kMaxEvictWindow = 4096;

struct EvictDecoded {
  cab::EvictParams params;
  std::optional<cab::TensorView> scores, keys, window;
  cab::EvictInputs inputs;  // points into this struct's views: do not copy, keep it where it is
};

// Fills `out` (whose views point into `r`; both must outlive the call to the backend).
absl::Status DecodeEvictRequest(const cab::v1::EvictRequest& r, const Limits& limits, EvictDecoded* out);

}  // namespace cab::server
