// How a cab::Client reaches the service: target, transport security, auth, channel tuning.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace cab {

struct TlsOptions {
  bool enabled = false;
  std::string ca_cert_file;       // PEM roots; empty: the system roots
  std::string client_cert_file;   // PEM chain for mutual TLS (with client_key_file)
  std::string client_key_file;
  std::string target_name_override;  // expected server name when it differs from the target host
};

struct ClientOptions {
  // "HOST:PORT" (one server), "dns:///NAME:PORT" (every address the name resolves to) or
  // "HOST:PORT,HOST:PORT,..." (a fixed replica list, sent to gRPC as ipv4:/// or ipv6:///; hosts
  // must be IP literals or "localhost"). Any other gRPC target URI is passed through unchanged.
  std::string target = "127.0.0.1:50051";
  TlsOptions tls;
  std::string bearer_token;       // sent as `authorization: Bearer <token>` on every call
  // "round_robin" spreads calls over every resolved address; "pick_first" sticks to one.
  std::string load_balancing_policy = "round_robin";
  // Client-side health checking (gRPC's healthCheckConfig; acted on by round_robin only): the
  // channel watches grpc.health.v1 "cab.v1.MaskPredictor" on every address and stops sending to
  // one that reports NOT_SERVING, such as a replica draining after SIGTERM, before it closes its
  // listener. Servers without the health service count as healthy.
  bool health_check = true;
  // Keepalive pings (0: off). Servers refuse pings more often than their policy allows.
  int keepalive_time_ms = 0;
  int keepalive_timeout_ms = 20000;
  // Retries of the idempotent unary calls (Predict, Evict, Info) on UNAVAILABLE, through the
  // channel's service config. 1 disables them.
  int max_attempts = 4;
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(1);
  // gRPC keeps a request in memory for retries only up to this size; bigger ones are not retried.
  int64_t retry_buffer_bytes = int64_t{256} << 20;
  int max_message_bytes = 1 << 30;
  // Deadline of every call that does not set its own; streams use it per request (Append, Mask).
  absl::Duration default_deadline = absl::Seconds(30);
  // Threads for client-side coarsening (representatives, session replay state); 0: min(hardware, 8).
  int coarsen_threads = 0;
  // How often a broken session stream is reopened before the error reaches the caller.
  int session_reconnects = 3;
  // Extra channel arguments, passed as they are.
  std::vector<std::pair<std::string, std::string>> string_args;
  std::vector<std::pair<std::string, int>> int_args;
};

// Per-call overrides.
struct CallOptions {
  absl::Duration deadline = absl::ZeroDuration();  // zero: ClientOptions::default_deadline
};

}  // namespace cab
