// CUDA and cuBLAS return codes turned into absl::Status, so a failing launch reaches the caller as
// an INTERNAL / RESOURCE_EXHAUSTED status instead of a crash.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace cab::cuda {

inline absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  if (e == cudaErrorMemoryAllocation) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
  }
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

inline absl::Status CublasStatus(cublasStatus_t e, const char* what) {
  if (e == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": cuBLAS status ", static_cast<int>(e)));
}

}  // namespace cab::cuda

#define CAB_CUDA_RETURN(expr)                                                  \
  do {                                                                         \
    if (absl::Status _s = ::cab::cuda::CudaStatus((expr), #expr); !_s.ok()) return _s; \
  } while (0)

#define CAB_CUBLAS_RETURN(expr)                                                \
  do {                                                                         \
    if (absl::Status _s = ::cab::cuda::CublasStatus((expr), #expr); !_s.ok()) return _s; \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, execution errors at the next sync.
#define CAB_CUDA_LAUNCHED(what) CAB_CUDA_RETURN(cudaGetLastError())

#define CAB_RETURN_IF_ERROR(expr)                 \
  do {                                            \
    if (absl::Status _s = (expr); !_s.ok()) return _s; \
  } while (0)
