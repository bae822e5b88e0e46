#include "evict_inputs.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "cpu_backend_predict.h"

namespace cab::cpu {
namespace {

// Upper bound on the indices one call returns (1 GiB of int64), so a huge keep fails cleanly.
constexpr int64_t kMaxIndices = int64_t{1} << 27;

// "<field>: <have> does not match <source> (<want>)"
absl::Status Agree(int64_t have, int64_t want, const char* field, const char* source) {
  if (have != want) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", have, " does not match ", source, " (", want, ")"));
  }
  return absl::OkStatus();
}

absl::Status Needs(const TensorView* t, const char* name, EvictPolicy policy) {
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": required by eviction policy ", Name(policy)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EvictShape> ResolveEvictShape(const EvictInputs& in, const EvictParams& p) {
  if (static_cast<int>(p.policy) < 0 || static_cast<int>(p.policy) > static_cast<int>(EvictPolicy::kRandom)) {
    return absl::InvalidArgumentError(absl::StrCat("policy: unknown eviction policy ", static_cast<int>(p.policy)));
  }
  if (auto s = p.Validate(); !s.ok()) return s;
  switch (p.policy) {
    case EvictPolicy::kH2O:
      if (auto s = Needs(in.scores, "scores", p.policy); !s.ok()) return s;
      break;
    case EvictPolicy::kCab:
      if (auto s = Needs(in.keys, "keys", p.policy); !s.ok()) return s;
      break;
    case EvictPolicy::kSnapKV:
      if (auto s = Needs(in.keys, "keys", p.policy); !s.ok()) return s;
      if (auto s = Needs(in.window, "window", p.policy); !s.ok()) return s;
      break;
    case EvictPolicy::kStreaming:
    case EvictPolicy::kRandom:
      break;
  }
  for (auto [t, rank, name] : {std::tuple{in.scores, 3, "scores"}, {in.keys, 4, "keys"}, {in.window, 4, "window"}}) {
    if (t == nullptr) continue;
    if (auto s = CheckTensor(*t, rank, name); !s.ok()) return s;
    if (t->dtype != DType::kF32 && t->dtype != DType::kF16 && t->dtype != DType::kBF16) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": unknown dtype ", static_cast<int>(t->dtype)));
    }
  }

  EvictShape shape;
  shape.batch = in.batch;
  shape.kv_heads = in.kv_heads;
  shape.tokens = in.tokens;
  if (shape.batch < 0) return absl::InvalidArgumentError(absl::StrCat("batch: ", in.batch, " must be >= 0"));
  if (shape.kv_heads < 0) return absl::InvalidArgumentError(absl::StrCat("kv_heads: ", in.kv_heads, " must be >= 0"));
  if (shape.tokens < 0) return absl::InvalidArgumentError(absl::StrCat("tokens: ", in.tokens, " must be >= 0"));

  // keys fix B, Hkv, N and D; explicit fields left at 0 take them.
  if (in.keys) {
    const auto& s = in.keys->shape;
    if (shape.batch == 0) shape.batch = static_cast<int>(s[0]);
    if (shape.kv_heads == 0) shape.kv_heads = static_cast<int>(s[1]);
    if (shape.tokens == 0) shape.tokens = s[2];
    if (auto st = Agree(shape.batch, s[0], "batch", "keys dimension 0"); !st.ok()) return st;
    if (auto st = Agree(shape.kv_heads, s[1], "kv_heads", "keys dimension 1"); !st.ok()) return st;
    if (auto st = Agree(shape.tokens, s[2], "tokens", "keys dimension 2"); !st.ok()) return st;
    shape.dim = static_cast<int>(s[3]);
  }
  if (in.scores) {
    const auto& s = in.scores->shape;
    if (shape.batch == 0) shape.batch = static_cast<int>(s[0]);
    if (shape.kv_heads == 0) shape.kv_heads = static_cast<int>(s[1]);  // used as is
    if (shape.tokens == 0) shape.tokens = s[2];
    if (auto st = Agree(s[0], shape.batch, "scores dimension 0", "batch"); !st.ok()) return st;
    if (auto st = Agree(s[2], shape.tokens, "scores dimension 2", "tokens"); !st.ok()) return st;
    if (s[1] % shape.kv_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("scores: dimension 1 is ", s[1], ", must be kv_heads (",
                                                     shape.kv_heads, ") or a multiple of it (query heads)"));
    }
    shape.score_group = static_cast<int>(s[1] / shape.kv_heads);
  }
  if (in.window) {
    const auto& s = in.window->shape;
    if (auto st = Agree(s[0], shape.batch, "window dimension 0", "batch"); !st.ok()) return st;
    if (s[1] % shape.kv_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("window: dimension 1 (query heads) is ", s[1],
                                                     ", must be a multiple of kv_heads (", shape.kv_heads, ")"));
    }
    if (in.keys) {
      if (auto st = Agree(s[3], shape.dim, "window dimension 3", "the keys' head dim"); !st.ok()) return st;
    }
    if (s[2] > shape.tokens) {
      return absl::InvalidArgumentError(absl::StrCat("window: ", s[2], " queries, more than the ", shape.tokens,
                                                     " cached tokens"));
    }
    shape.group = static_cast<int>(s[1] / shape.kv_heads);
    shape.window_len = static_cast<int>(s[2]);
  }
  if (shape.batch <= 0) return absl::InvalidArgumentError("batch: must be > 0 (or send a tensor that gives it)");
  if (shape.kv_heads <= 0) return absl::InvalidArgumentError("kv_heads: must be > 0 (or send a tensor that gives it)");
  if (shape.tokens <= 0) return absl::InvalidArgumentError("tokens: must be > 0 (or send a tensor that gives it)");
  const int64_t per_head = std::min(p.keep, shape.tokens);
  if (per_head > kMaxIndices / (static_cast<int64_t>(shape.batch) * shape.kv_heads)) {
    return absl::InvalidArgumentError(absl::StrCat("keep: batch * kv_heads * min(keep, tokens) exceeds ", kMaxIndices,
                                                   " indices"));
  }
  if (p.policy == EvictPolicy::kCab && (shape.tokens + p.block_size - 1) / p.block_size > kMaxBlocks) {
    return absl::InvalidArgumentError(absl::StrCat("block_size: ", p.block_size, " makes more than ", kMaxBlocks,
                                                   " key blocks of ", shape.tokens, " tokens"));
  }
  return shape;
}


}  // namespace cab::cpu
