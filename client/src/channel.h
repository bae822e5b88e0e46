// Builds the gRPC channel of a cab::Client: target rewriting for replica lists, TLS, the service
// config (load balancing, retries of the idempotent unary calls), keepalive and extra arguments.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cab/client_options.h"

namespace grpc {
class Channel;
}

namespace cab::client_internal {

// "a:1,b:2" -> "ipv4:///a:1,b:2" (or ipv6:///[..]:p,...); "localhost" becomes 127.0.0.1.
// Single addresses and URIs ("dns:///", "unix:", ...) pass through. Errors name "target".
absl::StatusOr<std::string> ResolveTarget(const std::string& target);

// The service config JSON: load-balancing policy plus a retry policy on UNAVAILABLE for
// cab.v1.MaskPredictor/{Predict,Evict,Info} (not Stream: a stream is replayed by the session).
std::string ServiceConfigJson(const ClientOptions& options);

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& options);

}  // namespace cab::client_internal
