// SPEC 2: scores, affinity, r-nearest graph and curvature of one head against the naive
// references, ties, the two-cluster bridge toy, the key graph, and every bad-input path.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "cab/coarse.h"
#include "cab/graph.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cab {
namespace {

using test::NaiveCoarse;
using test::OwnedTensor;
using test::RandomTensor;

constexpr double kTieTolerance = 1e-6;  // A values closer than this may legitimately order either way

struct Case {
  int B, Hq, Hkv;
  int64_t N;
  int D, block;
  DType dtype;
};

std::string Describe(const Case& c) {
  return "B=" + std::to_string(c.B) + " Hq=" + std::to_string(c.Hq) + " Hkv=" + std::to_string(c.Hkv) +
         " N=" + std::to_string(c.N) + " D=" + std::to_string(c.D) + " block=" + std::to_string(c.block) + " " +
         DTypeName(c.dtype);
}

const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      {1, 1, 1, 640, 16, 16, DType::kF32},   // M = 40
      {2, 4, 2, 300, 8, 8, DType::kF16},     // GQA, batch 2, partial last block (M = 38)
      {1, 3, 1, 10, 4, 16, DType::kBF16},    // N smaller than one block (M = 1)
      {1, 2, 2, 333, 32, 4, DType::kBF16},   // M = 84 > 64: bitsets of two words
  };
  return cases;
}

struct Naive {
  std::vector<double> score, affinity;
};

// The naive S and A of query head h of batch b, from the naive coarsening.
Naive NaiveHead(const NaiveCoarse& q, const NaiveCoarse& k, int b, int h, Coarsening qc, const GraphParams& p) {
  const int kh = h / (q.heads / k.heads);
  const std::vector<double> qrep = test::HeadSlice(qc == Coarsening::kMaxL2 ? q.maxl2 : q.mean, q, b, h);
  Naive n;
  const int M = q.blocks, D = q.dim;
  switch (p.estimator) {
    case Estimator::kMaxL2:
      n.score = test::NaiveDotScores(qrep, test::HeadSlice(k.maxl2, k, b, kh), M, D, p.causal);
      break;
    case Estimator::kMean:
      n.score = test::NaiveDotScores(qrep, test::HeadSlice(k.mean, k, b, kh), M, D, p.causal);
      break;
    case Estimator::kQuest:
      n.score = test::NaiveQuestScores(qrep, test::HeadSlice(k.kmin, k, b, kh), test::HeadSlice(k.kmax, k, b, kh), M,
                                       D, p.causal);
      break;
  }
  n.affinity = test::NaiveSoftmax(n.score, M, p.causal);
  return n;
}

void ExpectScoresMatch(const HeadGraph& g, const Naive& n, const std::string& what) {
  const size_t MM = static_cast<size_t>(g.blocks) * g.blocks;
  ASSERT_EQ(g.score.size(), MM) << what;
  ASSERT_EQ(g.affinity.size(), MM) << what;
  for (size_t i = 0; i < MM; ++i) {
    if (std::isinf(n.score[i])) {
      ASSERT_TRUE(std::isinf(g.score[i]) && g.score[i] < 0) << what << " score outside the support at " << i;
      ASSERT_EQ(g.affinity[i], 0.f) << what << " affinity outside the support at " << i;
    } else {
      ASSERT_NEAR(g.score[i], n.score[i], 1e-4 * (1 + std::fabs(n.score[i]))) << what << " score at " << i;
      ASSERT_NEAR(g.affinity[i], n.affinity[i], 1e-5) << what << " affinity at " << i;
    }
  }
}

