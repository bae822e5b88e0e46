// PredictRequest -> validated inputs (decode stage), and the compute of a unary prediction.
// Decoding touches only shapes and bytes; the coarse state is built on a worker thread.
#pragma once

#include <functional>
#include <optional>

#include "absl/status/statusor.h"
#include "cab/backend.h"
#include "cab/v1/cab.pb.h"
#include "options.h"

namespace cab::server {

struct PredictInputs {
  int block_size = 0;
  int blocks = 0;          // M
  int64_t tokens = 0;      // N
  cab::MaskParams params;  // rows applied
  cab::v1::MaskFormat format = cab::v1::MASK_FORMAT_BSR;
  bool diagnostics = false;
  bool representatives = false;
  // Full mode: q, k. Representatives: q (= q_rep), k (= k_rep), optional k_min / k_max.
  cab::TensorView q, k;
  std::optional<cab::TensorView> k_min, k_max;
};

// Validates `r` against `limits`; the views point into `r`, which must outlive the result.
absl::StatusOr<PredictInputs> DecodePredictRequest(const cab::v1::PredictRequest& r, const Limits& limits);

}  // namespace cab::server
