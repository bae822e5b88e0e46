// Every op of the CUDA backend against the CPU backend, table-driven over shapes (N not a multiple of
// the block, GQA, every dtype), policies, estimators and curvature kinds.
//
// Both backends get identical coarse inputs; scores then differ only by summation order (fp32
// rounding). A selection may therefore differ where two candidates' scores (or two edges'
// curvatures, through a flipped graph edge) tie within rounding; such rows are counted and bounded
// rather than required to be zero. Inputs are continuous random values (ties only by rounding) and
// grid values (exact ties, which both backends must break the same way).
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cab/backend.h"
#include "cab/plugin.h"
#include "gtest/gtest.h"
#include "plugin_fixture.h"

namespace cab {
namespace {

struct Shape {
  int B, Hq, Hkv;
  int64_t N;
  int D, block;
  DType dtype;
};

const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> s = {
      {1, 2, 2, 1000, 64, 64, DType::kF32},     // N not a multiple of the block
      {2, 4, 2, 777, 32, 16, DType::kBF16},     // GQA g = 2, batch 2
      {1, 4, 1, 2100, 128, 64, DType::kF16},    // GQA g = 4, D = 128 (16-byte loads)
      {1, 2, 2, 300, 48, 32, DType::kF32},      // D / VEC = 12 lanes: the non-shuffle path
      {1, 1, 1, 64 * 40 + 5, 96, 64, DType::kBF16},
      {1, 2, 1, 130, 16, 128, DType::kF16},     // 2 blocks, the second of 2 tokens
      {1, 4, 2, 4096, 32, 16, DType::kBF16},    // M = 256
      {1, 2, 2, 8192, 16, 16, DType::kF32},     // M = 512
      {1, 2, 1, 16384, 16, 16, DType::kBF16},   // M = 1024: causal scores in row bands (CausalScorePlan)
      {1, 2, 1, 1300 * 16 - 7, 16, 16, DType::kBF16},  // M = 1300: rows of >= 1024 scores take 16-byte loads
  };
  return s;
}

std::string Describe(const Shape& s) {
  char buf[128];
  std::snprintf(buf, sizeof(buf), "B=%d Hq=%d Hkv=%d N=%lld D=%d block=%d %s", s.B, s.Hq, s.Hkv,
                static_cast<long long>(s.N), s.D, s.block, DTypeName(s.dtype).c_str());
  return buf;
}

TEST(CudaBackend, ReportsItself) {
  REQUIRE_GPU();
  EXPECT_EQ(gpu->Name(), "cuda");
  EXPECT_FALSE(gpu->Devices().empty());
}

// Coarsen of the shape's key tensor on both backends, continuous and tie-heavy grid inputs.
void ExpectCoarsenMatchesCpu(Backend& gpu, Backend& cpu, const Shape& s) {
  for (bool grid : {false, true}) {
    SCOPED_TRACE(Describe(s) + (grid ? " grid" : " normal"));
    Input x = MakeInput({s.B, s.Hkv, s.N, s.D}, s.dtype, 7 + s.N, grid);
    auto want = cpu.Coarsen(x.view(), s.block);
    auto got = gpu.Coarsen(x.view(), s.block);
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->blocks, want->blocks);
    ASSERT_EQ(got->tokens, want->tokens);
    EXPECT_EQ(got->count, want->count);
    EXPECT_EQ(got->kmin, want->kmin);  // min / max are order-free: exact
    EXPECT_EQ(got->kmax, want->kmax);
    // Norms are summed in double on both sides and rounded once: the picks agree exactly.
    EXPECT_EQ(got->best_norm2, want->best_norm2);
    EXPECT_EQ(got->maxl2, want->maxl2);
    double worst = 0;
    for (size_t i = 0; i < want->mean.size(); ++i) {
      worst = std::max(worst, std::fabs(double(got->mean[i]) - want->mean[i]) / (1.0 + std::fabs(want->mean[i])));
    }
    EXPECT_LT(worst, 1e-5) << "mean differs beyond fp32 rounding";
  }
}

