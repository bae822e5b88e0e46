// grpc::Status -> absl::Status (same code, same message).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace cab::client_internal {

inline absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace cab::client_internal
