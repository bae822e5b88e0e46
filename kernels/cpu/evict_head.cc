// Per-head eviction: the shared picker and the simple policies (h2o, streaming, random).
// cab and snapkv live in evict_cab.cc and evict_snapkv.cc.
#include "evict_head.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_set>

#include "seeded_rng.h"
#include "select.h"

namespace cab::cpu {
namespace {

// h2o: the most recent round(h2o_local_ratio * keep) tokens, then the highest scores.
std::vector<int64_t> EvictH2O(const EvictHeadInput& in, const EvictParams& p, int64_t keep) {
  TokenPicker picker(in.tokens, keep);
  picker.AddRecent(Share(p.h2o_local_ratio, keep));
  std::vector<int64_t> all(in.tokens);
  std::iota(all.begin(), all.end(), 0);
  picker.AddTop(std::move(all), in.scores, keep);
  return picker.Finish();
}

// streaming: the first sink_tokens tokens, then the most recent. Neither this nor random needs a
// tensor, so N may be large: both run in O(keep), never O(N).
std::vector<int64_t> EvictStreaming(const EvictHeadInput& in, const EvictParams& p, int64_t keep) {
  const int64_t sinks = std::min<int64_t>(p.sink_tokens, keep);
  std::vector<int64_t> kept(keep);
  std::iota(kept.begin(), kept.begin() + sinks, 0);
  std::iota(kept.begin() + sinks, kept.end(), in.tokens - (keep - sinks));  // keep < N: no overlap
  return kept;
}

// random: a seeded uniform sample of `keep` of the N tokens, per (seed, b, kv head), by Floyd's
// algorithm (one draw per kept token).
std::vector<int64_t> EvictRandom(const EvictHeadInput& in, const EvictParams& p, int64_t keep) {
  SeededRng rng(p.seed, {static_cast<uint64_t>(in.batch_index), static_cast<uint64_t>(in.kv_head)});
  std::unordered_set<int64_t> chosen;
  chosen.reserve(keep);
  for (int64_t j = in.tokens - keep; j < in.tokens; ++j) {
    const int64_t t = static_cast<int64_t>(rng.Below(j + 1));
    chosen.insert(chosen.count(t) ? j : t);
  }
  std::vector<int64_t> kept(chosen.begin(), chosen.end());
  std::sort(kept.begin(), kept.end());
  return kept;
}

}  // namespace

TokenPicker::TokenPicker(int64_t tokens, int64_t budget) : budget_(budget), taken_(tokens, 0) {
  kept_.reserve(budget);
}

bool TokenPicker::Add(int64_t t) {
  if (t < 0 || t >= static_cast<int64_t>(taken_.size()) || taken_[t] || Full()) return false;
  taken_[t] = 1;
  kept_.push_back(t);
  return true;
}

void TokenPicker::AddRecent(int64_t count) {
  const int64_t stop = std::min(budget_, size() + count);
  for (int64_t t = static_cast<int64_t>(taken_.size()) - 1; t >= 0 && size() < stop; --t) Add(t);
}

void TokenPicker::AddTop(std::vector<int64_t> pool, const float* value, int64_t count) {
  pool.erase(std::remove_if(pool.begin(), pool.end(), [this](int64_t t) { return Taken(t); }), pool.end());
  const int64_t take = std::min<int64_t>({count, budget_ - size(), static_cast<int64_t>(pool.size())});
  if (take <= 0) return;
  std::partial_sort(pool.begin(), pool.begin() + take, pool.end(), [value](int64_t a, int64_t b) {
    const float x = RankKey(value[a]), y = RankKey(value[b]);
    return x > y || (x == y && a < b);
  });
  for (int64_t i = 0; i < take; ++i) Add(pool[i]);
}

std::vector<int64_t> TokenPicker::Finish() {
  std::sort(kept_.begin(), kept_.end());
  return std::move(kept_);
}

int64_t Share(float ratio, int64_t keep) {
  return std::clamp<int64_t>(std::llround(static_cast<double>(ratio) * keep), 0, keep);
}

std::vector<int64_t> EvictHead(const EvictHeadInput& in, const EvictParams& p) {
  const int64_t keep = std::min(p.keep, in.tokens);
  if (keep == in.tokens) {
    std::vector<int64_t> all(in.tokens);
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  switch (p.policy) {
    case EvictPolicy::kH2O: return EvictH2O(in, p, keep);
    case EvictPolicy::kStreaming: return EvictStreaming(in, p, keep);
    case EvictPolicy::kCab: return EvictCab(in, p, keep);
    case EvictPolicy::kSnapKV: return EvictSnapKV(in, p, keep);
    case EvictPolicy::kRandom: return EvictRandom(in, p, keep);
  }
  return {};
}

}  // namespace cab::cpu
