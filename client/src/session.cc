#include "cab/session.h"

#include <condition_variable>
#include <thread>

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "cab/client.h"
#include "parallel_coarsen.h"
#include "representatives.h"
#include "status.h"
#include "wire/mask_codec.h"
#include "wire/params_codec.h"
#include "wire/tensor_codec.h"

namespace cab {

using client_internal::FromGrpc;
using client_internal::RepKind;

// One gRPC stream plus a watchdog that cancels it when a request outlives its deadline (a
// stream has one deadline for its whole life; requests on it get their own this way).
struct Session::Stream {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<v1::StreamRequest, v1::StreamResponse>> rw;
  std::mutex mu;
  std::condition_variable cv;
  absl::Time deadline = absl::InfiniteFuture();
  bool stop = false, fired = false;
  std::thread watchdog;

  Stream() {
    watchdog = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu);
      while (!stop) {
        if (deadline == absl::InfiniteFuture()) {
          cv.wait(lock);
        } else if (absl::Now() >= deadline) {
          fired = true;
          deadline = absl::InfiniteFuture();
          ctx.TryCancel();
        } else {
          cv.wait_until(lock, absl::ToChronoTime(deadline));
        }
      }
    });
  }
  ~Stream() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    watchdog.join();
  }
  void Arm(absl::Duration d) {
    std::lock_guard<std::mutex> lock(mu);
    deadline = d == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + d;
    cv.notify_all();
  }
  // True when the request outlived its deadline: the watchdog fired, or the deadline passed before
  // the watchdog thread got to run (a loaded machine); then the stream is cancelled here, as the
  // watchdog would have done, so both cases leave it in the same state.
  bool Disarm() {
    std::lock_guard<std::mutex> lock(mu);
    if (!fired && deadline != absl::InfiniteFuture() && absl::Now() >= deadline) {
      fired = true;
      ctx.TryCancel();
    }
    deadline = absl::InfiniteFuture();
    return fired;
  }
  // After a failed Write or Read: drains the stream and returns the server's final status.
  absl::Status Fail() {
    v1::StreamResponse ignored;
    while (rw->Read(&ignored)) {
    }
    absl::Status s = FromGrpc(rw->Finish());
    if (s.ok()) s = absl::UnavailableError("session stream ended by the server");
    return s;
  }
};

Session::Session(Client* client, SessionOptions options) : client_(client), options_(std::move(options)) {
  if (options_.kv_heads == 0) options_.kv_heads = options_.heads;
  if (options_.batch == 0) options_.batch = 1;
  layers_.resize(options_.layers > 0 ? options_.layers : 0);
}

Session::~Session() { DropStream(); }

int64_t Session::tokens(int layer) const {
  return layer >= 0 && layer < static_cast<int>(layers_.size()) ? layers_[layer].tokens : 0;
}

absl::StatusOr<std::unique_ptr<Session>> Client::OpenSession(const SessionOptions& options, const CallOptions& call) {
  if (options.layers < 1) return absl::InvalidArgumentError("config.layers: must be >= 1");
  std::unique_ptr<Session> s(new Session(this, options));
  absl::Status st;
  for (int attempt = 0;; ++attempt) {
    st = s->Open(call, /*replay=*/false);
    if (st.ok() || st.code() != absl::StatusCode::kUnavailable || attempt >= options_.session_reconnects) break;
  }
  if (!st.ok()) return st;
  return s;
}

void Session::DropStream() {
  if (!stream_) return;
  // Half-close and collect the final status so the server frees the session as completed; a
  // stream that does not finish within a few seconds is cancelled by the watchdog.
  stream_->Arm(absl::Seconds(5));
  stream_->rw->WritesDone();
  stream_->Fail().IgnoreError();  // the caller has moved on; the status only matters to the server
  stream_.reset();
}