// Adjacency against the naive r-nearest graph, curvature against the naive formula evaluated on
// the graph under test (so one near-tie does not cascade into every curvature).
void ExpectGraphMatches(const HeadGraph& g, const std::vector<double>& affinity, const GraphParams& p,
                        const std::string& what) {
  const int M = g.blocks;
  const size_t MM = static_cast<size_t>(M) * M;
  ASSERT_EQ(g.adjacency.size(), MM) << what;
  ASSERT_EQ(g.degree.size(), static_cast<size_t>(M)) << what;
  ASSERT_EQ(g.curvature.size(), MM) << what;
  const test::NaiveGraphResult n = test::NaiveGraph(affinity, M, p.degree, p.causal, kTieTolerance);
  int ambiguous = 0;
  for (int i = 0; i < M; ++i) ambiguous += n.ambiguous[i];
  EXPECT_LE(ambiguous, M / 4) << what << ": too many near-ties to compare the graph";
  std::vector<int> adj(MM);
  for (int i = 0; i < M; ++i) {
    int degree = 0;
    for (int j = 0; j < M; ++j) {
      const size_t ij = static_cast<size_t>(i) * M + j;
      adj[ij] = g.adjacency[ij];
      degree += adj[ij];
      ASSERT_EQ(g.adjacency[ij], g.adjacency[static_cast<size_t>(j) * M + i]) << what << " symmetric at " << i << "," << j;
      if (!n.ambiguous[i] && !n.ambiguous[j]) {
        ASSERT_EQ(adj[ij], n.adjacency[ij]) << what << " edge " << i << "," << j;
      }
    }
    ASSERT_EQ(g.adjacency[static_cast<size_t>(i) * M + i], 0) << what << " self loop at " << i;
    ASSERT_EQ(g.degree[i], degree) << what << " degree of " << i;
    const int candidates = p.causal ? i : M - 1;
    ASSERT_GE(degree, std::min(p.degree, candidates)) << what << " row " << i << " picked too few";
  }
  const std::vector<int64_t> tri = test::NaiveTriangles(adj, M);
  const std::vector<double> f = test::NaiveCurvature(adj, tri, affinity, M, p.curvature, p.lambda);
  for (size_t ij = 0; ij < MM; ++ij) {
    if (std::isnan(f[ij])) {
      ASSERT_TRUE(std::isnan(g.curvature[ij])) << what << " curvature on a non-edge at " << ij;
    } else {
      ASSERT_NEAR(g.curvature[ij], f[ij], 1e-4 * (1 + std::fabs(f[ij]))) << what << " curvature at " << ij;
    }
  }
}

struct Inputs {
  OwnedTensor qx, kx;
  CoarseBlocks q, k;
  NaiveCoarse nq, nk;
};

Inputs MakeInputs(const Case& c, uint64_t seed) {
  Inputs in;
  in.qx = RandomTensor({c.B, c.Hq, c.N, c.D}, c.dtype, seed);
  in.kx = RandomTensor({c.B, c.Hkv, c.N, c.D}, c.dtype, seed + 1000);
  in.q = *CoarsenCpu(in.qx.view(), c.block);
  in.k = *CoarsenCpu(in.kx.view(), c.block);
  in.nq = test::NaiveCoarsen(in.qx.values, c.B, c.Hq, c.N, c.D, c.block);
  in.nk = test::NaiveCoarsen(in.kx.values, c.B, c.Hkv, c.N, c.D, c.block);
  return in;
}

void ExpectInvalid(const absl::Status& s, const std::string& prefix) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StartsWith(s.message(), prefix)) << "message '" << s.message() << "' should start with '"
                                                     << prefix << "'";
}

TEST(Graph, EveryEstimatorFormulaAndMaskMatchesNaive) {
  uint64_t seed = 1;
  for (const Case& c : Cases()) {
    const Inputs in = MakeInputs(c, seed++);
    for (Estimator est : {Estimator::kMaxL2, Estimator::kMean, Estimator::kQuest}) {
      for (Coarsening qc : {Coarsening::kMaxL2, Coarsening::kMean}) {
        for (bool causal : {true, false}) {
          for (CurvatureKind kind : {CurvatureKind::kBalanced, CurvatureKind::kForman, CurvatureKind::kDirectRedundancy}) {
            GraphParams p;
            p.estimator = est;
            p.causal = causal;
            p.curvature = kind;
            p.degree = 5;
            p.lambda = 0.5f;
            for (int b = 0; b < c.B; ++b) {
              for (int h = 0; h < c.Hq; ++h) {
                const std::string what = Describe(c) + " estimator=" + Name(est) + " query=" + Name(qc) +
                                         (causal ? " causal" : " full") + " curvature=" + Name(kind) +
                                         " b=" + std::to_string(b) + " h=" + std::to_string(h);
                auto g = BuildHeadGraphCpu(in.q, in.k, b, h, qc, p);
                ASSERT_TRUE(g.ok()) << what << ": " << g.status();
                ASSERT_EQ(g->blocks, in.q.blocks);
                const Naive n = NaiveHead(in.nq, in.nk, b, h, qc, p);
                ExpectScoresMatch(*g, n, what);
                ExpectGraphMatches(*g, n.affinity, p, what);
              }
            }
          }
        }
      }
    }
  }
}

