#include "stream_wait.h"

#include <cuda.h>  // types and enums only (driver_entry.h)

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "driver_entry.h"

namespace cab::cuda {
namespace {

using WaitValue32 = CUresult(CUstream, CUdeviceptr, cuuint32_t, unsigned int);

const absl::StatusOr<WaitValue32*>& WaitFunction() {
  static const absl::StatusOr<WaitValue32*> fn = []() -> absl::StatusOr<WaitValue32*> {
    WaitValue32* f = nullptr;
    absl::Status st = DriverFunction("cuStreamWaitValue32", 12000, &f);
    if (!st.ok()) return st;
    return f;
  }();
  return fn;
}

}  // namespace

absl::Status EnqueueWaitAtLeast(cudaStream_t stream, const uint32_t* counter, uint32_t value) {
  const absl::StatusOr<WaitValue32*>& fn = WaitFunction();
  if (!fn.ok()) return fn.status();
  const CUresult r = (*fn)(reinterpret_cast<CUstream>(stream), reinterpret_cast<CUdeviceptr>(counter), value,
                           CU_STREAM_WAIT_VALUE_GEQ);
  if (r != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuStreamWaitValue32 failed (CUresult ", static_cast<int>(r), ")"));
  }
  return absl::OkStatus();
}

}  // namespace cab::cuda