absl::Status Session::Open(const CallOptions& call, bool replay) {
  DropStream();
  auto stream = std::make_unique<Stream>();
  client_->PrepareContext(&stream->ctx, CallOptions{absl::InfiniteDuration()});
  // A replay waits for some replica to be ready instead of failing on the one that just died.
  if (replay) stream->ctx.set_wait_for_ready(true);
  stream->rw = client_->stub()->Stream(&stream->ctx);
  stream_ = std::move(stream);

  v1::StreamRequest req;
  v1::SessionConfig* c = req.mutable_config();
  c->set_layers(options_.layers);
  c->set_heads(options_.heads);
  c->set_kv_heads(options_.kv_heads);
  c->set_head_dim(options_.head_dim);
  c->set_block_size(options_.block_size);
  c->set_batch(options_.batch);
  wire::FromMaskParams(options_.params, c->mutable_params());
  c->set_format(static_cast<v1::MaskFormat>(options_.format));
  c->set_session_id(options_.session_id);
  // A replay sends the coarse state as fp32 representatives, whatever the chunks were.
  c->set_dtype(wire::ToProtoDType(replay ? DType::kF32 : options_.dtype));
  c->set_representatives(replay || options_.representatives);
  auto ready = RoundTrip(req, call);
  if (!ready.ok()) return ready.status();
  if (!ready->has_ready()) return absl::InternalError("session: the server answered the config without SessionReady");
  session_id_ = ready->ready().session_id();
  replay_mode_ = replay && !options_.representatives;
  need_resync_ = false;
  if (!replay) return absl::OkStatus();
  for (int l = 0; l < static_cast<int>(layers_.size()); ++l) {
    if (layers_[l].tokens == 0) continue;
    v1::StreamRequest chunk;
    ReplayChunk(l, chunk.mutable_chunk());
    auto ack = RoundTrip(chunk, call);
    if (!ack.ok()) return ack.status();
    session_bytes_ = ack->ack().session_bytes();
  }
  return absl::OkStatus();
}

void Session::ReplayChunk(int layer, v1::Chunk* chunk) const {
  const Layer& L = layers_[layer];
  chunk->set_layer(layer);
  chunk->set_start(0);
  chunk->set_tokens(L.tokens);
  client_internal::EncodeBlocks(L.q, client_internal::QueryRep(options_.params), 0, L.q.blocks, DType::kF32,
                                chunk->mutable_q());
  client_internal::EncodeBlocks(L.k, client_internal::KeyRep(options_.params), 0, L.k.blocks, DType::kF32,
                                chunk->mutable_k());
  client_internal::EncodeBlocks(L.k, RepKind::kMin, 0, L.k.blocks, DType::kF32, chunk->mutable_k_min());
  client_internal::EncodeBlocks(L.k, RepKind::kMax, 0, L.k.blocks, DType::kF32, chunk->mutable_k_max());
}

absl::StatusOr<v1::StreamResponse> Session::RoundTrip(const v1::StreamRequest& req, const CallOptions& call) {
  if (!stream_) return absl::UnavailableError("session stream is closed");
  absl::Duration d = call.deadline > absl::ZeroDuration() ? call.deadline : client_->options().default_deadline;
  stream_->Arm(d);
  v1::StreamResponse resp;
  absl::Status failed;
  if (!stream_->rw->Write(req) || !stream_->rw->Read(&resp)) failed = stream_->Fail();
  bool fired = stream_->Disarm();
  if (!failed.ok() || fired) {
    stream_.reset();  // the stream is gone either way; the server frees its session
    if (fired) return absl::DeadlineExceededError("session request exceeded its deadline (the stream was cancelled)");
    return failed;
  }
  return resp;
}

absl::StatusOr<v1::StreamResponse> Session::WithReconnect(const v1::StreamRequest& req, const CallOptions& call) {
  for (int attempt = 0;; ++attempt) {
    bool replayed = false;
    absl::Status st;
    if ((!stream_ || need_resync_) && !CanReplay()) {
      return absl::UnavailableError("session stream is closed and the session keeps no replay state (SessionOptions::replay = false)");
    }
    if (!stream_ || need_resync_) {
      st = Open(call, /*replay=*/true);
      replayed = true;
    }
    if (st.ok()) {
      // A chunk already in the client's state travelled with the replay: answer as the server did.
      if (replayed && req.has_chunk()) {
        v1::StreamResponse ack;
        ack.mutable_ack()->set_layer(req.chunk().layer());
        ack.mutable_ack()->set_tokens(layers_[req.chunk().layer()].tokens);
        ack.mutable_ack()->set_session_bytes(session_bytes_);
        return ack;
      }
      auto r = RoundTrip(req, call);
      if (r.ok() || r.status().code() != absl::StatusCode::kUnavailable) return r;
      st = r.status();
    }
    if (st.code() != absl::StatusCode::kUnavailable || attempt >= client_->options().session_reconnects) return st;
    ++reconnects_;
    stream_.reset();
  }
}

bool Session::CanReplay() const { return options_.representatives || options_.replay; }

