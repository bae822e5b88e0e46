// Eviction (SPEC 4) of the CUDA backend against the CPU backend, table-driven over shapes (GQA,
// batch, every dtype, N not a multiple of the block), inputs (continuous and grid values: exact
// ties the GPU must break as the CPU does), budgets (1 .. N + 5) and every policy's parameters.
//
// h2o, streaming and random must give identical keep sets. cab too: its importance (group means,
// key norms) is computed in the CPU's order, and its key graph is the predictor's, which the mask
// tests find identical; a flipped near-tie edge could still move a bridge, so differing rows are
// counted and bounded (<= 2% of rows). snapkv's votes are summed in another order (softmax sums
// in parallel), so a near-tie in the pooled votes may break either way: bounded the same way.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cab/backend.h"
#include "gtest/gtest.h"
#include "plugin_fixture.h"

namespace cab {
namespace {

struct EvictShapeCase {
  int B, Hq, Hkv;
  int64_t N;
  int D, block;
  DType dtype;
};

const std::vector<EvictShapeCase>& EvictShapes() {
  static const std::vector<EvictShapeCase> s = {
      {1, 4, 2, 500, 32, 16, DType::kF32},    // GQA g = 2
      {2, 8, 2, 1000, 64, 64, DType::kBF16},  // batch 2, g = 4, N not a multiple of the block
      {1, 4, 1, 2100, 128, 64, DType::kF16},  // g = 4, D = 128
      {1, 2, 2, 333, 48, 32, DType::kF32},
  };
  return s;
}

struct Tally {
  int rows = 0, rows_differ = 0;
  int64_t tokens_differ = 0;
};

// Compares keep sets row by row; returns false (after a failure) when shapes disagree.
bool Compare(const KeepIndices& want, const KeepIndices& got, Tally* t) {
  EXPECT_EQ(got.batch, want.batch);
  EXPECT_EQ(got.kv_heads, want.kv_heads);
  EXPECT_EQ(got.per_head, want.per_head);
  if (got.indices.size() != want.indices.size()) {
    ADD_FAILURE() << "indices: " << got.indices.size() << " vs " << want.indices.size();
    return false;
  }
  for (int b = 0; b < want.batch; ++b) {
    for (int h = 0; h < want.kv_heads; ++h) {
      const int64_t* w = want.Row(b, h);
      const int64_t* g = got.Row(b, h);
      EXPECT_TRUE(std::is_sorted(g, g + got.per_head)) << "row (" << b << ", " << h << ") not ascending";
      std::vector<int64_t> only;
      std::set_symmetric_difference(w, w + want.per_head, g, g + got.per_head, std::back_inserter(only));
      ++t->rows;
      if (!only.empty()) {
        ++t->rows_differ;
        t->tokens_differ += static_cast<int64_t>(only.size()) / 2;
      }
    }
  }
  return true;
}

struct ParamCase {
  const char* name;
  EvictParams p;
  bool scores = true;        // send scores
  bool per_query = false;    // scores per query head (averaged over the group)
  int window = 16;           // snapkv window queries
};

std::vector<ParamCase> ParamCases(int64_t n, int block) {
  std::vector<ParamCase> c;
  auto add = [&](const char* name, EvictPolicy policy, int64_t keep) {
    ParamCase pc;
    pc.name = name;
    pc.p.policy = policy;
    pc.p.keep = keep;
    pc.p.block_size = block;
    c.push_back(pc);
    return &c.back();
  };
  for (int64_t keep : {int64_t{1}, n / 10, n / 2, n - 1, n, n + 5}) {
    add("h2o", EvictPolicy::kH2O, keep);
    add("h2o per-query scores", EvictPolicy::kH2O, keep)->per_query = true;
    add("streaming", EvictPolicy::kStreaming, keep);
    add("random", EvictPolicy::kRandom, keep)->p.seed = 7;
    add("cab", EvictPolicy::kCab, keep);
    add("cab no scores", EvictPolicy::kCab, keep)->scores = false;
    add("snapkv", EvictPolicy::kSnapKV, keep);
  }
  const int64_t k = n / 5;
  add("h2o local 0.5", EvictPolicy::kH2O, k)->p.h2o_local_ratio = 0.5f;
  add("streaming sinks 0", EvictPolicy::kStreaming, k)->p.sink_tokens = 0;
  add("streaming sinks > keep", EvictPolicy::kStreaming, 3)->p.sink_tokens = 8;
  {
    auto* x = add("cab forman", EvictPolicy::kCab, k);
    x->p.graph.curvature = CurvatureKind::kForman;
  }
  {
    auto* x = add("cab direct-redundancy", EvictPolicy::kCab, k);
    x->p.graph.curvature = CurvatureKind::kDirectRedundancy;
    x->p.graph.lambda = 0.5f;
  }
  {
    auto* x = add("cab non-causal degree 4", EvictPolicy::kCab, k);
    x->p.graph.causal = false;
    x->p.graph.degree = 4;
  }
  {
    auto* x = add("cab bridges 0.6 per-query", EvictPolicy::kCab, k);
    x->p.local_ratio = 0.1f;
    x->p.bridge_ratio = 0.6f;
    x->per_query = true;
  }
  add("cab no bridges", EvictPolicy::kCab, k)->p.bridge_ratio = 0.f;
  add("snapkv window 1", EvictPolicy::kSnapKV, k)->window = 1;
  add("snapkv window > keep", EvictPolicy::kSnapKV, 8)->window = 16;
  add("snapkv window = N", EvictPolicy::kSnapKV, k)->window = static_cast<int>(n);
  add("snapkv pool 1", EvictPolicy::kSnapKV, k)->p.snapkv_pool = 1;
  return c;
}

TEST(CudaEvict, MatchesCpu) {
  REQUIRE_GPU();
  auto cpu = MakeCpuBackend({2});
  Tally exact, cab, snapkv;
  for (const EvictShapeCase& s : EvictShapes()) {
    for (bool grid : {false, true}) {
      const uint64_t seed = 11 + s.N + (grid ? 1 : 0);
      Input keys = MakeInput({s.B, s.Hkv, s.N, s.D}, s.dtype, seed, grid);
      Input kv_scores = MakeInput({s.B, s.Hkv, s.N}, s.dtype, seed + 1, grid);
      Input q_scores = MakeInput({s.B, s.Hq, s.N}, s.dtype, seed + 2, grid);
      for (const ParamCase& pc : ParamCases(s.N, s.block)) {
        char trace[256];
        std::snprintf(trace, sizeof(trace), "B=%d Hq=%d Hkv=%d N=%lld D=%d %s keep=%lld: %s", s.B, s.Hq, s.Hkv,
                      static_cast<long long>(s.N), s.D, grid ? "grid" : "normal",
                      static_cast<long long>(pc.p.keep), pc.name);
        SCOPED_TRACE(trace);
        Input window = MakeInput({s.B, s.Hq, pc.window, s.D}, s.dtype, seed + 3, grid);
        TensorView kv = keys.view(), wv = window.view();
        TensorView sv = pc.per_query ? q_scores.view() : kv_scores.view();
        EvictInputs in;
        in.tokens = s.N;
        in.keys = &kv;
        in.window = &wv;
        in.scores = pc.scores ? &sv : nullptr;
        auto want = cpu->Evict(in, pc.p);
        auto got = gpu->Evict(in, pc.p);
        ASSERT_EQ(want.ok(), got.ok()) << (want.ok() ? got.status() : want.status());
        if (!want.ok()) continue;
        Tally* t = pc.p.policy == EvictPolicy::kCab ? &cab : pc.p.policy == EvictPolicy::kSnapKV ? &snapkv : &exact;
        const int before = t->rows_differ;
        if (!Compare(*want, *got, t)) continue;
        if (t == &exact) {
          EXPECT_EQ(t->rows_differ, before) << "h2o / streaming / random must match exactly";
        }
      }
    }
  }
  std::printf("evict rows differing: exact policies %d/%d, cab %d/%d (%lld tokens), snapkv %d/%d (%lld tokens)\n",
              exact.rows_differ, exact.rows, cab.rows_differ, cab.rows, static_cast<long long>(cab.tokens_differ),
              snapkv.rows_differ, snapkv.rows, static_cast<long long>(snapkv.tokens_differ));
  EXPECT_EQ(exact.rows_differ, 0);
  EXPECT_LE(cab.rows_differ, cab.rows / 50);
  EXPECT_LE(snapkv.rows_differ, snapkv.rows / 50);
}

// cab's bridges must come from curvature: on the GPU too they are not h2o's picks.
TEST(CudaEvict, CabIsNotH2O) {
  REQUIRE_GPU();
  Input keys = MakeInput({1, 2, 1000, 32}, DType::kF32, 5, false);
  Input scores = MakeInput({1, 2, 1000}, DType::kF32, 6, false);
  TensorView kv = keys.view(), sv = scores.view();
  EvictInputs in;
  in.keys = &kv;
  in.scores = &sv;
  EvictParams cab;
  cab.policy = EvictPolicy::kCab;
  cab.keep = 200;
  cab.block_size = 16;
  EvictParams h2o = cab;
  h2o.policy = EvictPolicy::kH2O;
  h2o.h2o_local_ratio = cab.local_ratio;
  auto a = gpu->Evict(in, cab);
  auto b = gpu->Evict(in, h2o);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(a->indices, b->indices);
}

TEST(CudaEvict, InvalidInputsAreRefusedLikeCpu) {
  REQUIRE_GPU();
  auto cpu = MakeCpuBackend({1});
  Input keys = MakeInput({1, 2, 100, 16}, DType::kF32, 8, false);
  float* raw = reinterpret_cast<float*>(keys.bytes.data());
  TensorView kv = keys.view();
  EvictInputs in;
  in.keys = &kv;
  EvictParams p;
  p.policy = EvictPolicy::kH2O;  // needs scores
  p.keep = 10;
  auto a = gpu->Evict(in, p);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(a.status().message()).find("scores"), std::string::npos) << a.status();
  p.policy = EvictPolicy::kCab;
  raw[5 * 16 + 3] = std::nanf("");  // cab coarsens the keys: a NaN is refused, as on the CPU
  auto want = cpu->Evict(in, p);
  auto got = gpu->Evict(in, p);
  ASSERT_FALSE(want.ok());
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status(), want.status());
}

}  // namespace
}  // namespace cab
