// cab (SPEC 3): the row budget k in three shares, filled in this order:
//  1. local: round(local_ratio * k) blocks (at least 1: the diagonal), walking the diagonal, the sink
//     blocks 0..sink_blocks-1, then the window i-1, i-2, ..., i-local_blocks;
//  2. bridges: up to round(bridge_ratio * k) untaken candidates that are graph edges of row i, lowest
//     curvature F first (ties: lower j); a non-edge has no curvature and is never a bridge;
//  3. importance: the highest A among the rest until the row holds exactly k blocks. This also tops
//     up whatever the local and bridge shares could not fill.
#include <algorithm>
#include <cmath>

#include "select.h"

namespace cab::cpu {

void SelectCab(const HeadSelectInput& in, int row, RowPicker& picker) {
  const MaskParams& p = *in.params;
  const HeadGraph& g = *in.graph;
  const int k = picker.budget();

  const int local = std::clamp(static_cast<int>(std::lround(static_cast<double>(p.local_ratio) * k)), 1, k);
  picker.SetBudget(local);
  for (int j = 0; j < p.sink_blocks && !picker.Full(); ++j) picker.Add(j);
  for (int j = row - 1; j >= 0 && j >= row - p.local_blocks && !picker.Full(); --j) picker.Add(j);

  const int bridges = std::min(static_cast<int>(std::lround(static_cast<double>(p.bridge_ratio) * k)), k - picker.size());
  if (bridges > 0) {
    std::vector<int32_t> edges;
    for (int32_t j : picker.Untaken()) {
      if (g.IsEdge(row, j) && !std::isnan(g.F(row, j))) edges.push_back(j);
    }
    const size_t take = std::min<size_t>(bridges, edges.size());
    std::partial_sort(edges.begin(), edges.begin() + take, edges.end(), [&](int32_t a, int32_t b) {
      const float x = g.F(row, a), y = g.F(row, b);
      return x < y || (x == y && a < b);
    });
    picker.SetBudget(picker.size() + static_cast<int>(take));
    for (size_t t = 0; t < take; ++t) picker.Add(edges[t]);
  }

  picker.SetBudget(k);
  FillByImportance(g, row, picker);
}

}  // namespace cab::cpu
