// Per-row block selection of every mask policy (SPEC 3), for one (batch, query head).
// The rules, rounding and tie-breaking are written down in docs/policies.md.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "cab/graph.h"
#include "cab/params.h"

namespace cab::cpu {

// How much of the head graph a policy reads.
enum class GraphNeed {
  kNone,      // dense, streaming, random: positions only
  kAffinity,  // magnitude, quest: S and A
  kFull,      // cab, adaptive: S, A, adjacency and curvature
};
GraphNeed NeedOf(MaskPolicy policy);

// The graph parameters the policy's ranking uses: quest always ranks by Quest's bound, whatever
// estimator feeds the graph.
GraphParams SelectionGraphParams(const MaskParams& p);

struct HeadSelectInput {
  const MaskParams* params = nullptr;
  const HeadGraph* graph = nullptr;  // as NeedOf says; may be null for kNone
  int blocks = 0;                    // M
  int batch_index = 0, head = 0;     // seed the random policy
};

// Writes the kept key blocks of query block `row`, ascending, into `out` (cleared first).
void SelectRow(const HeadSelectInput& in, int row, std::vector<int32_t>& out);

// --- shared by the policy files ---

// Number of candidate key blocks of `row`: row + 1 when causal, all M otherwise.
inline int CandidateCount(const MaskParams& p, int blocks, int row) {
  return p.graph.causal ? row + 1 : blocks;
}
// Row budget clamped to the candidates.
int ClampedBudget(const MaskParams& p, int blocks, int row);

// Tracks the chosen blocks of one row.
class RowPicker {
 public:
  RowPicker(int candidates, int budget, std::vector<int32_t>& out);
  bool Full() const { return static_cast<int>(out_.size()) >= budget_; }
  int size() const { return static_cast<int>(out_.size()); }
  bool Taken(int j) const { return taken_[j] != 0; }
  // Adds j if it is a candidate, not yet taken and the budget has room; returns whether it did.
  bool Add(int j);
  int budget() const { return budget_; }
  void SetBudget(int budget) { budget_ = budget; }
  // Candidates not taken yet, ascending.
  std::vector<int32_t> Untaken() const;
  // Sorts the result ascending.
  void Finish();

 private:
  int candidates_;
  int budget_;
  std::vector<uint8_t> taken_;
  std::vector<int32_t>& out_;
};

// NaN (only from non-finite inputs) ranks last instead of breaking a sort's ordering.
inline float RankKey(float v) { return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v; }

// Adds the untaken candidates of `row` with the highest score S (= highest A: the softmax is monotone
// within a row; S has no rounding ties), ties to the lower j, until the picker is full.
void FillByImportance(const HeadGraph& g, int row, RowPicker& picker);

// The `count` blocks of `pool` with the highest S of `row` (ties: lower j), best first, as (-S, j).
std::vector<std::pair<float, int32_t>> RankByScore(const HeadGraph& g, int row, const std::vector<int32_t>& pool,
                                                   int count);

void SelectCab(const HeadSelectInput& in, int row, RowPicker& picker);
void SelectAdaptive(const HeadSelectInput& in, int row, RowPicker& picker);

}  // namespace cab::cpu
