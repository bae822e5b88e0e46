#include "stream_helpers.h"

#include "absl/strings/str_cat.h"
#include "rpc_helpers.h"

namespace cab_it {

absl::Status ToAbsl(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

StreamClient::StreamClient(cab::v1::MaskPredictor::Stub& stub, absl::Duration deadline) : ctx_(Context(deadline)) {
  rw_ = stub.Stream(ctx_.get());
}

StreamClient::~StreamClient() {
  if (!finished_) {
    ctx_->TryCancel();
    rw_->Finish();
  }
}

bool StreamClient::Write(const cab::v1::StreamRequest& req) { return rw_->Write(req); }

std::optional<cab::v1::StreamResponse> StreamClient::Read() {
  cab::v1::StreamResponse r;
  if (!rw_->Read(&r)) return std::nullopt;
  return r;
}

absl::Status StreamClient::Failed(const char* what) {
  const grpc::Status s = FinishAfterError();
  if (s.ok()) return absl::InternalError(absl::StrCat("stream ended with OK while waiting for ", what));
  return ToAbsl(s);
}

absl::StatusOr<cab::v1::SessionReady> StreamClient::Open(const cab::v1::SessionConfig& config) {
  cab::v1::StreamRequest req;
  *req.mutable_config() = config;
  Write(req);
  auto r = Read();
  if (!r) return Failed("SessionReady");
  if (!r->has_ready()) return absl::InternalError("first response is not SessionReady");
  return r->ready();
}

absl::StatusOr<cab::v1::ChunkAck> StreamClient::SendChunk(const cab::v1::Chunk& chunk) {
  cab::v1::StreamRequest req;
  *req.mutable_chunk() = chunk;
  Write(req);
  auto r = Read();
  if (!r) return Failed("ChunkAck");
  if (!r->has_ack()) return absl::InternalError("answer to a chunk is not a ChunkAck");
  return r->ack();
}

absl::StatusOr<cab::v1::MaskReply> StreamClient::Query(const cab::v1::MaskQuery& query) {
  cab::v1::StreamRequest req;
  *req.mutable_query() = query;
  Write(req);
  auto r = Read();
  if (!r) return Failed("MaskReply");
  if (!r->has_mask()) return absl::InternalError("answer to a query is not a MaskReply");
  return r->mask();
}

grpc::Status StreamClient::Finish() {
  if (finished_) return final_;
  rw_->WritesDone();
  cab::v1::StreamResponse r;
  while (rw_->Read(&r)) {
  }
  final_ = rw_->Finish();
  finished_ = true;
  return final_;
}

grpc::Status StreamClient::FinishAfterError() {
  if (finished_) return final_;
  cab::v1::StreamResponse r;
  while (rw_->Read(&r)) {
  }
  final_ = rw_->Finish();
  finished_ = true;
  return final_;
}

cab::v1::SessionConfig ConfigFor(const ProblemShape& s, int layers, const TestMaskParams& p,
                                 cab::v1::MaskFormat format, bool representatives) {
  cab::v1::SessionConfig c;
  c.set_layers(layers);
  c.set_heads(s.heads);
  c.set_kv_heads(s.kv_heads);
  c.set_head_dim(s.head_dim);
  c.set_block_size(s.block_size);
  c.set_batch(s.batch);
  c.set_dtype(WireDType(s.dtype));
  *c.mutable_params() = ToWire(p);
  c.set_format(format);
  c.set_representatives(representatives);
  return c;
}

cab::v1::Chunk FullChunk(const Problem& pb, int layer, int64_t start, int64_t n) {
  cab::v1::Chunk c;
  c.set_layer(layer);
  c.set_start(start);
  c.set_tokens(n);
  *c.mutable_q() = ToWire(SliceTokens(pb.q, start, n), pb.shape.dtype);
  *c.mutable_k() = ToWire(SliceTokens(pb.k, start, n), pb.shape.dtype);
  return c;
}

cab::v1::Chunk RepresentativesChunk(const Problem& pb, int layer, int block_begin, int block_end) {
  const int bs = pb.shape.block_size;
  const NaiveReps q = NaiveRepresentatives(pb.q, bs), k = NaiveRepresentatives(pb.k, bs);
  const int64_t start = static_cast<int64_t>(block_begin) * bs;
  const int64_t end = std::min<int64_t>(static_cast<int64_t>(block_end) * bs, pb.shape.tokens);
  cab::v1::Chunk c;
  c.set_layer(layer);
  c.set_start(start);
  c.set_tokens(end - start);
  const int m = block_end - block_begin;
  *c.mutable_q() = ToWire(SliceTokens(q.maxl2, block_begin, m), pb.shape.dtype);
  *c.mutable_k() = ToWire(SliceTokens(k.maxl2, block_begin, m), pb.shape.dtype);
  *c.mutable_k_min() = ToWire(SliceTokens(k.kmin, block_begin, m), pb.shape.dtype);
  *c.mutable_k_max() = ToWire(SliceTokens(k.kmax, block_begin, m), pb.shape.dtype);
  return c;
}

}  // namespace cab_it
