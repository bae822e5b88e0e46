// cab eviction (SPEC 4): keep = recent + bridges + important, filled in this order:
//  1. recent: the round(local_ratio * keep) most recent tokens;
//  2. bridges: up to round(bridge_ratio * keep) tokens from the key blocks of the key-block graph
//     (BuildKeyGraphCpu over blocks of block_size tokens). Each block with at least one edge is ranked
//     by its most negative edge curvature (its minimum F; ties: lower block); blocks are taken in that
//     order, and inside a block its untaken tokens by descending importance (ties: lower index), until
//     the bridge share is full. Blocks without edges are never bridges;
//  3. important: the rest by descending importance until exactly `keep` tokens.
// Importance is the (group-averaged) score when scores are sent, else the key's L2 norm.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>

#include "evict_head.h"

namespace cab::cpu {
namespace {

// (lowest edge curvature, block) for every key block with an edge, most negative first.
std::vector<std::pair<float, int>> RankBridgeBlocks(const HeadGraph& g) {
  std::vector<std::pair<float, int>> ranked;
  for (int m = 0; m < g.blocks; ++m) {
    float worst = std::numeric_limits<float>::infinity();
    bool any = false;
    for (int j = 0; j < g.blocks; ++j) {
      if (g.IsEdge(m, j) && !std::isnan(g.F(m, j))) {
        worst = std::min(worst, g.F(m, j));
        any = true;
      }
    }
    if (any) ranked.emplace_back(worst, m);
  }
  std::sort(ranked.begin(), ranked.end());  // F ascending, then lower block
  return ranked;
}

}  // namespace

std::vector<int64_t> EvictCab(const EvictHeadInput& in, const EvictParams& p, int64_t keep) {
  const int64_t n = in.tokens;
  std::vector<float> norms;
  const float* importance = in.scores;
  if (importance == nullptr) {
    norms.resize(n);
    for (int64_t t = 0; t < n; ++t) {
      double s = 0;
      for (int d = 0; d < in.dim; ++d) s += static_cast<double>(in.keys[t * in.dim + d]) * in.keys[t * in.dim + d];
      norms[t] = static_cast<float>(std::sqrt(s));
    }
    importance = norms.data();
  }

  TokenPicker picker(n, keep);
  picker.AddRecent(Share(p.local_ratio, keep));

  const int64_t bridges = std::min(Share(p.bridge_ratio, keep), keep - picker.size());
  if (bridges > 0 && in.key_graph != nullptr) {
    picker.SetBudget(picker.size() + bridges);
    for (const auto& [curvature, block] : RankBridgeBlocks(*in.key_graph)) {
      if (picker.Full()) break;
      const int64_t begin = static_cast<int64_t>(block) * p.block_size;
      const int64_t end = std::min(n, begin + p.block_size);
      std::vector<int64_t> tokens(std::max<int64_t>(0, end - begin));
      std::iota(tokens.begin(), tokens.end(), begin);
      picker.AddTop(std::move(tokens), importance, bridges);
    }
    picker.SetBudget(keep);
  }

  std::vector<int64_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  picker.AddTop(std::move(all), importance, keep);
  return picker.Finish();
}

}  // namespace cab::cpu
