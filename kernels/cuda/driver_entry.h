// Driver API functions looked up through the runtime (cudaGetDriverEntryPointByVersion), so that
// the plugin does not link libcuda: builds on machines without a GPU driver still link.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace cab::cuda {

// *fn = the driver's `name` as of CUDA `version` (e.g. 12040); kUnimplemented where the driver has none.
template <typename Fn>
absl::Status DriverFunction(const char* name, unsigned version, Fn** fn) {
  void* raw = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  const cudaError_t e = cudaGetDriverEntryPointByVersion(name, &raw, version, cudaEnableDefault, &found);
  if (e != cudaSuccess || found != cudaDriverEntryPointSuccess || raw == nullptr) {
    cudaGetLastError();
    return absl::UnimplementedError(absl::StrCat("the CUDA driver has no ", name, " (version ", version, ")"));
  }
  *fn = reinterpret_cast<Fn*>(raw);
  return absl::OkStatus();
}

}  // namespace cab::cuda
