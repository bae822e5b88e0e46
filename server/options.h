// cab-server's configuration: absl flags, each also settable from the environment as
// CAB_<FLAG IN UPPER CASE> (a command-line flag wins), read into one plain struct.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cab::server {

struct Limits {
  int64_t max_tokens = 1 << 20;        // B * N per request / session layer
  int max_heads = 256;                 // Hq
  int max_head_dim = 1024;             // D
  int max_blocks = 4096;               // M: the block graph is M x M per head
  int64_t max_message_bytes = int64_t{1} << 30;
  int max_sessions = 1024;
  int64_t max_session_bytes = int64_t{1} << 30;
  int64_t max_total_bytes = int64_t{8} << 30;
};

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";
  std::string metrics_listen = "127.0.0.1:9464";
  std::string port_file;
  std::string backend = "auto";        // cpu | cuda | auto
  std::string plugin_dir;              // empty: next to the executable, then ../lib
  int threads = 0;                     // worker pool size; 0: hardware concurrency
  int max_queue = 1024;                // worker pool queue bound (RESOURCE_EXHAUSTED beyond)
  Limits limits;
  double session_idle_timeout_s = 300;
  std::string tls_cert, tls_key, tls_client_ca;
  std::string auth_token_file;
  double drain_grace_s = 10;
  // After SIGTERM/SIGINT and before grpc::Server::Shutdown: health NOT_SERVING and new cab.v1 calls
  // answered UNAVAILABLE (retryable) while clients move away. Shutdown itself cancels calls that
  // reach the server after it starts (gRPC kills them as CANCELLED); the lame duck keeps clients
  // that watch health away from that window. Counted inside drain_grace_s.
  double drain_lame_duck_s = 1;
  int max_batch = 8;                   // passed to the CUDA plugin (it batches heads/requests)
  int max_queue_delay_us = 200;        // likewise
  std::string cuda_devices;            // likewise, as devices=...; empty: every visible GPU
};

// The option string cab-server hands the CUDA plugin (cab_backend_create): its batching and devices.
std::string PluginOptions(const ServerOptions& o);

// The names of every cab-server flag (also the suffix of its environment variable).
const std::vector<std::string>& FlagNames();

// For each flag whose CAB_<NAME> variable `getenv` returns, parses the value into the flag.
// Call before absl::ParseCommandLine so that the command line wins. Errors name the variable.
absl::Status ApplyEnvironment(const std::function<const char*(const char*)>& getenv);

// Reads the flags into ServerOptions and checks them (INVALID_ARGUMENT naming the flag).
absl::StatusOr<ServerOptions> ReadOptions();
absl::Status ValidateOptions(const ServerOptions& o);

}  // namespace cab::server
