// The compute of a mask request, shared by Predict and Stream: coarse state -> backend ->
// encoded reply, with a deadline/cancellation check and a stage timer between the stages.
#pragma once

#include <chrono>
#include <functional>

#include "absl/status/statusor.h"
#include "cab/backend.h"
#include "cab/v1/cab.pb.h"
#include "metrics.h"
#include "predict_request.h"

namespace cab::server {

struct StageHooks {
  std::function<absl::Status()> check;          // non-OK (DEADLINE_EXCEEDED, CANCELLED) stops the request
  std::function<void(Stage, double)> observe;   // seconds spent in a stage
  absl::Status Check() const { return check ? check() : absl::OkStatus(); }
  void Observe(Stage s, double seconds) const {
    if (observe) observe(s, seconds);
  }
};

struct CoarsePair {
  cab::CoarseBlocks q, k;
};

// Coarse state of a decoded PredictRequest with full tensors (coarsen stage): the backend coarsens q and k.
absl::StatusOr<CoarsePair> CoarsenInputs(const PredictInputs& in, cab::Backend& backend);

// PredictMask, then the mask in `format` and (when asked) the diagnostics; timings->predict_seconds
// and encode_seconds are filled. `call` names the streaming session (none for unary requests).
absl::Status PredictAndEncode(const cab::CoarseBlocks& q, const cab::CoarseBlocks& k, const cab::MaskParams& params,
                              cab::v1::MaskFormat format, bool diagnostics, cab::Backend& backend,
                              const StageHooks& hooks, cab::v1::BlockMask* mask, cab::v1::Diagnostics* diag,
                              cab::v1::Timings* timings, const cab::CallContext& call = {});

// PredictAndEncode for a request with representatives: the backend takes them as they arrived
// (Backend::PredictMaskFromRepresentatives); the time it spends taking them in is the coarsen stage
// (timings->coarsen_seconds and the stage metric).
absl::Status PredictRepresentativesAndEncode(const PredictInputs& in, cab::Backend& backend, const StageHooks& hooks,
                                             cab::v1::BlockMask* mask, cab::v1::Diagnostics* diag,
                                             cab::v1::Timings* timings);

// Runs `fn`, turning exceptions from the compute (out of memory above all) into a status so that a
// request the server cannot afford fails alone instead of taking the process down.
absl::Status Guarded(const std::function<absl::Status()>& fn);

// Seconds since `start` on a steady clock.
double SecondsSince(std::chrono::steady_clock::time_point start);

}  // namespace cab::server
