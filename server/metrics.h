// Prometheus metrics of the service (names are a contract with deploy/ and the tests; see
// docs/server.md). Thread-safe: prometheus-cpp metrics are atomic and families lock on Add.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace cab::server {

enum class Stage { kDecode, kCoarsen, kCurvature, kSelect, kEncode };
const char* StageName(Stage s);
// "OK", "INVALID_ARGUMENT", ... for a gRPC / absl status code number (they agree).
std::string CodeName(int code);

class Metrics {
 public:
  Metrics(const std::string& version, const std::string& backend);
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void Request(const std::string& method, int code, double seconds);
  void StageTime(Stage stage, double seconds);
  void Received(size_t bytes) { received_->Increment(static_cast<double>(bytes)); }
  void Sent(size_t bytes) { sent_->Increment(static_cast<double>(bytes)); }
  void SessionClosed(const std::string& reason);

  prometheus::Gauge& active_streams() { return *active_streams_; }
  prometheus::Gauge& active_sessions() { return *active_sessions_; }
  prometheus::Gauge& session_memory_bytes() { return *session_memory_; }
  prometheus::Gauge& queue_depth() { return *queue_depth_; }
  prometheus::Gauge& inflight_requests() { return *inflight_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* request_duration_;
  prometheus::Family<prometheus::Histogram>* stage_duration_;
  prometheus::Family<prometheus::Counter>* sessions_closed_;
  prometheus::Counter* received_;
  prometheus::Counter* sent_;
  prometheus::Gauge* active_streams_;
  prometheus::Gauge* active_sessions_;
  prometheus::Gauge* session_memory_;
  prometheus::Gauge* queue_depth_;
  prometheus::Gauge* inflight_;
  prometheus::Histogram* stages_[5];
};

// Serves `registry` over HTTP at `address` (/metrics). Errors (address in use, civetweb failing to
// start) come back as a status instead of an exception.
absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartExposer(const std::string& address,
                                                                  std::shared_ptr<prometheus::Registry> registry);

}  // namespace cab::server