TEST(Graph, AffinityRowsSumToOneOverTheSupport) {
  const Inputs in = MakeInputs(Cases()[1], 42);
  for (bool causal : {true, false}) {
    GraphParams p;
    p.causal = causal;
    auto g = BuildHeadAffinityCpu(in.q, in.k, 1, 3, Coarsening::kMaxL2, p);
    ASSERT_TRUE(g.ok()) << g.status();
    const int M = g->blocks;
    for (int i = 0; i < M; ++i) {
      double sum = 0;
      for (int j = 0; j < M; ++j) {
        EXPECT_GE(g->A(i, j), 0.f);
        if (causal && j > i) {
          EXPECT_EQ(g->A(i, j), 0.f);
        }
        sum += g->A(i, j);
      }
      EXPECT_NEAR(sum, 1.0, 1e-5) << "row " << i;
    }
  }
}

TEST(Graph, AffinityOnlyEqualsTheFullGraphsScores) {
  const Inputs in = MakeInputs(Cases()[0], 43);
  GraphParams p;
  p.estimator = Estimator::kQuest;
  auto a = BuildHeadAffinityCpu(in.q, in.k, 0, 0, Coarsening::kMean, p);
  auto g = BuildHeadGraphCpu(in.q, in.k, 0, 0, Coarsening::kMean, p);
  ASSERT_TRUE(a.ok() && g.ok());
  EXPECT_EQ(a->blocks, g->blocks);
  EXPECT_EQ(a->score, g->score);
  EXPECT_EQ(a->affinity, g->affinity);
  EXPECT_TRUE(a->adjacency.empty());
  EXPECT_TRUE(a->degree.empty());
  EXPECT_TRUE(a->curvature.empty());
}

// Keys sent as representatives with their bounds give the same graph as keys coarsened here.
TEST(Graph, RepresentativesWithBoundsGiveTheSameGraph) {
  const Case c = Cases()[1];
  const Inputs in = MakeInputs(c, 21);
  const std::vector<int64_t> shape = {c.B, c.Hkv, in.k.blocks, c.D};
  const OwnedTensor reps = test::FromValues(shape, DType::kF32, std::vector<double>(in.k.maxl2.begin(), in.k.maxl2.end()));
  const OwnedTensor lo = test::FromValues(shape, DType::kF32, std::vector<double>(in.k.kmin.begin(), in.k.kmin.end()));
  const OwnedTensor hi = test::FromValues(shape, DType::kF32, std::vector<double>(in.k.kmax.begin(), in.k.kmax.end()));
  const TensorView lo_view = lo.view(), hi_view = hi.view();
  auto sent = CoarseFromRepresentatives(reps.view(), &lo_view, &hi_view, c.block, c.N);
  ASSERT_TRUE(sent.ok()) << sent.status();
  for (Estimator est : {Estimator::kMaxL2, Estimator::kQuest}) {
    GraphParams p;
    p.estimator = est;
    p.degree = 4;
    auto a = BuildHeadGraphCpu(in.q, in.k, 1, 3, Coarsening::kMaxL2, p);
    auto b = BuildHeadGraphCpu(in.q, *sent, 1, 3, Coarsening::kMaxL2, p);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->score, b->score) << Name(est);
    EXPECT_EQ(a->adjacency, b->adjacency) << Name(est);
  }
}

// Representatives of one head, [1, 1, M, D], as coarse state.
CoarseBlocks FromReps(const std::vector<double>& reps, int M, int D) {
  const OwnedTensor t = test::FromValues({1, 1, M, D}, DType::kF32, reps);
  return *CoarseFromRepresentatives(t.view(), nullptr, nullptr, 1, M);
}

