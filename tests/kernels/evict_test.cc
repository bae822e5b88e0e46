// KV-cache eviction (SPEC 4): every policy against a naive selection written here with plain loops,
// plus exact budgets, ascending unique indices, GQA averaging, keep >= N and seeded determinism.
#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "cab/backend.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cab {
namespace {

using test::OwnedTensor;
using test::RandomTensor;

constexpr int B = 2, Hq = 4, Hkv = 2, G = Hq / Hkv, D = 8, W = 8;
constexpr int64_t N = 200;

struct Inputs {
  OwnedTensor scores = RandomTensor({B, Hq, N}, DType::kF32, 1);
  OwnedTensor keys = RandomTensor({B, Hkv, N, D}, DType::kF32, 2);
  OwnedTensor window = RandomTensor({B, Hq, W, D}, DType::kF32, 3);
  TensorView sv = scores.view(), kv = keys.view(), wv = window.view();
  EvictInputs All() const { return EvictInputs{N, &sv, &kv, &wv, 0, 0}; }

  // Mean over the group's score rows, as float (grid values: exact).
  std::vector<double> GroupScores(int b, int h) const {
    std::vector<double> s(N, 0);
    for (int g = 0; g < G; ++g) {
      for (int64_t t = 0; t < N; ++t) s[t] += scores.values[((b * Hq) + h * G + g) * N + t] / G;
    }
    return s;
  }
  std::vector<double> KeyNorms(int b, int h) const {
    std::vector<double> s(N, 0);
    for (int64_t t = 0; t < N; ++t) {
      for (int d = 0; d < D; ++d) s[t] += std::pow(keys.values[((b * Hkv + h) * N + t) * D + d], 2);
      s[t] = std::sqrt(s[t]);
    }
    return s;
  }
};

int64_t Round(float ratio, int64_t keep) { return std::llround(static_cast<double>(ratio) * keep); }

// Adds the untaken token of largest value in [begin, end) (lower index on ties); false if none.
bool TakeBest(const std::vector<double>& value, int64_t begin, int64_t end, std::vector<int64_t>& kept) {
  int64_t best = -1;
  for (int64_t t = begin; t < end; ++t) {
    if (std::find(kept.begin(), kept.end(), t) != kept.end()) continue;
    if (best < 0 || value[t] > value[best]) best = t;
  }
  if (best < 0) return false;
  kept.push_back(best);
  return true;
}

void AddRecent(int64_t count, std::vector<int64_t>& kept) {
  for (int64_t t = N - 1, added = 0; t >= 0 && added < count; --t) {
    if (std::find(kept.begin(), kept.end(), t) == kept.end()) {
      kept.push_back(t);
      ++added;
    }
  }
}

std::vector<int64_t> Sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<int64_t> Row(const KeepIndices& k, int b, int h) {
  return std::vector<int64_t>(k.Row(b, h), k.Row(b, h) + k.per_head);
}

TEST(Evict, H2OMatchesNaive) {
  auto backend = MakeCpuBackend({2});
  Inputs in;
  for (int64_t keep : {1, 5, 20, 77, 199}) {
    EvictParams p;
    p.policy = EvictPolicy::kH2O;
    p.keep = keep;
    auto got = backend->Evict(in.All(), p);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->per_head, keep);
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < Hkv; ++h) {
        std::vector<int64_t> want;
        AddRecent(Round(p.h2o_local_ratio, keep), want);
        const auto s = in.GroupScores(b, h);
        while (static_cast<int64_t>(want.size()) < keep) TakeBest(s, 0, N, want);
        EXPECT_EQ(Row(*got, b, h), Sorted(want)) << "keep " << keep << " b " << b << " h " << h;
      }
    }
  }
}

