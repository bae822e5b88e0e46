#include "session.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "limits_check.h"
#include "wire/tensor_codec.h"

namespace cab::server {

Session::Session(wire::SessionSpec spec, const Limits& limits, uint64_t backend_session)
    : spec_(std::move(spec)), limits_(limits), layers_(static_cast<size_t>(spec_.layers)) {
  call_.session = backend_session;
}

int64_t Session::MemoryBytes() const {
  int64_t total = 0;
  for (const Layer& l : layers_) {
    if (l.q.blocks > 0) total += static_cast<int64_t>(l.q.MemoryBytes());
    if (l.k.blocks > 0) total += static_cast<int64_t>(l.k.MemoryBytes());
  }
  return total;
}

absl::Status Session::CheckChunkTensor(const cab::TensorView& v, int64_t heads, int64_t length,
                                       const char* field) const {
  const int64_t want[4] = {spec_.batch, heads, length, spec_.head_dim};
  const char* what[4] = {"batch", "heads", spec_.representatives ? "blocks" : "tokens", "head_dim"};
  for (int i = 0; i < 4; ++i) {
    if (v.shape[i] != want[i]) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".shape[", i, "]: ", v.shape[i], ", the session's ",
                                                     what[i], " is ", want[i]));
    }
  }
  if (spec_.dtype && v.dtype != *spec_.dtype) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".dtype: ", cab::DTypeName(v.dtype), ", the session's dtype is ",
                                                   cab::DTypeName(*spec_.dtype)));
  }
  return absl::OkStatus();
}

