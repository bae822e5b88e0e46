#include "evict_cpu.h"

#include <algorithm>
#include <mutex>
#include <optional>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "cab/coarse.h"
#include "cab/graph.h"
#include "evict_head.h"

namespace cab::cpu {
namespace {

// Upper bound on the indices one call returns (1 GiB of int64), so a huge keep fails cleanly.
constexpr int64_t kMaxIndices = int64_t{1} << 27;

// The dimensions every input must agree on, resolved from the tensors and the explicit fields.
struct EvictShape {
  int batch = 0, kv_heads = 0;
  int64_t tokens = 0;
  int dim = 0;
  int score_group = 1;   // scores rows per kv head (1: per kv head; g: averaged over the group)
  int group = 1;         // query heads per kv head in `window`
  int window_len = 0;
};

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

absl::StatusOr<EvictShape> ResolveShape(const EvictInputs& in, const EvictParams& p) {
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
  return shape;
}

}  // namespace

absl::StatusOr<KeepIndices> EvictCpu(const EvictInputs& in, const EvictParams& p, ThreadPool& pool) {
  if (static_cast<int>(p.policy) < 0 || static_cast<int>(p.policy) > static_cast<int>(EvictPolicy::kRandom)) {
    return absl::InvalidArgumentError(absl::StrCat("policy: unknown eviction policy ", static_cast<int>(p.policy)));
  }
  if (auto s = p.Validate(); !s.ok()) return s;
  auto shape_or = ResolveShape(in, p);
  if (!shape_or.ok()) return shape_or.status();
  const EvictShape shape = *shape_or;

  // cab: coarse key blocks once for every head; each head builds its key-block graph from them.
  std::optional<CoarseBlocks> key_blocks;
  if (p.policy == EvictPolicy::kCab) {
    auto k = CoarsenCpu(*in.keys, p.block_size);
    if (!k.ok()) return k.status();
    key_blocks = std::move(*k);
  }

  KeepIndices out;
  out.batch = shape.batch;
  out.kv_heads = shape.kv_heads;
  out.per_head = std::min(p.keep, shape.tokens);
  out.indices.resize(static_cast<size_t>(out.per_head * shape.batch * shape.kv_heads));

  std::mutex error_mu;
  absl::Status error;
  pool.ParallelFor(static_cast<int64_t>(shape.batch) * shape.kv_heads, [&](int64_t item) {
    const int b = static_cast<int>(item / shape.kv_heads), h = static_cast<int>(item % shape.kv_heads);
    const int64_t n = shape.tokens;
    EvictHeadInput head;
    head.tokens = n;
    head.batch_index = b;
    head.kv_head = h;
    std::vector<float> scores, keys, window;
    // Convert only what the policy reads: h2o and cab scores, cab and snapkv keys, snapkv the window.
    const bool use_scores = p.policy == EvictPolicy::kH2O || p.policy == EvictPolicy::kCab;
    const bool use_keys = p.policy == EvictPolicy::kCab || p.policy == EvictPolicy::kSnapKV;
    const bool use_window = p.policy == EvictPolicy::kSnapKV;
    if (in.scores && use_scores) {  // mean over the score rows of this kv head's group
      scores.assign(n, 0.f);
      std::vector<float> row(n);
      std::vector<double> sum(n, 0.0);
      for (int r = 0; r < shape.score_group; ++r) {
        const int64_t head_row = static_cast<int64_t>(b) * shape.kv_heads * shape.score_group +
                                 static_cast<int64_t>(h) * shape.score_group + r;
        ToFloat(*in.scores, head_row * n, n, row.data());
        for (int64_t t = 0; t < n; ++t) sum[t] += row[t];
      }
      for (int64_t t = 0; t < n; ++t) scores[t] = static_cast<float>(sum[t] / shape.score_group);
      head.scores = scores.data();
    }
    if (in.keys && use_keys) {
      keys.resize(static_cast<size_t>(n * shape.dim));
      ToFloat(*in.keys, (static_cast<int64_t>(b) * shape.kv_heads + h) * n * shape.dim, n * shape.dim, keys.data());
      head.keys = keys.data();
      head.dim = shape.dim;
    }
    if (in.window && use_window) {  // the group's query heads are consecutive: h * g .. h * g + g - 1
      const int64_t count = static_cast<int64_t>(shape.group) * shape.window_len * shape.dim;
      window.resize(count);
      const int64_t first = (static_cast<int64_t>(b) * shape.kv_heads + h) * count;
      ToFloat(*in.window, first, count, window.data());
      head.window = window.data();
      head.group = shape.group;
      head.window_len = shape.window_len;
    }
    std::optional<HeadGraph> graph;
    if (key_blocks) {
      auto g = BuildKeyGraphCpu(*key_blocks, b, h, p.graph);
      if (!g.ok()) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (error.ok()) error = g.status();
        return;
      }
      graph = std::move(*g);
      head.key_graph = &*graph;
    }
    const std::vector<int64_t> kept = EvictHead(head, p);
    std::copy(kept.begin(), kept.end(), out.indices.begin() + item * out.per_head);
  });
  if (!error.ok()) return error;
  return out;
}

}  // namespace cab::cpu