TEST(Evict, StreamingMatchesNaive) {
  auto backend = MakeCpuBackend({2});
  for (int64_t keep : {1, 3, 4, 10, 150}) {
    for (int sinks : {0, 4, 20}) {
      EvictParams p;
      p.policy = EvictPolicy::kStreaming;
      p.keep = keep;
      p.sink_tokens = sinks;
      auto got = backend->Evict(EvictInputs{N, nullptr, nullptr, nullptr, 1, 3}, p);
      ASSERT_TRUE(got.ok()) << got.status();
      std::vector<int64_t> want;
      for (int64_t t = 0; t < std::min<int64_t>(sinks, keep); ++t) want.push_back(t);
      AddRecent(keep - static_cast<int64_t>(want.size()), want);
      for (int h = 0; h < 3; ++h) EXPECT_EQ(Row(*got, 0, h), Sorted(want)) << "keep " << keep << " sinks " << sinks;
    }
  }
}

// cab's naive: recent, then bridge blocks by most negative edge curvature of the key-block graph
// (whole blocks, tokens inside by importance), then importance.
std::vector<int64_t> NaiveCabEvict(const HeadGraph& g, const std::vector<double>& importance, const EvictParams& p) {
  const int64_t keep = p.keep;
  std::vector<int64_t> kept;
  AddRecent(Round(p.local_ratio, keep), kept);
  const int64_t bridges = std::min<int64_t>(Round(p.bridge_ratio, keep), keep - kept.size());
  const int64_t stop = kept.size() + bridges;
  std::vector<bool> used(g.blocks, false);
  while (static_cast<int64_t>(kept.size()) < stop) {
    int best = -1;
    float best_f = 0;
    for (int m = 0; m < g.blocks; ++m) {
      if (used[m]) continue;
      for (int j = 0; j < g.blocks; ++j) {
        if (g.IsEdge(m, j) && (best < 0 || g.F(m, j) < best_f || (g.F(m, j) == best_f && m < best))) {
          best = m;
          best_f = g.F(m, j);
        }
      }
    }
    if (best < 0) break;
    used[best] = true;
    const int64_t begin = static_cast<int64_t>(best) * p.block_size, end = std::min(N, begin + p.block_size);
    while (static_cast<int64_t>(kept.size()) < stop && TakeBest(importance, begin, end, kept)) {
    }
  }
  while (static_cast<int64_t>(kept.size()) < keep) TakeBest(importance, 0, N, kept);
  return Sorted(kept);
}

TEST(Evict, CabMatchesNaive) {
  auto backend = MakeCpuBackend({2});
  Inputs in;
  for (bool with_scores : {true, false}) {
    for (int64_t keep : {3, 10, 40, 120}) {
      for (int block_size : {8, 16}) {
        EvictParams p;
        p.policy = EvictPolicy::kCab;
        p.keep = keep;
        p.block_size = block_size;
        p.graph.degree = 3;
        EvictInputs ein = in.All();
        if (!with_scores) ein.scores = nullptr;
        auto got = backend->Evict(ein, p);
        ASSERT_TRUE(got.ok()) << got.status();
        auto coarse = CoarsenCpu(in.kv, block_size);
        ASSERT_TRUE(coarse.ok());
        for (int b = 0; b < B; ++b) {
          for (int h = 0; h < Hkv; ++h) {
            auto g = BuildKeyGraphCpu(*coarse, b, h, p.graph);
            ASSERT_TRUE(g.ok()) << g.status();
            const auto importance = with_scores ? in.GroupScores(b, h) : in.KeyNorms(b, h);
            EXPECT_EQ(Row(*got, b, h), NaiveCabEvict(*g, importance, p))
                << "scores " << with_scores << " keep " << keep << " block " << block_size << " b " << b << " h " << h;
          }
        }
      }
    }
  }
}

