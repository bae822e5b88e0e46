// cab-health-probe: asks a gRPC server's grpc.health.v1.Health/Check and exits 0 when it answers
// SERVING. Meant for container HEALTHCHECKs, exec probes and tests (grpc_health_probe is not a
// Debian package). Exit codes, as grpc_health_probe users expect:
//   0 SERVING, 1 bad arguments, 2 could not connect, 3 the RPC failed, 4 answered but not SERVING.
#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "grpcpp/grpcpp.h"
#include "health.grpc.pb.h"
#include "probe_options.h"

ABSL_FLAG(std::string, addr, "", "HOST:PORT of the gRPC server (any gRPC target works)");
ABSL_FLAG(std::string, service, "", "health service name; empty = the server as a whole");
ABSL_FLAG(double, timeout_s, 5.0, "seconds per attempt (connect + Check)");
ABSL_FLAG(double, wait_s, 0.0, "retry until SERVING or this many seconds have passed");
ABSL_FLAG(bool, tls, false, "use TLS");
ABSL_FLAG(std::string, tls_ca_cert, "", "PEM file of the CA that signed the server certificate");
ABSL_FLAG(std::string, tls_client_cert, "", "PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, tls_client_key, "", "PEM client key (mutual TLS)");
ABSL_FLAG(std::string, tls_server_name, "", "server name to verify instead of the host of --addr");
ABSL_FLAG(std::string, auth_token_file, "", "file holding a bearer token for `authorization` metadata");

namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

enum Exit { kServing = 0, kBadArgs = 1, kNoConnection = 2, kRpcFailed = 3, kNotServing = 4 };

std::chrono::system_clock::time_point After(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

struct Attempt {
  Exit code;
  std::string message;
};

Attempt CheckOnce(const cab::probe::ProbeOptions& o, std::shared_ptr<grpc::ChannelCredentials> creds,
                  const std::string& token) {
  grpc::ChannelArguments args;
  if (!o.tls_server_name.empty()) args.SetSslTargetNameOverride(o.tls_server_name);
  auto channel = grpc::CreateCustomChannel(o.addr, creds, args);
  if (!channel->WaitForConnected(After(o.timeout_s)))
    return {kNoConnection, "could not connect to " + o.addr};
  auto stub = Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(After(o.timeout_s));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  HealthCheckRequest req;
  req.set_service(o.service);
  HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok())
    return {kRpcFailed, "Check failed: code " + std::to_string(s.error_code()) + ": " + s.error_message()};
  if (resp.status() != HealthCheckResponse::SERVING)
    return {kNotServing, "status " + HealthCheckResponse::ServingStatus_Name(resp.status())};
  return {kServing, "status SERVING"};
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "cab-health-probe --addr=HOST:PORT [--service=NAME]: exit 0 when grpc.health.v1 says SERVING");
  absl::ParseCommandLine(argc, argv);
  cab::probe::ProbeOptions o;
  o.addr = absl::GetFlag(FLAGS_addr);
  o.service = absl::GetFlag(FLAGS_service);
  o.timeout_s = absl::GetFlag(FLAGS_timeout_s);
  o.wait_s = absl::GetFlag(FLAGS_wait_s);
  o.tls = absl::GetFlag(FLAGS_tls);
  o.tls_ca_cert = absl::GetFlag(FLAGS_tls_ca_cert);
  o.tls_client_cert = absl::GetFlag(FLAGS_tls_client_cert);
  o.tls_client_key = absl::GetFlag(FLAGS_tls_client_key);
  o.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  o.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);

  absl::Status valid = cab::probe::Validate(o);
  if (!valid.ok()) {
    std::fprintf(stderr, "cab-health-probe: %s\n", std::string(valid.message()).c_str());
    return kBadArgs;
  }
  auto creds = cab::probe::MakeCredentials(o);
  auto token = cab::probe::ReadToken(o);
  for (const absl::Status& s : {creds.status(), token.status()}) {
    if (!s.ok()) {
      std::fprintf(stderr, "cab-health-probe: %s\n", std::string(s.message()).c_str());
      return kBadArgs;
    }
  }

  const auto give_up = std::chrono::steady_clock::now() +
                       std::chrono::microseconds(static_cast<int64_t>(o.wait_s * 1e6));
  for (;;) {
    Attempt a = CheckOnce(o, *creds, *token);
    if (a.code == kServing || std::chrono::steady_clock::now() >= give_up) {
      std::fprintf(a.code == kServing ? stdout : stderr, "cab-health-probe: %s service='%s': %s\n",
                   o.addr.c_str(), o.service.c_str(), a.message.c_str());
      return a.code;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}
