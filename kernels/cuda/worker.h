// One CUDA backend worker: a DevicePredictor (compute stream, cuBLAS, prediction buffers) on one
// device, a copy stream, and two input slots, so that one PredictMask's staging and upload (copy
// stream) overlap another's kernels and download (compute stream).
//
// Locking: upload_mu guards the copy stream and the slots' contents, compute_mu the predictor and
// the other ops' buffers. PredictMask holds one, then the other (never both); every other op takes
// both (std::scoped_lock). A slot is leased (SlotLease) from before its upload until the kernels
// reading it are enqueued and its `consumed` event recorded; the next lease of that slot waits for
// that event before overwriting it.
#pragma once

#include <cuda_runtime.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "device_buffers.h"
#include "device_evictor.h"
#include "device_predictor.h"

namespace cab::cuda {

struct InputSlot {
  PinnedBuffer staging;
  DeviceBuffer q, k, kmin, kmax;
  cudaEvent_t uploaded = nullptr;  // recorded on the copy stream after the slot's uploads
  cudaEvent_t consumed = nullptr;  // recorded on the compute stream after the kernels that read it
};

class Worker {
 public:
  static absl::StatusOr<std::unique_ptr<Worker>> Create(int device, GemmPolicy gemm);
  ~Worker();

  // A slot held for one request; released (for the next lease) on destruction.
  class SlotLease {
   public:
    SlotLease(Worker* w, int index) : w_(w), index_(index) {}
    SlotLease(const SlotLease&) = delete;
    SlotLease& operator=(const SlotLease&) = delete;
    ~SlotLease() { w_->ReleaseSlot(index_); }
    InputSlot& slot() const { return w_->slots_[index_]; }

   private:
    Worker* w_;
    int index_;
  };
  // Waits until a slot is free and leases it. Take it before upload_mu / compute_mu: a lease is
  // released only after compute_mu was held.
  std::unique_ptr<SlotLease> AcquireSlot();

  std::unique_ptr<DevicePredictor> predictor;
  cudaStream_t copy_stream = nullptr;
  std::mutex upload_mu, compute_mu;
  // Coarsen's and Evict's buffers (under compute_mu).
  DeviceBuffer x, c_maxl2, c_mean, c_kmin, c_kmax, c_norm, c_count;
  EvictWorkspace evict;
  std::string name;

 private:
  Worker() = default;
  void ReleaseSlot(int index);
  static constexpr int kSlots = 2;
  InputSlot slots_[kSlots];
  std::mutex slot_mu_;
  std::condition_variable slot_free_;
  bool busy_[kSlots] = {};
};

}  // namespace cab::cuda
