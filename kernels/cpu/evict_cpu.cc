#include "evict_cpu.h"

#include <algorithm>
#include <mutex>
#include <optional>

#include "cab/coarse.h"
#include "cab/graph.h"
#include "evict_head.h"
#include "evict_inputs.h"

namespace cab::cpu {

absl::StatusOr<KeepIndices> EvictCpu(const EvictInputs& in, const EvictParams& p, ThreadPool& pool) {
  auto shape_or = ResolveEvictShape(in, p);
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
