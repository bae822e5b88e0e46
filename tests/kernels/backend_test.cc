// The CPU backend as the server sees it: identity, delegation to the reference ops, diagnostics
// (curvature statistics, densities, FLOP estimate), stage timings, the bounded thread pool, and
// several callers sharing one backend at once.
#include <atomic>
#include <thread>

#include "../../kernels/cpu/thread_pool.h"
#include "cab/backend.h"
#include "gtest/gtest.h"
#include "policy_test_util.h"

namespace cab {
namespace {

using test::CoarsePair;
using test::RandomCoarsePair;

TEST(CpuBackend, NameDevicesAndDelegation) {
  auto backend = MakeCpuBackend({3});
  EXPECT_EQ(backend->Name(), "cpu");
  ASSERT_EQ(backend->Devices().size(), 1u);
  EXPECT_NE(backend->Devices()[0].find("3 threads"), std::string::npos) << backend->Devices()[0];

  const test::OwnedTensor x = test::RandomTensor({2, 2, 50, 8}, DType::kBF16, 4);
  auto a = backend->Coarsen(x.view(), 16);
  auto b = CoarsenCpu(x.view(), 16);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->maxl2, b->maxl2);
  EXPECT_EQ(a->blocks, 4);

  const CoarsePair in = RandomCoarsePair(*backend, 1, 4, 2, 16 * 12, 8, 16, 6);
  GraphParams gp;
  gp.degree = 3;
  auto g1 = backend->Graph(in.q, in.k, 0, 3, Coarsening::kMean, gp);
  auto g2 = BuildHeadGraphCpu(in.q, in.k, 0, 3, Coarsening::kMean, gp);
  ASSERT_TRUE(g1.ok() && g2.ok());
  EXPECT_EQ(g1->adjacency, g2->adjacency);
  EXPECT_EQ(g1->score, g2->score);
}

TEST(CpuBackend, DiagnosticsDescribeTheRequestGraphAndMask) {
  auto backend = MakeCpuBackend({2});
  const CoarsePair in = RandomCoarsePair(*backend, 2, 2, 1, 8 * 30, 8, 8, 8);
  for (MaskPolicy policy : {MaskPolicy::kCab, MaskPolicy::kMagnitude, MaskPolicy::kQuest, MaskPolicy::kDense}) {
    MaskParams p;
    p.policy = policy;
    p.graph.degree = 4;
    p.sparsity = 0.8f;
    p.row_begin = 5;
    auto r = backend->PredictMask(in.q, in.k, p, true);
    ASSERT_TRUE(r.ok()) << r.status();
    const BlockMask& m = r->mask;
    ASSERT_EQ(r->diagnostics.heads.size(), 4u);
    EXPECT_DOUBLE_EQ(r->diagnostics.density, m.Density(true));
    EXPECT_DOUBLE_EQ(r->diagnostics.prediction_flops, PredictionFlops(8 * 30, 30, 8, 4, 4));
    EXPECT_GE(r->graph_seconds, 0);
    EXPECT_GE(r->select_seconds, 0);
    for (int b = 0; b < 2; ++b) {
      for (int h = 0; h < 2; ++h) {
        const HeadDiagnostics& d = r->diagnostics.heads[b * 2 + h];
        // Curvature of the request's graph (for quest too: its ranking estimator is not the graph's).
        auto g = backend->Graph(in.q, in.k, b, h, Coarsening::kMaxL2, p.graph);
        ASSERT_TRUE(g.ok());
        const CurvatureStats want = SummarizeCurvature(*g);
        EXPECT_EQ(d.curvature.edges, want.edges) << Name(policy);
        EXPECT_EQ(d.curvature.min, want.min);
        EXPECT_EQ(d.curvature.max, want.max);
        EXPECT_EQ(d.curvature.negative_share, want.negative_share);
        int64_t kept = 0;
        double pairs = 0;
        for (int r2 = 0; r2 < m.rows; ++r2) {
          kept += m.row_offsets[m.RowIndex(b, h, r2) + 1] - m.row_offsets[m.RowIndex(b, h, r2)];
          pairs += m.row_begin + r2 + 1;
        }
        EXPECT_DOUBLE_EQ(d.density, kept / pairs);
        if (policy == MaskPolicy::kDense) {
          EXPECT_DOUBLE_EQ(d.density, 1.0);
        }
      }
    }
    auto plain = backend->PredictMask(in.q, in.k, p, false);
    ASSERT_TRUE(plain.ok());
    EXPECT_TRUE(plain->diagnostics.heads.empty());
    EXPECT_EQ(plain->mask.col_indices, m.col_indices) << "diagnostics must not change the mask";
  }
}

TEST(CpuBackend, PredictionFlopsFollowsTheDocumentedFormula) {
  // 12 N D + 2 M^2 D + 4 M^2 + M^2 + r M^2 / 16 + 20 r M + 2 M^2 per head.
  const double n = 4096, m = 64, d = 128, r = 32;
  const double per_head = 12 * n * d + 2 * m * m * d + 7 * m * m + r * m * m / 16 + 20 * r * m;
  EXPECT_DOUBLE_EQ(PredictionFlops(4096, 64, 128, 8, 32), 8 * per_head);
  EXPECT_LT(PredictionFlops(4096, 64, 128, 8, 32), PredictionFlops(8192, 128, 128, 8, 32));
  EXPECT_EQ(PredictionFlops(4096, 64, 128, 0, 32), 0);
}

TEST(CpuBackend, ConcurrentCallersGetTheSerialAnswers) {
  auto shared = MakeCpuBackend({3});
  const CoarsePair in = RandomCoarsePair(*shared, 2, 4, 2, 16 * 40, 16, 16, 12);
  const test::OwnedTensor scores = test::RandomTensor({2, 4, 300}, DType::kF32, 13);
  const test::OwnedTensor keys = test::RandomTensor({2, 2, 300, 8}, DType::kF32, 14);
  const TensorView sv = scores.view(), kv = keys.view();
  MaskParams mp;
  mp.graph.degree = 8;
  mp.sparsity = 0.9f;
  EvictParams ep;
  ep.keep = 40;
  ep.block_size = 16;
  ep.graph.degree = 4;
  auto mask_ref = MakeCpuBackend({1})->PredictMask(in.q, in.k, mp, false);
  auto keep_ref = MakeCpuBackend({1})->Evict(EvictInputs{0, &sv, &kv, nullptr, 0, 0}, ep);
  ASSERT_TRUE(mask_ref.ok() && keep_ref.ok());
  std::atomic<int> mismatches{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto m = shared->PredictMask(in.q, in.k, mp, false);
        auto k = shared->Evict(EvictInputs{0, &sv, &kv, nullptr, 0, 0}, ep);
        if (!m.ok() || !k.ok() || m->mask.col_indices != mask_ref->mask.col_indices ||
            k->indices != keep_ref->indices) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(ThreadPool, RunsEveryItemOnceOnBoundedThreads) {
  cpu::ThreadPool pool(3);
  EXPECT_EQ(pool.threads(), 3);
  for (int64_t n : {0, 1, 2, 7, 1000}) {
    std::vector<std::atomic<int>> hits(n);
    std::atomic<int> running{0}, peak{0};
    pool.ParallelFor(n, [&](int64_t i) {
      const int now = ++running;
      int seen = peak.load();
      while (now > seen && !peak.compare_exchange_weak(seen, now)) {
      }
      ++hits[i];
      --running;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "item " << i << " of " << n;
    EXPECT_LE(peak.load(), 3);
  }
  EXPECT_GE(cpu::ThreadPool(0).threads(), 1);
}

}  // namespace
}  // namespace cab