absl::Status Session::BuildChunk(int layer, int64_t start, const TensorView& q, const TensorView& k,
                                 v1::Chunk* chunk) {
  chunk->set_layer(layer);
  chunk->set_start(start);
  chunk->set_tokens(q.shape[2]);
  auto encode = [&](const TensorView& v, v1::Tensor* out) {
    if (v.dtype == options_.dtype) {
      wire::EncodeView(v, out);
    } else {
      std::vector<float> f(v.numel());
      ToFloat(v, 0, v.numel(), f.data());
      wire::EncodeFloat(options_.dtype, v.shape, f.data(), out);
    }
  };
  encode(q, chunk->mutable_q());
  encode(k, chunk->mutable_k());
  return absl::OkStatus();
}

absl::Status Session::Append(int layer, const TensorView& q, const TensorView& k, const CallOptions& call) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!broken_.ok())
    return absl::FailedPreconditionError(absl::StrCat("session: unusable since the server rejected a chunk: ", broken_.message()));
  if (layer < 0 || layer >= static_cast<int>(layers_.size()))
    return absl::InvalidArgumentError(absl::StrCat("layer: ", layer, " outside [0, ", layers_.size(), ")"));
  if (auto s = CheckTensor(q, 4, "q"); !s.ok()) return s;
  if (auto s = CheckTensor(k, 4, "k"); !s.ok()) return s;
  const std::vector<int64_t> qs = {options_.batch, options_.heads, q.shape[2], options_.head_dim};
  const std::vector<int64_t> ks = {options_.batch, options_.kv_heads, q.shape[2], options_.head_dim};
  if (q.shape != qs) return absl::InvalidArgumentError("q: shape must be [batch, heads, n, head_dim] of the session");
  if (k.shape != ks) return absl::InvalidArgumentError("k: shape must be [batch, kv_heads, n, head_dim] with q's n");
  Layer& L = layers_[layer];
  const int bs = options_.block_size;
  const int64_t start = L.tokens, n = q.shape[2];

  v1::StreamRequest req;
  v1::Chunk* chunk = req.mutable_chunk();
  if (auto s = BuildChunk(layer, start, q, k, chunk); !s.ok()) return s;
  // What the server sees (after the dtype conversion), as coarse state for a later replay.
  auto qv = wire::ViewTensor(chunk->q(), 4, "q");
  auto kv = wire::ViewTensor(chunk->k(), 4, "k");
  if (!qv.ok()) return qv.status();
  if (!kv.ok()) return kv.status();

  if (options_.representatives) {
    if (start % bs != 0)
      return absl::FailedPreconditionError(absl::StrCat(
          "chunk.start: layer ", layer, " holds ", start, " tokens, not whole blocks of ", bs,
          "; a representatives session appends whole blocks (only the last chunk may end mid-block)"));
    auto qc = client_internal::CoarsenParallel(*qv, bs, client_->options().coarsen_threads);
    if (!qc.ok()) return qc.status();
    auto kc = client_internal::CoarsenParallel(*kv, bs, client_->options().coarsen_threads);
    if (!kc.ok()) return kc.status();
    using namespace client_internal;
    EncodeBlocks(*qc, QueryRep(options_.params), 0, qc->blocks, options_.dtype, chunk->mutable_q());
    EncodeBlocks(*kc, KeyRep(options_.params), 0, kc->blocks, options_.dtype, chunk->mutable_k());
    if (NeedsKeyBounds(options_.params)) {
      EncodeBlocks(*kc, RepKind::kMin, 0, kc->blocks, options_.dtype, chunk->mutable_k_min());
      EncodeBlocks(*kc, RepKind::kMax, 0, kc->blocks, options_.dtype, chunk->mutable_k_max());
    }
    // Keep exactly what the server will hold (the representatives after the dtype round trip).
    auto qr = wire::ViewTensor(chunk->q(), 4, "q");
    auto kr = wire::ViewTensor(chunk->k(), 4, "k");
    std::optional<TensorView> kmin, kmax;
    if (chunk->has_k_min()) kmin = *wire::ViewTensor(chunk->k_min(), 4, "k_min");
    if (chunk->has_k_max()) kmax = *wire::ViewTensor(chunk->k_max(), 4, "k_max");
    auto qs2 = CoarseFromRepresentatives(*qr, nullptr, nullptr, bs, n);
    auto ks2 = CoarseFromRepresentatives(*kr, kmin ? &*kmin : nullptr, kmax ? &*kmax : nullptr, bs, n);
    if (!qs2.ok()) return qs2.status();
    if (!ks2.ok()) return ks2.status();
    if (L.tokens == 0) {
      L.q = std::move(*qs2);
      L.k = std::move(*ks2);
    } else {
      if (auto s = AppendRepresentatives(L.q, *qs2); !s.ok()) return s;
      if (auto s = AppendRepresentatives(L.k, *ks2); !s.ok()) return s;
    }
  } else if (options_.replay) {
    if (start % bs == 0) {  // whole new blocks: coarsen in parallel and concatenate
      auto qc = client_internal::CoarsenParallel(*qv, bs, client_->options().coarsen_threads);
      if (!qc.ok()) return qc.status();
      auto kc = client_internal::CoarsenParallel(*kv, bs, client_->options().coarsen_threads);
      if (!kc.ok()) return kc.status();
      if (auto s = client_internal::ConcatBlocks(L.q, *qc); !s.ok()) return s;
      if (auto s = client_internal::ConcatBlocks(L.k, *kc); !s.ok()) return s;
    } else {  // merge into the partial last block
      if (auto s = AppendTokens(L.q, *qv, bs); !s.ok()) return s;
      if (auto s = AppendTokens(L.k, *kv, bs); !s.ok()) return s;
    }
    if (replay_mode_) {
      // The stream holds representatives since a replay: forward whole new blocks as such, or,
      // when the layer ended mid-block, resynchronise (reopen and replay) at the next request.
      if (start % bs != 0 || need_resync_) {
        L.tokens += n;
        need_resync_ = true;
        return absl::OkStatus();
      }
      const int b0 = static_cast<int>(start / bs), b1 = L.q.blocks;
      using namespace client_internal;
      EncodeBlocks(L.q, QueryRep(options_.params), b0, b1, DType::kF32, chunk->mutable_q());
      EncodeBlocks(L.k, KeyRep(options_.params), b0, b1, DType::kF32, chunk->mutable_k());
      EncodeBlocks(L.k, RepKind::kMin, b0, b1, DType::kF32, chunk->mutable_k_min());
      EncodeBlocks(L.k, RepKind::kMax, b0, b1, DType::kF32, chunk->mutable_k_max());
    }
  }
  L.tokens += n;
  auto r = WithReconnect(req, call);
  if (!r.ok()) {
    // The chunk is already merged into the client's coarse state (undoing a merge would need a
    // copy of the whole state per chunk). If the server was unreachable, a later replay delivers
    // it; if the server rejected it, client and server state differ for good.
    if (r.status().code() == absl::StatusCode::kUnavailable ||
        r.status().code() == absl::StatusCode::kDeadlineExceeded) {
      need_resync_ = true;
    } else {
      broken_ = r.status();
    }
    return r.status();
  }
  if (!r->has_ack()) return absl::InternalError("session: the server answered a chunk without ChunkAck");
  session_bytes_ = r->ack().session_bytes();
  return absl::OkStatus();
}

