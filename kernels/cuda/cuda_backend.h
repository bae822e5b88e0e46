// The CUDA backend: cab::Backend on one or more GPUs. One worker per device (a DevicePredictor with
// its own stream, cuBLAS handle and reused buffers); each call goes to the least loaded device.
// Policies that read no scores (random, streaming, dense) and eviction run on the embedded CPU
// backend: they need no GPU work, and this keeps their answers identical by construction.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/backend.h"
#include "device_predictor.h"

namespace cab::cuda {

struct CudaBackendOptions {
  std::vector<int> devices;   // empty: every visible device
  GemmPolicy gemm = GemmPolicy::kAuto;
  int cpu_threads = 2;        // for the delegated ops
};

// Parses "devices=0,1;gemm=auto|fp32|tf32|bf16;cpu_threads=N" (unknown keys such as max_batch and
// max_queue_delay_us are accepted and ignored: this backend does not batch, see docs/cuda-backend.md).
absl::StatusOr<CudaBackendOptions> ParseCudaBackendOptions(const std::string& options);

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaBackendOptions& options);

}  // namespace cab::cuda
