#include "metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"

namespace cab::server {
namespace {

// Request latencies span ~100 us (Info, small representatives) to tens of seconds (huge CPU requests).
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

}  // namespace

const char* StageName(Stage s) {
  switch (s) {
    case Stage::kDecode: return "decode";
    case Stage::kCoarsen: return "coarsen";
    case Stage::kCurvature: return "curvature";
    case Stage::kSelect: return "select";
    case Stage::kEncode: return "encode";
  }
  return "unknown";
}

std::string CodeName(int code) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                 "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) return kNames[code];
  return absl::StrCat(code);
}

Metrics::Metrics(const std::string& version, const std::string& backend)
    : registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  requests_ = &prometheus::BuildCounter().Name("cab_requests_total").Help("RPCs by method and status code").Register(r);
  request_duration_ = &prometheus::BuildHistogram()
                           .Name("cab_request_duration_seconds")
                           .Help("RPC wall time by method (a stream: its whole life)")
                           .Register(r);
  stage_duration_ = &prometheus::BuildHistogram()
                         .Name("cab_stage_duration_seconds")
                         .Help("time per request stage: decode, coarsen, curvature, select, encode")
                         .Register(r);
  sessions_closed_ = &prometheus::BuildCounter()
                          .Name("cab_sessions_closed_total")
                          .Help("streaming sessions closed, by reason")
                          .Register(r);
  received_ = &prometheus::BuildCounter().Name("cab_received_bytes_total").Help("request message bytes").Register(r).Add({});
  sent_ = &prometheus::BuildCounter().Name("cab_sent_bytes_total").Help("response message bytes").Register(r).Add({});
  active_streams_ = &prometheus::BuildGauge().Name("cab_active_streams").Help("open Stream RPCs").Register(r).Add({});
  active_sessions_ =
      &prometheus::BuildGauge().Name("cab_active_sessions").Help("configured streaming sessions").Register(r).Add({});
  session_memory_ = &prometheus::BuildGauge()
                         .Name("cab_session_memory_bytes")
                         .Help("coarse state held by all sessions")
                         .Register(r)
                         .Add({});
  queue_depth_ = &prometheus::BuildGauge().Name("cab_queue_depth").Help("tasks waiting for a worker").Register(r).Add({});
  inflight_ = &prometheus::BuildGauge()
                   .Name("cab_inflight_requests")
                   .Help("unary RPCs and stream messages being processed")
                   .Register(r)
                   .Add({});
  prometheus::BuildGauge()
      .Name("cab_build_info")
      .Help("build version and backend in use (always 1)")
      .Register(r)
      .Add({{"version", version}, {"backend", backend}})
      .Set(1);
  for (Stage s : {Stage::kDecode, Stage::kCoarsen, Stage::kCurvature, Stage::kSelect, Stage::kEncode}) {
    stages_[static_cast<int>(s)] = &stage_duration_->Add({{"stage", StageName(s)}}, LatencyBuckets());
  }
  // Series that dashboards and alerts expect to exist from the start, at zero.
  for (const char* m : {"Predict", "Stream", "Evict", "Info"}) {
    requests_->Add({{"method", m}, {"code", "OK"}});
    request_duration_->Add({{"method", m}}, LatencyBuckets());
  }
  for (const char* reason : {"completed", "cancelled", "idle_timeout", "error"}) {
    sessions_closed_->Add({{"reason", reason}});
  }
}

void Metrics::Request(const std::string& method, int code, double seconds) {
  requests_->Add({{"method", method}, {"code", CodeName(code)}}).Increment();
  request_duration_->Add({{"method", method}}, LatencyBuckets()).Observe(seconds);
}

void Metrics::StageTime(Stage stage, double seconds) { stages_[static_cast<int>(stage)]->Observe(seconds); }

void Metrics::SessionClosed(const std::string& reason) { sessions_closed_->Add({{"reason", reason}}).Increment(); }

absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartExposer(const std::string& address,
                                                                  std::shared_ptr<prometheus::Registry> registry) {
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(address);
    exposer->RegisterCollectable(registry);
    return exposer;
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("--metrics_listen=", address, ": cannot serve metrics: ", e.what()));
  }
}

}  // namespace cab::server
