#include "probe_options.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"

namespace cab::probe {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

absl::Status Validate(const ProbeOptions& o) {
  if (o.addr.empty()) return absl::InvalidArgumentError("--addr is required (HOST:PORT)");
  // dns:///, unix: and ipv6 targets are passed through; a bare name needs a port.
  if (!absl::StrContains(o.addr, ':'))
    return absl::InvalidArgumentError(absl::StrCat("--addr: '", o.addr, "' has no port (HOST:PORT)"));
  if (!(o.timeout_s > 0)) return absl::InvalidArgumentError("--timeout_s must be > 0");
  if (!(o.wait_s >= 0)) return absl::InvalidArgumentError("--wait_s must be >= 0");
  if (o.tls_client_cert.empty() != o.tls_client_key.empty())
    return absl::InvalidArgumentError("--tls_client_cert and --tls_client_key go together");
  bool tls_files = !o.tls_ca_cert.empty() || !o.tls_client_cert.empty() || !o.tls_server_name.empty();
  if (tls_files && !o.tls)
    return absl::InvalidArgumentError("--tls_ca_cert/--tls_client_cert/--tls_server_name need --tls");
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeCredentials(const ProbeOptions& o) {
  if (!o.tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!o.tls_ca_cert.empty()) {
    auto pem = ReadFile("tls_ca_cert", o.tls_ca_cert);
    if (!pem.ok()) return pem.status();
    ssl.pem_root_certs = *pem;
  }
  if (!o.tls_client_cert.empty()) {
    auto cert = ReadFile("tls_client_cert", o.tls_client_cert);
    if (!cert.ok()) return cert.status();
    auto key = ReadFile("tls_client_key", o.tls_client_key);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  return grpc::SslCredentials(ssl);
}

absl::StatusOr<std::string> ReadToken(const ProbeOptions& o) {
  if (o.auth_token_file.empty()) return std::string();
  auto token = ReadFile("auth_token_file", o.auth_token_file);
  if (!token.ok()) return token.status();
  std::string t(absl::StripAsciiWhitespace(*token));
  if (t.empty()) return absl::InvalidArgumentError(absl::StrCat("--auth_token_file: ", o.auth_token_file, " is empty"));
  return t;
}

}  // namespace cab::probe
