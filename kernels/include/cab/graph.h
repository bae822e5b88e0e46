// The block graph of one (batch, query head): affinity, r-nearest graph, curvature (SPEC 2).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/coarse.h"
#include "cab/params.h"

namespace cab {

struct HeadGraph {
  int blocks = 0;                 // M
  // M x M row-major. score: S (estimator), -inf outside the support; affinity: row softmax of S
  // over the support (0 outside).
  std::vector<float> score;
  std::vector<float> affinity;
  // Undirected, unweighted adjacency as M x M bytes (1 = edge; symmetric; zero diagonal).
  std::vector<uint8_t> adjacency;
  std::vector<int32_t> degree;    // M
  // M x M: curvature of edge (i, j) (symmetric), NaN where (i, j) is not an edge.
  std::vector<float> curvature;

  bool IsEdge(int i, int j) const { return adjacency[static_cast<size_t>(i) * blocks + j] != 0; }
  float A(int i, int j) const { return affinity[static_cast<size_t>(i) * blocks + j]; }
  float F(int i, int j) const { return curvature[static_cast<size_t>(i) * blocks + j]; }
};

// Builds the graph of query head h of batch b. GQA: key head = h / (q.heads / k.heads).
// The query representative is q's `query_coarsening` vector; keys use the estimator's features.
absl::StatusOr<HeadGraph> BuildHeadGraphCpu(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h,
                                            Coarsening query_coarsening, const GraphParams& p);

// Only S and A of the head (adjacency, degree and curvature left empty): what magnitude needs.
absl::StatusOr<HeadGraph> BuildHeadAffinityCpu(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h,
                                               Coarsening query_coarsening, const GraphParams& p);

// Graph over key blocks alone (eviction without queries): S = Kc Kc^T / sqrt(D) on max-L2 keys.
absl::StatusOr<HeadGraph> BuildKeyGraphCpu(const CoarseBlocks& k, int b, int h, const GraphParams& p);

// Per-head curvature statistics over the graph's edges.
struct CurvatureStats {
  float min = 0, mean = 0, max = 0;
  float negative_share = 0;  // share of edges with F < 0
  int64_t edges = 0;
};
CurvatureStats SummarizeCurvature(const HeadGraph& g);

}  // namespace cab