absl::StatusOr<MaskReply> Session::Mask(int layer, int row_begin, int row_end, bool diagnostics,
                                        const CallOptions& call) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!broken_.ok())
    return absl::FailedPreconditionError(absl::StrCat("session: unusable since the server rejected a chunk: ", broken_.message()));
  if (layer < 0 || layer >= static_cast<int>(layers_.size()))
    return absl::InvalidArgumentError(absl::StrCat("layer: ", layer, " outside [0, ", layers_.size(), ")"));
  v1::StreamRequest req;
  v1::MaskQuery* q = req.mutable_query();
  q->set_layer(layer);
  q->set_row_begin(row_begin);
  q->set_row_end(row_end);
  q->set_diagnostics(diagnostics);
  q->set_request_id(next_request_id_++);
  auto r = WithReconnect(req, call);
  if (!r.ok()) return r.status();
  if (!r->has_mask()) return absl::InternalError("session: the server answered a query without MaskReply");
  auto mask = wire::DecodeMask(r->mask().mask());
  if (!mask.ok()) return mask.status();
  MaskReply out;
  out.mask = std::move(*mask);
  out.format = r->mask().mask().format() == v1::MASK_FORMAT_UNSPECIFIED
                   ? MaskFormat::kBsr
                   : static_cast<MaskFormat>(r->mask().mask().format());
  out.density = r->mask().mask().density();
  out.diagnostics = r->mask().diagnostics();
  out.timings = r->mask().timings();
  out.request_bytes = static_cast<int64_t>(req.ByteSizeLong());
  out.response_bytes = static_cast<int64_t>(r->ByteSizeLong());
  return out;
}

absl::Status Session::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!stream_) return absl::OkStatus();
  stream_->Arm(client_->options().default_deadline);
  stream_->rw->WritesDone();
  v1::StreamResponse ignored;
  while (stream_->rw->Read(&ignored)) {
  }
  absl::Status s = FromGrpc(stream_->rw->Finish());
  bool fired = stream_->Disarm();
  stream_.reset();
  if (fired) return absl::DeadlineExceededError("session close exceeded its deadline");
  return s;
}

}  // namespace cab
