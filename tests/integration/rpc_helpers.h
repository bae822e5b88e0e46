// Small helpers shared by the integration tests: channels and contexts with deadlines (so no test
// can hang on a broken server), metrics reads from the server's /metrics with polling, and the gtest
// fixture that starts one cab-server per test.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "cab/v1/cab.grpc.pb.h"
#include "gtest/gtest.h"
#include "metrics_text.h"
#include "server_process.h"

namespace cab_it {

std::shared_ptr<grpc::Channel> InsecureChannel(const std::string& address);
std::unique_ptr<grpc::ClientContext> Context(absl::Duration deadline = absl::Seconds(30));

// The current value of a metric on the server's Prometheus endpoint (nullopt: absent or unreachable).
std::optional<double> ReadMetric(int metrics_port, const std::string& name, const Labels& labels = {});
// Polls until `pred(value)` holds (value 0 when the sample is absent); returns the last value read.
// Fails the current test when the condition does not hold within `timeout`.
double WaitForMetric(int metrics_port, const std::string& name, const Labels& labels,
                     const std::function<bool(double)>& pred, absl::Duration timeout = absl::Seconds(15));

// A gRPC status as "CODE: message" for failure messages.
std::string Describe(const grpc::Status& s);
// True when `message` names `field` as a whole word (so "k" does not match inside "block_size").
bool NamesField(const std::string& message, const std::string& field);

// One cab-server per test, started with Options().
class ServerTest : public ::testing::Test {
 protected:
  virtual ServerOptions Options() { return {}; }
  void SetUp() override;
  void TearDown() override;
  // A small Predict that must succeed: the server still serves after an error.
  void ExpectServerHealthy();

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<cab::v1::MaskPredictor::Stub> stub_;
};

}  // namespace cab_it
