// The fused score + top-list kernel (scores_top_lists.cu, label gpu) against a naive host reference:
// S in double from the same bf16 operands, each row's top list by (S desc, j asc), its graph edges
// from the list. Shapes cover M not a multiple of the 16-row tile (a staged partial key tile), GQA and
// batch, every head dim the kernel takes (32, 64, 128, 256), causal and full rows, and lists <= 64, <= 128 and <= 256 (the three
// groups-per-lane variants). Lists may differ from the reference only where fp32 accumulation order
// can flip a near-tie: each differing position must hold a score within rounding of the reference's.
// Skips with the reason where no GPU exists.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cab/params.h"
#include "gtest/gtest.h"
#include "predict_kernels.h"
#include "scores_top_lists.h"

namespace {

using cab::cuda::DeviceMaskParams;
using cab::cuda::GemmMode;
using cab::cuda::GraphBuffers;
using cab::cuda::ScoreArgs;

bool HaveGpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return false;
  }
  return true;
}

struct Case {
  int B, Hq, Hkv, M, D;
  bool causal;
  float sparsity;
  int degree;
};

std::string Describe(const Case& c) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "B=%d Hq=%d Hkv=%d M=%d D=%d %s sparsity=%.2f r=%d", c.B, c.Hq, c.Hkv, c.M, c.D,
                c.causal ? "causal" : "full", c.sparsity, c.degree);
  return buf;
}

template <typename T>
T* DeviceCopy(const std::vector<T>& host) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, std::max<size_t>(1, host.size()) * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

template <typename T>
std::vector<T> HostCopy(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

struct Counts {
  int64_t rows = 0, near_tie_rows = 0;
};

void RunCase(const Case& c, Counts* counts) {
  SCOPED_TRACE(Describe(c));
  const int heads = c.B * c.Hq, kv_heads = c.B * c.Hkv, M = c.M, D = c.D, W = (M + 31) / 32;
  std::mt19937_64 rng(1000 + M * 7 + D);
  std::normal_distribution<float> normal(0.f, 1.f);
  const size_t nq = static_cast<size_t>(heads) * M * D, nk = static_cast<size_t>(kv_heads) * M * D;
  std::vector<__nv_bfloat16> q16(nq), k16(nk);
  std::vector<double> q(nq), k(nk);
  for (size_t i = 0; i < nq; ++i) q[i] = __bfloat162float(q16[i] = __float2bfloat16(normal(rng)));
  for (size_t i = 0; i < nk; ++i) k[i] = __bfloat162float(k16[i] = __float2bfloat16(normal(rng)));

  cab::MaskParams mp;
  mp.policy = cab::MaskPolicy::kCab;
  mp.graph.causal = c.causal;
  mp.graph.degree = c.degree;
  mp.sparsity = c.sparsity;
  const DeviceMaskParams dp = DeviceMaskParams::From(mp);
  const int stride = cab::cuda::TopCapacity(dp, M);

  ScoreArgs a;
  a.batch = c.B;
  a.q_heads = c.Hq;
  a.kv_heads = c.Hkv;
  a.blocks = M;
  a.dim = D;
  a.causal = c.causal;
  a.mode = GemmMode::kBf16;
  a.q16 = DeviceCopy(q16);
  a.k16 = DeviceCopy(k16);
  a.bf16_ready = true;
  GraphBuffers g;
  g.heads = heads;
  g.blocks = M;
  g.top_stride = stride;
  const size_t rows = static_cast<size_t>(heads) * M;
  g.top = DeviceCopy(std::vector<int32_t>(rows * stride, -1));
  g.top_count = DeviceCopy(std::vector<int32_t>(rows, -1));
  g.row_max = DeviceCopy(std::vector<float>(rows, 0.f));
  g.row_inv = DeviceCopy(std::vector<float>(rows, 0.f));
  g.adj = DeviceCopy(std::vector<uint32_t>(rows * W, 0xffffffffu));
  ASSERT_TRUE(cab::cuda::LaunchClearGraph(g, nullptr).ok());
  const absl::Status st = cab::cuda::LaunchFusedScoreTopLists(a, g, dp, /*set_edges=*/true, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto top = HostCopy(g.top, rows * stride);
  const auto top_count = HostCopy(g.top_count, rows);
  const auto row_max = HostCopy(g.row_max, rows);
  const auto row_inv = HostCopy(g.row_inv, rows);
  const auto adj = HostCopy(g.adj, rows * W);

  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<uint32_t> want_adj(rows * W, 0u);
  int64_t unexplained = 0;
  for (int bh = 0; bh < heads; ++bh) {
    const int kvh = (bh / c.Hq) * c.Hkv + (bh % c.Hq) / (c.Hq / c.Hkv);
    for (int i = 0; i < M; ++i) {
      const size_t row = static_cast<size_t>(bh) * M + i;
      const int L = c.causal ? i + 1 : M;
      std::vector<double> s(L);
      for (int j = 0; j < L; ++j) {
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += q[row * D + d] * k[(static_cast<size_t>(kvh) * M + j) * D + d];
        s[j] = dot * scale;
      }
      const int K = std::min(L, std::max(c.degree + 1, cab::RowBudget(mp, i)));
      ASSERT_EQ(top_count[row], K) << "row " << i;
      std::vector<int> order(L);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return s[x] > s[y]; });
      const double mx = s[order[0]];
      ASSERT_NEAR(row_max[row], mx, 1e-4 * (1 + std::fabs(mx))) << "row " << i;
      ASSERT_TRUE(std::isnan(row_inv[row])) << "row " << i << ": nothing reads the softmax sum";
      bool differs = false;
      for (int t = 0; t < K; ++t) {
        const int got = top[row * stride + t];
        ASSERT_TRUE(got >= 0 && got < L) << "row " << i << " pos " << t << ": " << got;
        if (got == order[t]) continue;
        differs = true;
        if (std::fabs(s[got] - s[order[t]]) > 1e-4 * (1 + std::fabs(s[order[t]]))) ++unexplained;
      }
      ++counts->rows;
      counts->near_tie_rows += differs;
      // Edges from the kernel's own list: the first r entries other than i, both directions.
      for (int t = 0, taken = 0; t < K && taken < c.degree; ++t) {
        const int j = top[row * stride + t];
        if (j == i) continue;
        ++taken;
        const size_t base = static_cast<size_t>(bh) * M;
        want_adj[(base + i) * W + j / 32] |= 1u << (j % 32);
        want_adj[(base + j) * W + i / 32] |= 1u << (i % 32);
      }
    }
  }
  EXPECT_EQ(unexplained, 0) << "list entries whose score is not within rounding of the reference's";
  EXPECT_TRUE(adj == want_adj) << "graph edges differ from the lists' first r entries";
  for (void* p : {static_cast<void*>(a.q16), static_cast<void*>(a.k16), static_cast<void*>(g.top),
                  static_cast<void*>(g.top_count), static_cast<void*>(g.row_max), static_cast<void*>(g.row_inv),
                  static_cast<void*>(g.adj)}) {
    cudaFree(p);
  }
}

