// Options of cab-health-probe and the channel credentials they imply. Kept apart from main()
// so that every way a user can get them wrong is an absl::Status naming the flag.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"

namespace cab::probe {

struct ProbeOptions {
  std::string addr;             // HOST:PORT of the gRPC server
  std::string service;          // health service name; "" = the whole server
  double timeout_s = 5.0;       // per attempt: connect + Check
  double wait_s = 0.0;          // keep retrying until SERVING or this long has passed
  bool tls = false;             // TLS instead of plaintext
  std::string tls_ca_cert;      // PEM of the CA that signed the server (system roots when empty)
  std::string tls_client_cert;  // PEM client certificate for mutual TLS
  std::string tls_client_key;   // PEM client key for mutual TLS
  std::string tls_server_name;  // overrides the name checked against the server certificate
  std::string auth_token_file;  // bearer token sent as `authorization: Bearer <token>`
};

// Checks ranges and pairings (client cert needs key, TLS files need --tls).
absl::Status Validate(const ProbeOptions& o);

// Plaintext or TLS credentials, reading the PEM files the options name.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeCredentials(const ProbeOptions& o);

// The token from auth_token_file with surrounding whitespace removed ("" when no file is set).
absl::StatusOr<std::string> ReadToken(const ProbeOptions& o);

}  // namespace cab::probe
