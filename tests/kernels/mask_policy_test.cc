// Every mask policy (SPEC 3) against an independent naive selection written here with plain loops
// (repeated arg-max / arg-min, no sorting), on the head graphs the backend builds; plus the
// properties every policy must keep: causality, exact budgets, the diagonal, determinism, row
// ranges, GQA mapping, partial blocks and N smaller than one block.
#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "cab/backend.h"
#include "gtest/gtest.h"
#include "policy_test_util.h"

namespace cab {
namespace {

using test::CoarsePair;
using test::MaskRow;
using test::RandomCoarsePair;

// ---- naive selections -------------------------------------------------------------------------

struct NaiveRow {
  const MaskParams& p;
  const HeadGraph& g;  // for the policies that read it
  int row;
  int n() const { return p.graph.causal ? row + 1 : g.blocks; }
  int budget() const { return std::min(RowBudget(p, row), n()); }
};

bool Has(const std::vector<int>& v, int j) { return std::find(v.begin(), v.end(), j) != v.end(); }

// Candidate of highest S not in `sel` (lower j on ties); -1 when none is left.
int BestByScore(const NaiveRow& r, const std::vector<int>& sel) {
  int best = -1;
  for (int j = 0; j < r.n(); ++j) {
    if (Has(sel, j)) continue;
    if (best < 0 || r.g.score[r.row * r.g.blocks + j] > r.g.score[r.row * r.g.blocks + best]) best = j;
  }
  return best;
}

std::vector<int> Sorted(std::vector<int> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<int> NaiveTopScore(const NaiveRow& r) {
  std::vector<int> sel = {r.row};
  while (static_cast<int>(sel.size()) < r.budget()) sel.push_back(BestByScore(r, sel));
  return Sorted(sel);
}

std::vector<int> NaiveCab(const NaiveRow& r) {
  const int k = r.budget();
  std::vector<int> sel = {r.row};
  const int local = std::max(1, std::min(k, static_cast<int>(std::lround(static_cast<double>(r.p.local_ratio) * k))));
  std::vector<int> local_order;
  for (int j = 0; j < r.p.sink_blocks; ++j) local_order.push_back(j);
  for (int d = 1; d <= r.p.local_blocks; ++d) local_order.push_back(r.row - d);
  for (int j : local_order) {
    if (static_cast<int>(sel.size()) < local && j >= 0 && j < r.n() && !Has(sel, j)) sel.push_back(j);
  }
  const int bridges = std::min(static_cast<int>(std::lround(static_cast<double>(r.p.bridge_ratio) * k)),
                               k - static_cast<int>(sel.size()));
  for (int t = 0; t < bridges; ++t) {
    int best = -1;
    for (int j = 0; j < r.n(); ++j) {
      if (Has(sel, j) || !r.g.IsEdge(r.row, j)) continue;
      if (best < 0 || r.g.F(r.row, j) < r.g.F(r.row, best)) best = j;
    }
    if (best < 0) break;
    sel.push_back(best);
  }
  while (static_cast<int>(sel.size()) < k) sel.push_back(BestByScore(r, sel));
  return Sorted(sel);
}

std::vector<int> NaiveStreaming(const NaiveRow& r) {
  std::vector<int> order = {r.row};
  for (int j = 0; j < r.p.sink_blocks; ++j) order.push_back(j);
  for (int j = r.row - 1; j >= 0; --j) order.push_back(j);
  for (int j = r.row + 1; j < r.n(); ++j) order.push_back(j);
  std::vector<int> sel;
  for (int j : order) {
    if (static_cast<int>(sel.size()) < r.budget() && j < r.n() && !Has(sel, j)) sel.push_back(j);
  }
  return Sorted(sel);
}

std::vector<int> NaiveAdaptive(const NaiveRow& r) {
  std::vector<int> sel = {r.row};
  for (int j = 0; j < std::min(r.p.sink_blocks, r.n()); ++j) {
    if (!Has(sel, j)) sel.push_back(j);
  }
  // Mass: walk candidates by descending S, adding A until tau is covered.
  std::vector<int> walked;
  double mass = 0;
  while (mass < r.p.adaptive_tau - 1e-6 && static_cast<int>(walked.size()) < r.n()) {
    const int j = BestByScore(r, walked);
    walked.push_back(j);
    mass += r.g.A(r.row, j);
    if (!Has(sel, j)) sel.push_back(j);
  }
  std::vector<double> f;
  for (int j = 0; j < r.n(); ++j) {
    if (r.g.IsEdge(r.row, j)) f.push_back(r.g.F(r.row, j));
  }
  if (f.size() >= 2) {
    double mean = 0, var = 0;
    for (double x : f) mean += x;
    mean /= f.size();
    for (double x : f) var += (x - mean) * (x - mean);
    const double threshold = mean - r.p.adaptive_z * std::sqrt(var / f.size());
    for (int j = 0; j < r.n(); ++j) {
      if (r.g.IsEdge(r.row, j) && r.g.F(r.row, j) < threshold && !Has(sel, j)) sel.push_back(j);
    }
  }
  while (static_cast<int>(sel.size()) < std::min(r.p.min_keep, r.n())) sel.push_back(BestByScore(r, sel));
  return Sorted(sel);
}

std::vector<int> NaiveDense(const NaiveRow& r) {
  std::vector<int> sel;
  for (int j = 0; j < r.n(); ++j) sel.push_back(j);
  return sel;
}

std::vector<int> Naive(const NaiveRow& r) {
  switch (r.p.policy) {
    case MaskPolicy::kCab: return NaiveCab(r);
    case MaskPolicy::kMagnitude:
    case MaskPolicy::kQuest: return NaiveTopScore(r);
    case MaskPolicy::kStreaming: return NaiveStreaming(r);
    case MaskPolicy::kDense: return NaiveDense(r);
    case MaskPolicy::kAdaptive: return NaiveAdaptive(r);
    case MaskPolicy::kRandom: break;
  }
  ADD_FAILURE() << "no naive selection for " << Name(r.p.policy);
  return {};
}

// ---- the comparison ---------------------------------------------------------------------------

struct Case {
  MaskPolicy policy;
  bool causal;
  float sparsity;
  int blocks_per_row;
  int sink_blocks, local_blocks;
  Estimator estimator;
  CurvatureKind curvature;
  int degree;
};

std::string CaseName(const Case& c) {
  return absl::StrCat(Name(c.policy), c.causal ? " causal" : " bidirectional", " s=", c.sparsity,
                      " bpr=", c.blocks_per_row, " sinks=", c.sink_blocks, " window=", c.local_blocks, " ",
                      Name(c.estimator), " ", Name(c.curvature), " r=", c.degree);
}

void ExpectMatchesNaive(Backend& backend, const CoarsePair& in, const MaskParams& p, const std::string& what) {
  auto result = backend.PredictMask(in.q, in.k, p, false);
  ASSERT_TRUE(result.ok()) << what << ": " << result.status();
  const BlockMask& mask = result->mask;
  ASSERT_TRUE(mask.Check(p.graph.causal).ok()) << what << ": " << mask.Check(p.graph.causal);
  GraphParams gp = p.graph;
  if (p.policy == MaskPolicy::kQuest) gp.estimator = Estimator::kQuest;  // quest ranks by Quest's bound
  for (int b = 0; b < in.q.batch; ++b) {
    for (int h = 0; h < in.q.heads; ++h) {
      auto g = backend.Graph(in.q, in.k, b, h, p.query_coarsening, gp);
      ASSERT_TRUE(g.ok()) << g.status();
      for (int r = 0; r < mask.rows; ++r) {
        const int row = mask.row_begin + r;
        const std::vector<int32_t> got32 = MaskRow(mask, b, h, r);
        const std::vector<int> got(got32.begin(), got32.end());
        ASSERT_EQ(got, Naive(NaiveRow{p, *g, row})) << what << " b=" << b << " h=" << h << " row=" << row;
      }
    }
  }
}

TEST(MaskPolicy, EveryPolicyMatchesNaiveSelection) {
  auto backend = MakeCpuBackend({2});
  const CoarsePair in = RandomCoarsePair(*backend, 2, 4, 2, 16 * 40 - 5, 16, 16, 7);  // M = 40, last block partial
  std::vector<Case> cases;
  for (MaskPolicy policy : {MaskPolicy::kCab, MaskPolicy::kMagnitude, MaskPolicy::kQuest, MaskPolicy::kStreaming,
                            MaskPolicy::kDense, MaskPolicy::kAdaptive}) {
    for (bool causal : {true, false}) {
      cases.push_back({policy, causal, 0.9f, 0, 1, 1, Estimator::kMaxL2, CurvatureKind::kBalanced, 6});
      cases.push_back({policy, causal, 0.5f, 0, 2, 3, Estimator::kMean, CurvatureKind::kForman, 4});
      cases.push_back({policy, causal, 0.f, 7, 0, 0, Estimator::kQuest, CurvatureKind::kDirectRedundancy, 8});
    }
  }
  for (const Case& c : cases) {
    MaskParams p;
    p.policy = c.policy;
    p.graph.causal = c.causal;
    p.graph.estimator = c.estimator;
    p.graph.curvature = c.curvature;
    p.graph.degree = c.degree;
    p.sparsity = c.sparsity;
    p.blocks_per_row = c.blocks_per_row;
    p.sink_blocks = c.sink_blocks;
    p.local_blocks = c.local_blocks;
    ExpectMatchesNaive(*backend, in, p, CaseName(c));
  }
}

TEST(MaskPolicy, CabSharesAndAdaptiveParametersMatchNaive) {
  auto backend = MakeCpuBackend({2});
  const CoarsePair in = RandomCoarsePair(*backend, 1, 2, 1, 8 * 48, 8, 8, 11);
  for (auto [local, bridge, importance] : {std::tuple{0.3f, 0.2f, 0.5f}, {0.f, 1.f, 0.f}, {0.5f, 0.5f, 0.f},
                                           {1.f, 0.f, 0.f}, {0.1f, 0.6f, 0.3f}}) {
    MaskParams p;
    p.policy = MaskPolicy::kCab;
    p.graph.degree = 5;
    p.sparsity = 0.8f;
    p.sink_blocks = 2;
    p.local_blocks = 4;
    p.local_ratio = local;
    p.bridge_ratio = bridge;
    p.importance_ratio = importance;
    ExpectMatchesNaive(*backend, in, p, absl::StrCat("cab shares ", local, "/", bridge, "/", importance));
  }
  for (auto [tau, z] : {std::pair{0.9f, 1.0f}, {0.5f, 0.f}, {1.f, 2.f}, {0.2f, -0.5f}}) {
    MaskParams p;
    p.policy = MaskPolicy::kAdaptive;
    p.graph.degree = 6;
    p.adaptive_tau = tau;
    p.adaptive_z = z;
    p.min_keep = 3;
    ExpectMatchesNaive(*backend, in, p, absl::StrCat("adaptive tau=", tau, " z=", z));
  }
}

TEST(MaskPolicy, BudgetFollowsSpecFormula) {
  // k_i = max(min_keep, ceil((1 - s) * (i + 1))); the 1e-6 slack keeps a float sparsity such as
  // 0.9f (0.89999998) from turning an exact 1.0 into 2 blocks (as params.cc documents).
  MaskParams p;
  for (float s : {0.f, 0.33f, 0.71f, 0.9f, 0.97f}) {
    for (int min_keep : {1, 3}) {
      p.sparsity = s;
      p.min_keep = min_keep;
      for (int i = 0; i < 200; ++i) {
        const int want = std::max(min_keep, static_cast<int>(std::ceil((1.0 - static_cast<double>(s)) * (i + 1) - 1e-6)));
        ASSERT_EQ(RowBudget(p, i), want) << "s=" << s << " i=" << i;
      }
    }
  }
}

// ---- properties -------------------------------------------------------------------------------

const MaskPolicy kAllPolicies[] = {MaskPolicy::kCab,   MaskPolicy::kMagnitude, MaskPolicy::kRandom,
                                   MaskPolicy::kStreaming, MaskPolicy::kQuest, MaskPolicy::kDense,
                                   MaskPolicy::kAdaptive};

TEST(MaskPolicy, CausalDiagonalAndExactBudgets) {
  auto backend = MakeCpuBackend({2});
  const CoarsePair in = RandomCoarsePair(*backend, 2, 2, 1, 32 * 30 + 3, 8, 32, 3);  // M = 31
  for (MaskPolicy policy : kAllPolicies) {
    for (bool causal : {true, false}) {
      for (float s : {0.f, 0.5f, 0.95f, 0.99f}) {
        MaskParams p;
        p.policy = policy;
        p.graph.causal = causal;
        p.graph.degree = 4;
        p.sparsity = s;
        p.sink_blocks = 2;
        auto result = backend->PredictMask(in.q, in.k, p, false);
        ASSERT_TRUE(result.ok()) << result.status();
        const BlockMask& m = result->mask;
        EXPECT_TRUE(m.Check(causal).ok()) << m.Check(causal);
        auto via_bitmap = FromBitmap(ToBitmap(m));
        auto via_flex = FromFlex(ToFlex(m));
        ASSERT_TRUE(via_bitmap.ok() && via_flex.ok());
        EXPECT_EQ(via_bitmap->col_indices, m.col_indices);
        EXPECT_EQ(via_flex->row_offsets, m.row_offsets);
        for (int b = 0; b < m.batch; ++b) {
          for (int h = 0; h < m.heads; ++h) {
            for (int r = 0; r < m.rows; ++r) {
              const auto row = MaskRow(m, b, h, r);
              const int n = causal ? r + 1 : m.cols;
              SCOPED_TRACE(absl::StrCat(Name(policy), causal ? " causal" : "", " s=", s, " row ", r));
              EXPECT_TRUE(std::binary_search(row.begin(), row.end(), r)) << "diagonal missing";
              if (causal) {
                EXPECT_LE(row.back(), r);
              }
              if (policy == MaskPolicy::kDense) {
                EXPECT_EQ(static_cast<int>(row.size()), n);
              } else if (policy != MaskPolicy::kAdaptive) {
                EXPECT_EQ(static_cast<int>(row.size()), std::min(RowBudget(p, r), n));
              }
            }
          }
        }
      }
    }
  }
}

TEST(MaskPolicy, RandomIsSeededUniformAndDeterministic) {
  auto backend = MakeCpuBackend({2});
  const CoarsePair in = RandomCoarsePair(*backend, 1, 8, 2, 4 * 64, 8, 4, 5);  // M = 64
  MaskParams p;
  p.policy = MaskPolicy::kRandom;
  p.blocks_per_row = 9;
  p.seed = 42;
  auto a = backend->PredictMask(in.q, in.k, p, false);
  auto b = MakeCpuBackend({1})->PredictMask(in.q, in.k, p, false);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->mask.col_indices, b->mask.col_indices) << "same seed, other thread count";
  p.seed = 43;
  auto c = backend->PredictMask(in.q, in.k, p, false);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->mask.col_indices, c->mask.col_indices) << "another seed gives another mask";

