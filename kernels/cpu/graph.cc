// The block graph of one head on the CPU (SPEC 2): argument checks, then scores -> affinity ->
// r-nearest graph -> curvature. Memory is O(M^2) per head (S, A, adjacency, curvature, bitsets);
// nothing here ever sees tokens.
#include <string>

#include "absl/strings/str_cat.h"
#include "affinity_scores.h"
#include "cab/graph.h"
#include "coarsen_check.h"
#include "curvature_edges.h"
#include "graph_nearest.h"

namespace cab {
namespace {

// A head's graph holds about 13 M^2 bytes; past this many blocks one head would need gigabytes,
// so the request is refused rather than left to fail allocating.
constexpr int kMaxGraphBlocks = 16384;

absl::Status CheckGraphSize(const CoarseBlocks& c, const char* what) {
  if (c.blocks > kMaxGraphBlocks) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", c.blocks, " blocks exceed the ", kMaxGraphBlocks,
                                                   " a block graph supports; use a larger block_size"));
  }
  return absl::OkStatus();
}

absl::Status CheckEnums(Coarsening query_coarsening, const GraphParams& p) {
  if (query_coarsening != Coarsening::kMaxL2 && query_coarsening != Coarsening::kMean) {
    return absl::InvalidArgumentError(
        absl::StrCat("query_coarsening: unknown value ", static_cast<int>(query_coarsening)));
  }
  if (p.estimator != Estimator::kMaxL2 && p.estimator != Estimator::kMean && p.estimator != Estimator::kQuest) {
    return absl::InvalidArgumentError(absl::StrCat("estimator: unknown value ", static_cast<int>(p.estimator)));
  }
  if (p.curvature != CurvatureKind::kBalanced && p.curvature != CurvatureKind::kForman &&
      p.curvature != CurvatureKind::kDirectRedundancy) {
    return absl::InvalidArgumentError(absl::StrCat("curvature: unknown value ", static_cast<int>(p.curvature)));
  }
  return p.Validate();
}

absl::Status CheckIndex(int value, int limit, const char* what, const char* limit_name) {
  if (value < 0 || value >= limit) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", value, " is outside [0, ", limit, ") (", limit_name, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckQueryKey(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h, Coarsening qc,
                           const GraphParams& p) {
  if (auto s = CheckCoarse(q, "q"); !s.ok()) return s;
  if (auto s = CheckCoarse(k, "k"); !s.ok()) return s;
  auto differs = [](const char* field, int64_t kv, int64_t qv) {
    return absl::InvalidArgumentError(absl::StrCat("k: ", field, " ", kv, " differs from q's ", qv));
  };
  if (k.batch != q.batch) return differs("batch", k.batch, q.batch);
  if (k.dim != q.dim) return differs("dim", k.dim, q.dim);
  if (k.block_size != q.block_size) return differs("block_size", k.block_size, q.block_size);
  if (k.blocks != q.blocks) return differs("blocks", k.blocks, q.blocks);
  if (auto s = CheckGraphSize(q, "q"); !s.ok()) return s;
  if (q.heads % k.heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("q: heads ", q.heads, " is not a multiple of k's heads ", k.heads, " (GQA)"));
  }
  if (auto s = CheckIndex(b, q.batch, "b", "batch"); !s.ok()) return s;
  if (auto s = CheckIndex(h, q.heads, "h", "query heads"); !s.ok()) return s;
  if (auto s = CheckEnums(qc, p); !s.ok()) return s;
  if (p.estimator == Estimator::kQuest && !k.has_bounds) {
    return absl::InvalidArgumentError(
        "k: the quest estimator needs channel min/max of each key block (kmin/kmax), and these keys were sent as "
        "representatives without them");
  }
  return absl::OkStatus();
}

// S and A of query head h against its kv head, after CheckQueryKey.
HeadGraph Affinity(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h, Coarsening qc, const GraphParams& p) {
  HeadGraph g;
  const int M = q.blocks, D = q.dim;
  const int kh = h / (q.heads / k.heads);
  g.blocks = M;
  g.score.resize(static_cast<size_t>(M) * M);
  g.affinity.resize(static_cast<size_t>(M) * M);
  const float* qrep = q.Rep(qc, b, h, 0);
  const size_t koff = k.Offset(b, kh, 0);
  switch (p.estimator) {
    case Estimator::kMaxL2:
      DotScores(qrep, k.maxl2.data() + koff, M, D, p.causal, g.score.data());
      break;
    case Estimator::kMean:
      DotScores(qrep, k.mean.data() + koff, M, D, p.causal, g.score.data());
      break;
    case Estimator::kQuest:
      QuestScores(qrep, k.kmin.data() + koff, k.kmax.data() + koff, M, D, p.causal, g.score.data());
      break;
  }
  RowSoftmax(g.score.data(), M, p.causal, g.affinity.data());
  return g;
}

void FinishGraph(const GraphParams& p, HeadGraph* g) {
  BuildNearestGraph(p.degree, p.causal, g);
  ComputeCurvature(p, g);
}

}  // namespace

absl::StatusOr<HeadGraph> BuildHeadAffinityCpu(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h,
                                               Coarsening query_coarsening, const GraphParams& p) {
  if (auto s = CheckQueryKey(q, k, b, h, query_coarsening, p); !s.ok()) return s;
  return Affinity(q, k, b, h, query_coarsening, p);
}

absl::StatusOr<HeadGraph> BuildHeadGraphCpu(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h,
                                            Coarsening query_coarsening, const GraphParams& p) {
  if (auto s = CheckQueryKey(q, k, b, h, query_coarsening, p); !s.ok()) return s;
  HeadGraph g = Affinity(q, k, b, h, query_coarsening, p);
  FinishGraph(p, &g);
  return g;
}

absl::StatusOr<HeadGraph> BuildKeyGraphCpu(const CoarseBlocks& k, int b, int h, const GraphParams& p) {
  if (auto s = CheckCoarse(k, "k"); !s.ok()) return s;
  if (auto s = CheckGraphSize(k, "k"); !s.ok()) return s;
  if (auto s = CheckIndex(b, k.batch, "b", "batch"); !s.ok()) return s;
  if (auto s = CheckIndex(h, k.heads, "h", "kv heads"); !s.ok()) return s;
  if (auto s = CheckEnums(Coarsening::kMaxL2, p); !s.ok()) return s;
  HeadGraph g;
  const int M = k.blocks, D = k.dim;
  g.blocks = M;
  g.score.resize(static_cast<size_t>(M) * M);
  g.affinity.resize(static_cast<size_t>(M) * M);
  // Key-key similarity always on max-L2 representatives (p.estimator is not used): the
  // representatives are the keys most likely to be attended to.
  const float* kc = k.maxl2.data() + k.Offset(b, h, 0);
  DotScores(kc, kc, M, D, p.causal, g.score.data());
  RowSoftmax(g.score.data(), M, p.causal, g.affinity.data());
  FinishGraph(p, &g);
  return g;
}

}  // namespace cab
