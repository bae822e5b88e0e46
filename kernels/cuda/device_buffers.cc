#include "device_buffers.h"

#include "cuda_status.h"

namespace cab::cuda {
namespace {
// Round sizes up so that slowly growing requests do not reallocate every time.
size_t Rounded(size_t bytes) {
  const size_t step = size_t{1} << 20;
  return (bytes + step - 1) / step * step;
}
}  // namespace

absl::Status DeviceBuffer::Reserve(size_t bytes) {
  if (bytes <= capacity_) return absl::OkStatus();
  if (ptr_) CAB_CUDA_RETURN(cudaFree(ptr_));
  ptr_ = nullptr;
  capacity_ = 0;
  const size_t size = Rounded(bytes);
  CAB_CUDA_RETURN(cudaMalloc(&ptr_, size));
  capacity_ = size;
  return absl::OkStatus();
}

absl::Status PinnedBuffer::Reserve(size_t bytes) {
  if (bytes <= capacity_) return absl::OkStatus();
  if (ptr_) CAB_CUDA_RETURN(cudaFreeHost(ptr_));
  ptr_ = nullptr;
  capacity_ = 0;
  const size_t size = Rounded(bytes);
  CAB_CUDA_RETURN(cudaHostAlloc(&ptr_, size, cudaHostAllocDefault));
  capacity_ = size;
  return absl::OkStatus();
}

}  // namespace cab::cuda
