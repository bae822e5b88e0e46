#include "cab/client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>

#include "absl/strings/str_cat.h"
#include "cab/coarse.h"
#include "channel.h"
#include "parallel_coarsen.h"
#include "representatives.h"
#include "status.h"
#include "wire/mask_codec.h"
#include "wire/params_codec.h"
#include "wire/tensor_codec.h"

namespace cab {

using client_internal::FromGrpc;

absl::StatusOr<MaskFormat> ParseMaskFormat(const std::string& name) {
  if (name == "bsr") return MaskFormat::kBsr;
  if (name == "bitmap") return MaskFormat::kBitmap;
  if (name == "flex") return MaskFormat::kFlex;
  return absl::InvalidArgumentError(absl::StrCat("format: '", name, "' (want bsr, bitmap or flex)"));
}

std::string Name(MaskFormat f) {
  switch (f) {
    case MaskFormat::kBitmap: return "bitmap";
    case MaskFormat::kFlex: return "flex";
    default: return "bsr";
  }
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(const ClientOptions& options) {
  auto channel = client_internal::MakeChannel(options);
  if (!channel.ok()) return channel.status();
  std::unique_ptr<Client> c(new Client());
  c->options_ = options;
  c->channel_ = *channel;
  c->stub_ = v1::MaskPredictor::NewStub(c->channel_);
  return c;
}

Client::~Client() = default;

void Client::PrepareContext(grpc::ClientContext* context, const CallOptions& call) const {
  absl::Duration d = call.deadline > absl::ZeroDuration() ? call.deadline : options_.default_deadline;
  if (d > absl::ZeroDuration() && d != absl::InfiniteDuration())
    context->set_deadline(absl::ToChronoTime(absl::Now() + d));
  if (!options_.bearer_token.empty())
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.bearer_token));
}

absl::StatusOr<v1::InfoResponse> Client::Info(const CallOptions& call) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, call);
  v1::InfoResponse resp;
  auto s = stub_->Info(&ctx, v1::InfoRequest(), &resp);
  if (!s.ok()) return FromGrpc(s);
  return resp;
}

