// Grow-only device and pinned-host buffers. A worker keeps one set and reuses it for every request,
// so steady-state requests do no cudaMalloc / cudaHostAlloc (both synchronise the device and cost
// tens of microseconds to milliseconds); a buffer grows only when a larger request arrives.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "absl/status/status.h"

namespace cab::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { if (ptr_) cudaFree(ptr_); }

  // Ensures at least `bytes` are available; old contents are not kept.
  absl::Status Reserve(size_t bytes);
  template <typename T> T* as() const { return static_cast<T*>(ptr_); }
  size_t capacity() const { return capacity_; }

 private:
  void* ptr_ = nullptr;
  size_t capacity_ = 0;
};

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { if (ptr_) cudaFreeHost(ptr_); }

  absl::Status Reserve(size_t bytes);
  template <typename T> T* as() const { return static_cast<T*>(ptr_); }
  size_t capacity() const { return capacity_; }

 private:
  void* ptr_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace cab::cuda
