// cab-health-probe against two servers in this process: gRPC's own default health service (the
// one cab-server registers, so the probe's hand-written health.proto must speak its wire format)
// and a scripted Health service that checks the bearer token. The probe runs as the separate
// executable the images ship; its exit code is the contract (0 serving, 1 arguments,
// 2 no connection, 3 RPC failed, 4 not serving).
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "health.grpc.pb.h"

namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

int RunProbe(const std::string& args) {
  std::string cmd = std::string(CAB_HEALTH_PROBE) + " " + args + " >/dev/null 2>&1";
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string Addr(int port) { return "--addr=127.0.0.1:" + std::to_string(port); }

// A Health service whose answers the test scripts, and which wants a bearer token when set.
class ScriptedHealth final : public Health::Service {
 public:
  std::map<std::string, HealthCheckResponse::ServingStatus> status;
  std::string token;

  grpc::Status Check(grpc::ServerContext* ctx, const HealthCheckRequest* req,
                     HealthCheckResponse* resp) override {
    if (!token.empty()) {
      auto it = ctx->client_metadata().find("authorization");
      if (it == ctx->client_metadata().end() ||
          std::string(it->second.data(), it->second.size()) != "Bearer " + token)
        return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or wrong bearer token");
    }
    auto it = status.find(req->service());
    if (it == status.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service");
    resp->set_status(it->second);
    return grpc::Status::OK;
  }
};

// Stands in for cab.v1.MaskPredictor: a server needs some service besides health to start.
// One per server (gRPC allows no sharing), kept for the life of the test binary.
grpc::CallbackGenericService* Placeholder() {
  static std::vector<std::unique_ptr<grpc::CallbackGenericService>> all;
  all.push_back(std::make_unique<grpc::CallbackGenericService>());
  return all.back().get();
}

std::unique_ptr<grpc::Server> Start(grpc::Service* service, int* port, bool default_health) {
  grpc::EnableDefaultHealthCheckService(default_health);
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  if (service) b.RegisterService(service);
  else b.RegisterCallbackGenericService(Placeholder());
  auto server = b.BuildAndStart();
  grpc::EnableDefaultHealthCheckService(false);  // the switch is process-wide; read at build time
  return server;
}

TEST(HealthProbe, SpeaksGrpcDefaultHealthService) {
  int port = 0;
  auto server = Start(nullptr, &port, /*default_health=*/true);
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);
  auto* health = server->GetHealthCheckService();
  ASSERT_NE(health, nullptr);
  health->SetServingStatus("cab.v1.MaskPredictor", true);

  EXPECT_EQ(RunProbe(Addr(port)), 0);
  EXPECT_EQ(RunProbe(Addr(port) + " --service=cab.v1.MaskPredictor"), 0);

  // What cab-server does on SIGTERM: everything NOT_SERVING.
  health->SetServingStatus(false);
  EXPECT_EQ(RunProbe(Addr(port)), 4);
  EXPECT_EQ(RunProbe(Addr(port) + " --service=cab.v1.MaskPredictor"), 4);

  // A name the server never registered: the Check RPC itself fails (NOT_FOUND).
  EXPECT_EQ(RunProbe(Addr(port) + " --service=no.such.Service"), 3);
  server->Shutdown();
}

TEST(HealthProbe, SendsBearerTokenFromFile) {
  ScriptedHealth svc;
  svc.status[""] = HealthCheckResponse::SERVING;
  svc.token = "s3cret";
  int port = 0;
  auto server = Start(&svc, &port, false);
  ASSERT_NE(server, nullptr);

  std::string file = testing::TempDir() + "/probe_token";
  std::ofstream(file) << "  s3cret\n";  // whitespace around the token is ignored
  std::string wrong = testing::TempDir() + "/probe_token_wrong";
  std::ofstream(wrong) << "other\n";

  EXPECT_EQ(RunProbe(Addr(port) + " --auth_token_file=" + file), 0);
  EXPECT_EQ(RunProbe(Addr(port)), 3);  // UNAUTHENTICATED
  EXPECT_EQ(RunProbe(Addr(port) + " --auth_token_file=" + wrong), 3);
  server->Shutdown();
}

TEST(HealthProbe, WaitsForServingWithinWait) {
  ScriptedHealth svc;
  svc.status[""] = HealthCheckResponse::NOT_SERVING;
  int port = 0;
  auto server = Start(&svc, &port, false);
  ASSERT_NE(server, nullptr);
  // Not serving for the whole wait: gives up with 4 after retrying.
  EXPECT_EQ(RunProbe(Addr(port) + " --wait_s=0.5 --timeout_s=1"), 4);
  svc.status[""] = HealthCheckResponse::SERVING;
  EXPECT_EQ(RunProbe(Addr(port) + " --wait_s=5 --timeout_s=1"), 0);
  server->Shutdown();
}

TEST(HealthProbe, NoServerIsConnectionFailure) {
  // Bind and release a port so that nothing listens there.
  int port = 0;
  {
    auto server = Start(nullptr, &port, false);
    ASSERT_NE(server, nullptr);
    server->Shutdown();
    server->Wait();
  }
  EXPECT_EQ(RunProbe(Addr(port) + " --timeout_s=0.5"), 2);
}

TEST(HealthProbe, RejectsBadArguments) {
  EXPECT_EQ(RunProbe(""), 1);                                   // no --addr
  EXPECT_EQ(RunProbe("--addr=localhost"), 1);                   // no port
  EXPECT_EQ(RunProbe("--addr=127.0.0.1:1 --timeout_s=0"), 1);
  EXPECT_EQ(RunProbe("--addr=127.0.0.1:1 --wait_s=-1"), 1);
  EXPECT_EQ(RunProbe("--addr=127.0.0.1:1 --tls --tls_client_cert=/x"), 1);  // cert without key
  EXPECT_EQ(RunProbe("--addr=127.0.0.1:1 --tls_ca_cert=/x"), 1);           // TLS file without --tls
  EXPECT_EQ(RunProbe("--addr=127.0.0.1:1 --tls --tls_ca_cert=/no/such/file"), 1);
  EXPECT_EQ(RunProbe("--addr=127.0.0.1:1 --auth_token_file=/no/such/file"), 1);
}

}  // namespace
