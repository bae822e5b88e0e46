#include "service.h"

#include <chrono>
#include <memory>

#include "evict_request.h"
#include "mask_compute.h"
#include "predict_request.h"
#include "stream_reactor.h"
#include "wire/params_codec.h"
#include "wire/tensor_codec.h"

namespace cab::server {
namespace {

using Clock = std::chrono::steady_clock;

// Ends a unary call: metrics, in-flight gauge, then Finish. Safe from any thread.
class UnaryCall {
 public:
  UnaryCall(ServiceState* state, grpc::CallbackServerContext* ctx, const char* method)
      : state_(state), reactor_(ctx->DefaultReactor()), method_(method), start_(Clock::now()) {
    state_->metrics->inflight_requests().Increment();
  }
  grpc::ServerUnaryReactor* reactor() const { return reactor_; }
  Clock::time_point start() const { return start_; }
  void Finish(const absl::Status& s, const google::protobuf::Message* resp) {
    if (s.ok() && resp) state_->metrics->Sent(resp->ByteSizeLong());
    state_->metrics->Request(method_, static_cast<int>(s.code()), SecondsSince(start_));
    state_->metrics->inflight_requests().Decrement();
    reactor_->Finish(ToGrpc(s));
  }

 private:
  ServiceState* state_;
  grpc::ServerUnaryReactor* reactor_;
  const char* method_;
  Clock::time_point start_;
};

StageHooks HooksFor(ServiceState* state, grpc::CallbackServerContext* ctx) {
  StageHooks hooks;
  hooks.check = [ctx] { return CheckAlive(*ctx); };
  Metrics* m = state->metrics;
  hooks.observe = [m](Stage s, double seconds) { m->StageTime(s, seconds); };
  return hooks;
}

absl::Status QueueFull() {
  return absl::ResourceExhaustedError("server busy: the worker queue is full (--max_queue); retry with backoff");
}

}  // namespace

void FillInfo(const ServiceState& state, cab::v1::InfoResponse* resp) {
  resp->set_version(state.version);
  resp->set_backend(state.backend->Name());
  for (const std::string& d : state.backend->Devices()) resp->add_devices(d);
  const Limits& l = state.options.limits;
  cab::v1::Limits* out = resp->mutable_limits();
  out->set_max_tokens(l.max_tokens);
  out->set_max_heads(l.max_heads);
  out->set_max_head_dim(l.max_head_dim);
  out->set_max_message_bytes(l.max_message_bytes);
  out->set_max_sessions(l.max_sessions);
  out->set_max_session_bytes(l.max_session_bytes);
  out->set_max_total_bytes(l.max_total_bytes);
  out->set_min_block_size(wire::kMinBlockSize);
  out->set_max_block_size(wire::kMaxBlockSize);
  for (const auto& n : wire::MaskPolicyNames()) resp->add_mask_policies(n);
  for (const auto& n : wire::EvictPolicyNames()) resp->add_evict_policies(n);
  for (const auto& n : wire::EstimatorNames()) resp->add_estimators(n);
  for (const auto& n : wire::CurvatureNames()) resp->add_curvatures(n);
  for (const auto& n : wire::MaskFormatNames()) resp->add_formats(n);
  resp->set_auth_required(state.auth.enabled());
}

grpc::ServerUnaryReactor* MaskPredictorService::Info(grpc::CallbackServerContext* ctx, const cab::v1::InfoRequest*,
                                                     cab::v1::InfoResponse* resp) {
  UnaryCall call(state_, ctx, "Info");
  absl::Status s = Admit(*state_, *ctx);
  if (s.ok()) FillInfo(*state_, resp);
  call.Finish(s, resp);
  return call.reactor();
}

grpc::ServerUnaryReactor* MaskPredictorService::Predict(grpc::CallbackServerContext* ctx,
                                                        const cab::v1::PredictRequest* req,
                                                        cab::v1::PredictResponse* resp) {
  auto call = std::make_shared<UnaryCall>(state_, ctx, "Predict");
  state_->metrics->Received(req->ByteSizeLong());
  absl::Status s = Admit(*state_, *ctx);
  if (s.ok()) s = CheckAlive(*ctx);
  if (!s.ok()) {
    call->Finish(s, nullptr);
    return call->reactor();
  }
  const auto t0 = Clock::now();
  auto inputs = DecodePredictRequest(*req, state_->options.limits);
  const double decode = SecondsSince(t0);
  state_->metrics->StageTime(Stage::kDecode, decode);
  if (!inputs.ok()) {
    call->Finish(inputs.status(), nullptr);
    return call->reactor();
  }
  auto in = std::make_shared<PredictInputs>(std::move(*inputs));
  ServiceState* state = state_;
  const bool queued = state_->pool->Submit([state, ctx, resp, call, in, decode] {
    const StageHooks hooks = HooksFor(state, ctx);
    absl::Status st = hooks.Check();
    if (!st.ok()) return call->Finish(st, nullptr);
    cab::v1::Timings* t = resp->mutable_timings();
    if (in->representatives) {
      // The backend takes the wire tensors as they are (the CUDA backend uploads them directly).
      st = PredictRepresentativesAndEncode(*in, *state->backend, hooks, resp->mutable_mask(),
                                           resp->mutable_diagnostics(), t);
    } else {
      const auto t1 = Clock::now();
      auto coarse = CoarsenInputs(*in, *state->backend);
      if (!coarse.ok()) return call->Finish(coarse.status(), nullptr);
      const double coarsen = SecondsSince(t1);
      hooks.Observe(Stage::kCoarsen, coarsen);
      t->set_coarsen_seconds(coarsen);
      if (st = hooks.Check(); !st.ok()) return call->Finish(st, nullptr);
      st = PredictAndEncode(coarse->q, coarse->k, in->params, in->format, in->diagnostics, *state->backend, hooks,
                            resp->mutable_mask(), resp->mutable_diagnostics(), t);
    }
    if (!st.ok()) return call->Finish(st, nullptr);
    t->set_decode_seconds(decode);
    t->set_total_seconds(SecondsSince(call->start()));
    call->Finish(absl::OkStatus(), resp);
  });
  if (!queued) call->Finish(QueueFull(), nullptr);
  return call->reactor();
}

grpc::ServerUnaryReactor* MaskPredictorService::Evict(grpc::CallbackServerContext* ctx,
                                                      const cab::v1::EvictRequest* req,
                                                      cab::v1::EvictResponse* resp) {
  auto call = std::make_shared<UnaryCall>(state_, ctx, "Evict");
  state_->metrics->Received(req->ByteSizeLong());
  absl::Status s = Admit(*state_, *ctx);
  if (s.ok()) s = CheckAlive(*ctx);
  auto decoded = std::make_shared<EvictDecoded>();
  const auto t0 = Clock::now();
  if (s.ok()) s = DecodeEvictRequest(*req, state_->options.limits, decoded.get());
  const double decode = SecondsSince(t0);
  if (!s.ok()) {
    call->Finish(s, nullptr);
    return call->reactor();
  }
  state_->metrics->StageTime(Stage::kDecode, decode);
  ServiceState* state = state_;
  const bool queued = state_->pool->Submit([state, ctx, resp, call, decoded, decode] {
    absl::Status st = CheckAlive(*ctx);
    if (!st.ok()) return call->Finish(st, nullptr);
    cab::KeepIndices keep;
    const auto t1 = Clock::now();
    st = Guarded([&]() -> absl::Status {
      auto r = state->backend->Evict(decoded->inputs, decoded->params);
      if (!r.ok()) return r.status();
      keep = std::move(*r);
      return absl::OkStatus();
    });
    if (!st.ok()) return call->Finish(st, nullptr);
    const double compute = SecondsSince(t1);
    state->metrics->StageTime(Stage::kSelect, compute);
    const auto t2 = Clock::now();
    resp->set_batch(keep.batch);
    resp->set_kv_heads(keep.kv_heads);
    resp->set_per_head(keep.per_head);
    wire::EncodeInt64({keep.batch, keep.kv_heads, keep.per_head}, keep.indices.data(), resp->mutable_indices());
    const double encode = SecondsSince(t2);
    state->metrics->StageTime(Stage::kEncode, encode);
    cab::v1::Timings* t = resp->mutable_timings();
    t->set_decode_seconds(decode);
    t->set_predict_seconds(compute);
    t->set_encode_seconds(encode);
    t->set_total_seconds(SecondsSince(call->start()));
    call->Finish(absl::OkStatus(), resp);
  });
  if (!queued) call->Finish(QueueFull(), nullptr);
  return call->reactor();
}

grpc::ServerBidiReactor<cab::v1::StreamRequest, cab::v1::StreamResponse>* MaskPredictorService::Stream(
    grpc::CallbackServerContext* ctx) {
  return new StreamReactor(state_, ctx);
}

}  // namespace cab::server
