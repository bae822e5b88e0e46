// Server credentials from the TLS flags: insecure (plain loopback development, the default), TLS
// with a certificate and key, or mutual TLS when a client CA is given.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"
#include "options.h"

namespace cab::server {

// Errors name the flag whose file cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerOptions& o);

// Reads a whole file ("" and an error when it cannot be read).
absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag);

}  // namespace cab::server
