// KV-cache eviction on one GPU (SPEC 4): h2o, streaming, cab (bridges from the key-block graph's
// curvature, built on the device by DevicePredictor) and snapkv (observation-window votes computed on
// the device). random stays with the CPU backend: its answer is defined by the CPU's seeded stream.
// The rules are the CPU backend's (kernels/cpu/evict_*.cc); see docs/cuda-backend.md for where the
// answers may differ (snapkv's votes are summed in another order: near-ties only).
#pragma once

#include "absl/status/statusor.h"
#include "cab/evict.h"
#include "cab/params.h"
#include "device_buffers.h"
#include "device_predictor.h"
#include "evict_inputs.h"  // kernels/cpu: EvictShape

namespace cab::cuda {

// Reused device buffers of one worker (grow-only, like the predictor's).
struct EvictWorkspace {
  DeviceBuffer raw_keys, raw_window, raw_scores, keys_f, window_f, scores_f;
  DeviceBuffer value, order, rank, keys_a, keys_b, taken, out_a, out_b, sort_temp, offsets;
  DeviceBuffer maxl2, maxl2_bf16, block_min, has_edge, block_keys_a, block_keys_b, block_rank, flag;
  DeviceBuffer logits, row_max, row_sum, votes;
  PinnedBuffer out_host;
};

// `shape` from cpu::ResolveEvictShape (already validated). Policy random is refused (the caller
// answers it on the CPU). Sets *non_finite (and returns an empty result) when cab's keys hold a NaN
// or infinity: the caller then lets the CPU backend name the element.
absl::StatusOr<KeepIndices> EvictOnDevice(DevicePredictor& predictor, EvictWorkspace& ws, const EvictInputs& in,
                                          const EvictParams& p, const cpu::EvictShape& shape, bool* non_finite);

}  // namespace cab::cuda