TEST(Graph, TiesGoToTheLowerBlock) {
  // Every query and key block identical: all scores in a row tie.
  const int M = 7, D = 2;
  std::vector<double> reps;
  for (int m = 0; m < M; ++m) reps.insert(reps.end(), {1.0, 0.5});
  const CoarseBlocks c = FromReps(reps, M, D);
  for (bool causal : {true, false}) {
    GraphParams p;
    p.causal = causal;
    p.degree = 2;
    auto g = BuildHeadGraphCpu(c, c, 0, 0, Coarsening::kMaxL2, p);
    ASSERT_TRUE(g.ok()) << g.status();
    std::vector<double> a(g->affinity.begin(), g->affinity.end());
    const test::NaiveGraphResult n = test::NaiveGraph(a, M, 2, causal);
    for (int i = 0; i < M; ++i) {
      for (int j = 0; j < M; ++j) {
        EXPECT_EQ(g->IsEdge(i, j), n.adjacency[static_cast<size_t>(i) * M + j] == 1) << i << "," << j;
      }
    }
    // Every row links to the two lowest other blocks, so 5 and 6 never meet and 0 meets everyone.
    EXPECT_TRUE(g->IsEdge(6, 0) && g->IsEdge(6, 1));
    EXPECT_FALSE(g->IsEdge(5, 6));
    EXPECT_EQ(g->degree[0], M - 1);
  }
}

// Two clusters of six blocks; cluster members attend only to their own cluster, and block 0's
// query also matches block 6's key: exactly one edge (0, 6) crosses.
TEST(Graph, BridgeBetweenDenseClustersHasTheMostNegativeCurvature) {
  const int M = 12, D = 4;
  std::vector<double> q, k;
  for (int m = 0; m < M; ++m) {
    const bool first = m < 6;
    std::vector<double> qm = {first ? 2.0 : 0.0, first ? 0.0 : 2.0, 0, 0};
    std::vector<double> km = {first ? 1.0 : 0.0, first ? 0.0 : 1.0, 0, 0};
    if (m == 0) qm[2] = 4;  // block 0 looks for ...
    if (m == 6) km[2] = 1;  // ... block 6
    q.insert(q.end(), qm.begin(), qm.end());
    k.insert(k.end(), km.begin(), km.end());
  }
  const CoarseBlocks qc = FromReps(q, M, D), kc = FromReps(k, M, D);
  for (CurvatureKind kind : {CurvatureKind::kBalanced, CurvatureKind::kForman}) {
    GraphParams p;
    p.causal = false;
    p.degree = 5;
    p.curvature = kind;
    auto g = BuildHeadGraphCpu(qc, kc, 0, 0, Coarsening::kMaxL2, p);
    ASSERT_TRUE(g.ok()) << g.status();
    int crossing = 0;
    float min_f = std::numeric_limits<float>::infinity();
    int min_i = -1, min_j = -1;
    for (int i = 0; i < M; ++i) {
      for (int j = i + 1; j < M; ++j) {
        if (!g->IsEdge(i, j)) continue;
        crossing += (i < 6) != (j < 6);
        if (g->F(i, j) < min_f) {
          min_f = g->F(i, j);
          min_i = i;
          min_j = j;
        }
      }
    }
    EXPECT_EQ(crossing, 1) << Name(kind);
    EXPECT_TRUE(g->IsEdge(0, 6)) << Name(kind);
    EXPECT_EQ(min_i, 0) << Name(kind);
    EXPECT_EQ(min_j, 6) << Name(kind);
    EXPECT_LT(min_f, 0.f) << Name(kind);
    if (kind == CurvatureKind::kBalanced) {
      EXPECT_NEAR(min_f, 2.f / 6 + 2.f / 6 - 2, 1e-6);  // no shared neighbour
      EXPECT_NEAR(g->F(1, 2), 2.f / 5 + 2.f / 5 - 2 + 2.f * 4 / 5 + 4.f / 5, 1e-6);  // inside a clique
    }
    const CurvatureStats s = SummarizeCurvature(*g);
    EXPECT_EQ(s.edges, 2 * 15 + 1);
    EXPECT_FLOAT_EQ(s.min, min_f);
  }
}

