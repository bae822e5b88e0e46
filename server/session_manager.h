// Bookkeeping of streaming sessions: how many are open, the coarse-state bytes each holds against
// --max_session_bytes and all of them against --max_total_bytes, and idle expiry. Holds no tensors
// and knows nothing of gRPC: a session's owner (the stream) registers a callback to be told when
// the session expired.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "options.h"

namespace cab::server {

class Metrics;

// Reasons a session closes (label values of cab_sessions_closed_total).
inline constexpr const char* kClosedCompleted = "completed";
inline constexpr const char* kClosedCancelled = "cancelled";
inline constexpr const char* kClosedIdle = "idle_timeout";
inline constexpr const char* kClosedError = "error";

class SessionManager {
 public:
  // `metrics` may be null (tests).
  SessionManager(const Limits& limits, absl::Duration idle_timeout, Metrics* metrics);

  struct Ticket {
    uint64_t key = 0;
    std::string id;
  };
  // Opens a session (RESOURCE_EXHAUSTED at --max_sessions). An empty `requested_id` gets a fresh id.
  // `on_idle` runs (outside the manager's lock) when ExpireIdle closes the session.
  absl::StatusOr<Ticket> Open(const std::string& requested_id, absl::Time now, std::function<void()> on_idle);

  // Checks that the session may hold `bytes` in total (RESOURCE_EXHAUSTED naming the flag), without
  // changing anything: call before allocating.
  absl::Status CheckBytes(uint64_t key, int64_t bytes) const;
  // Records that the session now holds `bytes` (after the allocation) and marks it active.
  void SetBytes(uint64_t key, int64_t bytes, absl::Time now);
  void Touch(uint64_t key, absl::Time now);

  // Closes the session (idempotent: false when it was already closed).
  bool Close(uint64_t key, const std::string& reason);

  // A stream that has not sent its SessionConfig yet holds no session, but it must not wait forever:
  // it is registered here (not counted as a session) until it configures one or ends.
  uint64_t AddPendingStream(absl::Time now, std::function<void()> on_idle);
  void RemovePendingStream(uint64_t key);

  // Closes every session idle since before now - idle_timeout and runs their callbacks; pending
  // streams that old are dropped and their callbacks run too. Returns how many were expired.
  int ExpireIdle(absl::Time now);

  int open_sessions() const;
  int64_t total_bytes() const;
  int64_t session_bytes(uint64_t key) const;
  bool is_open(uint64_t key) const;
  const Limits& limits() const { return limits_; }

 private:
  struct Entry {
    std::string id;
    int64_t bytes = 0;
    absl::Time last_active;
    std::function<void()> on_idle;
  };
  void PublishLocked();

  const Limits limits_;
  const absl::Duration idle_timeout_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  std::map<uint64_t, Entry> sessions_;
  std::map<uint64_t, Entry> pending_;  // unconfigured streams (id unused)
  uint64_t next_key_ = 1;
  int64_t total_bytes_ = 0;
};

}  // namespace cab::server
