// cab.v1.MaskPredictor on gRPC's callback API. Handlers validate on the gRPC thread (cheap: shapes
// and bytes), then hand the compute to the worker pool; the reactor finishes from there.
#pragma once

#include "cab/v1/cab.grpc.pb.h"
#include "service_state.h"

namespace cab::server {

class MaskPredictorService final : public cab::v1::MaskPredictor::CallbackService {
 public:
  explicit MaskPredictorService(ServiceState* state) : state_(state) {}

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* ctx, const cab::v1::PredictRequest* req,
                                    cab::v1::PredictResponse* resp) override;
  grpc::ServerUnaryReactor* Evict(grpc::CallbackServerContext* ctx, const cab::v1::EvictRequest* req,
                                  cab::v1::EvictResponse* resp) override;
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* ctx, const cab::v1::InfoRequest* req,
                                 cab::v1::InfoResponse* resp) override;
  grpc::ServerBidiReactor<cab::v1::StreamRequest, cab::v1::StreamResponse>* Stream(
      grpc::CallbackServerContext* ctx) override;

 private:
  ServiceState* state_;
};

// Info's answer (also used by tests).
void FillInfo(const ServiceState& state, cab::v1::InfoResponse* resp);

}  // namespace cab::server