TEST(Graph, KeyGraphMatchesNaive) {
  const Case c = Cases()[1];
  const Inputs in = MakeInputs(c, 77);
  for (bool causal : {true, false}) {
    GraphParams p;
    p.causal = causal;
    p.degree = 4;
    p.estimator = Estimator::kQuest;  // ignored: the key graph always uses max-L2 keys
    for (int b = 0; b < c.B; ++b) {
      for (int h = 0; h < c.Hkv; ++h) {
        const std::string what = "key graph b=" + std::to_string(b) + " h=" + std::to_string(h) +
                                 (causal ? " causal" : " full");
        auto g = BuildKeyGraphCpu(in.k, b, h, p);
        ASSERT_TRUE(g.ok()) << g.status();
        const std::vector<double> kc = test::HeadSlice(in.nk.maxl2, in.nk, b, h);
        Naive n;
        n.score = test::NaiveDotScores(kc, kc, in.nk.blocks, in.nk.dim, causal);
        n.affinity = test::NaiveSoftmax(n.score, in.nk.blocks, causal);
        ExpectScoresMatch(*g, n, what);
        ExpectGraphMatches(*g, n.affinity, p, what);
      }
    }
  }
}

TEST(Graph, SummarizeCurvatureMatchesNaive) {
  const Inputs in = MakeInputs(Cases()[0], 5);
  for (CurvatureKind kind : {CurvatureKind::kBalanced, CurvatureKind::kForman, CurvatureKind::kDirectRedundancy}) {
    GraphParams p;
    p.curvature = kind;
    p.degree = 3;
    auto g = BuildHeadGraphCpu(in.q, in.k, 0, 0, Coarsening::kMaxL2, p);
    ASSERT_TRUE(g.ok());
    double sum = 0, mn = 1e30, mx = -1e30;
    int64_t edges = 0, negative = 0;
    for (int i = 0; i < g->blocks; ++i) {
      for (int j = 0; j < i; ++j) {
        if (!g->IsEdge(i, j)) continue;
        const double f = g->F(i, j);
        ++edges;
        sum += f;
        negative += f < 0;
        mn = std::min(mn, f);
        mx = std::max(mx, f);
      }
    }
    const CurvatureStats s = SummarizeCurvature(*g);
    ASSERT_GT(edges, 0);
    EXPECT_EQ(s.edges, edges) << Name(kind);
    EXPECT_FLOAT_EQ(s.min, mn) << Name(kind);
    EXPECT_FLOAT_EQ(s.max, mx) << Name(kind);
    EXPECT_NEAR(s.mean, sum / edges, 1e-5 * (1 + std::fabs(sum / edges))) << Name(kind);
    EXPECT_FLOAT_EQ(s.negative_share, static_cast<float>(negative) / edges) << Name(kind);
  }
  const CurvatureStats empty = SummarizeCurvature(HeadGraph{});
  EXPECT_EQ(empty.edges, 0);
}

