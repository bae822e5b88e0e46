// The server as an operator sees it: health and reflection, metrics names, flags from the
// environment, deadlines, and the SIGTERM drain (NOT_SERVING, in-flight work finishes, exit 0).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "http_get.h"
#include "mask_decode.h"
#include "problem.h"
#include "rpc_helpers.h"
#include "stream_helpers.h"

namespace cab_it {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

using LifecycleTest = ServerTest;

TEST_F(LifecycleTest, PortFileNamesBothPorts) {
  EXPECT_GT(server_->grpc_port(), 0);
  EXPECT_GT(server_->metrics_port(), 0);
  EXPECT_NE(server_->grpc_port(), server_->metrics_port());
}

TEST_F(LifecycleTest, HealthServesBothServiceNames) {
  auto health = grpc::health::v1::Health::NewStub(InsecureChannel(server_->address()));
  for (const char* service : {"", "cab.v1.MaskPredictor"}) {
    HealthCheckRequest req;
    req.set_service(service);
    HealthCheckResponse resp;
    auto ctx = Context();
    const grpc::Status s = health->Check(ctx.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << "service '" << service << "': " << Describe(s);
    EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING) << "service '" << service << "'";
  }
  HealthCheckRequest req;
  req.set_service("no.such.Service");
  HealthCheckResponse resp;
  auto ctx = Context();
  EXPECT_EQ(health->Check(ctx.get(), req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(LifecycleTest, ReflectionListsTheServices) {
  auto refl = grpc::reflection::v1alpha::ServerReflection::NewStub(InsecureChannel(server_->address()));
  auto ctx = Context();
  auto rw = refl->ServerReflectionInfo(ctx.get());
  grpc::reflection::v1alpha::ServerReflectionRequest req;
  req.set_list_services("");
  ASSERT_TRUE(rw->Write(req));
  grpc::reflection::v1alpha::ServerReflectionResponse resp;
  ASSERT_TRUE(rw->Read(&resp)) << Describe(rw->Finish());
  std::set<std::string> names;
  for (const auto& s : resp.list_services_response().service()) names.insert(s.name());
  EXPECT_TRUE(names.count("cab.v1.MaskPredictor"));
  EXPECT_TRUE(names.count("grpc.health.v1.Health"));
  // The service's descriptor is served too (what grpcurl needs to call it).
  req.set_file_containing_symbol("cab.v1.MaskPredictor");
  ASSERT_TRUE(rw->Write(req));
  ASSERT_TRUE(rw->Read(&resp));
  EXPECT_GT(resp.file_descriptor_response().file_descriptor_proto_size(), 0);
  rw->WritesDone();
  EXPECT_TRUE(rw->Finish().ok());
}

TEST_F(LifecycleTest, MetricsCountRequestsByMethodAndCode) {
  const int port = server_->metrics_port();
  auto body = HttpGet(port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(MetricValue(*body, "cab_build_info", {{"backend", "cpu"}}), 1.0) << *body;
  for (const char* name : {"cab_received_bytes_total", "cab_sent_bytes_total", "cab_active_streams",
                           "cab_active_sessions", "cab_session_memory_bytes", "cab_queue_depth",
                           "cab_inflight_requests"}) {
    EXPECT_TRUE(MetricValue(*body, name).has_value()) << "metric missing: " << name;
  }
  const Problem pb = MakeProblem(ProblemShape{});
  const int ok = 3;
  double payload = 0;  // tensor bytes the requests carry: a floor for cab_received_bytes_total
  double answered = 0;  // mask bytes of the answers: a floor for cab_sent_bytes_total
  for (int i = 0; i < ok; ++i) {
    const cab::v1::PredictRequest req = FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BITMAP);
    payload += req.q().data().size() + req.k().data().size();
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    ASSERT_TRUE(stub_->Predict(ctx.get(), req, &resp).ok());
    answered += resp.mask().bitmap().data().size();
  }
  cab::v1::PredictRequest bad = FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
  bad.set_block_size(3);
  payload += bad.q().data().size() + bad.k().data().size();
  cab::v1::PredictResponse resp;
  auto ctx = Context();
  EXPECT_EQ(stub_->Predict(ctx.get(), bad, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  cab::v1::InfoResponse info;
  auto ctx2 = Context();
  ASSERT_TRUE(stub_->Info(ctx2.get(), cab::v1::InfoRequest(), &info).ok());

  WaitForMetric(port, "cab_requests_total", {{"method", "Predict"}, {"code", "OK"}}, [&](double v) { return v == ok; });
  WaitForMetric(port, "cab_requests_total", {{"method", "Predict"}, {"code", "INVALID_ARGUMENT"}},
                [](double v) { return v == 1; });
  WaitForMetric(port, "cab_requests_total", {{"method", "Info"}, {"code", "OK"}}, [](double v) { return v == 1; });
  // A stream that fails counts under its code too.
  {
    StreamClient stream(*stub_);
    cab::v1::StreamRequest r;
    r.mutable_query()->set_layer(0);
    stream.Write(r);
    EXPECT_EQ(stream.FinishAfterError().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
  WaitForMetric(port, "cab_requests_total", {{"method", "Stream"}, {"code", "FAILED_PRECONDITION"}},
                [](double v) { return v == 1; });
  WaitForMetric(port, "cab_queue_depth", {}, [](double v) { return v == 0; });
  WaitForMetric(port, "cab_request_duration_seconds_count", {{"method", "Predict"}},
                [&](double v) { return v >= ok; });
  for (const char* stage : {"decode", "coarsen", "curvature", "select", "encode"}) {
    WaitForMetric(port, "cab_stage_duration_seconds_count", {{"stage", stage}}, [&](double v) { return v >= ok; });
  }
  const double received = ReadMetric(port, "cab_received_bytes_total").value_or(0);
  EXPECT_GE(received, payload) << "request bytes not counted";
  EXPECT_LT(received, 2 * payload) << "request bytes counted more than once";
  EXPECT_GE(ReadMetric(port, "cab_sent_bytes_total").value_or(0), answered);
  EXPECT_EQ(ReadMetric(port, "cab_inflight_requests").value_or(-1), 0);
}

// Flags also come from the environment (CAB_<FLAG>); a command-line flag wins.
TEST(FlagsTest, EnvironmentSetsFlagsAndTheCommandLineWins) {
  for (bool override_on_command_line : {false, true}) {
    ServerOptions o;
    o.default_addresses = false;
    o.env = {{"CAB_LISTEN", "127.0.0.1:0"}, {"CAB_METRICS_LISTEN", "127.0.0.1:0"}, {"CAB_BACKEND", "cpu"},
             {"CAB_MAX_TOKENS", "4096"}};
    if (override_on_command_line) o.flags = {"--max_tokens=8192"};
    auto server = ServerProcess::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    auto stub = cab::v1::MaskPredictor::NewStub(InsecureChannel((*server)->address()));
    cab::v1::InfoResponse info;
    auto ctx = Context();
    ASSERT_TRUE(stub->Info(ctx.get(), cab::v1::InfoRequest(), &info).ok());
    EXPECT_EQ(info.backend(), "cpu");
    EXPECT_EQ(info.limits().max_tokens(), override_on_command_line ? 8192 : 4096);
  }
}

TEST(FlagsTest, AutoBackendFallsBackToCpuAndMetricsCanBeDisabled) {
  if (::access("/dev/nvidia0", F_OK) == 0) GTEST_SKIP() << "a GPU is present: auto may pick cuda";
  ServerOptions o;
  o.default_addresses = false;
  o.flags = {"--listen=127.0.0.1:0", "--metrics_listen=", "--backend=auto"};
  auto server = ServerProcess::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->metrics_port(), 0) << "port file names a metrics port though metrics are disabled";
  auto stub = cab::v1::MaskPredictor::NewStub(InsecureChannel((*server)->address()));
  cab::v1::InfoResponse info;
  auto ctx = Context();
  const grpc::Status s = stub->Info(ctx.get(), cab::v1::InfoRequest(), &info);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(info.backend(), "cpu");
}

TEST(FlagsTest, BadFlagValuesExitWithAMessage) {
  for (const char* flag : {"--backend=tpu", "--listen=not-an-address", "--max_tokens=-5", "--drain_grace_s=-1"}) {
    SCOPED_TRACE(flag);
    ServerOptions o;
    o.flags = {flag};
    o.start_timeout = absl::Seconds(15);
    auto server = ServerProcess::Start(o);
    ASSERT_FALSE(server.ok()) << "cab-server served with " << flag;
    EXPECT_NE(std::string(server.status().message()).find("exited with"), std::string::npos) << server.status();
    EXPECT_EQ(std::string(server.status().message()).find("exited with 0"), std::string::npos) << server.status();
  }
}

TEST(FlagsTest, CudaBackendWithoutAGpuExitsOne) {
  if (::access("/dev/nvidia0", F_OK) == 0) GTEST_SKIP() << "a GPU is present: --backend=cuda is expected to work";
  ServerOptions o;
  o.default_addresses = false;
  o.flags = {"--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0", "--backend=cuda"};
  auto server = ServerProcess::Start(o);
  ASSERT_FALSE(server.ok()) << "cab-server --backend=cuda served without a GPU";
  EXPECT_NE(std::string(server.status().message()).find("exited with 1"), std::string::npos) << server.status();
}

TEST_F(LifecycleTest, TinyDeadlineOnABigRequestIsDeadlineExceeded) {
  ProblemShape big;
  big.tokens = 8192;
  big.heads = big.kv_heads = 4;
  big.head_dim = 64;
  big.block_size = 16;
  big.dtype = cab::DType::kF16;
  const Problem pb = MakeProblem(big);
  const cab::v1::PredictRequest req = FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
  cab::v1::PredictResponse resp;
  auto ctx = Context(absl::Milliseconds(5));
  const grpc::Status s = stub_->Predict(ctx.get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << Describe(s);
  // The abandoned request leaves nothing behind and the server serves the next one.
  WaitForMetric(server_->metrics_port(), "cab_inflight_requests", {}, [](double v) { return v == 0; },
                absl::Seconds(30));
  ExpectServerHealthy();
}

class DrainTest : public ServerTest {
 protected:
  ServerOptions Options() override {
    ServerOptions o;
    o.flags = {"--drain_grace_s=30", "--max_tokens=131072", "--max_message_bytes=268435456", "--threads=2"};
    return o;
  }
};

TEST_F(DrainTest, SigtermGoesNotServingFinishesInFlightWorkAndExitsZero) {
  // A request that takes the CPU backend a while (M = 2048 blocks of 16 tokens, 8 heads).
  ProblemShape shape;
  shape.tokens = 32768;
  shape.heads = 8;
  shape.kv_heads = 2;
  shape.head_dim = 64;
  shape.block_size = 16;
  shape.dtype = cab::DType::kF16;
  const Problem pb = MakeProblem(shape);
  TestMaskParams p;
  p.graph_degree = 32;
  const cab::v1::PredictRequest req = FullRequest(pb, p, cab::v1::MASK_FORMAT_BSR);

  auto channel = InsecureChannel(server_->address());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto watch_ctx = Context(absl::Seconds(120));
  HealthCheckRequest hreq;
  hreq.set_service("cab.v1.MaskPredictor");
  auto watch = health->Watch(watch_ctx.get(), hreq);
  HealthCheckResponse hresp;
  ASSERT_TRUE(watch->Read(&hresp));
  ASSERT_EQ(hresp.status(), HealthCheckResponse::SERVING);

  std::atomic<bool> done{false};
  grpc::Status inflight_status;
  cab::v1::PredictResponse inflight_resp;
  absl::Duration inflight_time;
  std::thread inflight([&] {
    auto ctx = Context(absl::Seconds(120));
    const absl::Time start = absl::Now();
    inflight_status = stub_->Predict(ctx.get(), req, &inflight_resp);
    inflight_time = absl::Now() - start;
    done = true;
  });
  WaitForMetric(server_->metrics_port(), "cab_inflight_requests", {}, [](double v) { return v >= 1; },
                absl::Seconds(60));
  const bool finished_early = done.load();
  server_->Signal(SIGTERM);

  // Health turns NOT_SERVING (pushed on the watch opened before the signal).
  bool not_serving = false;
  while (watch->Read(&hresp)) {
    if (hresp.status() == HealthCheckResponse::NOT_SERVING) {
      not_serving = true;
      break;
    }
  }
  EXPECT_TRUE(not_serving) << "health never reported NOT_SERVING after SIGTERM";
  watch_ctx->TryCancel();
  watch->Finish();

  // No new streams while draining.
  {
    StreamClient stream(*stub_, absl::Seconds(10));
    auto ready = stream.Open(ConfigFor(ProblemShape{}, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR));
    EXPECT_FALSE(ready.ok()) << "a new stream was accepted while draining";
  }

  inflight.join();
  RecordProperty("inflight_seconds", absl::StrCat(absl::ToDoubleSeconds(inflight_time)));
  EXPECT_FALSE(finished_early) << "the in-flight request (" << inflight_time
                               << ") finished before SIGTERM; make it bigger";
  ASSERT_TRUE(inflight_status.ok()) << "in-flight request failed during the drain: " << Describe(inflight_status);
  auto mask = DecodeWireMask(inflight_resp.mask());
  ASSERT_TRUE(mask.ok()) << mask.status();
  EXPECT_EQ(mask->rows, shape.blocks());
  const auto code = server_->WaitExit(absl::Seconds(40));
  ASSERT_TRUE(code.has_value()) << "cab-server still running 40 s after SIGTERM";
  EXPECT_EQ(*code, 0) << server_->Log();
}

class ShortDrainTest : public ServerTest {
 protected:
  ServerOptions Options() override {
    ServerOptions o;
    o.flags = {"--drain_grace_s=2"};
    return o;
  }
};

// An open stream that never ends does not keep the server past its grace period.
TEST_F(ShortDrainTest, IdleOpenStreamIsEndedAfterTheGracePeriod) {
  ProblemShape shape;
  const Problem pb = MakeProblem(shape);
  StreamClient stream(*stub_, absl::Seconds(60));
  ASSERT_TRUE(stream.Open(ConfigFor(shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR)).ok());
  ASSERT_TRUE(stream.SendChunk(FullChunk(pb, 0, 0, 200)).ok());
  const absl::Time start = absl::Now();
  server_->Signal(SIGTERM);
  const auto code = server_->WaitExit(absl::Seconds(20));
  ASSERT_TRUE(code.has_value()) << "cab-server still running 20 s after SIGTERM with --drain_grace_s=2";
  EXPECT_EQ(*code, 0) << server_->Log();
  EXPECT_GE(absl::Now() - start, absl::Seconds(1)) << "the open stream got no grace period at all";
  EXPECT_FALSE(stream.FinishAfterError().ok());
}

TEST_F(DrainTest, SigintOnAnIdleServerExitsZeroPromptly) {
  server_->Signal(SIGINT);
  const auto code = server_->WaitExit(absl::Seconds(15));
  ASSERT_TRUE(code.has_value()) << "cab-server still running 15 s after SIGINT with nothing in flight";
  EXPECT_EQ(*code, 0) << server_->Log();
}

}  // namespace
}  // namespace cab_it
