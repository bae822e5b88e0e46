// Row selection: the shared pieces and the simple policies (magnitude, quest, random, streaming,
// dense). cab and adaptive live in select_cab.cc and select_adaptive.cc.
#include "select.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "seeded_rng.h"

namespace cab::cpu {
namespace {

// random: the diagonal plus a seeded uniform choice among the other candidates. The stream depends
// only on (seed, b, h, row), so a row's answer does not change with threads or with row ranges.
void SelectRandom(const HeadSelectInput& in, int row, RowPicker& picker) {
  const int n = CandidateCount(*in.params, in.blocks, row);
  SeededRng rng(in.params->seed, {static_cast<uint64_t>(in.batch_index), static_cast<uint64_t>(in.head),
                                  static_cast<uint64_t>(row)});
  std::vector<int32_t> others;
  others.reserve(n);
  for (int j = 0; j < n; ++j) {
    if (j != row) others.push_back(j);
  }
  // Partial Fisher-Yates: the first `need` entries become a uniform sample without replacement.
  const int need = std::min<int>(static_cast<int>(others.size()), std::max(0, ClampedBudget(*in.params, in.blocks, row) - 1));
  for (int t = 0; t < need; ++t) {
    const int pick = t + static_cast<int>(rng.Below(others.size() - t));
    std::swap(others[t], others[pick]);
    picker.Add(others[t]);
  }
}

// streaming: diagonal, sinks, then the nearest preceding blocks i-1, i-2, ...; when not causal and
// the budget is still open, the following blocks i+1, i+2, ...
void SelectStreaming(const HeadSelectInput& in, int row, RowPicker& picker) {
  for (int j = 0; j < in.params->sink_blocks && !picker.Full(); ++j) picker.Add(j);
  for (int j = row - 1; j >= 0 && !picker.Full(); --j) picker.Add(j);
  for (int j = row + 1; j < CandidateCount(*in.params, in.blocks, row) && !picker.Full(); ++j) picker.Add(j);
}

void SelectDense(const HeadSelectInput& in, int row, RowPicker& picker) {
  const int n = CandidateCount(*in.params, in.blocks, row);
  picker.SetBudget(n);
  for (int j = 0; j < n; ++j) picker.Add(j);
}

}  // namespace

GraphNeed NeedOf(MaskPolicy policy) {
  switch (policy) {
    case MaskPolicy::kCab:
    case MaskPolicy::kAdaptive:
      return GraphNeed::kFull;
    case MaskPolicy::kMagnitude:
    case MaskPolicy::kQuest:
      return GraphNeed::kAffinity;
    case MaskPolicy::kRandom:
    case MaskPolicy::kStreaming:
    case MaskPolicy::kDense:
      return GraphNeed::kNone;
  }
  return GraphNeed::kFull;
}

GraphParams SelectionGraphParams(const MaskParams& p) {
  GraphParams g = p.graph;
  if (p.policy == MaskPolicy::kQuest) g.estimator = Estimator::kQuest;
  return g;
}

int ClampedBudget(const MaskParams& p, int blocks, int row) {
  return std::min(RowBudget(p, row), CandidateCount(p, blocks, row));
}

RowPicker::RowPicker(int candidates, int budget, std::vector<int32_t>& out)
    : candidates_(candidates), budget_(budget), taken_(candidates, 0), out_(out) {
  out_.clear();
}

bool RowPicker::Add(int j) {
  if (j < 0 || j >= candidates_ || taken_[j] || Full()) return false;
  taken_[j] = 1;
  out_.push_back(j);
  return true;
}

std::vector<int32_t> RowPicker::Untaken() const {
  std::vector<int32_t> rest;
  rest.reserve(candidates_ - out_.size());
  for (int j = 0; j < candidates_; ++j) {
    if (!taken_[j]) rest.push_back(j);
  }
  return rest;
}

void RowPicker::Finish() { std::sort(out_.begin(), out_.end()); }

void FillByImportance(const HeadGraph& g, int row, RowPicker& picker) {
  const int need = picker.budget() - picker.size();
  if (need <= 0) return;
  const std::vector<std::pair<float, int32_t>> ranked = RankByScore(g, row, picker.Untaken(), need);
  for (const auto& [key, j] : ranked) picker.Add(j);
}

std::vector<std::pair<float, int32_t>> RankByScore(const HeadGraph& g, int row, const std::vector<int32_t>& pool,
                                                   int count) {
  // (-S, j) pairs sort ascending into descending S with ties to the lower j, without an indirect
  // comparator (the hot loop of every importance ranking).
  const float* s = g.score.data() + static_cast<size_t>(row) * g.blocks;
  std::vector<std::pair<float, int32_t>> keyed(pool.size());
  for (size_t i = 0; i < pool.size(); ++i) keyed[i] = {-RankKey(s[pool[i]]), pool[i]};
  const size_t take = std::min<size_t>(std::max(count, 0), keyed.size());
  if (take < keyed.size()) {
    std::nth_element(keyed.begin(), keyed.begin() + take, keyed.end());
    keyed.resize(take);
  }
  std::sort(keyed.begin(), keyed.end());
  return keyed;
}

void SelectRow(const HeadSelectInput& in, int row, std::vector<int32_t>& out) {
  const MaskParams& p = *in.params;
  RowPicker picker(CandidateCount(p, in.blocks, row), ClampedBudget(p, in.blocks, row), out);
  picker.Add(row);  // every policy keeps the diagonal
  switch (p.policy) {
    case MaskPolicy::kCab: SelectCab(in, row, picker); break;
    case MaskPolicy::kAdaptive: SelectAdaptive(in, row, picker); break;
    case MaskPolicy::kMagnitude:
    case MaskPolicy::kQuest: FillByImportance(*in.graph, row, picker); break;
    case MaskPolicy::kRandom: SelectRandom(in, row, picker); break;
    case MaskPolicy::kStreaming: SelectStreaming(in, row, picker); break;
    case MaskPolicy::kDense: SelectDense(in, row, picker); break;
  }
  picker.Finish();
}

}  // namespace cab::cpu
