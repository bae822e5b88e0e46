// Curvature on graph edges (SPEC 2) and its per-head summary.
// Triangles are needed only on edges (about 2r per row), so instead of the M x M x M product
// (B B) each edge intersects two rows of an M-bit bitset: O(edges * M / 64) word operations.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "cab/graph.h"
#include "curvature_edges.h"

namespace cab {
namespace {

// Rows of the adjacency as bitsets of `words` uint64 each.
std::vector<uint64_t> AdjacencyBits(const HeadGraph& g, int words) {
  const int M = g.blocks;
  std::vector<uint64_t> bits(static_cast<size_t>(M) * words, 0);
  for (int i = 0; i < M; ++i) {
    const uint8_t* row = g.adjacency.data() + static_cast<size_t>(i) * M;
    uint64_t* out = bits.data() + static_cast<size_t>(i) * words;
    for (int j = 0; j < M; ++j) {
      if (row[j]) out[j >> 6] |= uint64_t{1} << (j & 63);
    }
  }
  return bits;
}

int CommonNeighbours(const uint64_t* a, const uint64_t* b, int words) {
  int t = 0;
  for (int w = 0; w < words; ++w) t += __builtin_popcountll(a[w] & b[w]);
  return t;
}

float EdgeCurvature(const GraphParams& p, const HeadGraph& g, int i, int j, int t) {
  const float di = static_cast<float>(g.degree[i]), dj = static_cast<float>(g.degree[j]);
  const float dmax = std::max(di, dj), dmin = std::min(di, dj);
  const float tf = static_cast<float>(t);
  switch (p.curvature) {
    case CurvatureKind::kBalanced:
      return 2.f / di + 2.f / dj - 2.f + 2.f * tf / dmax + tf / dmin;
    case CurvatureKind::kForman:
      return 4.f - di - dj + 3.f * tf;
    case CurvatureKind::kDirectRedundancy:
      // The edge's affinity is the larger of its two directions: under causal masking, the
      // later block's attention to the earlier one (the other direction is 0).
      return std::max(g.A(i, j), g.A(j, i)) - p.lambda * tf / dmax;
  }
  return std::numeric_limits<float>::quiet_NaN();
}

}  // namespace

void ComputeCurvature(const GraphParams& p, HeadGraph* g) {
  const int M = g->blocks;
  const int words = (M + 63) / 64;
  const std::vector<uint64_t> bits = AdjacencyBits(*g, words);
  g->curvature.assign(static_cast<size_t>(M) * M, std::numeric_limits<float>::quiet_NaN());
  for (int i = 0; i < M; ++i) {
    const uint8_t* row = g->adjacency.data() + static_cast<size_t>(i) * M;
    for (int j = i + 1; j < M; ++j) {
      if (!row[j]) continue;
      const int t = CommonNeighbours(bits.data() + static_cast<size_t>(i) * words,
                                     bits.data() + static_cast<size_t>(j) * words, words);
      const float f = EdgeCurvature(p, *g, i, j, t);
      g->curvature[static_cast<size_t>(i) * M + j] = f;
      g->curvature[static_cast<size_t>(j) * M + i] = f;
    }
  }
}

CurvatureStats SummarizeCurvature(const HeadGraph& g) {
  CurvatureStats s;
  const int M = g.blocks;
  if (g.adjacency.size() != static_cast<size_t>(M) * M || g.curvature.size() != g.adjacency.size()) return s;
  double sum = 0;
  int64_t negative = 0;
  float mn = std::numeric_limits<float>::infinity(), mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < M; ++i) {
    for (int j = i + 1; j < M; ++j) {  // each undirected edge once
      if (!g.IsEdge(i, j)) continue;
      const float f = g.F(i, j);
      ++s.edges;
      sum += f;
      negative += f < 0.f;
      mn = std::min(mn, f);
      mx = std::max(mx, f);
    }
  }
  if (s.edges > 0) {
    s.min = mn;
    s.max = mx;
    s.mean = static_cast<float>(sum / s.edges);
    s.negative_share = static_cast<float>(negative) / static_cast<float>(s.edges);
  }
  return s;
}

}  // namespace cab
