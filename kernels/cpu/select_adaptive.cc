// adaptive (SPEC 3, the prototype's AdaptiveCurvaturePredictor): the budget follows the row.
// Kept, as a union:
//  - the diagonal and the sink blocks 0..sink_blocks-1;
//  - the smallest set of candidates, by descending A (ties: lower j), whose A sums to at least
//    adaptive_tau of the row's mass (the row's A sums to 1 over its candidates);
//  - every candidate that is a graph edge of row i with curvature F < mean - adaptive_z * std, where
//    mean and std (population) are over the row's candidate edges (a row with fewer than 2 edges adds none);
//  - if that is fewer than min_keep blocks, the highest-A rest up to min(min_keep, candidates).
// RowBudget (sparsity, blocks_per_row) does not apply.
#include <algorithm>
#include <cmath>
#include <utility>

#include "select.h"

namespace cab::cpu {

void SelectAdaptive(const HeadSelectInput& in, int row, RowPicker& picker) {
  const MaskParams& p = *in.params;
  const HeadGraph& g = *in.graph;
  const int n = CandidateCount(p, in.blocks, row);
  picker.SetBudget(n);
  for (int j = 0; j < p.sink_blocks; ++j) picker.Add(j);

  // Mass coverage over all candidates (the diagonal and sinks count toward the mass when reached).
  // Candidates by descending S (ties: lower j), ordered in growing chunks only as far as the mass
  // walk needs: peaked rows stop after a few blocks without sorting the whole row.
  const float* s = g.score.data() + static_cast<size_t>(row) * g.blocks;
  std::vector<std::pair<float, int32_t>> keyed(n);
  for (int j = 0; j < n; ++j) keyed[j] = {-RankKey(s[j]), j};
  // The small slack keeps tau = 1 from needing blocks of zero mass because of float rounding.
  const double target = static_cast<double>(p.adaptive_tau) - 1e-6;
  double mass = 0;
  for (size_t done = 0, chunk = 32; done < keyed.size() && mass < target; chunk *= 2) {
    const size_t end = std::min(keyed.size(), done + chunk);
    if (end < keyed.size()) std::nth_element(keyed.begin() + done, keyed.begin() + end, keyed.end());
    std::sort(keyed.begin() + done, keyed.begin() + end);
    for (; done < end && mass < target; ++done) {
      mass += g.A(row, keyed[done].second);
      picker.Add(keyed[done].second);
    }
    done = end;
  }

  // Curvature outliers among the row's edges (two-pass mean and population std, in double).
  std::vector<int32_t> edges;
  for (int j = 0; j < n; ++j) {
    if (g.IsEdge(row, j) && !std::isnan(g.F(row, j))) edges.push_back(j);
  }
  if (edges.size() >= 2) {
    double mean = 0, var = 0;
    for (int32_t j : edges) mean += g.F(row, j);
    mean /= edges.size();
    for (int32_t j : edges) var += (g.F(row, j) - mean) * (g.F(row, j) - mean);
    const double threshold = mean - static_cast<double>(p.adaptive_z) * std::sqrt(var / edges.size());
    for (int32_t j : edges) {
      if (g.F(row, j) < threshold) picker.Add(j);
    }
  }

  const int floor = std::min(p.min_keep, n);
  if (picker.size() < floor) {
    picker.SetBudget(floor);
    FillByImportance(g, row, picker);
  }
}

}  // namespace cab::cpu
