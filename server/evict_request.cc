#include "evict_request.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "limits_check.h"
#include "wire/params_codec.h"
#include "wire/tensor_codec.h"

namespace cab::server {

absl::Status DecodeEvictRequest(const cab::v1::EvictRequest& r, const Limits& limits, EvictDecoded* out) {
  auto params = wire::ToEvictParams(r);
  if (!params.ok()) return params.status();
  out->params = *params;
  if (r.tokens() < 0) return absl::InvalidArgumentError(absl::StrCat("tokens: ", r.tokens(), " must be >= 0"));
  if (r.batch() < 0) return absl::InvalidArgumentError(absl::StrCat("batch: ", r.batch(), " must be >= 0"));
  if (r.kv_heads() < 0) return absl::InvalidArgumentError(absl::StrCat("kv_heads: ", r.kv_heads(), " must be >= 0"));

  // The largest batch, heads and length any part of the request claims: what the limits bound.
  int64_t batch = r.batch(), heads = r.kv_heads(), tokens = r.tokens(), dim = 1;
  struct Part {
    const cab::v1::Tensor* t;
    const char* name;
    int rank;
    std::optional<cab::TensorView>* slot;
  };
  for (const Part& p : {Part{&r.scores(), "scores", 3, &out->scores}, Part{&r.keys(), "keys", 4, &out->keys},
                        Part{&r.window(), "window", 4, &out->window}}) {
    if (!wire::IsPresent(*p.t)) continue;
    auto v = wire::ViewTensor(*p.t, p.rank, p.name);
    if (!v.ok()) return v.status();
    batch = std::max(batch, v->shape[0]);
    heads = std::max(heads, v->shape[1]);
    tokens = std::max(tokens, v->shape[2]);
    if (p.rank == 4) dim = std::max(dim, v->shape[3]);
    *p.slot = *v;
  }
  // SnapKV scores every window query against every cached token: bound the window so that one
  // request cannot hold a worker for hours.
  if (out->window && out->window->shape[2] > kMaxEvictWindow) {
    return absl::ResourceExhaustedError(absl::StrCat("window.shape[2]: ", out->window->shape[2],
                                                     " queries, at most ", kMaxEvictWindow));
  }
  SequenceShape shape{std::max<int64_t>(batch, 1), heads, tokens, dim, 0};
  if (out->params.policy == cab::EvictPolicy::kCab) shape.block_size = out->params.block_size;
  if (auto s = CheckSequenceLimits(shape, limits, "request"); !s.ok()) return s;
  // The answer is B * Hkv * min(keep, N) int64 indices; it has to fit a message.
  const int64_t answer = std::max<int64_t>(batch, 1) * std::max<int64_t>(heads, 1) * std::min(out->params.keep, tokens) * 8;
  if (answer > limits.max_message_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("keep: the answer would be ", answer,
                                                     " bytes, over --max_message_bytes=", limits.max_message_bytes));
  }
  out->inputs = cab::EvictInputs{};
  out->inputs.tokens = r.tokens();
  out->inputs.batch = r.batch();
  out->inputs.kv_heads = r.kv_heads();
  out->inputs.scores = out->scores ? &*out->scores : nullptr;
  out->inputs.keys = out->keys ? &*out->keys : nullptr;
  out->inputs.window = out->window ? &*out->window : nullptr;
  return absl::OkStatus();
}

}  // namespace cab::server