TEST(Graph, BadInputs) {
  const Inputs in = MakeInputs({2, 4, 2, 64, 8, 16, DType::kF32}, 9);  // M = 4
  const GraphParams p;
  const Coarsening qc = Coarsening::kMaxL2;
  ASSERT_TRUE(BuildHeadGraphCpu(in.q, in.k, 1, 3, qc, p).ok());

  ExpectInvalid(BuildHeadGraphCpu(in.q, in.k, 2, 0, qc, p).status(), "b");
  ExpectInvalid(BuildHeadGraphCpu(in.q, in.k, -1, 0, qc, p).status(), "b");
  ExpectInvalid(BuildHeadGraphCpu(in.q, in.k, 0, 4, qc, p).status(), "h");
  ExpectInvalid(BuildHeadAffinityCpu(in.q, in.k, 0, -1, qc, p).status(), "h");

  auto other = [&](int B, int H, int64_t N, int D, int block) {
    return *CoarsenCpu(RandomTensor({B, H, N, D}, DType::kF32, 3).view(), block);
  };
  ExpectInvalid(BuildHeadGraphCpu(in.q, other(1, 2, 64, 8, 16), 0, 0, qc, p).status(), "k: batch");
  ExpectInvalid(BuildHeadGraphCpu(in.q, other(2, 2, 64, 4, 16), 0, 0, qc, p).status(), "k: dim");
  ExpectInvalid(BuildHeadGraphCpu(in.q, other(2, 2, 64, 8, 32), 0, 0, qc, p).status(), "k: block_size");
  ExpectInvalid(BuildHeadGraphCpu(in.q, other(2, 2, 80, 8, 16), 0, 0, qc, p).status(), "k: blocks");
  ExpectInvalid(BuildHeadGraphCpu(in.q, other(2, 3, 64, 8, 16), 0, 0, qc, p).status(), "q: heads");
  ExpectInvalid(BuildHeadGraphCpu(CoarseBlocks{}, in.k, 0, 0, qc, p).status(), "q");
  ExpectInvalid(BuildHeadGraphCpu(in.q, CoarseBlocks{}, 0, 0, qc, p).status(), "k");
  CoarseBlocks broken = in.k;
  broken.kmax.resize(3);
  ExpectInvalid(BuildHeadGraphCpu(in.q, broken, 0, 0, qc, p).status(), "k");

  GraphParams bad = p;
  bad.degree = 0;
  ExpectInvalid(BuildHeadGraphCpu(in.q, in.k, 0, 0, qc, bad).status(), "graph_degree");
  bad = p;
  bad.lambda = -1;
  ExpectInvalid(BuildHeadGraphCpu(in.q, in.k, 0, 0, qc, bad).status(), "lambda");
  bad = p;
  bad.estimator = static_cast<Estimator>(9);
  ExpectInvalid(BuildHeadGraphCpu(in.q, in.k, 0, 0, qc, bad).status(), "estimator");
  bad = p;
  bad.curvature = static_cast<CurvatureKind>(9);
  ExpectInvalid(BuildHeadGraphCpu(in.q, in.k, 0, 0, qc, bad).status(), "curvature");
  ExpectInvalid(BuildHeadGraphCpu(in.q, in.k, 0, 0, static_cast<Coarsening>(5), p).status(), "query_coarsening");

  // Quest needs real channel bounds; keys sent as bare representatives lack them.
  const OwnedTensor reps = RandomTensor({2, 2, 4, 8}, DType::kF32, 4);
  const CoarseBlocks bare = *CoarseFromRepresentatives(reps.view(), nullptr, nullptr, 16, 64);
  GraphParams quest = p;
  quest.estimator = Estimator::kQuest;
  ExpectInvalid(BuildHeadGraphCpu(in.q, bare, 0, 0, qc, quest).status(), "k: the quest estimator");
  ExpectInvalid(BuildHeadAffinityCpu(in.q, bare, 0, 0, qc, quest).status(), "k: the quest estimator");
  EXPECT_TRUE(BuildHeadGraphCpu(in.q, bare, 0, 0, qc, p).ok());

  // Too many blocks for an M x M graph: refused before anything is allocated.
  const OwnedTensor one = RandomTensor({1, 1, 16385, 1}, DType::kBF16, 12);
  const CoarseBlocks huge = *CoarsenCpu(one.view(), 1);
  ExpectInvalid(BuildHeadGraphCpu(huge, huge, 0, 0, qc, p).status(), "q: 16385 blocks");
  ExpectInvalid(BuildKeyGraphCpu(huge, 0, 0, p).status(), "k: 16385 blocks");

  ExpectInvalid(BuildKeyGraphCpu(in.k, 0, 2, p).status(), "h");  // kv heads, not query heads
  ExpectInvalid(BuildKeyGraphCpu(in.k, 2, 0, p).status(), "b");
  ExpectInvalid(BuildKeyGraphCpu(CoarseBlocks{}, 0, 0, p).status(), "k");
  bad = p;
  bad.degree = -2;
  ExpectInvalid(BuildKeyGraphCpu(in.k, 0, 0, bad).status(), "graph_degree");
}

}  // namespace
}  // namespace cab
