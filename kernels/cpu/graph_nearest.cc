// The r-nearest block graph: a top-r selection per row, then symmetrisation (SPEC 2).
#include "graph_nearest.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace cab {

void BuildNearestGraph(int degree, bool causal, HeadGraph* g) {
  const int M = g->blocks;
  g->adjacency.assign(static_cast<size_t>(M) * M, 0);
  g->degree.assign(M, 0);
  std::vector<int> cand;
  cand.reserve(M);
  for (int i = 0; i < M; ++i) {
    const float* a = g->affinity.data() + static_cast<size_t>(i) * M;
    cand.clear();
    const int end = causal ? i + 1 : M;
    for (int j = 0; j < end; ++j) {
      if (j != i) cand.push_back(j);
    }
    // A strict total order (NaN ranks as -inf, then lower j first) keeps the selection
    // deterministic and the sort well-defined on any input.
    auto key = [a](int j) { return std::isnan(a[j]) ? -std::numeric_limits<float>::infinity() : a[j]; };
    auto stronger = [&key](int x, int y) {
      const float kx = key(x), ky = key(y);
      return kx != ky ? kx > ky : x < y;
    };
    const size_t r = std::min<size_t>(degree, cand.size());
    if (r < cand.size()) {
      std::nth_element(cand.begin(), cand.begin() + r, cand.end(), stronger);
    }
    for (size_t n = 0; n < r; ++n) {
      const int j = cand[n];
      g->adjacency[static_cast<size_t>(i) * M + j] = 1;
      g->adjacency[static_cast<size_t>(j) * M + i] = 1;
    }
  }
  for (int i = 0; i < M; ++i) {
    const uint8_t* row = g->adjacency.data() + static_cast<size_t>(i) * M;
    int d = 0;
    for (int j = 0; j < M; ++j) d += row[j];
    g->degree[i] = d;
  }
}

}  // namespace cab
