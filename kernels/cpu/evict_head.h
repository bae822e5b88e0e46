// Eviction of one (batch, kv head) (SPEC 4): inputs already validated and converted to float.
// The rules are written down in docs/policies.md.
#pragma once

#include <cstdint>
#include <vector>

#include "cab/graph.h"
#include "cab/params.h"

namespace cab::cpu {

struct EvictHeadInput {
  int64_t tokens = 0;                   // N
  const float* scores = nullptr;        // [N], averaged over the GQA group; null when not sent
  const float* keys = nullptr;          // [N, D]; null when not sent
  int dim = 0;                          // D
  const float* window = nullptr;        // [group, W, D]: the group's last W queries; null when not sent
  int group = 0, window_len = 0;
  const HeadGraph* key_graph = nullptr; // cab: graph over this kv head's key blocks
  int batch_index = 0, kv_head = 0;     // seed the random policy
};

// Returns exactly min(keep, N) token indices, ascending.
std::vector<int64_t> EvictHead(const EvictHeadInput& in, const EvictParams& p);

// --- shared by the policy files ---

// Tracks the kept tokens of one head.
class TokenPicker {
 public:
  TokenPicker(int64_t tokens, int64_t budget);
  bool Full() const { return static_cast<int64_t>(kept_.size()) >= budget_; }
  int64_t size() const { return static_cast<int64_t>(kept_.size()); }
  int64_t budget() const { return budget_; }
  void SetBudget(int64_t budget) { budget_ = budget; }
  bool Taken(int64_t t) const { return taken_[t] != 0; }
  bool Add(int64_t t);
  // The most recent untaken tokens N-1, N-2, ... until `count` more are kept (or the budget is full).
  void AddRecent(int64_t count);
  // Untaken tokens among `pool` by descending `value` (ties: lower index) until `count` more are kept.
  void AddTop(std::vector<int64_t> pool, const float* value, int64_t count);
  std::vector<int64_t> Finish();  // ascending

 private:
  int64_t budget_;
  std::vector<uint8_t> taken_;
  std::vector<int64_t> kept_;
};

// Rounded share of the budget: round(ratio * keep), half away from zero, clamped to [0, keep].
int64_t Share(float ratio, int64_t keep);

std::vector<int64_t> EvictCab(const EvictHeadInput& in, const EvictParams& p, int64_t keep);
std::vector<int64_t> EvictSnapKV(const EvictHeadInput& in, const EvictParams& p, int64_t keep);

}  // namespace cab::cpu