absl::StatusOr<cab::v1::ChunkAck> Session::Append(const cab::v1::Chunk& c,
                                                  const std::function<absl::Status(int64_t)>& reserve,
                                                  const StageHooks& hooks) {
  auto t0 = std::chrono::steady_clock::now();
  if (c.layer() < 0 || c.layer() >= spec_.layers) {
    return absl::InvalidArgumentError(absl::StrCat("chunk.layer: ", c.layer(), " is outside [0, ", spec_.layers, ")"));
  }
  Layer& layer = layers_[c.layer()];
  const int64_t held = layer.q.tokens;
  if (c.start() != held) {
    return absl::FailedPreconditionError(absl::StrCat("chunk.start: ", c.start(), ", but layer ", c.layer(), " holds ",
                                                      held, " tokens (chunks must arrive in order)"));
  }
  if (c.tokens() < 1) return absl::InvalidArgumentError(absl::StrCat("chunk.tokens: ", c.tokens(), " must be >= 1"));
  if (c.tokens() > limits_.max_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat("chunk.tokens: ", c.tokens(), " exceeds --max_tokens=", limits_.max_tokens));
  }
  const int64_t bs = spec_.block_size;
  if (spec_.representatives && held % bs != 0) {
    return absl::FailedPreconditionError(absl::StrCat("chunk.start: layer ", c.layer(), " ends inside a block (", held,
                                                      " tokens, block_size ", bs,
                                                      "); representatives can only follow whole blocks"));
  }
  SequenceShape shape{spec_.batch, spec_.heads, held + c.tokens(), spec_.head_dim, bs};
  if (auto s = CheckSequenceLimits(shape, limits_, "chunk"); !s.ok()) return s;

  const int64_t length = spec_.representatives ? CeilDiv(c.tokens(), bs) : c.tokens();
  auto q = wire::ViewTensor(c.q(), 4, "chunk.q");
  if (!q.ok()) return q.status();
  auto k = wire::ViewTensor(c.k(), 4, "chunk.k");
  if (!k.ok()) return k.status();
  if (auto s = CheckChunkTensor(*q, spec_.heads, length, "chunk.q"); !s.ok()) return s;
  if (auto s = CheckChunkTensor(*k, spec_.kv_heads, length, "chunk.k"); !s.ok()) return s;
  const bool has_min = wire::IsPresent(c.k_min()), has_max = wire::IsPresent(c.k_max());
  if (has_min || has_max) {
    if (!spec_.representatives) {
      return absl::InvalidArgumentError("chunk.k_min: only with representatives (full keys give their own min/max)");
    }
    if (has_min != has_max) {
      return absl::InvalidArgumentError(has_min ? "chunk.k_max: missing (k_min was given)"
                                                : "chunk.k_min: missing (k_max was given)");
    }
  }
  std::optional<cab::TensorView> kmin, kmax;
  if (has_min) {
    auto a = wire::ViewTensor(c.k_min(), 4, "chunk.k_min");
    if (!a.ok()) return a.status();
    auto b = wire::ViewTensor(c.k_max(), 4, "chunk.k_max");
    if (!b.ok()) return b.status();
    if (a->shape != k->shape) return absl::InvalidArgumentError("chunk.k_min.shape: must equal chunk.k.shape");
    if (b->shape != k->shape) return absl::InvalidArgumentError("chunk.k_max.shape: must equal chunk.k.shape");
    kmin = *a;
    kmax = *b;
  }
  const int64_t blocks_after = CeilDiv(held + c.tokens(), bs);
  const int64_t layer_bytes = CoarseBytesEstimate(spec_.batch, spec_.heads + spec_.kv_heads, blocks_after, spec_.head_dim);
  const int64_t current_layer_bytes =
      (layer.q.blocks > 0 ? static_cast<int64_t>(layer.q.MemoryBytes()) : 0) +
      (layer.k.blocks > 0 ? static_cast<int64_t>(layer.k.MemoryBytes()) : 0);
  if (auto s = reserve(MemoryBytes() - current_layer_bytes + layer_bytes); !s.ok()) return s;
  hooks.Observe(Stage::kDecode, SecondsSince(t0));

  auto t1 = std::chrono::steady_clock::now();
  // Appends in place: everything a client controls was checked above, and any failure from here on
  // (out of memory) ends the stream, which drops the session. Copying the layer first would cost
  // O(M * D) per chunk, which single-token decode steps cannot afford.
  absl::Status st = Guarded([&]() -> absl::Status {
    if (!spec_.representatives) {
      if (auto s = cab::AppendTokens(layer.q, *q, spec_.block_size); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("chunk.q: ", s.message()));
      }
      if (auto s = cab::AppendTokens(layer.k, *k, spec_.block_size); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("chunk.k: ", s.message()));
      }
      return absl::OkStatus();
    }
    auto more_q = cab::CoarseFromRepresentatives(*q, nullptr, nullptr, spec_.block_size, c.tokens());
    if (!more_q.ok()) return absl::Status(more_q.status().code(), absl::StrCat("chunk.q: ", more_q.status().message()));
    auto more_k = cab::CoarseFromRepresentatives(*k, kmin ? &*kmin : nullptr, kmax ? &*kmax : nullptr,
                                                 spec_.block_size, c.tokens());
    if (!more_k.ok()) return absl::Status(more_k.status().code(), absl::StrCat("chunk.k: ", more_k.status().message()));
    if (auto s = cab::AppendRepresentatives(layer.q, *more_q); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("chunk.q: ", s.message()));
    }
    if (auto s = cab::AppendRepresentatives(layer.k, *more_k); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("chunk.k: ", s.message()));
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  hooks.Observe(Stage::kCoarsen, SecondsSince(t1));

  cab::v1::ChunkAck ack;
  ack.set_layer(c.layer());
  ack.set_tokens(layer.q.tokens);
  ack.set_session_bytes(MemoryBytes());
  return ack;
}

absl::Status Session::CheckQuery(const cab::v1::MaskQuery& q) const {
  if (q.layer() < 0 || q.layer() >= spec_.layers) {
    return absl::InvalidArgumentError(absl::StrCat("query.layer: ", q.layer(), " is outside [0, ", spec_.layers, ")"));
  }
  const Layer& layer = layers_[q.layer()];
  if (layer.q.blocks == 0) {
    return absl::FailedPreconditionError(absl::StrCat("query.layer: layer ", q.layer(), " holds no tokens yet"));
  }
  cab::MaskParams p = spec_.params;
  return wire::ApplyRows(q.row_begin(), q.row_end(), layer.q.blocks, "query.", &p);
}

absl::Status Session::Query(const cab::v1::MaskQuery& q, cab::Backend& backend, const StageHooks& hooks,
                            cab::v1::MaskReply* reply) const {
  if (auto s = CheckQuery(q); !s.ok()) return s;
  const Layer& layer = layers_[q.layer()];
  cab::MaskParams p = spec_.params;
  if (auto s = wire::ApplyRows(q.row_begin(), q.row_end(), layer.q.blocks, "query.", &p); !s.ok()) return s;
  reply->set_request_id(q.request_id());
  reply->set_layer(q.layer());
  return PredictAndEncode(layer.q, layer.k, p, spec_.format, q.diagnostics(), backend, hooks, reply->mutable_mask(),
                          reply->mutable_diagnostics(), reply->mutable_timings(), call_);
}

}  // namespace cab::server
