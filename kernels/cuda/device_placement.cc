#include "device_placement.h"

#include <stdexcept>

namespace cab::cuda {

DevicePlacement::DevicePlacement(int devices) {
  if (devices < 1) throw std::invalid_argument("DevicePlacement: at least one device");
  pinned_.assign(devices, 0);
  in_flight_.assign(devices, 0);
}

DevicePlacement::Lease::~Lease() {
  if (owner_ != nullptr) owner_->Done(device_);
}

int DevicePlacement::BestLocked(const std::vector<int>& primary, const std::vector<int>& secondary) const {
  int best = 0;
  for (int d = 1; d < devices(); ++d) {
    if (primary[d] < primary[best] || (primary[d] == primary[best] && secondary[d] < secondary[best])) best = d;
  }
  return best;
}

DevicePlacement::Lease DevicePlacement::Acquire(uint64_t session) {
  std::lock_guard<std::mutex> lock(mu_);
  int device;
  if (session == 0) {
    device = BestLocked(in_flight_, pinned_);
  } else if (auto it = sessions_.find(session); it != sessions_.end()) {
    device = it->second;
  } else {
    device = BestLocked(pinned_, in_flight_);
    sessions_.emplace(session, device);
    ++pinned_[device];
  }
  ++in_flight_[device];
  return Lease(this, device);
}

bool DevicePlacement::Release(uint64_t session) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return false;
  --pinned_[it->second];
  sessions_.erase(it);
  return true;
}

void DevicePlacement::Done(int device) {
  std::lock_guard<std::mutex> lock(mu_);
  --in_flight_[device];
}

int DevicePlacement::pinned(int device) const {
  std::lock_guard<std::mutex> lock(mu_);
  return pinned_.at(device);
}

int DevicePlacement::in_flight(int device) const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_flight_.at(device);
}

std::optional<int> DevicePlacement::DeviceOf(uint64_t session) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return std::nullopt;
  return it->second;
}

}  // namespace cab::cuda
