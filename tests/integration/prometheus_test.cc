// A real Prometheus server (Debian's /usr/bin/prometheus) scrapes cab-server's metrics endpoint on
// loopback; the test reads the counters back through Prometheus' HTTP API and checks they match the
// requests it made.
#include <signal.h>

#include <fstream>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "http_get.h"
#include "problem.h"
#include "rpc_helpers.h"
#include "stream_helpers.h"

namespace cab_it {
namespace {

class PrometheusTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_GT(server_->metrics_port(), 0);
    dir_ = MakeTempDir("prometheus");
    const std::string config = dir_ + "/prometheus.yml";
    std::ofstream(config) << "global:\n"
                          << "  scrape_interval: 1s\n"
                          << "scrape_configs:\n"
                          << "  - job_name: cab\n"
                          << "    scrape_interval: 250ms\n"
                          << "    scrape_timeout: 200ms\n"
                          << "    static_configs:\n"
                          << "      - targets: ['127.0.0.1:" << server_->metrics_port() << "']\n";
    // Prometheus cannot listen on port 0 and report it, so take a free port; retry if it is gone.
    for (int attempt = 0; attempt < 3 && !prometheus_; ++attempt) {
      port_ = FreeLoopbackPort();
      auto p = ChildProcess::Start({CAB_IT_PROMETHEUS, "--config.file=" + config, "--storage.tsdb.path=" + dir_ + "/data",
                                    "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"},
                                   dir_ + "/prometheus.log");
      ASSERT_TRUE(p.ok()) << p.status();
      const absl::Time deadline = absl::Now() + absl::Seconds(30);
      while (absl::Now() < deadline && (*p)->Running()) {
        if (HttpGet(port_, "/-/ready", absl::Seconds(2)).ok()) {
          prometheus_ = std::move(*p);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (!prometheus_) std::cerr << "prometheus did not come up; log:\n" << (*p)->Log() << "\n";
    }
    ASSERT_TRUE(prometheus_) << "prometheus never became ready";
  }

  void TearDown() override {
    if (prometheus_) {
      prometheus_->Signal(SIGTERM);
      prometheus_->WaitExit(absl::Seconds(10));
      if (HasFailure()) std::cerr << "---- prometheus log ----\n" << prometheus_->Log() << "\n";
      prometheus_.reset();
    }
    if (!HasFailure() && !dir_.empty()) RemoveTree(dir_);
    ServerTest::TearDown();
  }

  // The value of an instant query with one result (nullopt: no result yet).
  std::optional<double> Query(const std::string& promql) {
    auto body = HttpGet(port_, "/api/v1/query?query=" + UrlEncode(promql));
    if (!body.ok()) return std::nullopt;
    // {"status":"success","data":{"resultType":"vector","result":[{"metric":{...},"value":[ts,"v"]}]}}
    static const std::regex value(R"re("value":\[[0-9.e+]+,"([^"]+)"\])re");
    std::smatch m;
    if (!std::regex_search(*body, m, value)) return std::nullopt;
    return std::stod(m[1].str());
  }

  // Polls the query until it returns `want` (scrapes and rule-free evaluation lag a little).
  void ExpectEventually(const std::string& promql, double want) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    std::optional<double> got;
    while (absl::Now() < deadline) {
      got = Query(promql);
      if (got && *got == want) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << promql << " = " << (got ? std::to_string(*got) : "no result") << ", want " << want;
  }

  std::string dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> prometheus_;
};

TEST_F(PrometheusTest, ScrapedCountersMatchTheRequestsMade) {
  ExpectEventually("up{job=\"cab\"}", 1);

  const Problem pb = MakeProblem(ProblemShape{});
  const int predicts = 5, bad = 2, evicts = 3;
  for (int i = 0; i < predicts; ++i) {
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    ASSERT_TRUE(stub_->Predict(ctx.get(), FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR), &resp).ok());
  }
  for (int i = 0; i < bad; ++i) {
    cab::v1::PredictRequest req = FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
    req.mutable_params()->set_sparsity(3.f);
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    ASSERT_EQ(stub_->Predict(ctx.get(), req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  for (int i = 0; i < evicts; ++i) {
    cab::v1::EvictRequest req;
    req.set_policy(cab::v1::EVICT_POLICY_STREAMING);
    req.set_keep(10);
    req.set_tokens(100);
    req.set_batch(1);
    req.set_kv_heads(2);
    cab::v1::EvictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Evict(ctx.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << Describe(s);
  }
  {
    StreamClient stream(*stub_);
    ASSERT_TRUE(stream.Open(ConfigFor(pb.shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR)).ok());
    ASSERT_TRUE(stream.SendChunk(FullChunk(pb, 0, 0, pb.shape.tokens)).ok());
    ASSERT_TRUE(stream.Query(cab::v1::MaskQuery()).ok());
    ASSERT_TRUE(stream.Finish().ok());
  }

  ExpectEventually("cab_requests_total{method=\"Predict\",code=\"OK\"}", predicts);
  ExpectEventually("cab_requests_total{method=\"Predict\",code=\"INVALID_ARGUMENT\"}", bad);
  ExpectEventually("cab_requests_total{method=\"Evict\",code=\"OK\"}", evicts);
  ExpectEventually("sum(cab_requests_total{method=\"Stream\"})", 1);
  ExpectEventually("cab_request_duration_seconds_count{method=\"Predict\"} >= bool " + std::to_string(predicts), 1);
  ExpectEventually("cab_sessions_closed_total{reason=\"completed\"}", 1);
  ExpectEventually("cab_active_sessions", 0);
  ExpectEventually("cab_build_info{backend=\"cpu\"}", 1);
  // Prometheus' view of the bytes counter equals the server's own exposition once scraping catches up.
  const double received = ReadMetric(server_->metrics_port(), "cab_received_bytes_total").value_or(-1);
  EXPECT_GT(received, predicts * static_cast<double>(pb.q.values.size() * 4));
  ExpectEventually("cab_received_bytes_total", received);
}

}  // namespace
}  // namespace cab_it