namespace {

// The request of `in` with full tensors, or with representatives computed here.
absl::Status MakePredictRequest(const PredictInput& in, int threads, v1::PredictRequest* req) {
  if (auto s = CheckTensor(in.q, 4, "q"); !s.ok()) return s;
  if (auto s = CheckTensor(in.k, 4, "k"); !s.ok()) return s;
  req->set_block_size(in.block_size);
  wire::FromMaskParams(in.params, req->mutable_params());
  req->set_format(static_cast<v1::MaskFormat>(in.format));
  req->set_diagnostics(in.diagnostics);
  req->set_row_begin(in.params.row_begin);
  req->set_row_end(in.params.row_end < 0 ? 0 : in.params.row_end);
  if (!in.representatives) {
    wire::EncodeView(in.q, req->mutable_q());
    wire::EncodeView(in.k, req->mutable_k());
    return absl::OkStatus();
  }
  if (auto s = wire::CheckBlockSize(in.block_size, "block_size"); !s.ok()) return s;
  using namespace client_internal;
  // A max-L2 representative is one of the input's own vectors, so the input dtype holds it
  // exactly; means are sent in fp32 so the server sees the value the client computed.
  auto dtype_of = [&](const TensorView& x, RepKind kind) { return kind == RepKind::kMean ? DType::kF32 : x.dtype; };
  const bool bounds = NeedsKeyBounds(in.params);
  // One side's representatives into `out`: a max-L2 side alone is picked directly (the chosen
  // tokens' own bytes, without the means and bounds a full coarse state keeps); otherwise the full
  // coarse state, which also gives Quest's key bounds.
  auto encode = [&](const TensorView& x, RepKind kind, bool with_bounds, v1::Tensor* out) -> absl::Status {
    if (kind == RepKind::kMaxL2 && !with_bounds) {
      auto reps = MaxL2Representatives(x, in.block_size, CoarsenThreads(threads));
      if (!reps.ok()) return reps.status();
      const int64_t blocks = (x.shape[2] + in.block_size - 1) / in.block_size;
      wire::EncodeView(TensorView{reps->data(), x.dtype, {x.shape[0], x.shape[1], blocks, x.shape[3]}}, out);
      return absl::OkStatus();
    }
    auto c = CoarsenParallel(x, in.block_size, threads);
    if (!c.ok()) return c.status();
    EncodeBlocks(*c, kind, 0, c->blocks, dtype_of(x, kind), out);
    if (with_bounds) {
      EncodeBlocks(*c, RepKind::kMin, 0, c->blocks, x.dtype, req->mutable_k_min());
      EncodeBlocks(*c, RepKind::kMax, 0, c->blocks, x.dtype, req->mutable_k_max());
    }
    return absl::OkStatus();
  };
  if (auto s = encode(in.q, QueryRep(in.params), false, req->mutable_q_rep()); !s.ok()) return s;
  if (auto s = encode(in.k, KeyRep(in.params), bounds, req->mutable_k_rep()); !s.ok()) return s;
  req->set_tokens(in.q.shape[2]);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::PredictRequest> Client::BuildPredictRequest(const PredictInput& input) const {
  v1::PredictRequest req;
  if (auto s = MakePredictRequest(input, options_.coarsen_threads, &req); !s.ok()) return s;
  return req;
}

absl::StatusOr<MaskReply> Client::Predict(const PredictInput& input, const CallOptions& call) {
  const absl::Time start = absl::Now();
  v1::PredictRequest req;
  if (auto s = MakePredictRequest(input, options_.coarsen_threads, &req); !s.ok()) return s;
  const double encode = absl::ToDoubleSeconds(absl::Now() - start);
  auto reply = Predict(req, call);
  if (reply.ok()) reply->client_encode_seconds = encode;
  return reply;
}

absl::StatusOr<MaskReply> Client::Predict(const v1::PredictRequest& req, const CallOptions& call) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, call);
  v1::PredictResponse resp;
  auto s = stub_->Predict(&ctx, req, &resp);
  if (!s.ok()) return FromGrpc(s);
  auto mask = wire::DecodeMask(resp.mask());
  if (!mask.ok()) return mask.status();
  MaskReply out;
  out.mask = std::move(*mask);
  out.format = resp.mask().format() == v1::MASK_FORMAT_UNSPECIFIED ? MaskFormat::kBsr
                                                                    : static_cast<MaskFormat>(resp.mask().format());
  out.density = resp.mask().density();
  out.diagnostics = resp.diagnostics();
  out.timings = resp.timings();
  out.request_bytes = static_cast<int64_t>(req.ByteSizeLong());
  out.response_bytes = static_cast<int64_t>(resp.ByteSizeLong());
  return out;
}

absl::StatusOr<EvictReply> Client::Evict(const EvictInputs& in, const EvictParams& params, const CallOptions& call) {
  v1::EvictRequest req;
  wire::FromEvictParams(params, &req);
  req.set_tokens(in.tokens);
  req.set_batch(in.batch);
  req.set_kv_heads(in.kv_heads);
  if (in.scores) wire::EncodeView(*in.scores, req.mutable_scores());
  if (in.keys) wire::EncodeView(*in.keys, req.mutable_keys());
  if (in.window) wire::EncodeView(*in.window, req.mutable_window());
  return Evict(req, call);
}

absl::StatusOr<EvictReply> Client::Evict(const v1::EvictRequest& req, const CallOptions& call) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, call);
  v1::EvictResponse resp;
  auto s = stub_->Evict(&ctx, req, &resp);
  if (!s.ok()) return FromGrpc(s);
  EvictReply out;
  out.keep.batch = resp.batch();
  out.keep.kv_heads = resp.kv_heads();
  out.keep.per_head = resp.per_head();
  if (resp.batch() > 0 && resp.kv_heads() > 0 && resp.per_head() > 0) {  // keep = 0 sends no indices
    auto idx = wire::DecodeInt64(resp.indices(), {resp.batch(), resp.kv_heads(), resp.per_head()}, "indices");
    if (!idx.ok()) return idx.status();
    out.keep.indices = std::move(*idx);
  }
  out.timings = resp.timings();
  return out;
}

}  // namespace cab