  // Uniformity: in row 63 every off-diagonal candidate is picked with probability 8/63. Over 8 heads
  // x 40 seeds (320 draws) each block's count has mean 40.6 and std about 5.9.
  std::vector<int> hits(64, 0);
  for (uint64_t seed = 0; seed < 40; ++seed) {
    p.seed = seed;
    p.row_begin = 63;
    auto r = backend->PredictMask(in.q, in.k, p, false);
    ASSERT_TRUE(r.ok());
    for (int32_t c : r->mask.col_indices) ++hits[c];
  }
  EXPECT_EQ(hits[63], 320);
  for (int j = 0; j < 63; ++j) {
    EXPECT_GT(hits[j], 15) << "block " << j;
    EXPECT_LT(hits[j], 70) << "block " << j;
  }
}

TEST(MaskPolicy, RowRangeIsASliceOfTheFullMask) {
  auto backend = MakeCpuBackend({2});
  const CoarsePair in = RandomCoarsePair(*backend, 1, 2, 2, 8 * 25, 8, 8, 9);
  for (MaskPolicy policy : kAllPolicies) {
    MaskParams p;
    p.policy = policy;
    p.graph.degree = 5;
    p.sparsity = 0.7f;
    auto full = backend->PredictMask(in.q, in.k, p, false);
    p.row_begin = 10;
    p.row_end = 17;
    auto part = backend->PredictMask(in.q, in.k, p, false);
    ASSERT_TRUE(full.ok() && part.ok()) << Name(policy);
    EXPECT_EQ(part->mask.row_begin, 10);
    EXPECT_EQ(part->mask.rows, 7);
    EXPECT_TRUE(part->mask.Check(true).ok()) << part->mask.Check(true);
    for (int h = 0; h < 2; ++h) {
      for (int r = 0; r < 7; ++r) {
        EXPECT_EQ(MaskRow(part->mask, 0, h, r), MaskRow(full->mask, 0, h, 10 + r)) << Name(policy) << " row " << 10 + r;
      }
    }
  }
}

TEST(MaskPolicy, GqaQueryHeadReadsItsKvHead) {
  // Hq = 6, Hkv = 2: query head h must give the same rows as a single-head request made of query
  // head h and kv head h / 3 alone.
  auto backend = MakeCpuBackend({2});
  const int64_t N = 8 * 20;
  const int D = 8;
  const test::OwnedTensor q = test::RandomTensor({1, 6, N, D}, DType::kF32, 21);
  const test::OwnedTensor k = test::RandomTensor({1, 2, N, D}, DType::kF32, 22);
  auto qc = backend->Coarsen(q.view(), 8);
  auto kc = backend->Coarsen(k.view(), 8);
  ASSERT_TRUE(qc.ok() && kc.ok());
  MaskParams p;
  p.graph.degree = 4;
  p.sparsity = 0.75f;
  auto all = backend->PredictMask(*qc, *kc, p, false);
  ASSERT_TRUE(all.ok()) << all.status();
  for (int h = 0; h < 6; ++h) {
    const std::vector<float> qh(q.values.begin() + h * N * D, q.values.begin() + (h + 1) * N * D);
    const std::vector<float> kh(k.values.begin() + (h / 3) * N * D, k.values.begin() + (h / 3 + 1) * N * D);
    const TensorView qv{qh.data(), DType::kF32, {1, 1, N, D}}, kv{kh.data(), DType::kF32, {1, 1, N, D}};
    auto q1 = backend->Coarsen(qv, 8);
    auto k1 = backend->Coarsen(kv, 8);
    ASSERT_TRUE(q1.ok() && k1.ok());
    auto one = backend->PredictMask(*q1, *k1, p, false);
    ASSERT_TRUE(one.ok());
    for (int r = 0; r < 20; ++r) EXPECT_EQ(MaskRow(all->mask, 0, h, r), MaskRow(one->mask, 0, 0, r)) << "head " << h;
  }
}

TEST(MaskPolicy, FewerTokensThanOneBlock) {
  auto backend = MakeCpuBackend({1});
  const CoarsePair in = RandomCoarsePair(*backend, 1, 2, 1, 5, 4, 64, 13);  // M = 1
  for (MaskPolicy policy : kAllPolicies) {
    MaskParams p;
    p.policy = policy;
    p.sparsity = 0.99f;
    auto r = backend->PredictMask(in.q, in.k, p, false);
    ASSERT_TRUE(r.ok()) << Name(policy) << ": " << r.status();
    EXPECT_EQ(r->mask.cols, 1);
    EXPECT_EQ(r->mask.col_indices, (std::vector<int32_t>{0, 0})) << Name(policy);
  }
}

TEST(MaskPolicy, DeterministicAcrossThreadCountsAndDtypes) {
  auto one = MakeCpuBackend({1});
  auto four = MakeCpuBackend({4});
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    // Grid values are exact in every dtype, so every dtype must give the same mask.
    const CoarsePair in = RandomCoarsePair(*one, 2, 4, 4, 16 * 24, 16, 16, 17, dtype);
    const CoarsePair ref = RandomCoarsePair(*one, 2, 4, 4, 16 * 24, 16, 16, 17, DType::kF32);
    for (MaskPolicy policy : kAllPolicies) {
      MaskParams p;
      p.policy = policy;
      p.graph.degree = 6;
      p.sparsity = 0.8f;
      auto a = one->PredictMask(in.q, in.k, p, false);
      auto b = four->PredictMask(in.q, in.k, p, false);
      auto c = four->PredictMask(ref.q, ref.k, p, false);
      ASSERT_TRUE(a.ok() && b.ok() && c.ok());
      EXPECT_EQ(a->mask.row_offsets, b->mask.row_offsets) << Name(policy);
      EXPECT_EQ(a->mask.col_indices, b->mask.col_indices) << Name(policy);
      EXPECT_EQ(a->mask.col_indices, c->mask.col_indices) << Name(policy) << " " << DTypeName(dtype) << " vs fp32";
    }
  }
}

}  // namespace
}  // namespace cab
