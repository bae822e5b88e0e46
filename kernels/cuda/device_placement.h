// Which device (worker) runs a backend call. A streaming session is pinned to one device from its
// first call until it is released, so its work stays in one place (today only for locality; later
// for coarse state kept resident on that device). Rules:
// - a new session goes to the device with the fewest pinned sessions; ties: fewest calls in
//   flight, then the lowest index;
// - a call without a session (session 0) goes to the device with the fewest calls in flight; ties:
//   fewest pinned sessions, then the lowest index;
// - Release forgets a session's pin; its calls still in flight keep their device.
// Plain C++ (no CUDA) so that it is unit-tested without a GPU. Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace cab::cuda {

class DevicePlacement {
 public:
  explicit DevicePlacement(int devices);

  // One call's hold on a device: the call counts as in flight there until the lease is destroyed.
  class Lease {
   public:
    Lease(Lease&& other) noexcept : owner_(other.owner_), device_(other.device_) { other.owner_ = nullptr; }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    int device() const { return device_; }

   private:
    friend class DevicePlacement;
    Lease(DevicePlacement* owner, int device) : owner_(owner), device_(device) {}
    DevicePlacement* owner_;
    int device_;
  };

  // The device for a call of `session` (0: none), pinning a session seen for the first time.
  Lease Acquire(uint64_t session);
  // Frees the session's slot; false when it held none (never placed, or released already).
  bool Release(uint64_t session);

  int devices() const { return static_cast<int>(pinned_.size()); }
  int pinned(int device) const;     // sessions pinned to `device`
  int in_flight(int device) const;  // leases held on `device`
  std::optional<int> DeviceOf(uint64_t session) const;

 private:
  void Done(int device);
  // The lowest index minimising (primary, secondary); called with mu_ held.
  int BestLocked(const std::vector<int>& primary, const std::vector<int>& secondary) const;

  mutable std::mutex mu_;
  std::vector<int> pinned_, in_flight_;
  std::unordered_map<uint64_t, int> sessions_;  // session -> device
};

}  // namespace cab::cuda
