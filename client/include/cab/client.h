// cab::Client: the C++ client of the cab.v1.MaskPredictor service.
//
//   cab::ClientOptions options;
//   options.target = "127.0.0.1:50051";
//   auto client = cab::Client::Create(options);            // absl::StatusOr<std::unique_ptr<Client>>
//   auto info = (*client)->Info();                          // version, backend, limits, policies
//   cab::PredictInput in;  in.q = q_view;  in.k = k_view;   // [B, H, N, D] tensors
//   auto reply = (*client)->Predict(in);                    // reply->mask is a cab::BlockMask
//
// Every method is thread-safe; one Client (one channel) is meant to be shared by a process.
// Errors are the server's status (code and message) or the client's own INVALID_ARGUMENT for
// inputs it can check before sending.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cab/client_options.h"
#include "cab/client_types.h"
#include "cab/session.h"
#include "cab/v1/cab.grpc.pb.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace cab {

class Client {
 public:
  static absl::StatusOr<std::unique_ptr<Client>> Create(const ClientOptions& options);
  ~Client();

  absl::StatusOr<v1::InfoResponse> Info(const CallOptions& call = {});
  absl::StatusOr<MaskReply> Predict(const PredictInput& input, const CallOptions& call = {});
  // The wire request as it is (for callers who build it themselves).
  absl::StatusOr<MaskReply> Predict(const v1::PredictRequest& request, const CallOptions& call = {});
  // The request Predict(input) sends, representatives included (computed here when
  // input.representatives): for a caller that builds it ahead of time, as a model that already
  // holds its block representatives would, and sends it with Predict(request).
  absl::StatusOr<v1::PredictRequest> BuildPredictRequest(const PredictInput& input) const;
  absl::StatusOr<EvictReply> Evict(const EvictInputs& inputs, const EvictParams& params,
                                   const CallOptions& call = {});
  absl::StatusOr<EvictReply> Evict(const v1::EvictRequest& request, const CallOptions& call = {});

  // Opens a stream (one per sequence) and sends its configuration; see cab/session.h.
  absl::StatusOr<std::unique_ptr<Session>> OpenSession(const SessionOptions& options,
                                                       const CallOptions& call = {});

  const ClientOptions& options() const { return options_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  // A context carrying the deadline and the bearer token, for calls made on stub() directly.
  void PrepareContext(grpc::ClientContext* context, const CallOptions& call) const;
  v1::MaskPredictor::Stub* stub() { return stub_.get(); }

 private:
  Client() = default;
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::MaskPredictor::Stub> stub_;
};

}  // namespace cab
