#include "session_manager.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "metrics.h"

namespace cab::server {

SessionManager::SessionManager(const Limits& limits, absl::Duration idle_timeout, Metrics* metrics)
    : limits_(limits), idle_timeout_(idle_timeout), metrics_(metrics) {}

absl::StatusOr<SessionManager::Ticket> SessionManager::Open(const std::string& requested_id, absl::Time now,
                                                            std::function<void()> on_idle) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int>(sessions_.size()) >= limits_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("session: ", sessions_.size(), " sessions open, --max_sessions=", limits_.max_sessions));
  }
  Ticket t;
  t.key = next_key_++;
  t.id = requested_id.empty() ? absl::StrFormat("s%d-%016x", t.key, rng()) : requested_id;
  Entry e;
  e.id = t.id;
  e.last_active = now;
  e.on_idle = std::move(on_idle);
  sessions_.emplace(t.key, std::move(e));
  PublishLocked();
  return t;
}

absl::Status SessionManager::CheckBytes(uint64_t key, int64_t bytes) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(key);
  if (it == sessions_.end()) return absl::FailedPreconditionError("session: closed");
  if (bytes > limits_.max_session_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("session: coarse state would grow to ", bytes,
                                                     " bytes, --max_session_bytes=", limits_.max_session_bytes));
  }
  const int64_t total = total_bytes_ - it->second.bytes + bytes;
  if (total > limits_.max_total_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("session: all sessions would hold ", total,
                                                     " bytes, --max_total_bytes=", limits_.max_total_bytes));
  }
  return absl::OkStatus();
}

void SessionManager::SetBytes(uint64_t key, int64_t bytes, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(key);
  if (it == sessions_.end()) return;
  total_bytes_ += bytes - it->second.bytes;
  it->second.bytes = bytes;
  it->second.last_active = now;
  PublishLocked();
}

void SessionManager::Touch(uint64_t key, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(key);
  if (it != sessions_.end()) it->second.last_active = now;
}

bool SessionManager::Close(uint64_t key, const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(key);
    if (it == sessions_.end()) return false;
    total_bytes_ -= it->second.bytes;
    sessions_.erase(it);
    PublishLocked();
  }
  if (metrics_) metrics_->SessionClosed(reason);
  return true;
}

uint64_t SessionManager::AddPendingStream(absl::Time now, std::function<void()> on_idle) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry e;
  e.last_active = now;
  e.on_idle = std::move(on_idle);
  const uint64_t key = next_key_++;
  pending_.emplace(key, std::move(e));
  return key;
}

void SessionManager::RemovePendingStream(uint64_t key) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.erase(key);
}

int SessionManager::ExpireIdle(absl::Time now) {
  std::vector<std::function<void()>> callbacks;
  std::vector<std::function<void()>> pending_callbacks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (now - it->second.last_active >= idle_timeout_) {
        pending_callbacks.push_back(std::move(it->second.on_idle));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (now - it->second.last_active >= idle_timeout_) {
        total_bytes_ -= it->second.bytes;
        callbacks.push_back(std::move(it->second.on_idle));
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
    if (!callbacks.empty()) PublishLocked();
  }
  for (auto& cb : callbacks) {
    if (metrics_) metrics_->SessionClosed(kClosedIdle);
    if (cb) cb();
  }
  for (auto& cb : pending_callbacks) {
    if (cb) cb();
  }
  return static_cast<int>(callbacks.size() + pending_callbacks.size());
}

int SessionManager::open_sessions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(sessions_.size());
}

int64_t SessionManager::total_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_bytes_;
}

int64_t SessionManager::session_bytes(uint64_t key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(key);
  return it == sessions_.end() ? 0 : it->second.bytes;
}

bool SessionManager::is_open(uint64_t key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return sessions_.count(key) > 0;
}

void SessionManager::PublishLocked() {
  if (!metrics_) return;
  metrics_->active_sessions().Set(static_cast<double>(sessions_.size()));
  metrics_->session_memory_bytes().Set(static_cast<double>(total_bytes_));
}

}  // namespace cab::server
