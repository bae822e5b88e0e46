// A CUDA stream whose kernels run on only part of a GPU's SMs (a green context, CUDA 12.4+), so that
// a bandwidth-bound pass can stream through that part while other kernels keep the rest: a
// persistent kernel that fills every SM shuts out the kernels of other streams until it ends.
// The driver functions are looked up at run time (cudaGetDriverEntryPointByVersion), so nothing
// links libcuda and builds without a GPU still link.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/statusor.h"

namespace cab::cuda {

struct PartitionStream {
  cudaStream_t stream = nullptr;  // non-blocking; its kernels run on `sms` SMs only
  int sms = 0;                    // granted: `wanted` rounded up to the device's split granularity
  void* green_context = nullptr;  // CUgreenCtx, owned (DestroyPartitionStream)
};

// On `device`, a stream limited to at least `wanted` SMs (fewer than the device has) and, with
// `rest`, another on the SMs left over. Errors name the driver call that failed; a driver without
// green contexts gives kUnimplemented.
absl::StatusOr<PartitionStream> CreatePartitionStream(int device, int wanted, PartitionStream* rest = nullptr);
void DestroyPartitionStream(PartitionStream* p);

}  // namespace cab::cuda
