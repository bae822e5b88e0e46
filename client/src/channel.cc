#include "channel.h"

#include <fstream>
#include <sstream>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace cab::client_internal {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(what, ": cannot read '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Seconds as the service config's duration string ("0.05s").
std::string Duration(absl::Duration d) { return absl::StrFormat("%.3fs", absl::ToDoubleSeconds(d)); }

bool IsIpv4(absl::string_view host) {
  std::vector<absl::string_view> parts = absl::StrSplit(host, '.');
  if (parts.size() != 4) return false;
  for (auto p : parts) {
    int v;
    if (p.empty() || !absl::SimpleAtoi(p, &v) || v < 0 || v > 255) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> ResolveTarget(const std::string& target) {
  if (target.empty()) return absl::InvalidArgumentError("target: empty");
  if (target.find(',') == std::string::npos) return target;
  if (absl::StrContains(target, ":///")) return target;  // already a URI with an address list
  std::vector<std::string> v4, v6;
  for (absl::string_view raw : absl::StrSplit(target, ',')) {
    absl::string_view addr = absl::StripAsciiWhitespace(raw);
    if (addr.empty()) return absl::InvalidArgumentError(absl::StrCat("target: empty address in '", target, "'"));
    size_t colon = addr.rfind(':');
    if (colon == absl::string_view::npos || colon + 1 == addr.size())
      return absl::InvalidArgumentError(absl::StrCat("target: '", addr, "' has no port"));
    absl::string_view host = addr.substr(0, colon), port = addr.substr(colon + 1);
    int port_number;
    if (!absl::SimpleAtoi(port, &port_number) || port_number <= 0 || port_number > 65535)
      return absl::InvalidArgumentError(absl::StrCat("target: bad port in '", addr, "'"));
    if (host == "localhost") host = "127.0.0.1";
    if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
      v6.push_back(std::string(addr));
    } else if (IsIpv4(host)) {
      v4.push_back(absl::StrCat(host, ":", port));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "target: '", addr, "' in an address list must be an IP literal (use dns:///NAME:PORT for names)"));
    }
  }
  if (!v4.empty() && !v6.empty())
    return absl::InvalidArgumentError("target: an address list cannot mix IPv4 and IPv6");
  return v4.empty() ? absl::StrCat("ipv6:///", absl::StrJoin(v6, ","))
                    : absl::StrCat("ipv4:///", absl::StrJoin(v4, ","));
}

std::string ServiceConfigJson(const ClientOptions& o) {
  std::string json = absl::StrCat(R"({"loadBalancingConfig":[{")", o.load_balancing_policy, R"(":{}}])");
  if (o.health_check) absl::StrAppend(&json, R"(,"healthCheckConfig":{"serviceName":"cab.v1.MaskPredictor"})");
  if (o.max_attempts > 1) {
    absl::StrAppend(&json, R"(,"methodConfig":[{"name":[)",
                    R"({"service":"cab.v1.MaskPredictor","method":"Predict"},)",
                    R"({"service":"cab.v1.MaskPredictor","method":"Evict"},)",
                    R"({"service":"cab.v1.MaskPredictor","method":"Info"}],)",
                    R"("retryPolicy":{"maxAttempts":)", std::min(o.max_attempts, 5),
                    R"(,"initialBackoff":")", Duration(o.initial_backoff), R"(","maxBackoff":")",
                    Duration(o.max_backoff), R"(","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}])");
  }
  json += "}";
  return json;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientOptions& o) {
  auto target = ResolveTarget(o.target);
  if (!target.ok()) return target.status();
  if (o.load_balancing_policy != "round_robin" && o.load_balancing_policy != "pick_first")
    return absl::InvalidArgumentError(absl::StrCat("load_balancing_policy: '", o.load_balancing_policy,
                                                   "' (want round_robin or pick_first)"));
  if (o.max_attempts < 1) return absl::InvalidArgumentError("max_attempts: must be >= 1");

  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (o.tls.enabled) {
    grpc::SslCredentialsOptions ssl;
    if (!o.tls.ca_cert_file.empty()) {
      auto ca = ReadFile(o.tls.ca_cert_file, "tls.ca_cert_file");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (o.tls.client_cert_file.empty() != o.tls.client_key_file.empty())
      return absl::InvalidArgumentError("tls.client_cert_file and tls.client_key_file: give both or neither");
    if (!o.tls.client_cert_file.empty()) {
      auto cert = ReadFile(o.tls.client_cert_file, "tls.client_cert_file");
      if (!cert.ok()) return cert.status();
      auto key = ReadFile(o.tls.client_key_file, "tls.client_key_file");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }

  grpc::ChannelArguments args;
  args.SetServiceConfigJSON(ServiceConfigJson(o));
  args.SetMaxReceiveMessageSize(o.max_message_bytes);
  args.SetMaxSendMessageSize(o.max_message_bytes);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, o.max_attempts > 1 ? 1 : 0);
  args.SetInt(GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE,
              static_cast<int>(std::min<int64_t>(o.retry_buffer_bytes, INT32_MAX)));
  if (o.keepalive_time_ms > 0) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, o.keepalive_time_ms);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, o.keepalive_timeout_ms);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  if (!o.tls.target_name_override.empty()) args.SetSslTargetNameOverride(o.tls.target_name_override);
  for (const auto& [k, v] : o.string_args) args.SetString(k, v);
  for (const auto& [k, v] : o.int_args) args.SetInt(k, v);
  return grpc::CreateCustomChannel(*target, creds, args);
}

}  // namespace cab::client_internal
