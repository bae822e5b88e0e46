// Kept-block bitsets [rows][words] on the device -> CSR (mask_csr.cu), with grow-only buffers that a
// DevicePredictor keeps across requests.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "device_buffers.h"

namespace cab::cuda {

class MaskCsr {
 public:
  // Enqueues the count, scan and fill on `stream`; waits once, for the total (it sizes the columns).
  absl::Status Build(const uint32_t* bits, int64_t rows, int words, cudaStream_t stream);
  // Copies the last Build's rows + 1 offsets and its columns into the vectors; waits.
  absl::Status Download(std::vector<int64_t>* row_offsets, std::vector<int32_t>* col_indices, cudaStream_t stream);

 private:
  DeviceBuffer counts_, offsets_, scan_temp_, cols_;
  PinnedBuffer host_;  // the offsets
  int64_t rows_ = 0, entries_ = 0;
};

}  // namespace cab::cuda