TEST(Evict, SnapKVKeepsWindowAndTopPooledVotes) {
  auto backend = MakeCpuBackend({2});
  Inputs in;
  for (int64_t keep : {4, 8, 30, 100}) {
    for (int pool : {1, 7}) {
      EvictParams p;
      p.policy = EvictPolicy::kSnapKV;
      p.keep = keep;
      p.snapkv_pool = pool;
      auto got = backend->Evict(in.All(), p);
      ASSERT_TRUE(got.ok()) << got.status();
      for (int b = 0; b < B; ++b) {
        for (int h = 0; h < Hkv; ++h) {
          const auto row = Row(*got, b, h);
          ASSERT_EQ(static_cast<int64_t>(row.size()), keep);
          ASSERT_TRUE(std::is_sorted(row.begin(), row.end()));
          const std::set<int64_t> kept(row.begin(), row.end());
          ASSERT_EQ(static_cast<int64_t>(kept.size()), keep);
          // The window's own positions (the most recent `keep` of them when the window is larger).
          for (int64_t t = N - std::min<int64_t>(W, keep); t < N; ++t) EXPECT_TRUE(kept.count(t)) << t;
          if (keep <= W) continue;
          // Naive votes in double: softmax of each window query over the prefix, summed, max-pooled.
          const int64_t prefix = N - W;
          std::vector<double> votes(prefix, 0);
          for (int g = 0; g < G; ++g) {
            for (int w = 0; w < W; ++w) {
              std::vector<double> logit(prefix);
              double mx = -1e300, sum = 0;
              for (int64_t j = 0; j < prefix; ++j) {
                double dot = 0;
                for (int d = 0; d < D; ++d) {
                  dot += in.window.values[(((b * Hq) + h * G + g) * W + w) * D + d] *
                         in.keys.values[((b * Hkv + h) * N + j) * D + d];
                }
                logit[j] = dot / std::sqrt(static_cast<double>(D));
                mx = std::max(mx, logit[j]);
              }
              for (int64_t j = 0; j < prefix; ++j) sum += std::exp(logit[j] - mx);
              for (int64_t j = 0; j < prefix; ++j) votes[j] += std::exp(logit[j] - mx) / sum;
            }
          }
          std::vector<double> pooled(prefix);
          for (int64_t j = 0; j < prefix; ++j) {
            pooled[j] = votes[j];
            for (int64_t t = std::max<int64_t>(0, j - pool / 2); t <= std::min(prefix - 1, j + pool / 2); ++t) {
              pooled[j] = std::max(pooled[j], votes[t]);
            }
          }
          double worst_kept = 1e300, best_dropped = -1e300;
          for (int64_t j = 0; j < prefix; ++j) {
            if (kept.count(j)) {
              worst_kept = std::min(worst_kept, pooled[j]);
            } else {
              best_dropped = std::max(best_dropped, pooled[j]);
            }
          }
          // Float scores against double: kept and dropped may only swap within rounding.
          EXPECT_GE(worst_kept, best_dropped - 1e-5) << "keep " << keep << " pool " << pool;
        }
      }
    }
  }
}

TEST(Evict, RandomIsSeededSortedAndUniform) {
  auto backend = MakeCpuBackend({2});
  EvictParams p;
  p.policy = EvictPolicy::kRandom;
  p.keep = 20;
  p.seed = 5;
  const EvictInputs in{N, nullptr, nullptr, nullptr, 2, 4};
  auto a = backend->Evict(in, p);
  auto a2 = MakeCpuBackend({1})->Evict(in, p);
  ASSERT_TRUE(a.ok() && a2.ok());
  EXPECT_EQ(a->indices, a2->indices);
  p.seed = 6;
  auto c = backend->Evict(in, p);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->indices, c->indices);
  std::vector<int> hits(N, 0);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    p.seed = seed;
    auto r = backend->Evict(in, p);
    ASSERT_TRUE(r.ok());
    for (int b = 0; b < 2; ++b) {
      for (int h = 0; h < 4; ++h) {
        const auto row = Row(*r, b, h);
        ASSERT_EQ(std::set<int64_t>(row.begin(), row.end()).size(), 20u);
        ASSERT_TRUE(std::is_sorted(row.begin(), row.end()));
        for (int64_t t : row) ++hits[t];
      }
    }
  }
  // 400 draws of 20 out of 200: each token kept 40 times on average (std about 6).
  for (int64_t t = 0; t < N; ++t) {
    EXPECT_GT(hits[t], 12) << t;
    EXPECT_LT(hits[t], 75) << t;
  }
}

