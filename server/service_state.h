// What every handler of cab.v1.MaskPredictor shares: configuration, backend, worker pool, sessions,
// metrics, auth and the draining flag. Owned by main; outlives the gRPC server.
#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "auth.h"
#include "cab/backend.h"
#include "grpcpp/grpcpp.h"
#include "metrics.h"
#include "options.h"
#include "session_manager.h"
#include "worker_pool.h"

namespace cab::server {

struct ServiceState {
  ServerOptions options;
  std::string version;
  cab::Backend* backend = nullptr;
  WorkerPool* pool = nullptr;
  Metrics* metrics = nullptr;
  SessionManager* sessions = nullptr;
  TokenAuth auth;
  std::atomic<bool> draining{false};
};

inline grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// Auth (UNAUTHENTICATED), then drain (UNAVAILABLE): the checks at the top of every cab.v1 handler.
absl::Status Admit(const ServiceState& state, const grpc::CallbackServerContext& ctx);

// DEADLINE_EXCEEDED once the client's deadline passed, CANCELLED once the call was cancelled.
absl::Status CheckAlive(const grpc::CallbackServerContext& ctx);

}  // namespace cab::server
