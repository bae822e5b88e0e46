#include "options.h"

#include <cctype>
#include <cstdint>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC address HOST:PORT (port 0 picks a free port)");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus endpoint HOST:PORT (empty disables it; port 0 picks a free port)");
ABSL_FLAG(std::string, port_file, "", "once serving, atomically write 'grpc=PORT metrics=PORT' to this file");
ABSL_FLAG(std::string, backend, "auto", "cpu | cuda | auto (cuda when the plugin loads and sees a GPU)");
ABSL_FLAG(std::string, plugin_dir, "",
          "directory of libcab_cuda_backend.so (default: the executable's directory, then ../lib)");
ABSL_FLAG(int32_t, threads, 0, "worker threads for compute (0: hardware concurrency)");
ABSL_FLAG(int32_t, max_queue, 1024, "requests waiting for a worker before RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_tokens, int64_t{1} << 20, "max tokens (batch * sequence) per request or session layer");
ABSL_FLAG(int32_t, max_heads, 256, "max query heads");
ABSL_FLAG(int32_t, max_head_dim, 1024, "max head dimension");
ABSL_FLAG(int32_t, max_blocks, 4096, "max key/query blocks M per sequence (the graph is M x M per head)");
ABSL_FLAG(int64_t, max_message_bytes, int64_t{1} << 30, "max size of one received gRPC message");
ABSL_FLAG(int32_t, max_sessions, 1024, "max concurrent streaming sessions");
ABSL_FLAG(int64_t, max_session_bytes, int64_t{1} << 30, "max coarse state held by one session");
ABSL_FLAG(int64_t, max_total_bytes, int64_t{8} << 30, "max coarse state held by all sessions together");
ABSL_FLAG(double, session_idle_timeout_s, 300, "close a stream that sends nothing for this long");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate (TLS when set, with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM server private key");
ABSL_FLAG(std::string, tls_client_ca, "", "PEM CA for client certificates (mutual TLS when set)");
ABSL_FLAG(std::string, auth_token_file, "",
          "file holding a bearer token; clients must send 'authorization: Bearer <token>'");
ABSL_FLAG(double, drain_grace_s, 10, "seconds in-flight work gets to finish after SIGTERM/SIGINT");
ABSL_FLAG(double, drain_lame_duck_s, 1,
          "after SIGTERM/SIGINT: seconds of NOT_SERVING + UNAVAILABLE before the listener closes (part of the grace)");
ABSL_FLAG(int32_t, max_batch, 8, "CUDA backend: max requests batched into one launch");
ABSL_FLAG(int32_t, max_queue_delay_us, 200, "CUDA backend: max wait for a batch to fill, microseconds");
ABSL_FLAG(std::string, cuda_devices, "",
          "CUDA backend: comma-separated device indices, one worker each (a repeated index adds a worker on "
          "that GPU); empty: every visible GPU");

namespace cab::server {

const std::vector<std::string>& FlagNames() {
  static const std::vector<std::string> names = {
      "listen", "metrics_listen", "port_file", "backend", "plugin_dir", "threads", "max_queue",
      "max_tokens", "max_heads", "max_head_dim", "max_blocks", "max_message_bytes", "max_sessions",
      "max_session_bytes", "max_total_bytes", "session_idle_timeout_s", "tls_cert", "tls_key",
      "tls_client_ca", "auth_token_file", "drain_grace_s", "drain_lame_duck_s", "max_batch", "max_queue_delay_us",
      "cuda_devices"};
  return names;
}

absl::Status ApplyEnvironment(const std::function<const char*(const char*)>& getenv) {
  for (const std::string& name : FlagNames()) {
    std::string var = "CAB_";
    for (char c : name) var += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const char* value = getenv(var.c_str());
    if (value == nullptr) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) return absl::InternalError(absl::StrCat("flag --", name, " is not linked in"));
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat(var, ": cannot parse '", value, "': ", error));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerOptions> ReadOptions() {
  ServerOptions o;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  o.port_file = absl::GetFlag(FLAGS_port_file);
  o.backend = absl::GetFlag(FLAGS_backend);
  o.plugin_dir = absl::GetFlag(FLAGS_plugin_dir);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.max_queue = absl::GetFlag(FLAGS_max_queue);
  o.limits.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  o.limits.max_heads = absl::GetFlag(FLAGS_max_heads);
  o.limits.max_head_dim = absl::GetFlag(FLAGS_max_head_dim);
  o.limits.max_blocks = absl::GetFlag(FLAGS_max_blocks);
  o.limits.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.limits.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  o.limits.max_session_bytes = absl::GetFlag(FLAGS_max_session_bytes);
  o.limits.max_total_bytes = absl::GetFlag(FLAGS_max_total_bytes);
  o.session_idle_timeout_s = absl::GetFlag(FLAGS_session_idle_timeout_s);
  o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key = absl::GetFlag(FLAGS_tls_key);
  o.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  o.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  o.drain_grace_s = absl::GetFlag(FLAGS_drain_grace_s);
  o.drain_lame_duck_s = absl::GetFlag(FLAGS_drain_lame_duck_s);
  o.max_batch = absl::GetFlag(FLAGS_max_batch);
  o.max_queue_delay_us = absl::GetFlag(FLAGS_max_queue_delay_us);
  o.cuda_devices = absl::GetFlag(FLAGS_cuda_devices);
  if (auto s = ValidateOptions(o); !s.ok()) return s;
  return o;
}

absl::Status ValidateOptions(const ServerOptions& o) {
  auto bad = [](const char* flag, const auto& value, const char* why) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", value, ": ", why));
  };
  if (o.listen.empty()) return bad("listen", o.listen, "must be HOST:PORT");
  if (o.backend != "cpu" && o.backend != "cuda" && o.backend != "auto") {
    return bad("backend", o.backend, "must be cpu, cuda or auto");
  }
  if (o.threads < 0 || o.threads > 1024) return bad("threads", o.threads, "must be in [0, 1024]");
  if (o.max_queue < 1) return bad("max_queue", o.max_queue, "must be >= 1");
  const Limits& l = o.limits;
  if (l.max_tokens < 1) return bad("max_tokens", l.max_tokens, "must be >= 1");
  if (l.max_heads < 1) return bad("max_heads", l.max_heads, "must be >= 1");
  if (l.max_head_dim < 1) return bad("max_head_dim", l.max_head_dim, "must be >= 1");
  if (l.max_blocks < 1) return bad("max_blocks", l.max_blocks, "must be >= 1");
  // gRPC takes the receive limit as an int.
  if (l.max_message_bytes < 1024 || l.max_message_bytes > INT32_MAX) {
    return bad("max_message_bytes", l.max_message_bytes, "must be in [1024, 2^31 - 1]");
  }
  if (l.max_sessions < 0) return bad("max_sessions", l.max_sessions, "must be >= 0");
  if (l.max_session_bytes < 1) return bad("max_session_bytes", l.max_session_bytes, "must be >= 1");
  if (l.max_total_bytes < 1) return bad("max_total_bytes", l.max_total_bytes, "must be >= 1");
  if (!(o.session_idle_timeout_s > 0)) {
    return bad("session_idle_timeout_s", o.session_idle_timeout_s, "must be > 0");
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return bad("tls_cert", o.tls_cert, "--tls_cert and --tls_key must be given together");
  }
  if (!o.tls_client_ca.empty() && o.tls_cert.empty()) {
    return bad("tls_client_ca", o.tls_client_ca, "mutual TLS needs --tls_cert and --tls_key");
  }
  if (!(o.drain_grace_s >= 0)) return bad("drain_grace_s", o.drain_grace_s, "must be >= 0");
  if (!(o.drain_lame_duck_s >= 0)) return bad("drain_lame_duck_s", o.drain_lame_duck_s, "must be >= 0");
  if (o.max_batch < 1) return bad("max_batch", o.max_batch, "must be >= 1");
  if (o.max_queue_delay_us < 0) return bad("max_queue_delay_us", o.max_queue_delay_us, "must be >= 0");
  if (!o.cuda_devices.empty()) {
    for (absl::string_view index : absl::StrSplit(o.cuda_devices, ',')) {
      int device = -1;
      if (!absl::SimpleAtoi(index, &device) || device < 0) {
        return bad("cuda_devices", o.cuda_devices, "must be comma-separated device indices >= 0, e.g. 0,1");
      }
    }
  }
  return absl::OkStatus();
}

std::string PluginOptions(const ServerOptions& o) {
  std::string options = absl::StrCat("max_batch=", o.max_batch, ";max_queue_delay_us=", o.max_queue_delay_us);
  if (!o.cuda_devices.empty()) absl::StrAppend(&options, ";devices=", o.cuda_devices);
  return options;
}

}  // namespace cab::server
