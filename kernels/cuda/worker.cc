#include "worker.h"

#include "absl/strings/str_cat.h"
#include "cuda_status.h"

namespace cab::cuda {

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(int device, GemmPolicy gemm) {
  std::unique_ptr<Worker> w(new Worker());
  auto pred = DevicePredictor::Create(device, gemm);
  if (!pred.ok()) return pred.status();
  w->predictor = std::move(*pred);
  CAB_CUDA_RETURN(cudaSetDevice(device));
  CAB_CUDA_RETURN(cudaStreamCreateWithFlags(&w->copy_stream, cudaStreamNonBlocking));
  for (InputSlot& s : w->slots_) {
    CAB_CUDA_RETURN(cudaEventCreateWithFlags(&s.uploaded, cudaEventDisableTiming));
    CAB_CUDA_RETURN(cudaEventCreateWithFlags(&s.consumed, cudaEventDisableTiming));
  }
  cudaDeviceProp prop;
  CAB_CUDA_RETURN(cudaGetDeviceProperties(&prop, device));
  w->name = absl::StrCat("cuda:", device, " (", prop.name, ")");
  return w;
}

Worker::~Worker() {
  if (predictor) cudaSetDevice(predictor->device());
  for (InputSlot& s : slots_) {
    if (s.uploaded) cudaEventDestroy(s.uploaded);
    if (s.consumed) cudaEventDestroy(s.consumed);
  }
  if (copy_stream) cudaStreamDestroy(copy_stream);
}

std::unique_ptr<Worker::SlotLease> Worker::AcquireSlot() {
  std::unique_lock<std::mutex> lock(slot_mu_);
  int free = -1;
  slot_free_.wait(lock, [&] {
    for (int i = 0; i < kSlots && free < 0; ++i) {
      if (!busy_[i]) free = i;
    }
    return free >= 0;
  });
  busy_[free] = true;
  return std::make_unique<SlotLease>(this, free);
}

void Worker::ReleaseSlot(int index) {
  {
    std::lock_guard<std::mutex> lock(slot_mu_);
    busy_[index] = false;
  }
  slot_free_.notify_one();
}

}  // namespace cab::cuda
