// The CUDA backend: cab::Backend on one or more GPUs. One worker per listed device (a DevicePredictor
// with its own stream, cuBLAS handle and reused buffers). A streaming session's calls (CallContext::
// session) all run on one worker, new sessions going to the one with the fewest sessions; calls
// without a session go to the least busy worker (device_placement.h).
// Mask policies that read no scores (random, streaming, dense), diagnostics and random eviction run
// on the embedded CPU backend: they need no GPU work, and this keeps their answers identical by
// construction. Same-shape PredictMask calls that arrive together are batched into one launch.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/backend.h"
#include "device_predictor.h"

namespace cab::cuda {

struct CudaBackendOptions {
  // One worker per entry; empty: every visible device. A device may be listed more than once
  // ("devices=0,0": two workers, each with its own stream and buffers, on one GPU), which exercises
  // the several-worker paths on a one-GPU host.
  std::vector<int> devices;
  GemmPolicy gemm = GemmPolicy::kAuto;
  int cpu_threads = 2;        // for the delegated ops
  // PredictMask batching (predict_batcher.h): off unless max_batch > 1 (cab-server passes its
  // --max_batch and --max_queue_delay_us). A group also stops growing at this many bytes of scores.
  int max_batch = 1;
  int64_t max_queue_delay_us = 0;
  int64_t max_batch_score_bytes = int64_t{4} << 30;
};

// Parses "devices=0,1;gemm=auto|fp32|tf32|bf16;cpu_threads=N;max_batch=N;max_queue_delay_us=N"
// (unknown keys are accepted and ignored: the server may pass options meant for other backends).
absl::StatusOr<CudaBackendOptions> ParseCudaBackendOptions(const std::string& options);

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaBackendOptions& options);

}  // namespace cab::cuda