TEST(FusedScoreTopLists, MatchesNaiveReference) {
  if (!HaveGpu()) GTEST_SKIP() << "skipped: no CUDA device (this test runs on the GPU host)";
  const std::vector<Case> cases = {
      {1, 2, 2, 1024, 128, true, 0.95f, 32},  // the benchmark's shape at block 128, 2 heads
      {2, 4, 2, 300, 64, true, 0.9f, 8},      // batch, GQA g = 2, M % 16 = 12
      {1, 2, 1, 77, 32, false, 0.9f, 6},      // full rows: keys past M read as zero (77 % 8 = 5)
      {1, 1, 1, 16, 256, true, 0.5f, 4},      // one tile, D = 256
      {1, 3, 3, 513, 32, false, 0.8f, 8},     // lists up to 103: 8 groups per lane
      {1, 1, 1, 1024, 64, true, 0.8f, 8},     // lists up to 205: 16 groups per lane
  };
  Counts counts;
  for (const Case& c : cases) RunCase(c, &counts);
  std::printf("fused top lists: %lld of %lld rows differ from the reference at near-ties\n",
              static_cast<long long>(counts.near_tie_rows), static_cast<long long>(counts.rows));
  EXPECT_LE(counts.near_tie_rows, counts.rows / 100 + 2);
}

// Where something later reads S, or the operands are not bf16, the fused kernel must not be chosen.
TEST(FusedScoreTopLists, AppliesOnlyWhereNothingReadsScores) {
  if (!HaveGpu()) GTEST_SKIP() << "skipped: no CUDA device (this test runs on the GPU host)";
  cab::MaskParams mp;
  mp.policy = cab::MaskPolicy::kCab;
  DeviceMaskParams dp = DeviceMaskParams::From(mp);
  ScoreArgs a;
  a.batch = a.q_heads = a.kv_heads = 1;
  a.blocks = 1024;
  a.dim = 128;
  a.mode = GemmMode::kBf16;
  a.bf16_ready = true;
  GraphBuffers g;
  g.heads = 1;
  g.blocks = 1024;
  g.top_stride = cab::cuda::TopCapacity(dp, 1024);
  EXPECT_TRUE(cab::cuda::FusedScoreTopListsApply(a, g, dp, false));
  EXPECT_FALSE(cab::cuda::FusedScoreTopListsApply(a, g, dp, /*graph_only=*/true));  // Graph() dumps S
  ScoreArgs b = a;
  b.quest = true;
  EXPECT_FALSE(cab::cuda::FusedScoreTopListsApply(b, g, dp, false));
  b = a;
  b.mode = GemmMode::kFp32;
  EXPECT_FALSE(cab::cuda::FusedScoreTopListsApply(b, g, dp, false));
  b = a;
  b.bf16_ready = false;
  EXPECT_FALSE(cab::cuda::FusedScoreTopListsApply(b, g, dp, false));
  b = a;
  b.dim = 96;  // not one of the head dims the kernel is built for
  EXPECT_FALSE(cab::cuda::FusedScoreTopListsApply(b, g, dp, false));
  DeviceMaskParams adaptive = dp;
  adaptive.policy = static_cast<int>(cab::MaskPolicy::kAdaptive);  // its selection reads S
  EXPECT_FALSE(cab::cuda::FusedScoreTopListsApply(a, g, adaptive, false));
  GraphBuffers wide = g;
  wide.blocks = 4096;  // a 16-row tile of 4096 floats per row exceeds the shared-memory limit
  EXPECT_FALSE(cab::cuda::FusedScoreTopListsApply(a, wide, dp, false));
}

}  // namespace