TEST(CudaBackend, CoarsenMatchesCpu) {
  REQUIRE_GPU();
  auto cpu = MakeCpuBackend({2});
  for (const Shape& s : Shapes()) ExpectCoarsenMatchesCpu(*gpu, *cpu, s);
}

// Every lane count per token the coarsening kernels lay out (D / elements per 16 bytes: 1 .. 32
// lanes, powers of two and not), for a 16-bit and the 32-bit dtype, with a partial last block.
TEST(CudaBackend, CoarsenLaneCountsMatchCpu) {
  REQUIRE_GPU();
  auto cpu = MakeCpuBackend({2});
  for (int lanes : {1, 2, 3, 4, 5, 7, 8, 12, 16, 24, 32}) {
    ExpectCoarsenMatchesCpu(*gpu, *cpu, {1, 2, 2, 777, 8 * lanes, 64, DType::kBF16});
    ExpectCoarsenMatchesCpu(*gpu, *cpu, {1, 2, 2, 777, 4 * lanes, 64, DType::kF32});
  }
}

TEST(CudaBackend, CoarsenRejectsBadInput) {
  REQUIRE_GPU();
  Input x = MakeInput({1, 1, 10, 8}, DType::kF32, 1, false);
  EXPECT_EQ(gpu->Coarsen(x.view(), 0).status().code(), absl::StatusCode::kInvalidArgument);
  TensorView bad = x.view();
  bad.shape = {1, 10, 8};
  EXPECT_EQ(gpu->Coarsen(bad, 4).status().code(), absl::StatusCode::kInvalidArgument);
  const float nan = std::nanf("");
  std::memcpy(x.bytes.data() + 4 * 5, &nan, 4);
  auto r = gpu->Coarsen(x.view(), 4);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

struct Pair {
  CoarseBlocks q, k;
};

Pair MakePair(const Shape& s, bool grid, uint64_t seed) {
  auto cpu = MakeCpuBackend({2});
  Input q = MakeInput({s.B, s.Hq, s.N, s.D}, s.dtype, seed, grid);
  Input k = MakeInput({s.B, s.Hkv, s.N, s.D}, s.dtype, seed + 1, grid);
  return Pair{*cpu->Coarsen(q.view(), s.block), *cpu->Coarsen(k.view(), s.block)};
}

TEST(CudaBackend, GraphMatchesCpu) {
  REQUIRE_GPU();
  auto cpu = MakeCpuBackend({2});
  int64_t edges = 0, edge_mismatch = 0;
  for (const Shape& s : Shapes()) {
    for (Estimator e : {Estimator::kMaxL2, Estimator::kMean, Estimator::kQuest}) {
      for (CurvatureKind ck : {CurvatureKind::kBalanced, CurvatureKind::kForman, CurvatureKind::kDirectRedundancy}) {
        for (bool causal : {true, false}) {
          SCOPED_TRACE(Describe(s) + " estimator " + Name(e) + " curvature " + Name(ck) + (causal ? " causal" : ""));
          Pair p = MakePair(s, false, 11);
          GraphParams gp;
          gp.estimator = e;
          gp.curvature = ck;
          gp.causal = causal;
          gp.degree = 6;
          const int h = s.Hq - 1, b = s.B - 1;
          auto want = cpu->Graph(p.q, p.k, b, h, Coarsening::kMaxL2, gp);
          auto got = gpu->Graph(p.q, p.k, b, h, Coarsening::kMaxL2, gp);
          ASSERT_TRUE(want.ok()) << want.status();
          ASSERT_TRUE(got.ok()) << got.status();
          const int M = want->blocks;
          ASSERT_EQ(got->blocks, M);
          for (int i = 0; i < M; ++i) {
            for (int j = 0; j < M; ++j) {
              const size_t at = size_t(i) * M + j;
              if (!causal || j <= i) {
                ASSERT_NEAR(got->score[at], want->score[at], 1e-4 * (1 + std::fabs(want->score[at]))) << i << "," << j;
                ASSERT_NEAR(got->affinity[at], want->affinity[at], 1e-5) << i << "," << j;
              }
              const bool ge = got->adjacency[at] != 0, we = want->adjacency[at] != 0;
              edges += we;
              edge_mismatch += ge != we;
            }
          }
          // Where the graphs agree (the usual case) degrees and curvature must agree exactly.
          if (got->adjacency == want->adjacency) {
            EXPECT_EQ(got->degree, want->degree);
            for (size_t at = 0; at < want->curvature.size(); ++at) {
              if (std::isnan(want->curvature[at])) {
                EXPECT_TRUE(std::isnan(got->curvature[at])) << at;
              } else {
                EXPECT_NEAR(got->curvature[at], want->curvature[at], ck == CurvatureKind::kDirectRedundancy ? 1e-5 : 0)
                    << at;
              }
            }
          }
        }
      }
    }
  }
  std::printf("graph: %lld of %lld edge entries differ (rounding ties)\n", (long long)edge_mismatch, (long long)edges);
  EXPECT_LE(edge_mismatch, edges / 200 + 2);
}

struct PolicyCase {
  MaskPolicy policy;
  Estimator estimator;
  CurvatureKind curvature;
  bool causal;
  float sparsity;
  int blocks_per_row;
};

std::vector<PolicyCase> PolicyCases() {
  std::vector<PolicyCase> c;
  for (MaskPolicy p : {MaskPolicy::kCab, MaskPolicy::kMagnitude, MaskPolicy::kRandom, MaskPolicy::kStreaming,
                       MaskPolicy::kQuest, MaskPolicy::kDense, MaskPolicy::kAdaptive}) {
    c.push_back({p, Estimator::kMaxL2, CurvatureKind::kBalanced, true, 0.9f, 0});
  }
  for (Estimator e : {Estimator::kMean, Estimator::kQuest}) c.push_back({MaskPolicy::kCab, e, CurvatureKind::kBalanced, true, 0.8f, 0});
  c.push_back({MaskPolicy::kCab, Estimator::kMaxL2, CurvatureKind::kForman, true, 0.5f, 0});
  c.push_back({MaskPolicy::kCab, Estimator::kMaxL2, CurvatureKind::kDirectRedundancy, true, 0.7f, 0});
  c.push_back({MaskPolicy::kCab, Estimator::kMaxL2, CurvatureKind::kBalanced, false, 0.9f, 0});
  c.push_back({MaskPolicy::kCab, Estimator::kMaxL2, CurvatureKind::kBalanced, true, 0.f, 5});
  c.push_back({MaskPolicy::kAdaptive, Estimator::kMean, CurvatureKind::kForman, false, 0.9f, 0});
  c.push_back({MaskPolicy::kMagnitude, Estimator::kQuest, CurvatureKind::kBalanced, false, 0.95f, 0});
  return c;
}

TEST(CudaBackend, PredictMaskMatchesCpu) {
  REQUIRE_GPU();
  auto cpu = MakeCpuBackend({2});
  int64_t rows = 0, differing = 0;
  for (const Shape& s : Shapes()) {
    for (bool grid : {false, true}) {
      Pair pair = MakePair(s, grid, 21);
      for (const PolicyCase& pc : PolicyCases()) {
        MaskParams p;
        p.policy = pc.policy;
        p.graph.estimator = pc.estimator;
        p.graph.curvature = pc.curvature;
        p.graph.causal = pc.causal;
        p.graph.degree = 8;
        p.sparsity = pc.sparsity;
        p.blocks_per_row = pc.blocks_per_row;
        p.local_blocks = 2;
        p.seed = 5;
        SCOPED_TRACE(Describe(s) + (grid ? " grid " : " normal ") + Name(pc.policy) + " " + Name(pc.estimator) + " " +
                     Name(pc.curvature) + (pc.causal ? " causal" : " full"));
        auto want = cpu->PredictMask(pair.q, pair.k, p, false);
        auto got = gpu->PredictMask(pair.q, pair.k, p, false);
        ASSERT_TRUE(want.ok()) << want.status();
        ASSERT_TRUE(got.ok()) << got.status();
        ASSERT_TRUE(got->mask.Check(pc.causal).ok()) << got->mask.Check(pc.causal);
        ASSERT_EQ(got->mask.row_offsets.size(), want->mask.row_offsets.size());
        const BlockMask& g = got->mask;
        const BlockMask& w = want->mask;
        for (size_t r = 0; r + 1 < w.row_offsets.size(); ++r) {
          ++rows;
          const std::vector<int32_t> wr(w.col_indices.begin() + w.row_offsets[r], w.col_indices.begin() + w.row_offsets[r + 1]);
          const std::vector<int32_t> gr(g.col_indices.begin() + g.row_offsets[r], g.col_indices.begin() + g.row_offsets[r + 1]);
          if (pc.policy != MaskPolicy::kAdaptive) {
            ASSERT_EQ(gr.size(), wr.size()) << "row " << r << ": budgets must match exactly";
          }
          differing += gr != wr;
        }
      }
    }
  }
  std::printf("predict: %lld of %lld rows differ (rounding ties)\n", (long long)differing, (long long)rows);
  EXPECT_LE(differing, rows / 100 + 2);
}

// Rows of >= 64 bitset words (M > 2048): the warp selection's 8-lanes-per-edge triangle counts with the
// degree pass, and the top lists' 16-byte loads on long rows, at the benchmark's graph degree.
TEST(CudaBackend, PredictMaskWideRowsMatchCpu) {
  REQUIRE_GPU();
  auto cpu = MakeCpuBackend({2});
  const Shape s{1, 2, 2, 2100 * 16 - 5, 16, 16, DType::kBF16};  // M = 2100, 66 words per row
  Pair pair = MakePair(s, false, 31);
  int64_t rows = 0, differing = 0;
  for (MaskPolicy policy : {MaskPolicy::kCab, MaskPolicy::kMagnitude}) {
    for (int degree : {8, 32}) {
      MaskParams p;
      p.policy = policy;
      p.graph.degree = degree;
      p.sparsity = 0.95f;
      SCOPED_TRACE(Name(policy) + " degree " + std::to_string(degree));
      auto want = cpu->PredictMask(pair.q, pair.k, p, false);
      auto got = gpu->PredictMask(pair.q, pair.k, p, false);
      ASSERT_TRUE(want.ok()) << want.status();
      ASSERT_TRUE(got.ok()) << got.status();
      const BlockMask& g = got->mask;
      const BlockMask& w = want->mask;
      ASSERT_EQ(g.row_offsets.size(), w.row_offsets.size());
      for (size_t r = 0; r + 1 < w.row_offsets.size(); ++r) {
        ++rows;
        const std::vector<int32_t> wr(w.col_indices.begin() + w.row_offsets[r], w.col_indices.begin() + w.row_offsets[r + 1]);
        const std::vector<int32_t> gr(g.col_indices.begin() + g.row_offsets[r], g.col_indices.begin() + g.row_offsets[r + 1]);
        ASSERT_EQ(gr.size(), wr.size()) << "row " << r << ": budgets must match exactly";
        differing += gr != wr;
      }
    }
  }
  std::printf("predict, wide rows: %lld of %lld rows differ (rounding ties)\n", (long long)differing, (long long)rows);
  EXPECT_LE(differing, rows / 100 + 2);
}

TEST(CudaBackend, PredictMaskRowRangeAndErrors) {
  REQUIRE_GPU();
  auto cpu = MakeCpuBackend({2});
  Pair pair = MakePair(Shapes()[0], false, 3);
  MaskParams p;
  p.row_begin = 5;
  p.row_end = 9;
  auto want = cpu->PredictMask(pair.q, pair.k, p, false);
  auto got = gpu->PredictMask(pair.q, pair.k, p, false);
  ASSERT_TRUE(want.ok() && got.ok());
  EXPECT_EQ(got->mask.row_begin, 5);
  EXPECT_EQ(got->mask.rows, 4);
  EXPECT_EQ(got->mask.col_indices, want->mask.col_indices);
  p.row_begin = 1000;
  p.row_end = -1;
  EXPECT_EQ(gpu->PredictMask(pair.q, pair.k, p, false).status().code(), absl::StatusCode::kInvalidArgument);
  p = MaskParams{};
  p.sparsity = 1.5f;
  auto bad = gpu->PredictMask(pair.q, pair.k, p, false);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("sparsity"), std::string::npos);
}

}  // namespace
}  // namespace cab
