// A stream waits on a device counter (cuStreamWaitValue32), not on an event: a kernel still running
// on another stream can release work behind it part by part (CoarsenArgs::group_done).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace cab::cuda {

// Work enqueued on `stream` after this starts once *counter >= value (device memory; the driver
// compares as signed 32-bit differences, so a counter may wrap).
absl::Status EnqueueWaitAtLeast(cudaStream_t stream, const uint32_t* counter, uint32_t value);

}  // namespace cab::cuda