TEST(Evict, GqaScoresAreAveragedOverTheGroup) {
  auto backend = MakeCpuBackend({2});
  Inputs in;
  std::vector<double> averaged;
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < Hkv; ++h) {
      const auto s = in.GroupScores(b, h);
      averaged.insert(averaged.end(), s.begin(), s.end());
    }
  }
  const OwnedTensor per_kv = test::FromValues({B, Hkv, N}, DType::kF32, averaged);
  const TensorView per_kv_view = per_kv.view();
  EvictParams p;
  p.policy = EvictPolicy::kH2O;
  p.keep = 33;
  auto grouped = backend->Evict(EvictInputs{N, &in.sv, nullptr, nullptr, B, Hkv}, p);
  auto direct = backend->Evict(EvictInputs{N, &per_kv_view, nullptr, nullptr, 0, 0}, p);
  ASSERT_TRUE(grouped.ok()) << grouped.status();
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(grouped->kv_heads, Hkv);
  EXPECT_EQ(direct->kv_heads, Hkv);
  EXPECT_EQ(grouped->indices, direct->indices);
}

TEST(Evict, KeepAtLeastNReturnsEveryToken) {
  auto backend = MakeCpuBackend({2});
  Inputs in;
  for (EvictPolicy policy : {EvictPolicy::kH2O, EvictPolicy::kStreaming, EvictPolicy::kCab, EvictPolicy::kSnapKV,
                             EvictPolicy::kRandom}) {
    EvictParams p;
    p.policy = policy;
    p.keep = N + 5;
    auto got = backend->Evict(in.All(), p);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->per_head, N);
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < Hkv; ++h) {
        const auto row = Row(*got, b, h);
        for (int64_t t = 0; t < N; ++t) ASSERT_EQ(row[t], t);
      }
    }
  }
}

TEST(Evict, EveryPolicyGivesExactSortedUniqueIndicesForFp16Inputs) {
  auto backend = MakeCpuBackend({2});
  const OwnedTensor scores = RandomTensor({1, 2, 70}, DType::kF16, 31);
  const OwnedTensor keys = RandomTensor({1, 2, 70, 4}, DType::kBF16, 32);
  const OwnedTensor window = RandomTensor({1, 2, 5, 4}, DType::kF16, 33);
  const TensorView sv = scores.view(), kv = keys.view(), wv = window.view();
  for (EvictPolicy policy : {EvictPolicy::kH2O, EvictPolicy::kStreaming, EvictPolicy::kCab, EvictPolicy::kSnapKV,
                             EvictPolicy::kRandom}) {
    for (auto [keep, block_size] : {std::pair<int64_t, int>{1, 16}, {7, 16}, {69, 16}, {7, 128}}) {
      EvictParams p;
      p.policy = policy;
      p.keep = keep;
      p.block_size = block_size;  // 70 tokens: the last block is partial, or all in one block
      p.graph.degree = 2;
      auto got = backend->Evict(EvictInputs{0, &sv, &kv, &wv, 0, 0}, p);
      ASSERT_TRUE(got.ok()) << Name(policy) << ": " << got.status();
      for (int h = 0; h < 2; ++h) {
        const auto row = Row(*got, 0, h);
        ASSERT_EQ(static_cast<int64_t>(row.size()), keep);
        EXPECT_EQ(std::set<int64_t>(row.begin(), row.end()).size(), static_cast<size_t>(keep)) << Name(policy);
        EXPECT_TRUE(std::is_sorted(row.begin(), row.end())) << Name(policy);
        EXPECT_GE(row.front(), 0);
        EXPECT_LT(row.back(), 70);
      }
    }
  }
}

}  // namespace
}  // namespace cab
