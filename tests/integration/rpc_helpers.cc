#include "rpc_helpers.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "http_get.h"
#include "problem.h"

namespace cab_it {

std::shared_ptr<grpc::Channel> InsecureChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

std::unique_ptr<grpc::ClientContext> Context(absl::Duration deadline) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  return ctx;
}

std::optional<double> ReadMetric(int metrics_port, const std::string& name, const Labels& labels) {
  auto body = HttpGet(metrics_port, "/metrics");
  if (!body.ok()) return std::nullopt;
  return MetricValue(*body, name, labels);
}

double WaitForMetric(int metrics_port, const std::string& name, const Labels& labels,
                     const std::function<bool(double)>& pred, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  double last = 0;
  while (true) {
    last = ReadMetric(metrics_port, name, labels).value_or(0);
    if (pred(last)) return last;
    if (absl::Now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string shown;
  for (const auto& [k, v] : labels) absl::StrAppend(&shown, shown.empty() ? "" : ",", k, "=\"", v, "\"");
  ADD_FAILURE() << "metric " << name << "{" << shown << "} = " << last << " never met the condition within "
                << absl::FormatDuration(timeout);
  return last;
}

std::string Describe(const grpc::Status& s) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                                 "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                 "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int c = static_cast<int>(s.error_code());
  return absl::StrCat(c >= 0 && c <= 16 ? kNames[c] : "?", ": ", s.error_message());
}

bool NamesField(const std::string& message, const std::string& field) {
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  for (size_t pos = message.find(field); pos != std::string::npos; pos = message.find(field, pos + 1)) {
    const bool left = pos == 0 || !word(message[pos - 1]);
    const size_t end = pos + field.size();
    const bool right = end >= message.size() || !word(message[end]);
    if (left && right) return true;
  }
  return false;
}

void ServerTest::SetUp() {
  auto s = ServerProcess::Start(Options());
  ASSERT_TRUE(s.ok()) << s.status();
  server_ = std::move(*s);
  stub_ = cab::v1::MaskPredictor::NewStub(InsecureChannel(server_->address()));
}

void ServerTest::TearDown() {
  if (HasFailure() && server_) {
    const std::string log = server_->Log();
    std::cerr << "---- cab-server log (tail) ----\n" << (log.size() > 4000 ? log.substr(log.size() - 4000) : log) << "\n";
  }
  stub_.reset();
  const std::string dir = server_ ? server_->dir() : "";
  server_.reset();
  // Keep the scratch files of a failed test for inspection; drop the rest so reruns do not pile up.
  if (!HasFailure() && !dir.empty()) RemoveTree(dir);
}

void ServerTest::ExpectServerHealthy() {
  ProblemShape shape;
  shape.tokens = 256;
  const Problem pb = MakeProblem(shape);
  cab::v1::PredictResponse resp;
  auto ctx = Context(absl::Seconds(20));
  const grpc::Status s = stub_->Predict(ctx.get(), FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR), &resp);
  EXPECT_TRUE(s.ok()) << "the next request on the same server failed: " << Describe(s);
}

}  // namespace cab_it
